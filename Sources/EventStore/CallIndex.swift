import CSQLiteTuning
import GRDB
import RuleEngine

/// Which finished events name a call, as its own `call_id` or as their `other_leg`: the console's call view and
/// its events list filtered by call read it.
///
/// Two B-tree indexes on `events_done(call_id)` and `(other_leg)` did this until the fourteenth session. Kazoo's
/// call ids are random, so every done record put its two index entries on two random leaf pages, and every
/// commit wrote each page it touched to the log whole (and the checkpoint copied it again): with a new call id
/// on every event, journal on, the server wrote 22,081 bytes a request against 7,141 with one call id for all,
/// and took 12,295 requests/s against 23,774 (BENCHMARKS.md, "The journal's call index"). Real traffic is
/// the first case, not the second: a leg's four channel events come minutes apart, never in the same commit.
///
/// Now a done record's legs are appended to `call_legs_staged` (one row for both) by a trigger, in the
/// record's own statement (rows in arrival order: the table's last page, like the events'). Once enough have
/// gathered, the log copier's connection reads them and sorts them by key, off the writer's thread, and the
/// writer moves them into `call_index` in that order, a slice of `sliceSize` a turn, appends waiting on one
/// slice at most. Rows read into Swift and written back one statement each, on the writer, cost the server
/// about 15 µs of CPU an event (a first version); a sorted copy in a table of the file (the fourteenth
/// session's) wrote every leg once more and made the appends wait for the sort (BENCHMARKS.md, "The journal's
/// call index").
///
/// The index is keyed by (batch, leg, event id), `batch` a number each merge takes one above the last
/// (`call_batches` lists those in use). A merge's sorted legs then go in at the index's end, one page after
/// another, whatever the call ids. Keyed by (leg, event id) alone until the fiftieth session, a merge with
/// Kazoo's random call ids put its legs all over the index: a page for every few, each written to the log
/// whole and again at the checkpoint. In a replay of the journal's writes with a new call every event
/// (`scripts/journal_layouts.py current batched-sweep`, BENCHMARKS.md), 300,000 events at a cap of 150,000:
/// 36.4–36.9 µs of CPU and 17,427–17,433 bytes written an event before, 29.6–32.2 µs and 12,394 after. In the
/// server, under `wrk` with a new call a request (no cap given: the default 1 GB), the merges had fallen
/// behind by 90,950 and 72,828 staged legs after 30 s in two runs, which a lookup reads whole (26–32 ms); now
/// by 204 and 16,247 (3–5 ms). (Under the same load at a 200 MB cap, where retention takes the writer's turns
/// too, both fall behind by tens of thousands.) A lookup seeks once per batch (`eventsOfLegs`): those 30 s
/// made 61 and 62.
extension EventJournal {
    static let callIndexSchema = """
        CREATE TABLE IF NOT EXISTS call_index (
          batch INTEGER NOT NULL,
          leg TEXT NOT NULL,
          id TEXT NOT NULL,
          PRIMARY KEY (batch, leg, id)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS call_batches (batch INTEGER PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS call_legs_staged (call_id TEXT, other_leg TEXT, id TEXT NOT NULL);
        DROP TABLE IF EXISTS call_legs_merging;
        CREATE TRIGGER IF NOT EXISTS events_done_legs AFTER INSERT ON events_done
        WHEN new.call_id IS NOT NULL OR new.other_leg IS NOT NULL BEGIN
          INSERT INTO call_legs_staged (call_id, other_leg, id) VALUES (new.call_id, new.other_leg, new.id);
        END;
        """

