public import Foundation
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
    /// Adds the columns that keep each event's outcomes (journals written before the console lack them).
    /// Two processes opening one old file at once both try: the loser's "duplicate column" is not an error.
    static func migrateEventRecords(_ db: Database) throws {
        let columns = Set(try Row.fetchAll(db, sql: "PRAGMA table_info(events)").map { $0["name"] as String })
        for name in ["name", "call_id", "other_leg", "account_id", "outcomes"] where !columns.contains(name) {
            do {
                try db.execute(sql: "ALTER TABLE events ADD COLUMN \(name) TEXT")
            } catch let error as DatabaseError where error.message?.contains("duplicate column") == true {
                continue
            }
        }
        try db.execute(
            sql: """
                CREATE INDEX IF NOT EXISTS events_call ON events(call_id) WHERE call_id IS NOT NULL;
                CREATE INDEX IF NOT EXISTS events_other_leg ON events(other_leg) WHERE other_leg IS NOT NULL;
                CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
                """)
    }

    private static let summaryColumns =
        "rowid, id, received_at, hook, format, meta, done, done_at, name, call_id, other_leg, account_id, outcomes"

    static func stored(_ row: Row, body: Bool) -> StoredEvent {
        StoredEvent(
            row: row["rowid"], id: row["id"], receivedAt: row["received_at"], hook: row["hook"], format: row["format"],
            meta: row["meta"], done: row["done"], doneAt: row["done_at"], name: row["name"], callID: row["call_id"],
            otherLeg: row["other_leg"], accountID: row["account_id"], outcomes: row["outcomes"],
            body: body ? [UInt8]((row["body"] as Data?) ?? Data()) : nil)
    }

    /// The newest accepted events (without bodies), newest first, older than row `before` when given.
    /// `name` (`kind.name`, or the name alone), `callID` and `accountID` narrow the list (exact matches).
    public func recentEvents(
        limit: Int, before: Int64? = nil, name: String? = nil, callID: String? = nil, accountID: String? = nil
    ) throws -> [StoredEvent] {
        var conditions = ["rowid < ?"]
        var arguments: [any DatabaseValueConvertible] = [before ?? Int64.max]
        if let name, !name.isEmpty {
            conditions.append(name.contains(".") ? "name = ?" : "substr(name, instr(name, '.') + 1) = ?")
            arguments.append(name)
        }
        for (column, value) in [("call_id", callID), ("account_id", accountID)] {
            guard let value, !value.isEmpty else { continue }
            conditions.append("\(column) = ?")
            arguments.append(value)
        }
        arguments.append(limit)
        return try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.summaryColumns) FROM events WHERE \(conditions.joined(separator: " AND "))
                    ORDER BY rowid DESC LIMIT ?
                    """,
                arguments: StatementArguments(arguments)
            ).map { Self.stored($0, body: false) }
        }
    }

    /// One event with its body, or nil when retention removed it (or it never was).
    public func storedEvent(_ id: String) throws -> StoredEvent? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.summaryColumns), body FROM events WHERE id = ?", arguments: [id])
                .map { Self.stored($0, body: true) }
        }
    }

    /// Every kept event of these calls (legs), and every event naming one of them as its other leg, oldest
    /// first, at most `limit`.
    public func callEvents(_ callIDs: [String], limit: Int = 500) throws -> [StoredEvent] {
        guard !callIDs.isEmpty else { return [] }
        let marks = Array(repeating: "?", count: callIDs.count).joined(separator: ", ")
        var arguments: [any DatabaseValueConvertible] = callIDs + callIDs
        arguments.append(limit)
        return try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.summaryColumns) FROM events WHERE call_id IN (\(marks)) OR other_leg IN (\(marks))
                    ORDER BY received_at, rowid LIMIT ?
                    """,
                arguments: StatementArguments(arguments)
            ).map { Self.stored($0, body: false) }
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
