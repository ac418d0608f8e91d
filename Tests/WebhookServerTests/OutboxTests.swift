import Delivery
import EventStore
import Foundation
import JSONCore
import NIOHTTP1
import RuleEngine
import TestSupport
import Testing
import WebhookServer

/// Forwards go through the journal's outbox: retried until a 2xx, dead letters after the last attempt,
/// redelivery, a per-destination limit. Real server, real SQLite file, real loopback upstreams.
@Suite struct OutboxTests {
    static func forwardingRule(to url: String) -> [String: String] {
        [
            "fwd.lua": """
            return { name = "fwd", on = "channel_create",
              transform = function(event) return { call_id = event.call_id } end,
              forward = "\(url)" }
            """
        ]
    }

    static func event(_ callID: String) throws -> [UInt8] {
        var event = try JSONReader.parse(try sampleBody("channel_create__inbound.json")).objectValue!
        event["call_id"] = .string(callID)
        return try JSONWriter.encode(.object(event))
    }

    /// Sends a channel_create per call id; each must be accepted.
    static func post(_ server: ServerFixture, _ calls: [String]) async throws {
        for call in calls {
            #expect(try await server.send(.POST, "/hooks/channel_create", body: try event(call)).status == 200)
        }
    }

    static func fast(_ c: inout ServerConfiguration) {
        c.allowHTTPTo = [CIDR("127.0.0.1/32")!]
        c.outbox.initialBackoff = 0.05
        c.outbox.maxBackoff = 0.2
        // Long enough that no attempt times out on a loaded machine (a 1 s limit once turned a 503 into a
        // timeout in a full parallel run).
        c.outbox.timeout = answerTimeout
    }

    @Test func anUpstreamThatIsDownAndComesBackGetsEveryForward() async throws {
        // Find a free port, then leave nothing listening on it: connections are refused. Below the kernel's
        // ephemeral range (32768 and up), so that no other test's server on port 0 can be given it meanwhile.
        // (Runs that saw 5 delivered and fewer received here were the upstream answering requests that came
        // the moment it bound, before it recorded anything: `LoopbackServer` now records from the first.)
        var probe: LoopbackServer? = nil
        for _ in 0..<200 where probe == nil { probe = try? await LoopbackServer(port: Int.random(in: 20_000..<32_000)) }
        let port = try #require(probe, "no free port below 32000").port
        try await probe?.stop()
        let url = "http://127.0.0.1:\(port)/echo"
        try await withServer(
            rules: Self.forwardingRule(to: url), journal: true,
            configure: {
                Self.fast(&$0)
                $0.outbox.maxAttempts = 1000
            }
        ) { server in
            let journal = try #require(server.journal)
            let calls = (0..<5).map { "down-\($0)" }
            try await Self.post(server, calls)
            // Every forward has failed at least once while the upstream is down.
            #expect(await server.eventually { ((try? journal.deliveries(.failed).count) ?? 0) == 5 })
            #expect(try journal.deliveryCounts()[.delivered] == nil)

            // Another test's connection may hold the port for a moment (it was free, not reserved): try again.
            var bound: LoopbackServer? = nil
            for _ in 0..<100 where bound == nil {
                bound = try? await LoopbackServer(port: port)
                if bound == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let upstream = try #require(bound, "port \(port) stayed taken")
            defer { Task { try? await upstream.stop() } }
            #expect(await server.eventually { (try? journal.deliveryCounts()[.delivered]) == 5 })
            let received = Set(
                upstream.requests.compactMap { (try? JSONReader.parse($0.body.utf8))?["call_id"]?.stringValue })
            #expect(received == Set(calls))
            // At least once: an attempt that connected just as the upstream came back can time out before its
            // answer and be sent again, so only the per-delivery records are exact here.
            #expect(upstream.requests.count >= 5)
            for delivery in try journal.deliveries(.delivered) {
                let attempts = try journal.attempts(delivery.id)
                #expect(attempts.count >= 2)
                #expect(attempts.first?.status == nil)
                #expect(attempts.first?.error?.isEmpty == false)
                #expect(attempts.last?.status == 200)
                #expect(attempts.last?.excerpt?.contains("call_id") == true)
                #expect(attempts.map(\.number) == Array(1...attempts.count))
            }
            #expect(server.metrics.value("switchboard_deliveries_total", [("result", "delivered")]) == 5)
        }
    }

    @Test func failuresBecomeDeadLettersThatCanBeRedelivered() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        upstream.failing = true
        try await withServer(
            rules: Self.forwardingRule(to: upstream.url("/switch")), journal: true,
            configure: {
                Self.fast(&$0)
                $0.outbox.maxAttempts = 3
            }
        ) { server in
            let journal = try #require(server.journal)
            try await Self.post(server, ["dead-1", "dead-2"])
            #expect(await server.eventually { (try? journal.deliveryCounts()[.dead]) == 2 })
            let dead = try journal.deliveries(.dead)
            for delivery in dead {
                let attempts = try journal.attempts(delivery.id)
                #expect(attempts.map(\.status) == [503, 503, 503])
                #expect(attempts.allSatisfy { $0.excerpt == "down for maintenance" && $0.latencyMs >= 0 })
                #expect(delivery.lastStatus == 503)
            }
            #expect(upstream.requests.filter { $0.uri == "/switch" }.count == 6)
            #expect(server.metrics.value("switchboard_deliveries_total", [("result", "dead")]) == 2)

            // The admin listing shows the same, with the attempt log; a wrong filter is a 400 that says why.
            let listing = try await server.send(.GET, "/admin/deliveries?state=dead")
            #expect(listing.status == 200)
            let items = try JSONReader.parse(listing.body.utf8).arrayValue ?? []
            #expect(items.count == 2)
            #expect(items.first?["attempt_log"]?.arrayValue?.count == 3)
            #expect(items.first?["state"]?.stringValue == "dead")
            let bad = try await server.send(.GET, "/admin/deliveries?state=gone")
            #expect(bad.status == 400)
            #expect(bad.body.contains("pending"))

            // The upstream is fixed; the operator redelivers the dead letters.
            upstream.failing = false
            #expect(try Set(journal.redeliverDead()) == Set(dead.map(\.id)))
            #expect(await server.eventually { (try? journal.deliveryCounts()[.delivered]) == 2 })
            #expect(try journal.deliveryCounts()[.dead] == nil)
            for delivery in dead {
                #expect(try journal.attempts(delivery.id).map(\.status) == [503, 503, 503, 200])
            }
        }
    }