    /// Brings the call index up to date when the file was written by an earlier version (or by one opening it
    /// since, whose schema creates its own again), as one batch above the others:
    /// - with `call_legs`, the index keyed by (leg, event id) alone (the fourteenth to the forty-ninth sessions):
    ///   its entries go into `call_index`, and it goes;
    /// - with the two old indexes on `events_done`: every done record's legs go into `call_index`, and the old
    ///   indexes go. Also done for done records just copied from an older layout (`copied`).
    static func migrateCallIndex(_ db: Database, copied: Bool) throws {
        let old = try String.fetchAll(
            db,
            sql: """
                SELECT name FROM sqlite_master WHERE (type = 'index'
                AND name IN ('events_done_call', 'events_done_other_leg')) OR (type = 'table' AND name = 'call_legs')
                """)
        guard copied || !old.isEmpty else { return }
        let batch = try nextBatch(db)
        var sources: [String] = []
        if old.contains("call_legs") { sources.append("SELECT leg, id FROM call_legs") }
        if copied || old.contains(where: { $0.hasPrefix("events_done_") }) {
            sources.append(bothLegs("events_done", where: "1"))
        }
        // An entry another batch holds already goes in again: looking for it would seek into every batch for
        // each leg (millions of seeks for a journal's done records). A lookup finds its event once all the same
        // (`eventsOfLegs` is a UNION), and the sweep takes both once the record is gone.
        try db.execute(
            sql: """
                INSERT OR IGNORE INTO call_index (batch, leg, id)
                SELECT \(batch), leg, id FROM (\(sources.joined(separator: " UNION ALL "))) ORDER BY leg, id;
                INSERT OR IGNORE INTO call_batches (batch) SELECT \(batch) WHERE changes() > 0;
                DROP TABLE IF EXISTS call_legs;
                DROP INDEX IF EXISTS events_done_call;
                DROP INDEX IF EXISTS events_done_other_leg;
                """)
    }

    /// The number the next batch of the index takes: one above the largest in use.
    static func nextBatch(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT coalesce(max(batch) + 1, 0) FROM call_batches") ?? 0
    }

    /// How many index rows a done record just written stages (in one staged row).
    static func legs(of record: EventRecord?) -> Int {
        (record?.callID == nil ? 0 : 1) + (record?.otherLeg == nil ? 0 : 1)
    }

    /// SQL for the ids of the events naming one of `count` legs (the `?`s to bind: the legs, three times): a
    /// seek into the index for each batch and leg, and the staged rows.
    static func eventsOfLegs(_ count: Int) -> String {
        let marks = Array(repeating: "?", count: count).joined(separator: ", ")
        return """
            SELECT id FROM call_index WHERE batch IN (SELECT batch FROM call_batches) AND leg IN (\(marks))
            UNION SELECT id FROM call_legs_staged WHERE call_id IN (\(marks)) OR other_leg IN (\(marks))
            """
    }

    /// A row per leg (`leg`, `id`) of the rows of `table` (`events_done` or `call_legs_staged`) that
    /// `condition` selects (its `?`s are bound twice).
    static func bothLegs(_ table: String, where condition: String) -> String {
        """
        SELECT call_id AS leg, id FROM \(table) WHERE \(condition) AND call_id IS NOT NULL
        UNION ALL SELECT other_leg, id FROM \(table) WHERE \(condition) AND other_leg IS NOT NULL
        """
    }
}

/// The writer's progress moving staged legs into `call_index` (see `EventJournal.callIndexSchema`).
///
/// A merge has two steps. The writer notes the last staged row it takes (`through`: at most `maximum` legs'
/// worth, `rowsPerMerge`, from the oldest), and the log copier's connection
/// reads the legs of the rows up to it and sorts them by key, on the copier's thread (`LogCopier.read`,
/// `stagedLegs`): the appends do not wait for it. Then the writer inserts them a slice a turn (`insertSlice`),
/// and the last slice deletes the staged rows it covered. A process stopped in between leaves the staged rows
/// where they were, and the next merge reads them again: the first merge of a process goes into the largest
/// batch there is, so that entries already in the index are kept once.
///
/// Retention deletes records but leaves their legs: lookups join the index with the records, and find nothing
/// for an entry whose record is gone. Staged rows stay for the merges: only merges delete staged rows, always the
/// oldest, so a staged row's rowid is never given again while a merge covers it (a rowid table gives the next
/// row one more than its largest). A merge goes on through retention, and a leg whose event id sorts at or
/// before the last one retention deleted (`lastDeleted`) goes into the index only if its record is still there
/// (`insertSlice`). Entries left in the index without their record (`orphans`) are swept out once they are half
/// as many as the index holds: a pass along the index in key order, a slice with each of retention's batches
/// (`EventJournal.sweepSlice`), changes each of its pages about once, where deleting each entry with its record
/// changed a page of the index an entry, since call ids are random; it looks up the records of only the entries
/// whose ids sort at or before `lastDeleted`. Under `wrk` with a new call a request and a 400 MB cap, deleting
/// the entries with their records held ingest at 24,700-25,400 requests a second with a 99th percentile of 68-78 ms;
/// without, 28,900-29,200 and 6 ms (BENCHMARKS.md). Retention deletes the oldest events first, so the orphans
/// gather in the oldest batches; a batch the sweep leaves empty goes from `call_batches` at the sweep's end.
/// Retention once also deleted the staged rows of the records it deleted and dropped the merge under way: under
/// a sustained load every batch dropped it, no merge finished, and the staged rows grew by hundreds of thousands.
struct CallIndexMerge {
    /// Staged legs that gather before a merge starts: a sixteenth of the index, within these bounds. Each merge
    /// is a batch of the index, and a lookup seeks into every batch. Past 524,288 entries every merge takes the
    /// most, so the batches grow with the index: 62 after 30 s of `wrk` with a new call a request (1.9 million
    /// entries, the default 1 GB cap), and some 600 for a journal ten times as large, which a lookup seeks into
    /// 600 times (folding old batches together is not built). (Before the batches, a merge of B legs into an
    /// index of M pages changed about M·(1 − e^(−B/M)) of them, and this growth was what kept that near half a
    /// page a leg at a million entries.) The upper bound keeps a merge's legs in memory small (32,768 legs of two
    /// 40-byte strings: a few MB, briefly): a merge takes no more rows than that (`rowsPerMerge`), however many
    /// are staged. Under a load the merges do not keep up with, hundreds of thousands gather; a merge that read
    /// them all held 100 MB and more (BENCHMARKS.md).
    var minimum = 8_192
    var maximum = 32_768
    /// The most legs a merge has read (tests).
    private(set) var largestRead = 0
    /// Legs inserted in one transaction: one writer turn's share.
    var sliceSize = 256

