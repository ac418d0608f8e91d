import EventStore
public import Foundation
import Logging
import NIOSSL
import PostgresNIO
import RuleEngine

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]` (also `postgresql://`).
/// The password may come from `PGPASSWORD` instead of the URL.
public struct PostgresURL: Sendable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: String

    public init(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let example = "postgres://USER@HOST:PORT/DB, e.g. postgres://switchboard@127.0.0.1:5432/switchboard"
        guard let url = URLComponents(string: text), let scheme = url.scheme,
            scheme == "postgres" || scheme == "postgresql"
        else { throw JournalError("--store \(Self.redact(text)) is not a PostgreSQL URL: write \(example)") }
        guard let host = url.host, !host.isEmpty else {
            throw JournalError("--store \(Self.redact(text)) names no host: write \(example)")
        }
        guard let user = url.user, !user.isEmpty else {
            throw JournalError("--store \(Self.redact(text)) names no user: write \(example)")
        }
        let database = String(url.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else {
            throw JournalError("--store \(Self.redact(text)) names no database: write \(example)")
        }
        self.host = host
        // The URL parser takes any digits; NIO stops the process on a port past 65535 when it connects.
        if let port = url.port, !(1...65_535).contains(port) {
            throw JournalError("--store \(Self.redact(text)) has port \(port): a port is 1-65535")
        }
        self.port = url.port ?? 5432
        self.user = user.removingPercentEncoding ?? user
        self.password = url.password.map { $0.removingPercentEncoding ?? $0 } ?? environment["PGPASSWORD"]
        self.database = database
        self.sslMode = url.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer"
        guard ["disable", "prefer", "require"].contains(sslMode) else {
            throw JournalError("--store: sslmode=\(sslMode) is not one of disable, prefer, require")
        }
    }

    /// The URL without its password, for logs and messages.
    public var redacted: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    static func redact(_ text: String) -> String {
        guard var url = URLComponents(string: text), url.password != nil else { return text }
        url.password = "***"
        return url.string ?? text
    }

    /// Connects once and hangs up: the pool retries a refused connection quietly, this says why it failed
    /// ("connection refused", "password authentication failed", "database … does not exist").
    func probe(logger: Logger) async throws {
        try await connect(logger: logger).close()
    }

    /// One connection of its own, outside the pool.
    func connect(logger: Logger) async throws -> PostgresConnection {
        let tls: PostgresConnection.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require": .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        return try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
    }

    var configuration: PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require": .require(.makeClientConfiguration())
            default: .prefer(.makeClientConfiguration())
            }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(2)
        configuration.options.maximumConnections = 16
        return configuration
    }
}

/// The schema, created and migrated by the server. Each migration runs once, in order, in a transaction that
/// holds an advisory lock: two nodes starting at once take turns, and the second finds it done.
enum PostgresSchema {
    /// Migrations by version. Never edit one that has shipped; add the next.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE events (
              seq BIGSERIAL NOT NULL UNIQUE,
              id TEXT PRIMARY KEY,
              received_at DOUBLE PRECISION NOT NULL,
              hook TEXT,
              format TEXT NOT NULL,
              body BYTEA NOT NULL,
              meta TEXT NOT NULL,
              accepted_by TEXT,
              done BOOLEAN NOT NULL DEFAULT false,
              done_at DOUBLE PRECISION,
              name TEXT,
              call_id TEXT,
              other_leg TEXT,
              account_id TEXT,
              outcomes TEXT
            )
            """,
            "CREATE INDEX events_pending ON events(seq) WHERE NOT done",
            "CREATE INDEX events_done_at ON events(done_at) WHERE done",
            "CREATE INDEX events_call ON events(call_id) WHERE call_id IS NOT NULL",
            "CREATE INDEX events_other_leg ON events(other_leg) WHERE other_leg IS NOT NULL",
            """
            CREATE TABLE deliveries (
              id BIGSERIAL PRIMARY KEY,
              event_id TEXT NOT NULL,
              rule TEXT NOT NULL,
              method TEXT NOT NULL,
              url TEXT NOT NULL,
              headers TEXT NOT NULL,
              body BYTEA NOT NULL,
              state TEXT NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0,
              created_at DOUBLE PRECISION NOT NULL,
              next_attempt_at DOUBLE PRECISION NOT NULL,
              destination TEXT NOT NULL,
              updated_at DOUBLE PRECISION NOT NULL,
              last_status INTEGER,
              last_error TEXT
            )
            """,
            "CREATE INDEX deliveries_due ON deliveries(state, destination, next_attempt_at)",
            "CREATE INDEX deliveries_event ON deliveries(event_id)",
            """
            CREATE TABLE attempts (
              delivery_id BIGINT NOT NULL,
              number INTEGER NOT NULL,
              at DOUBLE PRECISION NOT NULL,
              status INTEGER,
              latency_ms DOUBLE PRECISION NOT NULL,
              error TEXT,
              excerpt TEXT
            )
            """,
            "CREATE INDEX attempts_delivery ON attempts(delivery_id)",
            """
            CREATE TABLE store (
              namespace TEXT NOT NULL,
              key TEXT NOT NULL,
              value TEXT NOT NULL,
              expires_at DOUBLE PRECISION,
              seq BIGINT NOT NULL,
              PRIMARY KEY (namespace, key)
            )
            """,
            "CREATE TABLE dedup (key TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)",
            """
            CREATE TABLE leases (
              name TEXT PRIMARY KEY, node TEXT NOT NULL, epoch BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE nodes (
              name TEXT PRIMARY KEY,
              holder TEXT NOT NULL,
              version TEXT NOT NULL,
              rules_hash TEXT NOT NULL,
              in_flight INTEGER NOT NULL,
              spooled INTEGER NOT NULL,
              started_at DOUBLE PRECISION NOT NULL,
              heartbeat_at DOUBLE PRECISION NOT NULL
            )
            """,
            // Every node's rejected requests (each node also keeps them as files in its data directory).
            """
            CREATE TABLE rejected (
              id BIGSERIAL PRIMARY KEY,
              node TEXT NOT NULL,
              received_at DOUBLE PRECISION NOT NULL,
              meta TEXT NOT NULL,
              body BYTEA NOT NULL
            )
            """,
        ]
    ]

    static let lockKey: Int64 = 0x5377_6974_6368  // "Switch"

    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS switchboard_schema (
                  version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """, logger: logger)
            var current = 0
            for try await version in try await connection.query(
                "SELECT coalesce(max(version), 0) FROM switchboard_schema", logger: logger
            ).decode(Int.self) {
                current = version
            }
            guard current <= migrations.count else {
                throw JournalError(
                    "the database's schema is version \(current), newer than this switchboard knows (\(migrations.count)): upgrade this node"
                )
            }
            for (index, statements) in migrations.enumerated() where index + 1 > current {
                for statement in statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO switchboard_schema (version) VALUES (\(index + 1))", logger: logger)
                logger.info("PostgreSQL schema migrated to version \(index + 1)")
            }
        }
    }
}

extension PostgresJournal {
    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        try await Deadline.run(.seconds(30)) { try await PostgresSchema.migrate(client, logger: logger) }
    }
}
