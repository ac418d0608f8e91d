import CSQLiteTuning
public import Foundation
import GRDB
public import RuleEngine
import Synchronization

/// The durable record of accepted events, in `<data dir>/switchboard.sqlite` (SQLite, WAL).
///
/// An event is written before its 200 is sent — requests arriving together share one transaction (group
/// commit) — and marked done once every matching rule has finished. On start, events never marked done are
/// run again: rule runs are at-least-once, and `event.meta.id` is the same on every run.
///
/// The same file holds the outbox (see `EventJournal+Deliveries.swift`): the forwards of an event's rules
/// are written in the transaction that marks the event done, so an event is never done without them.
public final class EventJournal: EventJournaling, DeliveryQueue, Sendable {
    /// One accepted request, as needed to decode it again.
    public typealias Entry = AcceptedEvent

    let pool: DatabasePool
    public let path: String
    /// The data directory: the journal's file and the log's (`AcceptedLog`), whose records hold the bodies of the
    /// events the log took in (`RecordReader`).
    let directory: String
    private let pendingAppends = Mutex<[PendingAppend]>([])
    /// Called once the transaction holding an append commits (nil) or fails (the error).
    typealias Committed = @Sendable ((any Error)?) -> Void
    /// An append on its way into SQLite: one a request waits for (`committed`), or one in the log already
    /// (`file`, and where its record is, `location`: its row keeps its body there; its 200 has gone).
    struct PendingAppend {
        var entry: Entry
        var committed: Committed?
        var file = 0
        var location: Int64?
    }
    /// Where requests' events are written before their 200 (`AcceptedLog`): nil with `--journal-fsync`, or when
    /// another journal of the same directory has it; requests then wait for their commit.
    private let log: AcceptedLog?
    /// The log when this journal owns it, `--journal-fsync` or not: it frees the files whose bodies retention
    /// deleted (`keepBooks`), and its files count in the journal's size.
    let bodyFiles: AcceptedLog?
    /// Events in the log and not yet in SQLite.
    private let loggedUncommitted = Atomic(0)
    /// Done marks given and not yet committed.
    private let marksQueued = Atomic(0)
    /// Past this many logged events and done marks not yet in SQLite, a request waits for its commit again
    /// (as with no log): SQLite is behind, and memory is not to grow without bound. (The done marks count as
    /// well: rules run at once, and without this their marks piled up behind a busy writer; peak RSS 94 MB in
    /// the speed table's run of a million events, against 55 MB before the log.)
    package static let loggedLimit = 4_096
    /// Done marks in the order given; a batch is never split across transactions.
    private let pendingDone = Mutex(DoneQueue())
    /// Called after a commit that queued deliveries (the outbox wakes up).
    let deliveryObserver = Mutex<Callback<Void>?>(nil)
    private let writer = Mutex(WriterState())
    /// Copies the write-ahead log into the database beside the writer (`LogCopier`).
    private let logCopier: LogCopier
    /// Staged call-index rows and the merge moving them into the index (`CallIndex.swift`); the writer's.
    private let callIndex = Mutex(CallIndexMerge())
    /// How many appends the last commit held (`AppendGathering`); the writer's.
    private let lastCommitSize = Atomic(0)
    /// Logged appends failed to commit (`WriterState.heldAppends`): until a commit succeeds, requests wait for
    /// their own commit, and get its error.
    private let appendsHeld = Atomic(false)
    /// Set while retention waits for the write connection between two of its batches: the writer's `flush`
    /// then lets it go first (`pruneInBatches`).
    private let writerYield = Atomic(false)
    /// Called with each batch retention commits, before the next one is queued (`onPruneBatch`; tests).
    private let afterPruneBatch = Mutex<(@Sendable (Int) -> Void)?>(nil)
    private let afterAgeSearch = Mutex<(@Sendable () -> Void)?>(nil)
    /// How long done marks that failed wait before they are tried again (appends go on meanwhile).
    static let doneRetryDelay = DispatchTimeInterval.milliseconds(200)