    /// Legs in `call_legs_staged` (counted when the journal opens, then kept up to date by the writer).
    var staged = 0
    /// Entries in `call_index` (counted when the journal opens, then kept up to date by the writer; retention's
    /// deletions are not subtracted, which only makes merges somewhat larger).
    var indexed = 0
    /// The batch the next merge's legs go into: at open the largest there is (a merge an earlier process left
    /// unfinished is then finished in its own batch), one more after each merge that finished. Right after an
    /// upgrade the largest holds the whole old index, and that first merge lands all over it, once.
    var batch: Int64 = 0
    /// After a failure, the merge waits until `mergeAt` more legs are staged.
    var failedAt = 0

    /// The legs of a merge are being read.
    private(set) var reading = false
    /// The legs of the merge under way, in key order; `next` of them are in the index. They came from the
    /// staged rows up to `through`.
    private var sorted = MergeLegs()
    private var next = 0
    private var through: Int64 = 0
    /// The largest event id retention has deleted, or at open the largest staged (whose records an earlier
    /// process may have deleted): a staged leg whose id sorts after it names a record that is there.
    var lastDeleted: String?
    /// Legs of the records retention deleted since the last sweep: entries of `call_index` without their record
    /// (or staged rows, which the merges leave out; these count too, which only starts a sweep sooner). Not
    /// known at open: a sweep starts then, for those an earlier process left.
    var orphans = 0
    /// A sweep starts once the orphans are half the index and at least this many.
    var sweepMinimum = 50_000
    /// Index entries a sweep reads in one transaction at least (`EventJournal.sweepSlice`).
    var sweepBatch = 4_096
    /// The last entry the sweep under way has read (`Entry.beforeAll` before its first slice); nil when none is
    /// under way.
    private(set) var sweepFrom: Entry?

    /// An entry of the index: its key.
    struct Entry: Equatable {
        var batch: Int64
        var leg: String
        var id: String

        /// Sorts before every entry: batches are never negative.
        static let beforeAll = Entry(batch: -1, leg: "", id: "")

        /// Whether this entry sorts before `other` in the index (`sortsBefore`: by batch, leg, then id).
        func precedes(_ other: Entry) -> Bool {
            guard batch == other.batch else { return batch < other.batch }
            return leg.utf8.elementsEqual(other.leg.utf8)
                ? CallIndexMerge.sortsBefore(id, other.id) : CallIndexMerge.sortsBefore(leg, other.leg)
        }

        static func == (a: Entry, b: Entry) -> Bool {
            a.batch == b.batch && a.leg.utf8.elementsEqual(b.leg.utf8) && a.id.utf8.elementsEqual(b.id.utf8)
        }
    }

    /// The writer's next step in a merge, if any.
    enum Step {
        /// Note the last staged row and read the legs up to it (`read`).
        case read
        /// Insert these of the legs into `batch` (`insertSlice`), and after the last, delete the staged rows up to
        /// `through`.
        case slice(MergeLegs, Range<Int>, through: Int64, batch: Int64)
    }

    var mergeAt: Int { min(max(indexed / 16, minimum), maximum) }

