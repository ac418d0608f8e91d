import Glibc
public import JSONCore
public import KazooEvents
import LuaRuntime
import NIOCore
import Synchronization

/// Owns one Lua state with every rule loaded, and runs rules on events. Each rule run is a coroutine: when a
/// rule waits on HTTP only its coroutine waits, and the worker may run other events meanwhile.
///
/// Rules run in the order of their file paths, each independently: every rule gets its own copy of the
/// event as decoded, and one rule's error, drop or changes never affect another.
///
/// A worker belongs to one NIO event loop (`executor`), as a channel handler does: its state (the Lua state,
/// the rule set, the retired sets) is read and written only by tasks that run there. The public entry points
/// go through `onHome`, which runs their body at once when the caller is on this worker's loop and otherwise
/// with this worker's executor as the task's preference for the duration (`withTaskExecutorPreference`);
/// either way every resumption after an `await` comes back to the same loop. The engine's event and tick
/// tasks are started with that preference and call `processHere` and `tickHere` directly. Interleaving is
/// that of an actor: another run may use the worker at each `await`, so a run captures the rule set it
/// started in and keeps it to the end.
///
/// Why `@unchecked Sendable` is safe: the mutable state (`current`, `retired`, and the Lua states they hold) is
/// touched only inside `processHere`, `tickHere`, `run`, `rebuild` and the two getters that go through
/// `onHome`, all of which run on `executor`'s loop; `processHere`, `tickHere` and every resumption of a rule's
/// coroutine check that they do (`precondition`, a comparison of thread ids), so a caller that broke the rule
/// stops there instead of touching a Lua state from two threads. Everything else is immutable after `init`.
///
/// Not an actor: entering an actor and leaving it were two executor switches per event, and with a task
/// executor preference each switch reads the preference under the task's status lock (a mutex). Without
/// them the engine row went from 245,104 to 267,923 events/s (`SwitchboardEngineLoop`, medians of five
/// alternating runs) and from 67,106 to 63,739 instructions an event (callgrind).
public final class RuleWorker: @unchecked Sendable {
    public let source: RuleSource
    public let configuration: RuleConfiguration
    /// Problems found while loading (errors keep that rule out; warnings do not).
    public var diagnostics: [Diagnostic] { get async { loadedDiagnostics } }
    /// Log lines written by rule files while they loaded.
    public var loadLogs: [(file: String, record: LogRecord)] { get async { loadedLogs } }
    /// The rules that loaded, in the order they run.
    public var rules: [RuleDefinition] { get async { await onHome { current.rules.map(\.definition) } } }

    let loadedDiagnostics: [Diagnostic]
    let loadedLogs: [(file: String, record: LogRecord)]
    let client: any OutboundHTTPClient
    /// The event loop this worker runs on: the engine's tasks for its events and ticks prefer it
    /// (`Task(executorPreference:)`), so the HTTP handler, the rules and the answer need no other thread when
    /// the request arrived on that loop, and no wake-up of the shared pool.
    public let executor: LoopExecutor
    /// The Lua state every run starts in. A run captures it once and keeps it to the end (its coroutine holds
    /// the state alive), so replacing it after a kill affects only the runs that start later. Read and
    /// written on `executor`'s loop only.
    var current: Built

    /// Loads every rule of `source` into a new Lua state.
    /// - Parameters:
    ///   - client: sends `http.*` calls. Forwards are only recorded here: the `Outbox` (Delivery) sends them.
    /// - Throws: `LuaError` when the Lua state itself cannot be set up.
    public init(
        source: RuleSource, configuration: RuleConfiguration = RuleConfiguration(),
        client: any OutboundHTTPClient = DryRunHTTPClient(), executor: LoopExecutor? = nil
    ) throws {
        self.executor = executor ?? LoopExecutor.next()
        self.source = source
        self.configuration = configuration
        self.client = client
        let built = try Self.build(source: source, configuration: configuration)
        current = built
        loadedDiagnostics = built.diagnostics
        loadedLogs = built.context.loadLogs
    }

