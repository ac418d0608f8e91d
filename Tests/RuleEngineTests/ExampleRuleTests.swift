import Foundation
import JSONCore
import KazooEvents
import RuleEngine
import Testing

/// The rules shipped in rules/, against the samples they are written for.
@Suite struct ExampleRuleTests {
    let worker: RuleWorker

    init() throws {
        let source = try RuleSource.read(directory: repositoryRoot.appendingPathComponent("rules").path)
        worker = try RuleWorker(source: source, configuration: RuleConfiguration(environment: [:]))
    }

    @Test func allExampleRulesLoadWithoutProblems() async {
        #expect(await worker.diagnostics == [])
        #expect(
            await worker.rules.map(\.name) == [
                "call-summary", "crm-popup", "drop-internal-legs", "low-balance-chat", "low-balance-digest",
                "missed-call-storm", "missed-call-ticket", "voicemail-to-chat",
            ])
    }

    @Test func crmPopupLooksUpTheCallerAndPopsAScreen() async throws {
        let report = await worker.process(try sample("channel_create__inbound.json"))
        let crm = report.outcome("crm-popup")
        #expect(crm?.outcome == .ok)
        #expect(
            crm?.http == [
                HTTPRecord(
                    method: "GET", url: "https://crm.example.com/lookup?phone=%2B14155550123", status: nil,
                    error: "dry run: not sent")
            ])
        #expect(crm?.forwards.first?.url == "https://screen.example.com/pop")
        #expect(crm?.forwards.first?.body["caller"] == "SMITH JOHN <(415) 555-0123>")
        #expect(crm?.forwards.first?.body["customer"] == "unknown")
        #expect(crm?.logs.first?.level == "warn")
        // Outbound calls do not match.
        let outbound = await worker.process(try sample("channel_create__outbound.json"))
        #expect(outbound.outcome("crm-popup")?.outcome == .skipped)
        #expect(outbound.outcome("crm-popup")?.stage == "match")
    }

    @Test func lowBalancePostsToChat() async throws {
        let report = await worker.process(try sample("notifications__low_balance.form"))
        let chat = report.outcome("low-balance-chat")
        #expect(chat?.outcome == .ok)
        #expect(
            chat?.forwards.first?.body == [
                "text": "Account 3a1f7c9e2b8d4f60a5c1e7d9b2f4a6c8 is low on credit: balance 45000"
            ])
        #expect(chat?.forwards.first?.headers["X-Source"] == "switchboard")
    }

    @Test func missedCallOpensATicket() async throws {
        let report = await worker.process(try sample("notifications__missed_call.query"))
        let ticket = report.outcome("missed-call-ticket")
        #expect(ticket?.outcome == .ok)
        #expect(ticket?.forwards.first?.body["subject"] == "Missed call from SMITH JOHN <(415) 555-0123>")
        #expect(ticket?.forwards.first?.body["priority"] == "high")
        #expect(
            ticket?.forwards.first?.body["description"] == "Called +16045550188, rang 24 s, at 2024-05-14 15:23 UTC")
    }

    @Test func voicemailGoesToChatWithItsTranscription() async throws {
        let report = await worker.process(try sample("notifications__voicemail_new.json"))
        let text = report.outcome("voicemail-to-chat")?.forwards.first?.body["text"]?.stringValue ?? ""
        #expect(text.hasPrefix("New voicemail ("))
        #expect(text.contains("\n> "))
    }

    @Test func callSummaryUsesBillingSecondsAndSendsAForm() async throws {
        let report = await worker.process(try sample("channel_destroy__inbound.form"))
        let summary = report.outcome("call-summary")
        #expect(summary?.outcome == .ok)
        #expect(summary?.forwards.first?.format == "form")
        let body = summary?.forwards.first?.body.stringValue ?? ""
        #expect(body.contains("billed=3%3A07"))
        #expect(body.contains("count=1"))
        // Module-level state persists between events of the same rule.
        let again = await worker.process(try sample("channel_destroy__inbound.json"))
        #expect(again.outcome("call-summary")?.forwards.first?.body.stringValue?.contains("count=2") == true)
        // Unbilled calls are filtered out.
        let unbilled = await worker.process(try sample("channel_destroy__outbound.json"))
        if (unbilled.event.billingSeconds ?? 0) == 0 {
            #expect(unbilled.outcome("call-summary")?.stage == "filter")
        }
    }

    @Test func internalLegsAreDropped() async throws {
        var event = try sample("channel_answer__inbound.json")
        event.fields["is_internal_leg"] = .bool(true)
        let report = await worker.process(event)
        #expect(report.outcome("drop-internal-legs")?.outcome == .dropped)
        #expect(report.outcome("drop-internal-legs")?.forwards == [])
        let real = await worker.process(try sample("channel_answer__inbound.json"))
        #expect(real.outcome("drop-internal-legs")?.outcome == .ok)
    }
}