    /// The staged rows a merge takes at most: each has one or two legs.
    var rowsPerMerge: Int64 { Int64(max(1, maximum / 2)) }

    var nextStep: Step? {
        if next < sorted.count {
            // More than another whole merge waiting behind this one: the merges are not keeping up with the
            // legs staged (under `wrk -t1 -c32`, 256 a writer turn fell behind by thousands of rows a second), and
            // four times as many a turn catch up (BENCHMARKS.md).
            let behind = staged - sorted.count >= maximum
            let end = min(next + (behind ? 4 * sliceSize : sliceSize), sorted.count)
            return .slice(sorted, next..<end, through: through, batch: batch)
        }
        return !reading && staged >= failedAt + mergeAt ? .read : nil
    }

    /// A merge is being read or written (the journal's `drain` waits for it).
    var busy: Bool { reading || next < sorted.count }

    mutating func started() { reading = true }

    /// The legs read for the merge just started (nil: the read failed).
    mutating func read(_ legs: MergeLegs?, through: Int64) {
        reading = false
        guard let legs else { return failedAt = staged }
        if legs.count == 0 { staged = 0 }
        largestRead = max(largestRead, legs.count)
        (sorted, next, self.through) = (legs, 0, through)
    }

    /// The slice of `count` legs just inserted committed, `added` of them new entries (the others were there
    /// already, or left out since their records were gone), or failed (`added` nil).
    mutating func inserted(_ count: Int, added: Int?) {
        guard let added else {
            // A full disk, say: the staged rows stay where they are, and lookups still find them there.
            (sorted, next, failedAt) = (MergeLegs(), 0, staged)
            return
        }
        indexed += added
        next += count
        guard next == sorted.count else { return }
        staged = max(0, staged - sorted.count)
        (sorted, next, failedAt) = (MergeLegs(), 0, 0)
        batch += 1
    }

    /// The orphans are due for a sweep.
    var sweepDue: Bool { orphans >= max(sweepMinimum, indexed / 2) }

    /// Starts a sweep when one is due (or now, `force`) and none is under way. The orphans counted from here on
    /// are for the next one (some of them this one will find after all, which only makes the next later).
    mutating func startSweep(force: Bool = false) {
        guard sweepFrom == nil, force || sweepDue else { return }
        sweepFrom = .beforeAll
        orphans = 0
    }

    /// A slice of the sweep deleted `removed` entries whose records were gone, and read up to `last` (nil: to the
    /// index's end, and the sweep is over).
    mutating func swept(_ removed: Int, through last: Entry?) {
        indexed = max(0, indexed - removed)
        sweepFrom = last
    }

    /// Whether text `a` sorts before `b` as the index's columns do, and as the C helpers compare
    /// (`sb_compare_texts`): SQLite's BINARY collation, the bytes, then the length. Swift's own `<` and `==` on
    /// strings compare differently composed ones as equal.
    static func sortsBefore(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// Retention deleted done records with `legs` legs, the largest id among them `id`.
    mutating func deleted(through id: String, legs: Int) {
        orphans += legs
        if lastDeleted.map({ Self.sortsBefore($0, id) }) ?? true { lastDeleted = id }
    }
}

/// The legs of a merge (leg, event id), packed in one buffer by C helpers that call SQLite directly
/// (`CSQLiteTuning`): copied from the rows read, sorted, and bound into the writer's inserts without a Swift
/// string or a GRDB value per leg. Through GRDB (a `String` per text, an argument array per slice) a merge's
/// read and inserts took about 16,400 instructions a leg; with these about 10,700 (callgrind, 12,000 requests
/// one at a time, 16,896 legs merged; BENCHMARKS.md, "The journal's call index"). Immutable once read,
/// and only the writer reads it then.
final class MergeLegs: @unchecked Sendable {
    fileprivate var pairs = sb_pairs()

    var count: Int { Int(pairs.count) }

    init() {}