    /// Runs `body` on this worker's loop, and returns there after each of its suspensions. For the public
    /// entry points only: plain `nonisolated` async functions, which start on the generic executor (the
    /// task's preferred executor, else the global pool). On one of NIO's loop threads that executor can only be
    /// a `LoopExecutor` of that loop, so when this worker's loop is the current thread the task prefers it
    /// already and `body` runs at once; otherwise it runs with that preference until it returns.
    nonisolated(nonsending) func onHome<T>(_ body: nonisolated(nonsending) () async -> T) async -> T {
        if executor.loop.inEventLoop { return await body() }
        return await withTaskExecutorPreference(executor) {
            // The preference takes effect when the task is next enqueued (the task keeps its thread until then,
            // as nothing here switches executors): yielding enqueues it, on the preferred executor.
            while !executor.loop.inEventLoop { await Task.yield() }
            return await body()
        }
    }

    /// One Lua state with the rules loaded into it, and the context its host functions report to. A class,
    /// so a run can tell whether the worker still uses the set it started in (`===`).
    final class Built {
        let state: LuaState
        let context: RunContext
        let rules: [LoadedRule]
        let diagnostics: [Diagnostic]

        /// Each rule's name, `on` and `match`, in rule order: what `process` reads per event, without Lua.
        let gates: RuleGates

        init(state: LuaState, context: RunContext, rules: [LoadedRule], diagnostics: [Diagnostic]) {
            self.state = state
            self.context = context
            self.rules = rules
            self.diagnostics = diagnostics
            self.gates = RuleGates(rules.map { RuleGate($0.definition) })
        }

        /// The entry (or with `tick`, the tick function) of the rule called `name`: the one at `index` when its
        /// name matches (the usual case). Read in place: returning the `LoadedRule` copied its whole definition.
        func function(at index: Int, named name: String, tick: Bool) -> LuaReference? {
            let gates = gates.all
            let found =
                index < gates.count && gates[index].name == name ? index : gates.firstIndex { $0.name == name }
            guard let found else { return nil }
            return tick ? rules[found].tick : rules[found].entry
        }
    }

    static func build(source: RuleSource, configuration: RuleConfiguration) throws -> Built {
        let state = try LuaState(limits: configuration.limits)
        let context = RunContext()
        try HostAPI.install(in: state, context: context, configuration: configuration)
        var modules: [String: (source: String, chunkName: String)] = [:]
        for (name, file) in source.modules { modules[name] = (file.text, file.displayPath) }
        try state.installRequire(modules: modules)
        let loader = try RuleLoader(state: state, context: context, source: source, configuration: configuration)
        let (rules, diagnostics) = loader.loadAll()
        // Loading leaves garbage, and module-level data grows the heap fast, after which Lua's generational
        // collector falls back to incremental marking until a collection finds the heap steady (the first
        // events' garbage would then wait for the heap to double). One full collection leaves the state
        // compact, and generational from its first event.
        state.collectGarbage()
        return Built(state: state, context: context, rules: rules, diagnostics: diagnostics)
    }

    /// Runs every rule on the event and reports what each did.
    /// - Parameter meta: extra request data for rules as `event.meta` (the server's headers and peer).
    /// - Parameter only: run just the rule with this name (`switchboard test`).
    /// - Parameter session: where the rules' `store.*` and `call.*` go; nil: a throwaway store of this worker's
    ///   (the session ends with the call).
    /// - Parameter unnamed: what to do with rules whose `on` does not name the event: `.listed` as skipped at
    ///   `on` (`switchboard run`, replay, tests show them), `.omitted` from the report (the server, which
    ///   records nothing of them: with many rules, building and dropping their outcomes was a sixth of the
    ///   engine's time per event).
    public func process(
        _ event: WebhookEvent, meta: JSONValue? = nil, only: String? = nil, session: StoreSession? = nil,
        unnamed: UnnamedRules = .listed
    ) async -> EventReport {
        await onHome { await processHere(event, meta: meta, only: only, session: session, unnamed: unnamed) }
    }

