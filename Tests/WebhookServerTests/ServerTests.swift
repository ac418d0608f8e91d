import AsyncHTTPClient
import Delivery
import EventStore
import Foundation
import JSONCore
import KazooEvents
import Logging
import NIOHTTP1
import RuleEngine
import Synchronization
import TestSupport
import Testing
import WebhookServer

@Suite struct ReceivingTests {
    @Test func everyWireFormatAndVerbIsAccepted() async throws {
        try await withServer(rules: ["r.lua": recordingRule]) { server in
            let json = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"),
                headers: [("Content-Type", "application/json"), ("X-Hook-ID", "hook-1")])
            #expect(json.status == 200)
            #expect(json.body == #"{"accepted":true,"kind":"channel","name":"channel_create"}"#)
            let form = try await server.send(
                .POST, "/hooks/notifications", body: try sampleBody("notifications__low_balance.form"),
                headers: [("Content-Type", "application/x-www-form-urlencoded")])
            #expect(form.body.contains(#""name":"low_balance""#))
            let put = try await server.send(
                .PUT, "/hooks/object", body: try sampleBody("object__doc_edited_device.json"))
            #expect(put.status == 200)
            // GET with the stray second '?' Kazoo writes when the URI already has a query.
            let query = String(decoding: try sampleBody("parking__stray_question_mark.query"), as: UTF8.self)
            let get = try await server.send(.GET, query)
            #expect(get.status == 200)
            #expect(get.body.contains("PARK_ABANDONED"))
            // The callflow webhook action: form-encoded, nothing in it names the event; the path says.
            let callflow = try await server.send(
                .POST, "/hooks/webhook", body: try sampleBody("webhook__callflow_missed_frontdesk.form"))
            #expect(callflow.body.contains(#""kind":"webhook""#))
            let inferred = try await server.send(.POST, "/hooks", body: try sampleBody("sms__inbound_offnet.json"))
            #expect(inferred.body.contains(#""kind":"sms""#))
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) == 6
                })
            #expect(server.logs.contains(.info, "channel channel_create"))
            #expect(server.logs.contains(.info, "hook-1"))
            #expect(server.metrics.value("switchboard_events_total", [("hook", "parking")]) == 1)
        }
    }

    /// A rule's log lines and its failures carry the event's name and call, the rule's name and (for a
    /// failure) where it failed; a rule that neither logs nor fails writes nothing (the metadata is built only
    /// when a line is).
    @Test func ruleLogLinesCarryTheEventAndTheRule() async throws {
        let talker =
            #"return { name = "talker", on = "channel_create", run = function(e) log.info("hello", { n = 7 }) end }"#
        let failer = #"return { name = "failer", on = "channel_create", run = function(e) error("no luck") end }"#
        let quiet = #"return { name = "quiet", on = "channel_create", run = function(e) end }"#
        try await withServer(rules: ["talker.lua": talker, "failer.lua": failer, "quiet.lua": quiet]) { server in
            let body = try sampleBody("channel_create__inbound.json", callID: "call-log-1")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            #expect(await server.eventually { server.metrics.value("switchboard_rule_runs_total") == 3 })
            let lines = server.logs.lines.withLock { $0 }
            let hello = try #require(lines.first { $0.0 == .info && $0.1.hasPrefix("hello ") }?.1)
            for part in [
                #""event.name": channel_create"#, #""call.id": call-log-1"#, #""rule.name": talker"#,
                #""rule.n": 7"#,
            ] {
                #expect(hello.contains(part), "\(part) in \(hello)")
            }
            let failed = try #require(lines.first { $0.0 == .warning && $0.1.contains("no luck") }?.1)
            for part in [
                #""event.name": channel_create"#, #""call.id": call-log-1"#, #""rule.name": failer"#,
                #""rule.stage": run"#, #""rule.file": "#,
            ] {
                #expect(failed.contains(part), "\(part) in \(failed)")
            }
            #expect(!lines.contains { $0.1.contains(#""rule.name": quiet"#) })
        }
    }

    @Test func badBodiesGetA4xxWithTheReasonAndAreKept() async throws {
        try await withServer(rules: ["r.lua": recordingRule], configure: { $0.decoding.maxBodyBytes = 4096 }) {
            server in
            let array = try await server.send(
                .POST, "/hooks/all", body: Array("[1,2]".utf8), headers: [("Content-Type", "application/json")])
            #expect(array.status == 400)
            #expect(array.body.contains("expected a JSON object at the top level"))
            let empty = try await server.send(.POST, "/hooks/all", headers: [("Content-Type", "application/json")])
            #expect(empty.status == 400)
            #expect(empty.body.contains("empty_body"))
            let big = try await server.send(.POST, "/hooks/all", body: Array(repeating: UInt8(ascii: " "), count: 5000))
            #expect(big.status == 413)
            let deep = try await server.send(
                .POST, "/hooks/all",
                body: Array((String(repeating: "{\"a\":", count: 40) + "1" + String(repeating: "}", count: 40)).utf8),
                headers: [("Content-Type", "application/json")])
            #expect(deep.status == 400)
            #expect(deep.body.contains("deeper than"))
            let kept =
                (try? FileManager.default.contentsOfDirectory(
                    atPath: server.dataDirectory.appendingPathComponent("rejected").path)) ?? []
            #expect(kept.filter { $0.hasSuffix(".json") }.count == 4)
            #expect(kept.filter { $0.hasSuffix(".body") }.count == 4)
            #expect(server.metrics.value("switchboard_rejected_total") == 4)
        }
    }

    @Test func nonOKAnswersAreCountedPerHookAndWarnedAbout() async throws {
        try await withServer(rules: ["r.lua": recordingRule]) { server in
            for _ in 0..<3 {
                _ = try await server.send(
                    .POST, "/hooks/all", body: Array("nope".utf8), headers: [("X-Hook-ID", "hook-9")])
            }
            #expect(server.metrics.value("switchboard_non200_responses_total", [("hook_id", "hook-9")]) == 3)
            #expect(server.logs.contains(.warning, "Kazoo hook hook-9 got 3 non-200 answers in the last 60 s"))
            let metrics = try await server.send(.GET, "/metrics")
            #expect(metrics.body.contains(#"switchboard_non200_responses_total{hook_id="hook-9"} 3"#))
        }
    }

    @Test func healthReadinessAndMetrics() async throws {
        try await withServer(rules: ["r.lua": recordingRule]) { server in
            #expect(try await server.send(.GET, "/healthz").status == 200)
            let ready = try await server.send(.GET, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.body.contains(#""rules":["record"]"#))
            _ = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"))
            #expect(await server.eventually { server.metrics.value("switchboard_rule_runs_total") == 1 })
            let text = try await server.send(.GET, "/metrics").body
            #expect(text.contains(#"switchboard_rule_runs_total{rule="record",outcome="ok"} 1"#))
            #expect(text.contains(#"switchboard_events_total{hook="channel_create",name="channel_create"} 1"#))
            #expect(text.contains("# TYPE switchboard_rule_duration_seconds histogram"))
            #expect(text.contains(#"switchboard_rule_duration_seconds_count{rule="record"} 1"#))
        }
        try await withServer(rules: ["bad.lua": "return {"]) { server in
            let ready = try await server.send(.GET, "/readyz")
            #expect(ready.status == 503)
            #expect(ready.body.contains("rules/bad.lua:1: error"))
        }
    }
}

@Suite struct SecurityTests {
    @Test func tokenInTheQueryOrThePath() async throws {
        try await withServer(rules: ["r.lua": recordingRule], configure: { $0.token = "s3cret" }) { server in
            let body = try sampleBody("channel_create__inbound.json")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 401)
            #expect(try await server.send(.POST, "/hooks/channel_create?token=wrong", body: body).status == 401)
            #expect(try await server.send(.POST, "/hooks/channel_create?token=s3cret", body: body).status == 200)
            #expect(try await server.send(.POST, "/hooks/channel_create/s3cret", body: body).status == 200)
            // A GET hook: the token is not part of the event.
            let get = try await server.send(
                .GET, "/hooks/parking?token=s3cret?event_name=PARK_PARKED&call_id=c1&account_id=a")
            #expect(get.status == 200)
            #expect(await server.eventually { server.metrics.value("switchboard_rule_runs_total") == 3 })
            #expect(!server.logs.contains(.info, "s3cret"))
        }
    }

    @Test func basicAuthAndSourceNetworks() async throws {
        try await withServer(rules: ["r.lua": recordingRule], configure: { $0.basicAuth = "kazoo:pw" }) { server in
            let body = try sampleBody("channel_create__inbound.json")
            let denied = try await server.send(.POST, "/hooks/all", body: body)
            #expect(denied.status == 401)
            #expect(denied.headers.contains { $0.0.lowercased() == "www-authenticate" })
            let ok = try await server.send(
                .POST, "/hooks/all", body: body,
                headers: [("Authorization", "Basic " + Data("kazoo:pw".utf8).base64EncodedString())])
            #expect(ok.status == 200)
        }
        try await withServer(rules: ["r.lua": recordingRule], configure: { $0.allowedSources = [CIDR("10.0.0.0/8")!] })
        { server in
            let response = try await server.send(
                .POST, "/hooks/all", body: try sampleBody("channel_create__inbound.json"))
            #expect(response.status == 403)
        }
    }

    @Test func ruleHTTPCannotReachInternalAddressesUnlessAllowed() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "ssrf", on = "channel_create", run = function()
              local r, err = http.get("\(upstream.url("/customer?phone=1"))", { timeout = 60 })
              log.info(r and ("status " .. r.status) or ("error " .. err))
              local m, merr = http.get("http://169.254.169.254/latest/meta-data/")
              log.info(m and "metadata reached" or ("metadata " .. merr))
            end }
            """
        try await withServer(rules: ["r.lua": rule]) { server in
            _ = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"))
            #expect(await server.eventually { server.metrics.value("switchboard_rule_runs_total") == 1 })
            #expect(server.logs.contains(.info, "error refused: 127.0.0.1 is an internal address"))
            #expect(server.logs.contains(.info, "metadata refused: 169.254.169.254 is an internal address"))
        }
        #expect(upstream.requests.isEmpty)
        try await withServer(rules: ["r.lua": rule], configure: { $0.allowHTTPTo = [CIDR("127.0.0.1/32")!] }) {
            server in
            _ = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"))
            #expect(await server.eventually { server.metrics.value("switchboard_rule_runs_total") == 1 })
            #expect(server.logs.contains(.info, "status 200"), "logs:\n\(server.logs.all)")
            #expect(server.logs.contains(.info, "metadata refused"), "logs:\n\(server.logs.all)")
        }
        #expect(upstream.requests.count == 1)
    }
}

@Suite struct ConcurrencyTests {
    @Test func slowUpstreamCallsOverlapAndTheAnswerDoesNotWait() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "slow", on = "channel_create", run = function()
              local r, err = http.get("\(upstream.url("/slow?ms=5000"))", { timeout = 20 })
              if not r then error(err) end
            end }
            """
        try await withServer(rules: ["r.lua": rule], configure: { $0.allowHTTPTo = [CIDR("127.0.0.1/32")!] }) {
            server in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<40 {
                    let body = try sampleBody("channel_create__inbound.json", callID: "call-\(i)")
                    group.addTask { try await server.send(.POST, "/hooks/channel_create", body: body).status }
                }
                for try await status in group { #expect(status == 200) }
            }
            // Every answer came back while every rule was still waiting on the 5 s upstream.
            #expect(server.metrics.value("switchboard_rule_runs_total") == 0)
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) == 40
                })
            #expect(
                upstream.maxConcurrent > 10,
                "rule HTTP calls ran one after another (max \(upstream.maxConcurrent) at once)")
        }
    }

    @Test func gracefulShutdownFinishesInFlightRules() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "slow", on = "channel_create", run = function()
              local r = http.get("\(upstream.url("/slow?ms=500"))", { timeout = 10 })
              log.info("finished with " .. r.status)
            end }
            """
        var captured: ServerFixture? = nil
        try await withServer(rules: ["r.lua": rule], configure: { $0.allowHTTPTo = [CIDR("127.0.0.1/32")!] }) {
            server in
            for _ in 0..<5 {
                let response = try await server.send(
                    .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"))
                #expect(response.status == 200)
            }
            captured = server
            // withServer now shuts down while the five rule runs wait on the upstream.
        }
        let server = try #require(captured)
        #expect(server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) == 5)
        #expect(server.logs.contains(.info, "shutdown: every accepted event finished its rules"))
    }

    @Test func runsCutByShutdownStayUnfinishedForTheNextStart() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "slow", on = "channel_create", run = function()
              http.get("\(upstream.url("/slow?ms=60000"))", { timeout = 120 })
            end }
            """
        let quick = """
            return { name = "quick", on = "channel_answer", run = function() end }
            """
        var captured: ServerFixture? = nil
        try await withServer(
            rules: ["r.lua": rule, "q.lua": quick], journal: true,
            configure: {
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
                $0.shutdownGrace = .milliseconds(200)
            }
        ) { server in
            let create = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"))
            #expect(create.status == 200)
            // Another call's event: one of the same call would wait behind the slow one.
            let answer = try await server.send(
                .POST, "/hooks/channel_answer", body: try sampleBody("channel_answer__inbound.json", callID: "other"))
            #expect(answer.status == 200)
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_rule_runs_total", [("rule", "quick")]) == 1
                })
            captured = server
        }
        let server = try #require(captured)
        #expect(server.logs.contains(.warning, "1 event(s) still running their rules"))
        let journal = try EventJournal(directory: server.dataDirectory.path)
        let unfinished = try journal.unfinished()
        #expect(unfinished.count == 1)
        #expect(unfinished.first?.hook == "channel_create")
        #expect(try journal.counts().done == 1)  // the quick one, flushed before the process would exit
    }
}