    /// Legs given here (tests).
    convenience init(_ legs: [(leg: String, id: String)]) throws {
        self.init()
        for (leg, id) in legs {
            var leg = leg
            var id = id
            let code = leg.withUTF8 { leg in
                id.withUTF8 { id in
                    leg.withMemoryRebound(to: CChar.self) { leg in
                        id.withMemoryRebound(to: CChar.self) { id in
                            sb_pairs_append(&pairs, leg.baseAddress, Int32(leg.count), id.baseAddress, Int32(id.count))
                        }
                    }
                }
            }
            guard code == ResultCode.SQLITE_OK.rawValue else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code))
            }
        }
    }

    /// Sorts the legs as the index orders them (SQLite's BINARY collation: bytes, then length); the slices
    /// then follow that order.
    func sort() throws {
        let code = sb_pairs_sort(&pairs)
        guard code == ResultCode.SQLITE_OK.rawValue else { throw DatabaseError(resultCode: ResultCode(rawValue: code)) }
    }

    /// The legs `range` (in order once sorted; tests).
    func legs(_ range: Range<Int>) -> [(leg: String, id: String)] {
        range.map { i in
            let i = pairs.order.map { Int($0[i]) } ?? i
            let start = i == 0 ? 0 : pairs.ends[2 * i - 1], middle = pairs.ends[2 * i], end = pairs.ends[2 * i + 1]
            func text(_ from: Int, _ to: Int) -> String {
                String(decoding: UnsafeRawBufferPointer(start: pairs.bytes + from, count: to - from), as: UTF8.self)
            }
            return (text(start, middle), text(middle, end))
        }
    }

    /// The event ids of legs `range` (tests).
    func ids(_ range: Range<Int>) -> [String] { legs(range).map(\.id) }

    deinit { sb_pairs_free(&pairs) }
}

extension EventJournal {
    /// The legs of the staged rows up to `through`, sorted by key as the index orders them: what a merge
    /// inserts. Sorted by the C helper rather than SQLite's sorter (`ORDER BY`), whose memory for 32,768 legs
    /// stayed with the thread that sorted.
    static func stagedLegs(through: Int64, in db: Database) throws -> MergeLegs {
        let select = try db.makeStatement(sql: bothLegs("call_legs_staged", where: "rowid <= ?"))
        try select.setArguments([through, through])
        let legs = MergeLegs()
        try DirectStatement(select, in: db).run(expecting: ResultCode.SQLITE_DONE.rawValue) {
            sb_pairs_collect($0, &legs.pairs)
        }
        // The connection's page cache, filled by this one scan: SQLite reads the pages again after the writer's
        // next commit anyway.
        try db.execute(sql: "PRAGMA shrink_memory")
        try legs.sort()
        return legs
    }

    /// Inserts legs `range` of a merge (in key order) into `batch`, and with the last, deletes the staged rows up
    /// to `through`, in one transaction. A leg whose event id sorts at or before `lastDeleted` goes in only if
    /// its record is there (`CallIndexMerge`). Returns how many entries it added.
    static func insertSlice(
        _ legs: MergeLegs, _ range: Range<Int>, through: Int64, batch: Int64, lastDeleted: String?, in db: Database
    ) throws -> Int {
        var added = 0
        try immediateTransaction(db) {
            // With every slice: a sweep's end may have found the batch empty and taken it out of the list.
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO call_batches (batch) VALUES (?)").execute(
                arguments: [batch])
            let before = db.totalChangesCount
            // Only ever stepped here, by the helper, which binds each leg (`?1`, `?2`): GRDB never binds or steps
            // them itself. The batch (`?3`) is bound here, and stays bound until the helper clears them all.
            let insert = try db.cachedStatement(
                sql: "INSERT OR IGNORE INTO call_index (batch, leg, id) VALUES (?3, ?1, ?2)")
            try DirectStatement(insert, in: db).bind(3, Int(batch))
            let checked =
                lastDeleted == nil
                ? nil
                : try db.cachedStatement(
                    sql: """
                        INSERT OR IGNORE INTO call_index (batch, leg, id)
                        SELECT ?3, ?1, ?2 WHERE EXISTS (SELECT 1 FROM events_done WHERE id = ?2)
                        """)
            if let checked { try DirectStatement(checked, in: db).bind(3, Int(batch)) }
            let checkedStatement = checked.map { UnsafeMutableRawPointer($0.sqliteStatement) }
            var last = lastDeleted ?? ""
            try last.withUTF8 { last in
                try last.withMemoryRebound(to: CChar.self) { last in
                    try DirectStatement(insert, in: db).run(expecting: ResultCode.SQLITE_DONE.rawValue) {
                        sb_pairs_run(
                            $0, checkedStatement, last.baseAddress, Int32(last.count), &legs.pairs,
                            Int32(range.lowerBound), Int32(range.upperBound))
                    }
                }
            }
            added = db.totalChangesCount - before
            if range.upperBound == legs.count {
                try db.cachedStatement(sql: "DELETE FROM call_legs_staged WHERE rowid <= ?").execute(
                    arguments: [through])
            }
        }
        return added
    }
}