    /// Stops the process when called off this worker's loop (a comparison of thread ids): the one check
    /// `processHere`, `tickHere` and every resumption of a rule's coroutine make before touching the state.
    ///
    /// The loop's thread is asked once (`inEventLoop`) and remembered (`homeThread`): a NIO loop keeps its
    /// thread for its whole life. Asking each time went through the loop as an existential, a retain and a
    /// release of it and a call, twice an event.
    @inline(__always) func checkOnHome() {
        let current = UInt(pthread_self())
        if homeThread.load(ordering: .relaxed) == current { return }
        precondition(executor.loop.inEventLoop, "a rule worker runs only on its own event loop")
        homeThread.store(current, ordering: .relaxed)
    }

    /// The thread of this worker's loop, once a check has seen it (0 before).
    private let homeThread = Atomic<UInt>(0)

    /// `process` for a task that prefers this worker's executor (the engine's event tasks, the engine's
    /// benchmark): it runs where its caller runs, with no executor switch on the way in or out. Calling it
    /// from anywhere else breaks the worker's confinement to its loop; the check below stops a caller on
    /// another thread.
    package nonisolated(nonsending) func processHere(
        _ event: WebhookEvent, meta: JSONValue?, only: String?, session: StoreSession?, unnamed: UnnamedRules
    ) async -> EventReport {
        checkOnHome()
        var outcomes: [RuleOutcome] = []
        let scratch = session == nil ? scratchStore.begin() : nil
        // `event` as Lua sees it is built for the first rule that runs, not for events no rule takes.
        var context: RunInputs? = nil
        // The definitions (on, match, names) come from the files, the same in every rebuild of this worker;
        // only the Lua references differ, and `run` takes those from the set current when each run starts.
        let built = current
        if unnamed == .listed { outcomes.reserveCapacity(built.rules.count) }
        // Rules whose `on` and `match` take the event run; the others are listed as declined (those whose `on`
        // does not name it only with `.listed`). Decided without Lua.
        let named = built.gates.named(event)
        var nextNamed = 0
        for index in unnamed == .omitted ? named : built.gates.takingEvents {
            let gate = built.gates.all[index]
            if let only, gate.name != only { continue }
            if unnamed == .listed {
                while nextNamed < named.count && named[nextNamed] < index { nextNamed += 1 }
                guard nextNamed < named.count && named[nextNamed] == index else {
                    outcomes.append(gate.skipped(at: "on"))
                    continue
                }
            }
            guard gate.matches(event) else {
                outcomes.append(gate.skipped(at: "match"))
                continue
            }
            let inputs =
                context
                ?? RunInputs(
                    value: .object(event.fields, adding: Self.addedFields(event, meta: meta)),
                    session: session ?? scratch, eventID: meta?["id"]?.stringValue)
            context = inputs
            // Most runs finish without waiting, and no await is reached. Across one in `finishRun` other events
            // run on this worker: one may be killed and replace `current`, or (in tests) nothing at all
            // changes. Either way the next rule starts in whatever set is current then, and this rule's run
            // keeps the set it started in.
            if let suspended = startRun(index: index, gate: gate, inputs: inputs, tick: false, into: &outcomes) {
                await finishRun(suspended, into: &outcomes)
            }
        }
        if let scratch { scratchStore.finish(scratch, mark: nil) { _ in } }
        return EventReport(event: event, rules: outcomes)
    }

    /// Runs the `tick` of the rule called `name`, with `now` (whole Unix seconds) as its argument. nil when no rule of
    /// that name has a schedule.
    /// - Parameter session: as for `process`.
    public func tick(_ name: String, now: Double, session: StoreSession? = nil) async -> RuleOutcome? {
        await onHome { await tickHere(name, now: now, session: session) }
    }

    /// `tick` for a task that prefers this worker's executor (the engine's tick tasks), as `processHere`.
    nonisolated(nonsending) func tickHere(_ name: String, now: Double, session: StoreSession?) async -> RuleOutcome? {
        checkOnHome()
        let built = current
        guard let index = built.rules.firstIndex(where: { $0.definition.name == name }),
            built.rules[index].tick != nil
        else { return nil }
        let scratch = session == nil ? scratchStore.begin() : nil
        // Whole seconds, as os.time() gives and os.date() takes.
        let second = Int64(now.rounded(.down))
        let inputs = RunInputs(
            value: .value(.int(second)), session: session ?? scratch, eventID: "tick-\(second)")
        let outcome = await run(index: index, gate: built.gates.all[index], inputs: inputs, tick: true)
        if let scratch { scratchStore.finish(scratch, mark: nil) { _ in } }
        return outcome
    }

