public import EventStore
import Foundation
import JSONCore
import Logging
import NIOCore
import PostgresNIO
public import RuleEngine
import Synchronization

/// The outbox's queue and what the console and the admin API read, in PostgreSQL. The same rows and meanings
/// as SQLite's (`EventJournal+Deliveries.swift`, `EventJournal+Console.swift`).
extension PostgresJournal {
    static let deliveryColumns = """
        id, event_id, rule, method, url, headers, body, state, attempts, created_at, next_attempt_at, updated_at,
        last_status, last_error, destination
        """

    func fetchDeliveries(_ query: PostgresQuery) async throws -> [Delivery] {
        try await rows(query) { row in
            let r = row.makeRandomAccess()
            var headers: [OutboundRequest.Header] = []
            if case .object(let object)? = try? JSONReader.parse(Array(try r["headers"].decode(String.self).utf8)) {
                for member in object {
                    headers.append(OutboundRequest.Header(name: member.key, value: member.value.stringValue ?? ""))
                }
            }
            return Delivery(
                id: try r["id"].decode(Int64.self), eventID: try r["event_id"].decode(String.self),
                rule: try r["rule"].decode(String.self), method: try r["method"].decode(String.self),
                url: try r["url"].decode(String.self), headers: headers,
                body: Array(try r["body"].decode(ByteBuffer.self).readableBytesView),
                state: Delivery.State(rawValue: try r["state"].decode(String.self)) ?? .pending,
                attempts: try r["attempts"].decode(Int.self), createdAt: try r["created_at"].decode(Double.self),
                nextAttemptAt: try r["next_attempt_at"].decode(Double.self),
                updatedAt: try r["updated_at"].decode(Double.self),
                lastStatus: try r["last_status"].decode(Int?.self),
                lastError: try r["last_error"].decode(String?.self),
                destination: try r["destination"].decode(String.self))
        }
    }

    // MARK: DeliveryQueue

    public func observeDeliveries(_ observer: @escaping @Sendable () -> Void) {
        deliveryObserver.withLock { $0 = Callback { _ in observer() } }
    }

    /// Only the lease holder delivers, so the per-destination limit holds across the cluster exactly.
    public func pendingDestinations() async throws -> [String] {
        guard isProcessing else { return [] }
        return try await rows("SELECT DISTINCT destination FROM deliveries WHERE state = 'pending'") {
            try $0.decode(String.self)
        }
    }

    public func upcomingDeliveries(to destination: String, limit: Int) async throws -> [Delivery] {
        guard isProcessing else { return [] }
        return try await fetchDeliveries(
            """
            SELECT \(unescaped: Self.deliveryColumns) FROM deliveries WHERE state = 'pending' AND destination = \(destination)
            ORDER BY next_attempt_at, id LIMIT \(limit)
            """)
    }

    public func record(_ attempt: DeliveryAttempt, of id: Int64, result: AttemptResult, unchangedSince: Double?)
        async throws
    {
        let (state, next): (Delivery.State, Double) =
            switch result {
            case .delivered: (.delivered, attempt.at)
            case .retry(let at): (.pending, at)
            case .dead: (.dead, attempt.at)
            }
        let logger = self.logger
        try await bounded { [client] in
            try await Self.record(
                attempt, of: id, state: state, next: next, unchangedSince: unchangedSince, client, logger)
        }
    }

