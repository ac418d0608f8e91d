public import EventStore
import Foundation
import JSONCore
public import Logging
import NIOCore
import PostgresNIO
public import RuleEngine
import Synchronization

/// The journal, the outbox, the rule store and the cluster's coordination in one PostgreSQL database, shared
/// by every node (`--store postgres://USER@HOST:PORT/DB`).
///
/// **Accepting.** Any node writes an accepted event (one statement, committed before its 200; a repeat's
/// de-duplication key is checked in the same statement, so a repeat that reaches another node is still
/// caught). When the database cannot be reached within `appendTimeout`, the event goes to the node's local
/// spool (`<data dir>/switchboard.sqlite`), is answered 200 all the same, and is moved over when the
/// database answers again (`moveSpooled`).
///
/// **Running.** One node at a time holds the processing lease (`leases` row `processor`, renewed by the
/// heartbeat, taken over `lease` seconds after its holder stopped renewing). That node reads unfinished
/// events back in acceptance order (`seq`), runs them through its engine, delivers forwards and runs timed
/// ticks. Every transaction that marks events done checks the lease's holder and epoch first (`FOR SHARE`
/// on the row: a takeover waits for it, and it fails after a takeover), so a node that lost the lease can
/// never commit a done mark or a store write: its events run again on the new holder, from the committed
/// store. That is how the store's effects stay exactly-once and per-call order holds across the cluster.
public final class PostgresJournal: Journal, TickLeasing, Sendable {
    public let location: String
    /// This node's name (`--node-name`), shown by `switchboard nodes`.
    public let node: String
    /// Who holds the lease: the node's name and a per-process suffix, so a restarted node (or two nodes
    /// given one name by mistake) is never mistaken for the process that held it before.
    public let holder: String
    /// Seconds a lease lasts without renewal.
    public let lease: Double
    let client: PostgresClient
    let runner: Task<Void, Never>
    let logger: Logger
    /// Where events go while the database is unreachable (nil: refuse them with a 503 instead).
    let spool: EventJournal?
    let appendTimeout: Duration
    private let committedStore: [StoreRecord]
    private let pendingDone = Mutex<[DoneMark]>([])
    private let flusher = SerialTask()
    let deliveryObserver = Mutex<Callback<Void>?>(nil)
    /// Called after this node committed an accepted event (the feed looks at once instead of at its next poll).
    let accepted = Mutex<Callback<Void>?>(nil)
    /// The processing lease as this node knows it.
    let leadership = Mutex(Leadership())
    /// Events handed to the engine whose done marks are not committed yet (the feed skips them).
    let dispatched = Mutex<Set<String>>([])
    /// After a failed write, appends go straight to the spool until then (no 2 s wait per request).
    let unreachableUntil = Mutex<ContinuousClock.Instant?>(nil)
    /// Rate-limits the "database unreachable" warning.
    let lastWarning = Mutex<ContinuousClock.Instant?>(nil)

    struct Leadership {
        /// The lease's epoch while this node holds it and may commit.
        var epoch: Int64?
        /// When the database last confirmed it.
        var confirmedAt = ContinuousClock.now
        /// The engine has the committed store loaded for this epoch: events may be read and run.
        var ready = false
    }

    /// SQL for "now" on the database's clock: leases compare times on one clock, not each node's.
    static let now = "extract(epoch from clock_timestamp())::float8"
    static let processorLease = "processor"

