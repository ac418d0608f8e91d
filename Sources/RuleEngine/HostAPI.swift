import Foundation
package import JSONCore
import KazooEvents
package import LuaRuntime

/// What the host API is doing right now: which file is loading, or which rule run is executing. The API
/// checks it so that a call where it cannot work is a clear error (http while a file loads, for example).
final class RunContext {
    /// The run being resumed: set by `RuleWorker.step` just before a resume and cleared as soon as it returns,
    /// while `step` holds the run. Unowned, so that setting and clearing it around every resume is no retain and
    /// release of the run (as an enum case holding it, it was both, and another pair for every read); a host
    /// function reading it gets a strong reference. Only the worker that owns the state touches it: no dynamic
    /// exclusivity checks.
    @exclusivity(unchecked) unowned(unsafe) var currentRun: RuleRun? = nil
    /// The file whose top level is running, while a file loads (`RuleLoader.load`).
    @exclusivity(unchecked) var loadingFile: String? = nil
    /// Log lines written while files load (shown by `check` and `run`).
    var loadLogs: [(file: String, record: LogRecord)] = []
}

/// One rule run's record: its stage and everything it did. Made, written and read only by the worker running
/// the rule (host calls run between resumes, on the worker), with no access overlapping another: its
/// `var`s skip the dynamic exclusivity checks, which callgrind put at 5 per event on the engine row.
final class RuleRun {
    /// The rule's gate (its name, file and `forward` field, parsed when the file loaded) and the event's
    /// inputs, held rather than copied apart: two retains a run where its name, targets, session, fields and
    /// id were five.
    let gate: RuleGate
    let inputs: RuleWorker.RunInputs
    var rule: String { gate.name }
    /// The rule's `forward` field.
    var targets: [ForwardTarget] { gate.definition.forward }
    /// `tick` for a tick's run, else `filter`. A failed event run's stage is read from the line its driver
    /// had reached (`RuleLoader.stage(atLine:)`).
    @exclusivity(unchecked) var stage = "filter"
    /// When the run started (`LuaState.clock()` seconds): its coroutine's time limit counts from this reading
    /// too, and its outcome's time ends at its last resume's reading (two clock reads a run, not four).
    let started = LuaState.clock()
    @exclusivity(unchecked) var forwards: [ForwardRecord] = []
    @exclusivity(unchecked) var http: [HTTPRecord] = []
    @exclusivity(unchecked) var logs: [LogRecord] = []
    /// Where `store.*` and `call.*` read and write: the store work of this run's event.
    var session: StoreSession? { inputs.session }
    /// The event's call, for `call.*`; nil for events of no call (and ticks). Read on first use: most runs
    /// never ask.
    lazy var callID: String? = inputs.fields.flatMap(WebhookEvent.callID(in:))
    /// What the run's forwards are named by in their `webhook-id`: the accepted event's id (or the tick's).
    var eventID: String? { inputs.eventID }
    /// For a run of no accepted event (`switchboard run --live`): made once, when a signed forward needs it,
    /// so that receivers deduplicating by `webhook-id` still see each run's forwards.
    lazy var messageBase: String = eventID ?? "run-\(UUID().uuidString.prefix(8).lowercased())"

    init(gate: RuleGate, inputs: RuleWorker.RunInputs) {
        self.gate = gate
        self.inputs = inputs
    }
}