    private static func record(
        _ attempt: DeliveryAttempt, of id: Int64, state: Delivery.State, next: Double, unchangedSince: Double?,
        _ client: PostgresClient, _ logger: Logger
    ) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query(
                """
                INSERT INTO attempts (delivery_id, number, at, status, latency_ms, error, excerpt)
                VALUES (\(id), (SELECT count(*) + 1 FROM attempts WHERE delivery_id = \(id)), \(attempt.at),
                  \(attempt.status), \(attempt.latencyMs), \(attempt.error), \(attempt.excerpt))
                """, logger: logger)
            try await connection.query(
                """
                UPDATE deliveries SET state = \(state.rawValue), attempts = attempts + 1, next_attempt_at = \(next),
                  updated_at = \(attempt.at), last_status = \(attempt.status), last_error = \(attempt.error)
                WHERE id = \(id) AND (\(unchangedSince)::float8 IS NULL OR updated_at = \(unchangedSince))
                """, logger: logger)
        }
    }

    public func deliveryCounts(_ states: [Delivery.State]) async throws -> [Delivery.State: Int] {
        var counts: [Delivery.State: Int] = [:]
        let grouped = try await rows("SELECT state, count(*)::int8 FROM deliveries GROUP BY state") {
            try $0.decode((String, Int).self)
        }
        for (state, n) in grouped {
            if let state = Delivery.State(rawValue: state), states.contains(state), n > 0 { counts[state] = n }
        }
        return counts
    }

    // MARK: deliveries for the console and the admin API

    public func deliveries(_ filter: DeliveryFilter, limit: Int) async throws -> [Delivery] {
        let condition =
            switch filter {
            case .all: "true"
            case .pending: "state = 'pending'"
            case .failed: "state = 'pending' AND attempts > 0"
            case .dead: "state = 'dead'"
            case .delivered: "state = 'delivered'"
            }
        return try await fetchDeliveries(
            "SELECT \(unescaped: Self.deliveryColumns) FROM deliveries WHERE \(unescaped: condition) ORDER BY id DESC LIMIT \(limit)"
        )
    }

    public func delivery(_ id: Int64) async throws -> Delivery? {
        try await fetchDeliveries("SELECT \(unescaped: Self.deliveryColumns) FROM deliveries WHERE id = \(id)").first
    }

    public func deliveries(forEvent id: String) async throws -> [Delivery] {
        try await fetchDeliveries(
            "SELECT \(unescaped: Self.deliveryColumns) FROM deliveries WHERE event_id = \(id) ORDER BY id")
    }

    public func attempts(_ id: Int64) async throws -> [DeliveryAttempt] {
        try await rows(
            "SELECT number, at, status, latency_ms, error, excerpt FROM attempts WHERE delivery_id = \(id) ORDER BY number"
        ) { row in
            let (number, at, status, latency, error, excerpt) = try row.decode(
                (Int, Double, Int?, Double, String?, String?).self)
            return DeliveryAttempt(
                number: number, at: at, status: status, latencyMs: latency, error: error, excerpt: excerpt)
        }
    }

    public func redeliver(_ ids: [Int64]) async throws -> [Int64] {
        guard !ids.isEmpty else { return [] }
        let now = Date().timeIntervalSince1970
        let found = try await rows(
            """
            UPDATE deliveries SET state = 'pending', attempts = 0, created_at = \(now), next_attempt_at = \(now),
              updated_at = \(now) WHERE id = ANY(\(ids)) RETURNING id
            """
        ) { try $0.decode(Int64.self) }
        if !found.isEmpty, let observer = deliveryObserver.withLock({ $0 }) { observer.call(()) }
        return found.sorted()
    }

    public func redeliverDead() async throws -> [Int64] {
        try await redeliver(rows("SELECT id FROM deliveries WHERE state = 'dead'") { try $0.decode(Int64.self) })
    }

    // MARK: events for the console

    static let summaryColumns =
        "seq, id, received_at, hook, format, meta, done, done_at, name, call_id, other_leg, account_id, outcomes"

    func storedEvents(_ query: PostgresQuery, body: Bool) async throws -> [StoredEvent] {
        try await rows(query) { row in
            let r = row.makeRandomAccess()
            return StoredEvent(
                row: try r["seq"].decode(Int64.self), id: try r["id"].decode(String.self),
                receivedAt: try r["received_at"].decode(Double.self), hook: try r["hook"].decode(String?.self),
                format: try r["format"].decode(String.self), meta: try r["meta"].decode(String.self),
                done: try r["done"].decode(Bool.self), doneAt: try r["done_at"].decode(Double?.self),
                name: try r["name"].decode(String?.self), callID: try r["call_id"].decode(String?.self),
                otherLeg: try r["other_leg"].decode(String?.self),
                accountID: try r["account_id"].decode(String?.self),
                outcomes: try r["outcomes"].decode(String?.self),
                body: body ? Array(try r["body"].decode(ByteBuffer.self).readableBytesView) : nil)
        }
    }

    public func recentEvents(limit: Int, before: Int64?, name: String?, callID: String?, accountID: String?)
        async throws -> [StoredEvent]
    {
        var sql = "SELECT \(Self.summaryColumns) FROM events WHERE seq < $1"
        var binds = PostgresBindings()
        binds.append(before ?? Int64.max)
        if let name, !name.isEmpty {
            binds.append(name)
            sql +=
                name.contains(".") ? " AND name = $\(binds.count)" : " AND split_part(name, '.', 2) = $\(binds.count)"
        }
        for (column, value) in [("call_id", callID), ("account_id", accountID)] {
            guard let value, !value.isEmpty else { continue }
            binds.append(value)
            sql += " AND \(column) = $\(binds.count)"
        }
        binds.append(limit)
        sql += " ORDER BY seq DESC LIMIT $\(binds.count)"
        return try await storedEvents(PostgresQuery(unsafeSQL: sql, binds: binds), body: false)
    }

    public func storedEvent(_ id: String) async throws -> StoredEvent? {
        try await storedEvents(
            "SELECT \(unescaped: Self.summaryColumns), body FROM events WHERE id = \(id)", body: true
        ).first
    }

    public func callEvents(_ callIDs: [String], limit: Int) async throws -> [StoredEvent] {
        guard !callIDs.isEmpty else { return [] }
        return try await storedEvents(
            """
            SELECT \(unescaped: Self.summaryColumns) FROM events
            WHERE call_id = ANY(\(callIDs)) OR other_leg = ANY(\(callIDs))
            ORDER BY received_at, seq LIMIT \(limit)
            """, body: false)
    }

    /// Counts by state, for tests and `switchboard nodes`.
    public func counts() async throws -> (pending: Int, done: Int) {
        var pending = 0
        var done = 0
        let grouped = try await rows("SELECT done, count(*)::int8 FROM events GROUP BY done") {
            try $0.decode((Bool, Int).self)
        }
        for (isDone, n) in grouped {
            if isDone { done = n } else { pending = n }
        }
        return (pending, done)
    }

    /// Store keys of one namespace (or all), optionally one key, not expired: `switchboard store --store`.
    public func storeRecords(namespace: String?, key: String?) async throws -> [StoreRecord] {
        try await fetchStoreRecords().filter { record in
            (namespace == nil || record.namespace == namespace) && (key == nil || record.key == key)
                && (record.expiresAt ?? .infinity) > Date().timeIntervalSince1970 && record.value != nil
        }
    }
}
