public import Foundation
public import JSONCore
public import KazooEvents
public import Logging
import NIOCore
public import ServiceLifecycle
import Synchronization

/// Hands accepted events to the Lua workers (round robin) without making the HTTP answer wait, records
/// what the rules did (metrics, one log line per rule error), and on shutdown lets in-flight runs finish
/// up to a deadline.
public final class Engine: Service, Sendable {
    /// One loaded rule set: every worker holds all of it, so an event never meets a mix of two sets.
    public struct Generation: Sendable {
        public var version: Int
        public var source: RuleSource
        public var workers: [RuleWorker]
        public var ruleNames: [String]
        /// The rules' `on` and `match`, so that an event no rule takes is finished without a worker.
        var gates = RuleGates([])
        public var diagnostics: [Diagnostic]
        /// The rules that tick, and when.
        public var schedules: [String: TickSchedule] = [:]
    }

    /// What a reload did.
    public struct ReloadResult: Sendable {
        public var ok: Bool
        /// False when the files were the same as the running set's (nothing to do).
        public var changed: Bool
        public var version: Int
        public var errors: [String]
        public var at: Date
    }

    public let metrics: Metrics
    /// Where accepted events are recorded; events are marked done here when their rules finish.
    public let journal: any EventJournaling
    /// What `store.*` and `call.*` read and write, shared by every worker and every rule set.
    public let store: RuleStore
    /// Every event's and tick's task until it ends, and each call's last submitted event: one lock, taken
    /// once when an event starts and once when it ends.
    let running = Mutex(Running())
    let logger: Logger
    let grace: Duration
    let configuration: RuleConfiguration
    let client: any OutboundHTTPClient
    let workerCount: Int
    let next = Mutex(0)
    let current: Mutex<Generation>
    let lastReload = Mutex<ReloadResult?>(nil)
    /// The last files a reload rejected: the same content is not compiled and reported again.
    let rejectedSource = Mutex<RuleSource?>(nil)
    let reloading = AsyncSemaphore(1)
    /// Limits accepted events whose rules have not finished: past it `submit` waits, so a backlog never
    /// grows without bound behind the 200s (Kazoo sees slower answers instead).
    let slots: AsyncSemaphore
    /// Who runs a tick when several nodes share the store, and this node's name in that contest.
    let leases: any TickLeasing
    let node: String
    let ticks = Mutex(TickState())
    let tickWake = WakeSignal()
    let reportObserver = Mutex<Callback<(EventReport, JSONValue)>?>(nil)

    /// Called with each event's report (and its meta) as soon as its rules finish, before it is committed:
    /// the console's live view. It runs on the event's task, so it must be quick. One observer; a second
    /// call replaces the first.
    public func observeReports(_ observer: @escaping @Sendable (EventReport, JSONValue) -> Void) {
        reportObserver.withLock { $0 = Callback(observer) }
    }

    public var generation: Generation { current.withLock { $0 } }
    public var workers: [RuleWorker] { generation.workers }
    /// Problems found loading the running rule set.
    public var diagnostics: [Diagnostic] { generation.diagnostics }
    public var ruleNames: [String] { generation.ruleNames }
    public var lastReloadResult: ReloadResult? { lastReload.withLock { $0 } }

    public init(
        source: RuleSource, configuration: RuleConfiguration, workers count: Int, client: any OutboundHTTPClient,
        metrics: Metrics, logger: Logger, grace: Duration, maxEventsInFlight: Int = 10_000,
        journal: any EventJournaling, store: RuleStore? = nil, leases: (any TickLeasing)? = nil
    ) async throws {
        self.slots = AsyncSemaphore(maxEventsInFlight)
        self.journal = journal
        let store = try store ?? RuleStore(records: journal.storeRecords())
        self.store = store
        self.leases = leases ?? LocalTickLeases(clock: store.clock)
        self.node = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        self.metrics = metrics
        self.logger = logger
        self.grace = grace
        self.configuration = configuration
        self.client = client
        self.workerCount = max(count, 1)
        let first = try await Self.load(
            source, version: 1, configuration: configuration, count: max(count, 1), client: client)
        self.current = Mutex(first)
        metrics.set("switchboard_rules_loaded", Double(first.ruleNames.count))
        metrics.set("switchboard_rules_version", 1)
        metrics.gauge("switchboard_events_in_flight") { [weak self] in Double(self?.eventsInFlight ?? 0) }
        for (file, record) in await first.workers[0].loadLogs {
            logger.info("\(record.message)", metadata: ["rule.file": "\(file)"])
        }
    }