    /// Connects, creates or migrates the schema, and reads the committed rule store.
    /// - Parameters:
    ///   - url: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]`.
    ///   - spoolDirectory: the data directory for the local spool (nil: no spool).
    public static func open(
        url: String, node: String, lease: Double = 10, spoolDirectory: String?, appendTimeout: Duration = .seconds(2),
        logger: Logger
    ) async throws -> PostgresJournal {
        let parsed = try PostgresURL(url)
        let client = PostgresClient(configuration: parsed.configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        do {
            // A server that is not there fails here in seconds (the pool itself would keep retrying).
            try await Deadline.run(.seconds(5)) { try await client.query("SELECT 1", logger: logger) }
            try await Self.migrate(client, logger: logger)
            let records = try await Self.fetchStore(client)
            let spool = try spoolDirectory.map { try EventJournal(directory: $0) }
            return PostgresJournal(
                location: parsed.redacted, node: node, lease: lease, client: client, runner: runner, logger: logger,
                spool: spool, appendTimeout: appendTimeout, committedStore: records)
        } catch {
            runner.cancel()
            throw JournalError("cannot use the PostgreSQL store \(parsed.redacted): \(Self.reason(error))")
        }
    }

    init(
        location: String, node: String, lease: Double, client: PostgresClient, runner: Task<Void, Never>,
        logger: Logger, spool: EventJournal?, appendTimeout: Duration, committedStore: [StoreRecord]
    ) {
        self.location = location
        self.node = node
        self.holder = node + "/" + String(UInt32.random(in: .min ... .max), radix: 36)
        self.lease = lease
        self.client = client
        self.runner = runner
        self.logger = logger
        self.spool = spool
        self.appendTimeout = appendTimeout
        self.committedStore = committedStore
    }

    /// Closes the connections (after `drain`).
    public func close() {
        runner.cancel()
    }

    deinit { runner.cancel() }

    public var runsEventsOnAccept: Bool { false }
    public var keepsEventRecords: Bool { true }

    // MARK: accepting

    public func append(_ event: AcceptedEvent) async throws {
        _ = try await append(event, duplicateKey: nil, window: 0)
    }

    public func append(_ event: AcceptedEvent, duplicateKey: String?, window: Double) async throws -> Bool {
        if let spool, unreachableUntil.withLock({ $0.map { ContinuousClock.now < $0 } ?? false }) {
            try await spool.append(event)
            return true
        }
        do {
            return try await Deadline.run(appendTimeout) {
                try await self.insert(event, duplicateKey: duplicateKey, window: window)
            }
        } catch {
            guard let spool else {
                throw JournalError("PostgreSQL (\(location)) could not be written: \(Self.reason(error))")
            }
            unreachableUntil.withLock { $0 = ContinuousClock.now + .seconds(1) }
            warnUnreachable(error)
            try await spool.append(event)
            return true
        }
    }

    func warnUnreachable(_ error: any Error) {
        let now = ContinuousClock.now
        let due = lastWarning.withLock { last -> Bool in
            guard last.map({ now - $0 > .seconds(10) }) ?? true else { return false }
            last = now
            return true
        }
        if due {
            logger.warning(
                "PostgreSQL (\(location)) cannot be written (\(Self.reason(error))): accepting into the local spool \(spool?.path ?? "-") and moving the events over when it answers"
            )
        }
    }

    /// One statement: the key (when given) and the event, or neither for a repeat.
    func insert(_ event: AcceptedEvent, duplicateKey: String?, window: Double) async throws -> Bool {
        let body = ByteBuffer(bytes: event.body)
        let rows: PostgresRowSequence
        if let duplicateKey {
            rows = try await client.query(
                """
                WITH d AS (
                  INSERT INTO dedup (key, expires_at) VALUES (\(duplicateKey), \(unescaped: Self.now) + \(window))
                  ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
                  WHERE dedup.expires_at <= \(unescaped: Self.now)
                  RETURNING 1
                ), e AS (
                  INSERT INTO events (id, received_at, hook, format, body, meta, accepted_by)
                  SELECT \(event.id), \(event.receivedAt), \(event.hook), \(event.format), \(body), \(event.meta), \(node)
                  WHERE EXISTS (SELECT 1 FROM d)
                  ON CONFLICT (id) DO NOTHING
                  RETURNING seq
                )
                SELECT seq FROM e
                """, logger: logger)
            var inserted = false
            for try await _ in rows { inserted = true }
            if inserted {
                accepted.withLock { $0 }?.call(())
                return true
            }
            // No event row: either a repeat (the key was live) or this id was already there (a retry after a
            // timeout that had in fact committed). Only the first is a duplicate.
            let present = try await client.query("SELECT 1 FROM events WHERE id = \(event.id)", logger: logger)
            for try await _ in present { return true }
            return false
        }
        rows = try await client.query(
            """
            INSERT INTO events (id, received_at, hook, format, body, meta, accepted_by)
            VALUES (\(event.id), \(event.receivedAt), \(event.hook), \(event.format), \(body), \(event.meta), \(node))
            ON CONFLICT (id) DO NOTHING
            """, logger: logger)
        for try await _ in rows {}
        accepted.withLock { $0 }?.call(())
        return true
    }

    /// Moves what the spool holds into the database (oldest first, in batches). Returns how many moved.
    @discardableResult
    public func moveSpooled(limit: Int = 500) async throws -> Int {
        guard let spool else { return 0 }
        let entries = try spool.unfinished().prefix(limit)
        guard !entries.isEmpty else { return 0 }
        try await client.withTransaction(logger: logger) { connection in
            for entry in entries {
                try await connection.query(
                    """
                    INSERT INTO events (id, received_at, hook, format, body, meta, accepted_by)
                    VALUES (\(entry.id), \(entry.receivedAt), \(entry.hook), \(entry.format),
                      \(ByteBuffer(bytes: entry.body)), \(entry.meta), \(node))
                    ON CONFLICT (id) DO NOTHING
                    """, logger: logger)
            }
        }
        spool.markDone(entries.map { DoneMark(id: $0.id, forwards: []) })
        await spool.drain(limit: .seconds(5))
        unreachableUntil.withLock { $0 = nil }
        logger.info("moved \(entries.count) event(s) from the local spool to PostgreSQL")
        return entries.count
    }

    /// Events waiting in the local spool.
    public func spooledCount() -> Int {
        (try? spool?.counts().pending) ?? 0
    }

    // MARK: running (the lease holder)

    public func markDone(_ marks: [DoneMark]) {
        guard !marks.isEmpty else { return }
        pendingDone.withLock { $0.append(contentsOf: marks) }
        scheduleFlush()
    }

    public func unfinished() async throws -> [AcceptedEvent] {
        try await pending(after: 0, limit: Int(Int32.max)).map(\.entry)
    }

    /// Unfinished events after `seq`, in acceptance order.
    public func pending(after seq: Int64, limit: Int) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        try await entries(
            "SELECT seq, id, received_at, hook, format, body, meta FROM events WHERE NOT done AND seq > \(seq) ORDER BY seq LIMIT \(limit)"
        )
    }

