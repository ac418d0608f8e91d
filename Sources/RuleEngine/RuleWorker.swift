public import JSONCore
public import KazooEvents
import LuaRuntime

/// Owns one Lua state with every rule loaded, and runs rules on events. Each rule run is a coroutine: when a
/// rule waits on HTTP only its coroutine waits, and the worker may run other events meanwhile.
///
/// Rules run in the order of their file paths, each independently: every rule gets its own copy of the
/// event as decoded, and one rule's error, drop or changes never affect another.
public actor RuleWorker {
    public let source: RuleSource
    public let configuration: RuleConfiguration
    /// Problems found while loading (errors keep that rule out; warnings do not).
    public private(set) var diagnostics: [Diagnostic]
    /// Log lines written by rule files while they loaded.
    public private(set) var loadLogs: [(file: String, record: LogRecord)]
    /// The rules that loaded, in the order they run.
    public var rules: [RuleDefinition] { loaded.map(\.definition) }

    let client: any OutboundHTTPClient
    let sendForwards: Bool
    var state: LuaState
    var context: RunContext
    var loaded: [LoadedRule]

    /// Loads every rule of `source` into a new Lua state.
    /// - Parameters:
    ///   - client: sends `http.*` calls (and forwards, when `sendForwards`).
    ///   - sendForwards: send forwards after a rule finishes (live), or only record them (dry run).
    /// - Throws: `LuaError` when the Lua state itself cannot be set up.
    public init(
        source: RuleSource, configuration: RuleConfiguration = RuleConfiguration(),
        client: any OutboundHTTPClient = DryRunHTTPClient(), sendForwards: Bool = false
    ) throws {
        self.source = source
        self.configuration = configuration
        self.client = client
        self.sendForwards = sendForwards
        let built = try Self.build(source: source, configuration: configuration)
        (state, context, loaded, diagnostics) = (built.state, built.context, built.rules, built.diagnostics)
        loadLogs = built.context.loadLogs
    }

    struct Built {
        var state: LuaState
        var context: RunContext
        var rules: [LoadedRule]
        var diagnostics: [Diagnostic]
    }

    static func build(source: RuleSource, configuration: RuleConfiguration) throws -> Built {
        let state = try LuaState(limits: configuration.limits)
        let context = RunContext()
        try HostAPI.install(in: state, context: context, configuration: configuration)
        var modules: [String: (source: String, chunkName: String)] = [:]
        for (name, file) in source.modules { modules[name] = (file.text, file.displayPath) }
        try state.installRequire(modules: modules)
        let loader = try RuleLoader(state: state, context: context, source: source)
        let (rules, diagnostics) = loader.loadAll()
        return Built(state: state, context: context, rules: rules, diagnostics: diagnostics)
    }

    /// Runs every rule on the event and reports what each did.
    /// - Parameter meta: extra request data for rules as `event.meta` (the server's headers and peer).
    /// - Parameter only: run just the rule with this name (`switchboard test`).
    public func process(_ event: WebhookEvent, meta: JSONValue? = nil, only: String? = nil) async -> EventReport {
        var outcomes: [RuleOutcome] = []
        let eventValue = Self.luaEvent(event, meta: meta)
        let qualifiedName = event.qualifiedName
        outcomes.reserveCapacity(loaded.count)
        for rule in loaded where only == nil || rule.definition.name == only {
            if let stage = rule.definition.precheck(event, qualifiedName: qualifiedName) {
                outcomes.append(
                    RuleOutcome(
                        rule: rule.definition.name, file: rule.definition.file.displayPath, outcome: .skipped,
                        stage: stage))
                continue
            }
            outcomes.append(await run(rule, value: eventValue))
        }
        return EventReport(event: event, rules: outcomes)
    }

    /// The event as rules see it: every field, plus `kind`, `name`, `unix_time` (and `meta`). `id` is the
    /// payload's own when it has one (object and sms payloads do), else `meta.id`: either way the same on
    /// every run of the same accepted event.
    static func luaEvent(_ event: WebhookEvent, meta: JSONValue?) -> JSONValue {
        var fields = event.fields
        fields["kind"] = .string(event.kind.rawValue)
        fields["name"] = .string(event.name)
        if let unix = event.unixTime { fields["unix_time"] = .int(unix) }
        if let meta {
            fields["meta"] = meta
            if fields["id"] == nil, let id = meta["id"] { fields["id"] = id }
        }
        return .object(fields)
    }

    /// Runs one rule whose `on` and `match` already accepted the event.
    func run(_ rule: LoadedRule, value: JSONValue) async -> RuleOutcome {
        let definition = rule.definition
        let run = RuleRun(rule: definition.name, targets: definition.forward)
        var outcome = RuleOutcome(rule: definition.name, file: definition.file.displayPath, outcome: .ok)
        do {
            let coroutine = try state.startCoroutine(rule.entry, [value])
            var resumeWith: [JSONValue] = []
            while true {
                context.phase = .running(run)
                let step = try state.resume(coroutine, with: resumeWith)
                context.phase = .idle
                switch step {
                case .suspended(let request):
                    resumeWith = await perform(request, run: run)
                case .finished(let results):
                    switch results.first?.stringValue {
                    case "skipped":
                        outcome.outcome = .skipped
                        outcome.stage = "filter"
                    case "dropped":
                        outcome.outcome = .dropped
                        outcome.stage = "transform"
                    default:
                        outcome.outcome = .ok
                    }
                    if outcome.outcome == .ok, sendForwards { await sendPendingForwards(run) }
                    finish(&outcome, run)
                    return outcome
                }
            }
        } catch {
            context.phase = .idle
            outcome.outcome = .error
            outcome.stage = run.stage
            outcome.error = RuleErrorInfo(
                message: error.message, file: fullPath(of: error.chunk), line: error.line, traceback: error.traceback)
            finish(&outcome, run)
            if state.needsRebuild { rebuild() }
            return outcome
        }
    }

    /// Lua shortens long chunk names to "...tail"; this gives back the file's path as the user named it.
    func fullPath(of chunk: String?) -> String? {
        guard let chunk, chunk.hasPrefix("...") else { return chunk }
        let tail = chunk.dropFirst(3)
        let files = source.rules + Array(source.modules.values)
        return files.first { $0.displayPath.hasSuffix(tail) }?.displayPath ?? chunk
    }

    func finish(_ outcome: inout RuleOutcome, _ run: RuleRun) {
        let elapsed = ContinuousClock.now - run.started
        outcome.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        outcome.forwards = run.forwards
        outcome.http = run.http
        outcome.logs = run.logs
    }

    /// After a kill left the state full, start over from the same files (module state is lost).
    func rebuild() {
        guard let built = try? Self.build(source: source, configuration: configuration) else { return }
        (state, context, loaded) = (built.state, built.context, built.rules)
    }

    /// Sends one `http.*` request and returns what the rule's call returns: a response table, or nil and
    /// a message.
    func perform(_ request: JSONValue, run: RuleRun) async -> [JSONValue] {
        let method = request["method"]?.stringValue ?? "GET"
        let url = request["url"]?.stringValue ?? ""
        var headers: [OutboundRequest.Header] = []
        for member in request["headers"]?.objectValue ?? JSONObject() {
            headers.append(.init(name: member.key, value: member.value.stringValue ?? ""))
        }
        var body: [UInt8]? = nil
        switch request["body"] {
        case .string(let s)?: body = Array(s.utf8)
        case .bytes(let b)?: body = b
        default: break
        }
        let seconds = request["timeout"]?.doubleValue ?? 5
        let outbound = OutboundRequest(
            method: method, url: url, headers: headers, body: body, timeout: .milliseconds(Int64(seconds * 1000)),
            rule: run.rule)
        do {
            let response = try await client.execute(outbound)
            run.http.append(HTTPRecord(method: method, url: url, status: response.status, error: nil))
            return [Self.luaResponse(response)]
        } catch {
            let message = (error as? OutboundHTTPError)?.message ?? "\(error)"
            run.http.append(HTTPRecord(method: method, url: url, status: nil, error: message))
            return [.null, .string(message)]
        }
    }

    /// `{ status, headers = {name = value}, body, json }`; `json` when the body parses as JSON.
    static func luaResponse(_ response: OutboundResponse) -> JSONValue {
        var headers = JSONObject()
        for h in response.headers { headers[h.name.lowercased()] = .string(h.value) }
        var out = JSONObject()
        out["status"] = .int(Int64(response.status))
        out["headers"] = .object(headers)
        if let text = String(validating: response.body, as: UTF8.self) {
            out["body"] = .string(text)
        } else {
            out["body"] = .bytes(response.body)
        }
        if let first = response.body.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }),
            first == UInt8(ascii: "{") || first == UInt8(ascii: "["),
            let parsed = try? JSONReader.parse(response.body)
        {
            out["json"] = parsed
        }
        return .object(out)
    }

    func sendPendingForwards(_ run: RuleRun) async {
        for index in run.forwards.indices {
            let forward = run.forwards[index]
            let request = OutboundRequest(
                method: forward.method, url: forward.url,
                headers: forward.requestHeaders, body: forward.payload, timeout: configuration.httpDefaultTimeout)
            var delay = configuration.forwardRetryDelay
            for attempt in 1...max(configuration.forwardAttempts, 1) {
                do {
                    let response = try await client.execute(request)
                    run.forwards[index].status = response.status
                    run.forwards[index].error = nil
                    if (200..<300).contains(response.status) { break }
                } catch {
                    run.forwards[index].error = (error as? OutboundHTTPError)?.message ?? "\(error)"
                }
                if attempt < configuration.forwardAttempts {
                    try? await Task.sleep(for: delay)
                    delay *= 2
                }
            }
        }
    }
}
