import EventStore
import Foundation
import GRDB
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// The log an accepted event is written to before its 200 (`AcceptedLog`), and the journal around it: what
/// it reads back, what a damaged file gives, what a restart puts into SQLite, and what happens while SQLite
/// cannot be written.
@Suite struct AcceptedLogTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-log-\(UUID().uuidString)").path
    }

    func removeAll(_ paths: String...) {
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
    }

    /// The directory's files as a crash would leave them, in another directory (the lock is the process's).
    func crashCopy(_ path: String, to copy: String) throws {
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.removeItem(atPath: (copy as NSString).appendingPathComponent("accepted.lock"))
    }

    func entry(_ id: String, bodyBytes: Int = 0) -> AcceptedEvent {
        AcceptedEvent(
            id: id, receivedAt: 1_700_000_000.25, hook: "channel_create", format: "json",
            body: bodyBytes > 0
                ? Array(repeating: UInt8(ascii: "x"), count: bodyBytes)
                : Array(#"{"hook_event":"channel_create"}"#.utf8),
            meta: #"{"id":"\#(id)"}"#)
    }

    /// Appends the way the server does; returns whether `completion` came before `append` returned, and what
    /// it said (`startAppend`).
    func serverAppend(_ journal: EventJournal, _ event: AcceptedEvent) async -> (synchronous: Bool, error: String?) {
        let (synchronous, answer) = startAppend(journal, event)
        // A stream that ended without an answer would be a bug: it reads as an error, never as accepted.
        return (synchronous, await answer.first { _ in true } ?? "no answer")
    }

    func sealed(_ event: AcceptedEvent, file: Int) -> [UInt8] {
        var record = AcceptedLog.record(event)
        AcceptedLog.seal(&record, file: file)
        return record
    }

    @Test func recordsReadBackFieldForField() {
        let events = [
            AcceptedEvent(id: "empty", receivedAt: 1.5, hook: nil, format: "query", body: [], meta: "{}"),
            AcceptedEvent(
                id: "Ünïcode-☎", receivedAt: -0.0, hook: "", format: "form", body: [0xFF, 0x00, 0xC3, 0x28, 0x7B],
                meta: #"{"peer":"Zoë ☎"}"#),
            entry("large", bodyBytes: 70_000),
        ]
        let bytes = events.flatMap { sealed($0, file: 7) }
        let (read, whole) = AcceptedLog.records(in: bytes, file: 7)
        #expect(whole)
        #expect(read.count == events.count)
        for (got, want) in zip(read, events) {
            #expect(got.id == want.id)
            #expect(got.receivedAt.bitPattern == want.receivedAt.bitPattern)
            #expect(got.hook == want.hook)
            #expect(got.format == want.format)
            #expect(got.body == want.body)
            #expect(got.meta == want.meta)
        }
    }

    /// The record's bytes are the layout files already written hold (`AcceptedLog`'s comment): its payload's
    /// length, its check, then `receivedAt`'s bits and each field as its length and its bytes (no hook:
    /// `0xFFFFFFFF`), all little-endian. A record written any other way would not read back from the files a
    /// previous version left.
    @Test func aRecordIsLaidOutAsTheFilesAlreadyWrittenAre() {
        func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        for hook in [nil, "ch"] as [String?] {
            let event = AcceptedEvent(
                id: "id", receivedAt: 1.5, hook: hook, format: "json", body: [7, 8, 9], meta: "{}")
            var payload = le((1.5 as Double).bitPattern) + le(UInt32(2)) + Array("id".utf8)
            payload += hook.map { le(UInt32($0.utf8.count)) + Array($0.utf8) } ?? le(UInt32.max)
            payload += le(UInt32(4)) + Array("json".utf8) + le(UInt32(2)) + Array("{}".utf8)
            payload += le(UInt32(3)) + [7, 8, 9]
            let record = AcceptedLog.record(event)
            #expect(Array(record[12...]) == payload)
            #expect(Array(record[0..<4]) == le(UInt32(payload.count)))
            let check = payload.withUnsafeBytes { RecordCheck.payload($0) }
            #expect(Array(record[4..<12]) == le(check))
        }
    }

    /// A file cut anywhere gives the whole records before the cut, and says it was cut; a changed byte ends
    /// the reading at its record (nothing after a damaged record was acknowledged).
    @Test func aCutOrDamagedRecordEndsTheFile() {
        let records = ["a", "b", "c"].map { sealed(entry($0), file: 1) }
        let bytes = records.flatMap { $0 }
        let ends = records.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        for cut in 0...bytes.count {
            let (read, whole) = AcceptedLog.records(in: Array(bytes[..<cut]), file: 1)
            #expect(read.count == ends.lastIndex { $0 <= cut }!, "cut at \(cut)")
            #expect(whole == ends.contains(cut), "cut at \(cut)")
        }
        for position in stride(from: 0, to: records[0].count, by: 7) {
            var damaged = bytes
            damaged[records[0].count + position] ^= 0x20
            let (read, whole) = AcceptedLog.records(in: damaged, file: 1)
            #expect(read.map(\.id) == ["a"], "byte \(position) of the second record")
            #expect(!whole)
        }
        // Records left from a file's earlier use (under another number) are not its records.
        #expect(AcceptedLog.records(in: bytes, file: 2).entries.isEmpty)
    }

    /// The server's append is answered before it returns, from the log; the event reaches SQLite after,
    /// and the log's file goes once it has (here, at the drain).
    @Test func anAppendIsAnsweredFromTheLogAndReachesSQLiteAfter() async throws {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path)
        #expect(journal.logsAppends)
        for i in 0..<50 {
            let (synchronous, error) = await serverAppend(journal, entry("e\(i)"))
            #expect(synchronous && error == nil)
        }
        #expect(await eventually { (try? journal.unfinished().count) == 50 })
        await journal.drain()
        #expect(AcceptedLog.files(in: path).isEmpty)
        #expect(try journal.counts().pending == 50)
    }

    /// Files of 4 KiB, so that they fill, are written over once their events are in SQLite, and go when
    /// retention runs: a copy of the directory taken at the end (as a crash would leave it) opens with exactly
    /// the events SQLite had, none of those retention deleted back, none twice.
    @Test(.timeLimit(.minutes(1))) func filesAreWrittenOverAndNothingComesBackFromThem() async throws {
        let (path, copy) = (directory(), directory())
        defer { removeAll(path, copy) }
        let journal = try EventJournal(directory: path, logFileLimit: 4_096)
        func appendAll(_ ids: [String]) async {
            for id in ids {
                let (synchronous, error) = await serverAppend(journal, entry(id, bodyBytes: 300))
                #expect(synchronous && error == nil)
            }
        }
        let old = (0..<60).map { "old-\($0)" }
        await appendAll(old)
        journal.markDone(old.map { DoneMark(id: $0, forwards: []) })
        #expect(await eventually { (try? journal.counts()).map { $0.done == 60 && $0.pending == 0 } == true })
        #expect(try journal.prune(olderThan: -60) == 60)
        #expect(AcceptedLog.files(in: path).isEmpty)

        var highest = 0
        let new = (0..<120).map { "new-\($0)" }
        for batch in stride(from: 0, to: new.count, by: 20) {
            await appendAll(Array(new[batch..<batch + 20]))
            #expect(await eventually { (try? journal.unfinished().count) == batch + 20 })
            highest = max(highest, AcceptedLog.files(in: path).last?.number ?? 0)
        }
        // About 120 records of 400 bytes in files of 4 KiB: a dozen files' worth, in far fewer files.
        #expect(highest >= 10)
        #expect(AcceptedLog.files(in: path).count <= 8, "\(AcceptedLog.files(in: path).map(\.number))")
        journal.markDone(new.prefix(50).map { DoneMark(id: $0, forwards: []) })
        #expect(await eventually { (try? journal.counts().done) == 50 })

        try crashCopy(path, to: copy)
        let recovered = try EventJournal(directory: copy)
        #expect(try recovered.counts().done == 50)
        let unfinished = try recovered.unfinished().map(\.id)
        #expect(unfinished.count == 70)
        #expect(Set(unfinished) == Set(new.dropFirst(50)))
    }

    /// Events left in the log by a run without `--journal-fsync` are recovered by a start with it (which then
    /// writes no log of its own), and the files go. One that cannot be read (here a directory by a log file's
    /// name) does not stop the start.
    @Test func aStartWithFsyncRecoversTheLogToo() async throws {
        let path = directory()
        defer { removeAll(path) }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        do {
            let log = try #require(AcceptedLog(directory: path))
            for i in 0..<5 { _ = try log.write(entry("left-\(i)")) }
        }
        let files = AcceptedLog.files(in: path)
        #expect(files.count == 1)
        let unreadable = AcceptedLog.path(99, in: path)
        try FileManager.default.createDirectory(atPath: unreadable, withIntermediateDirectories: false)
        let journal = try EventJournal(directory: path, fsync: true)
        #expect(!journal.logsAppends)
        #expect(Set(try journal.unfinished().map(\.id)) == Set((0..<5).map { "left-\($0)" }))
        #expect(AcceptedLog.files(in: path).map(\.path) == [unreadable])
    }

    /// One process, one owner of a directory's log: a second journal opened on it meanwhile commits before
    /// it answers, and does not touch the first one's files.
    @Test func aSecondJournalOnTheSameDirectoryHasNoLog() async throws {
        let path = directory()
        defer { removeAll(path) }
        let first = try EventJournal(directory: path)
        let second = try EventJournal(directory: path)
        #expect(first.logsAppends && !second.logsAppends)
        // Answered once committed: in SQLite already.
        #expect(await serverAppend(second, entry("second")).error == nil)
        #expect(try second.unfinished().map(\.id) == ["second"])
        #expect(AcceptedLog.files(in: path).isEmpty)
    }

    /// SQLite full (a journal capped at 60 pages): events answered from the log meanwhile are kept in it and
    /// counted as pending; later requests wait for their commit and get a 503's reason; the done marks wait.
    /// A copy of the directory taken then (as a crash would leave it) puts the logged events into SQLite when
    /// it opens, and deletes its log; and once retention makes room, the first journal commits them too.
    @Test(.timeLimit(.minutes(1))) func eventsAnsweredWhileSQLiteIsFullAreKeptAndLandLater() async throws {
        let (path, copy) = (directory(), directory())
        defer { removeAll(path, copy) }
        let journal = try EventJournal(directory: path, maxPages: 60)
        var filled = 0
        while !journal.appendsWaitAfterFailure {
            let id = "filler-\(filled)"
            let (synchronous, error) = await serverAppend(journal, entry(id, bodyBytes: 8_000))
            #expect(synchronous && error == nil)
            filled += 1
            journal.markDone([DoneMark(id: id, forwards: [])])
            // In SQLite, or held out of it by a commit that failed.
            #expect(
                await eventually {
                    journal.appendsWaitAfterFailure || (try? journal.unfinished().contains { $0.id == id }) == true
                        || (try? journal.counts().done) == filled
                })
            #expect(filled < 100, "the journal never filled up")
            if filled >= 100 { return }
        }
        let (_, refusal) = await serverAppend(journal, entry("refused", bodyBytes: 8_000))
        #expect(refusal?.contains("the disk is full") == true, "\(refusal ?? "answered")")
        let inSQLite = try journal.counts().done + (try journal.unfinished().count)
        let logged = filled - inSQLite
        #expect(logged >= 1, "filled \(filled), in SQLite \(inSQLite)")
        #expect(try journal.counts().pending + journal.counts().done == filled)
        #expect(!AcceptedLog.files(in: path).isEmpty)

        // The files as a crash would leave them, opened elsewhere with room.
        try crashCopy(path, to: copy)
        let recovered = try EventJournal(directory: copy)
        let counts = try recovered.counts()
        #expect(counts.pending + counts.done == filled, "\(counts)")
        #expect(AcceptedLog.files(in: copy).isEmpty)

        // Room again in the first: its held events commit, and their done marks after them.
        let pruned = try EventJournal(directory: path).prune(olderThan: -60)
        #expect(pruned > 0)
        // Every filler done: deleted by retention, or in SQLite with its done record.
        #expect(
            await eventually(30) {
                !journal.appendsWaitAfterFailure && (try? journal.counts()).map { $0.done + pruned == filled } == true
            })
        #expect(try journal.unfinished().isEmpty)
        let (synchronous, error) = await serverAppend(journal, entry("after"))
        #expect(error == nil)
        #expect(synchronous)
    }

    /// Starts an append the way the server does; returns whether it was answered before `append` returned,
    /// and its answer (nil: accepted; otherwise the error) once it comes.
    func startAppend(_ journal: EventJournal, _ event: AcceptedEvent) -> (
        synchronous: Bool, answer: AsyncStream<String?>
    ) {
        final class Answered: Sendable { let flag = Atomic(false) }
        let answered = Answered()
        let (answer, continuation) = AsyncStream.makeStream(of: String?.self)
        journal.append(event, duplicateKey: nil, window: 0) { result in
            answered.flag.store(true, ordering: .releasing)
            switch result {
            case .success: continuation.yield(nil)
            case .failure(let error): continuation.yield("\(error)")
            }
            continuation.finish()
        }
        return (answered.flag.load(ordering: .acquiring), answer)
    }

    /// Past `EventJournal.loggedLimit` logged events and done marks not yet in SQLite, a request waits for its
    /// commit again: memory stays bounded while SQLite is behind. Another connection holds SQLite's write lock,
    /// so nothing commits meanwhile (for less than the writer's 5 s busy timeout: its commits wait, and do not
    /// fail); once it lets go, the waiting request is answered. Then the same with done marks waiting.
    @Test(.timeLimit(.minutes(1))) func pastTheLimitARequestWaitsForItsCommit() async throws {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path)
        let blocker = try journalDatabase(in: path, unsafeTransactions: true)
        let limit = EventJournal.loggedLimit
        func hold() async throws {
            try await blocker.writeWithoutTransaction { try $0.execute(sql: "BEGIN IMMEDIATE") }
        }
        func letGo() async throws { try await blocker.writeWithoutTransaction { try $0.execute(sql: "COMMIT") } }

        try await hold()
        var logged = 0
        for i in 0..<limit where startAppend(journal, entry("e\(i)")).synchronous { logged += 1 }
        #expect(logged == limit)
        #expect(!journal.appendsWaitAfterFailure)
        let over = startAppend(journal, entry("over"))
        #expect(!over.synchronous)
        try await letGo()
        #expect(await over.answer.first { _ in true } == .some(nil))
        #expect(await eventually { (try? journal.unfinished().count) == limit + 1 })

        // Done marks count as well.
        try await hold()
        journal.markDone((0..<limit).map { DoneMark(id: "e\($0)", forwards: []) })
        let afterMarks = startAppend(journal, entry("after-marks"))
        #expect(!afterMarks.synchronous)
        try await letGo()
        #expect(await afterMarks.answer.first { _ in true } == .some(nil))
        #expect(await eventually { (try? journal.counts()).map { $0.done == limit && $0.pending == 2 } == true })
    }
}
