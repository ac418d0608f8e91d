import AsyncHTTPClient
import EventStore
import Foundation
import JSONCore
import NIOCore
import NIOHTTP1
import Synchronization
import TestSupport
import Testing

/// The real `switchboard` binary, killed with SIGKILL while events stream in.
@Suite struct CrashTests {
    static let binary = repositoryRoot.appendingPathComponent(".build/debug/switchboard").path

    func freePort() throws -> Int { freeLoopbackPort() }

    func start(rules: String, data: String, port: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "serve", "--rules", rules, "--data-dir", data, "--port", "\(port)", "--allow-http-to", "127.0.0.1/32",
            "--log-level", "error", "--workers", "2",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// A new rules directory (created) and data directory (not yet) under the temporary directory.
    func directories(_ prefix: String) throws -> (rules: String, data: String) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base + "/rules", withIntermediateDirectories: true)
        return (base + "/rules", base + "/var")
    }

    func waitUntilUp(_ http: HTTPClient, port: Int) async throws {
        for _ in 0..<200 {
            if let response = try? await http.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(1)),
                response.status == .ok
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the server did not come up on port \(port)")
    }

    @Test func killMinusNineLosesNoAcknowledgedEvent() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.binary),
            "build the binary first (make test runs swift build)")
        let sink = try await LoopbackServer()
        defer { Task { try? await sink.stop() } }
        let (rules, data) = try directories("switchboard-crash")
        // The rule waits 300 ms before it delivers to the sink's /echo, so the events acknowledged in the last
        // 300 ms before the kill have not reached the sink: only replay after the restart can deliver them.
        try Data(
            """
            return { name = "deliver", on = "*", run = function(event)
              assert(http.get("\(sink.url("/slow?ms=300"))", { timeout = 10 }))
              local r, err = http.post("\(sink.url("/echo"))", { call_id = event.call_id }, { timeout = 10 })
              if not r then error(err) end
            end }
            """.utf8
        ).write(to: URL(fileURLWithPath: rules + "/deliver.lua"))
        // And a forward, which goes through the outbox once the event's rules finish.
        try Data(
            """
            return { name = "fwd", on = "*", transform = function(event) return { call_id = event.call_id } end,
              forward = "\(sink.url("/echo?via=forward"))" }
            """.utf8
        ).write(to: URL(fileURLWithPath: rules + "/forward.lua"))
        // And store writes: counted before a wait, so the kill finds many of them made but not committed.
        try Data(
            """
            return { name = "count", on = "*", run = function(event)
              store.shared.incr("events")
              store.incr("runs:" .. event.call_id)
              assert(http.get("\(sink.url("/slow?ms=200"))", { timeout = 10 }))
            end }
            """.utf8
        ).write(to: URL(fileURLWithPath: rules + "/count.lua"))
        let port = try freePort()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        var server = try start(rules: rules, data: data, port: port)
        try await waitUntilUp(http, port: port)

        let template = try JSONReader.parse(try sampleBody("channel_create__inbound.json")).objectValue!
        var acknowledged: [String] = []
        let clock = ContinuousClock()
        // The kill comes once enough events were acknowledged (not at a fixed time: a loaded machine may
        // acknowledge few in any given 600 ms), and the lanes keep sending 200 ms past it.
        let progress = KillProgress()
        let sendUntil = clock.now + .seconds(30)
        var sent = 0
        let pid = server.processIdentifier
        try await withThrowingTaskGroup(of: (String, Bool).self) { group in
            for lane in 0..<8 {
                group.addTask {
                    var ok: [String] = []
                    var i = 0
                    while clock.now < (progress.killedAt ?? sendUntil) + .milliseconds(200) {
                        var event = template
                        let id = "crash-\(lane)-\(i)"
                        event["call_id"] = .string(id)
                        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/hooks/channel_create")
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.body = .bytes(ByteBuffer(bytes: try JSONWriter.encode(.object(event))))
                        if let response = try? await http.execute(request, timeout: .seconds(2)), response.status == .ok
                        {
                            ok.append(id)
                            progress.acknowledged()
                        }
                        i += 1
                    }
                    return (ok.joined(separator: ","), true)
                }
            }
            group.addTask {
                while progress.count < 60, clock.now < sendUntil { try await Task.sleep(for: .milliseconds(10)) }
                kill(pid, SIGKILL)
                progress.killed(at: clock.now)
                return ("", false)
            }
            for try await (ids, isLane) in group where isLane && !ids.isEmpty {
                acknowledged += ids.split(separator: ",").map(String.init)
            }
        }
        #expect(await eventually(30) { !server.isRunning }, "the killed server did not exit")
        sent = acknowledged.count
        #expect(sent > 20, "too few events were acknowledged before the kill to mean anything: \(sent)")
        let deliveredBeforeRestart = Set(
            sink.requests.filter { $0.uri == "/echo" }.compactMap { Self.callID(in: $0.body) })
        let waiting = Set(acknowledged).subtracting(deliveredBeforeRestart)
        #expect(!waiting.isEmpty, "every acknowledged event was delivered before the kill; the test proved nothing")

        server = try start(rules: rules, data: data, port: port)
        // SIGKILL (a child inherits the test runner's blocked SIGTERM), and no `waitUntilExit`: it would hold one of
        // the pool's two threads until the child exits, and two such waits stall every test in the process.
        defer { kill(server.processIdentifier, SIGKILL) }
        try await waitUntilUp(http, port: port)
        let deadline = clock.now + .seconds(30)
        var missing = Set(acknowledged)
        var notForwarded = Set(acknowledged)
        while clock.now < deadline {
            missing.subtract(sink.requests.filter { $0.uri == "/echo" }.compactMap { Self.callID(in: $0.body) })
            notForwarded.subtract(
                sink.requests.filter { $0.uri == "/echo?via=forward" }.compactMap { Self.callID(in: $0.body) })
            if missing.isEmpty && notForwarded.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            missing.isEmpty,
            "\(missing.count) of \(sent) acknowledged events never reached the sink: \(missing.sorted().prefix(5))")
        #expect(
            notForwarded.isEmpty,
            "\(notForwarded.count) of \(sent) acknowledged events' forwards never reached the sink: \(notForwarded.sorted().prefix(5))"
        )

        // Every event the journal holds ran its store writes exactly once: none lost with the kill, none doubled
        // by the replay. (The journal may hold a few more than were acknowledged: committed, but killed before
        // the 200 went out.) Read from another process with `switchboard store list --json`.
        var journaled = 0
        var counts: [String: JSONValue] = [:]
        while clock.now < deadline {
            let journal = try EventJournal(directory: data)
            let (pending, done) = try journal.counts()
            journaled = pending + done
            counts = Dictionary(
                uniqueKeysWithValues: try await runCLI(["store", "list", "--json", "--data-dir", data]).compactMap {
                    row in
                    row["key"]?.stringValue.map { ($0, row["value"] ?? .null) }
                })
            if counts["events"] == .int(Int64(journaled)) && pending == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            counts["events"] == .int(Int64(journaled)),
            "shared counter \(String(describing: counts["events"])) for \(journaled) journaled events")
        let perCall = counts.filter { $0.key.hasPrefix("runs:") }
        #expect(perCall.count == journaled)
        #expect(perCall.values.allSatisfy { $0 == .int(1) }, "an event's writes landed twice")
        #expect(Set(acknowledged.map { "runs:" + $0 }).isSubset(of: perCall.keys))

        // `switchboard deliveries --json` reads the same outbox from another process while the server runs.
        let listed = try await runCLI(["deliveries", "--json", "--delivered", "--limit", "100000", "--data-dir", data])
        let listedCalls = Set(listed.compactMap { $0["body"]?.stringValue.flatMap(Self.callID(in:)) })
        #expect(listedCalls.isSuperset(of: acknowledged))
        print(
            "crash test: \(sent) events acknowledged (\(journaled) journaled), \(waiting.count) not yet delivered at the kill; all delivered after the restart: \(missing.isEmpty), all forwarded: \(notForwarded.isEmpty), store counter: \(String(describing: counts["events"]))"
        )
        try await http.shutdown()
    }

    /// A tick killed mid-run with SIGKILL: its store writes were not committed, and after the restart it runs
    /// again from the committed state (the missed tick runs at once), so every committed tick counted once.
    @Test func aTickKilledMidRunRunsAgainFromTheCommittedState() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the binary first")
        let sink = try await LoopbackServer()
        defer { Task { try? await sink.stop() } }
        let (rules, data) = try directories("switchboard-tick-crash")
        // Each tick counts itself, notes its number with its start time, then waits 1 s on the sink: a kill
        // lands inside a tick almost always.
        try Data(
            """
            return { name = "beat", every = 1, tick = function(now)
              local n = store.incr("ticks")
              store.set("tick:" .. n, now)
              assert(http.get("\(sink.url("/slow?ms=1000"))", { timeout = 10 }))
            end }
            """.utf8
        ).write(to: URL(fileURLWithPath: rules + "/beat.lua"))
        let port = try freePort()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        var server = try start(rules: rules, data: data, port: port)
        try await waitUntilUp(http, port: port)
        func committed() async throws -> [String: JSONValue] {
            Dictionary(
                uniqueKeysWithValues: try await runCLI([
                    "store", "list", "--rule", "beat", "--json", "--data-dir", data,
                ])
                .compactMap { row in row["key"]?.stringValue.map { ($0, row["value"] ?? .null) } })
        }
        // The first tick is due a second after start; wait for two committed and a third under way.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while clock.now < deadline {
            let done = try await committed()["ticks"]?.intValue ?? 0
            if done >= 2, sink.requests.filter({ $0.uri.hasPrefix("/slow") }).count > done { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(server.processIdentifier, SIGKILL)
        #expect(await eventually(30) { !server.isRunning }, "the killed server did not exit")
        let before = try await committed()
        let count = try #require(before["ticks"]?.intValue)
        #expect(count >= 2)
        // Exactly the committed ticks' notes are there: the cut tick's incr and note were not committed.
        #expect(Set(before.keys) == Set(["ticks"] + (1...count).map { "tick:\($0)" }))
        let restart = Date().timeIntervalSince1970.rounded(.down)

        server = try start(rules: rules, data: data, port: port)
        // SIGKILL (a child inherits the test runner's blocked SIGTERM), and no `waitUntilExit`: it would hold one of
        // the pool's two threads until the child exits, and two such waits stall every test in the process.
        defer { kill(server.processIdentifier, SIGKILL) }
        try await waitUntilUp(http, port: port)
        var after: [String: JSONValue] = [:]
        while clock.now < deadline + .seconds(30) {
            after = try await committed()
            if (after["ticks"]?.intValue ?? 0) > count { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        // The next number is count + 1, run after the restart: the cut tick ran again, from the committed count.
        let next = try #require(after["tick:\(count + 1)"]?.doubleValue)
        #expect(next >= restart)
        let total = try #require(after["ticks"]?.intValue)
        #expect(Set(after.keys) == Set(["ticks"] + (1...total).map { "tick:\($0)" }))
        try await http.shutdown()
    }

    /// Runs the binary with `arguments`, expects exit 0 and a JSON array on standard output.
    func runCLI(_ arguments: [String]) async throws -> [JSONValue] {
        let cli = try await runToEnd(Self.binary, arguments)
        #expect(cli.status == 0, "switchboard \(arguments.joined(separator: " "))")
        return try JSONReader.parse(Array(cli.text.utf8)).arrayValue ?? []
    }

    @Test func aReadOnlyDataDirectoryStopsServeWithAClearError() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the binary first")
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchboard-readonly-\(UUID().uuidString)"
        ).path
        let rules = base + "/rules", data = base + "/var"
        try FileManager.default.createDirectory(atPath: rules, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try Data(#"return { name = "r", on = "*", run = function() end }"#.utf8).write(
            to: URL(fileURLWithPath: rules + "/r.lua"))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: base)
        try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: data)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: data) }
        let arguments = ["serve", "--rules", rules, "--data-dir", data, "--port", "\(try freePort())"]
        // root writes anywhere: run as nobody, for whom the directory really is read-only.
        let (status, text) =
            geteuid() == 0
            ? try await runToEnd(
                "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Self.binary] + arguments,
                capturing: .errors)
            : try await runToEnd(Self.binary, arguments, capturing: .errors)
        #expect(status != 0)
        #expect(text.contains("cannot open the journal \(data)/switchboard.sqlite"), "\(text)")
        #expect(text.contains("writable"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: data + "/switchboard.sqlite"))
    }

    static func callID(in body: String) -> String? {
        (try? JSONReader.parse(body.utf8))?["call_id"]?.stringValue
    }
}

/// How far the kill -9 test's senders got, and when the server was killed (shared by its tasks).
final class KillProgress: Sendable {
    private let state = Mutex<(count: Int, killedAt: ContinuousClock.Instant?)>((0, nil))
    var count: Int { state.withLock { $0.count } }
    var killedAt: ContinuousClock.Instant? { state.withLock { $0.killedAt } }
    func acknowledged() { state.withLock { $0.count += 1 } }
    func killed(at instant: ContinuousClock.Instant) { state.withLock { $0.killedAt = instant } }
}
