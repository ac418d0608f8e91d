import GRDB
import RuleEngine

/// Which finished events name a call, as its own `call_id` or as their `other_leg`: the console's call view and
/// its events list filtered by call read it.
///
/// Two B-tree indexes on `events_done(call_id)` and `(other_leg)` did this until the fourteenth session. Kazoo's
/// call ids are random, so every done record put its two index entries on two random leaf pages, and every
/// commit wrote each page it touched to the log whole (and the checkpoint copied it again): with a new call id
/// on every event, journal on, the server wrote 22,081 bytes a request against 7,141 with one call id for all,
/// and took 12,295 requests/s against 23,774 (README, Benchmark, "The journal's call index"). Real traffic is
/// the first case, not the second: a leg's four channel events come minutes apart, never in the same commit.
///
/// Now a done record's legs are appended to `call_legs_staged` (one row for both) by a trigger, in the
/// record's own statement (rows in arrival order: the table's last page, like the events'). Once enough have
/// gathered, the writer sorts them into `call_legs_merging` and moves them into `call_legs`, keyed by (leg,
/// event id), in key order, a slice of `sliceSize` a turn: a page of the index is written once for all the
/// entries a slice puts on it rather than once per event, and appends wait on one slice at most. Lookups
/// read `call_legs` and the staged rows (few, read whole). All of it runs in SQLite: rows read into Swift and
/// written back one statement each cost the server about 15 µs of CPU an event (a first version).
extension EventJournal {
    static let callIndexSchema = """
        CREATE TABLE IF NOT EXISTS call_legs (
          leg TEXT NOT NULL,
          id TEXT NOT NULL,
          PRIMARY KEY (leg, id)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS call_legs_staged (call_id TEXT, other_leg TEXT, id TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS call_legs_merging (n INTEGER PRIMARY KEY, leg TEXT NOT NULL, id TEXT NOT NULL);
        CREATE TRIGGER IF NOT EXISTS events_done_legs AFTER INSERT ON events_done
        WHEN new.call_id IS NOT NULL OR new.other_leg IS NOT NULL BEGIN
          INSERT INTO call_legs_staged (call_id, other_leg, id) VALUES (new.call_id, new.other_leg, new.id);
        END;
        """

    /// Brings the call index up to date when the file was written with the two old indexes (by an earlier
    /// version, or by one opening it since: its schema creates them again): every done record's legs go into
    /// `call_legs` (those already there are kept), and the old indexes go. Also fills it for done records just
    /// copied from an older layout (`copied`).
    static func migrateCallIndex(_ db: Database, copied: Bool) throws {
        let old = try String.fetchAll(
            db,
            sql: """
                SELECT name FROM sqlite_master WHERE type = 'index'
                AND name IN ('events_done_call', 'events_done_other_leg')
                """)
        guard copied || !old.isEmpty else { return }
        try db.execute(
            sql: """
                INSERT OR IGNORE INTO call_legs (leg, id)
                SELECT leg, id FROM (\(bothLegs("events_done", where: "1"))) ORDER BY leg, id;
                DROP INDEX IF EXISTS events_done_call;
                DROP INDEX IF EXISTS events_done_other_leg;
                """)
    }

    /// How many index rows a done record just written stages (in one staged row).
    static func legs(of record: EventRecord?) -> Int {
        (record?.callID == nil ? 0 : 1) + (record?.otherLeg == nil ? 0 : 1)
    }

