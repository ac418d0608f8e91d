import Foundation
import JSONCore
import KazooEvents
import Logging
import Synchronization
import TestSupport
import Testing

@testable import RuleEngine

/// Events of one call run one at a time in the order submitted, whether their rules end at once or wait on
/// HTTP; when all have finished, the engine keeps no task and no call's turn.
@Suite struct EngineBookkeepingTests {
    /// Answers after 2 ms: long enough for the call's next events to be submitted meanwhile.
    final class SlowClient: OutboundHTTPClient {
        func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
            try await Task.sleep(for: .milliseconds(2))
            return OutboundResponse(status: 200)
        }
    }

    @Test func everyCallKeepsItsOrderAndNothingIsLeftInFlight() async throws {
        let files = [
            "quick.lua": "return { name = 'quick', on = 'channel_create', run = function() end }",
            "waits.lua":
                "return { name = 'waits', on = 'channel_answer', run = function() http.get('http://127.0.0.1:9/x') end }",
        ]
        let engine = try await Engine(
            source: RuleSource(directory: "rules", files: files), configuration: RuleConfiguration(), workers: 2,
            client: SlowClient(), metrics: Metrics(), logger: Logger(label: "test"), grace: .seconds(1),
            journal: RecordingJournal())
        let seen = Mutex<[String: [Int]]>([:])
        engine.observeReports { report, meta in
            guard let callID = report.event.callID, let n = meta["n"]?.intValue else { return }
            seen.withLock { $0[callID, default: []].append(Int(n)) }
        }
        let root = repositoryRoot.appendingPathComponent("samples")
        let create = try String(
            contentsOf: root.appendingPathComponent("channel_create__inbound.json"), encoding: .utf8)
        let answer = try String(
            contentsOf: root.appendingPathComponent("channel_answer__inbound.json"), encoding: .utf8)
        // 7 calls; each gets both kinds of event, so some of its events run straight through and some wait.
        let events = 280
        let started = Date().timeIntervalSince1970
        for n in 0..<events {
            let body = (n % 2 == 0 ? create : answer).replacingOccurrences(
                of: "1783265409_83651247@203.0.113.45", with: "call-\(n % 7)")
            let event = try EventDecoder().decode(Array(body.utf8), format: .json)
            await engine.submit(event, meta: ["id": .string("e\(n)"), "n": .int(Int64(n))])
        }
        #expect(await eventually { engine.eventsInFlight == 0 })
        #expect(engine.callsInFlight == 0)
        let order = seen.withLock { $0 }
        for call in 0..<7 {
            #expect(order["call-\(call)"] == Array(stride(from: call, to: events, by: 7)))
        }
        #expect(engine.metrics.value("switchboard_rule_runs_total", [("rule", "waits"), ("outcome", "ok")]) == 140)
        // Each rule's last run ended between the first submit and now, the one waiting on HTTP after the other's
        // first run (its first run alone waits 2 ms).
        let ended = Date().timeIntervalSince1970
        let gauge = "switchboard_rule_last_run_timestamp_seconds"
        let quick = try #require(engine.metrics.gaugeValue(gauge, [("rule", "quick")]))
        let waits = try #require(engine.metrics.gaugeValue(gauge, [("rule", "waits")]))
        #expect(quick >= started && quick <= ended)
        #expect(waits >= started + 0.002 && waits <= ended)
    }
}
