import Foundation
import JSONCore
import Logging
import NIOHTTP1
import RuleEngine
import Testing
import WebhookServer

/// `--dedupe-window`: Kazoo's repeats of one event to one hook run the rules once.
@Suite struct DedupeTests {
    let idRule = """
        return { name = "ids", on = "*", run = function(event)
          log.info("saw " .. event.name, { id = event.id, meta_id = event.meta.id, same = tostring(event.id == event.meta.id) })
        end }
        """

    func runs(_ server: ServerFixture) -> Int {
        server.metrics.value("switchboard_rule_runs_total", [("rule", "ids")])
    }

    @Test func repeatsWithinTheWindowAreAnsweredButNotRunAgain() async throws {
        try await withServer(rules: ["ids.lua": idRule], configure: { $0.dedupeWindow = 60 }) { server in
            let channel = try sampleBody("channel_create__inbound.json")
            let hook1 = [("Content-Type", "application/json"), ("X-Hook-ID", "hook-1")]
            let first = try await server.send(.POST, "/hooks/channel_create", body: channel, headers: hook1)
            #expect(first.status == 200)
            #expect(!first.body.contains("duplicate"))
            let again = try await server.send(.POST, "/hooks/channel_create", body: channel, headers: hook1)
            #expect(again.status == 200)
            #expect(again.body.contains("\"duplicate\":true"))
            // The same event to another hook (an ancestor account's) is not a repeat.
            let hook2 = [("Content-Type", "application/json"), ("X-Hook-ID", "hook-2")]
            #expect(
                !(try await server.send(.POST, "/hooks/channel_create", body: channel, headers: hook2)).body.contains(
                    "duplicate"))
            // Another leg of the call has its own call_id.
            var leg = try JSONReader.parse(channel).objectValue!
            leg["call_id"] = "other-leg"
            let legAnswer = try await server.send(
                .POST, "/hooks/channel_create", body: try JSONWriter.encode(.object(leg)), headers: hook1)
            #expect(!legAnswer.body.contains("duplicate"))
            // Notifications repeat by msg_id, whatever the format.
            let notification = try sampleBody("notifications__bill_reminder.json")
            let form = try sampleBody("notifications__bill_reminder.form")
            #expect(
                !(try await server.send(.POST, "/hooks/notifications", body: notification, headers: hook1)).body
                    .contains("duplicate"))
            let repeated = try await server.send(
                .POST, "/hooks/notifications", body: form,
                headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Hook-ID", "hook-1")])
            #expect(repeated.body.contains("\"duplicate\":true"))

            #expect(await server.eventually { runs(server) == 4 })
            try await Task.sleep(for: .milliseconds(100))
            #expect(runs(server) == 4)
            #expect(server.metrics.value("switchboard_duplicates_total") == 2)
        }
    }

    @Test func withoutAWindowEveryRequestRuns() async throws {
        try await withServer(rules: ["ids.lua": idRule]) { server in
            let channel = try sampleBody("channel_create__inbound.json")
            for _ in 0..<3 {
                let answer = try await server.send(
                    .POST, "/hooks/channel_create", body: channel, headers: [("Content-Type", "application/json")])
                #expect(!answer.body.contains("duplicate"))
            }
            #expect(await server.eventually { runs(server) == 3 })
        }
    }

    @Test func eventIDIsTheAcceptedEventsIDUnlessThePayloadHasOne() async throws {
        try await withServer(rules: ["ids.lua": idRule]) { server in
            _ = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json"),
                headers: [("Content-Type", "application/json")])
            #expect(await server.eventually { server.logs.contains(.info, "saw channel_create") })
            #expect(server.logs.contains(.info, #""rule.same": true"#))
            _ = try await server.send(
                .POST, "/hooks/object", body: try sampleBody("object__doc_created_user.json"),
                headers: [("Content-Type", "application/json")])
            #expect(
                await server.eventually { server.logs.contains(.info, #""rule.id": 2b4d6f8a0c1e3a5b7d9f1c3e5a7b9d0f"#) }
            )
            #expect(server.logs.contains(.info, #""rule.same": false"#))
        }
    }
}