    /// SQL for the ids of the events naming one of `count` legs (the `?`s to bind: the legs, three times).
    static func eventsOfLegs(_ count: Int) -> String {
        let marks = Array(repeating: "?", count: count).joined(separator: ", ")
        return """
            SELECT id FROM call_legs WHERE leg IN (\(marks))
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

    /// Removes the index entries (indexed, staged or being merged) of the done records of `events_done` that
    /// `condition` selects, before they go.
    static func deleteLegs(ofDoneRecords condition: String, arguments: StatementArguments, in db: Database) throws {
        let legs = try Row.fetchAll(
            db, sql: bothLegs("events_done", where: condition), arguments: arguments + arguments)
        // In key order, as a merge writes them: each page of the index is changed once for all its entries.
        let sorted = legs.map { (leg: $0["leg"] as String, id: $0["id"] as String) }.sorted {
            ($0.leg, $0.id) < ($1.leg, $1.id)
        }
        let delete = try db.cachedStatement(sql: "DELETE FROM call_legs WHERE leg = ? AND id = ?")
        for entry in sorted { try delete.execute(arguments: [entry.leg, entry.id]) }
        for table in ["call_legs_staged", "call_legs_merging"] {
            try db.execute(
                sql: "DELETE FROM \(table) WHERE id IN (SELECT id FROM events_done WHERE \(condition))",
                arguments: arguments)
        }
    }
}

/// The writer's progress moving staged legs into `call_legs` (see `EventJournal.callIndexSchema`).
struct CallIndexMerge {
    /// Staged rows that gather before a merge starts: a sixteenth of the index, within these bounds. A batch
    /// of B rows into an index of M pages changes about M·(1 − e^(−B/M)) of them, so a batch that grows with
    /// the index writes fewer pages a row than a fixed one once the index is large: at a million rows (a
    /// journal near its 1 GB cap) about half a page a row, where 8,192 at a time wrote 0.84. The bounds keep
    /// the sort that starts a merge, which the appends wait for, short: 4–17 ms for 8,192 rows, 26–31 ms for
    /// 32,768, about 50 ms for 65,536 (Python's sqlite3, this machine). The sorted copy is a table of the file
    /// (`call_legs_merging`), not of memory: a temporary table kept its pages after it was dropped, and merges
    /// of 65,536 rows took the server's resident memory after a million events from 46 to 67 MB (issue 17's
    /// goal: 60).
    var minimum = 8_192
    var maximum = 32_768
    /// Rows moved in one transaction: one writer turn's share.
    var sliceSize = 256

    /// Rows in `call_legs_staged` (counted when the journal opens, then kept up to date by the writer).
    var staged = 0
    /// A merge under way: its rows, sorted by key, are in `call_legs_merging` (rowids 1…`merging`, in key
    /// order: SQLite numbers an empty table's rows from 1), taken from the staged rows up to `through`.
    var merging = 0
    var through: Int64 = 0
    var next = 0
    /// Rows in `call_legs` (counted when the journal opens, then kept up to date by the writer; retention's
    /// deletions are not subtracted, which only makes merges somewhat larger).
    var indexed = 0
    /// After a failure, the merge waits until `mergeAt` more rows are staged.
    var failedAt = 0

    var mergeAt: Int { min(max(indexed / 16, minimum), maximum) }

    /// A slice is due: a merge under way, or enough staged to start one.
    var due: Bool { merging > 0 || staged >= failedAt + mergeAt }

    /// Moves the next slice (sorting the staged rows first when a merge starts); the last slice also deletes
    /// the rows it moved from the staging table. A row moved twice (after a crash between slices) is kept once.
    mutating func step(in db: Database) {
        do {
            if merging == 0 {
                through = try Int64.fetchOne(db, sql: "SELECT max(rowid) FROM call_legs_staged") ?? 0
                try EventJournal.immediateTransaction(db) {
                    try db.execute(
                        sql: """
                            DELETE FROM call_legs_merging;
                            INSERT INTO call_legs_merging (leg, id)
                              SELECT leg, id FROM (\(EventJournal.bothLegs("call_legs_staged", where: "rowid <= ?")))
                              ORDER BY leg, id;
                            """, arguments: [through, through])
                }
                merging = try Int.fetchOne(db, sql: "SELECT count(*) FROM call_legs_merging") ?? 0
                next = 0
                if merging == 0 {
                    staged = 0
                    return
                }
            }
            let end = min(next + sliceSize, merging)
            try EventJournal.immediateTransaction(db) {
                try db.cachedStatement(
                    sql: """
                        INSERT OR IGNORE INTO call_legs (leg, id)
                        SELECT leg, id FROM call_legs_merging WHERE n > ? AND n <= ? ORDER BY n
                        """
                ).execute(arguments: [next, end])
                if end == merging {
                    try db.execute(
                        sql: "DELETE FROM call_legs_staged WHERE rowid <= ?; DELETE FROM call_legs_merging",
                        arguments: [through])
                }
            }
            next = end
            if next == merging {
                staged = max(0, staged - merging)
                indexed += merging
                merging = 0
                failedAt = 0
            }
        } catch {
            // A full disk, say: the staged rows stay where they are, and lookups still find them there.
            merging = 0
            failedAt = staged
        }
    }
}
