import Delivery
import EventStore
import Foundation
import JSONCore
import Logging
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

    /// A tick every second while events stream in: ticks keep coming, never two at once, each one's
    /// forward reaches the sink, and the timer's due time is committed with its writes.
    @Test func aTickUnderLoadRunsAloneOnSchedule() async throws {
        let sink = try await LoopbackServer()
        defer { Task { try? await sink.stop() } }
        let rules = [
            "beat.lua": """
            return { name = "beat", every = 1, tick = function(now)
              if store.get("running") then error("two ticks at once") end
              store.set("running", true)
              local n = store.incr("ticks")
              http.get("\(sink.url("/slow?ms=200"))", { timeout = 10 })
              store.set("running", nil)
              forward("\(sink.url("/echo"))", { n = n, now = now })
            end }
            """,
            "count.lua": """
            return { name = "count", on = "channel_create", run = function(event) store.shared.incr("events") end }
            """,
        ]
        var directory: URL? = nil
        try await withServer(
            rules: rules, journal: true,
            configure: {
                $0.workers = 2
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
            }
        ) { server in
            // Events keep streaming (8 at a time) until three ticks have run among them.
            let ticks = { server.metrics.value("switchboard_ticks_total", [("rule", "beat"), ("outcome", "ok")]) }
            var sent = 0
            while ticks() < 3, sent < 100_000 {
                let lanes = try (0..<8).map { lane in
                    try (0..<25).map { i in
                        (
                            "channel_create",
                            try sampleBody("channel_create__inbound.json", callID: "load-\(sent)-\(lane)-\(i)")
                        )
                    }
                }
                try await Self.send(server, lanes: lanes)
                sent += 200
            }
            #expect(ticks() >= 3)
            #expect(server.metrics.value("switchboard_ticks_total", [("rule", "beat"), ("outcome", "error")]) == 0)
            #expect(await server.eventually { server.dispatcher.store.value("shared", "events") == .int(Int64(sent)) })
            // Every committed tick's forward arrives, numbered 1, 2, 3… with none missing or repeated: the count
            // each tick took shows the ticks ran one at a time. Not in arrival order: the outbox sends up to 8
            // deliveries to one host at once, so when it falls behind, two ticks' forwards can arrive either way
            // round (a full `swift test` on a busy machine saw [2, 1, 3] once).
            let committed = ticks()
            #expect(
                await server.eventually {
                    sink.requests.filter { $0.uri == "/echo" }.count >= committed
                })
            let numbers = sink.requests.filter { $0.uri == "/echo" }.compactMap {
                try? JSONReader.parse(Array($0.body.utf8))["n"]?.intValue
            }
            #expect(numbers.sorted() == Array(1...Int64(numbers.count)))
            directory = server.dataDirectory
        }
        let journal = try EventJournal(directory: try #require(directory).path)
        let lastDue = try journal.storeRecords(namespace: "timer:beat", key: "last_due").first?.value?.doubleValue
        let ticks = try journal.storeRecords(namespace: "rule:beat", key: "ticks").first?.value?.intValue
        #expect(lastDue != nil && (ticks ?? 0) >= 3)
    }

    /// A key set with a ttl reads as absent once it has passed (another key, with a long ttl, stays), and
    /// retention removes it from the file.
    @Test func keysExpireAfterTheirTTL() async throws {
        let rule = """
            return { name = "ttl", on = "channel_create", run = function(event)
              if event.call_id == "set" then
                store.set("short", "v", { ttl = 1 })
                store.set("long", "v", { ttl = 3600 })
              else
                log.info("short=" .. tostring(store.get("short")) .. " long=" .. tostring(store.get("long")))
              end
            end }
            """
        var directory: URL? = nil
        try await withServer(rules: ["ttl.lua": rule], journal: true) { server in
            let set = try sampleBody("channel_create__inbound.json", callID: "set")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: set).status == 200)
            // Read again and again (each read waits for the previous one's run) until the short key is gone.
            var reads = 0
            while !server.logs.contains(.info, "short=nil long=v"), reads < 300 {
                reads += 1
                let read = try sampleBody("channel_create__inbound.json", callID: "read-\(reads)")
                #expect(try await server.send(.POST, "/hooks/channel_create", body: read).status == 200)
                let runs = reads + 1
                _ = await server.eventually { server.metrics.value("switchboard_rule_runs_total") == runs }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(server.logs.contains(.info, "short=nil long=v"))
            directory = server.dataDirectory
        }
        // In the file the expired key stays until retention sweeps it; the live one stays after.
        let journal = try EventJournal(directory: try #require(directory).path)
        #expect(try journal.storeRecords(namespace: "rule:ttl", key: "short", now: 0).count == 1)
        #expect(try journal.pruneExpiredStoreKeys() == 1)
        #expect(try journal.storeRecords(namespace: "rule:ttl", key: "short", now: 0).isEmpty)
        #expect(try journal.storeRecords(namespace: "rule:ttl", key: "long").first?.value == .string("v"))
    }
}
