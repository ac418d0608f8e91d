import ClusterStore
import EventStore
import Foundation
import Logging
import PostgresNIO
import Testing

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// The PostgreSQL server `scripts/with_postgres.sh` started (`make test` runs the tests through it). Without
/// it the PostgreSQL tests fail (they never skip): the message says how to run them.
enum TestPostgres {
    static var url: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["SWITCHBOARD_TEST_POSTGRES"], !url.isEmpty else {
                throw TestSetupError(
                    "SWITCHBOARD_TEST_POSTGRES is not set: run the tests with `make test` or `scripts/with_postgres.sh swift test`, which start a throwaway PostgreSQL"
                )
            }
            return url
        }
    }

    static let logger: Logger = {
        var logger = Logger(label: "test.postgres")
        logger.logLevel = .error
        return logger
    }()

    /// A new empty database on the test server; returns its URL. Each test gets its own.
    static func freshDatabase() async throws -> String {
        let base = try url
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        try await admin(base, "CREATE DATABASE \(name)")
        return base.replacingOccurrences(of: "/switchboard?", with: "/\(name)?")
    }

    /// Runs one statement on the database a URL names.
    static func admin(_ url: String, _ sql: String) async throws {
        let parsed = try PostgresURL(url)
        let client = PostgresClient(
            configuration: .init(
                host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
                database: parsed.database, tls: .disable), backgroundLogger: logger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    /// A cluster of its own (scripts/pg_cluster.sh), for tests that stop the server.
    final class OwnCluster: Sendable {
        let directory: String
        let url: String

        init() throws {
            directory = NSTemporaryDirectory() + "switchboard-pg-" + UUID().uuidString.prefix(8)
            url = try Self.script("start", directory)
        }

        func stop() throws { _ = try Self.script("stop", directory) }
        func start() throws { _ = try Self.script("start", directory) }
        func destroy() { _ = try? Self.script("destroy", directory) }

        static func script(_ command: String, _ directory: String) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = [
                repositoryRoot.appendingPathComponent("scripts/pg_cluster.sh").path, command, directory,
            ]
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw TestSetupError("scripts/pg_cluster.sh \(command) failed (\(process.terminationStatus))")
            }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
