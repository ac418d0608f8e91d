import Foundation
import GRDB
public import JSONCore
public import RuleEngine
import Synchronization

/// A forward in the outbox, with where it stands.
public struct Delivery: Sendable, Hashable {
    public enum State: String, Sendable, Hashable, CaseIterable {
        /// Not delivered yet: waiting for its first attempt or for a retry.
        case pending
        /// A 2xx came back.
        case delivered
        /// Every attempt failed (or the maximum age passed): kept until `switchboard redeliver`.
        case dead
    }

    public var id: Int64
    public var eventID: String
    public var rule: String
    public var method: String
    public var url: String
    public var headers: [OutboundRequest.Header]
    public var body: [UInt8]
    public var state: State
    /// Attempts since it was queued (or last redelivered).
    public var attempts: Int
    public var createdAt: Double
    public var nextAttemptAt: Double
    public var updatedAt: Double
    public var lastStatus: Int?
    public var lastError: String?
    /// Where it goes, for the per-destination limit: `scheme://host:port` (worked out once, when queued).
    public var destination: String

    package init(
        id: Int64, eventID: String, rule: String, method: String, url: String, headers: [OutboundRequest.Header],
        body: [UInt8], state: State, attempts: Int, createdAt: Double, nextAttemptAt: Double, updatedAt: Double,
        lastStatus: Int?, lastError: String?, destination: String
    ) {
        self.id = id
        self.eventID = eventID
        self.rule = rule
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.state = state
        self.attempts = attempts
        self.createdAt = createdAt
        self.nextAttemptAt = nextAttemptAt
        self.updatedAt = updatedAt
        self.lastStatus = lastStatus
        self.lastError = lastError
        self.destination = destination
    }

    package static func destination(of url: String) -> String {
        guard let components = URLComponents(string: url), let host = components.host else { return url }
        let scheme = components.scheme ?? "http"
        return "\(scheme)://\(host):\(components.port ?? (scheme == "https" ? 443 : 80))"
    }
}

/// One try at delivering, like Kazoo's own attempt log.
public struct DeliveryAttempt: Sendable, Hashable {
    public var number: Int
    public var at: Double
    public var status: Int?
    public var latencyMs: Double
    public var error: String?
    /// The start of the response body (at most `excerptBytes`).
    public var excerpt: String?

    public static let excerptBytes = 512

    public init(number: Int, at: Double, status: Int?, latencyMs: Double, error: String?, excerpt: String?) {
        self.number = number
        self.at = at
        self.status = status
        self.latencyMs = latencyMs
        self.error = error
        self.excerpt = excerpt
    }
}

/// Which deliveries a listing shows.
public enum DeliveryFilter: String, Sendable, CaseIterable {
    case all
    /// Not delivered yet.
    case pending
    /// Not delivered yet, and at least one attempt failed.
    case failed
    case dead
    case delivered
}

extension EventJournal {
    static let deliverySchema = """
        CREATE TABLE IF NOT EXISTS deliveries (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          event_id TEXT NOT NULL,
          rule TEXT NOT NULL,
          method TEXT NOT NULL,
          url TEXT NOT NULL,
          headers TEXT NOT NULL,
          body BLOB NOT NULL,
          state TEXT NOT NULL,
          attempts INTEGER NOT NULL DEFAULT 0,
          created_at REAL NOT NULL,
          next_attempt_at REAL NOT NULL,
          destination TEXT NOT NULL,
          updated_at REAL NOT NULL,
          last_status INTEGER,
          last_error TEXT
        );
        CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, destination, next_attempt_at);
        CREATE TABLE IF NOT EXISTS attempts (
          delivery_id INTEGER NOT NULL,
          number INTEGER NOT NULL,
          at REAL NOT NULL,
          status INTEGER,
          latency_ms REAL NOT NULL,
          error TEXT,
          excerpt TEXT
        );
        CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(delivery_id);
        """

    /// Headers as the JSON object they are stored and shown as.
    package static func object(_ headers: [OutboundRequest.Header]) -> JSONObject {
        var object = JSONObject()
        for header in headers { object[header.name] = .string(header.value) }
        return object
    }