    /// Runs the rules on each event in turn, each in its own session of `store` (finished without a done mark),
    /// without leaving the worker between events: `switchboard replay`. `willRun` is told each event's index
    /// before it runs (replay sets the store's clock to the time the event was accepted).
    public func processAll(
        _ events: [(event: WebhookEvent, meta: JSONValue?)], store: RuleStore, callStateKeep: Double,
        willRun: (@Sendable (Int) -> Void)? = nil
    ) async -> [EventReport] {
        await onHome {
            var reports: [EventReport] = []
            reports.reserveCapacity(events.count)
            for (index, (event, meta)) in events.enumerated() {
                willRun?(index)
                let session = store.begin()
                reports.append(await processHere(event, meta: meta, only: nil, session: session, unnamed: .listed))
                session.eventFinished(event, callStateKeep: callStateKeep)
                store.finish(session, mark: nil) { _ in }
            }
            return reports
        }
    }

    /// See `process(_:meta:only:session:unnamed:)`.
    public enum UnnamedRules: Sendable {
        case listed, omitted
    }

    /// What every rule run of one event gets: made once per event (for its first rule that runs) and shared by
    /// its runs and their `RuleRun`s. A class, so that handing it on is one retain: as a struct, each copy
    /// retained its event fields, added fields, session and id apart.
    final class RunInputs {
        /// The event (its fields and what `luaEvent` adds), or a tick's `now`.
        let value: LuaArgument
        let session: StoreSession?
        /// The accepted event's id (the tick's for ticks); nil when there is none (`switchboard run`, tests).
        let eventID: String?

        init(value: LuaArgument, session: StoreSession?, eventID: String?) {
            self.value = value
            self.session = session
            self.eventID = eventID
        }

        /// The event's fields (nil for a tick).
        var fields: JSONObject? {
            guard case .object(let fields, _) = value else { return nil }
            return fields
        }
    }

    /// The store of runs given no session (`switchboard run`, tests, benchmarks): in memory, per worker.
    let scratchStore = RuleStore()

    /// The event as rules see it: every field, plus `kind`, `name`, `unix_time` (and `meta`). `id` is the
    /// payload's own when it has one (object and sms payloads do), else `meta.id`: either way the same on
    /// every run of the same accepted event.
    package static func luaEvent(_ event: WebhookEvent, meta: JSONValue?) -> JSONValue {
        var fields = event.fields
        for member in addedFields(event, meta: meta) { fields[member.key] = member.value }
        return .object(fields)
    }

    /// What `luaEvent` adds to (or replaces in) the payload's fields. Runs push the payload and these into
    /// Lua without building `luaEvent`'s copy of every member.
    static func addedFields(_ event: WebhookEvent, meta: JSONValue?) -> [JSONObject.Member] {
        var added: [JSONObject.Member] = []
        added.reserveCapacity(5)
        added.append(.init(key: "kind", value: .string(event.kind.rawValue)))
        added.append(.init(key: "name", value: .string(event.name)))
        if let unix = event.unixTime { added.append(.init(key: "unix_time", value: .int(unix))) }
        if let meta {
            added.append(.init(key: "meta", value: meta))
            if event.fields["id"] == nil, let id = meta["id"] { added.append(.init(key: "id", value: id)) }
        }
        return added
    }