/// Installs the API rules see (`log`, `http`, `json`, `kazoo`, `env`, `forward`, `print`) into a state's
/// template, so every rule and module environment gets it. One function per area below.
package enum HostAPI {
    static func install(in state: LuaState, context: RunContext, configuration: RuleConfiguration) throws(LuaError) {
        try state.installGlobal("log", logTable(context))
        try state.installGlobal("print", .function(print(context)))
        try state.installGlobal("json", jsonTable())
        try state.installGlobal("http", httpTable(context, configuration))
        try state.installGlobal("kazoo", kazooTable())
        try state.installGlobal("env", .function(env(configuration)))
        try state.installGlobal("forward", .function(forward(context, configuration)))
        var store = storeTable(context) { run in "rule:" + run.rule }
        store["shared"] = .table(storeTable(context) { _ in "shared" })
        try state.installGlobal("store", .table(store))
        try state.installGlobal("call", callTable(context, configuration))
    }

    // MARK: log

    static let levels = ["debug", "info", "warn", "error"]

    static func logTable(_ context: RunContext) -> HostValue {
        var functions: [String: HostValue] = [:]
        for level in levels {
            functions[level] = .function { args in
                let message = args[1].stringValue ?? render(args[1])
                let fields = args[2]
                if fields != .null, fields.objectValue == nil, fields != .array([]) {
                    throw args.badArgument(2, expected: "table of fields")
                }
                record(
                    LogRecord(
                        level: level, message: message, fields: fields == .array([]) ? .object(JSONObject()) : fields),
                    context)
                return []
            }
        }
        return .table(functions)
    }

    static func print(_ context: RunContext) -> HostFunction {
        { args in
            record(
                LogRecord(level: "info", message: args.values.map(render).joined(separator: "\t"), fields: .null),
                context)
            return []
        }
    }

    static func record(_ line: LogRecord, _ context: RunContext) {
        if let run = context.currentRun {
            run.logs.append(line)
        } else {
            context.loadLogs.append((context.loadingFile ?? "", line))
        }
    }

    /// How print and log show a value that is not a string.
    package static func render(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): s
        case .null: "nil"
        case .int(let i): String(i)
        case .double(let d): JSONWriter.formatDouble(d)
        case .bool(let b): b ? "true" : "false"
        case .bytes(let b): String(decoding: b, as: UTF8.self)
        default: (try? JSONWriter.string(value)) ?? "(table)"
        }
    }

    // MARK: json

    package static func jsonTable() -> HostValue {
        .table([
            "encode": .function { args in
                [.string(try encode(args[1], context: "json.encode"))]
            },
            "decode": .function { args in
                guard case .string(let text) = args[1] else { throw args.badArgument(1, expected: "string") }
                do { return [try JSONReader.parse(text.utf8)] } catch let error as JSONError {
                    return [.null, .string(error.description)]
                }
            },
            "null": .value(.null),
            "array": .arrayMarker,
            "object": .objectMarker,
        ])
    }

    /// JSON text for a value, or an error a rule can read.
    static func encode(_ value: JSONValue, context: String) throws(HostFunctionError) -> String {
        do {
            return try JSONWriter.string(value)
        } catch {
            throw HostFunctionError("\(context): \(error.message)")
        }
    }

    // MARK: http

    static func httpTable(_ context: RunContext, _ configuration: RuleConfiguration) -> HostValue {
        func request(_ name: String, _ options: JSONValue, method: String?, url: String?, body: JSONValue?) throws
            -> JSONValue
        {
            guard context.currentRun != nil else {
                throw HostFunctionError(
                    "\(name) is not available while a rule file is loading; call it from filter, transform or run")
            }
            var o = options.objectValue ?? JSONObject()
            if options != .null, options.objectValue == nil {
                throw HostFunctionError("bad argument to '\(name)' (options table expected, got \(options.typeName))")
            }
            if let url { o["url"] = .string(url) }
            if let method { o["method"] = .string(method) }
            if let body {
                if case .string = body { o["body"] = body } else if body != .null { o["json"] = body }
            }
            return try normalize(o, name: name, configuration)
        }
        return .table([
            "request": .suspending { args in
                guard args[1].objectValue != nil else { throw args.badArgument(1, expected: "table { url = ... }") }
                return try request("http.request", args[1], method: nil, url: nil, body: nil)
            },
            "get": .suspending { args in
                try request("http.get", args[2], method: "GET", url: try args.string(1), body: nil)
            },
            "post": .suspending { args in
                try request("http.post", args[3], method: "POST", url: try args.string(1), body: args[2])
            },
        ])
    }

    /// Checks a request table and returns it in the shape the worker sends:
    /// `{method, url, headers = {k = v}, body = string|nil, timeout = seconds}`.
    static func normalize(_ o: JSONObject, name: String, _ configuration: RuleConfiguration) throws -> JSONValue {
        let allowed = ["method", "url", "headers", "body", "json", "timeout"]
        for key in o.keys where !allowed.contains(key) {
            let hint = Suggestions.closest(to: key, in: allowed).map { " (did you mean \($0)?)" } ?? ""
            throw HostFunctionError("\(name): unknown option '\(key)'\(hint)")
        }
        guard let url = o["url"]?.stringValue else { throw HostFunctionError("\(name): url is required") }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw HostFunctionError("\(name): \"\(url)\" is not an http:// or https:// URL")
        }
        var headers = JSONObject()
        if let h = o["headers"] {
            guard case .object(let given) = h else { throw HostFunctionError("\(name): headers must be a table") }
            for m in given {
                guard let value = m.value.stringValue ?? (m.value.intValue.map { String($0) }) else {
                    throw HostFunctionError("\(name): header \(m.key) must be a string")
                }
                headers[m.key] = .string(value)
            }
        }
        var body: JSONValue = .null
        if let b = o["body"], b != .null {
            guard b.stringValue != nil || { if case .bytes = b { return true } else { return false } }() else {
                throw HostFunctionError("\(name): body must be a string (use json = {...} for a table)")
            }
            body = b
        }
        if let j = o["json"], j != .null {
            guard body == .null else { throw HostFunctionError("\(name): give body or json, not both") }
            body = .string(try encode(j, context: "\(name): json cannot be encoded"))
            if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) {
                headers["Content-Type"] = "application/json"
            }
        }
        let method = (o["method"]?.stringValue ?? (body == .null ? "GET" : "POST")).uppercased()
        var timeout = configuration.httpDefaultTimeout.inSeconds
        if let t = o["timeout"], t != .null {
            guard let value = t.doubleValue, value > 0 else {
                throw HostFunctionError("\(name): timeout must be a positive number of seconds")
            }
            timeout = min(value, configuration.httpMaxTimeout.inSeconds)
        }
        return [
            "method": .string(method), "url": .string(url), "headers": .object(headers), "body": body,
            "timeout": .double(timeout),
        ]
    }

    // MARK: forward

    static func forward(_ context: RunContext, _ configuration: RuleConfiguration) -> HostFunction {
        { args in
            guard let run = context.currentRun else {
                throw HostFunctionError("forward is not available while a rule file is loading; call it from run")
            }
            let targets: [ForwardTarget]
            do { targets = try ForwardTarget.parseList(args[1], what: "forward target") } catch let error
                as ForwardTargetError
            {
                throw HostFunctionError(error.message)
            }
            try record(forwards: targets, payload: args[2], in: run, configuration: configuration)
            return []
        }
    }

    /// A JSON forward's headers when its target names none: made once, not per forward.
    static let jsonHeaders = JSONObject([.init(key: "Content-Type", value: "application/json")])

    /// Encodes the payload for each target and records the forwards (sent later when the run is live).
    /// A signed target's forward carries its `webhook-id` (stable across retries: the event's id, the rule and
    /// the forward's number) and, in `signWithHeader`, the name of the variable holding the secret; the outbox
    /// signs each attempt with a fresh timestamp and never sends that header.
    static func record(
        forwards targets: [ForwardTarget], payload: JSONValue, in run: RuleRun, configuration: RuleConfiguration
    ) throws(HostFunctionError) {
        // By index, each field read in place: `for target in targets` (or a method called on `targets[i]`)
        // copied the whole target out and destroyed the copy after, a retain and a release of each of its
        // strings and its headers for every forward.
        for i in targets.indices {
            let (shown, bytes, contentType): (JSONValue, [UInt8], String)
            do { (shown, bytes, contentType) = try ForwardTarget.body(format: targets[i].format, for: payload) } catch {
                throw HostFunctionError("forward to \(targets[i].url): \(error.message)")
            }
            var headers = targets[i].headers
            if headers.isEmpty {
                headers =
                    contentType == "application/json"
                    ? jsonHeaders : JSONObject([.init(key: "Content-Type", value: .string(contentType))])
            } else if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) {
                headers["Content-Type"] = .string(contentType)
            }
            if let sign = targets[i].sign {
                guard readable(sign, configuration) else {
                    throw HostFunctionError(
                        "forward to \(targets[i].url): sign = \"\(sign)\": rules may only use SWITCHBOARD_* variables, or names allowed with --allow-env"
                    )
                }
                guard configuration.environment[sign] != nil else {
                    throw HostFunctionError(
                        "forward to \(targets[i].url): sign = \"\(sign)\": the variable is not set (export the signing secret)"
                    )
                }
                let safe = { (text: String) in String(text.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }) }
                headers["webhook-id"] = .string(
                    "msg_\(safe(run.messageBase))_\(safe(run.rule))_\(run.forwards.count + 1)")
                headers[signWithHeader] = .string(sign)
            }
            run.forwards.append(
                ForwardRecord(
                    method: targets[i].method, url: targets[i].url, headers: headers, body: shown,
                    format: targets[i].format, payload: bytes))
        }
    }

    // MARK: store and call

    /// How long a call's keys live when no `channel_destroy` comes for it.
    static let callStateMaxAge: Double = 86_400

    /// The run calling `name` and its store session, or an error saying where the function works.
    static func storeSession(_ context: RunContext, _ name: String) throws(HostFunctionError) -> (RuleRun, StoreSession)
    {
        guard let run = context.currentRun, let session = run.session else {
            throw HostFunctionError(
                "\(name) is not available while a rule file loads; call it from a stage (filter, transform, run)")
        }
        return (run, session)
    }

    /// `{ ttl = seconds or "10m" }` → seconds.
    static func ttl(_ args: HostArguments, _ position: Int) throws(HostFunctionError) -> Double? {
        let options = args[position]
        if options == .null { return nil }
        guard let fields = options.objectValue else { throw args.badArgument(position, expected: "table { ttl = … }") }
        for member in fields where member.key != "ttl" {
            throw HostFunctionError("\(args.functionName): unknown option '\(member.key)' (the only one is ttl)")
        }
        return try seconds(fields["ttl"] ?? .null, args, what: "ttl")
    }

    /// A number of seconds, or a duration text like "10m"; positive.
    static func seconds(_ value: JSONValue, _ args: HostArguments, what: String) throws(HostFunctionError) -> Double? {
        let seconds: Double?
        switch value {
        case .null: return nil
        case .int, .double: seconds = value.doubleValue
        case .string(let text): seconds = Durations.parse(text)
        default: seconds = nil
        }
        guard let seconds, seconds > 0, seconds.isFinite else {
            throw HostFunctionError(
                "\(args.functionName): \(what) must be a number of seconds or a duration like \"10m\", more than 0")
        }
        return seconds
    }

    /// `get`, `set`, `incr`, `delete`, `add`, `count` over the namespace `namespace(run)` names.
    static func storeTable(_ context: RunContext, namespace: @escaping (RuleRun) -> String) -> [String: HostValue] {
        /// Runs `body` with the caller's session and namespace; a store error becomes the function's error.
        func call(_ args: HostArguments, _ body: (StoreSession, String) throws(StoreError) -> [JSONValue]) throws
            -> [JSONValue]
        {
            let (run, session) = try storeSession(context, args.functionName)
            do { return try body(session, namespace(run)) } catch {
                throw HostFunctionError("\(args.functionName): \(error.message)")
            }
        }
        return [
            "get": .function { args in
                let key = try args.string(1)
                return try call(args) { session, ns throws(StoreError) in [try session.get(ns, key) ?? .null] }
            },
            "set": .function { args in
                let key = try args.string(1)
                let ttl = try ttl(args, 3)
                let value = args[2] == .null ? nil : args[2]
                return try call(args) { session, ns throws(StoreError) in
                    try session.set(ns, key, value, ttl: ttl)
                    return []
                }
            },
            "delete": .function { args in
                let key = try args.string(1)
                return try call(args) { session, ns throws(StoreError) in
                    try session.set(ns, key, nil)
                    return []
                }
            },
            "incr": .function { args in
                let key = try args.string(1)
                let by: JSONValue
                switch args[2] {
                case .null: by = .int(1)
                case .int, .double: by = args[2]
                default: throw args.badArgument(2, expected: "number")
                }
                let ttl = try ttl(args, 3)
                return try call(args) { session, ns throws(StoreError) in [try session.incr(ns, key, by: by, ttl: ttl)]
                }
            },
            "add": .function { args in
                let key = try args.string(1)
                guard args[2] != .null else { throw args.badArgument(2, expected: "value") }
                let ttl = try ttl(args, 3)
                let value = args[2]
                return try call(args) { session, ns throws(StoreError) in
                    [.bool(try session.add(ns, key, value, ttl: ttl))]
                }
            },
            "count": .function { args in
                let key = try args.string(1)
                guard let window = try seconds(args[2], args, what: "the window") else {
                    throw args.badArgument(2, expected: "window in seconds")
                }
                return try call(args) { session, ns throws(StoreError) in
                    [.int(Int64(try session.count(ns, key, window: window)))]
                }
            },
        ]
    }

    /// `call.get(key)`, `call.set(key, value)`: state of the event's call, shared by every rule, kept until
    /// `callStateKeep` after the call's channel_destroy (at most `callStateMaxAge` without one).
    static func callTable(_ context: RunContext, _ configuration: RuleConfiguration) -> HostValue {
        func callNamespace(_ args: HostArguments) throws(HostFunctionError) -> (StoreSession, String) {
            let (run, session) = try storeSession(context, args.functionName)
            guard let callID = run.callID else {
                let what =
                    run.stage == "tick"
                    ? "a tick belongs to no call" : "this event belongs to no call (it has no call_id)"
                throw HostFunctionError(
                    "\(args.functionName): \(what); use store for state that is not a call's")
            }
            return (session, "call:" + callID)
        }
        func get(_ args: HostArguments) throws -> [JSONValue] {
            let key = try args.string(1)
            let (session, ns) = try callNamespace(args)
            do { return [try session.get(ns, key) ?? .null] } catch {
                throw HostFunctionError("call.get: \(error.message)")
            }
        }
        func set(_ args: HostArguments) throws -> [JSONValue] {
            let key = try args.string(1)
            let (session, ns) = try callNamespace(args)
            do { try session.set(ns, key, args[2] == .null ? nil : args[2], ttl: callStateMaxAge) } catch {
                throw HostFunctionError("call.set: \(error.message)")
            }
            return []
        }
        return .table(["get": .function(get), "set": .function(set)])
    }

    // MARK: env

    /// The header that tells the outbox which variable holds a forward's signing secret (never sent).
    package static let signWithHeader = "switchboard-sign-with"

    /// Whether rules may read the variable `name`.
    static func readable(_ name: String, _ configuration: RuleConfiguration) -> Bool {
        name.hasPrefix("SWITCHBOARD_") || configuration.allowedEnvironment.contains(name)
    }

    static func env(_ configuration: RuleConfiguration) -> HostFunction {
        { args in
            let name = try args.string(1)
            guard readable(name, configuration) else {
                throw HostFunctionError(
                    "env: \(name) is not readable by rules (only SWITCHBOARD_* variables, or names allowed with --allow-env)"
                )
            }
            return [configuration.environment[name].map(JSONValue.string) ?? .null]
        }
    }

    // MARK: kazoo

    /// A time in whole seconds from a rule's number: NaN, infinities and values past ±9e18 (where the
    /// conversion, or the epoch shift after it, would overflow) are the rule's error, not the process's.
    static func wholeSeconds(_ value: Double, in name: String) throws -> Int64 {
        guard value.isFinite, abs(value) < 9e18 else {
            throw HostFunctionError("\(name): \(value) is not a time in seconds")
        }
        return Int64(value)
    }

    package static func kazooTable() -> HostValue {
        .table([
            "unix": .function { args in
                guard let g = args[1].doubleValue else {
                    throw args.badArgument(1, expected: "number (Gregorian seconds)")
                }
                return [.int(WebhookEvent.unixTime(fromGregorian: try wholeSeconds(g, in: "kazoo.unix")))]
            },
            "gregorian": .function { args in
                guard let u = args[1].doubleValue else { throw args.badArgument(1, expected: "number (Unix seconds)") }
                return [.int(WebhookEvent.gregorian(fromUnix: try wholeSeconds(u, in: "kazoo.gregorian")))]
            },
            "e164": .function { args in
                guard case .string(let number) = args[1] else { throw args.badArgument(1, expected: "string") }
                let country = args[2].stringValue ?? args[2].intValue.map { String($0) } ?? "1"
                return [PhoneNumber.e164(number, defaultCountry: country).map(JSONValue.string) ?? .null]
            },
            "user": .function { args in
                guard case .string(let uri) = args[1] else { throw args.badArgument(1, expected: "string") }
                return [.string(PhoneNumber.uriParts(uri).user)]
            },
            "realm": .function { args in
                guard case .string(let uri) = args[1] else { throw args.badArgument(1, expected: "string") }
                return [PhoneNumber.uriParts(uri).realm.map(JSONValue.string) ?? .null]
            },
            "ccv": .function { args in
                guard let vars = args[1]["custom_channel_vars"]?.objectValue ?? args[1].objectValue else {
                    throw args.badArgument(1, expected: "event (or custom_channel_vars table)")
                }
                let name = try args.string(2)
                let wanted = PhoneNumber.normalizeVariable(name)
                return [vars.first { PhoneNumber.normalizeVariable($0.key) == wanted }?.value ?? .null]
            },
        ])
    }
}

