import AsyncHTTPClient
import ClusterStore
import EventStore
import Foundation
import JSONCore
import NIOCore
import NIOHTTP1
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// Three real `switchboard serve` nodes on one PostgreSQL database (a cluster of the test's own, since it stops
/// the server), events streamed round-robin to all three the way a load balancer would, the processing node
/// killed with SIGKILL mid-stream, then PostgreSQL stopped for 5 s under load and started again.
@Suite struct ClusterBinaryTests {
    static let binary = repositoryRoot.appendingPathComponent(".build/debug/switchboard").path

    struct Node {
        var name: String
        var port: Int
        var process: Process
    }

    /// What the lanes got a 200 for: (call, n) pairs, and which calls were sent before PostgreSQL stopped.
    final class Tally: Sendable {
        let state = Mutex<(acked: Set<String>, count: Int)>(([], 0))
        func acked(_ call: String, _ n: Int) {
            state.withLock {
                $0.acked.insert("\(call)#\(n)")
                $0.count += 1
            }
        }
        var count: Int { state.withLock { $0.count } }
        var acked: Set<String> { state.withLock { $0.acked } }
        /// Events with an attempt that failed after PostgreSQL was stopped (acknowledged by a later attempt, or
        /// abandoned when the lanes stopped). A node may have spooled the failed attempt, and spooled events are
        /// not checked against the shared de-duplication keys when they are moved (README, "Several nodes",
        /// Limits): such an event may run once more than it was acknowledged. Every other event runs exactly
        /// once for its acknowledgement.
        let failedInOutage = Mutex(0)
        /// 1 until PostgreSQL stops, then 2 (new calls from there on).
        let phase = Mutex(1)
        let stop = Mutex(false)
        /// Ports of killed nodes (a balancer's health check would take them out).
        let dead = Mutex<Set<Int>>([])
    }

    func startNode(_ name: String, port: Int, store: String, rules: String, base: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "serve", "--rules", rules, "--data-dir", base + "/" + name, "--port", "\(port)", "--store", store,
            "--node-name", name, "--lease", "2s", "--dedupe-window", "300s", "--allow-http-to", "127.0.0.1/32",
            "--workers", "2", "--log-level", "info",
        ]
        _ = FileManager.default.createFile(atPath: base + "/\(name).log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: base + "/\(name).log"))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        return process
    }