    static func insert(_ forward: NewDelivery, event: String, now: Double, in db: Database) throws {
        let headers = object(forward.headers)
        try db.cachedStatement(
            sql: """
                INSERT INTO deliveries (event_id, rule, method, url, headers, body, state, created_at, next_attempt_at, updated_at, destination)
                VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                event, forward.rule, forward.method, forward.url, (try? JSONWriter.string(.object(headers))) ?? "{}",
                Data(forward.body), now, now, now, Delivery.destination(of: forward.url),
            ])
    }

    /// Called (from any thread) after deliveries were queued.
    public func observeDeliveries(_ observer: @escaping @Sendable () -> Void) {
        deliveryObserver.withLock { $0 = Callback { _ in observer() } }
    }

    /// The destinations that have pending deliveries (one index probe per destination, not a scan).
    public func pendingDestinations() throws -> [String] {
        try pool.read { db in
            try String.fetchAll(
                db,
                sql: """
                    WITH RECURSIVE d(name) AS (
                      SELECT min(destination) FROM deliveries WHERE state = 'pending'
                      UNION ALL
                      SELECT (SELECT min(destination) FROM deliveries WHERE state = 'pending' AND destination > name)
                      FROM d WHERE name IS NOT NULL
                    )
                    SELECT name FROM d WHERE name IS NOT NULL
                    """)
        }
    }

    /// One destination's pending deliveries, soonest first.
    public func upcomingDeliveries(to destination: String, limit: Int) throws -> [Delivery] {
        try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM deliveries WHERE state = 'pending' AND destination = ?
                    ORDER BY next_attempt_at, id LIMIT ?
                    """, arguments: [destination, limit]
            ).map(Self.delivery)
        }
    }

    /// Deliveries for `switchboard deliveries` and `GET /admin/deliveries`, newest first.
    public func deliveries(_ filter: DeliveryFilter = .all, limit: Int = 100) throws -> [Delivery] {
        let condition =
            switch filter {
            case .all: "1"
            case .pending: "state = 'pending'"
            case .failed: "state = 'pending' AND attempts > 0"
            case .dead: "state = 'dead'"
            case .delivered: "state = 'delivered'"
            }
        return try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM deliveries WHERE \(condition) ORDER BY id DESC LIMIT ?", arguments: [limit]
            ).map(Self.delivery)
        }
    }

    /// One delivery, or nil.
    public func delivery(_ id: Int64) throws -> Delivery? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM deliveries WHERE id = ?", arguments: [id]).map(Self.delivery)
        }
    }

    /// Every attempt at a delivery, in order.
    public func attempts(_ id: Int64) throws -> [DeliveryAttempt] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number", arguments: [id]
            ).map { row in
                DeliveryAttempt(
                    number: row["number"], at: row["at"], status: row["status"], latencyMs: row["latency_ms"],
                    error: row["error"], excerpt: row["excerpt"])
            }
        }
    }

    /// How many deliveries are in each of `states` (each an index range: counting pending and dead ones
    /// does not read the delivered history).
    public func deliveryCounts(_ states: [Delivery.State] = Delivery.State.allCases) throws -> [Delivery.State: Int] {
        try pool.read { db in
            var counts: [Delivery.State: Int] = [:]
            for state in states {
                let n =
                    try Int.fetchOne(
                        db, sql: "SELECT count(*) FROM deliveries WHERE state = ?", arguments: [state.rawValue])
                    ?? 0
                if n > 0 { counts[state] = n }
            }
            return counts
        }
    }

    /// What an attempt decided.

    /// Records an attempt and the delivery's new state in one transaction.
    /// - Parameter unchangedSince: the `updatedAt` of the delivery as it was read when the attempt began. The
    ///   new state is written only if the row still has it: a `redeliver` while the attempt was in flight
    ///   (fresh attempts, new age) wins over a result computed from the old count. The attempt is logged
    ///   either way.
    public func record(
        _ attempt: DeliveryAttempt, of id: Int64, result: AttemptResult, unchangedSince: Double? = nil
    ) async throws {
        try await pool.write { db in
            try db.cachedStatement(
                sql: """
                    INSERT INTO attempts (delivery_id, number, at, status, latency_ms, error, excerpt)
                    VALUES (?, (SELECT count(*) + 1 FROM attempts WHERE delivery_id = ?), ?, ?, ?, ?, ?)
                    """
            ).execute(
                arguments: [
                    id, id, attempt.at, attempt.status, attempt.latencyMs, attempt.error, attempt.excerpt,
                ])
            let (state, next): (Delivery.State, Double) =
                switch result {
                case .delivered: (.delivered, attempt.at)
                case .retry(let at): (.pending, at)
                case .dead: (.dead, attempt.at)
                }
            try db.cachedStatement(
                sql: """
                    UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?, updated_at = ?,
                      last_status = ?, last_error = ? WHERE id = ? AND (? IS NULL OR updated_at = ?)
                    """
            ).execute(
                arguments: [
                    state.rawValue, next, attempt.at, attempt.status, attempt.error, id, unchangedSince,
                    unchangedSince,
                ])
        }
    }

    /// Puts deliveries back in the queue with a fresh set of attempts (their attempt history stays).
    /// Delivered ones are sent again too: the operator asked for it by id. Returns the ids found.
    public func redeliver(_ ids: [Int64]) throws -> [Int64] {
        let now = Date().timeIntervalSince1970
        let found = try pool.write { db -> [Int64] in
            var found: [Int64] = []
            for id in ids {
                try db.execute(
                    sql: """
                        UPDATE deliveries SET state = 'pending', attempts = 0, created_at = ?, next_attempt_at = ?,
                          updated_at = ? WHERE id = ?
                        """, arguments: [now, now, now, id])
                if db.changesCount > 0 { found.append(id) }
            }
            return found
        }
        if !found.isEmpty, let observer = deliveryObserver.withLock({ $0 }) { observer.call(()) }
        return found
    }

    /// Puts every dead letter back in the queue. Returns their ids.
    public func redeliverDead() throws -> [Int64] {
        let ids = try pool.read { db in try Int64.fetchAll(db, sql: "SELECT id FROM deliveries WHERE state = 'dead'") }
        return try redeliver(ids)
    }

    static func delivery(_ row: Row) -> Delivery {
        var headers: [OutboundRequest.Header] = []
        let headerText: String = row["headers"]
        if case .object(let object)? = try? JSONReader.parse(Array(headerText.utf8)) {
            for member in object {
                headers.append(OutboundRequest.Header(name: member.key, value: member.value.stringValue ?? ""))
            }
        }
        return Delivery(
            id: row["id"], eventID: row["event_id"], rule: row["rule"], method: row["method"], url: row["url"],
            headers: headers, body: [UInt8]((row["body"] as Data?) ?? Data()),
            state: Delivery.State(rawValue: row["state"]) ?? .pending, attempts: row["attempts"],
            createdAt: row["created_at"], nextAttemptAt: row["next_attempt_at"], updatedAt: row["updated_at"],
            lastStatus: row["last_status"], lastError: row["last_error"], destination: row["destination"])
    }
}

