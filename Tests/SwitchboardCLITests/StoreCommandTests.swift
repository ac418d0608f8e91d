import ArgumentParser
import EventStore
import Foundation
import JSONCore
import RuleEngine
import SwitchboardCLI
import Testing

/// `switchboard store` on a real journal file, and the file's rules for applying writes.
@Suite struct StoreCommandTests {
    func write(_ journal: EventJournal, id: String, _ writes: [StoreRecord]) async throws {
        try await journal.append(
            EventJournal.Entry(
                id: id, receivedAt: 0, hook: nil, format: "json", body: Array("{}".utf8), meta: #"{"id":"\#(id)"}"#))
        journal.markDone([DoneMark(id: id, forwards: [], writes: writes)])
        await journal.drain(limit: .seconds(5))
    }

    @Test func listGetAndDeleteWorkOnTheCommittedStore() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchboard-store-\(UUID().uuidString)"
        ).path
        let journal = try EventJournal(directory: directory)
        try await write(
            journal, id: "e1",
            [
                StoreRecord(namespace: "rule:missed", key: "user:1", value: .int(4), expiresAt: nil, seq: 1),
                StoreRecord(namespace: "shared", key: "last", value: .string("x"), expiresAt: nil, seq: 2),
                StoreRecord(namespace: "shared", key: "old", value: .int(1), expiresAt: 1, seq: 3),
            ])
        // An older write (smaller seq) arriving later changes nothing; a delete removes.
        try await write(
            journal, id: "e2",
            [
                StoreRecord(namespace: "rule:missed", key: "user:1", value: .int(99), expiresAt: nil, seq: 0),
                StoreRecord(namespace: "shared", key: "last", value: nil, expiresAt: nil, seq: 4),
            ])
        #expect(try journal.storeRecords(namespace: "rule:missed", key: "user:1").first?.value == .int(4))
        #expect(try journal.storeRecords(namespace: "shared", key: nil).isEmpty)  // "old" expired, "last" deleted
        #expect(try journal.storeRecords().count == 2)  // expired rows still count for seq

        var list = try StoreCommand.parseAsRoot(["list", "--rule", "missed", "--data-dir", directory])
        try list.run()
        var get = try StoreCommand.parseAsRoot(["get", "--rule", "missed", "--json", "user:1", "--data-dir", directory])
        try get.run()
        var missing = try StoreCommand.parseAsRoot(["get", "--shared", "nope", "--data-dir", directory])
        #expect(throws: (any Error).self) { try missing.run() }
        #expect(throws: (any Error).self) {
            try StoreCommand.parseAsRoot(["list", "--rule", "a", "--shared", "--data-dir", directory])
        }
        var delete = try StoreCommand.parseAsRoot(["delete", "--rule", "missed", "user:1", "--data-dir", directory])
        try delete.run()
        #expect(try journal.storeRecords(namespace: "rule:missed", key: nil).isEmpty)
        let reloaded = RuleStore(records: try journal.storeRecords())
        #expect(reloaded.records().isEmpty)
        // Writes after a restart continue past every stored seq, so they are never taken for older ones.
        let session = reloaded.begin()
        try session.set("shared", "old", .int(2))
        var marks: [DoneMark] = []
        reloaded.finish(session, mark: DoneMark(id: "e3", forwards: [])) { marks += $0 }
        #expect((marks.first?.writes.first?.seq ?? 0) > 3)
    }
}
