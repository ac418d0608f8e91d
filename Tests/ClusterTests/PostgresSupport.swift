import ClusterStore
import EventStore
import Foundation
import Logging
import PostgresNIO
import TestSupport
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
    ///
    /// The script (initdb, pg_ctl) runs for seconds, and the test waits for it on a thread of its own
    /// (`onOwnThread`): on one of the threads Swift's tasks share (two on a 2-core machine) it held that
    /// thread while every other test ran, and with another test blocking the second one, a loopback HTTP
    /// call elsewhere ran past its 5 s timeout.
    final class OwnCluster: Sendable {
        let directory: String
        let url: String

        private init(directory: String, url: String) {
            self.directory = directory
            self.url = url
        }

        /// Makes a cluster in a new directory and starts it (and deletes it again when that fails).
        static func create() async throws -> OwnCluster {
            let directory = NSTemporaryDirectory() + "switchboard-pg-" + UUID().uuidString.prefix(8)
            do {
                return OwnCluster(directory: directory, url: try await script("start", directory))
            } catch {
                _ = try? await script("destroy", directory)
                throw error
            }
        }

        func stop() async throws { _ = try await Self.script("stop", directory) }
        func start() async throws { _ = try await Self.script("start", directory) }
        /// (Blocking: for a `defer`, once the test is over; `pg_ctl -m immediate` and a directory's removal.)
        func destroy() { _ = try? Self.waitForScript("destroy", directory) }

        static func script(_ command: String, _ directory: String) async throws -> String {
            try await onOwnThread { try waitForScript(command, directory) }
        }

        /// Runs the script with posix_spawn and waits for it with waitpid. (Foundation's `Process` lost track
        /// of it here: the script starts a server that outlives it, and `waitUntilExit` never returned.) The
        /// script gets standard input, output and error only: a pipe another test has open at that moment
        /// (`runToEnd`) would otherwise stay open in the server for as long as it runs, and that test's read
        /// would wait for the server's end.
        private static func waitForScript(_ command: String, _ directory: String) throws -> String {
            let output = directory + ".out"
            let arguments = [
                "/bin/bash", "-c",
                // (Swift's Glibc module does not offer posix_spawn_file_actions_addclosefrom_np: bash closes them.)
                "for fd in /proc/$$/fd/*; do n=${fd##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\"; done; "
                    + "exec \"$0\" \"$1\" \"$2\" >\"$3\" </dev/null",
                repositoryRoot.appendingPathComponent("scripts/pg_cluster.sh").path, command, directory, output,
            ]
            var argv = arguments.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var pid = pid_t()
            let spawned = posix_spawn(&pid, "/bin/bash", nil, nil, &argv, environ)
            guard spawned == 0 else { throw TestSetupError("could not run scripts/pg_cluster.sh (\(spawned))") }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: output)
            guard status == 0 else {
                throw TestSetupError("scripts/pg_cluster.sh \(command) \(directory) failed (status \(status))")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
