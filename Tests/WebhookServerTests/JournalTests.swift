import Foundation
import Testing
import WebhookServer

@Suite struct JournalTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-journal-\(UUID().uuidString)").path
    }

    func entry(_ id: String) -> EventJournal.Entry {
        EventJournal.Entry(
            id: id, receivedAt: Date().timeIntervalSince1970, hook: "channel_create", format: "json",
            body: Array(#"{"hook_event":"channel_create"}"#.utf8), meta: #"{"id":"\#(id)"}"#)
    }

    @Test func concurrentAppendsCommitAndSurviveReopening() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 { group.addTask { try await journal.append(entry("e\(i)")) } }
            try await group.waitForAll()
        }
        for i in 0..<150 { journal.markDone("e\(i)") }
        try await Task.sleep(for: .milliseconds(200))  // done marks are batched
        let reopened = try EventJournal(directory: path)
        let counts = try reopened.counts()
        #expect(counts.pending == 50)
        #expect(counts.done == 150)
        let unfinished = try reopened.unfinished()
        #expect(Set(unfinished.map(\.id)) == Set((150..<200).map { "e\($0)" }))
        #expect(unfinished.first?.body == Array(#"{"hook_event":"channel_create"}"#.utf8))
        #expect(try reopened.prune(olderThan: -1) == 150)
        #expect(try reopened.counts().done == 0)
    }

    @Test func anUnusableDataDirectoryIsAClearError() throws {
        let file = directory()
        try Data().write(to: URL(fileURLWithPath: file))
        #expect(throws: JournalError.self) { try EventJournal(directory: file + "/var") }
        do {
            _ = try EventJournal(directory: file + "/var")
        } catch let error as JournalError {
            #expect(error.message.contains("cannot create the data directory"))
            #expect(error.message.contains("--data-dir"))
        }
    }
}