    /// Runs one rule whose `on` and `match` already accepted the event, in the Lua state current now, and
    /// returns its outcome. With `tick`, runs the rule's `tick(now)` (`inputs.value` is `now`) instead of its
    /// event stages. `gate` is the rule's in the set current when its event or tick started (a class: passing
    /// the rule's definition by value copied every part of it twice per run).
    nonisolated(nonsending) func run(index: Int, gate: RuleGate, inputs: RunInputs, tick: Bool = false) async
        -> RuleOutcome
    {
        var outcomes: [RuleOutcome] = []
        outcomes.reserveCapacity(1)
        if let suspended = startRun(index: index, gate: gate, inputs: inputs, tick: tick, into: &outcomes) {
            await finishRun(suspended, into: &outcomes)
        }
        return outcomes[0]
    }

    /// A rule's run that a host function suspended (an `http.*` call): what `finishRun` goes on with.
    struct SuspendedRun {
        /// The set the run started in, kept to its end: the awaits in `finishRun` let other events run on this
        /// worker, and one of them may replace `current` (a rebuild after a kill). This run's coroutine, rule
        /// references and context all belong to `set`, and the coroutine keeps `set.state` open.
        let set: Built
        let run: RuleRun
        let gate: RuleGate
        let coroutine: LuaCoroutine
        let tick: Bool
        /// What the host function asked for.
        let request: JSONValue
    }

    /// `run` up to its first suspension, without leaving the caller's frame: starts the rule's coroutine and
    /// resumes it once. A run that finishes there (every run that makes no `http.*` call) appends its outcome
    /// to `outcomes` and returns nil; one that suspended is returned for `finishRun`. Synchronous: a run that
    /// never waits enters no async function of its own, and its outcome is made once, in place in `outcomes`.
    func startRun(index: Int, gate: RuleGate, inputs: RunInputs, tick: Bool, into outcomes: inout [RuleOutcome])
        -> SuspendedRun?
    {
        let set = current
        let run = RuleRun(gate: gate, inputs: inputs)
        if tick { run.stage = "tick" }
        guard let function = set.function(at: index, named: gate.name, tick: tick) else {
            let error = RuleErrorInfo(
                message: "the rule did not load again after its Lua state was rebuilt", file: nil, line: nil,
                traceback: nil)
            outcomes.append(RuleOutcome.ended(run, gate: gate, .error, stage: "load", error: error))
            return nil
        }
        let coroutine: LuaCoroutine
        do {
            coroutine = try set.state.startCoroutine(function, argument: inputs.value, startedAt: run.started)
        } catch {
            failed(error, set: set, run: run, gate: gate, coroutine: nil, tick: tick, into: &outcomes)
            return nil
        }
        return step(set, run, gate, coroutine, tick: tick, resumingWith: [], into: &outcomes)
    }

    /// Resumes a run until it finishes or suspends again, as many times as it suspends. Across each await
    /// other events run on this worker; this run keeps the set it started in (`SuspendedRun.set`).
    nonisolated(nonsending) func finishRun(_ suspended: SuspendedRun, into outcomes: inout [RuleOutcome]) async {
        var next: SuspendedRun? = suspended
        while let waiting = next {
            // Only this run's own record is read after the answer; nothing else of the worker.
            let values = await perform(waiting.request, run: waiting.run)
            next = step(
                waiting.set, waiting.run, waiting.gate, waiting.coroutine, tick: waiting.tick, resumingWith: values,
                into: &outcomes)
        }
    }

    /// One resume of a run's coroutine: its outcome appended once it ended (finished or failed), or the run
    /// returned with what it now asks for. Its parts are passed apart, not as a `SuspendedRun`: one made for the
    /// call and dropped after it was a retain and a release of each.
    private func step(
        _ set: Built, _ run: RuleRun, _ gate: RuleGate, _ coroutine: LuaCoroutine, tick: Bool,
        resumingWith values: [JSONValue], into outcomes: inout [RuleOutcome]
    ) -> SuspendedRun? {
        // After a wait too: the task came back to the loop it prefers (a thread's id compared).
        checkOnHome()
        set.context.currentRun = run
        let result: LuaResumeResult
        do {
            result = try coroutine.resume(with: values)
        } catch {
            set.context.currentRun = nil
            failed(error, set: set, run: run, gate: gate, coroutine: coroutine, tick: tick, into: &outcomes)
            return nil
        }
        set.context.currentRun = nil
        switch result {
        case .suspended(let request):
            return SuspendedRun(set: set, run: run, gate: gate, coroutine: coroutine, tick: tick, request: request)
        case .finished(let results):
            let (kind, stage): (RuleOutcome.Outcome, String?) =
                switch tick ? nil : results.first?.stringValue {
                case "skipped": (.skipped, "filter")
                case "dropped": (.dropped, "transform")
                default: (.ok, nil)
                }
            outcomes.append(RuleOutcome.ended(run, gate: gate, kind, stage: stage, at: coroutine.lastResumeEnded))
            return nil
        }
    }

