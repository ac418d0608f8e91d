import Foundation
import GRDB
import RuleEngine
import Synchronization
import TestSupport
import Testing

@testable import EventStore

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
        let (read, offsets, whole) = AcceptedLog.records(in: bytes, file: 7)
        #expect(whole)
        #expect(read.count == events.count)
        // Where each record starts: the sum of the ones before it.
        #expect(
            offsets == [
                0, sealed(events[0], file: 7).count,
                sealed(events[0], file: 7).count + sealed(events[1], file: 7).count,
            ])
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
            let (read, _, whole) = AcceptedLog.records(in: Array(bytes[..<cut]), file: 1)
            #expect(read.count == ends.lastIndex { $0 <= cut }!, "cut at \(cut)")
            #expect(whole == ends.contains(cut), "cut at \(cut)")
        }
        for position in stride(from: 0, to: records[0].count, by: 7) {
            var damaged = bytes
            damaged[records[0].count + position] ^= 0x20
            let (read, _, whole) = AcceptedLog.records(in: damaged, file: 1)
            #expect(read.map(\.id) == ["a"], "byte \(position) of the second record")
            #expect(!whole)
        }
        // Records left from a file's earlier use (under another number) are not its records.
        #expect(AcceptedLog.records(in: bytes, file: 2).entries.isEmpty)
    }

    /// The server's append is answered before it returns, from the log; the event reaches SQLite after,
    /// without its body, which stays in the log's file: every reader takes it from there (the unfinished
    /// events, `switchboard replay`'s pages, the console's event).
    @Test func anAppendIsAnsweredFromTheLogAndReachesSQLiteAfterItsBodyStayingInTheLog() async throws {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path)
        #expect(journal.logsAppends)
        let events = (0..<50).map { entry("e\($0)", bodyBytes: 100 + $0) }
        for event in events {
            let (synchronous, error) = await serverAppend(journal, event)
            #expect(synchronous && error == nil)
        }
        #expect(await eventually { (try? journal.unfinished().count) == 50 })
        await journal.drain()
        #expect(try journal.counts().pending == 50)
        #expect(AcceptedLog.files(in: path).count == 1)
        // In SQLite: no body, and where the record is.
        let rows = try await journalDatabase(in: path).read { db in
            try Row.fetchAll(db, sql: "SELECT id, length(body) AS size, body_at FROM events ORDER BY rowid")
        }
        #expect(rows.count == 50)
        #expect(rows.allSatisfy { ($0["size"] as Int) == 0 && ($0["body_at"] as Int64?) != nil })
        let want = Dictionary(uniqueKeysWithValues: events.map { ($0.id, $0.body) })
        for read in try journal.unfinished() { #expect(read.body == want[read.id], "\(read.id)") }
        let page = try journal.accepted(after: 0, limit: 100).entries
        #expect(page.map(\.id) == events.map(\.id))
        #expect(page.map(\.body) == events.map(\.body))
        #expect(try journal.storedEvent("e7")?.body == events[7].body)
        // The file's bytes count in the journal's size, which retention caps.
        let file = try #require(AcceptedLog.files(in: path).first)
        let fileBytes = try #require(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int)
        let pages = try await journalDatabase(in: path).read { db in
            try Int.fetchOne(
                db,
                sql:
                    "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
            )
        }
        #expect(try journal.bytesInUse() == (pages ?? 0) + fileBytes)

        // A journal opened beside it (no log of its own) reads the same bodies.
        let beside = try EventJournal(directory: path)
        #expect(!beside.logsAppends)
        #expect(try beside.storedEvent("e9")?.body == events[9].body)
    }

    /// Retention by size deletes no event whose record is in a file not yet complete (the next start would
    /// read that file and put the event back); retention by age closes the lanes' files first, and does delete
    /// them; a copy taken after (as a crash would leave it) opens with none of them back.
    @Test(.timeLimit(.minutes(1))) func retentionLeavesEventsInFilesNotYetCompleteUntilTheyAre() async throws {
        let (path, copy) = (directory(), directory())
        defer { removeAll(path, copy) }
        let journal = try EventJournal(directory: path)
        let ids = (0..<20).map { "e\($0)" }
        for id in ids { #expect(await serverAppend(journal, entry(id, bodyBytes: 200)).error == nil) }
        journal.markDone(ids.map { DoneMark(id: $0, forwards: []) })
        #expect(await eventually { (try? journal.counts().done) == 20 })
        // All twenty in the lane's file, still open.
        #expect(AcceptedLog.files(in: path).count == 1)
        #expect(try journal.prune(toFit: 0) == 0)
        #expect(try journal.counts().done == 20)
        #expect(try journal.prune(olderThan: -60) == 20)
        try crashCopy(path, to: copy)
        #expect(try EventJournal(directory: copy).counts() == (pending: 0, done: 0))
    }

    /// A data directory an earlier version left after a crash: its SQLite file without `body_at` or the log's
    /// books, and a log file holding an event already in SQLite (with its body) and one not. It opens with both,
    /// each body read back; the file is complete in the books, and goes once retention deleted its event.
    @Test func aJournalFromBeforeBodiesStayedInTheLogOpensWithEveryEvent() async throws {
        let path = directory()
        defer { removeAll(path) }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let old = try DatabaseQueue(path: EventJournal.file(in: path))
        try await old.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE events (id TEXT PRIMARY KEY, received_at REAL NOT NULL, hook TEXT, format TEXT NOT NULL,
                      body BLOB NOT NULL, meta TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, done_at REAL);
                    INSERT INTO events (id, received_at, hook, format, body, meta) VALUES ('inline', 1, 'x', 'json', x'7b7d', '{}');
                    """)
        }
        try old.close()
        do {
            let log = try #require(AcceptedLog(directory: path))
            _ = try log.write(entry("inline", bodyBytes: 5))
            _ = try log.write(entry("logged", bodyBytes: 7))
        }
        let journal = try EventJournal(directory: path, fsync: true)
        let read = Dictionary(uniqueKeysWithValues: try journal.unfinished().map { ($0.id, $0.body) })
        // The row SQLite had keeps its own body; the other's stays in the file.
        #expect(read == ["inline": Array("{}".utf8), "logged": entry("logged", bodyBytes: 7).body])
        let books = try await journalDatabase(in: path).read { db in
            try Row.fetchAll(db, sql: "SELECT number, events, complete FROM log_files").map {
                [$0["number"] as Int, $0["events"] as Int, $0["complete"] as Int]
            }
        }
        #expect(books == [[1, 1, 1]])
        journal.markDone([DoneMark(id: "inline", forwards: []), DoneMark(id: "logged", forwards: [])])
        #expect(await eventually { (try? journal.counts().done) == 2 })
        #expect(try journal.prune(olderThan: -60) == 2)
        let gone = try await journalDatabase(in: path).read { db in
            try Bool.fetchOne(db, sql: "SELECT gone FROM log_files WHERE number = 1")
        }
        #expect(gone == true)
    }

    /// The pages of the log's complete files leave the page cache once on the disk (`POSIX_FADV_DONTNEED`), as
    /// the journal's own file's do: the file a lane still writes to keeps them, and the bodies read back from the
    /// disk.
    @Test(.timeLimit(.minutes(1))) func completeFilesLeaveThePageCache() async throws {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path, logFileLimit: 4_096)
        let events = (0..<40).map { entry("e\($0)", bodyBytes: 300) }
        for event in events { #expect(await serverAppend(journal, event).error == nil) }
        #expect(await eventually { (try? journal.unfinished().count) == 40 })
        let files = AcceptedLog.files(in: path)
        #expect(files.count >= 3)
        // As the kernel's writeback would have left them by the time the journal releases them.
        for file in files {
            let descriptor = open(file.path, O_RDONLY)
            #expect(fdatasync(descriptor) == 0)
            close(descriptor)
        }
        #expect(files.allSatisfy { residentPages($0.path) > 0 })
        journal.releaseLogFilesCache(olderThan: 0)
        let complete = files.dropLast()
        #expect(complete.allSatisfy { residentPages($0.path) == 0 }, "\(files.map { residentPages($0.path) })")
        #expect(residentPages(files.last!.path) > 0)
        #expect(try journal.unfinished().map(\.body) == events.map(\.body))
    }

    /// How many of the file's pages are in the page cache (`mincore` over a mapping of it).
    func residentPages(_ path: String) -> Int {
        let descriptor = open(path, O_RDONLY)
        defer { close(descriptor) }
        var info = stat()
        guard descriptor >= 0, fstat(descriptor, &info) == 0, info.st_size > 0 else { return -1 }
        let size = Int(info.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, descriptor, 0), map != MAP_FAILED else { return -1 }
        defer { munmap(map, size) }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vector = [UInt8](repeating: 0, count: (size + pageSize - 1) / pageSize)
        guard mincore(map, size, &vector) == 0 else { return -1 }
        return vector.filter { $0 & 1 != 0 }.count
    }

    /// A journal that does not own the log (here a second one on the same directory) does not know which files
    /// are being written: its retention deletes only events whose files the books say are complete. The owner's
    /// drain (a shutdown) writes its books, so the files its lanes had open are complete then.
    @Test(.timeLimit(.minutes(1))) func retentionBesideTheOwnerDeletesOnlyEventsInFilesTheBooksSayAreComplete()
        async throws
    {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path, logFileLimit: 4_096)
        func appendAndFinish(_ ids: [String]) async {
            for id in ids { #expect(await serverAppend(journal, entry(id, bodyBytes: 300)).error == nil) }
            journal.markDone(ids.map { DoneMark(id: $0, forwards: []) })
        }
        let first = (0..<30).map { "first-\($0)" }
        await appendAndFinish(first)
        #expect(await eventually { (try? journal.counts().done) == 30 })
        await journal.drain()
        let later = (0..<5).map { "later-\($0)" }
        await appendAndFinish(later)
        #expect(await eventually { (try? journal.counts().done) == 35 })
        let beside = try EventJournal(directory: path)
        #expect(!beside.logsAppends)
        #expect(try beside.prune(toFit: 0) == 30)
        #expect(try Set(journal.recentEvents(limit: 100).map(\.id)) == Set(later))
    }

    /// What a pass of retention may delete (`EventJournal.PruneBound`): while the oldest file not yet complete
    /// is recent, the events done before it was opened, unchecked; past that (a lane that fills slowly), or in
    /// a journal that does not own the log, those the books say are in complete files.
    @Test func retentionChecksTheBooksWhenTheOldestIncompleteFileIsNotRecent() {
        func bound(_ oldest: Double?, owner: Bool = true) -> (Double, Bool) {
            let bound = EventJournal.PruneBound(now: 1_000, oldestIncomplete: oldest, owner: owner)
            return (bound.doneBefore, bound.checkingFiles)
        }
        #expect(bound(nil) == (1_000, false))
        #expect(bound(999) == (999, false))
        #expect(bound(1_000 - EventJournal.PruneBound.recentFile) == (1_000, true))
        #expect(bound(nil, owner: false) == (1_000, true))
        #expect(EventJournal.PruneBound(now: 1_000, oldestIncomplete: 999, owner: true).condition.isEmpty)
    }

    /// A body whose file was deleted by hand reads as empty (the event's decoding then fails and says so),
    /// rather than as another event's or a crash.
    @Test func aBodyWhoseFileIsGoneReadsEmpty() async throws {
        let path = directory()
        defer { removeAll(path) }
        let journal = try EventJournal(directory: path)
        #expect(await serverAppend(journal, entry("lost", bodyBytes: 40)).error == nil)
        #expect(await eventually { (try? journal.unfinished().count) == 1 })
        for file in AcceptedLog.files(in: path) { unlink(file.path) }
        #expect(try journal.unfinished().map(\.body) == [[]])
        #expect(try journal.storedEvent("lost")?.body == [])
    }

    /// Files of 4 KiB, so that they fill, stay while they hold bodies, are freed once retention deleted every
    /// event in them, and are then written over (a few kept as spares) or deleted: a copy of the directory taken
    /// then, and another at the end (as a crash would leave them), open with exactly the events SQLite had, none
    /// of those retention deleted back (not from a spare either), none twice, every body read back.
    @Test(.timeLimit(.minutes(1))) func filesAreFreedOnceTheirEventsAreDeletedAndNothingComesBackFromThem() async throws
    {
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
        let oldFiles = AcceptedLog.files(in: path).count
        // 60 records of 400 bytes: six files or so, each holding bodies.
        #expect(oldFiles >= 5)
        #expect(try journal.bytesInUse() > 60 * 300)
        #expect(try journal.prune(olderThan: -60) == 60)
        // Freed: four kept as spares, the others deleted; none counts in the size any more.
        #expect(AcceptedLog.files(in: path).count == 4, "\(AcceptedLog.files(in: path).map(\.number))")
        let emptyCopy = directory()
        defer { removeAll(emptyCopy) }
        try crashCopy(path, to: emptyCopy)
        do {
            let reopened = try EventJournal(directory: emptyCopy)
            #expect(try reopened.counts() == (pending: 0, done: 0))
            // The spares, freed in the books, are deleted at the start rather than read.
            #expect(AcceptedLog.files(in: emptyCopy).isEmpty)
        }

        var highest = 0
        let new = (0..<120).map { "new-\($0)" }
        for batch in stride(from: 0, to: new.count, by: 20) {
            await appendAll(Array(new[batch..<batch + 20]))
            #expect(await eventually { (try? journal.unfinished().count) == batch + 20 })
            highest = max(highest, AcceptedLog.files(in: path).last?.number ?? 0)
        }
        // About 120 records of 400 bytes in files of 4 KiB: a dozen files, four of them the spares renamed.
        #expect(highest >= oldFiles + 10)
        #expect(
            AcceptedLog.files(in: path).count <= highest - oldFiles + 1, "\(AcceptedLog.files(in: path).map(\.number))")
        journal.markDone(new.prefix(50).map { DoneMark(id: $0, forwards: []) })
        #expect(await eventually { (try? journal.counts().done) == 50 })

        try crashCopy(path, to: copy)
        let recovered = try EventJournal(directory: copy)
        #expect(try recovered.counts().done == 50)
        let unfinished = try recovered.unfinished()
        #expect(unfinished.count == 70)
        #expect(Set(unfinished.map(\.id)) == Set(new.dropFirst(50)))
        #expect(unfinished.allSatisfy { $0.body == entry($0.id, bodyBytes: 300).body })

        // The freed files' rows stay until the directory is synced (a power loss could otherwise bring back a
        // file deleted or renamed, with no row to say it was freed), and go with the next transaction after.
        func goneRows() async throws -> Int {
            try await journalDatabase(in: path).read { db in
                try Int.fetchOne(db, sql: "SELECT count(*) FROM log_files WHERE gone") ?? -1
            }
        }
        #expect(try await goneRows() == oldFiles)
        journal.bodyFiles?.syncFiles()
        #expect(await serverAppend(journal, entry("after-sync")).error == nil)
        #expect(await eventuallyAsync { (try? await goneRows()) == 0 })
    }

    /// Events left in the log by a run without `--journal-fsync` are recovered by a start with it (which then
    /// writes no log of its own), their bodies staying in the file. One that cannot be read (here a directory by
    /// a log file's name) does not stop the start. At the next start the file is complete, and not read again.
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
        do {
            let journal = try EventJournal(directory: path, fsync: true)
            #expect(!journal.logsAppends)
            #expect(Set(try journal.unfinished().map(\.id)) == Set((0..<5).map { "left-\($0)" }))
            #expect(try journal.unfinished().allSatisfy { $0.body == entry($0.id).body })
            #expect(AcceptedLog.files(in: path).map(\.path) == [files[0].path, unreadable])
            // Done, and deleted by retention: the file is free, and goes.
            journal.markDone((0..<5).map { DoneMark(id: "left-\($0)", forwards: []) })
            #expect(await eventually { (try? journal.counts().done) == 5 })
        }
        let again = try EventJournal(directory: path, fsync: true)
        #expect(try again.counts().done == 5)
        #expect(try again.prune(olderThan: -60) == 5)
        // Free in the books: kept as a spare to be written over, or deleted at the next start; never read again.
        let gone = try await journalDatabase(in: path).read { db in
            try Bool.fetchOne(db, sql: "SELECT gone FROM log_files WHERE number = ?", arguments: [files[0].number])
        }
        #expect(gone == true)
        let copy = directory()
        defer { removeAll(copy) }
        try crashCopy(path, to: copy)
        #expect(try EventJournal(directory: copy, fsync: true).counts() == (pending: 0, done: 0))
        #expect(AcceptedLog.files(in: copy).map(\.number) == [99])
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
        // Bodies stay in the log's files, not in SQLite: it fills with the rows and records alone.
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
            #expect(filled < 2_000, "the journal never filled up")
            if filled >= 2_000 { return }
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
        #expect(try recovered.unfinished().allSatisfy { $0.body.count == 8_000 })

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
