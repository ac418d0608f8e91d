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
/// **Accepting.** Any node writes accepted events, those that queued together in one statement, committed
/// before their 200s; a repeat's de-duplication key is checked in the same statement, so a repeat that
/// reaches another node is still caught. When the database cannot be reached within `appendTimeout`, the
/// event goes to the node's local spool (`<data dir>/switchboard.sqlite`), is answered 200 all the same, and
/// is moved over when the database answers again (`moveSpooled`).
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
    /// The connection pool and the task that runs it; replaced by a fresh one after an outage
    /// (`renewPool`).
    private let pool: Mutex<(client: PostgresClient, runner: Task<Void, Never>)>
    var client: PostgresClient { pool.withLock { $0.client } }
    /// When a bounded operation last ran out of time (a stuck pool), and when the pool was last renewed.
    let stalls = Mutex<(last: ContinuousClock.Instant?, renewed: ContinuousClock.Instant?)>((nil, nil))
    /// The `bounded` waits under way: `renewPool` ends them.
    let boundedWaits = Mutex(BoundedWaits())
    let logger: Logger
    /// Where events go while the database is unreachable (nil: refuse them with a 503 instead).
    let spool: EventJournal?
    let appendTimeout: Duration
    private let committedStore: [StoreRecord]
    private let pendingDone = Mutex<[DoneMark]>([])
    private let flusher = SerialTask()
    /// Appends waiting for `appender`'s next statement.
    let appends = Mutex<[PendingAppend]>([])
    let appender = SerialTask()
    let deliveryObserver = Mutex<Callback<Void>?>(nil)
    /// The connection the lease is renewed on (outside the pool).
    let leaseConnection = Mutex<PostgresConnection?>(nil)
    let url: PostgresURL
    /// Called after this node committed an accepted event (the feed looks at once instead of at its next poll).
    let accepted = Mutex<Callback<Void>?>(nil)
    /// Copies of rejected requests being written (`shareRejected`).
    let rejectedWrites = Mutex(0)
    /// The processing lease as this node knows it.
    let leadership = Mutex(Leadership())
    /// Events handed to the engine in this term that the feed must skip (`DispatchedEvents`).
    let dispatched = Mutex(DispatchedEvents())
    /// After a failed write, appends go straight to the spool until then or until a heartbeat or a spool move
    /// gets through (no 2 s wait per request).
    let unreachableUntil = Mutex<ContinuousClock.Instant?>(nil)
    /// Set when the database failed a write or a read (an outage): the feed waits for every node's spool
    /// to be moved before it runs the backlog (`ClusterNode.settle`).
    let outage = Mutex<ContinuousClock.Instant?>(nil)

    /// Notes that the database failed (the first failure of an outage starts it).
    func noteOutage() { outage.withLock { $0 = $0 ?? .now } }
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
        do { try await parsed.probe(logger: logger) } catch {
            throw JournalError("cannot use the PostgreSQL store \(parsed.redacted): \(Self.reason(error))")
        }
        let client = PostgresClient(configuration: parsed.configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        do {
            try await Self.migrate(client, logger: logger)
            let records = try await Self.fetchStore(client)
            let spool = try spoolDirectory.map { try EventJournal(directory: $0) }
            return PostgresJournal(
                url: parsed, node: node, lease: lease, client: client, runner: runner, logger: logger,
                spool: spool, appendTimeout: appendTimeout, committedStore: records)
        } catch {
            runner.cancel()
            throw JournalError("cannot use the PostgreSQL store \(parsed.redacted): \(Self.reason(error))")
        }
    }

    init(
        url: PostgresURL, node: String, lease: Double, client: PostgresClient, runner: Task<Void, Never>,
        logger: Logger, spool: EventJournal?, appendTimeout: Duration, committedStore: [StoreRecord]
    ) {
        self.url = url
        self.location = url.redacted
        self.node = node
        self.holder = node + "/" + String(UInt32.random(in: .min ... .max), radix: 36)
        self.lease = lease
        self.pool = Mutex((client, runner))
        self.logger = logger
        self.spool = spool
        self.appendTimeout = appendTimeout
        self.committedStore = committedStore
    }

    /// Closes the connections (after `drain`).
    public func close() {
        pool.withLock { $0.runner.cancel() }
        Self.hangUp(
            leaseConnection.withLock { c in
                defer { c = nil }; return c
            })
    }

    deinit {
        pool.withLock { $0.runner.cancel() }
        Self.hangUp(leaseConnection.withLock { $0 })
    }

    /// Closes a connection of our own, keeping it alive until it is closed (postgres-nio asserts that a
    /// connection is closed before it is freed).
    static func hangUp(_ connection: PostgresConnection?) {
        guard let connection else { return }
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Starts a fresh connection pool and closes the old one (whose waiting requests then fail and are
    /// retried on the new one). After an outage, postgres-nio's pool can keep waiting out its reconnect
    /// backoff (up to a minute) or, as seen under load, not come back at all; the lease's own connection
    /// tells when the server answers again.
    func renewPool() {
        let client = PostgresClient(configuration: url.configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        let old = pool.withLock { p in
            defer { p = (client, runner) }
            return p.runner
        }
        old.cancel()
        stalls.withLock { $0 = (nil, .now) }
        // Work waiting on the old pool is given up now rather than at its time limit: after an outage a done-mark
        // batch sent as the server went down waited out its 15 s, and every later mark and forward behind it
        // (the cluster test's logs), and each such expiry counted as a stall of the new pool and replaced it
        // again. What the old pool still finishes is harmless to repeat: done marks only mark events not yet
        // done (and only their forwards are queued), store writes are guarded by `seq`, and spool moves and
        // inserts skip ids already there.
        for end in boundedWaits.withLock({ $0.takeAll() }) { end() }
        logger.info("opened a fresh PostgreSQL connection pool")
    }

    /// Work on the pool with a time limit; running out of it marks the pool as stuck. Replacing the pool
    /// (`renewPool`) ends the wait at once with `PoolReplaced`, so that the caller tries again on the new pool.
    func bounded<T: Sendable>(_ seconds: Double = 10, _ work: @escaping @Sendable () async throws -> T)
        async throws -> T
    {
        let outcome = Deadline.Outcome<T>()
        let id = boundedWaits.withLock { waits in waits.add { outcome.finish(.failure(PoolReplaced())) } }
        defer { boundedWaits.withLock { $0.remove(id) } }
        do {
            return try await Deadline.run(.milliseconds(Int64(seconds * 1000)), outcome: outcome, work)
        } catch let error as Deadline.Expired {
            stalls.withLock { $0.last = .now }
            throw error
        }
    }

    /// How a wait on a replaced pool ends (`bounded`).
    struct PoolReplaced: Error, CustomStringConvertible {
        var description: String { "the connection pool it waited on was replaced" }
    }

    /// The `bounded` waits under way, each with what ends it when the pool is replaced.
    struct BoundedWaits {
        private var next = 0
        private var ends: [Int: @Sendable () -> Void] = [:]

        mutating func add(_ end: @escaping @Sendable () -> Void) -> Int {
            next += 1
            ends[next] = end
            return next
        }

        mutating func remove(_ id: Int) { ends[id] = nil }

        var count: Int { ends.count }

        /// Takes every end out, to be called outside the lock.
        mutating func takeAll() -> [@Sendable () -> Void] {
            defer { ends.removeAll() }
            return Array(ends.values)
        }
    }

    /// A query's rows, each turned into a value by `transform`, the query and the reading both within the time
    /// limit: every read goes through here, so a query left on a pool that was replaced (after an outage) fails
    /// its caller instead of stopping it for good.
    func rows<T: Sendable>(
        _ query: PostgresQuery, seconds: Double = 10, _ transform: @escaping @Sendable (PostgresRow) throws -> T
    ) async throws -> [T] {
        try await bounded(seconds) { [client, logger] in
            var out: [T] = []
            for try await row in try await client.query(query, logger: logger) { out.append(try transform(row)) }
            return out
        }
    }

    /// Whether the pool looks stuck: a bounded operation ran out of time since the pool was last renewed.
    var poolStalled: Bool {
        stalls.withLock { s in
            guard let last = s.last else { return false }
            return s.renewed.map { last > $0 } ?? true
        }
    }

    public var runsEventsOnAccept: Bool { false }
    public var keepsEventRecords: Bool { true }

    // MARK: accepting

    public func append(_ event: AcceptedEvent) async throws {
        _ = try await append(event, duplicateKey: nil, window: 0)
    }

    public func append(_ event: AcceptedEvent, duplicateKey: String?, window: Double) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            append(event, duplicateKey: duplicateKey, window: window) { continuation.resume(with: $0) }
        }
    }

    /// Appends are written together: each turn of `appender` takes what queued while the last statement ran
    /// (`statementCount`) and writes it with one statement. One statement an append, each awaited by a task
    /// of its own with a deadline of its own, cost the node 145–166 µs of CPU a request and PostgreSQL 131–157
    /// (two `wrk -t1 -c16`, the anchor rule, one node), much of it threads waking one another; batched, 75–102
    /// and 67–87.
    public func append(
        _ event: AcceptedEvent, duplicateKey: String?, window: Double,
        completion: @escaping @Sendable (Result<Bool, any Error>) -> Void
    ) {
        let append = PendingAppend(
            event: event, duplicateKey: duplicateKey, window: window, queuedAt: .now, completion: completion)
        if spool != nil, unreachableUntil.withLock({ $0.map { ContinuousClock.now < $0 } ?? false }) {
            toSpool(append)
            return
        }
        appends.withLock { $0.append(append) }
        appender.schedule(
            hasWork: { [self] in appends.withLock { !$0.isEmpty } }, turn: { [self] in await writeAppends() })
    }

    struct PendingAppend: Sendable {
        let event: AcceptedEvent
        let duplicateKey: String?
        let window: Double
        let queuedAt: ContinuousClock.Instant
        let completion: @Sendable (Result<Bool, any Error>) -> Void
    }

    /// Most events one statement writes (a result of up to this many ids stays within one socket read: see
    /// `entries`).
    static let appendBatchMost = 128
    /// Most body bytes one statement carries, unless its first event alone is larger.
    static let appendBatchBytes = 4 << 20
    /// Least time left for a statement to be sent.
    static let appendTimeFloor: Duration = .milliseconds(50)

    struct NoTimeLeft: Error, CustomStringConvertible {
        var description: String { "no time left: the appends queued ahead of these took it all" }
    }

    /// How many of the events whose bodies have these sizes (in order) the next statement takes: up to
    /// `appendBatchMost`, and up to `appendBatchBytes` of bodies; at least one.
    static func statementCount(_ sizes: some Sequence<Int>) -> Int {
        var count = 0
        var bytes = 0
        for size in sizes {
            bytes += size
            if count == appendBatchMost || (count > 0 && bytes > appendBatchBytes) { break }
            count += 1
        }
        return count
    }

    /// One turn of `appender`: what queued, in one statement, tried once more on another connection (after
    /// the server restarted, each pooled connection fails its next query once; the statement is idempotent).
    /// Each append waits at most `appendTimeout` from when it queued, the statements before its own included:
    /// the statement gets what is left of its oldest append's time. When it fails, its appends go to the spool.
    /// So do they when too little is left (`appendTimeFloor`): a statement abandoned at its deadline keeps a
    /// pooled connection, and its bodies, until the database ends it.
    func writeAppends() async {
        let batch = appends.withLock { queued -> [PendingAppend] in
            let count = Self.statementCount(queued.lazy.map(\.event.body.count))
            defer { queued.removeFirst(count) }
            return Array(queued.prefix(count))
        }
        guard let oldest = batch.first else { return }
        let left = oldest.queuedAt + appendTimeout - ContinuousClock.now
        do {
            guard left > Self.appendTimeFloor else { throw NoTimeLeft() }
            let results = try await Deadline.run(left) {
                do { return try await self.insert(batch) } catch { return try await self.insert(batch) }
            }
            for (append, result) in zip(batch, results) { append.completion(.success(result)) }
        } catch {
            if spool != nil {
                // A stall only when a query was sent (`poolStalled` renews the pool), not when the queue ahead
                // took the time. Either way the events go to the spool, so the processing node must wait for
                // the spools before it runs the backlog (`noteOutage`).
                if error is Deadline.Expired { stalls.withLock { $0.last = .now } }
                // Until a heartbeat or a spool move gets through (every 0.5–2.5 s), or 10 s at most: only the
                // requests of an outage's first moments wait for the database, not one in every few seconds.
                unreachableUntil.withLock { $0 = ContinuousClock.now + .seconds(10) }
                noteOutage()
                warnUnreachable(error)
            }
            for append in batch { toSpool(append, error: error) }
        }
    }

    /// Into the local spool, answered 200 all the same; without a spool, the database's error.
    func toSpool(_ append: PendingAppend, error: (any Error)? = nil) {
        guard let spool else {
            let reason = error.map { Self.reason($0) } ?? "unreachable"
            append.completion(.failure(JournalError("PostgreSQL (\(location)) could not be written: \(reason)")))
            return
        }
        Task {
            do {
                try await spool.append(append.event)
                append.completion(.success(true))
            } catch {
                append.completion(.failure(error))
            }
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

    /// One statement for a batch of appends: each event in order, unless its key (when it has one) is live.
    /// Returns for each whether it was accepted: true when written, or already there (a retry of a statement
    /// that had committed after all), false for a repeat. A key that two appends of the batch share is the
    /// first one's; the later ones are repeats.
    func insert(_ batch: [PendingAppend]) async throws -> [Bool] {
        var results = [Bool?](repeating: nil, count: batch.count)
        var columns = AppendRows()
        var keys: Set<String> = []
        for (index, append) in batch.enumerated() {
            if let key = append.duplicateKey, !keys.insert(key).inserted {
                results[index] = false
                continue
            }
            columns.append(append.event, key: append.duplicateKey ?? "", window: append.window)
        }
        let written = Set(try await Self.insert(columns, node: node, client, logger))
        var missing: [String] = []
        for (index, append) in batch.enumerated() where results[index] == nil {
            if written.contains(append.event.id) {
                results[index] = true
            } else if append.duplicateKey == nil {
                results[index] = true  // there already
            } else {
                missing.append(append.event.id)
            }
        }
        if !written.isEmpty { accepted.withLock { $0 }?.call(()) }
        if !missing.isEmpty {
            // No row written: a repeat (its key was live), or the id was there already (a retry after a
            // timeout that had in fact committed). Only the first is a repeat.
            let present = Set(
                try await rows(
                    "SELECT id FROM events WHERE id = ANY(\(missing))", { try $0.decode(String.self) }))
            for (index, append) in batch.enumerated() where results[index] == nil {
                results[index] = present.contains(append.event.id)
            }
        }
        return results.map { $0 ?? false }
    }

    /// Events as the columns of `insert`'s statement.
    struct AppendRows {
        var ids: [String] = []
        var receivedAts: [Double] = []
        var hooks: [String] = []
        var formats: [String] = []
        var bodies: [ByteBuffer] = []
        var metas: [String] = []
        var keys: [String] = []
        var windows: [Double] = []

        /// `key`: "" for none. A nil hook is written as "" and read back as NULL.
        mutating func append(_ event: AcceptedEvent, key: String, window: Double) {
            ids.append(event.id)
            receivedAts.append(event.receivedAt)
            hooks.append(event.hook ?? "")
            formats.append(event.format)
            bodies.append(ByteBuffer(bytes: event.body))
            metas.append(event.meta)
            keys.append(key)
            windows.append(window)
        }
    }

    /// Writes the rows in order in one statement, each unless its key is live (and then marks the key live for
    /// its window) or its id is there already. Returns the ids written.
    static func insert(_ rows: AppendRows, node: String, _ client: PostgresClient, _ logger: Logger) async throws
        -> [String]
    {
        guard !rows.ids.isEmpty else { return [] }
        var written: [String] = []
        for try await id in try await client.query(
            """
            WITH u AS (
              SELECT * FROM unnest(\(rows.ids)::text[], \(rows.receivedAts)::float8[], \(rows.hooks)::text[],
                \(rows.formats)::text[], \(rows.bodies)::bytea[], \(rows.metas)::text[], \(rows.keys)::text[],
                \(rows.windows)::float8[])
                WITH ORDINALITY AS u(id, received_at, hook, format, body, meta, key, window_seconds, n)
            ), d AS (
              INSERT INTO dedup (key, expires_at)
              SELECT key, \(unescaped: Self.now) + window_seconds FROM u WHERE key <> '' ORDER BY key
              ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
              WHERE dedup.expires_at <= \(unescaped: Self.now)
              RETURNING key
            )
            INSERT INTO events (id, received_at, hook, format, body, meta, accepted_by)
            SELECT id, received_at, NULLIF(hook, ''), format, body, meta, \(node) FROM u
            WHERE key = '' OR key IN (SELECT key FROM d)
            ORDER BY n
            ON CONFLICT (id) DO NOTHING
            RETURNING id
            """, logger: logger
        ).decode(String.self) {
            written.append(id)
        }
        return written
    }

    /// Moves what the spool holds into the database (oldest first, in batches). Returns how many moved.
    @discardableResult
    public func moveSpooled(limit: Int = 500) async throws -> Int {
        guard let spool else { return 0 }
        let entries = try spool.unfinished().prefix(limit)
        guard !entries.isEmpty else { return 0 }
        let (client, logger, node) = (self.client, self.logger, self.node)
        var statements: [AppendRows] = []
        var rest = entries[...]
        while !rest.isEmpty {
            let count = Self.statementCount(rest.lazy.map(\.body.count))
            var rows = AppendRows()
            for entry in rest.prefix(count) { rows.append(entry, key: "", window: 0) }
            statements.append(rows)
            rest = rest.dropFirst(count)
        }
        try await bounded { [statements] in
            for rows in statements { _ = try await Self.insert(rows, node: node, client, logger) }
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

    /// Unfinished events after `seq` or at one of `holes` (below it), in acceptance order.
    public func pending(after seq: Int64, orAt holes: [Int64] = [], limit: Int) async throws
        -> [(seq: Int64, entry: AcceptedEvent)]
    {
        if holes.isEmpty {
            return try await entries(
                """
                SELECT \(unescaped: Self.entryColumns) FROM events WHERE NOT done AND seq > \(seq)
                ORDER BY seq LIMIT \(limit)
                """)
        }
        // Two index scans, not one over every unfinished row below `seq` (the events running now).
        return try await entries(
            """
            SELECT \(unescaped: Self.entryColumns) FROM (
              (SELECT \(unescaped: Self.entryColumns) FROM events
               WHERE NOT done AND seq = ANY(\(holes)) ORDER BY seq LIMIT \(limit))
              UNION ALL
              (SELECT \(unescaped: Self.entryColumns) FROM events
               WHERE NOT done AND seq > \(seq) ORDER BY seq LIMIT \(limit))
            ) AS e ORDER BY seq LIMIT \(limit)
            """)
    }

    /// The unfinished events up to `top`, as their `seq`s in the order the nodes received them (after a takeover
    /// or an outage: events moved from spools got later `seq`s than the order they arrived in).
    ///
    /// Read in `seq` order a page at a time (the partial index `events_pending`), sorted here. A page of events
    /// in arrival order straight from the database sorted every unfinished row for each page (there is no index
    /// on arrival), so a pass cost the square of the backlog: 0.76–1.15 s of queries for 10,000 events and
    /// 28.6–31.5 s for 50,000, beside 200,000 done ones (`scripts/backlog_pass_queries.sh`). This costs 16 bytes
    /// an event while it sorts, and 8 while the pass lasts.
    public func arrivalOrder(upTo top: Int64) async throws -> [Int64] {
        var pending: [(receivedAt: Double, seq: Int64)] = []
        var after = Int64.min
        while true {
            let page = try await rows(
                """
                SELECT received_at, seq FROM events WHERE NOT done AND seq > \(after) AND seq <= \(top)
                ORDER BY seq LIMIT \(Self.orderPage)
                """
            ) { try $0.decode((Double, Int64).self) }
            pending += page.map { (receivedAt: $0.0, seq: $0.1) }
            guard page.count == Self.orderPage, let last = page.last else { break }
            after = last.1
        }
        pending.sort { ($0.receivedAt, $0.seq) < ($1.receivedAt, $1.seq) }
        return pending.map(\.seq)
    }

    /// Rows of (`received_at`, `seq`) read per query: 16 KB on the wire, as small as a page of events (see
    /// `entries`).
    static let orderPage = 512

    /// The events at these `seq`s that are still unfinished, in the order given.
    public func unfinished(at seqs: [Int64]) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        guard !seqs.isEmpty else { return [] }
        let found = try await entries(
            "SELECT \(unescaped: Self.entryColumns) FROM events WHERE NOT done AND seq = ANY(\(seqs))")
        let bySeq = Dictionary(found.map { ($0.seq, $0) }, uniquingKeysWith: { first, _ in first })
        return seqs.compactMap { bySeq[$0] }
    }

    /// The highest `seq` of a committed event (0: none), and the `seq`s of the events there are (done or not)
    /// among the `count` up to it: one snapshot.
    func highestSeqs(_ count: Int) async throws -> (top: Int64, existing: [Int64]) {
        try await rows(
            """
            SELECT coalesce(max(seq), 0)::int8, coalesce(array_agg(seq), '{}')::int8[] FROM events
            WHERE seq > (SELECT coalesce(max(seq), 0) FROM events) - \(count)
            """
        ) { try $0.decode((Int64, [Int64]).self) }.first ?? (0, [])
    }

    /// Whether every node that was live when the outage began has written a heartbeat since `since`
    /// (database time) with an empty spool, or `patience` seconds have passed since then (a node that died
    /// keeps its spool until it starts again). `outageSeconds`: how long ago the outage began. Returns the
    /// database's time now too.
    func spoolsMoved(since: Double?, outageSeconds: Double, patience: Double) async throws -> (done: Bool, now: Double)
    {
        let now = try await rows("SELECT \(unescaped: Self.now)") { try $0.decode(Double.self) }.first ?? 0
        let start = since ?? now
        if now - start > patience { return (true, now) }
        let waiting =
            try await rows(
                """
                SELECT count(*)::int8 FROM nodes WHERE heartbeat_at > \(start - outageSeconds - lease)
                  AND (heartbeat_at < \(start) OR spooled > 0)
                """
            ) { try $0.decode(Int.self) }.first ?? 0
        return (waiting == 0, now)
    }

    /// Unfinished events at or before `seq` (committed late, after later ones were read) that are not in
    /// `excluding` (the ones running), in order.
    public func stragglers(upTo seq: Int64, excluding: [String], limit: Int) async throws
        -> [(seq: Int64, entry: AcceptedEvent)]
    {
        try await entries(
            """
            SELECT \(unescaped: Self.entryColumns) FROM events
            WHERE NOT done AND seq <= \(seq) AND NOT (id = ANY(\(excluding))) ORDER BY seq LIMIT \(limit)
            """)
    }

    /// Rows are read a small page at a time (`ClusterNode.page`): postgres-nio 1.33.2 stops the process with a
    /// precondition failure when the server closes the connection while a result that spans several socket
    /// reads waits for demand (seen when PostgreSQL was stopped under load, `RowStreamStateMachine`), and a
    /// page of events fits in one read. The query selects `entryColumns`.
    func entries(_ query: PostgresQuery) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        try await rows(query) { row in
            let (seq, id, receivedAt, hook, format, body, meta) = try row.decode(
                (Int64, String, Double, String?, String, ByteBuffer, String).self)
            return (
                seq,
                AcceptedEvent(
                    id: id, receivedAt: receivedAt, hook: hook, format: format, body: Array(body.readableBytesView),
                    meta: meta)
            )
        }
    }

    /// The columns `entries` decodes, in its order.
    static let entryColumns = "seq, id, received_at, hook, format, body, meta"

    public func storeRecords() throws -> [StoreRecord] { committedStore }

    /// The rule store as committed now (a node taking over processing loads it).
    public func fetchStoreRecords() async throws -> [StoreRecord] {
        try await bounded(30) { [client] in try await Self.fetchStore(client) }
    }

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

    /// This node took the lease with a new epoch: renew it, but run nothing (and commit nothing) until the
    /// engine is idle and has the committed store (`beginTerm`).
    func takeLease(_ epoch: Int64) {
        forgetLease()
        leadership.withLock { $0 = Leadership(epoch: epoch, confirmedAt: .now, ready: false) }
    }

    /// The lease was lost (another node holds it) or given up: stop running, drop what was not committed.
    func forgetLease() {
        leadership.withLock { $0 = Leadership() }
        dispatched.withLock { $0 = DispatchedEvents() }
        pendingDone.withLock { $0.removeAll() }
    }

    /// Forgets the events whose done marks committed since the last call: the feed calls it just before each
    /// query, which then sees them done.
    package func releaseSettled() { dispatched.withLock { $0.releaseSettled() } }

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
        guard let epoch = leadership.withLock({ $0.ready ? $0.epoch : nil }) else {
            // Runs from a lease this node no longer holds: the holder runs these events again.
            logger.debug("dropped \(done.count) done mark(s) from a lost processing lease")
            return
        }
        do {
            logger.debug("committing \(done.count) done mark(s)")
            try await commit(done, epoch: epoch)
            logger.debug("committed \(done.count) done mark(s)")
            dispatched.withLock { events in for mark in done { events.settled.append(mark.id) } }
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
            try await bounded(15) { try await self.write(marks, epoch: epoch) }
        } catch let error as PostgresTransactionError where error.closureError is LeaseLost {
            throw LeaseLost()
        }
    }

    /// One transaction of at most four statements whatever the batch's size (the lease's check, the marks with
    /// their forwards, the store's writes and its deletes; arrays and `unnest`): a long transaction would hold the
    /// lease row's share lock and delay the holder's own renewal.
    private func write(_ marks: [DoneMark], epoch: Int64) async throws {
        let holder = self.holder
        let now = Date().timeIntervalSince1970
        var ids: [String] = []
        var names: [String] = []
        var calls: [String] = []
        var legs: [String] = []
        var accounts: [String] = []
        var outcomes: [String] = []
        var forwards = Forwards()
        // The newest write of each key is the one that counts (a write older than the stored row is ignored,
        // so the others in between change nothing).
        var latest: [StoreKey: StoreRecord] = [:]
        for mark in marks {
            let r = mark.record
            ids.append(mark.id)
            names.append(r?.name ?? "")
            calls.append(r?.callID ?? "")
            legs.append(r?.otherLeg ?? "")
            accounts.append(r?.accountID ?? "")
            outcomes.append(r?.outcomes ?? "")
            for forward in mark.forwards { forwards.append(forward, event: mark.id) }
            for write in mark.writes {
                let key = StoreKey(namespace: write.namespace, key: write.key)
                if (latest[key]?.seq ?? .min) < write.seq { latest[key] = write }
            }
        }
        let sets = latest.values.filter { $0.value != nil }
        let deletes = latest.values.filter { $0.value == nil }
        try await client.withTransaction(logger: logger) { connection in
            var held = false
            for try await (node, current) in try await connection.query(
                "SELECT node, epoch FROM leases WHERE name = \(Self.processorLease) FOR SHARE", logger: logger
            ).decode((String, Int64).self) {
                held = node == holder && current == epoch
            }
            guard held else { throw LeaseLost() }
            // Only events not done yet are marked, and only their forwards queued: a batch whose commit timed
            // out on this side may have committed all the same (the bound abandons the wait, not the
            // transaction), and its retry must not queue every forward a second time. The UPDATE runs in
            // full whether or not the INSERT reads it (a data-modifying WITH). Store writes need no such care:
            // the `seq` guard below makes a repeat change nothing.
            try await connection.query(
                """
                WITH marked AS (
                  UPDATE events e SET done = true, done_at = \(now), name = NULLIF(u.name, ''),
                    call_id = NULLIF(u.call_id, ''), other_leg = NULLIF(u.other_leg, ''),
                    account_id = NULLIF(u.account_id, ''), outcomes = NULLIF(u.outcomes, '')
                  FROM unnest(\(ids)::text[], \(names)::text[], \(calls)::text[], \(legs)::text[],
                    \(accounts)::text[], \(outcomes)::text[]) AS u(id, name, call_id, other_leg, account_id, outcomes)
                  WHERE e.id = u.id AND NOT e.done
                  RETURNING e.id)
                INSERT INTO deliveries (event_id, rule, method, url, headers, body, state, created_at,
                  next_attempt_at, updated_at, destination)
                SELECT u.event_id, u.rule, u.method, u.url, u.headers, u.body, 'pending', \(now), \(now), \(now),
                  u.destination
                FROM unnest(\(forwards.events)::text[], \(forwards.rules)::text[], \(forwards.methods)::text[],
                  \(forwards.urls)::text[], \(forwards.headers)::text[], \(forwards.bodies)::bytea[],
                  \(forwards.destinations)::text[])
                  WITH ORDINALITY AS u(event_id, rule, method, url, headers, body, destination, n)
                WHERE u.event_id IN (SELECT id FROM marked)
                ORDER BY u.n
                """, logger: logger)
            if !sets.isEmpty {
                let values = try sets.map { try JSONWriter.string($0.value!) }
                try await connection.query(
                    """
                    INSERT INTO store (namespace, key, value, expires_at, seq)
                    SELECT u.namespace, u.key, u.value, NULLIF(u.expires_at, 'NaN'::float8), u.seq
                    FROM unnest(\(sets.map(\.namespace))::text[], \(sets.map(\.key))::text[], \(values)::text[],
                      \(sets.map { $0.expiresAt ?? .nan })::float8[], \(sets.map(\.seq))::int8[])
                      AS u(namespace, key, value, expires_at, seq)
                    ON CONFLICT (namespace, key) DO UPDATE
                    SET value = excluded.value, expires_at = excluded.expires_at, seq = excluded.seq
                    WHERE excluded.seq > store.seq
                    """, logger: logger)
            }
            if !deletes.isEmpty {
                try await connection.query(
                    """
                    DELETE FROM store s
                    USING unnest(\(deletes.map(\.namespace))::text[], \(deletes.map(\.key))::text[],
                      \(deletes.map(\.seq))::int8[]) AS u(namespace, key, seq)
                    WHERE s.namespace = u.namespace AND s.key = u.key AND s.seq < u.seq
                    """, logger: logger)
            }
        }
    }

    struct StoreKey: Hashable {
        var namespace: String
        var key: String
    }

    /// Forwards as the columns of one `INSERT … SELECT FROM unnest(…)`.
    struct Forwards {
        var events: [String] = []
        var rules: [String] = []
        var methods: [String] = []
        var urls: [String] = []
        var headers: [String] = []
        var bodies: [ByteBuffer] = []
        var destinations: [String] = []

        mutating func append(_ forward: NewDelivery, event: String) {
            events.append(event)
            rules.append(forward.rule)
            methods.append(forward.method)
            urls.append(forward.url)
            headers.append((try? JSONWriter.string(.object(EventJournal.object(forward.headers)))) ?? "{}")
            bodies.append(ByteBuffer(bytes: forward.body))
            destinations.append(Delivery.destination(of: forward.url))
        }
    }

    /// Takes or renews the processing lease. Returns its epoch when this node holds it, nil when another does.
    /// On a connection of its own: a pool busy with requests must never delay the renewal past the lease.
    public func acquireLease() async throws -> Int64? {
        try await onLeaseConnection { connection in try await self.acquireLease(on: connection) }
    }

    /// The lease's own connection, opened on first use and again after a failure or a timeout (a server
    /// that went away can leave a query on it unanswered). One caller at a time (the lease loop; at
    /// shutdown, after it stopped). Gives up after half the lease.
    func onLeaseConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws -> T
    {
        do {
            return try await Deadline.run(.milliseconds(Int64(max(1, lease / 2) * 1000))) { [self] in
                let connection: PostgresConnection
                if let open = leaseConnection.withLock({ $0 }) {
                    connection = open
                } else {
                    connection = try await url.connect(logger: logger)
                    leaseConnection.withLock { $0 = connection }
                }
                return try await body(connection)
            }
        } catch {
            Self.hangUp(
                leaseConnection.withLock { c in
                    defer { c = nil }; return c
                })
            throw error
        }
    }

    func acquireLease(on connection: PostgresConnection) async throws -> Int64? {
        let rows = try await connection.query(
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
        let holder = self.holder
        _ = try? await onLeaseConnection { [logger] connection in
            try await connection.query(
                "UPDATE leases SET expires_at = 0 WHERE name = \(Self.processorLease) AND node = \(holder)",
                logger: logger)
        }
        if let connection = leaseConnection.withLock({ c in
            defer { c = nil }; return c
        }) {
            try? await connection.close()
        }
    }

    // MARK: ticks: one node runs them, the lease holder

    public func claim(rule: String, due: Double, node: String, until: Double) async -> Bool { isProcessing }
    public func release(rule: String, node: String) async {}

    // MARK: nodes

    /// Writes this node's heartbeat (the database answers again: appends stop going straight to the spool).
    public func heartbeat(version: String, rulesHash: String, inFlight: Int, startedAt: Double) async throws {
        try await client.query(
            """
            INSERT INTO nodes (name, holder, version, rules_hash, in_flight, spooled, started_at, heartbeat_at)
            VALUES (\(node), \(holder), \(version), \(rulesHash), \(inFlight), \(spooledCount()), \(startedAt), \(unescaped: Self.now))
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, version = excluded.version,
              rules_hash = excluded.rules_hash, in_flight = excluded.in_flight, spooled = excluded.spooled,
              started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at
            """, logger: logger)
        unreachableUntil.withLock { $0 = nil }
    }

    /// Takes this node off the list (graceful shutdown).
    public func leave() async {
        _ = try? await bounded(5) { [client, node, holder, logger] in
            try await client.query("DELETE FROM nodes WHERE name = \(node) AND holder = \(holder)", logger: logger)
        }
    }

    /// The nodes' heartbeats (within 2 s: `/readyz` and the console ask while the database may be down).
    public func nodes() async throws -> [NodeStatus] {
        try await Deadline.run(.seconds(2), expired: { JournalError("PostgreSQL gave no answer in time") }) {
            [self] in try await Self.nodes(client, lease: lease, logger: logger)
        }
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
            try await parsed.probe(logger: logger)
            return try await Deadline.run(.seconds(10)) { try await Self.nodes(client, lease: lease, logger: logger) }
        } catch {
            throw JournalError("cannot read the nodes from \(parsed.redacted): \(Self.reason(error))")
        }
    }

    // MARK: retention (the lease holder)

    /// Deletes what `--retention` lets go: done events and delivered forwards older than `age` seconds, expired
    /// de-duplication and store keys, nodes silent for a day, and rejected requests older than `age` or past
    /// the newest `rejectedFiles` or `rejectedBytes` of bodies (as each node's `RejectedStore` does with its
    /// files).
    public func prune(olderThan age: Double, rejectedFiles: Int = 1000, rejectedBytes: Int = 100 << 20) async throws {
        let cutoff = Date().timeIntervalSince1970 - age
        for query: PostgresQuery in [
            "DELETE FROM events WHERE done AND done_at < \(cutoff)",
            "DELETE FROM deliveries WHERE state = 'delivered' AND updated_at < \(cutoff)",
            "DELETE FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
            "DELETE FROM dedup WHERE expires_at <= \(unescaped: Self.now)",
            "DELETE FROM store WHERE expires_at IS NOT NULL AND expires_at <= \(unescaped: Self.now)",
            "DELETE FROM nodes WHERE heartbeat_at < \(unescaped: Self.now) - 86400",
            """
            DELETE FROM rejected WHERE received_at < \(cutoff) OR id IN (
              SELECT id FROM (
                SELECT id, row_number() OVER newest AS n, sum(octet_length(body)) OVER newest AS bytes FROM rejected
                WINDOW newest AS (ORDER BY received_at DESC, id DESC)
              ) ranked WHERE n > \(rejectedFiles) OR bytes > \(rejectedBytes))
            """,
        ] {
            try await bounded(60) { [client, logger] in
                for try await _ in try await client.query(query, logger: logger) {}
            }
        }
    }

    // MARK: rejected requests

    /// A copy in the database (best effort, bounded; at most 64 writes under way: a flood of bad requests
    /// during an outage is still kept in the node's files).
    public func shareRejected(meta: String, body: [UInt8]) {
        guard
            rejectedWrites.withLock({ n -> Bool in
                guard n < 64 else { return false }
                n += 1
                return true
            })
        else { return }
        // The time of the rejection, taken here: the writes run concurrently, so the database's clock or the
        // row's id would order requests rejected a moment apart by which write landed first.
        let (node, logger, receivedAt) = (self.node, self.logger, Date().timeIntervalSince1970)
        Task { [self] in
            defer { rejectedWrites.withLock { $0 -= 1 } }
            do {
                _ = try await bounded(5) { [client] in
                    try await client.query(
                        """
                        INSERT INTO rejected (node, received_at, meta, body)
                        VALUES (\(node), \(receivedAt), \(meta), \(ByteBuffer(bytes: body)))
                        """, logger: logger)
                }
            } catch {
                logger.debug("a rejected request was kept in this node's files only: \(Self.reason(error))")
            }
        }
    }

    public func sharedRejected(limit: Int) async throws -> [(meta: String, body: [UInt8])]? {
        try await bounded(5) { [client, logger] in
            var out: [(meta: String, body: [UInt8])] = []
            let rows = try await client.query(
                """
                SELECT (meta::jsonb || jsonb_build_object('node', node))::text, body FROM rejected
                ORDER BY received_at DESC, id DESC LIMIT \(limit)
                """, logger: logger)
            for try await (meta, body) in rows.decode((String, ByteBuffer).self) {
                out.append((meta, Array(buffer: body)))
            }
            return out
        }
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

/// The events the processing node's feed has handed to its engine in this term, so that a query that still
/// sees one as not done does not run it again.
///
/// An event stays here after its done mark commits, until the feed's next query begins (`releaseSettled`):
/// only a query that starts after the commit is sure to see it done. Forgetting it at the commit ran events
/// twice: a backlog page read while an event's mark was queued still listed it, the mark committed while the
/// feed worked through the page (each submit may wait for a slot), and the feed, finding the id gone, ran the
/// event again (the cluster test saw 4 and 6 extra runs after a database outage, each with its call's state
/// already written by the first run).
struct DispatchedEvents {
    /// Handed to the engine, and not yet known done to a query.
    private(set) var ids: Set<String> = []
    /// Done marks committed since the last query began.
    var settled: [String] = []

    /// Records `id` as handed to the engine; false when it was already (the feed then skips it).
    mutating func insert(_ id: String) -> Bool { ids.insert(id).inserted }

    mutating func releaseSettled() {
        for id in settled { ids.remove(id) }
        settled.removeAll(keepingCapacity: true)
    }
}