/// Helpers behind `kazoo.*` that rule writers need around numbers and SIP URIs.
enum PhoneNumber {
    /// E.164 (`+14155550123`) from what Kazoo and people write: `+1 (415) 555-0123`, `4155550123`,
    /// `14155550123`, `011…`/`00…` international prefixes. Nil when there are too few or too many digits.
    static func e164(_ text: String, defaultCountry: String) -> String? {
        let user = uriParts(text).user.trimmingCharacters(in: .whitespaces)
        var digits = String(user.unicodeScalars.filter { $0.properties.numericType != nil && $0.isASCII })
        if user.hasPrefix("+") {
            // already international
        } else if digits.hasPrefix("011") {
            digits.removeFirst(3)
        } else if digits.hasPrefix("00") {
            digits.removeFirst(2)
        } else if defaultCountry == "1" {
            if digits.count == 10 {
                digits = "1" + digits
            } else if !(digits.count == 11 && digits.hasPrefix("1")) {
                return nil
            }
        } else if digits.hasPrefix("0") {
            digits = defaultCountry + digits.dropFirst()
        } else {
            digits = defaultCountry + digits
        }
        return (8...15).contains(digits.count) ? "+" + digits : nil
    }

    /// "sip:+1415@realm:5060" → ("+1415", "realm:5060").
    static func uriParts(_ uri: String) -> (user: String, realm: String?) {
        var s = Substring(uri)
        for scheme in ["sip:", "sips:", "tel:"] where s.lowercased().hasPrefix(scheme) { s = s.dropFirst(scheme.count) }
        guard let at = s.lastIndex(of: "@") else { return (String(s), nil) }
        return (String(s[..<at]), String(s[s.index(after: at)...]))
    }

    /// "Resource-Type", "resource_type" and "RESOURCE-TYPE" name the same channel variable.
    static func normalizeVariable(_ name: String) -> String {
        name.lowercased().replacingOccurrences(of: "-", with: "_")
    }
}