    /// Unfinished events at or before `seq` (committed late, after later ones were read), in order.
    public func stragglers(upTo seq: Int64, limit: Int) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        try await entries(
            "SELECT seq, id, received_at, hook, format, body, meta FROM events WHERE NOT done AND seq <= \(seq) ORDER BY seq LIMIT \(limit)"
        )
    }

    func entries(_ query: PostgresQuery) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        var out: [(seq: Int64, entry: AcceptedEvent)] = []
        for try await (seq, id, receivedAt, hook, format, body, meta) in try await client.query(query, logger: logger)
            .decode((Int64, String, Double, String?, String, ByteBuffer, String).self)
        {
            out.append(
                (
                    seq,
                    AcceptedEvent(
                        id: id, receivedAt: receivedAt, hook: hook, format: format, body: Array(body.readableBytesView),
                        meta: meta)
                ))
        }
        return out
    }

    public func storeRecords() throws -> [StoreRecord] { committedStore }

    /// The rule store as committed now (a node taking over processing loads it).
    public func fetchStoreRecords() async throws -> [StoreRecord] { try await Self.fetchStore(client) }

    static func fetchStore(_ client: PostgresClient) async throws -> [StoreRecord] {
        var out: [StoreRecord] = []
        for try await (namespace, key, value, expiresAt, seq) in try await client.query(
            "SELECT namespace, key, value, expires_at, seq FROM store ORDER BY namespace, key"
        ).decode((String, String, String, Double?, Int64).self) {
            out.append(
                StoreRecord(
                    namespace: namespace, key: key, value: try? JSONReader.parse(value.utf8), expiresAt: expiresAt,
                    seq: seq))
        }
        return out
    }

    public func drain(limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if !flusher.isRunning && pendingDone.withLock({ $0.isEmpty }) { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// True while this node holds the lease, the database confirmed it within the lease, and the engine has
    /// the committed store: it may read and run events, deliver forwards and run ticks.
    public var isProcessing: Bool {
        leadership.withLock { l in
            l.epoch != nil && l.ready && ContinuousClock.now - l.confirmedAt < .milliseconds(Int64(lease * 1000))
        }
    }

    /// This node holds the lease with `epoch` and its engine has the committed store: run events.
    package func beginTerm(_ epoch: Int64) {
        leadership.withLock { $0 = Leadership(epoch: epoch, confirmedAt: .now, ready: true) }
    }

    /// The lease was lost (another node holds it) or given up: stop running, drop what was not committed.
    func forgetLease() {
        leadership.withLock { $0 = Leadership() }
        dispatched.withLock { $0.removeAll() }
        pendingDone.withLock { $0.removeAll() }
    }

    /// Marks are written by one task at a time, in order, each batch in one transaction fenced by the lease.
    private func scheduleFlush() {
        flusher.schedule(hasWork: { [self] in pendingDone.withLock { !$0.isEmpty } }, turn: { [self] in await flush() })
    }

    private func flush() async {
        let done = pendingDone.withLock { queued -> [DoneMark] in
            defer { queued.removeAll(keepingCapacity: true) }
            return queued
        }
        guard !done.isEmpty else { return }
        guard let epoch = leadership.withLock({ $0.epoch }) else {
            // Runs from a lease this node no longer holds: the holder runs these events again.
            logger.debug("dropped \(done.count) done mark(s) from a lost processing lease")
            return
        }
        do {
            try await commit(done, epoch: epoch)
            dispatched.withLock { set in for mark in done { set.remove(mark.id) } }
            if done.contains(where: { !$0.forwards.isEmpty }), let observer = deliveryObserver.withLock({ $0 }) {
                observer.call(())
            }
        } catch is LeaseLost {
            logger.warning(
                "the processing lease passed to another node: \(done.count) finished event(s) were not committed here and run again there"
            )
            forgetLease()
        } catch {
            // Back to the front, tried again: later marks may carry store writes built on these.
            logger.warning(
                "could not mark \(done.count) event(s) done in PostgreSQL, retrying: \(Self.reason(error))")
            pendingDone.withLock { $0.insert(contentsOf: done, at: 0) }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    struct LeaseLost: Error {}

    func commit(_ marks: [DoneMark], epoch: Int64) async throws {
        do {
            try await write(marks, epoch: epoch)
        } catch let error as PostgresTransactionError where error.closureError is LeaseLost {
            throw LeaseLost()
        }
    }

    private func write(_ marks: [DoneMark], epoch: Int64) async throws {
        let holder = self.holder
        try await client.withTransaction(logger: logger) { connection in
            var held = false
            for try await (node, current) in try await connection.query(
                "SELECT node, epoch FROM leases WHERE name = \(Self.processorLease) FOR SHARE", logger: logger
            ).decode((String, Int64).self) {
                held = node == holder && current == epoch
            }
            guard held else { throw LeaseLost() }
            let now = Date().timeIntervalSince1970
            for mark in marks {
                let r = mark.record
                try await connection.query(
                    """
                    UPDATE events SET done = true, done_at = \(now), name = \(r?.name), call_id = \(r?.callID),
                      other_leg = \(r?.otherLeg), account_id = \(r?.accountID), outcomes = \(r?.outcomes)
                    WHERE id = \(mark.id)
                    """, logger: logger)
                for forward in mark.forwards {
                    let headers = (try? JSONWriter.string(.object(EventJournal.object(forward.headers)))) ?? "{}"
                    try await connection.query(
                        """
                        INSERT INTO deliveries (event_id, rule, method, url, headers, body, state, created_at,
                          next_attempt_at, updated_at, destination)
                        VALUES (\(mark.id), \(forward.rule), \(forward.method), \(forward.url), \(headers),
                          \(ByteBuffer(bytes: forward.body)), 'pending', \(now), \(now), \(now),
                          \(Delivery.destination(of: forward.url)))
                        """, logger: logger)
                }
                for write in mark.writes {
                    if let value = write.value {
                        try await connection.query(
                            """
                            INSERT INTO store (namespace, key, value, expires_at, seq)
                            VALUES (\(write.namespace), \(write.key), \(try JSONWriter.string(value)), \(write.expiresAt), \(write.seq))
                            ON CONFLICT (namespace, key) DO UPDATE
                            SET value = excluded.value, expires_at = excluded.expires_at, seq = excluded.seq
                            WHERE excluded.seq > store.seq
                            """, logger: logger)
                    } else {
                        try await connection.query(
                            "DELETE FROM store WHERE namespace = \(write.namespace) AND key = \(write.key) AND seq < \(write.seq)",
                            logger: logger)
                    }
                }
            }
        }
    }

    /// Takes or renews the processing lease. Returns its epoch when this node holds it, nil when another does.
    public func acquireLease() async throws -> Int64? {
        let rows = try await client.query(
            """
            INSERT INTO leases (name, node, epoch, expires_at)
            VALUES (\(Self.processorLease), \(holder), 1, \(unescaped: Self.now) + \(lease))
            ON CONFLICT (name) DO UPDATE SET
              epoch = CASE WHEN leases.node = excluded.node THEN leases.epoch ELSE leases.epoch + 1 END,
              node = excluded.node, expires_at = excluded.expires_at
            WHERE leases.node = excluded.node OR leases.expires_at < \(unescaped: Self.now)
            RETURNING epoch
            """, logger: logger)
        for try await epoch in rows.decode(Int64.self) { return epoch }
        return nil
    }

    /// Gives the lease up (graceful shutdown), so another node takes over at once.
    public func releaseLease() async {
        _ = try? await client.query(
            "UPDATE leases SET expires_at = 0 WHERE name = \(Self.processorLease) AND node = \(holder)",
            logger: logger)
    }

    // MARK: ticks: one node runs them, the lease holder

    public func claim(rule: String, due: Double, node: String, until: Double) async -> Bool { isProcessing }
    public func release(rule: String, node: String) async {}

    // MARK: nodes

    /// Writes this node's heartbeat.
    public func heartbeat(version: String, rulesHash: String, inFlight: Int, startedAt: Double) async throws {
        try await client.query(
            """
            INSERT INTO nodes (name, holder, version, rules_hash, in_flight, spooled, started_at, heartbeat_at)
            VALUES (\(node), \(holder), \(version), \(rulesHash), \(inFlight), \(spooledCount()), \(startedAt), \(unescaped: Self.now))
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, version = excluded.version,
              rules_hash = excluded.rules_hash, in_flight = excluded.in_flight, spooled = excluded.spooled,
              started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at
            """, logger: logger)
    }

    /// Takes this node off the list (graceful shutdown).
    public func leave() async {
        _ = try? await client.query("DELETE FROM nodes WHERE name = \(node) AND holder = \(holder)", logger: logger)
    }

    public func nodes() async throws -> [NodeStatus] {
        try await Self.nodes(client, lease: lease, logger: logger)
    }

    static func nodes(_ client: PostgresClient, lease: Double, logger: Logger) async throws -> [NodeStatus] {
        var out: [NodeStatus] = []
        let rows = try await client.query(
            """
            SELECT n.name, n.version, n.rules_hash, n.in_flight, n.spooled, n.started_at, n.heartbeat_at,
              coalesce(l.node = n.holder AND l.expires_at > \(unescaped: now), false),
              n.heartbeat_at > \(unescaped: now) - \(lease)
            FROM nodes n LEFT JOIN leases l ON l.name = \(processorLease)
            ORDER BY 9 DESC, n.name
            """, logger: logger)
        for try await (name, version, hash, inFlight, spooled, started, beat, processing, live) in rows.decode(
            (String, String, String, Int, Int, Double, Double, Bool, Bool).self)
        {
            out.append(
                NodeStatus(
                    name: name, version: version, rulesHash: hash, inFlight: inFlight, spooled: spooled,
                    processing: processing, startedAt: started, heartbeatAt: beat, live: live))
        }
        return out
    }

    /// `switchboard nodes`: the list without opening a journal (no migration, no spool).
    public static func listNodes(url: String, lease: Double, logger: Logger) async throws -> [NodeStatus] {
        let parsed = try PostgresURL(url)
        let client = PostgresClient(configuration: parsed.configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        do {
            return try await Deadline.run(.seconds(10)) { try await Self.nodes(client, lease: lease, logger: logger) }
        } catch {
            throw JournalError("cannot read the nodes from \(parsed.redacted): \(Self.reason(error))")
        }
    }

    // MARK: retention (the lease holder)

    /// Deletes done events and delivered forwards older than `age` seconds, expired de-duplication keys and
    /// expired store keys, and nodes silent for a day. Returns how many rows went.
    @discardableResult
    public func prune(olderThan age: Double) async throws -> Int {
        let cutoff = Date().timeIntervalSince1970 - age
        var removed = 0
        for query: PostgresQuery in [
            "DELETE FROM events WHERE done AND done_at < \(cutoff)",
            "DELETE FROM deliveries WHERE state = 'delivered' AND updated_at < \(cutoff)",
            "DELETE FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
            "DELETE FROM dedup WHERE expires_at <= \(unescaped: Self.now)",
            "DELETE FROM store WHERE expires_at IS NOT NULL AND expires_at <= \(unescaped: Self.now)",
            "DELETE FROM nodes WHERE heartbeat_at < \(unescaped: Self.now) - 86400",
        ] {
            for try await _ in try await client.query(query, logger: logger) {}
            removed += 0
        }
        return removed
    }
}

extension PostgresJournal {
    /// What went wrong, in words: PostgreSQL's own message when it sent one.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PostgresTransactionError,
            let inner = error.beginError ?? error.closureError ?? error.commitError
        {
            return reason(inner)
        }
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                return message + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
            }
            if let underlying = error.underlying { return "\(underlying)" }
            return "\(error.code)"
        }
        if error is Deadline.Expired { return "no answer in time" }
        return "\(error)"
    }
}

/// Runs work with a time limit without waiting for it past the limit (a query to an unreachable server may
/// not notice cancellation for a long time; it is cancelled and left to end on its own).
enum Deadline {
    struct Expired: Error {}

    /// Resumes its continuation once: with the work's result or the deadline's error, whichever comes first.
    final class Outcome<T: Sendable>: Sendable {
        let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)

        func finish(_ result: Result<T, any Error>) {
            slot.withLock { c in
                c?.resume(with: result)
                c = nil
            }
        }
    }

    static func run<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async throws -> T) async throws -> T
    {
        let outcome = Outcome<T>()
        return try await withCheckedThrowingContinuation { continuation in
            outcome.slot.withLock { $0 = continuation }
            let timer = Task {
                try? await Task.sleep(for: limit)
                if !Task.isCancelled { outcome.finish(.failure(Expired())) }
            }
            Task {
                do { outcome.finish(.success(try await work())) } catch { outcome.finish(.failure(error)) }
                timer.cancel()
            }
        }
    }
}