    static func load(
        _ source: RuleSource, version: Int, configuration: RuleConfiguration, count: Int,
        client: any OutboundHTTPClient
    ) async throws -> Generation {
        var workers: [RuleWorker] = []
        for i in 0..<count {
            // Worker i on loop i of NIO's shared group, in every generation.
            let executor = LoopExecutor.shared[i % LoopExecutor.shared.count]
            workers.append(
                try RuleWorker(source: source, configuration: configuration, client: client, executor: executor))
        }
        let rules = await workers[0].rules
        var schedules: [String: TickSchedule] = [:]
        for rule in rules { if let schedule = rule.schedule { schedules[rule.name] = schedule } }
        return Generation(
            version: version, source: source, workers: workers, ruleNames: rules.map(\.name),
            gates: RuleGates(rules.map(RuleGate.init)),
            diagnostics: await workers[0].diagnostics, schedules: schedules)
    }

    /// Reads the rules directory again and, when every file is good, swaps the new set in: new events use
    /// it, events already running finish on the set they started with. When any file has an error the running
    /// set stays and the errors are logged (file:line), shown at /readyz and counted in the metrics.
    @discardableResult
    public func reload(directory: String, reason: String) async -> ReloadResult {
        // Reloads run one at a time: across this wait another reload may swap the generation, which is why
        // `running` is read after it, not before.
        await reloading.wait()
        defer { reloading.signal() }
        let running = generation
        var result = ReloadResult(ok: true, changed: false, version: running.version, errors: [], at: Date())
        do {
            let source = try RuleSource.read(directory: directory)
            guard source != running.source else { return result }
            if source == rejectedSource.withLock({ $0 }), let last = lastReloadResult { return last }
            result.changed = true
            // Only a reload swaps the generation, and this one holds `reloading`: `running` is still current
            // when the candidate is swapped in below. Events keep being submitted to `running` meanwhile.
            let candidate = try await Self.load(
                source, version: running.version + 1, configuration: configuration, count: workerCount, client: client)
            let errors = candidate.diagnostics.filter { $0.severity == .error }
            if errors.isEmpty, !source.rules.isEmpty || running.source.rules.isEmpty {
                current.withLock { $0 = candidate }
                tickWake.signal()  // the timed rules may have changed
                result.version = candidate.version
                metrics.set("switchboard_rules_version", Double(candidate.version))
                metrics.set("switchboard_rules_loaded", Double(candidate.ruleNames.count))
                metrics.increment("switchboard_reloads_total", [("result", "ok")])
                logger.info(
                    "rules reloaded (\(reason)): version \(candidate.version), \(candidate.ruleNames.count) rule(s)")
            } else {
                result.ok = false
                rejectedSource.withLock { $0 = source }
                result.errors = errors.map(\.description)
                if errors.isEmpty { result.errors = ["no rule files in \(directory); keeping the running rules"] }
                for message in result.errors { logger.warning("reload rejected, running rules kept: \(message)") }
                metrics.increment("switchboard_reloads_total", [("result", "failed")])
            }
        } catch {
            result.ok = false
            result.errors = ["\(error)"]
            logger.warning("reload rejected, running rules kept: \(error)")
            metrics.increment("switchboard_reloads_total", [("result", "failed")])
        }
        lastReload.withLock { $0 = result }
        return result
    }

    /// Starts the rules on an accepted event and returns as soon as there is room for it.
    ///
    /// Events of one call (the same `call_id`) go to the same worker and run one at a time, in the order
    /// they were submitted; other events go round robin. Each leg of a bridged call has its own `call_id`
    /// and so its own order: legs run in parallel.
    public func submit(_ event: WebhookEvent, meta: JSONValue) async {
        if finishDeclined(event, meta: meta) { return }
        // A reload may swap the generation while this waits for room: the workers are read after it, so
        // the event runs on the newest rule set.
        await slots.wait()
        start(event, meta: meta)
    }

