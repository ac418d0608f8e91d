import JSONCore
import KazooEvents
import Testing

@testable import RuleEngine

/// Which rules' `on` names an event is worked out once per kind, name and hook and remembered: the answer must
/// be the one trying every pattern gives, for every combination, the first time and after.
@Suite struct RuleGatesTests {
    @Test func theRememberedAnswerIsTheOneEveryPatternGivesPerKindNameAndHook() async throws {
        let worker = try makeWorker([
            "a.lua": #"return { name = "a", on = "notifications.*", run = function() end }"#,
            "b.lua": #"return { name = "b", on = "channel.*", run = function() end }"#,
            "c.lua":
                #"return { name = "c", on = { "channel_create", "notifications.low_balance" }, run = function() end }"#,
            "d.lua": #"return { name = "d", on = "*", run = function() end }"#,
            "e.lua": #"return { name = "e", every = "1m", tick = function() end }"#,
            "f.lua": #"return { name = "f", on = "parking.*", run = function() end }"#,
        ])
        #expect(await worker.diagnostics.isEmpty)
        let gates = RuleGates(await worker.rules.map(RuleGate.init))
        func event(_ kind: EventKind, _ name: String, _ hook: String?) -> WebhookEvent {
            WebhookEvent(kind: kind, name: name, hook: hook, fields: JSONObject())
        }
        let cases: [(WebhookEvent, [String])] = [
            (event(.channel, "channel_create", "channel_create"), ["b", "c", "d"]),
            (event(.channel, "channel_create", nil), ["b", "c", "d"]),
            (event(.channel, "channel_destroy", "channel_destroy"), ["b", "d"]),
            (event(.notification, "low_balance", "notifications"), ["a", "c", "d"]),
            // Delivered through another hook: `notifications.*` asks for the notifications hook.
            (event(.notification, "low_balance", "all"), ["c", "d"]),
            (event(.notification, "voicemail_new", "notifications"), ["a", "d"]),
            (event(.parking, "PARK_PARKED", "parking"), ["d", "f"]),
            (event(.unknown, "something_new", "channel_create"), ["b", "d"]),
            (event(.unknown, "something_new", nil), ["d"]),
        ]
        for round in 1...2 {
            for (event, expected) in cases {
                let names = gates.named(event).map { gates.all[$0].name }
                #expect(names == expected, "round \(round): \(event.kind) \(event.name) via \(event.hook ?? "-")")
                // Asked again at once: the last answer.
                #expect(gates.named(event).map { gates.all[$0].name } == expected)
                let tried = gates.all.filter { $0.isNamed(by: event, qualifiedName: event.qualifiedName) }.map(\.name)
                #expect(names == tried)
            }
        }
        // Past what it remembers, unknown events are still answered right, and known ones as before.
        for i in 0..<(RuleGates.remembered + 10) {
            #expect(gates.named(event(.unknown, "n\(i)", "parking")).map { gates.all[$0].name } == ["d", "f"])
        }
        #expect(gates.named(cases[0].0).map { gates.all[$0].name } == ["b", "c", "d"])
    }
}