    /// Opens (creating) the journal.
    /// - Parameter fsync: make every commit reach the disk before the 200 (survives power loss, slower).
    ///   Without it a commit reaches the operating system, which survives the process being killed.
    /// - Throws: a message that says what to fix when the directory is missing, read-only or full.
    /// - Parameter maxPages: a cap on the file's size in SQLite pages (4 KiB each), past which writes fail
    ///   as on a full disk. nil: no cap but the disk's.
    /// - Parameter callIndexMerge: the call index's smallest merge, its slice and its largest
    ///   (`CallIndexMerge`; tests).
    /// - Parameter callIndexSweep: the fewest orphaned index entries that start a sweep, and the entries a sweep
    ///   reads a transaction (`CallIndexMerge`; tests).
    /// - Parameter logFileLimit: the size at which a file of the log takes no more records (`AcceptedLog`; tests;
    ///   nil: `AcceptedLog.defaultFileLimit`).
    /// - Parameter cachedTail: how much of the file's end stays in the page cache (`LogCopier`; tests; nil:
    ///   `LogCopier.cachedTail`).
    public init(
        directory: String, fsync: Bool = false, maxPages: Int? = nil, callIndexMerge: (Int, Int, Int)? = nil,
        callIndexSweep: (Int, Int)? = nil, logFileLimit: Int? = nil, cachedTail: Int? = nil
    ) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw JournalError(
                "cannot create the data directory \(directory): a parent is not a directory or is not writable "
                    + "(choose another with --data-dir)")
        }
        Self.tuneSQLite
        self.directory = directory
        path = Self.file(in: directory)
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            configuration.prepareDatabase { db in
                try db.execute(sql: fsync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
                if let maxPages { try db.execute(sql: "PRAGMA max_page_count = \(maxPages)") }
                // Copy the write-ahead log into the database every 4,000 pages (16 MB) rather than SQLite's 1,000:
                // the pages every commit touches (the newest rows, the indexes' ends) are copied and synced once
                // per checkpoint, so fewer checkpoints is less work per event (BENCHMARKS.md).
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.checkpointPages)")
                // The log's file keeps the size it grew to: past 16 MB when checkpoints fall behind the writer
                // (about 60 MB under `wrk -t1 -c32`), and to hundreds of MB behind a long transaction. When the log
                // starts over, SQLite cuts the file back to this; below it, the file is written over in place,
                // which costs less than growing it again.
                try db.execute(sql: "PRAGMA journal_size_limit = \(Self.logSizeLimit)")
                // SQLite keeps a statement's undo records (the statement journal) in a temporary file once they
                // pass 64 KiB; a transaction of hundreds of done records passes it, and wrote about 2 KB per
                // event to files in /var/tmp (`perf trace`). In memory they are a copy, and never reach a disk.
                try db.execute(sql: "PRAGMA temp_store = MEMORY")
            }
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.write { db in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS events (
                          id TEXT PRIMARY KEY,
                          received_at REAL NOT NULL,
                          hook TEXT,
                          format TEXT NOT NULL,
                          body BLOB NOT NULL,
                          meta TEXT NOT NULL,
                          done INTEGER NOT NULL DEFAULT 0,
                          done_at REAL,
                          body_at INTEGER
                        );
                        \(Self.deliverySchema)
                        \(Self.storeSchema)
                        \(Self.logFilesSchema)
                        """)
                try Self.migrateBodyLocations(db)
                try Self.migrateDoneRecords(db)
            }
            let (indexed, staged, newestStaged, batch) = try pool.read { db in
                (
                    try Int.fetchOne(db, sql: "SELECT count(*) FROM call_index") ?? 0,
                    try Int.fetchOne(db, sql: "SELECT count(call_id) + count(other_leg) FROM call_legs_staged") ?? 0,
                    try String.fetchOne(db, sql: "SELECT max(id) FROM call_legs_staged"),
                    max(0, try Self.nextBatch(db) - 1)
                )
            }
            callIndex.withLock { merge in
                merge.indexed = indexed
                merge.batch = batch
                merge.staged = staged
                // An earlier process's retention may have deleted records of rows staged now.
                merge.lastDeleted = newestStaged
                if let callIndexMerge { (merge.minimum, merge.sliceSize, merge.maximum) = callIndexMerge }
                if let callIndexSweep { (merge.sweepMinimum, merge.sweepBatch) = callIndexSweep }
                // Entries an earlier process's retention left without their records are not counted anywhere:
                // one sweep goes along with this process's first batches of retention and finds them. Counted
                // from this process's deletions alone, they would never be half an index that holds them too,
                // and each restart would leave more.
                if indexed > 0 { merge.startSweep(force: true) }
            }
        } catch {
            throw JournalError("cannot open the journal \(path): \(Self.reason(error))")
        }
        // Recovered whenever this journal can own the log, `--journal-fsync` or not: a run without it may have
        // left events there. Used only without it.
        let log = AcceptedLog(directory: directory, fileLimit: logFileLimit ?? AcceptedLog.defaultFileLimit)
        if let log { try Self.recover(log, into: pool, path: path) }
        self.log = fsync ? nil : log
        bodyFiles = log
        // With the log requests do not wait for the writer (`LogCopier.everyEventsLogged`).
        logCopier = LogCopier(
            path: path, everyEvents: self.log == nil ? LogCopier.everyEvents : LogCopier.everyEventsLogged,
            cachedTail: cachedTail ?? LogCopier.cachedTail, logFiles: log)
    }

    deinit {
        logCopier.close()
    }

    /// Once per process, before the first database opens: SQLite's memory statistics off. They take a
    /// process-wide mutex around each of SQLite's allocations (Debian's SQLite has no lookaside, so that is
    /// every small one), and nothing here reads them. Journal on, it took 329,082 → 313,735 instructions a
    /// request and 59 → 53 µs of CPU (BENCHMARKS.md). When something opened SQLite first, they stay on,
    /// which changes nothing else.
    private static let tuneSQLite: Void = { _ = sb_sqlite_memstatus_off() }()

    /// Releases the page cache of the log's files complete for `age` seconds or more now, rather than after a
    /// copy of the write-ahead log (`AcceptedLog.releaseCache`; tests).
    package func releaseLogFilesCache(olderThan age: Double) { bodyFiles?.releaseCache(olderThan: age) }

    /// Requests' events go to the log before their 200 (`AcceptedLog`), not to SQLite (for tests).
    package var logsAppends: Bool { log != nil }

    /// Where the part of the file released from the page cache ends (`LogCopier.releaseWrittenPages`; tests).
    package var releasedUpTo: Int { logCopier.releasedUpTo }

    /// The entries the writer counts in the call index (`CallIndexMerge.indexed`; tests).
    package var callIndexEntries: Int { callIndex.withLock { $0.indexed } }

    /// The most legs a call-index merge has read (`CallIndexMerge.largestRead`; tests).
    package var largestCallIndexMerge: Int { callIndex.withLock { $0.largestRead } }

    /// Logged events failed to commit, and wait to be tried again (for tests).
    package var appendsWaitAfterFailure: Bool { appendsHeld.load(ordering: .relaxed) }

    /// Done marks that failed to commit are waiting to be tried again (for tests).
    package var doneMarksWaitAfterFailure: Bool { writer.withLock { $0.marksWait } }

    /// Done marks carry what the rules did; the console reads it back (`EventJournal+Console.swift`).
    public var keepsEventRecords: Bool { true }

    /// Writes the entry durably; returns once it is committed. Concurrent calls share a transaction.
    public func append(_ entry: Entry) async throws {
        // Resumed by the flush once the transaction holding this entry commits (or fails). The queues
        // are Mutex-guarded and drained whole by the one flush at a time, so no entry is lost or written twice.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue(entry) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// One node keeps its de-duplication keys in memory, so an append here is never a repeat.
    ///
    /// With the log (`AcceptedLog`), `completion` is called before this returns, once the event's record is
    /// written: the 200 does not wait for SQLite. Without it, or while SQLite is behind or failing, it is
    /// called from the writer once the event's transaction commits.
    public func append(
        _ event: AcceptedEvent, duplicateKey: String?, window: Double,
        completion: @escaping @Sendable (Result<Bool, any Error>) -> Void
    ) {
        if let log,
            loggedUncommitted.load(ordering: .relaxed) + marksQueued.load(ordering: .relaxed) < Self.loggedLimit,
            !appendsHeld.load(ordering: .relaxed)
        {
            let written: (file: Int, location: Int64)
            do { written = try log.write(event) } catch { return completion(.failure(error)) }
            loggedUncommitted.add(1, ordering: .relaxed)
            pendingAppends.withLock {
                $0.append(PendingAppend(entry: event, file: written.file, location: written.location))
            }
            scheduleFlush()
            return completion(.success(true))
        }
        queue(event) { error in completion(error.map { .failure($0) } ?? .success(true)) }
    }

    private func queue(_ entry: Entry, committed: @escaping Committed) {
        pendingAppends.withLock { $0.append(PendingAppend(entry: entry, committed: committed)) }
        scheduleFlush()
    }

    /// Marks events done, puts their rules' forwards in the outbox and applies their store writes, in one
    /// transaction (batched with others, after every batch given before; a crash before it lands only means
    /// the events run again).
    ///
    /// The writer is started only once the marks are due (`DoneQueue`); until then an idle writer gets a
    /// wake-up for when they will be, armed here without starting it. (Starting it for each mark, to find
    /// nothing due and stop again, woke a thread of the writer's queue for every event.)
    public func markDone(_ marks: [DoneMark]) {
        guard !marks.isEmpty else { return }
        marksQueued.add(marks.count, ordering: .relaxed)
        let due = pendingDone.withLock { queue -> UInt64? in
            queue.append(marks)
            return queue.due()
        }
        if due == 0 { return scheduleFlush() }
        // A running flush checks the marks under this lock before it stops, and arms the wake-up itself.
        if let wake = writer.withLock({ $0.running ? nil : $0.claimWake(due) }) { armWake(after: wake) }
    }

    /// Retention by size: deletes the oldest done events and delivered forwards until the pages in use and the
    /// log's files kept fit in `maxBytes` (`bytesInUse`; the file then stops growing: SQLite reuses the freed
    /// pages, and the log its freed files). Pending events, pending
    /// forwards and dead letters are never deleted, so the file can still pass the cap when they alone do.
    /// Deletes in batches, a transaction each (`pruneInBatches`). Returns how many rows went.
    ///
    /// A batch that finds more pages in use than the one before it (appends outrun the deletions) makes the
    /// next ones twice as large, up to `pruneBatchMost`. Under `wrk -t1 -c32` (33,000 events a second) batches of
    /// 500 took 7.1 ms in the median, and the writer's turn between two 4.7 ms, about 26,000 events a second:
    /// the file grew past the cap as long as the load lasted.
    @discardableResult
    public func prune(toFit maxBytes: Int) throws -> Int {
        var limit = Self.pruneBatch
        var inUseBefore = Int.max
        return try pruneInBatches(closingLogFiles: false) { db, bound, books in
            let inUse = try bytesInUse(db)
            guard inUse > maxBytes else { return 0 }
            if inUse >= inUseBefore { limit = min(2 * limit, Self.pruneBatchMost) }
            inUseBefore = inUse
            // The oldest finished events first (an id starts with its arrival time), then their records.
            return try deleteBatch(
                events: .query(
                    "SELECT id FROM events_done WHERE done_at <= ?\(bound.condition) ORDER BY id LIMIT \(limit)",
                    [bound.doneBefore]),
                deliveries: .query(
                    "SELECT id FROM deliveries WHERE state = 'delivered' ORDER BY id LIMIT \(limit)", []),
                books: &books, in: db)
        }
    }

    /// The bytes of the journal's pages in use (its file's size less the pages SQLite freed and will reuse), and
    /// of the log's files kept (the bodies of the events it took in, and the files written to): what
    /// `--journal-max-mb` caps.
    public func bytesInUse() throws -> Int { try pool.read { try bytesInUse($0) } }

    private func bytesInUse(_ db: Database) throws -> Int {
        let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
        let free = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
        return (pages - free) * (try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096) + (bodyFiles?.bytesHeld ?? 0)
    }

    /// Sets what is called with the rows each batch of retention deleted, once it committed (tests).
    package func onPruneBatch(_ observer: (@Sendable (Int) -> Void)?) { afterPruneBatch.withLock { $0 = observer } }

    /// Sets what is called after each search of the age rule, before the batch that deletes what it found
    /// (tests).
    package func onAgeSearch(_ observer: (@Sendable () -> Void)?) { afterAgeSearch.withLock { $0 = observer } }

    /// Rows retention deletes in one transaction (of events, and again of forwards).
    package static let pruneBatch = 500
    /// The most, when deletions fall behind the appends (`prune(toFit:)`): with the accepted-event log no
    /// request waits for the writer meanwhile, until `loggedLimit` events wait for SQLite.
    package static let pruneBatchMost = 2_000

    /// Runs `batch` in a transaction of its own until it deletes nothing; returns how many rows went in all.
    ///
    /// Retention once deleted all it had to in one transaction. The journal's writer shares SQLite's one write
    /// connection, so appends and done marks waited for all of it, and once `loggedLimit` events waited for
    /// SQLite, so did requests: with `--journal-max-mb 250` and retention every 3 s under `wrk -t1 -c32`, a pass
    /// that found the file at 1,149 MB took no event in for about 10 s, a request sent meanwhile got no answer
    /// in 10 s, all 32 of wrk's connections timed out, and the transaction spilled into a write-ahead log of
    /// 906 MB. A webhook sender that sees such timeouts gives up: Kazoo disables a hook after 6 failures in 60 s.
    /// Now each batch is a transaction of at most `pruneBatch` events and as many forwards, and the writer takes
    /// a turn between two (`writerYield`): its `flush` runs turn after turn while work keeps coming, and would
    /// otherwise keep the next batch waiting as long as the load lasts (it takes one turn first, so appends queued
    /// during a batch commit before the next).
    ///
    /// `batch` is given what it may delete (`PruneBound`). Retention by age first closes the lanes' files and
    /// waits until their records are in SQLite (`closeLogFiles`), so that however slowly the lanes fill, what it
    /// is to delete is deletable; retention by size does not, or at its cap every pass would start new files,
    /// one per few events on a quiet server.
    /// `find`, when given, runs before each batch, outside its transaction; the pass ends when it returns false.
    /// `batch` notes what it changed in the log's books in its last argument (`keepBooks`).
    private func pruneInBatches(
        closingLogFiles: Bool,
        find: (PruneBound) throws -> Bool = { _ in true },
        _ batch: (Database, PruneBound, inout OpenBooks) throws -> Int
    ) throws -> Int {
        let now = Date().timeIntervalSince1970
        if closingLogFiles { closeLogFiles() }
        let bound = PruneBound(now: now, oldestIncomplete: log?.oldestIncomplete, owner: bodyFiles != nil)
        return try inBatches(
            before: { try find(bound) },
            { db, books in
                // The files just complete are marked so first: the batch's selection may check them.
                books.add(try keepBooks(in: db))
                let deleted = try batch(db, bound, &books)
                if deleted > 0 {
                    // A slice of the call index's sweep, under way or due now, with each batch: four entries read for
                    // each row the batch deleted (it left about two orphans each), so that a sweep of the whole index
                    // ends before as many orphans again have gathered.
                    let minimum = callIndex.withLock { merge in
                        merge.startSweep()
                        return merge.sweepBatch
                    }
                    _ = try sweepSlice(entries: max(minimum, 4 * deleted), in: db)
                }
                return deleted
            }
        ) { deleted in
            afterPruneBatch.withLock { $0 }?(deleted)
        }
    }

    /// What one pass of retention may delete: events done before `doneBefore` (when it began), and of those whose
    /// bodies are in the log's files, only those whose files are complete: otherwise the next start would read
    /// the file again and put the event back, to run again.
    ///
    /// An event is done after its record was written, so one done before the oldest file not yet complete was
    /// opened (`AcceptedLog.oldestIncomplete`) is in a file complete by then, or in none: while that file is
    /// younger than `recentFile` (under load, each lane moves to a new file every fraction of a second), the pass
    /// deletes only events done before it, and needs no other check. Otherwise (a lane that fills slowly, or a
    /// journal that does not own the log and so does not know which files are being written) the selection
    /// checks each event's file in the books (`condition`), which the batch brings up to date first. Either way
    /// the batch marks the files complete in its own transaction, before its deletions commit (`keepBooks`).
    struct PruneBound {
        var doneBefore: Double
        var checkingFiles: Bool

        static let recentFile = 5.0

        init(now: Double, oldestIncomplete: Double?, owner: Bool) {
            if owner, oldestIncomplete.map({ now - $0 < Self.recentFile }) ?? true {
                (doneBefore, checkingFiles) = (min(now, oldestIncomplete ?? now), false)
            } else {
                (doneBefore, checkingFiles) = (now, true)
            }
        }

        /// A condition on `events_done` (its `id`) for the selection, when it checks files.
        var condition: String {
            guard checkingFiles else { return "" }
            return """
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = events_done.id AND e.body_at IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM log_files f WHERE f.number = e.body_at >> 32 AND f.complete))
                """
        }
    }

    /// Runs `batch` in a transaction of its own, the writer taking a turn between two (`writerYield`), until it
    /// returns 0 or `before` (run ahead of each, outside the transaction) returns false; `each` is given what each
    /// other one returned. Returns their sum. What a batch changed in the log's books is settled after its
    /// transaction, whether it committed or not (`settleBooks`).
    private func inBatches(
        before: () throws -> Bool = { true }, _ batch: (Database, inout OpenBooks) throws -> Int,
        each: (Int) -> Void = { _ in }
    ) throws -> Int {
        // Also when a batch fails before its block ran (the writer would otherwise step aside after every turn).
        defer { writerYield.store(false, ordering: .relaxed) }
        var total = 0
        while try before() {
            writerYield.store(true, ordering: .relaxed)
            let done = try settlingBooks { books in
                try pool.write { db -> Int in
                    writerYield.store(false, ordering: .relaxed)
                    return try batch(db, &books)
                }
            }
            guard done > 0 else { return total }
            total += done
            each(done)
        }
        return total
    }

    /// Sweeps the call index now, whether a sweep is due or not: its entries whose records are gone, from its
    /// first entry (or from where the sweep under way stopped) to its end (retention's sweeps go a slice with
    /// each of its batches; tests). Returns how many went.
    @discardableResult
    package func sweepCallIndex() throws -> Int {
        callIndex.withLock { $0.startSweep(force: true) }
        var removed = 0
        _ = try inBatches { db, _ in
            let (deleted, more) = try sweepSlice(entries: callIndex.withLock { $0.sweepBatch }, in: db)
            removed += deleted
            return more ? 1 : 0
        }
        return removed
    }

    /// Reads up to `entries` of the call index's entries after where the sweep under way stopped, in key order,
    /// and deletes those whose records are gone, in the caller's transaction. Returns how many it deleted, and
    /// whether the sweep goes on (false at the index's end, and when none is under way).
    private func sweepSlice(entries: Int, in db: Database) throws -> (deleted: Int, more: Bool) {
        guard let (after, lastDeleted) = callIndex.withLock({ m in m.sweepFrom.map { ($0, m.lastDeleted) } }) else {
            return (0, false)
        }
        // An entry whose record retention deleted has an id at or before the last one it deleted (until this
        // process deletes one, the newest staged at open, or any id when none was): later ones are not looked up.
        let orphaned =
            "(?7 IS NULL OR id <= ?7) AND NOT EXISTS (SELECT 1 FROM events_done d WHERE d.id = call_index.id)"
        // Through SQLite's C API, not GRDB's values: a leg may hold a NUL byte, where GRDB would cut the cursor
        // short, and the next slice would start before this one again (`DirectStatement.text`).
        let select = DirectStatement(
            try db.cachedStatement(
                sql: """
                    SELECT batch, leg, id FROM call_index WHERE (batch, leg, id) > (?1, ?2, ?3)
                    ORDER BY batch, leg, id LIMIT 1 OFFSET ?4
                    """),
            in: db)
        try select.bind(1, Int(after.batch))
        try select.bind(2, after.leg)
        try select.bind(3, after.id)
        try select.bind(4, entries - 1)
        let last: CallIndexMerge.Entry? =
            try select.step { row in
                row.text(1).flatMap { leg in
                    row.text(2).map { CallIndexMerge.Entry(batch: row.integer(0), leg: leg, id: $0) }
                }
            } ?? nil
        if let last, !after.precedes(last) {
            // A slice that would start where this one did (a cursor read back otherwise than SQLite orders it)
            // ends the sweep rather than reading the same entries with every batch from now on.
            callIndex.withLock { $0.swept(0, through: nil) }
            return (0, false)
        }
        let delete = DirectStatement(
            try db.cachedStatement(
                sql: last == nil
                    ? "DELETE FROM call_index WHERE (batch, leg, id) > (?1, ?2, ?3) AND \(orphaned)"
                    : """
                    DELETE FROM call_index WHERE (batch, leg, id) > (?1, ?2, ?3) AND (batch, leg, id) <= (?4, ?5, ?6)
                    AND \(orphaned)
                    """),
            in: db)
        try delete.bind(1, Int(after.batch))
        try delete.bind(2, after.leg)
        try delete.bind(3, after.id)
        if let last {
            try delete.bind(4, Int(last.batch))
            try delete.bind(5, last.leg)
            try delete.bind(6, last.id)
        }
        try delete.bind(7, lastDeleted)
        try delete.step()
        let deleted = db.changesCount
        // At the sweep's end, the batches it left empty go from the list that lookups seek into.
        if last == nil {
            try db.execute(
                sql: """
                    DELETE FROM call_batches
                    WHERE NOT EXISTS (SELECT 1 FROM call_index i WHERE i.batch = call_batches.batch)
                    """)
        }
        callIndex.withLock { $0.swept(deleted, through: last) }
        return (deleted, last != nil)
    }

    /// The rows one batch of retention deletes: those a query selects (ids; with its arguments), or ids found
    /// before the batch's transaction, each kept only if `check` (a query whose last parameter is the id, after
    /// `arguments`) still selects it: a row may have changed since (an operator's `redeliver` puts a delivered
    /// forward back to pending).
    enum PruneSelection {
        case query(String, StatementArguments)
        case found([any DatabaseValueConvertible & Sendable], check: String, arguments: StatementArguments)
    }

    /// One batch of retention: the done events `events` selects, their call-index entries and records, and the
    /// forwards `deliveries` selects with their attempts; what it changed in the log's books goes into `books`.
    /// Returns how many events and forwards went.
    private func deleteBatch(
        events: PruneSelection, deliveries: PruneSelection, books: inout OpenBooks, in db: Database
    ) throws -> Int {
        // Each batch's ids once, into a temporary table, rather than its query once per statement: `events_done`
        // and `deliveries` are read in id order and filtered, and each reading would pass the same rows. (No
        // type on the column: it holds the events' text ids, then the forwards' integer ones, as they are.)
        try db.execute(sql: "CREATE TEMP TABLE IF NOT EXISTS pruning (id PRIMARY KEY) WITHOUT ROWID")
        func select(_ selection: PruneSelection) throws {
            try db.execute(sql: "DELETE FROM pruning")
            switch selection {
            case .query(let query, let arguments):
                try db.execute(sql: "INSERT INTO pruning (id) \(query)", arguments: arguments)
            case .found(let ids, let check, let arguments):
                let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO pruning (id) \(check)")
                for id in ids { try insert.execute(arguments: arguments + [id]) }
            }
        }
        try select(events)
        // The records' legs stay in the call index until a sweep (`sweepSlice`), and the merges check legs at
        // or before the last id deleted (`CallIndexMerge`): both noted in this transaction, before any writer turn
        // can follow it.
        if let row = try Row.fetchOne(
            db,
            sql: """
                SELECT max(id), (SELECT count(call_id) + count(other_leg) FROM events_done
                                 WHERE id IN (SELECT id FROM pruning)) FROM pruning
                """),
            let last = row[0] as String?
        {
            let legs = row[1] as Int? ?? 0
            callIndex.withLock { $0.deleted(through: last, legs: legs) }
        }
        // The events, and for the books of the log's files, where the bodies of those the log took in were.
        var removed = 0
        var bodiesRemoved: [Int: Int] = [:]
        for location in try Int64?.fetchAll(
            db, sql: "DELETE FROM events WHERE id IN (SELECT id FROM pruning) RETURNING body_at")
        {
            removed += 1
            if let location { bodiesRemoved[Int(location >> 32), default: 0] += 1 }
        }
        // The log's files the events were in are complete by now (`pruneInBatches`), and marked so here, before
        // the deletions commit.
        books.add(try keepBooks(removed: bodiesRemoved, in: db))
        try db.execute(sql: "DELETE FROM events_done WHERE id IN (SELECT id FROM pruning)")
        // A done record whose event had gone already counts too: it went now.
        removed = max(removed, db.changesCount)
        try select(deliveries)
        try db.execute(sql: "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM pruning)")
        try db.execute(sql: "DELETE FROM deliveries WHERE id IN (SELECT id FROM pruning)")
        removed += db.changesCount
        try db.execute(sql: "DELETE FROM pruning")
        return removed
    }

    /// Before retention deletes events, which must not come back from the log at the next start: the log's files
    /// closed, and complete once their records are in SQLite, which this waits for (a turn of the writer, a few
    /// milliseconds; up to a second, after which SQLite is failing and so would the deletion).
    private func closeLogFiles() {
        guard let log else { return }
        log.closeFiles()
        let deadline = ContinuousClock.now + .seconds(1)
        while log.closedFilesRemain, ContinuousClock.now < deadline { usleep(1_000) }
    }

    /// Waits (up to `limit`) until everything queued is committed: at shutdown, so finished events are not
    /// run again needlessly at the next start.
    public func drain(limit: Duration = .seconds(5)) async {
        let deadline = ContinuousClock.now + limit
        // Done marks gathered for a larger commit go now.
        pendingDone.withLock { $0.urgent = true }
        defer { pendingDone.withLock { $0.urgent = false } }
        scheduleFlush()
        while ContinuousClock.now < deadline {
            let idle =
                !writer.withLock { $0.running || !$0.heldAppends.isEmpty } && pendingAppends.withLock { $0.isEmpty }
                && pendingDone.withLock { $0.marks.isEmpty } && !callIndex.withLock { $0.busy }
            if idle {
                log?.closeFiles()
                // The books learn which files the lanes just closed are complete, so the next start does not
                // read them again (if this fails, it reads them, and finds their events there already; what it
                // took from the log goes back to it).
                let taken = Mutex(OpenBooks())
                do {
                    try await pool.write { db in
                        let books = try self.keepBooks(in: db)
                        taken.withLock { $0 = books }
                    }
                    settleBooks(taken.withLock { $0 }, committed: true)
                } catch {
                    settleBooks(taken.withLock { $0 }, committed: false)
                }
                return
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Events accepted but not finished, oldest first: those without a done record. It runs at start, and
    /// looks for them along the events' id index, not their rows (bodies and all): 0.14 s for 500,000 events
    /// (`sqlite3`), against 0.30 s for a scan of the table.
    public func unfinished() throws -> [Entry] {
        try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, received_at, hook, format, body, body_at, meta FROM events WHERE id IN (
                      SELECT id FROM events e WHERE NOT EXISTS (SELECT 1 FROM events_done d WHERE d.id = e.id))
                    ORDER BY received_at
                    """
            )
            .map(entries())
        }
    }

    /// A page of accepted events (done or not) received in `[since, until)`, in the order they were accepted
    /// (the table's row order: one index walk, no sort), after the row `cursor` (0 to start), for `switchboard
    /// replay`. Returns the page and the cursor for the next one; an empty page is the end.
    public func accepted(after cursor: Int64, since: Double = 0, until: Double = .greatestFiniteMagnitude, limit: Int)
        throws -> (entries: [Entry], cursor: Int64)
    {
        let rows = try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT rowid, id, received_at, hook, format, body, body_at, meta FROM events
                    WHERE rowid > ? AND received_at >= ? AND received_at < ? ORDER BY rowid LIMIT ?
                    """, arguments: [cursor, since, until, limit])
        }
        return (rows.map(entries()), rows.last?["rowid"] ?? cursor)
    }

    /// Reads rows (`id`, `received_at`, `hook`, `format`, `body`, `body_at`, `meta`) as entries, each file of the
    /// log opened once for all of them.
    func entries() -> (Row) -> Entry {
        let reader = RecordReader(directory: directory)
        return { row in
            Entry(
                id: row["id"], receivedAt: row["received_at"], hook: row["hook"], format: row["format"],
                body: Self.body(of: row, reading: reader), meta: row["meta"])
        }
    }

    /// A row's body: its own, or its record's in the log (`body_at`). Empty when that record is gone: its file
    /// was deleted by hand, or freed since the row was read (retention deleted the event meanwhile).
    static func body(of row: Row, reading reader: RecordReader) -> [UInt8] {
        if let location = row["body_at"] as Int64? {
            return reader.entry(at: location, id: row["id"])?.body ?? []
        }
        return [UInt8]((row["body"] as Data?) ?? Data())
    }

    /// Counts by state, for metrics and tests.
    public func counts() throws -> (pending: Int, done: Int) {
        try pool.read { db in
            let done = try Int.fetchOne(db, sql: "SELECT count(*) FROM events_done") ?? 0
            let pending = (try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0) - done
            // Those in the log and not yet in SQLite too (an event committed between the two reads counts twice).
            return (pending + loggedUncommitted.load(ordering: .relaxed), done)
        }
    }

    /// Pages of write-ahead log after which a commit copies them into the database (SQLite's default: 1,000).
    static let checkpointPages = 4_000
    /// The write-ahead log's file is cut back to this many bytes when the log starts over (`journal_size_limit`).
    static let logSizeLimit = 64 << 20

    /// The journal's file in a data directory.
    public static func file(in directory: String) -> String {
        (directory as NSString).appendingPathComponent("switchboard.sqlite")
    }

    /// Retention: deletes done events and delivered forwards (with their attempts) older than `age`.
    /// Pending events and deliveries, and dead letters, are kept. Deletes in batches, a transaction each
    /// (`pruneInBatches`). Returns how many rows went.
    @discardableResult
    public func prune(olderThan age: TimeInterval) throws -> Int {
        let cutoff = Date().timeIntervalSince1970 - age
        // What is old enough is looked for on a reader, beside the writer, and only its deletion takes the
        // writer. `done_at` has no index (it would cost every done record a write), so the query reads rows in id
        // order until it has found a batch: while nothing is that old (a journal kept at its cap under load),
        // every row of both tables. In the batch's transaction that held the writer for the whole of it: 42 ms
        // for 264,000 events in the page cache, 282 ms read from the disk (`sqlite3`, a journal of 527 MB), with
        // appends waiting behind it, and requests once `loggedLimit` of them did.
        // What "old enough" is, once for the search and for the batch's check of each id it found.
        let oldEvents = "SELECT id FROM events_done WHERE done_at < ?"
        let oldForwards = "SELECT id FROM deliveries WHERE state = 'delivered' AND updated_at < ?"
        var found: (events: [String], deliveries: [Int64]) = ([], [])
        return try pruneInBatches(
            closingLogFiles: true,
            find: { bound in
                found = try pool.read { db in
                    let events = try String.fetchAll(
                        db,
                        sql: "\(oldEvents) AND done_at <= ?\(bound.condition) ORDER BY id LIMIT \(Self.pruneBatch)",
                        arguments: [cutoff, bound.doneBefore])
                    let deliveries = try Int64.fetchAll(
                        db, sql: "\(oldForwards) ORDER BY id LIMIT \(Self.pruneBatch)", arguments: [cutoff])
                    return (events, deliveries)
                }
                afterAgeSearch.withLock { $0 }?()
                return !found.events.isEmpty || !found.deliveries.isEmpty
            }
        ) { db, bound, books in
            try deleteBatch(
                events: .found(found.events, check: "\(oldEvents)\(bound.condition) AND id = ?", arguments: [cutoff]),
                deliveries: .found(found.deliveries, check: "\(oldForwards) AND id = ?", arguments: [cutoff]),
                books: &books, in: db)
        }
    }

    /// Done marks waiting for the writer, and since when the oldest has waited.
    ///
    /// Done marks are not written as they come but gathered, for `maxWait` after the first or until `batch`
    /// of them (or at once when the journal is drained). Every commit writes each page it changed to the log
    /// in full, and a transaction of a few done records changes about as many pages as one of hundreds (the
    /// last leaf of `events_done` and of its indexes, the header page): in a replay of the journal's schema
    /// with SQLite (BENCHMARKS.md), appends and done records 11 per commit wrote 2.09 log frames per
    /// event, and done records 50 per commit 1.29, 200 per commit 1.08. Larger commits hold the appends up
    /// longer, which mattered while requests waited for their commit: under `wrk -t1 -c32`, 512 marks or 20 ms
    /// answered 1% of requests after 11.6–13.1 ms, 128 or 10 ms after 9.4–11.4 ms, for about the same bytes
    /// written per request (7,363 and 7,448). With the accepted-event log no request waits for the writer, and
    /// 512 (still 10 ms at most) against 128, two runs of `JOURNAL=on scripts/compare_ingest.sh` (5 rounds of
    /// 8 s, 8 of 5 s): 34,693 → 36,112 and 33,555 → 34,619 req/s, server CPU 41 → 39 and 42 → 41 µs a request,
    /// 4,702 → 4,617 and 4,711 → 4,622 bytes written a request, the 99th percentile 27.2 → 32.6 and 23.0 →
    /// 15.2 ms. What it costs: forwards reach the outbox, and the console shows an event done, up to `maxWait`
    /// later (under that load about 10 ms rather than the 4 ms 128 marks took to gather), and a crash in that
    /// window runs the events again, as it would have done a few milliseconds earlier (rule runs are
    /// at-least-once either way). No request waits for a done mark.
    package struct DoneQueue {
        package static let batch = 512
        package static let maxWait: UInt64 = 10_000_000
        package private(set) var marks: [DoneMark] = []
        /// `DispatchTime`'s uptime in nanoseconds when the oldest mark was queued.
        private var since: UInt64 = 0
        /// Set while the journal is drained: marks go at once.
        package var urgent = false
        private let now: @Sendable () -> UInt64

        /// - Parameter now: the clock, in nanoseconds (tests pass their own).
        package init(now: @escaping @Sendable () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) {
            self.now = now
        }

        package mutating func append(_ more: [DoneMark]) {
            if marks.isEmpty { since = now() }
            marks.append(contentsOf: more)
        }

        /// Marks that failed to commit go back to the front, still the oldest.
        package mutating func putBack(_ failed: [DoneMark]) {
            if marks.isEmpty { since = now() }
            marks.insert(contentsOf: failed, at: 0)
        }

        /// Nanoseconds until the marks are due: 0 when they are, nil when there are none.
        package func due() -> UInt64? {
            guard !marks.isEmpty else { return nil }
            if urgent || marks.count >= Self.batch { return 0 }
            let waited = now() &- since
            return waited >= Self.maxWait ? 0 : Self.maxWait - waited
        }

        /// Every mark queued, once they are due; none before.
        package mutating func take() -> [DoneMark] {
            guard due() == 0 else { return [] }
            defer { marks.removeAll(keepingCapacity: true) }
            return marks
        }
    }

    /// Under load, the writer waits a moment for more appends before it commits a few.
    ///
    /// Every commit writes to the log each page it changed, whole: besides the new rows' pages, the header page
    /// (the file grew), the table's rightmost interior page, the id index's last leaf and the last leaf again,
    /// about 4 pages whatever the commit holds (read from the log's frames under `wrk -t1 -c32`). Commits of 5 or
    /// 6 events, what the writer gathered by itself, spent more on those pages than on the events. After a
    /// commit of two or more, which says requests are arriving together, a commit of fewer than `target`
    /// sleeps `microseconds` (at least) first. On a quiet server only the first request after a burst is held
    /// (the commit before it held several); those after it follow a commit of one. Under `wrk -t1
    /// -c32` (`JOURNAL=on ROUNDS=5 DURATION=8 scripts/compare_ingest.sh`, BENCHMARKS.md), 50 µs and 16: the
    /// same requests a second (35,988 → 36,332), 7,506 → 6,449 bytes written a request, its 99th percentile
    /// 11.3 → 6.5 ms (fewer, larger commits: fewer checkpoints and call-index merges an event). A longer wait
    /// saves more (150 µs and 24: 6,196 bytes, 37 → 33 µs of CPU a request) but costs requests a second here
    /// (34,997): each request waits for it, and this benchmark keeps only 32 requests in flight.
    package enum AppendGathering {
        package static let target = 16
        package static let microseconds: UInt32 = 50
        /// With the log, when no request waits for the appends queued (`turn`), fewer than `loggedTarget` wait
        /// `loggedMicroseconds` for more: a commit then costs only the rows' own pages, and the delay holds up
        /// nothing but the console's view of the newest events. Against 1 ms: the same requests a second and CPU
        /// a request, 5,271 → 4,719 bytes written a request (`compare_ingest.sh`, 5 rounds).
        package static let loggedTarget = 128
        package static let loggedMicroseconds: UInt32 = 4_000

        /// Whether a turn finding `pending` appends, after a commit of `lastCommit`, waits before it takes them.
        package static func waits(pending: Int, lastCommit: Int) -> Bool {
            lastCommit >= 2 && pending > 0 && pending < target
        }
    }

    /// The writer's side of the queues.
    private struct WriterState {
        /// A flush is queued on, or running on, the database's writer queue (one at a time).
        var running = false
        /// Done marks failed (a full disk, say): they wait until the flush scheduled `doneRetryDelay` later.
        var marksWait = false
        /// A flush is scheduled for when the done marks waiting will be due.
        var wakeArmed = false
        /// Logged appends whose commit failed: they go back to the queue's front `doneRetryDelay` later. Done
        /// marks wait while there are any (their events may be among them).
        var heldAppends: [PendingAppend] = []

        /// Done marks may be committed: none failed just now, and no event is held out of SQLite.
        var marksMayGo: Bool { !marksWait && heldAppends.isEmpty }

        /// Takes the one wake-up for done marks due in `due` nanoseconds: nil when there are none, or when a
        /// wake-up is armed already; otherwise `due`, for the caller to arm (`armWake`).
        mutating func claimWake(_ due: UInt64?) -> UInt64? {
            guard let due, !wakeArmed else { return nil }
            wakeArmed = true
            return due
        }
    }

    /// Starts a flush on the database's writer queue unless one is queued or running: it takes turns until
    /// nothing is left. It runs there directly, as a plain block: no task of its own and no hop between
    /// executors per turn, so the thread that commits a batch is the one that answers its requests.
    private func scheduleFlush() {
        let start = writer.withLock { state -> Bool in
            if state.running { return false }
            state.running = true
            return true
        }
        if start { pool.asyncWriteWithoutTransaction { [self] db in flush(db) } }
    }

    /// Turns while there is work: appends, or done marks that are due and not waiting after a failure. The
    /// check is made under the writer's lock before it stops, so work queued while it was finishing is never
    /// left behind; done marks not yet due get a wake-up when they will be (one armed at a time).
    private func flush(_ db: Database) {
        while true {
            let (stop, wake) = writer.withLock { state -> (Bool, UInt64?) in
                let due = state.marksMayGo ? pendingDone.withLock { $0.due() } : nil
                if pendingAppends.withLock({ !$0.isEmpty }) || due == 0 || callIndex.withLock({ $0.nextStep != nil }) {
                    return (false, nil)
                }
                state.running = false
                return (true, state.claimWake(due))
            }
            if let wake { armWake(after: wake) }
            if stop { return }
            turn(db)
            if writerYield.load(ordering: .relaxed) {
                // Retention is waiting for the connection (`pruneInBatches`): after this turn, the flush goes on
                // behind its batch (the writer's queue runs blocks in order), and stays `running` meanwhile.
                pool.asyncWriteWithoutTransaction { [self] db in flush(db) }
                return
            }
        }
    }

    /// Starts a flush `nanoseconds` from now; the caller has set `wakeArmed` (one wake-up armed at a time).
    private func armWake(after nanoseconds: UInt64) {
        flush(after: .nanoseconds(Int(nanoseconds))) { $0.wakeArmed = false }
    }

    /// `delay` from now, changes the writer's state under its lock, then starts a flush: the wake-up for done
    /// marks, and the retries after a failed commit of done marks or of logged appends.
    private func flush(
        after delay: DispatchTimeInterval, _ change: @escaping @Sendable (inout WriterState) -> Void
    ) {
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [self] in
            writer.withLock { change(&$0) }
            scheduleFlush()
        }
    }

    /// Every append queued now in one transaction, answered as soon as it commits; and the writer's other work
    /// (`otherWork`): one step of a call-index merge, and the done marks once they are due. What arrives
    /// meanwhile waits for the next turn. The appends go alone: their requests wait for them, and the done marks
    /// (a record per event, forwards, store writes) need not make them wait longer, nor fail them when they
    /// cannot be written.
    ///
    /// When the turn would wait for more appends (`AppendGathering`), it does its other work first instead, if
    /// it has some, and then takes the appends that arrived meanwhile: that work takes longer than the wait,
    /// and the appends gathered as well. Done after the appends, it held up the appends arriving during it by
    /// its whole length and the writer then slept as well: under `wrk -t1 -c32`, in 2 s, 4,816 append commits
    /// (560 ms), 542 done commits (260 ms), 578 merge steps (151 ms) and 3,672 waits of 148 µs each on
    /// average (542 ms: a 50 µs sleep is about three times as long on this machine).
    ///
    /// With the log (`AcceptedLog`) no request waits for logged appends, so the writer waits longer for more of
    /// them (`AppendGathering.loggedTarget`); and an event's rules may finish before its append commits. So the
    /// done marks are taken before the appends: a mark is made after its event was queued, which puts the event
    /// in these appends or in a commit before.
    private func turn(_ db: Database) {
        let (pending, waitedFor) = pendingAppends.withLock { queued in
            (queued.count, queued.contains { $0.committed != nil })
        }
        var otherWorkDone = false
        if log != nil, !waitedFor, pending > 0, pending < AppendGathering.loggedTarget,
            !writerYield.load(ordering: .relaxed)
        {
            // (Not while retention waits for the connection: each of its batches would wait this long too.)
            usleep(AppendGathering.loggedMicroseconds)
        } else if log == nil,
            AppendGathering.waits(pending: pending, lastCommit: lastCommitSize.load(ordering: .relaxed))
        {
            if hasOtherWork {
                otherWork(db, marks: dueMarks())
                otherWorkDone = true
            } else {
                usleep(AppendGathering.microseconds)
            }
        }
        let marks = otherWorkDone ? [] : dueMarks()
        let appends = pendingAppends.withLock { queued -> [PendingAppend] in
            defer { queued.removeAll(keepingCapacity: true) }
            return queued
        }
        if !appends.isEmpty { commit(appends, in: db) }
        if !otherWorkDone { otherWork(db, marks: marks) }
    }

    /// A call-index merge step is waiting, or done marks are due and may go (`WriterState.marksMayGo`).
    private var hasOtherWork: Bool {
        if callIndex.withLock({ $0.nextStep != nil }) { return true }
        return writer.withLock { $0.marksMayGo } && pendingDone.withLock { $0.due() == 0 }
    }

    /// The done marks queued, once they are due and may go (`WriterState.marksMayGo`); none otherwise.
    private func dueMarks() -> [DoneMark] {
        guard writer.withLock({ $0.marksMayGo }) else { return [] }
        return pendingDone.withLock { $0.take() }
    }

    /// One step of a call-index merge at most (the appends never wait on more), then `done` (`dueMarks`). Their
    /// events are committed: before their 200 without the log, and with it, in this turn's appends or before
    /// (`turn`); unless those failed, and the marks then go back to wait with them.
    private func otherWork(_ db: Database, marks done: [DoneMark]) {
        if let step = callIndex.withLock({ $0.nextStep }) { mergeCallIndex(step, in: db) }
        guard !done.isEmpty else { return }
        guard writer.withLock({ $0.heldAppends.isEmpty }) else { return pendingDone.withLock { $0.putBack(done) } }
        guard !commit(done, in: db) else { return }
        // Only a failure sets the wait and only this retry ends it: one retry is scheduled at a time.
        writer.withLock { $0.marksWait = true }
        flush(after: Self.doneRetryDelay) { $0.marksWait = false }
    }

    /// Starts reading a merge's legs on the log copier's connection (the writer goes on meanwhile, and takes the
    /// slices once they are read), or inserts the next slice.
    private func mergeCallIndex(_ step: CallIndexMerge.Step, in db: Database) {
        switch step {
        case .read:
            let bounds: Row?
            do {
                bounds = try Row.fetchOne(db, sql: "SELECT min(rowid), max(rowid) FROM call_legs_staged")
            } catch {
                return callIndex.withLock { $0.read(nil, through: 0) }
            }
            // None staged after all (the count was high): a merge of nothing, which sets the count to 0.
            guard let bounds, let first = bounds[0] as Int64?, let last = bounds[1] as Int64? else {
                return callIndex.withLock { $0.read(MergeLegs(), through: 0) }
            }
            // The oldest rows, up to a merge's worth: rows are staged in rowid order, and only merges delete
            // them, the oldest first (`CallIndexMerge`).
            let through = min(last, first + callIndex.withLock { $0.rowsPerMerge } - 1)
            callIndex.withLock { $0.started() }
            logCopier.read({ try Self.stagedLegs(through: through, in: $0) }) { [self] legs in
                callIndex.withLock { $0.read(legs, through: through) }
                scheduleFlush()
            }
        case .slice(let legs, let range, let through, let batch):
            let lastDeleted = callIndex.withLock { $0.lastDeleted }
            let added = try? Self.insertSlice(
                legs, range, through: through, batch: batch, lastDeleted: lastDeleted, in: db)
            callIndex.withLock { $0.inserted(range.count, added: added) }
        }
    }

    private func commit(_ appends: [PendingAppend], in db: Database) {
        do {
            try settlingBooks { books in
                try Self.immediateTransaction(db) {
                    let added = try Self.insertEvents(appends.lazy.map { ($0.entry, $0.location) }, in: db)
                    books = try keepBooks(added: added, in: db)
                }
            }
            var logged = 0
            for append in appends {
                if let committed = append.committed { committed(nil) } else { logged += 1 }
            }
            if logged > 0, let log {
                log.committed(appends.lazy.filter { $0.committed == nil }.map(\.file))
                loggedUncommitted.subtract(logged, ordering: .relaxed)
            }
            if appendsHeld.load(ordering: .relaxed), writer.withLock({ $0.heldAppends.isEmpty }) {
                appendsHeld.store(false, ordering: .relaxed)
            }
            logCopier.appended(appends.count)
            lastCommitSize.store(appends.count, ordering: .relaxed)
        } catch {
            let failure = JournalError("the journal \(path) could not be written: \(Self.reason(error))")
            var held: [PendingAppend] = []
            for append in appends {
                if let committed = append.committed { committed(failure) } else { held.append(append) }
            }
            if !held.isEmpty { hold(held) }
        }
    }

    /// Logged appends that failed to commit (their 200 has gone): they are tried again `doneRetryDelay` later,
    /// in front of the queue; meanwhile requests wait for their own commit, and done marks wait.
    private func hold(_ held: [PendingAppend]) {
        appendsHeld.store(true, ordering: .relaxed)
        let first = writer.withLock { state -> Bool in
            state.heldAppends += held
            return state.heldAppends.count == held.count
        }
        guard first else { return }
        // Under the writer's lock: a turn that found none held (and so took done marks) must find them queued.
        flush(after: Self.doneRetryDelay) { [self] state in
            pendingAppends.withLock { $0.insert(contentsOf: state.heldAppends, at: 0) }
            state.heldAppends.removeAll()
        }
    }

    private func commit(_ done: [DoneMark], in db: Database) -> Bool {
        do {
            var staged = 0
            try Self.immediateTransaction(db) { staged = try Self.markDone(done, in: db) }
            callIndex.withLock { $0.staged += staged }
            marksQueued.subtract(done.count, ordering: .relaxed)
            deliveriesQueued(by: done)
            return true
        } catch {
            // Done marks go back to the front of the queue and are tried again: later marks may carry
            // store writes built on theirs, and must not be committed without them.
            pendingDone.withLock { $0.putBack(done) }
            return false
        }
    }

    /// `db.inTransaction(.immediate)` with its BEGIN and COMMIT prepared once per connection: GRDB parses
    /// them anew for every transaction, about 45,000 instructions each time (callgrind), a large share of a
    /// commit of a few events. On any error the transaction is rolled back (if SQLite has not done it
    /// already) and the error thrown.
    static func immediateTransaction(_ db: Database, _ body: () throws -> Void) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute() }
            throw error
        }
    }

    /// Inserts the events not there yet; one with a location (its record's, in the log) gets an empty body and
    /// the location instead (`AcceptedLog`). Returns how many of those it inserted, by file.
    static func insertEvents(_ entries: some Sequence<(Entry, Int64?)>, in db: Database) throws -> [Int: Int] {
        // Prepared once per connection, not parsed per row.
        let insert = DirectStatement(
            try db.cachedStatement(
                sql: """
                    INSERT OR IGNORE INTO events (id, received_at, hook, format, body, meta, body_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """),
            in: db)
        var added: [Int: Int] = [:]
        for (entry, location) in entries {
            try insert.bind(1, entry.id)
            try insert.bind(2, entry.receivedAt)
            try insert.bind(3, entry.hook)
            try insert.bind(4, entry.format)
            try insert.bind(5, blob: location == nil ? entry.body : [])
            try insert.bind(6, entry.meta)
            try insert.bind(7, location)
            let before = db.totalChangesCount
            try insert.step()
            if let location, db.totalChangesCount > before { added[Int(location >> 32), default: 0] += 1 }
        }
        return added
    }

    /// Returns how many call-index rows its records staged.
    private static func markDone(_ done: [DoneMark], in db: Database) throws -> Int {
        let now = Date().timeIntervalSince1970
        // A record in its own table: the event's row is not rewritten (`doneSchema`). None for an event that
        // retention already deleted, as an UPDATE of its row would have found nothing. The event is looked up
        // first rather than inserted from a SELECT: an INSERT … SELECT into a table with a row trigger (the
        // call index's, below) makes SQLite copy the selected row into a temporary B-tree before inserting
        // it, and that B-tree's opening and closing was 8% of the done records' time (`perf`, BENCHMARKS.md).
        let exists = DirectStatement(try db.cachedStatement(sql: "SELECT 1 FROM events WHERE id = ?"), in: db)
        let markDone = DirectStatement(
            try db.cachedStatement(
                sql: """
                    INSERT OR REPLACE INTO events_done (id, done_at, name, call_id, other_leg, account_id, outcomes)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """), in: db)
        var staged = 0
        for mark in done {
            let record = mark.record
            try exists.bind(1, mark.id)
            if try exists.step() {
                try markDone.bind(1, mark.id)
                try markDone.bind(2, now)
                try markDone.bind(3, record?.name)
                try markDone.bind(4, record?.callID)
                try markDone.bind(5, record?.otherLeg)
                try markDone.bind(6, record?.accountID)
                try markDone.bind(7, record?.outcomes)
                try markDone.step()
                // The record's trigger stages its legs for the call index (`CallIndex.swift`).
                staged += legs(of: record)
            }
            for forward in mark.forwards { try insert(forward, event: mark.id, now: now, in: db) }
            for write in mark.writes { try apply(write, in: db) }
        }
        return staged
    }

    /// Wakes the outbox after a commit that queued forwards.
    private func deliveriesQueued(by done: [DoneMark]) {
        if done.contains(where: { !$0.forwards.isEmpty }), let observer = deliveryObserver.withLock({ $0 }) {
            observer.call(())
        }
    }
}

extension EventJournal {
    /// What to do about the two failures a user can fix, for SQLite's errors and the log's alike.
    static let diskFull = "the disk is full (free space, or move --data-dir)"
    static let notWritable = "it is not writable (check the owner and permissions of --data-dir)"

    /// What went wrong, in words that say what to fix.
    static func reason(_ error: any Error) -> String {
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_FULL:
                return diskFull
            case .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_CANTOPEN, .SQLITE_AUTH:
                return notWritable
            case .SQLITE_IOERR:
                return "I/O error (\(error.message ?? "no detail"))"
            default: break
            }
        }
        return "\(error)"
    }
}

/// The journal cannot do its job; the message says what to fix.
public struct JournalError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
