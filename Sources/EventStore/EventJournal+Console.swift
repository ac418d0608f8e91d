import Foundation
import GRDB

/// An accepted event as the console reads it back: how it arrived, whether its rules finished, and (once
/// they did) what each matching rule did.
public struct StoredEvent: Sendable {
    /// The table's row number: newer events have larger ones (the console pages by it).
    public var row: Int64
    public var id: String
    public var receivedAt: Double
    public var hook: String?
    public var format: String
    /// `event.meta` as JSON text.
    public var meta: String
    public var done: Bool
    public var doneAt: Double?
    /// `kind.name` (`channel.channel_create`); nil until the rules finished (or for events kept before
    /// outcomes were recorded).
    public var name: String?
    public var callID: String?
    public var otherLeg: String?
    public var accountID: String?
    /// The matched rules' outcomes as a JSON array (text); nil until the rules finished.
    public var outcomes: String?
    /// The body as received; only when asked for.
    public var body: [UInt8]?

    package init(
        row: Int64, id: String, receivedAt: Double, hook: String?, format: String, meta: String, done: Bool,
        doneAt: Double?, name: String?, callID: String?, otherLeg: String?, accountID: String?, outcomes: String?,
        body: [UInt8]?
    ) {
        self.row = row
        self.id = id
        self.receivedAt = receivedAt
        self.hook = hook
        self.format = format
        self.meta = meta
        self.done = done
        self.doneAt = doneAt
        self.name = name
        self.callID = callID
        self.otherLeg = otherLeg
        self.accountID = accountID
        self.outcomes = outcomes
        self.body = body
    }
}

extension EventJournal {
    /// The table of finished events: what each one's rules did, one row per event, written by its done mark.
    /// An event's own row is written once, when it is accepted, and never updated: a done mark that rewrote it
    /// (its body and all, with its index entries moved) wrote the row's pages to the log a second time
    /// (BENCHMARKS.md). An event is unfinished while it has no row here.
    static let doneSchema = """
        CREATE TABLE IF NOT EXISTS events_done (
          id TEXT PRIMARY KEY,
          done_at REAL NOT NULL,
          name TEXT,
          call_id TEXT,
          other_leg TEXT,
          account_id TEXT,
          outcomes TEXT
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
        \(callIndexSchema)
        """

