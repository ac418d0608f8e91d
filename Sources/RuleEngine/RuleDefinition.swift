public import JSONCore
import KazooEvents
import Synchronization

/// Where a rule sends its payload: the `forward` field or `forward(target, payload)`.
public struct ForwardTarget: Sendable, Hashable {
    public var url: String
    public var method: String
    /// `json` (default) or `form` (Kazoo-style bracket encoding).
    public var format: String
    public var headers: JSONObject
    /// The environment variable holding the secret to sign with (Standard Webhooks), if any.
    public var sign: String? = nil

    /// Reads a target: a URL string, or `{ url =, method =, format =, headers =, sign = }`.
    static func parse(_ value: JSONValue, what: String) throws(ForwardTargetError) -> ForwardTarget {
        switch value {
        case .string(let url):
            try checkURL(url, what: what)
            return ForwardTarget(url: url, method: "POST", format: "json", headers: JSONObject())
        case .object(let o):
            let keys = ["url", "method", "format", "headers", "sign"]
            for key in o.keys where !keys.contains(key) {
                let hint =
                    Suggestions.closest(to: key, in: keys).map {
                        " (did you mean \($0)?)"
                    } ?? ""
                throw ForwardTargetError("\(what): unknown key '\(key)'\(hint)")
            }
            guard let url = o["url"]?.stringValue else { throw ForwardTargetError("\(what): missing url") }
            try checkURL(url, what: what)
            let method = (o["method"]?.stringValue ?? "POST").uppercased()
            guard ["POST", "PUT", "PATCH", "GET", "DELETE"].contains(method) else {
                throw ForwardTargetError("\(what): method must be POST, PUT, PATCH, GET or DELETE, not \(method)")
            }
            let format = o["format"]?.stringValue ?? "json"
            guard format == "json" || format == "form" else {
                throw ForwardTargetError("\(what): format must be \"json\" or \"form\", not \"\(format)\"")
            }
            var headers = JSONObject()
            if let given = o["headers"] {
                guard case .object(let h) = given else { throw ForwardTargetError("\(what): headers must be a table") }
                for m in h {
                    guard case .string = m.value else {
                        throw ForwardTargetError("\(what): header \(m.key) must be a string")
                    }
                    headers[m.key] = m.value
                }
            }
            var sign: String? = nil
            if let given = o["sign"] {
                guard let name = given.stringValue, !name.isEmpty,
                    name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
                else {
                    throw ForwardTargetError(
                        "\(what): sign must name the environment variable holding the secret, such as \"SWITCHBOARD_CRM_SECRET\""
                    )
                }
                sign = name
            }
            return ForwardTarget(url: url, method: method, format: format, headers: headers, sign: sign)
        default:
            throw ForwardTargetError("\(what) must be a URL string or a table { url = ... }, not \(value.typeName)")
        }
    }

    /// Reads the `forward` field: one target or a list of them.
    static func parseList(_ value: JSONValue, what: String) throws(ForwardTargetError) -> [ForwardTarget] {
        if case .array(let items) = value {
            var out: [ForwardTarget] = []
            for (i, item) in items.enumerated() { out.append(try parse(item, what: "\(what)[\(i + 1)]")) }
            return out
        }
        return [try parse(value, what: what)]
    }

    static func checkURL(_ url: String, what: String) throws(ForwardTargetError) {
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > 8 else {
            throw ForwardTargetError("\(what): \"\(url)\" is not an http:// or https:// URL")
        }
    }

    /// The request body for a payload in a target's `format`. Static, given the format alone: a method called
    /// on a target in an array copied the whole target first (a retain and a release of each of its strings).
    static func body(format: String, for payload: JSONValue) throws(ForwardTargetError) -> (JSONValue, [UInt8], String)
    {
        if format == "form" {
            guard case .object(let o) = payload else {
                throw ForwardTargetError("a form forward needs a table payload, not \(payload.typeName)")
            }
            let text = FormEncoder.encode(o)
            return (.string(text), Array(text.utf8), "application/x-www-form-urlencoded")
        }
        do {
            return (payload, try JSONWriter.encode(payload), "application/json")
        } catch {
            throw ForwardTargetError("the payload cannot be sent as JSON: \(error.message)")
        }
    }
}

struct ForwardTargetError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// A rule as its file declared it, independent of any Lua state.
public struct RuleDefinition: Sendable, Hashable {
    public var name: String
    public var file: SourceFile
    public var on: [EventPattern]
    public var match: [MatchCondition]
    public var forward: [ForwardTarget]
    public var hasFilter: Bool
    public var hasTransform: Bool
    public var hasRun: Bool
    /// When `tick` runs, if the rule has one.
    public var schedule: TickSchedule? = nil

