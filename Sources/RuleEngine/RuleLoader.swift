import Foundation
import JSONCore
import KazooEvents
import LuaRuntime

/// A rule loaded into one Lua state: its definition and the coroutine entry point that runs its stages.
struct LoadedRule {
    var definition: RuleDefinition
    /// `function(event)` running filter → transform → forward → run; returns "skipped", "dropped" or "ok".
    var entry: LuaReference
    /// The rule's `tick` function, when it has a schedule.
    var tick: LuaReference?
}

/// Compiles rule files into a Lua state and checks their tables.
package struct RuleLoader {
    let state: LuaState
    let context: RunContext
    let source: RuleSource
    /// `function(rule)` returning the stage runner for that rule table.
    let makeEntry: LuaReference

    /// The stage runner, in Lua so that every stage runs in the rule's coroutine and may wait on HTTP.
    /// The rule's functions are read once, when the file loads; its `forward` targets were parsed then too,
    /// so `forward_field` sends the payload to the running rule's targets.
    ///
    /// A run that fails is told its stage by the line the driver had reached (`LuaCoroutine.failedAtEntryLine`):
    /// each stage's call is marked `-- stage NAME`, and a line belongs to the last mark at or above it.
    /// Recording the stage as the driver went cost two calls per run. A run that went through returns nothing
    /// (read as `ok`): a result would be an array made and freed for every run.
    static let driverSource = """
        return function(rule)
          local filter, transform, forward_to, run = rule.filter, rule.transform, rule.forward, rule.run
          return function(event)
            if filter then
              if not filter(event) then return "skipped" end -- stage filter
            end
            local payload = event
            if transform then
              payload = transform(event) -- stage transform
              if payload == nil then return "dropped" end
            end
            if forward_to ~= nil then
              forward_field(payload) -- stage forward
            end
            if run then
              run(event, payload) -- stage run
            end
          end
        end
        """

    /// The driver's stage marks by line, in order.
    static let stageMarks: [(line: Int, stage: String)] = driverSource.split(
        separator: "\n", omittingEmptySubsequences: false
    ).enumerated().compactMap { number, text in
        guard let mark = text.range(of: "-- stage ") else { return nil }
        return (number + 1, String(text[mark.upperBound...]))
    }

    /// The stage a run that failed with its driver at `line` was in; nil above the first stage.
    static func stage(atLine line: Int?) -> String? {
        guard let line else { return nil }
        return stageMarks.last { $0.line <= line }?.stage
    }

    init(state: LuaState, context: RunContext, source: RuleSource, configuration: RuleConfiguration) throws(LuaError) {
        self.state = state
        self.context = context
        self.source = source
        let env = try state.newEnvironment()
        try state.setGlobal(
            "forward_field",
            .function { [context] args in
                guard let run = context.currentRun else { return [] }
                try HostAPI.record(forwards: run.targets, payload: args[1], in: run, configuration: configuration)
                return []
            }, in: env)
        let chunk = try state.load(Self.driverSource, chunkName: "=switchboard", environment: env)
        makeEntry = try state.callReferences(chunk)[0]
    }

    /// Loads every rule file. Returns the rules that loaded and every problem found.
    func loadAll() -> ([LoadedRule], [Diagnostic]) {
        var rules: [LoadedRule] = []
        var diagnostics: [Diagnostic] = []
        var names: [String: String] = [:]
        for file in source.rules {
            let (rule, found) = load(file)
            diagnostics += found
            guard let rule else { continue }
            if let other = names[rule.definition.name] {
                diagnostics.append(
                    Diagnostic(
                        .error, file: file.displayPath, line: SourceLocator.line(ofKey: "name", in: file.text),
                        "rule name \"\(rule.definition.name)\" is already used by \(other); names must be unique"))
                continue
            }
            names[rule.definition.name] = file.displayPath
            rules.append(rule)
        }
        return (rules, diagnostics)
    }

    func load(_ file: SourceFile) -> (LoadedRule?, [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        func error(_ line: Int?, _ message: String, traceback: String? = nil) -> (LoadedRule?, [Diagnostic]) {
            diagnostics.append(Diagnostic(.error, file: file.displayPath, line: line, message, traceback: traceback))
            return (nil, diagnostics)
        }
        context.loadingFile = file.displayPath
        defer { context.loadingFile = nil }

        let table: LuaReference
        do {
            let env = try state.newEnvironment()
            let chunk = try state.load(file.text, chunkName: file.displayPath, environment: env)
            let results = try state.callReferences(chunk)
            guard let first = results.first, state.typeName(of: first) == "table" else {
                let got = results.first.map { state.typeName(of: $0) } ?? "nothing"
                return error(
                    SourceLocator.returnLine(in: file.text),
                    "a rule file must return a table such as return { on = \"channel_create\", run = function(event) end }, not \(got)"
                )
            }
            table = first
        } catch let e {
            return error(e.line, Self.strip(e.message, file: file.displayPath), traceback: e.traceback)
        }

        let line = { (key: String) in
            SourceLocator.line(ofKey: key, in: file.text) ?? SourceLocator.returnLine(in: file.text)
        }
        let fields = state.fieldTypes(of: table)
        var types: [String: String] = [:]
        for (key, type) in fields {
            types[key] = type
            if !RuleDefinition.keys.contains(key) {
                let hint = Suggestions.closest(to: key, in: RuleDefinition.keys).map { " (did you mean \($0)?)" } ?? ""
                diagnostics.append(
                    Diagnostic(
                        .error, file: file.displayPath, line: line(key),
                        "unknown key '\(key)' in the rule table\(hint)"))
            }
        }

        // name
        var name = String(file.path.dropLast(4))
        if let type = types["name"] {
            if type == "string", let ref = state.field("name", of: table),
                case .string(let n)? = try? state.value(of: ref)
            {
                name = n
            } else {
                diagnostics.append(
                    Diagnostic(.error, file: file.displayPath, line: line("name"), "name must be a string, not \(type)")
                )
            }
        }

        // on
        var patterns: [EventPattern] = []
        if let ref = state.field("on", of: table), let value = try? state.value(of: ref) {
            let names: [JSONValue]
            switch value {
            case .string: names = [value]
            case .array(let list): names = list
            default: names = []
            }
            if names.isEmpty {
                diagnostics.append(
                    Diagnostic(
                        .error, file: file.displayPath, line: line("on"),
                        "on must be an event name or a list of them, such as on = { \"channel_create\" }"))
            }
            for entry in names {
                guard case .string(let text) = entry else {
                    diagnostics.append(
                        Diagnostic(
                            .error, file: file.displayPath, line: line("on"),
                            "on: \(entry.typeName) is not an event name"))
                    continue
                }
                if let pattern = EventPattern(text) {
                    patterns.append(pattern)
                } else {
                    let hint =
                        EventPattern.suggestion(for: text).map { " (did you mean \($0)?)" }
                        ?? " (see switchboard events for every name; \"notifications.*\" matches all notifications)"
                    diagnostics.append(
                        Diagnostic(
                            .error, file: file.displayPath,
                            line: SourceLocator.line(ofString: text, in: file.text) ?? line("on"),
                            "unknown event \"\(text)\" in on\(hint)"))
                }
            }
        } else if types["tick"] == nil, types["every"] == nil, types["cron"] == nil {
            diagnostics.append(
                Diagnostic(
                    .error, file: file.displayPath, line: SourceLocator.returnLine(in: file.text),
                    "the rule has no on: say which events it handles, such as on = { \"channel_create\" } (or give it every = \"5m\" and tick = function(now) ... end)"
                ))
        }

        // match
        var conditions: [MatchCondition] = []
        if let type = types["match"] {
            if type == "table", let ref = state.field("match", of: table),
                case .object(let m)? = try? state.value(of: ref)
            {
                for member in m {
                    switch member.value {
                    case .array(let values): conditions.append(MatchCondition(field: member.key, accepted: values))
                    case .object:
                        diagnostics.append(
                            Diagnostic(
                                .error, file: file.displayPath, line: line(member.key),
                                "match.\(member.key) must be a value or a list of values (use dotted keys for nested fields)"
                            ))
                    default: conditions.append(MatchCondition(field: member.key, accepted: [member.value]))
                    }
                }
            } else if type == "table" {
                conditions = []  // an empty table: nothing to match
            } else {
                diagnostics.append(
                    Diagnostic(
                        .error, file: file.displayPath, line: line("match"), "match must be a table, not \(type)"))
            }
        }

        let schedule = readSchedule(table, types: types, line: line, file: file, into: &diagnostics)

        // functions
        for key in ["filter", "transform", "run", "tick"] {
            if let type = types[key], type != "function" {
                diagnostics.append(
                    Diagnostic(
                        .error, file: file.displayPath, line: line(key), "\(key) must be a function, not \(type)"))
            }
        }

        // forward
        var targets: [ForwardTarget] = []
        if let ref = state.field("forward", of: table) {
            do {
                targets = try ForwardTarget.parseList(try state.value(of: ref), what: "forward")
            } catch let e as ForwardTargetError {
                diagnostics.append(Diagnostic(.error, file: file.displayPath, line: line("forward"), e.message))
            } catch {
                diagnostics.append(
                    Diagnostic(.error, file: file.displayPath, line: line("forward"), "forward: \(error)"))
            }
        }

        let timed = types["tick"] != nil || types["every"] != nil || types["cron"] != nil
        if types["transform"] == nil, types["forward"] == nil, types["run"] == nil, !timed {
            diagnostics.append(
                Diagnostic(
                    .error, file: file.displayPath, line: SourceLocator.returnLine(in: file.text),
                    "the rule does nothing: give it at least one of transform, forward or run (or tick)"))
        } else if types["on"] != nil, types["transform"] == nil, types["forward"] == nil, types["run"] == nil {
            diagnostics.append(
                Diagnostic(
                    .error, file: file.displayPath, line: line("on"),
                    "the rule has on but nothing to do with the events: give it transform, forward or run, or remove on"
                ))
        }

        // Warnings: match fields the events in `on` never carry.
        if !patterns.contains(where: { $0.text == "*" }) {
            let specs = patterns.flatMap(\.specs)
            for condition in conditions {
                let top = condition.path[0]
                guard !specs.isEmpty, !specs.contains(where: { $0.type(of: top) != nil }) else { continue }
                let carriers = EventCatalog.all.filter { $0.type(of: top) != nil }.map(\.qualifiedName)
                let hint =
                    carriers.isEmpty
                    ? ""
                    : " (it comes with \(carriers.prefix(3).joined(separator: ", "))\(carriers.count > 3 ? "…" : ""))"
                diagnostics.append(
                    Diagnostic(
                        .warning, file: file.displayPath, line: line(condition.field) ?? line("match"),
                        "match field \"\(condition.field)\" is not sent with \(patterns.map(\.text).joined(separator: ", ")) events\(hint); the rule may never run"
                    ))
            }
        }

        guard !diagnostics.contains(where: { $0.severity == .error }) else { return (nil, diagnostics) }
        do {
            let entry = try state.callReferences(makeEntry, referenceArguments: [table])[0]
            let definition = RuleDefinition(
                name: name, file: file, on: patterns, match: conditions, forward: targets,
                hasFilter: types["filter"] != nil, hasTransform: types["transform"] != nil, hasRun: types["run"] != nil,
                schedule: schedule)
            let tick = schedule == nil ? nil : state.field("tick", of: table)
            return (LoadedRule(definition: definition, entry: entry, tick: tick), diagnostics)
        } catch let e {
            return error(e.line, e.message, traceback: e.traceback)
        }
    }

    /// Reads `every` or `cron` (with `timezone`) and checks they come with `tick`, and `tick` with them.
    func readSchedule(
        _ table: LuaReference, types: [String: String], line: (String) -> Int?, file: SourceFile,
        into diagnostics: inout [Diagnostic]
    ) -> TickSchedule? {
        func problem(_ key: String, _ message: String) {
            diagnostics.append(Diagnostic(.error, file: file.displayPath, line: line(key), message))
        }
        func value(_ key: String) -> JSONValue? {
            state.field(key, of: table).flatMap { try? state.value(of: $0) }
        }
        var schedule: TickSchedule?
        if types["every"] != nil, types["cron"] != nil {
            problem("cron", "give every or cron, not both")
            return nil
        }
        if let every = value("every") {
            let seconds: Double?
            switch every {
            case .int(let n): seconds = Double(n)
            case .double(let d): seconds = d
            case .string(let text): seconds = Durations.parse(text)
            default: seconds = nil
            }
            if let seconds, seconds >= TickSchedule.minimumInterval, seconds <= Durations.longest {
                schedule = .every(seconds)
            } else {
                problem(
                    "every",
                    "every must be seconds (at least \(Int(TickSchedule.minimumInterval)), at most \(Durations.format(Durations.longest))) or a duration such as \"30s\", \"5m\", \"1h\", not \(HostAPI.render(every))"
                )
            }
        }
        // Made only for a rule that has a cron: a TimeZone opens ICU's zone data (about 3 MB resident), which a
        // server whose rules have no cron never needs.
        var zone: TimeZone? = nil
        if let given = value("timezone") {
            if types["cron"] == nil {
                problem("timezone", "timezone applies to cron only (every counts seconds from the last tick)")
            } else if let name = given.stringValue, let found = TimeZone(identifier: name) {
                zone = found
            } else {
                let name = given.stringValue ?? HostAPI.render(given)
                let hint =
                    Suggestions.closest(to: name, in: TimeZone.knownTimeZoneIdentifiers).map {
                        " (did you mean \($0)?)"
                    } ?? " (a name from the tz database, such as \"Europe/Berlin\" or \"America/New_York\")"
                problem("timezone", "unknown timezone \"\(name)\"\(hint)")
            }
        }
        if let cron = value("cron") {
            if let text = cron.stringValue {
                do {
                    let expression = try CronExpression(text)
                    let zone = zone ?? TimeZone(identifier: "UTC")!
                    if expression.next(after: Date().timeIntervalSince1970, in: zone) == nil {
                        problem("cron", "cron \"\(text)\" never fires (no date matches it)")
                    } else {
                        schedule = .cron(expression, zone)
                    }
                } catch {
                    problem("cron", error.message)
                }
            } else {
                problem("cron", "cron must be a string such as \"0 9 * * 1-5\", not \(cron.typeName)")
            }
        }
        let hasTimer = types["every"] != nil || types["cron"] != nil
        if hasTimer, types["tick"] == nil {
            problem(
                types["every"] != nil ? "every" : "cron", "a schedule needs a tick = function(now) ... end to run")
        } else if !hasTimer, types["tick"] != nil {
            problem("tick", "tick needs a schedule: every = \"5m\" (or seconds), or cron = \"0 9 * * 1-5\"")
        }
        return schedule
    }

    /// Lua prefixes messages with "file:line:"; diagnostics carry those separately.
    package static func strip(_ message: String, file: String) -> String {
        guard message.hasPrefix(file + ":") else { return message }
        let rest = message.dropFirst(file.count + 1).drop(while: { $0.isNumber })
        return rest.hasPrefix(": ") ? String(rest.dropFirst(2)) : message
    }
}