    /// Brings a journal written by an earlier version to `events_done`, once, in the opening transaction (a
    /// second process opening the file waits for it and then finds nothing to do). Such a journal kept the
    /// done state and outcomes in `events`' own columns (`done`, `done_at`, and from the console's arrival
    /// `name` … `outcomes`, which the oldest files lack): the finished events' are copied over, and the indexes
    /// the old layout kept on `events` go, since nothing reads them any more and every append paid for them.
    static func migrateDoneRecords(_ db: Database) throws {
        let exists =
            try Bool.fetchOne(
                db, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events_done'")
            ?? false
        try db.execute(sql: doneSchema)
        guard !exists else { return try migrateCallIndex(db, copied: false) }
        let columns = try columns(of: "events", in: db)
        let record = ["name", "call_id", "other_leg", "account_id", "outcomes"].map {
            columns.contains($0) ? $0 : "NULL"
        }
        try db.execute(
            sql: """
                INSERT OR IGNORE INTO events_done (id, done_at, name, call_id, other_leg, account_id, outcomes)
                SELECT id, coalesce(done_at, received_at), \(record.joined(separator: ", ")) FROM events WHERE done = 1;
                DROP INDEX IF EXISTS events_pending;
                DROP INDEX IF EXISTS events_call;
                DROP INDEX IF EXISTS events_other_leg;
                """)
        try migrateCallIndex(db, copied: true)
    }

    /// An event and, once its rules finished, its done record (`e`, `d`).
    private static let summaryColumns = """
        e.rowid AS rowid, e.id AS id, e.received_at AS received_at, e.hook AS hook, e.format AS format, e.meta AS meta,
        d.id IS NOT NULL AS done, d.done_at AS done_at, d.name AS name, d.call_id AS call_id, d.other_leg AS other_leg,
        d.account_id AS account_id, d.outcomes AS outcomes
        """
    private static let joined = "events e LEFT JOIN events_done d ON d.id = e.id"

    /// A row of `summaryColumns`, with its body (`body`, `body_at`) when `reader` is given.
    static func stored(_ row: Row, body reader: RecordReader? = nil) -> StoredEvent {
        StoredEvent(
            row: row["rowid"], id: row["id"], receivedAt: row["received_at"], hook: row["hook"], format: row["format"],
            meta: row["meta"], done: row["done"], doneAt: row["done_at"], name: row["name"], callID: row["call_id"],
            otherLeg: row["other_leg"], accountID: row["account_id"], outcomes: row["outcomes"],
            body: reader.map { body(of: row, reading: $0) })
    }

    /// The newest accepted events (without bodies), newest first, older than row `before` when given.
    /// `name` (`kind.name`, or the name alone), `callID` and `accountID` narrow the list (exact matches).
    public func recentEvents(
        limit: Int, before: Int64? = nil, name: String? = nil, callID: String? = nil, accountID: String? = nil
    ) throws -> [StoredEvent] {
        var conditions = ["e.rowid < ?"]
        var arguments: [any DatabaseValueConvertible] = [before ?? Int64.max]
        if let name, !name.isEmpty {
            conditions.append(name.contains(".") ? "d.name = ?" : "substr(d.name, instr(d.name, '.') + 1) = ?")
            arguments.append(name)
        }
        if let callID, !callID.isEmpty {
            // Through the call index (`CallIndex.swift`): the events naming the call, then those that are its own.
            conditions.append("e.id IN (\(Self.eventsOfLegs(1)))")
            arguments += [callID, callID, callID]
        }
        for (column, value) in [("d.call_id", callID), ("d.account_id", accountID)] {
            guard let value, !value.isEmpty else { continue }
            conditions.append("\(column) = ?")
            arguments.append(value)
        }
        arguments.append(limit)
        return try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.summaryColumns) FROM \(Self.joined) WHERE \(conditions.joined(separator: " AND "))
                    ORDER BY e.rowid DESC LIMIT ?
                    """,
                arguments: StatementArguments(arguments)
            ).map { Self.stored($0) }
        }
    }

    /// One event with its body, or nil when retention removed it (or it never was).
    public func storedEvent(_ id: String) throws -> StoredEvent? {
        try pool.read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT \(Self.summaryColumns), e.body AS body, e.body_at AS body_at FROM \(Self.joined)
                    WHERE e.id = ?
                    """,
                arguments: [id]
            )
            .map { Self.stored($0, body: RecordReader(directory: directory)) }
        }
    }

    /// Every kept event of these calls (legs), and every event naming one of them as its other leg, oldest
    /// first, at most `limit`: finished events, whose done records name their calls (found through the call
    /// index, `CallIndex.swift`, and checked against the records themselves).
    public func callEvents(_ callIDs: [String], limit: Int = 500) throws -> [StoredEvent] {
        guard !callIDs.isEmpty else { return [] }
        let marks = Array(repeating: "?", count: callIDs.count).joined(separator: ", ")
        var arguments: [any DatabaseValueConvertible] = callIDs + callIDs + callIDs + callIDs + callIDs
        arguments.append(limit)
        return try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.summaryColumns) FROM events_done d JOIN events e ON e.id = d.id
                    WHERE d.id IN (\(Self.eventsOfLegs(callIDs.count)))
                    AND (d.call_id IN (\(marks)) OR d.other_leg IN (\(marks)))
                    ORDER BY e.received_at, e.rowid LIMIT ?
                    """,
                arguments: StatementArguments(arguments)
            ).map { Self.stored($0) }
        }
    }

    /// The forwards an event's rules queued, oldest first.
    public func deliveries(forEvent id: String) throws -> [Delivery] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM deliveries WHERE event_id = ? ORDER BY id", arguments: [id])
                .map(Self.delivery)
        }
    }
}