    /// The keys a rule table may have.
    static let keys = [
        "name", "description", "on", "match", "filter", "transform", "forward", "run", "every", "cron", "timezone",
        "tick",
    ]
}

/// What deciding whether a rule takes an event reads of it, for the per-event loops over every rule (the
/// worker's and the engine's declined path). Reading `rules[index].definition.precheck(…)` copied the rule's
/// whole definition (name, file text, patterns, targets: each retained and released) for every rule and event,
/// even out of a buffer or a class: 8% of the engine's time with 20 rules in `perf`. A gate's parts are read
/// one by one, in place.
final class RuleGate: Sendable {
    let name: String
    /// The rule file's path as shown (`definition.file.displayPath`, read without copying the file).
    let file: String
    let on: [EventPattern]
    let match: [MatchCondition]
    /// The first key of each `match` condition's path, with where it was found in the last event.
    let matchHints: [KeyHint]
    let definition: RuleDefinition

    init(_ definition: RuleDefinition) {
        name = definition.name
        file = definition.file.displayPath
        on = definition.on
        match = definition.match
        matchHints = definition.match.map { KeyHint($0.path.first ?? "") }
        self.definition = definition
    }

    /// The outcome of the rule when it declined an event at `stage` (`on` or `match`): it never ran.
    func skipped(at stage: String) -> RuleOutcome {
        RuleOutcome(rule: name, file: file, outcome: .skipped, stage: stage)
    }

    /// Whether the rule sees events at all (a rule that only ticks does not).
    var takesEvents: Bool { !on.isEmpty }

    /// Whether the rule's `on` names the event (which depends only on its kind, name and hook).
    func isNamed(by event: WebhookEvent, qualifiedName: String) -> Bool {
        on.contains { $0.matches(event, qualifiedName: qualifiedName) }
    }

    /// Whether every `match` condition holds for the event's fields.
    func matches(_ event: WebhookEvent) -> Bool {
        // By index: `allSatisfy` hands each condition over as a copy (a retain and a release of its three
        // arrays and strings), where a subscript lends it in place.
        for i in match.indices where !match[i].matches(event.fields, first: matchHints[i]) { return false }
        return true
    }
}

/// A rule set's gates, and which of them each event's `on` names. `on` depends only on an event's kind, name
/// and hook, and a node sees few distinct ones, so each is worked out once per set and remembered: trying
/// every rule's patterns on every event was 4,600 instructions per event with 20 rules (callgrind), most of
/// it string comparisons and the event's qualified name built each time.
final class RuleGates: Sendable {
    let all: [RuleGate]
    /// The indices of the rules that take events at all (not those that only tick).
    let takingEvents: [Int]
    private let known = Mutex(Known())
    /// Events of more distinct kinds, names and hooks than this (unknown events name themselves) are worked
    /// out each time instead of remembered.
    static let remembered = 512

    struct Key: Hashable {
        let kind: EventKind
        let name: String
        let hook: String?
    }

    /// What has been worked out, and the last event's answer: events of one kind come in runs, and comparing
    /// three short strings costs a tenth of hashing them.
    private struct Known {
        /// Kept apart, not as an optional pair: reading such a pair to compare its key copied the whole of it
        /// (three strings and the array).
        var lastKey: Key? = nil
        var lastNamed: [Int] = []
        var all: [Key: [Int]] = [:]

        mutating func remember(_ key: Key, _ named: [Int]) {
            lastKey = key
            lastNamed = named
        }
    }

    init(_ all: [RuleGate]) {
        self.all = all
        takingEvents = all.indices.filter { all[$0].takesEvents }
    }

    /// The indices, in rule order, of the rules whose `on` names the event.
    func named(_ event: WebhookEvent) -> [Int] {
        let key = Key(kind: event.kind, name: event.name, hook: event.hook)
        let remembered = known.withLock { known -> [Int]? in
            if known.lastKey == key { return known.lastNamed }
            guard let found = known.all[key] else { return nil }
            known.remember(key, found)
            return found
        }
        if let remembered { return remembered }
        let qualifiedName = event.qualifiedName
        let found = all.indices.filter { all[$0].isNamed(by: event, qualifiedName: qualifiedName) }
        known.withLock { known in
            if known.all.count < Self.remembered { known.all[key] = found }
            known.remember(key, found)
        }
        return found
    }
}