extension Delivery {
    /// As `switchboard deliveries --json` and `GET /admin/deliveries` show it. The body is text when it is
    /// UTF-8, else base64 (`body_base64`).
    public func json(attempts: [DeliveryAttempt]) -> JSONValue {
        var out = JSONObject()
        out["id"] = .int(id)
        out["event_id"] = .string(eventID)
        out["rule"] = .string(rule)
        out["method"] = .string(method)
        out["url"] = .string(url)
        out["headers"] = .object(EventJournal.object(headers))
        out.setBody(body)
        out["state"] = .string(state.rawValue)
        out["attempts"] = .int(Int64(self.attempts))
        out["created_at"] = .double(createdAt)
        out["next_attempt_at"] = state == .pending ? .double(nextAttemptAt) : .null
        out["updated_at"] = .double(updatedAt)
        out["last_status"] = lastStatus.map { .int(Int64($0)) } ?? .null
        out["last_error"] = lastError.map(JSONValue.string) ?? .null
        out["attempt_log"] = .array(
            attempts.map { a in
                [
                    "number": .int(Int64(a.number)), "at": .double(a.at),
                    "status": a.status.map { .int(Int64($0)) } ?? .null, "latency_ms": .double(a.latencyMs),
                    "error": a.error.map(JSONValue.string) ?? .null,
                    "excerpt": a.excerpt.map(JSONValue.string) ?? .null,
                ]
            })
        return .object(out)
    }
}

extension JSONObject {
    /// Sets `body` to the bytes as text when they are UTF-8, else `body_base64` to their base64: how the
    /// deliveries listing and the console show a body.
    package mutating func setBody(_ bytes: [UInt8]) {
        if let text = String(validating: bytes, as: UTF8.self) {
            self["body"] = .string(text)
        } else {
            self["body_base64"] = .string(Data(bytes).base64EncodedString())
        }
    }
}