    @Test func aForwardRefusedByPolicyIsADeadLetterAtOnce() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        try await withServer(
            rules: Self.forwardingRule(to: upstream.url("/echo")), journal: true,
            configure: {
                Self.fast(&$0)
                $0.allowHTTPTo = []  // loopback is internal: refused
            }
        ) { server in
            let journal = try #require(server.journal)
            try await Self.post(server, ["refused"])
            #expect(await server.eventually { (try? journal.deliveryCounts()[.dead]) == 1 })
            let dead = try #require(try journal.deliveries(.dead).first)
            #expect(dead.attempts == 1)
            #expect(dead.lastError?.contains("allow it with --allow-http-to") == true)
            #expect(upstream.requests.isEmpty)
        }
    }

    @Test func attemptsToOneDestinationAreLimited() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        try await withServer(
            // Each attempt takes 1.5 s: all eight forwards are queued long before the first ends, even on a busy
            // machine, so the limit is reached (and must hold).
            rules: Self.forwardingRule(to: upstream.url("/slow?ms=1500")), journal: true,
            configure: {
                Self.fast(&$0)
                $0.outbox.perDestination = 2
            }
        ) { server in
            let journal = try #require(server.journal)
            try await Self.post(server, (0..<8).map { "c\($0)" })
            #expect(await server.eventually { (try? journal.deliveryCounts()[.delivered]) == 8 })
            #expect(upstream.maxConcurrent == 2)
            #expect(upstream.requests.count == 8)  // each delivered once
        }
    }

    @Test func aBusyDestinationDoesNotHoldBackAnother() async throws {
        let slow = try await LoopbackServer()
        let quick = try await LoopbackServer()
        defer {
            Task {
                try? await slow.stop()
                try? await quick.stop()
            }
        }
        let rules = [
            "a.lua": """
            return { name = "a", on = "channel_create", forward = "\(slow.url("/slow?ms=1000"))" }
            """,
            "b.lua": """
            return { name = "b", on = "channel_answer", forward = "\(quick.url("/echo"))" }
            """,
        ]
        try await withServer(
            rules: rules, journal: true,
            configure: {
                Self.fast(&$0)
                $0.outbox.perDestination = 1
            }
        ) { server in
            let journal = try #require(server.journal)
            // A backlog for the slow destination (100 s of work at one at a time)...
            try await Self.post(server, (0..<100).map { "a\($0)" })
            // ...and then one forward elsewhere, due after all of them.
            let answer = try await server.send(
                .POST, "/hooks/channel_answer", body: try sampleBody("channel_answer__inbound.json"))
            #expect(answer.status == 200)
            #expect(await server.eventually { quick.requests.count == 1 })
            // Behind the backlog it would have waited for all 100; a busy machine may be slow, not that slow.
            let sent = slow.requests.count
            #expect(sent < 50, "the quick forward waited behind \(sent) of the slow destination's")
            #expect(try journal.deliveries(.pending, limit: 1000).count > 0)
            #expect(slow.maxConcurrent == 1)
        }
    }

    @Test func aFullJournalAnswers503WithTheReasonAndKeepsWhatItAcknowledged() async throws {
        try await withServer(rules: ["r.lua": recordingRule], journal: true, journalPages: 40) { server in
            let journal = try #require(server.journal)
            var acknowledged = 0
            var refusal: (status: Int, body: String)? = nil
            for i in 0..<400 {
                // ~8 KB each: the 160 KiB file fills within a few dozen.
                var event = try JSONReader.parse(try Self.event("full-\(i)")).objectValue!
                event["padding"] = .string(String(repeating: "x", count: 8000))
                let answer = try await server.send(
                    .POST, "/hooks/channel_create", body: try JSONWriter.encode(.object(event)))
                if answer.status == 200 {
                    acknowledged += 1
                } else {
                    refusal = (answer.status, answer.body)
                    break
                }
            }
            let refused = try #require(refusal, "the journal never filled up")
            #expect(refused.status == 503)
            #expect(refused.body.contains("disk is full"))
            #expect(refused.body.contains("\"code\":\"journal\""))
            #expect(acknowledged > 0)
            let counts = try journal.counts()
            #expect(counts.pending + counts.done == acknowledged)
            #expect(server.metrics.value("switchboard_journal_failures_total") == 1)
        }
    }
}