    /// `submit` without waiting: starts the rules on the event and returns true when there is room now (or no
    /// rule takes it), false when there is none, and then nothing was started (call `submit`, which waits for
    /// room). For the HTTP handler, which runs on an event loop and must not suspend.
    public func trySubmit(_ event: WebhookEvent, meta: JSONValue) -> Bool {
        if finishDeclined(event, meta: meta) { return true }
        guard slots.tryWait() else { return false }
        start(event, meta: meta)
        return true
    }

    /// Queues the event's run on its worker; the caller holds a slot, which the run gives back.
    private func start(_ event: WebhookEvent, meta: JSONValue) {
        let workers = self.workers
        let callID = event.callID
        // An event without a call goes to the worker on this thread's loop when there is one (the HTTP
        // handler's): no other thread is woken for it.
        let worker =
            callID.map { workers[Self.slot(of: $0, among: workers.count)] }
            ?? workers.first { $0.executor.loop.inEventLoop }
            ?? next.withLock { i -> RuleWorker in
                i = (i + 1) % workers.count
                return workers[i]
            }
        running.withLock { running in
            // Under the same lock as the call's last event, so two events of one call submitted at once still
            // queue in order.
            let id = running.newID()
            let previous = callID.flatMap { running.callTails[$0]?.task }
            let task = Task(executorPreference: worker.executor) {
                await previous?.value
                // `worker` belongs to the generation current at submit; a reload meanwhile leaves it
                // running (this task holds it) until its events finish. The engine's journal and store
                // never change; the store's session is this event's own.
                if !Task.isCancelled {
                    let session = self.store.begin()
                    // This task prefers the worker's executor: it is on the worker's loop already.
                    let report = await worker.processHere(
                        event, meta: meta, only: nil, session: session, unnamed: .omitted)
                    // A run cut by shutdown stays unfinished (its session is never finished, so nothing
                    // that read its writes is committed either): the next start runs them again.
                    self.finish(event, meta: meta, report: report, session: session, commit: !Task.isCancelled)
                }
                self.finished(id, call: callID)
                self.slots.signal()
            }
            if let callID { running.callTails[callID] = (id, task) }
            running.tasks[id] = task
        }
    }

    /// Records an event's report, shows it to the observer and, with `commit`, ends its store session with
    /// its done mark (forwards and the console's record).
    func finish(_ event: WebhookEvent, meta: JSONValue, report: EventReport, session: StoreSession, commit: Bool) {
        record(report)
        reportObserver.withLock { $0 }?.call((report, meta))
        guard commit else { return }
        session.eventFinished(event, callStateKeep: configuration.callStateKeep)
        let mark = meta["id"]?.stringValue.map {
            DoneMark(
                id: $0, forwards: Self.deliveries(report),
                record: journal.keepsEventRecords ? EventRecord(report, meta: meta) : nil)
        }
        store.finish(session, mark: mark) { journal.markDone($0) }
    }

    /// Finishes here, on the caller's task, an event that every rule declines at `on` or `match`, with the
    /// report a worker would give (the rules declined at `match` listed as skipped there): no task, no
    /// worker, no Lua. Kazoo sends every event of a hook's kind and most rules take a few, so this is the
    /// common case. False when some rule would run, or when an earlier event of the same call has not
    /// finished (this one then waits its turn like any other, so the call's order holds).
    func finishDeclined(_ event: WebhookEvent, meta: JSONValue) -> Bool {
        let gates = current.withLock { $0.gates }
        var declined: [RuleOutcome] = []
        for index in gates.named(event) {
            let gate = gates.all[index]
            guard !gate.matches(event) else { return false }
            declined.append(gate.skipped(at: "match"))
        }
        // Under the calls' lock, so an event of the same call submitted meanwhile queues behind this one.
        return running.withLock { running in
            if let callID = event.callID, running.callTails[callID] != nil { return false }
            finish(
                event, meta: meta, report: EventReport(event: event, rules: declined), session: store.begin(),
                commit: true)
            return true
        }
    }

