import ArgumentParser
import EventStore
import Foundation
import RuleEngine
import SwitchboardCLI
import Testing
import WebhookServer

/// `switchboard deliveries`, `redeliver` and `rejected` on a real journal file.
@Suite struct DeliveriesCommandTests {
    func dataDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-cli-data-\(UUID().uuidString)").path
    }

    /// A journal with one dead and one delivered forward; returns their ids.
    func journalWithDeliveries(in directory: String) async throws -> (dead: Int64, delivered: Int64) {
        let journal = try EventJournal(directory: directory)
        try await journal.append(
            EventJournal.Entry(
                id: "e1", receivedAt: 0, hook: nil, format: "json", body: Array("{}".utf8), meta: #"{"id":"e1"}"#))
        let forward = NewDelivery(rule: "r", method: "POST", url: "http://127.0.0.1:9/x", headers: [], body: [])
        journal.markDone("e1", forwards: [forward, forward])
        for _ in 0..<100 where try journal.deliveries(.pending).count < 2 {
            try await Task.sleep(for: .milliseconds(20))
        }
        let ids = try journal.deliveries(.pending).map(\.id).sorted()
        let attempt = DeliveryAttempt(number: 1, at: 1, status: 500, latencyMs: 1, error: "HTTP 500", excerpt: "no")
        try await journal.record(attempt, of: ids[0], result: .dead)
        try await journal.record(attempt, of: ids[1], result: .delivered)
        return (ids[0], ids[1])
    }

    @Test func redeliverDeadQueuesDeadLettersAgain() async throws {
        let directory = dataDirectory()
        let (dead, delivered) = try await journalWithDeliveries(in: directory)
        try DeliveriesCommand.parse(["--dead", "--data-dir", directory]).run()
        try DeliveriesCommand.parse(["--json", "--data-dir", directory, "\(dead)"]).run()
        try RedeliverCommand.parse(["--dead", "--data-dir", directory]).run()
        let journal = try EventJournal(directory: directory)
        let requeued = try #require(try journal.delivery(dead))
        #expect(requeued.state == .pending)
        #expect(requeued.attempts == 0)
        #expect(try journal.attempts(dead).count == 1)  // the history stays
        #expect(try journal.delivery(delivered)?.state == .delivered)
    }

    @Test func mistakesAreClearErrors() async throws {
        let directory = dataDirectory()
        let (_, delivered) = try await journalWithDeliveries(in: directory)
        #expect(throws: (any Error).self) { try RedeliverCommand.parse(["--data-dir", directory]) }
        #expect(throws: (any Error).self) { try RedeliverCommand.parse(["--dead", "1", "--data-dir", directory]) }
        do {
            try RedeliverCommand.parse(["--data-dir", directory, "\(delivered)", "999"]).run()
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "no delivery 999")
        }
        // The known one was queued anyway.
        #expect(try EventJournal(directory: directory).delivery(delivered)?.state == .pending)
        do {
            try DeliveriesCommand.parse(["--data-dir", directory + "/nowhere"]).run()
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".hasPrefix("no journal at \(directory)/nowhere/switchboard.sqlite"))
        }
    }

    @Test func rejectedListsWhatTheServerKept() throws {
        let directory = dataDirectory()
        let store = RejectedStore(directory: URL(fileURLWithPath: directory).appendingPathComponent("rejected"))
        store.keep(
            body: Array("{oops".utf8), reason: "json body: invalid JSON", code: "syntax", method: "POST",
            path: "/hooks/x?token=secret", headers: [], peer: "127.0.0.1")
        let listed = store.list()
        #expect(listed.count == 1)
        #expect(listed.first?["path"] as? String == "/hooks/x?token=REDACTED")
        try RejectedCommand.parse(["--data-dir", directory]).run()
        try RejectedCommand.parse(["--json", "--data-dir", directory]).run()
    }

    /// What a refused request carried as a secret is not written down: every query pair named for one (each of
    /// two `token=`s, any case, `access_token`, `api_key`), the credential headers and any header named for a
    /// secret. The rest stays as sent, to inspect.
    @Test func rejectedRequestsKeepNoSecrets() throws {
        let store = RejectedStore(directory: URL(fileURLWithPath: dataDirectory()).appendingPathComponent("rejected"))
        store.keep(
            body: Array("{oops".utf8), reason: "json body: invalid JSON", code: "syntax", method: "POST",
            path: "/hooks/x?a=1&token=zq1&Token=zq2?access_token=zq3&api_key=zq4&call_id=c&empty&=&x-api-key=zq6",
            headers: [
                ("Authorization", "Bearer zq1"), ("Proxy-Authorization", "Basic zq2"), ("Cookie", "s=zq3"),
                ("X-Api-Key", "zq4"), ("X-Auth-Token", "zq5"), ("Content-Type", "application/json"),
            ], peer: nil)
        let kept = try #require(store.list().first)
        #expect(
            kept["path"] as? String
                == "/hooks/x?a=1&token=REDACTED&Token=REDACTED?access_token=REDACTED&api_key=REDACTED&call_id=c&empty&="
                + "&x-api-key=REDACTED")
        let headers = try #require(kept["headers"] as? [String: String])
        #expect(
            headers == [
                "authorization": "REDACTED", "proxy-authorization": "REDACTED", "cookie": "REDACTED",
                "x-api-key": "REDACTED", "x-auth-token": "REDACTED", "content-type": "application/json",
            ])
        let written = try FileManager.default.contentsOfDirectory(atPath: store.directory.path)
            .filter { $0.hasSuffix(".json") }
            .map { try String(contentsOf: store.directory.appendingPathComponent($0), encoding: .utf8) }.joined()
        for secret in ["zq1", "zq2", "zq3", "zq4", "zq5", "zq6"] { #expect(!written.contains(secret)) }
    }
}