    @Test func nothingAcknowledgedIsLostWhenTheProcessingNodeDiesOrTheDatabaseStops() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.binary),
            "build the binary first (make test runs swift build)")
        let cluster = try await TestPostgres.OwnCluster.create()
        defer { cluster.destroy() }
        let sink = try await LoopbackServer()
        let base = NSTemporaryDirectory() + "switchboard-cluster-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: base + "/rules", withIntermediateDirectories: true)
        // Counts every run in the store, checks each call's events arrive in order (n = 1, 2, 3, … per call), and
        // forwards (call, n) to the sink. The short wait keeps events in flight when the kill comes.
        try Data(
            """
            return { name = "count", on = "*",
              transform = function(event)
                store.shared.incr("events")
                local last = call.get("last") or 0
                if event.timestamp ~= last + 1 then store.shared.incr("disorder:" .. event.call_id) end
                call.set("last", event.timestamp)
                assert(http.get("\(sink.url("/slow?ms=20"))", { timeout = 10 }))
                return { call_id = event.call_id, n = event.timestamp }
              end,
              forward = "\(sink.url("/echo?via=forward"))" }
            """.utf8
        ).write(to: URL(fileURLWithPath: base + "/rules/count.lua"))

        var nodes: [Node] = []
        for name in ["n1", "n2", "n3"] {
            let port = freeLoopbackPort()
            nodes.append(
                Node(
                    name: name, port: port,
                    process: try startNode(name, port: port, store: cluster.url, rules: base + "/rules", base: base)))
        }
        defer { for node in nodes where node.process.isRunning { kill(node.process.processIdentifier, SIGKILL) } }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let quiet = TestPostgres.logger
        let upAndListed = await eventuallyAsync(60) {
            let live = (try? await PostgresJournal.listNodes(url: cluster.url, lease: 2, logger: quiet)) ?? []
            return live.filter(\.live).count == 3 && live.contains(where: \.processing)
        }
        try #require(upAndListed, "three nodes did not come up: see \(base)/n*.log")

        let template = try JSONReader.parse(
            Array(try Data(contentsOf: repositoryRoot.appendingPathComponent("samples/channel_create__inbound.json")))
        )
        .objectValue!
        let tally = Tally()
        let ports = nodes.map(\.port)

        // Each lane owns calls; each event of a call goes to the next node round-robin, the next event only after
        // the last one's 200 (Kazoo sends a call's events in order). A request that fails goes to the next node,
        // as a balancer retries; a repeat of one that had in fact been accepted is a duplicate (shared keys).
        @Sendable func lane(_ index: Int) async {
            var n: [String: Int] = [:]
            var turn = index
            while !tally.stop.withLock({ $0 }) {
                let call = "p\(tally.phase.withLock { $0 })-lane\(index)-\(turn % 2)"
                let next = (n[call] ?? 0) + 1
                var event = template
                event["call_id"] = .string(call)
                event["timestamp"] = .int(Int64(next))
                let body = (try? JSONWriter.encode(.object(event))) ?? []
                var attempt = turn
                var failedInOutage = false
                while !tally.stop.withLock({ $0 }) {
                    let port = ports[attempt % ports.count]
                    attempt += 1
                    if tally.dead.withLock({ $0.contains(port) }) { continue }
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/hooks/channel_create")
                    request.method = .POST
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.headers.add(name: "X-Hook-ID", value: "hook-cluster")
                    request.body = .bytes(ByteBuffer(bytes: body))
                    if let response = try? await http.execute(request, timeout: .seconds(10)), response.status == .ok {
                        tally.acked(call, next)
                        n[call] = next
                        break
                    }
                    if !failedInOutage, tally.phase.withLock({ $0 }) == 2 {
                        failedInOutage = true
                        tally.failedInOutage.withLock { $0 += 1 }
                    }
                    try? await Task.sleep(for: .milliseconds(20))
                }
                turn += 1
            }
        }
        let lanes = Task {
            await withDiscardingTaskGroup { group in for i in 0..<6 { group.addTask { await lane(i) } } }
        }

        // The processing node dies once 60 events were acknowledged.
        _ = await eventually(60) { tally.count >= 60 }
        let listed = try await PostgresJournal.listNodes(url: cluster.url, lease: 2, logger: quiet)
        let processing = try #require(listed.first(where: \.processing)?.name)
        let victim = try #require(nodes.first { $0.name == processing })
        tally.dead.withLock { _ = $0.insert(victim.port) }
        kill(victim.process.processIdentifier, SIGKILL)
        let atKill = tally.count
        // Another node takes over after the lease and the stream goes on.
        let tookOver = await eventuallyAsync(60) {
            let now = (try? await PostgresJournal.listNodes(url: cluster.url, lease: 2, logger: quiet)) ?? []
            return now.contains { $0.processing && $0.name != processing && $0.live }
        }
        #expect(tookOver, "no node took the processing lease over from \(processing)")
        _ = await eventually(60) { tally.count >= atKill + 60 }

        // PostgreSQL stops for 5 s under load (new calls from here: their order is not asserted, see below).
        tally.phase.withLock { $0 = 2 }
        let beforeStop = tally.count
        try await cluster.stop()
        try await Task.sleep(for: .seconds(5))  // the outage itself, not a wait for a condition
        let duringStop = tally.count - beforeStop
        try await cluster.start()
        _ = await eventually(60) { tally.count >= beforeStop + duringStop + 60 }
        tally.stop.withLock { $0 = true }
        await lanes.value

        // Every acknowledged event ran exactly once in the store's eyes (an event with a failed attempt during
        // the outage at most once more: see `Tally.failedInOutage`), and every forward reached the sink.
        let acked = tally.acked
        let mayRepeat = tally.failedInOutage.withLock { $0 }
        let reader = try await PostgresJournal.open(
            url: cluster.url, node: "test-reader", spoolDirectory: nil, logger: quiet)
        defer { reader.close() }
        var total: JSONValue? = nil
        let counted = await eventuallyAsync(90) {
            total =
                (try? await reader.fetchStoreRecords())?.first { $0.namespace == "shared" && $0.key == "events" }?.value
            let pending = (try? await reader.counts().pending) ?? -1
            guard let runs = total?.intValue else { return false }
            return runs >= acked.count && runs <= acked.count + mayRepeat && pending == 0
        }
        #expect(
            counted,
            "logs in \(base): store counted \(String(describing: total)) runs for \(acked.count) acknowledged events (\(mayRepeat) with an attempt that failed during the outage)"
        )
        let forwarded = await eventually(90) {
            let seen = Set(
                sink.requests.filter { $0.uri.contains("via=forward") }.compactMap { request -> String? in
                    guard let body = try? JSONReader.parse(Array(request.body.utf8)),
                        let call = body["call_id"]?.stringValue, let n = body["n"]?.intValue
                    else { return nil }
                    return "\(call)#\(n)"
                })
            return acked.isSubset(of: seen)
        }
        let states = (try? await reader.deliveryCounts(Delivery.State.allCases)) ?? [:]
        #expect(
            forwarded,
            "logs in \(base): some acknowledged events' forwards never reached the sink: \(sink.requests.count) requests, deliveries \(states)"
        )
        #expect(duringStop > 0, "no event was acknowledged while PostgreSQL was down (the spool should take them)")

        // Per-call order held for the calls streamed across the three nodes and the kill.
        let records = try await reader.fetchStoreRecords()
        let disordered = records.filter { $0.namespace == "shared" && $0.key.hasPrefix("disorder:p1-") }.map(\.key)
        #expect(disordered.isEmpty, "out of order: \(disordered)")
        let outageDisorder = records.filter { $0.namespace == "shared" && $0.key.hasPrefix("disorder:p2-") }.count
        print(
            "cluster: \(acked.count) acknowledged (\(atKill) before the kill, \(duringStop) while PostgreSQL was down), \(mayRepeat) with an attempt that failed during the outage, \(String(describing: total)) runs counted; calls out of order during the outage: \(outageDisorder)"
        )
        try? await sink.stop()
        try await http.shutdown()
    }
}
