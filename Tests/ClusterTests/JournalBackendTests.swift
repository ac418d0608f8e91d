import ClusterStore
import EventStore
import Foundation
import JSONCore
import RuleEngine
import Testing

/// The durable store's behaviour, the same on both backends: SQLite (one node) and PostgreSQL (several).
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// An open journal ready to mark events done (on PostgreSQL: holding the processing lease), and a way to
    /// open the same storage again as a restarted node would.
    func open() async throws -> (journal: any Journal, reopen: @Sendable () async throws -> any Journal) {
        switch self {
        case .sqlite:
            let directory = NSTemporaryDirectory() + "switchboard-backend-" + UUID().uuidString
            return (try EventJournal(directory: directory), { try EventJournal(directory: directory) })
        case .postgres:
            let url = try await TestPostgres.freshDatabase()
            @Sendable func node(_ name: String) async throws -> PostgresJournal {
                let journal = try await PostgresJournal.open(
                    url: url, node: name, lease: 30, spoolDirectory: nil, logger: TestPostgres.logger)
                return journal
            }
            let first = try await node("a")
            let epoch = try #require(try await first.acquireLease())
            first.beginTerm(epoch)
            return (first, { try await node("b") })
        }
    }
}

@Suite struct JournalBackendTests {
    static func event(_ id: String, call: String = "c1") -> AcceptedEvent {
        AcceptedEvent(
            id: id, receivedAt: Date().timeIntervalSince1970, hook: "channel_create", format: "json",
            body: Array(#"{"call_id":"\#(call)","hook_event":"CHANNEL_CREATE"}"#.utf8),
            meta: #"{"id":"\#(id)"}"#)
    }

    static func forward(_ path: String = "/crm") -> NewDelivery {
        NewDelivery(
            rule: "crm", method: "POST", url: "http://127.0.0.1:9\(path)",
            headers: [.init(name: "Content-Type", value: "application/json")], body: Array(#"{"a":1}"#.utf8))
    }

    static func record(call: String) -> EventRecord {
        EventRecord(
            name: "channel.channel_create", callID: call, otherLeg: nil, accountID: "acct",
            outcomes: #"[{"rule":"crm","outcome":"ok"}]"#)
    }

    @Test(arguments: Backend.allCases)
    func acceptedEventsWaitUntilMarkedDoneWithTheirForwardsAndWrites(_ backend: Backend) async throws {
        let (journal, reopen) = try await backend.open()
        for id in ["e1", "e2", "e3"] { try await journal.append(Self.event(id, call: id == "e2" ? "call-2" : "c1")) }
        #expect(try await journal.unfinished().map(\.id) == ["e1", "e2", "e3"])

        let write = StoreRecord(namespace: "rule:crm", key: "count", value: .int(7), expiresAt: nil, seq: 1)
        journal.markDone([
            DoneMark(id: "e2", forwards: [Self.forward()], writes: [write], record: Self.record(call: "call-2"))
        ])
        await journal.drain(limit: .seconds(10))
        #expect(try await journal.unfinished().map(\.id) == ["e1", "e3"])

        let pending = try await journal.deliveries(.pending, limit: 10)
        #expect(pending.count == 1)
        #expect(pending.first?.eventID == "e2")
        #expect(pending.first?.url == "http://127.0.0.1:9/crm")
        #expect(pending.first?.destination == "http://127.0.0.1:9")
        #expect(pending.first?.headers == [.init(name: "Content-Type", value: "application/json")])
        #expect(pending.first?.body == Array(#"{"a":1}"#.utf8))
        #expect(try await journal.deliveries(forEvent: "e2").map(\.id) == pending.map(\.id))

        let stored = try #require(try await journal.storedEvent("e2"))
        #expect(stored.done)
        #expect(stored.name == "channel.channel_create")
        #expect(stored.callID == "call-2")
        #expect(stored.accountID == "acct")
        #expect(stored.outcomes?.contains("crm") == true)
        #expect(stored.body == Self.event("e2", call: "call-2").body)
        #expect(try await journal.storedEvent("nope") == nil)
        #expect(
            try await journal.recentEvents(limit: 10, before: nil, name: nil, callID: nil, accountID: nil).map(\.id)
                == ["e3", "e2", "e1"])
        #expect(
            try await journal.recentEvents(
                limit: 10, before: nil, name: "channel_create", callID: "call-2", accountID: nil
            )
            .map(\.id) == ["e2"])
        #expect(try await journal.callEvents(["call-2"], limit: 10).map(\.id) == ["e2"])

        // A restarted node (or another node) reads the committed store.
        let again = try await reopen()
        let records = try again.storeRecords()
        #expect(records.contains { $0.namespace == "rule:crm" && $0.key == "count" && $0.value == .int(7) })
    }

    @Test(arguments: Backend.allCases)
    func attemptsMoveADeliveryThroughItsStatesAndRedeliveryStartsAfresh(_ backend: Backend) async throws {
        let (journal, _) = try await backend.open()
        try await journal.append(Self.event("e1"))
        journal.markDone([DoneMark(id: "e1", forwards: [Self.forward()])])
        await journal.drain(limit: .seconds(10))
        var delivery = try #require(try await journal.deliveries(.pending, limit: 10).first)
        #expect(try await journal.pendingDestinations() == ["http://127.0.0.1:9"])
        #expect(try await journal.upcomingDeliveries(to: "http://127.0.0.1:9", limit: 5).map(\.id) == [delivery.id])

        let failed = DeliveryAttempt(
            number: 1, at: delivery.updatedAt + 1, status: 503, latencyMs: 4, error: "HTTP 503", excerpt: "busy")
        try await journal.record(
            failed, of: delivery.id, result: .retry(at: failed.at + 30), unchangedSince: delivery.updatedAt)
        delivery = try #require(try await journal.delivery(delivery.id))
        #expect(delivery.state == .pending)
        #expect(delivery.attempts == 1)
        #expect(delivery.lastStatus == 503)
        #expect(try await journal.deliveries(.failed, limit: 10).map(\.id) == [delivery.id])

        // A result computed from a row that changed meanwhile is logged but does not change the state.
        let stale = DeliveryAttempt(
            number: 2, at: failed.at + 2, status: nil, latencyMs: 1, error: "refused", excerpt: nil)
        try await journal.record(stale, of: delivery.id, result: .dead, unchangedSince: 1)
        #expect(try await journal.delivery(delivery.id)?.state == .pending)
        #expect(try await journal.attempts(delivery.id).map(\.number) == [1, 2])

        try await journal.record(stale, of: delivery.id, result: .dead, unchangedSince: delivery.updatedAt)
        #expect(try await journal.delivery(delivery.id)?.state == .dead)
        #expect(try await journal.deliveryCounts(Delivery.State.allCases) == [.dead: 1])

        #expect(try await journal.redeliverDead() == [delivery.id])
        let fresh = try #require(try await journal.delivery(delivery.id))
        #expect(fresh.state == .pending)
        #expect(fresh.attempts == 0)
        #expect(try await journal.attempts(delivery.id).count == 3)  // the history stays

        let ok = DeliveryAttempt(
            number: 4, at: fresh.updatedAt + 1, status: 200, latencyMs: 2, error: nil, excerpt: "ok")
        try await journal.record(ok, of: delivery.id, result: .delivered, unchangedSince: fresh.updatedAt)
        #expect(try await journal.delivery(delivery.id)?.state == .delivered)
        #expect(try await journal.redeliver([delivery.id, 999_999]) == [delivery.id])
    }

    @Test(arguments: Backend.allCases)
    func anOlderStoreWriteNeverOverwritesANewerOne(_ backend: Backend) async throws {
        let (journal, reopen) = try await backend.open()
        for id in ["e1", "e2", "e3", "e4"] { try await journal.append(Self.event(id)) }
        func write(_ value: JSONValue?, seq: Int64) -> StoreRecord {
            StoreRecord(namespace: "shared", key: "k", value: value, expiresAt: nil, seq: seq)
        }
        journal.markDone([DoneMark(id: "e1", forwards: [], writes: [write(.string("new"), seq: 5)])])
        journal.markDone([DoneMark(id: "e2", forwards: [], writes: [write(.string("old"), seq: 3)])])
        journal.markDone([DoneMark(id: "e3", forwards: [], writes: [write(nil, seq: 4)])])
        await journal.drain(limit: .seconds(10))
        var records = try await reopen().storeRecords().filter { $0.namespace == "shared" }
        #expect(records.map(\.value) == [.string("new")])
        journal.markDone([DoneMark(id: "e4", forwards: [], writes: [write(nil, seq: 6)])])
        await journal.drain(limit: .seconds(10))
        records = try await reopen().storeRecords().filter { $0.namespace == "shared" }
        #expect(records.isEmpty)
        #expect(try await journal.unfinished().isEmpty)
    }
}
