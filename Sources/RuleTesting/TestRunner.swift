import Foundation
import JSONCore
import KazooEvents
import LuaRuntime
public import RuleEngine
import Synchronization

/// One test's result.
public struct TestResult: Sendable, Hashable {
    public var file: String
    public var name: String
    /// Where the test function starts.
    public var line: Int?
    public var passed: Bool
    public var milliseconds: Double
    public var failure: TestFailure?
}

/// Why a test failed: the assertion's message (with its diff) and where it is.
public struct TestFailure: Sendable, Hashable {
    public var message: String
    public var file: String?
    public var line: Int?
    public var traceback: String?
}

/// Everything a `switchboard test` run found.
public struct TestReport: Sendable, Hashable {
    public var results: [TestResult] = []
    /// Test files that failed to load, and rule files with errors.
    public var loadErrors: [Diagnostic] = []

    public var passed: Int { results.filter(\.passed).count }
    public var failed: Int { results.count - passed }
    public var ok: Bool { failed == 0 && loadErrors.isEmpty }
}

/// Runs rule test files: each test gets freshly loaded rules (no state carries over), its own HTTP mocks,
/// and its own budget, so one test's infinite loop fails that test only.
public actor TestRunner {
    let source: RuleSource
    let samplesDirectory: String
    let configuration: RuleConfiguration
    let decoder = EventDecoder()

    public init(source: RuleSource, samplesDirectory: String, configuration: RuleConfiguration) {
        self.source = source
        self.samplesDirectory = samplesDirectory
        var configuration = configuration
        configuration.environment = configuration.environment.filter { $0.key.hasPrefix("SWITCHBOARD_") }
        self.configuration = configuration
    }

    /// Runs every test whose file path or name contains `pattern` (all when nil).
    public func run(pattern: String? = nil) async -> TestReport {
        var report = TestReport()
        if let probe = try? RuleWorker(source: source, configuration: configuration) {
            report.loadErrors += await probe.diagnostics.filter { $0.severity == .error }
        }
        for file in source.tests {
            await runFile(file, pattern: pattern, into: &report)
        }
        return report
    }

    /// What the test API needs while a test runs: each test gets new ones.
    final class Current {
        var client = MockHTTPClient()
        let clock = TestClock()
        var store = RuleStore()

        /// Starts a test: no mocks, the clock at the real time, an empty store on that clock.
        func reset() {
            client = MockHTTPClient()
            clock.set(Date().timeIntervalSince1970.rounded(.down))
            store = RuleStore(clock: { [clock] in clock.now })
        }
    }

    /// The test's clock: what `store.*` and `tick` see as now. `clock.set` and `clock.advance` move it.
    final class TestClock: Sendable {
        let time = Mutex(0.0)
        var now: Double { time.withLock { $0 } }
        func set(_ value: Double) { time.withLock { $0 = value } }
    }

    func runFile(_ file: SourceFile, pattern: String?, into report: inout TestReport) async {
        let current = Current()
        let state: LuaState
        let env: LuaReference
        do {
            state = try LuaState(limits: configuration.limits)
            try installAPI(in: state, current: current)
            env = try state.newEnvironment()
            try state.run(TestPrelude.source, chunkName: "=switchboard-test", environment: env)
            try state.run(file.text, chunkName: file.displayPath, environment: env)
        } catch let error as LuaError {
            report.loadErrors.append(
                Diagnostic(
                    .error, file: file.displayPath, line: error.line,
                    RuleLoader.strip(error.message, file: error.chunk ?? file.displayPath), traceback: error.traceback))
            return
        } catch {
            report.loadErrors.append(Diagnostic(.error, file: file.displayPath, line: nil, "\(error)"))
            return
        }
        let count: Int
        do {
            let counter = try state.load("return __test_count()", chunkName: "=switchboard-test", environment: env)
            count = Int(try state.call(counter).first?.intValue ?? 0)
        } catch {
            report.loadErrors.append(Diagnostic(.error, file: file.displayPath, line: nil, error.message))
            return
        }
        if count == 0 {
            report.loadErrors.append(
                Diagnostic(.error, file: file.displayPath, line: 1, "no tests: call test(\"name\", function() ... end)")
            )
            return
        }
        guard let getter = try? state.load("return __test_get(...)", chunkName: "=switchboard-test", environment: env)
        else { return }
        for index in 1...count {
            guard let refs = try? state.callReferences(getter, [.int(Int64(index))]), refs.count == 2,
                case .string(let name)? = try? state.value(of: refs[0])
            else { continue }
            if let pattern, !name.contains(pattern), !file.path.contains(pattern) { continue }
            let result = await runTest(name: name, function: refs[1], file: file, state: state, current: current)
            report.results.append(result)
        }
    }

    func runTest(name: String, function: LuaReference, file: SourceFile, state: LuaState, current: Current) async
        -> TestResult
    {
        let clock = ContinuousClock()
        let started = clock.now
        current.reset()
        var result = TestResult(
            file: file.displayPath, name: name, line: state.lineDefined(function), passed: true, milliseconds: 0)
        func finish() -> TestResult {
            let elapsed = clock.now - started
            result.milliseconds = elapsed.inSeconds * 1000
            return result
        }
        let worker: RuleWorker
        do {
            worker = try RuleWorker(source: source, configuration: configuration, client: current.client)
        } catch {
            result.passed = false
            result.failure = TestFailure(message: "the rules could not be loaded: \(error)")
            return finish()
        }
        do {
            let coroutine = try state.startCoroutine(function, [])
            var resumeWith: [JSONValue] = []
            while true {
                switch try state.resume(coroutine, with: resumeWith) {
                case .finished:
                    if let request = current.client.unmocked.first {
                        result.passed = false
                        result.failure = TestFailure(
                            message:
                                "unmocked HTTP request: \(request) (add http.mock{ method = ..., url = ... } to the test)",
                            file: file.displayPath, line: result.line)
                    }
                    return finish()
                case .suspended(let request):
                    // A test runs alone on its own state and worker (this is not an actor: nothing else runs
                    // in `state` while the test's run(...) call is processed by `worker`).
                    resumeWith = await perform(request, worker: worker, current: current)
                }
            }
        } catch {
            result.passed = false
            result.failure = TestFailure(
                message: RuleLoader.strip(error.message, file: error.chunk ?? ""), file: error.chunk, line: error.line,
                traceback: error.traceback)
            return finish()
        }
    }

    /// `run(rule, event, hook)` or `tick(rule)`: the outcome table, or nil and a message.
    func perform(_ request: JSONValue, worker: RuleWorker, current: Current) async -> [JSONValue] {
        let names = await worker.rules.map(\.name)
        func unknown(_ rule: String, _ what: String) -> [JSONValue] {
            let hint = Suggestions.closest(to: rule, in: names).map { " (did you mean \($0)?)" } ?? ""
            return [
                .null, .string("\(what): no rule named \"\(rule)\"\(hint); rules: \(names.joined(separator: ", "))"),
            ]
        }
        let session = current.store.begin()
        defer { current.store.finish(session, mark: nil) { _ in } }
        if request["op"] == "tick" {
            guard let rule = request["rule"]?.stringValue else { return [.null, "tick: give a rule name"] }
            guard names.contains(rule) else { return unknown(rule, "tick") }
            guard let outcome = await worker.tick(rule, now: current.clock.now, session: session) else {
                return [.null, .string("tick: rule \"\(rule)\" has no schedule (every or cron) and tick function")]
            }
            return [Self.outcomeTable(outcome)]
        }
        guard let rule = request["rule"]?.stringValue else {
            return [.null, "run: the first argument must be a rule name"]
        }
        guard case .object(var fields)? = request["event"] else {
            return [.null, "run: the second argument must be an event (sample(\"name\"), decode(...) or a table)"]
        }
        var hook = request["hook"]?.stringValue
        // Tables from sample() and decode() carry kind and name as rules see them; decode from the fields.
        if hook == nil, let kind = fields["kind"]?.stringValue, let name = fields["name"]?.stringValue {
            hook = Self.hook(kind: kind, name: name)
        }
        for key in ["kind", "name", "unix_time"] { fields[key] = nil }
        let event: WebhookEvent
        do { event = try decoder.makeEvent(fields: fields, hook: hook) } catch {
            return [.null, .string("run: the event does not decode: \(error)")]
        }
        guard names.contains(rule) else { return unknown(rule, "run") }
        let report = await worker.process(event, only: rule, session: session)
        session.eventFinished(event, callStateKeep: configuration.callStateKeep)
        guard let outcome = report.rules.first else {
            return [.null, .string("run: rule \"\(rule)\" has no on: it only ticks (use tick(\"\(rule)\"))")]
        }
        return [Self.outcomeTable(outcome)]
    }

    static func hook(kind: String, name: String) -> String? {
        switch kind {
        case "channel": name
        case "notification": "notifications"
        case "unknown": nil
        default: kind
        }
    }

    /// What `run` returns to a test.
    static func outcomeTable(_ outcome: RuleOutcome) -> JSONValue {
        var table = outcome.json.objectValue ?? JSONObject()
        table["skipped"] = .bool(outcome.outcome == .skipped)
        table["dropped"] = .bool(outcome.outcome == .dropped)
        table["forwards"] = .array(
            outcome.forwards.map { f in
                [
                    "method": .string(f.method), "url": .string(f.url), "headers": .object(f.headers), "body": f.body,
                    "format": .string(f.format),
                ]
            })
        if table["error"] == .null { table["error"] = nil }
        if table["stage"] == .null { table["stage"] = nil }
        return .object(table)
    }

    // MARK: The host part of the test API

    func installAPI(in state: LuaState, current: Current) throws {
        try state.installGlobal("json", HostAPI.jsonTable())
        try state.installGlobal("kazoo", HostAPI.kazooTable())
        try state.installGlobal(
            "print",
            .function { args in
                print(args.values.map(HostAPI.render).joined(separator: "\t"))
                return []
            })
        var modules: [String: (source: String, chunkName: String)] = [:]
        for (name, file) in source.modules { modules[name] = (file.text, file.displayPath) }
        try state.installRequire(modules: modules)
        try state.installGlobal(
            "__run",
            .suspending { args in
                ["op": "run", "rule": args[1], "event": args[2], "hook": args[3]]
            })
        try state.installGlobal("__tick", .suspending { args in ["op": "tick", "rule": args[1]] })
        try installClockAndStore(in: state, current: current)
        try state.installGlobal(
            "http",
            .table([
                "mock": .function { [current] args in
                    guard case .object(let o) = args[1] else {
                        throw args.badArgument(1, expected: "table { url = ... }")
                    }
                    current.client.add(try MockHTTPClient.mock(from: o))
                    return []
                }
            ]))
        let samples = samplesDirectory
        let decoder = decoder
        try state.installGlobal(
            "sample",
            .function { args in
                let name = try args.string(1)
                let base = (samples as NSString).appendingPathComponent(name)
                let candidates = [base] + ["json", "form", "query"].map { "\(base).\($0)" }
                guard
                    let path = candidates.first(where: {
                        FileManager.default.fileExists(atPath: $0) && !$0.hasSuffix("/")
                    }),
                    let data = FileManager.default.contents(atPath: path)
                else {
                    throw HostFunctionError(
                        "sample: no sample \"\(name)\" in \(samples) (looked for \(name).json, .form, .query)")
                }
                let format = WireFormat(rawValue: (path as NSString).pathExtension) ?? .json
                return [
                    try Self.eventTable(
                        decoder, [UInt8](data), format: format, hook: args[2].stringValue, what: "sample \(name)")
                ]
            })
        try state.installGlobal(
            "decode",
            .function { args in
                let formatName = try args.string(1)
                guard let format = WireFormat(rawValue: formatName) else {
                    throw HostFunctionError(
                        "decode: format must be \"json\", \"form\" or \"query\", not \"\(formatName)\"")
                }
                let body = try args.string(2)
                return [
                    try Self.eventTable(
                        decoder, Array(body.utf8), format: format, hook: args[3].stringValue, what: "decode")
                ]
            })
    }

    /// `clock.*` and the host half of `store.*` (`__store_get`, `__store_set`, `__store_keys` by namespace).
    func installClockAndStore(in state: LuaState, current: Current) throws {
        func seconds(_ args: HostArguments, _ what: String) throws(HostFunctionError) -> Double {
            switch args[1] {
            case .int(let n): return Double(n)
            case .double(let d) where d.isFinite: return d
            case .string(let text):
                if let d = Durations.parse(text) { return d }
            default: break
            }
            throw HostFunctionError(
                "\(what): give seconds or a duration such as \"11m\", not \(HostAPI.render(args[1]))")
        }
        try state.installGlobal(
            "clock",
            .table([
                "now": .function { [current] _ in [.double(current.clock.now)] },
                "set": .function { [current] args in
                    // Within ±9e15 s: a tick takes the time's whole seconds as an integer.
                    guard let unix = args[1].doubleValue, abs(unix) < 9e15 else {
                        throw args.badArgument(1, expected: "Unix time in seconds")
                    }
                    current.clock.set(unix)
                    return []
                },
                "advance": .function { [current] args in
                    let later = current.clock.now + (try seconds(args, "clock.advance"))
                    guard abs(later) < 9e15 else {
                        throw HostFunctionError(
                            "clock.advance: the clock would pass ±9e15 seconds (a tick could not hold it)")
                    }
                    current.clock.set(later)
                    return []
                },
            ]))
        try state.installGlobal(
            "__store_get",
            .function { [current] args in
                [current.store.value(try args.string(1), try args.string(2)) ?? .null]
            })
        try state.installGlobal(
            "__store_set",
            .function { [current] args in
                let session = current.store.begin()
                defer { current.store.finish(session, mark: nil) { _ in } }
                let (namespace, key) = (try args.string(1), try args.string(2))
                do { try session.set(namespace, key, args[3] == .null ? nil : args[3]) } catch {
                    throw HostFunctionError("store: \(error)")
                }
                return []
            })
        try state.installGlobal(
            "__store_keys",
            .function { [current] args in
                [.array(current.store.records(namespace: try args.string(1)).map { .string($0.key) })]
            })
    }

    /// A decoded body as the table a rule sees.
    static func eventTable(_ decoder: EventDecoder, _ body: [UInt8], format: WireFormat, hook: String?, what: String)
        throws -> JSONValue
    {
        do {
            return RuleWorker.luaEvent(try decoder.decode(body, format: format, hook: hook), meta: nil)
        } catch {
            throw HostFunctionError("\(what): \(error)")
        }
    }
}
