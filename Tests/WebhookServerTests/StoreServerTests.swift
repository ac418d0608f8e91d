import Delivery
import EventStore
import Foundation
import JSONCore
import NIOHTTP1
import RuleEngine
import TestSupport
import Testing
import WebhookServer

@Suite struct StoreServerTests {
    /// Sends `bodies` with at most `lanes` requests in flight, each lane in order; every answer must be 200.
    static func send(_ server: ServerFixture, lanes: [[(String, [UInt8])]]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in lanes {
                group.addTask {
                    for (hook, body) in lane {
                        let status = try await server.send(.POST, "/hooks/\(hook)", body: body).status
                        #expect(status == 200)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func aCounterAcrossFourWorkersCountsEveryEventOnceAndSurvivesARestart() async throws {
        let rule = """
            return { name = "count", on = "channel_create", run = function(event)
              store.shared.incr("events")
              store.incr("per:" .. event.call_id)
            end }
            """
        var directory: URL? = nil
        try await withServer(rules: ["count.lua": rule], journal: true, configure: { $0.workers = 4 }) { server in
            let body = try sampleBody("channel_create__inbound.json", callID: "x")
            let template = String(decoding: body, as: UTF8.self)
            let lanes = (0..<25).map { lane in
                (0..<40).map { i in
                    (
                        "channel_create",
                        Array(template.replacingOccurrences(of: "\"x\"", with: "\"c-\(lane)-\(i)\"").utf8)
                    )
                }
            }
            try await Self.send(server, lanes: lanes)
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) == 1000
                })
            #expect(server.dispatcher.store.records(namespace: "shared").first?.value == .int(1000))
            #expect(server.dispatcher.store.records(namespace: "rule:count").count == 1000)
            directory = server.dataDirectory
        }
        // After shutdown the file holds what memory held: every event's writes, once.
        let journal = try EventJournal(directory: try #require(directory).path)
        #expect(try journal.storeRecords(namespace: "shared", key: "events").first?.value == .int(1000))
        let perCall = try journal.storeRecords(namespace: "rule:count", key: nil)
        #expect(perCall.count == 1000 && perCall.allSatisfy { $0.value == .int(1) })
        #expect(try journal.counts().done == 1000)
        let reloaded = RuleStore(records: try journal.storeRecords())
        #expect(reloaded.records(namespace: "shared").first?.value == .int(1000))
    }

    /// 200 calls, each sent create → answer → destroy (the next only after the previous one's 200), all calls at
    /// once; the create rule waits on a slow upstream, so without per-call order the answer would overtake it.
    @Test func eventsOfOneCallRunInTheOrderTheyWereAccepted() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "order", on = { "channel_create", "channel_answer", "channel_destroy" },
              run = function(event)
                if event.name == "channel_create" then http.get("\(upstream.url("/slow?ms=300"))", { timeout = 10 }) end
                local seen = call.get("seen") or {}
                seen[#seen + 1] = event.name
                call.set("seen", seen)
              end }
            """
        try await withServer(
            rules: ["order.lua": rule],
            configure: {
                $0.workers = 2
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
            }
        ) { server in
            let names = ["channel_create", "channel_answer", "channel_destroy"]
            let lanes = try (0..<200).map { call in
                try names.map { name in
                    (name, try sampleBody("\(name)__inbound.json", callID: "order-\(call)"))
                }
            }
            try await Self.send(server, lanes: lanes)
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) == 600
                })
            var wrong: [String] = []
            for call in 0..<200 {
                let seen = server.dispatcher.store.records(namespace: "call:order-\(call)").first?.value
                if seen != .array(names.map(JSONValue.string)) {
                    wrong.append("order-\(call): \(String(describing: seen))")
                }
            }
            #expect(wrong.count == 0, "\(wrong.count) calls saw their events out of order: \(wrong.prefix(3))")
            #expect(upstream.maxConcurrent > 5, "calls did not run side by side (max \(upstream.maxConcurrent))")
        }
    }
}