    /// The worker a call's events go to: FNV-1a of the call id, so the same on every submit.
    public static func slot(of callID: String, among count: Int) -> Int {
        func fnv1a(_ bytes: some Sequence<UInt8>) -> UInt64 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
            return hash
        }
        // Over the string's own buffer: walking its UTF-8 view byte by byte cost about 30 instructions a byte.
        let hash = callID.utf8.withContiguousStorageIfAvailable(fnv1a) ?? fnv1a(callID.utf8)
        return Int(hash % UInt64(max(count, 1)))
    }

    /// What `running` keeps.
    struct Running {
        var lastID = 0
        var tasks: [Int: Task<Void, Never>] = [:]
        /// The last submitted event of each call still running or queued: the next one of the call waits for it.
        var callTails: [String: (id: Int, task: Task<Void, Never>)] = [:]

        /// A new id for a task in `tasks` (an event's or a tick's).
        mutating func newID() -> Int {
            lastID += 1
            return lastID
        }
    }

    /// Forgets an ended task, and its call's last event when it was that.
    func finished(_ id: Int, call callID: String? = nil) {
        running.withLock { running in
            running.tasks[id] = nil
            if let callID, running.callTails[callID]?.id == id { running.callTails[callID] = nil }
        }
    }

    public var eventsInFlight: Int { running.withLock { $0.tasks.count } }
    /// Calls with an event submitted and not finished (their next event waits its turn).
    var callsInFlight: Int { running.withLock { $0.callTails.count } }

    func record(_ report: EventReport) {
        let event = report.event
        record(report.rules, forEvent: true) {
            var metadata: Logger.Metadata = ["event.name": "\(event.qualifiedName)"]
            if let callID = event.callID { metadata["call.id"] = "\(callID)" }
            return metadata
        }
    }

    /// Counts, durations, HTTP calls, log lines and errors of rule runs. An event's (`forEvent`): every run
    /// is counted by its outcome, and the rest is recorded for the runs whose rule matched. A tick's: the rest,
    /// for every run. `common` is the log lines' metadata, built only for a run that logged or failed: most runs
    /// do neither, and building it for every event cost about 8,500 of the 222,000 instructions a request took
    /// (callgrind, journal off).
    func record(_ outcomes: [RuleOutcome], forEvent: Bool, metadata common: () -> Logger.Metadata) {
        // When the event's runs ended, for `switchboard_rule_last_run_timestamp_seconds`: read once, as the
        // report is recorded right after its last run.
        let endedAt = forEvent && !outcomes.isEmpty ? Date().timeIntervalSince1970 : nil
        // By index, stored properties only: a `for … in`, a `let` of the element, or a computed property such
        // as `matched` read through the subscript, copies each outcome out (a retain and a release of each of
        // its strings and arrays).
        for i in outcomes.indices {
            let recorded = !forEvent || RuleOutcome.matched(outcomes[i].outcome, stage: outcomes[i].stage)
            metrics.recordRun(
                rule: outcomes[i].rule, outcome: forEvent ? outcomes[i].outcome : nil,
                seconds: recorded ? outcomes[i].seconds : nil, endedAt: endedAt)
            guard recorded else { continue }
            for call in outcomes[i].http {
                metrics.increment(
                    "switchboard_rule_http_requests_total", [("status", call.status.map(String.init) ?? "error")])
            }
            guard !outcomes[i].logs.isEmpty || outcomes[i].error != nil else { continue }
            var metadata = common()
            metadata["rule.name"] = "\(outcomes[i].rule)"
            for line in outcomes[i].logs {
                var lineMetadata = metadata
                if case .object(let fields) = line.fields {
                    for member in fields { lineMetadata["rule.\(member.key)"] = "\(Self.text(member.value))" }
                }
                logger.log(level: Self.level(line.level), "\(line.message)", metadata: lineMetadata)
            }
            if let error = outcomes[i].error {
                metadata["rule.file"] = "\(error.file ?? outcomes[i].file):\(error.line.map(String.init) ?? "?")"
                metadata["rule.stage"] = "\(outcomes[i].stage ?? "?")"
                logger.warning("rule failed: \(error.message)", metadata: metadata)
            }
        }
    }

    /// The forwards of the rules that finished ok, for the outbox.
    public static func deliveries(_ report: EventReport) -> [NewDelivery] {
        deliveries(report.rules)
    }

    /// The forwards of the runs that finished ok.
    /// By index, stored properties only: `filter` and `flatMap` copied each outcome out (a retain and a release
    /// of each of its strings and arrays).
    public static func deliveries(_ outcomes: [RuleOutcome]) -> [NewDelivery] {
        var deliveries: [NewDelivery] = []
        for i in outcomes.indices where outcomes[i].outcome == .ok {
            for forward in outcomes[i].forwards {
                deliveries.append(
                    NewDelivery(
                        rule: outcomes[i].rule, method: forward.method, url: forward.url,
                        headers: forward.requestHeaders, body: forward.payload))
            }
        }
        return deliveries
    }

    static func level(_ name: String) -> Logger.Level {
        switch name {
        case "debug": .debug
        case "warn": .warning
        case "error": .error
        default: .info
        }
    }

    static func text(_ value: JSONValue) -> String {
        if case .string(let s) = value { return s }
        return (try? JSONWriter.string(value)) ?? "?"
    }

    /// Runs again every event the journal holds as unfinished (accepted, but the process stopped before
    /// its rules finished), with the same `event.meta.id`. Returns how many.
    public func replayUnfinished(decoder: EventDecoder) async -> Int {
        let entries: [AcceptedEvent]
        do { entries = try await journal.unfinished() } catch {
            logger.error("could not read unfinished events from the journal: \(error)")
            return 0
        }
        var count = 0
        for entry in entries {
            // Replay runs before the server accepts requests; `entries` is this call's own list.
            if await submit(entry, decoder: decoder) { count += 1 }
        }
        if count > 0 {
            metrics.increment("switchboard_replayed_events_total", by: count)
            logger.info("replaying \(count) event(s) accepted before the last stop whose rules had not finished")
        }
        return count
    }

    /// Decodes a journaled event again and submits it with its stored `meta` (same `event.meta.id`). An entry
    /// that no longer decodes is marked done with nothing run, and false returned.
    @discardableResult
    public func submit(_ entry: AcceptedEvent, decoder: EventDecoder) async -> Bool {
        let format = WireFormat(rawValue: entry.format) ?? .json
        guard let event = try? decoder.decode(entry.body, format: format, hook: entry.hook),
            let meta = try? JSONReader.parse(entry.meta.utf8)
        else {
            logger.warning("journal entry \(entry.id) no longer decodes; marking it done")
            journal.markDone(entry.id, forwards: [])
            return false
        }
        await submit(event, meta: meta)
        return true
    }

    /// Runs the rules' ticks until shutdown, then gives in-flight rule runs `grace` to finish and says what was cut.
    public func run() async throws {
        let scheduler = Task { await self.runTicks() }
        try? await gracefulShutdown()
        scheduler.cancel()
        tickWake.signal()
        let deadline = ContinuousClock.now + grace
        while eventsInFlight > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let cut = running.withLock { running -> Int in
            for task in running.tasks.values { task.cancel() }
            return running.tasks.count
        }
        if cut > 0 {
            logger.warning(
                "shutdown: \(cut) event(s) still running their rules after \(grace) were cut; they run again at the next start"
            )
        } else {
            logger.info("shutdown: every accepted event finished its rules")
        }
        await journal.drain(limit: .seconds(5))
    }
}

extension StoreSession {
    /// What the store does when an event's rules have finished: after a call's `channel_destroy`, the call's
    /// state lives `callStateKeep` seconds more.
    public func eventFinished(_ event: WebhookEvent, callStateKeep: Double) {
        guard event.name == "channel_destroy", let callID = event.callID else { return }
        expireNamespace("call:" + callID, at: store.clock() + callStateKeep)
    }
}