    /// Appends the outcome of a run that failed (in its coroutine's start, or in a resume of `coroutine`),
    /// then rebuilds the set the run used if the failure left its state unusable and no other run has
    /// rebuilt it already.
    private func failed(
        _ error: LuaError, set: Built, run: RuleRun, gate: RuleGate, coroutine: LuaCoroutine?, tick: Bool,
        into outcomes: inout [RuleOutcome]
    ) {
        let stage = tick ? run.stage : RuleLoader.stage(atLine: coroutine?.failedAtEntryLine) ?? run.stage
        let info = RuleErrorInfo(
            message: error.message, file: fullPath(of: error.chunk), line: error.line, traceback: error.traceback)
        // Made before any rebuild, so that the run's time does not include it.
        outcomes.append(RuleOutcome.ended(run, gate: gate, .error, stage: stage, error: info))
        if set.state.needsRebuild, set === current { rebuild() }
    }

    /// Lua shortens long chunk names to "...tail"; this gives back the file's path as the user named it.
    func fullPath(of chunk: String?) -> String? {
        guard let chunk, chunk.hasPrefix("...") else { return chunk }
        let tail = chunk.dropFirst(3)
        let files = source.rules + Array(source.modules.values)
        return files.first { $0.displayPath.hasSuffix(tail) }?.displayPath ?? chunk
    }

    /// Replaced states whose suspended runs have not all finished yet (each is nearly full by definition).
    var retired: [WeakBuilt] = []
    /// Retired states allowed to be alive at once; past it the worker keeps its full state instead of
    /// building another (runs starting there may then fail for memory), so a rule that fills its state on
    /// every event while others wait on HTTP cannot pile up states: memory stays under (1 + this) × the cap
    /// per worker. A retired state lives as long as the longest wait of a run started in it (an HTTP call's
    /// timeout, 30 s at most, plus any wait for a free HTTP slot).
    package static let maxRetired = 16

    /// Replaced states still alive (tests).
    package var retiredStates: Int {
        get async {
            await onHome {
                retired.removeAll { $0.built == nil }
                return retired.count
            }
        }
    }

    struct WeakBuilt {
        weak var built: Built?
    }

    /// After a kill left the state full, start over from the same files (module state is lost). Runs that
    /// are suspended in the old state finish there; it closes when the last of them ends.
    func rebuild() {
        retired.removeAll { $0.built == nil }
        guard retired.count < Self.maxRetired else { return }  // the next kill tries again
        guard let built = try? Self.build(source: source, configuration: configuration) else { return }
        retired.append(WeakBuilt(built: current))
        current = built
    }

    /// Sends one `http.*` request and returns what the rule's call returns: a response table, or nil and
    /// a message.
    nonisolated(nonsending) func perform(_ request: JSONValue, run: RuleRun) async -> [JSONValue] {
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
        let started = ContinuousClock.now
        func elapsed() -> Double { (ContinuousClock.now - started).inSeconds }
        do {
            // Only this run's `run` record is touched after the answer; the worker's state is not read.
            let response = try await client.execute(outbound)
            run.http.append(
                HTTPRecord(method: method, url: url, status: response.status, error: nil, seconds: elapsed()))
            return [Self.luaResponse(response)]
        } catch {
            let message = (error as? OutboundHTTPError)?.message ?? "\(error)"
            run.http.append(HTTPRecord(method: method, url: url, status: nil, error: message, seconds: elapsed()))
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
        if let text = response.body.withUnsafeBufferPointer(UTF8Validation.string) {
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
}
