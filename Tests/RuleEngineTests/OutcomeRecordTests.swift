import JSONCore
import KazooEvents
import Testing

@testable import RuleEngine

/// What the console keeps of an event's rules: `RuleOutcome.record`, its members in `json`'s order with the file
/// and durations added, and `EventRecord`, which keeps only the rules that matched.
@Suite struct OutcomeRecordTests {
    func outcome() -> RuleOutcome {
        var outcome = RuleOutcome(rule: "crm", file: "rules/crm.lua", outcome: .ok)
        outcome.seconds = 0.25
        outcome.forwards = [
            ForwardRecord(
                method: "POST", url: "http://127.0.0.1:9/in",
                headers: JSONObject([.init(key: "Content-Type", value: "application/json")]),
                body: ["a": 1], format: "json")
        ]
        outcome.http = [HTTPRecord(method: "GET", url: "http://127.0.0.1:9/x", status: 200, seconds: 0.5)]
        outcome.logs = [LogRecord(level: "info", message: "hi", fields: ["k": "v"])]
        return outcome
    }

    @Test func aRecordIsTheJSONOutcomeWithItsFileAndTimes() throws {
        let text = try JSONWriter.string(outcome().record)
        #expect(
            text
                == #"{"rule":"crm","outcome":"ok","stage":null,"forwards":[{"method":"POST","url":"http://127.0.0.1:9/in","format":"json"}],"http":[{"method":"GET","url":"http://127.0.0.1:9/x","status":200,"error":null,"seconds":0.5}],"logs":[{"level":"info","message":"hi","fields":{"k":"v"}}],"error":null,"file":"rules/crm.lua","seconds":0.25}"#
        )
        var failed = RuleOutcome(rule: "bad", file: "rules/bad.lua", outcome: .error, stage: "run")
        failed.error = RuleErrorInfo(message: "boom", file: "rules/bad.lua", line: 3, traceback: nil)
        #expect(
            try JSONWriter.string(failed.json)
                == #"{"rule":"bad","outcome":"error","stage":"run","forwards":[],"http":[],"logs":[],"error":{"message":"boom","file":"rules/bad.lua","line":3,"traceback":null}}"#
        )
    }

    @Test func anEventRecordKeepsTheRulesThatMatchedAndTheCallsLegs() throws {
        let event = WebhookEvent(
            kind: .channel, name: "channel_bridge", hook: "channel_bridge",
            fields: JSONObject([
                .init(key: "call_id", value: "a"), .init(key: "other_leg_call_id", value: "b"),
                .init(key: "account_id", value: "acc"),
            ]))
        let declined = RuleOutcome(rule: "other", file: "rules/other.lua", outcome: .skipped, stage: "match")
        let filtered = RuleOutcome(rule: "quiet", file: "rules/quiet.lua", outcome: .skipped, stage: "filter")
        let record = EventRecord(EventReport(event: event, rules: [declined, outcome(), filtered]), meta: nil)
        #expect(record.name == "channel.channel_bridge")
        #expect(record.callID == "a")
        #expect(record.otherLeg == "b")
        #expect(record.accountID == "acc")
        let kept = try JSONReader.parse(Array(record.outcomes.utf8))
        #expect(kept.arrayValue?.count == 2)
        #expect(kept.arrayValue?[0]["rule"] == "crm")
        #expect(kept.arrayValue?[1]["rule"] == "quiet")
        #expect(kept.arrayValue?[0] == outcome().record)
    }

    /// `EventRecord` writes each rule's record as text straight from the outcome, and `record` (Try it) is that
    /// text read back: for every shape an outcome takes it reads back and writes out byte for byte, and an
    /// event's text is its matched rules' records in order.
    @Test func anEventRecordsTextIsTheRecordsTextByteForByte() throws {
        var failed = RuleOutcome(rule: "bad \"one\"", file: "rules/b\\d.lua", outcome: .error, stage: "transform")
        failed.error = RuleErrorInfo(
            message: "line\nbreak\ttab \u{01} é ☎", file: nil, line: 12, traceback: "stack traceback:\n\t[C]: in ?")
        failed.seconds = 2
        failed.http = [
            HTTPRecord(
                method: "POST", url: "http://127.0.0.1:9/a?x=1&y=/", status: nil, error: "refused", seconds: 1e-7),
            HTTPRecord(method: "GET", url: "http://127.0.0.1:9/b", status: 503, seconds: 0.125),
        ]
        failed.logs = [
            LogRecord(level: "warn", message: "", fields: .null),
            LogRecord(
                level: "info", message: "nested",
                fields: ["list": [1, 2.5, "three", .null, true], "object": ["inner": ["deep": "x"]], "empty": [:]]),
        ]
        let dropped = RuleOutcome(rule: "drop", file: "rules/drop.lua", outcome: .dropped, stage: "transform")
        var partial = RuleOutcome(rule: "partial", file: "rules/p.lua", outcome: .error, stage: "run")
        partial.error = RuleErrorInfo(message: "m", file: "rules/p.lua", line: nil, traceback: nil)
        for outcome in [outcome(), failed, dropped, partial] {
            var writer = JSONTextWriter()
            RuleOutcome.writeRecord(of: [outcome], at: 0, into: &writer)
            #expect(writer.text == (try JSONWriter.string(outcome.record)))
        }
        // Escapes, a null status, a float's exponent, nested fields and the error's place, pinned to the text.
        #expect(
            try JSONWriter.string(failed.record)
                == #"{"rule":"bad \"one\"","outcome":"error","stage":"transform","forwards":[],"http":[{"method":"POST","url":"http://127.0.0.1:9/a?x=1&y=/","status":null,"error":"refused","seconds":1e-07},{"method":"GET","url":"http://127.0.0.1:9/b","status":503,"error":null,"seconds":0.125}],"logs":[{"level":"warn","message":"","fields":null},{"level":"info","message":"nested","fields":{"list":[1,2.5,"three",null,true],"object":{"inner":{"deep":"x"}},"empty":{}}}],"error":{"message":"line\nbreak\ttab \u0001 é ☎","file":null,"line":12,"traceback":"stack traceback:\n\t[C]: in ?"},"file":"rules/b\\d.lua","seconds":2.0}"#
        )
        let record = EventRecord(
            EventReport(
                event: WebhookEvent(kind: .channel, name: "channel_create", hook: nil, fields: JSONObject()),
                rules: [outcome(), failed, dropped]), meta: nil)
        #expect(record.outcomes == (try JSONWriter.string(.array([outcome().record, failed.record, dropped.record]))))
    }

    /// A log line's fields JSON cannot hold no longer cost the event its whole record: they are `null`.
    @Test func fieldsJSONCannotHoldAreNullInTheRecord() throws {
        var outcome = outcome()
        outcome.logs = [LogRecord(level: "info", message: "odd", fields: ["ratio": .double(.nan)])]
        let record = EventRecord(
            EventReport(
                event: WebhookEvent(kind: .channel, name: "channel_create", hook: nil, fields: JSONObject()),
                rules: [outcome]),
            meta: nil)
        let kept = try JSONReader.parse(Array(record.outcomes.utf8))
        #expect(kept.arrayValue?.count == 1)
        #expect(kept.arrayValue?[0]["rule"] == "crm")
        #expect(kept.arrayValue?[0]["logs"]?.arrayValue?[0]["fields"] == .null)
        #expect(kept.arrayValue?[0]["logs"]?.arrayValue?[0]["message"] == "odd")
    }
}
