import Delivery
import EventStore
import Foundation
import Logging
import RuleEngine
import Synchronization
import TestSupport
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

    /// What an append writes comes back as it went in: an empty body (a GET without a query) as an empty
    /// body, not NULL; no hook as none; text beyond ASCII byte for byte; a body that is not UTF-8 unchanged.
    @Test func anAppendKeepsEveryFieldAsGiven() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let journal = try EventJournal(directory: path)
        let entries = [
            EventJournal.Entry(id: "empty", receivedAt: 1.5, hook: nil, format: "query", body: [], meta: "{}"),
            EventJournal.Entry(
                id: "Ünïcode-☎", receivedAt: 2.25, hook: "channel_create", format: "form",
                body: [0xFF, 0x00, 0xC3, 0x28, 0x7B], meta: #"{"peer":"Zoë ☎"}"#),
        ]
        for entry in entries { try await journal.append(entry) }
        let read = try journal.unfinished()
        #expect(read.map(\.id) == entries.map(\.id))
        for (got, want) in zip(read, entries) {
            #expect(got.receivedAt == want.receivedAt)
            #expect(got.hook == want.hook)
            #expect(got.format == want.format)
            #expect(got.body == want.body)
            #expect(got.meta == want.meta)
        }
    }

    @Test func concurrentAppendsCommitAndSurviveReopening() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 { group.addTask { try await journal.append(entry("e\(i)")) } }
            try await group.waitForAll()
        }
        for i in 0..<150 { journal.markDone("e\(i)") }
        // Done marks are batched by the journal's writer: wait until they are written, not for a fixed time.
        #expect(await eventually { (try? journal.counts().done) == 150 })
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

    /// A done mark that cannot be written (its outcomes do not fit a journal capped at 120 pages of 4 KiB)
    /// stays queued, never holds back the appends behind it, and lands once there is room: each turn of the
    /// writer commits the appends first, in a transaction of their own; failed marks wait 200 ms, then are
    /// tried again, with the marks queued behind them.
    @Test(.timeLimit(.minutes(1))) func aDoneMarkThatCannotBeWrittenWaitsWithoutHoldingBackAppends() async throws {
        let directory = directory()
        let journal = try EventJournal(directory: directory, maxPages: 120)
        // About 75 pages of finished events that retention can delete later.
        for i in 0..<30 {
            var filler = entry("filler-\(i)")
            filler.body = Array(repeating: UInt8(ascii: "x"), count: 8_000)
            try await journal.append(filler)
            journal.markDone([DoneMark(id: "filler-\(i)", forwards: [])])
        }
        #expect(await eventually { (try? journal.counts().done) == 30 })
        try await journal.append(entry("first"))
        let large = EventRecord(
            name: "channel_create", callID: "c", otherLeg: nil, accountID: nil,
            outcomes: String(repeating: "x", count: 200_000))
        journal.markDone([DoneMark(id: "first", forwards: [], record: large)])
        // The writer tries the mark once it is due, and fails: the file is full. Appends go on meanwhile.
        #expect(await eventually { journal.doneMarksWaitAfterFailure })
        for i in 0..<2 {
            try await journal.append(entry("next-\(i)"))
            journal.markDone([DoneMark(id: "next-\(i)", forwards: [])])
        }
        var counts = try journal.counts()
        #expect(counts.done == 30 && counts.pending == 3, "\(counts)")
        // Room again: retention deletes the finished fillers (another connection: the file's free pages are
        // reused by the next try).
        #expect(try EventJournal(directory: directory).prune(olderThan: -60) == 30)
        #expect(await eventually { (try? journal.counts()).map { $0.pending == 0 && $0.done == 3 } ?? false })
        counts = try journal.counts()
        #expect(counts.pending == 0 && counts.done == 3, "\(counts)")
    }

    /// Done marks wait to be written together: for `maxWait` after the first, unless `batch` of them gather
    /// first or the journal is drained. A clock the test moves by hand.
    @Test func doneMarksAreDueAfterTheirWaitOrOnceEnoughGather() {
        let clock = Mutex<UInt64>(1_000)
        var queue = EventJournal.DoneQueue(now: { clock.withLock { $0 } })
        let wait = EventJournal.DoneQueue.maxWait
        func marks(_ ids: [String]) -> [DoneMark] { ids.map { DoneMark(id: $0, forwards: []) } }
        #expect(queue.due() == nil)
        #expect(queue.take().isEmpty)

        queue.append(marks(["a"]))
        #expect(queue.due() == wait)
        clock.withLock { $0 += wait / 2 }
        // A later mark does not put the first one's time off.
        queue.append(marks(["b"]))
        #expect(queue.due() == wait - wait / 2)
        #expect(queue.take().isEmpty)
        #expect(queue.marks.map(\.id) == ["a", "b"])
        clock.withLock { $0 += wait - wait / 2 }
        #expect(queue.due() == 0)
        #expect(queue.take().map(\.id) == ["a", "b"])
        #expect(queue.due() == nil)

        // The next mark waits from its own arrival.
        clock.withLock { $0 += 5 * wait }
        queue.append(marks(["c"]))
        #expect(queue.due() == wait)
        // Marks that failed go back in front of it, and are due at once when enough have gathered.
        queue.putBack(marks(["x", "y"]))
        #expect(queue.marks.map(\.id) == ["x", "y", "c"])
        queue.append(marks((0..<(EventJournal.DoneQueue.batch - 3)).map { "m\($0)" }))
        #expect(queue.due() == 0)
        #expect(queue.take().count == EventJournal.DoneQueue.batch)

        // Draining: due at once.
        queue.append(marks(["d"]))
        #expect(queue.due() == wait)
        queue.urgent = true
        #expect(queue.take().map(\.id) == ["d"])
    }

    /// The writer waits for more appends only after a commit of several (requests arriving together), and
    /// only while fewer than its target wait: on a quiet server, a request after a commit of one is committed
    /// at once.
    @Test func theWriterWaitsForMoreAppendsOnlyUnderLoad() {
        typealias Gathering = EventJournal.AppendGathering
        // Quiet: the last commit held one event, or none has been made.
        #expect(!Gathering.waits(pending: 1, lastCommit: 0))
        #expect(!Gathering.waits(pending: 1, lastCommit: 1))
        #expect(!Gathering.waits(pending: 5, lastCommit: 1))
        // Under load: a few waiting are held for more; enough of them, or none, are not.
        #expect(Gathering.waits(pending: 1, lastCommit: 2))
        #expect(Gathering.waits(pending: Gathering.target - 1, lastCommit: 30))
        #expect(!Gathering.waits(pending: Gathering.target, lastCommit: 30))
        #expect(!Gathering.waits(pending: 0, lastCommit: 30))
    }

    @Test func theLogIsCopiedIntoTheDatabaseEvery4000Pages() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let log = EventJournal.file(in: path) + "-wal"
        // A frame of the log is a 24-byte header and a 4,096-byte page.
        func logPages() -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0) / 4_120
        }
        let body = [UInt8](repeating: UInt8(ascii: "a"), count: 8_000)
        var largest = 0
        // One commit each: about 4 pages (the row's page, 2 overflow pages, the indexes), 6,000 in all.
        for i in 0..<1_500 {
            try await journal.append(
                EventJournal.Entry(
                    id: "e\(i)", receivedAt: Date().timeIntervalSince1970, hook: nil, format: "json", body: body,
                    meta: "{}"))
            largest = max(largest, logPages())
        }
        // SQLite's default would have copied the log back and started it over at 1,000 pages; with no
        // checkpoint at all it would have kept growing.
        #expect(largest > 3_000)
        #expect(largest < 4_100)
    }

    /// The log is copied into the database beside the writer once `LogCopier.everyEventsLogged` events were
    /// appended (a journal with the accepted-event log), long before the writer's own checkpoint at 4,000 pages
    /// would have.
    @Test func theLogIsCopiedIntoTheDatabaseBesideTheWriter() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let file = EventJournal.file(in: path)
        func size(_ file: String) -> Int {
            (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        }
        let before = size(file)
        try await appendLogCopiersWorth(to: journal)
        // Fewer pages than the writer's checkpoint waits for (a frame is a 24-byte header and a 4 KiB page):
        // only the copier can have put them into the database.
        #expect(size(file + "-wal") / 4_120 < 4_000)
        #expect(await eventually { size(file) > before + LogCopier.everyEventsLogged * 1_000 })
    }

    /// Appends as many events as the log copier waits for (`LogCopier.everyEventsLogged`), of 1 KB each, at once.
    func appendLogCopiersWorth(to journal: EventJournal) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<LogCopier.everyEventsLogged {
                var event = entry("e\(i)")
                event.body = Array(repeating: UInt8(ascii: "a"), count: 1_000)
                group.addTask { try await journal.append(event) }
            }
            try await group.waitForAll()
        }
    }

    /// What the file grows by leaves the page cache once it lies `cachedTail` behind the file's end: most of it
    /// is no longer resident afterwards (`mincore`). What the file held when the journal opened is not released.
    @Test func theFilesGrowthLeavesThePageCacheBehindItsEnd() async throws {
        // In /var/tmp, which is on a disk: a file in memory (tmpfs, as /tmp is on some systems) is never
        // dropped from the cache.
        let path = "/var/tmp/switchboard-journal-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = EventJournal.file(in: path)
        let journal = try EventJournal(directory: path, cachedTail: 1 << 20)
        let opened = journal.releasedUpTo
        #expect(opened == (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int))
        try await appendLogCopiersWorth(to: journal)
        // 2,000 rows of 1 KB: about 3 MB, of which whole megabytes up to 1 MB before the end are released.
        #expect(await eventually { journal.releasedUpTo >= 1 << 20 })
        let released = journal.releasedUpTo
        let size = try #require(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        #expect(released % (1 << 20) == 0 && released <= size - (1 << 20))
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (opened + page - 1) / page
        let pages = try residency(of: file, through: released)[first...]
        // A page of the released part can be read back (an index page the writer needed again); most are not.
        let resident = pages.filter { $0 }.count
        #expect(resident * 4 < pages.count, "\(resident) of \(pages.count) released pages are resident")
        // Released is not lost: the rows read back from the disk.
        #expect(try journal.unfinished().filter { $0.body.count == 1_000 }.count == 2_000)
    }

    /// Whether each page of a file's first `length` bytes is in the page cache (`mincore` on a mapping of it;
    /// mapping does not read the file).
    func residency(of path: String, through length: Int) throws -> [Bool] {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)
        try #require(map != MAP_FAILED)
        defer { munmap(map, length) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var pages = [UInt8](repeating: 0, count: (length + page - 1) / page)
        try #require(mincore(map, length, &pages) == 0)
        return pages.map { $0 & 1 == 1 }
    }

    @Test func retentionDeletesWhatIsFinishedAndKeepsWhatIsNot() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        for id in ["done", "waiting"] { try await journal.append(entry(id)) }
        let forward = { (url: String) in
            NewDelivery(
                rule: "r", method: "POST", url: url, headers: [.init(name: "Content-Type", value: "text/plain")],
                body: Array("hi".utf8))
        }
        journal.markDone("done", forwards: [forward("http://a/1"), forward("http://a/2"), forward("http://a/3")])
        // markDone is written by the journal's writer: wait for it, not for a fixed time.
        #expect(await eventually { (try? journal.deliveries(.pending).count) == 3 })
        let queued = try journal.deliveries(.pending)
        try #require(queued.count == 3)
        #expect(
            queued.allSatisfy {
                $0.eventID == "done" && $0.body == Array("hi".utf8) && $0.headers.first?.value == "text/plain"
            })
        let now = Date().timeIntervalSince1970
        let ok = DeliveryAttempt(number: 1, at: now, status: 200, latencyMs: 3, error: nil, excerpt: "ok")
        let failed = DeliveryAttempt(number: 1, at: now, status: 500, latencyMs: 3, error: "HTTP 500", excerpt: nil)
        try await journal.record(ok, of: queued[0].id, result: .delivered)
        try await journal.record(failed, of: queued[1].id, result: .dead)
        try await journal.record(failed, of: queued[2].id, result: .retry(at: now + 60))

        // An attempt that was in flight when an operator redelivered the row does not overwrite the redeliver.
        let inFlight = try #require(try journal.deliveries(.pending).first)
        #expect(try journal.redeliver([inFlight.id]) == [inFlight.id])
        try await journal.record(failed, of: inFlight.id, result: .dead, unchangedSince: inFlight.updatedAt)
        let after = try #require(try journal.deliveries(.pending).first { $0.id == inFlight.id })
        #expect(after.attempts == 0)
        #expect(try journal.attempts(inFlight.id).count == 2)

        let rejected = RejectedStore(directory: URL(fileURLWithPath: path).appendingPathComponent("rejected"))
        rejected.keep(
            body: Array("bad".utf8), reason: "r", code: "c", method: "POST", path: "/hooks/x", headers: [], peer: nil)
        let retention = Retention(journal: journal, rejected: rejected, maxAge: -1, logger: .init(label: "test"))
        #expect(retention.prune() == 3)  // the done event, the delivered forward, the rejected body
        #expect(try journal.counts() == (pending: 1, done: 0))
        #expect(try journal.deliveryCounts() == [.dead: 1, .pending: 1])
        #expect(try journal.attempts(queued[0].id).isEmpty)
        #expect(try journal.attempts(queued[1].id).count == 1)
        #expect(rejected.list().isEmpty)
        // Within the age nothing goes.
        let keep = Retention(journal: journal, rejected: rejected, maxAge: 3600, logger: .init(label: "test"))
        #expect(keep.prune() == 0)
    }

    /// The age rule finds what to delete on a reader, before the batch's transaction: a forward an operator
    /// redelivers in between is pending again, and stays, with its attempts.
    @Test func ageRetentionKeepsAForwardRedeliveredAfterItsSearch() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        try await journal.append(entry("e"))
        journal.markDone(
            "e", forwards: [NewDelivery(rule: "r", method: "POST", url: "http://a/1", headers: [], body: [])])
        #expect(await eventually { (try? journal.deliveries(.pending).count) == 1 })
        let id = try #require(try journal.deliveries(.pending).first).id
        let ok = DeliveryAttempt(
            number: 1, at: Date().timeIntervalSince1970, status: 200, latencyMs: 3, error: nil, excerpt: "ok")
        try await journal.record(ok, of: id, result: .delivered)
        let searches = Mutex(0)
        journal.onAgeSearch {
            guard
                searches.withLock({ count in
                    count += 1
                    return count == 1
                })
            else { return }
            _ = try? journal.redeliver([id])
        }
        defer { journal.onAgeSearch(nil) }
        #expect(try journal.prune(olderThan: -1) == 1)  // the done event, not the forward
        #expect(searches.withLock { $0 } == 2)  // the second found nothing, and ended the pass
        #expect(try journal.deliveryCounts() == [.pending: 1])
        #expect(try journal.attempts(id).count == 1)
    }

    @Test func retentionBySizeDeletesTheOldestDoneEventsOnly() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let padding = String(repeating: "x", count: 8000)
        for i in 0..<300 {
            var e = entry("s\(i)")
            e.receivedAt = Double(i)
            e.body = Array(#"{"hook_event":"channel_create","padding":"\#(padding)"}"#.utf8)
            try await journal.append(e)
        }
        for i in 0..<250 { journal.markDone("s\(i)") }
        await journal.drain()
        #expect(try journal.counts() == (pending: 50, done: 250))
        #expect(try journal.prune(toFit: 1 << 30) == 0)  // under the cap: nothing goes
        let removed = try journal.prune(toFit: 1 << 20)
        let counts = try journal.counts()
        #expect(removed > 100)
        #expect(counts.pending == 50)  // never pending ones
        #expect(counts.done == 250 - removed)
        let remaining = try journal.prune(toFit: 0)  // everything done may go, the pending stay
        #expect(remaining == counts.done)
        #expect(try journal.counts() == (pending: 50, done: 0))
        #expect(try journal.unfinished().map(\.id) == (250..<300).map { "s\($0)" })
    }

    @Test func retentionAppliesTheSizeCapBetweenItsPasses() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let rejected = RejectedStore(directory: URL(fileURLWithPath: path).appendingPathComponent("rejected"))
        // A pass at start and none for an hour after it: only the checks between passes can delete anything.
        let retention = Retention(
            journal: journal, rejected: rejected, maxAge: 3600, maxJournalBytes: 1 << 20, interval: .seconds(3600),
            sizeCheckInterval: .milliseconds(20), logger: .init(label: "test"))
        let running = Task { try await retention.run() }
        defer { running.cancel() }
        let padding = String(repeating: "x", count: 8000)
        for i in 0..<300 {
            var e = entry("c\(i)")
            e.body = Array(#"{"hook_event":"channel_create","padding":"\#(padding)"}"#.utf8)
            try await journal.append(e)
        }
        for i in 0..<250 { journal.markDone("c\(i)") }
        await journal.drain()
        #expect(await eventually { (try? journal.bytesInUse()).map { $0 <= 1 << 20 } ?? false })
        let counts = try journal.counts()
        #expect(counts.pending == 50)  // never pending ones
        #expect(counts.done < 250)
    }

    @Test func retentionDeletesOnItsOwnQueueAndNotOnTheCallingTasksThread() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let rejected = RejectedStore(directory: URL(fileURLWithPath: path).appendingPathComponent("rejected"))
        for i in 0..<20 { try await journal.append(entry("q\(i)")) }
        for i in 0..<20 { journal.markDone("q\(i)") }
        await journal.drain()
        // Where each batch ran: its observer is called on the thread that deleted it.
        let onQueue = Mutex<[Bool]>([])
        journal.onPruneBatch { _ in
            let here = Retention.isOnQueue
            onQueue.withLock { $0.append(here) }
        }
        let retention = Retention(
            journal: journal, rejected: rejected, maxAge: -1, interval: .seconds(3600), logger: .init(label: "test"))
        let running = Task { try await retention.run() }
        defer { running.cancel() }
        #expect(await eventually { onQueue.withLock { !$0.isEmpty } })
        #expect(onQueue.withLock { $0 }.allSatisfy { $0 })
        #expect(try journal.counts() == (pending: 0, done: 0))
    }

    @Test func retentionDeletesInBatchesAndAnAppendCommitsBetweenThem() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let count = EventJournal.pruneBatch * 3 + 10
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<count { group.addTask { try await journal.append(self.entry("b\(i)")) } }
            try await group.waitForAll()
        }
        for i in 0..<count { journal.markDone("b\(i)") }
        await journal.drain()
        #expect(try journal.counts() == (pending: 0, done: count))
        // After the first batch, an event is accepted (through the accepted-event log, as a request's is); after
        // each later one, whether it is in SQLite yet.
        let batches = Mutex<[Int]>([])
        let committed = Mutex<[Bool]>([])
        journal.onPruneBatch { deleted in
            if batches.withLock({
                $0.append(deleted); return $0.count
            }) == 1 {
                journal.append(self.entry("late"), duplicateKey: nil, window: 0) { _ in }
            } else {
                let ids = (try? journal.unfinished().map(\.id)) ?? []
                committed.withLock { $0.append(ids == ["late"]) }
            }
        }
        defer { journal.onPruneBatch(nil) }
        #expect(try journal.prune(olderThan: -60) == count)
        // A transaction a batch, not one for all; the late event committed before the second batch (it did not
        // wait for retention to end), and was kept (it is not done).
        let size = EventJournal.pruneBatch
        #expect(batches.withLock { $0 } == [size, size, size, 10])
        #expect(committed.withLock { $0 } == [true, true, true])
        #expect(try journal.counts() == (pending: 1, done: 0))
    }

    /// Retention by size takes batches of `pruneBatch` while each frees pages, and twice as many (up to
    /// `pruneBatchMost`) after one that found more pages in use than the one before: appends outran it.
    @Test func retentionBySizeTakesLargerBatchesWhileAppendsOutrunIt() async throws {
        let path = directory()
        let journal = try EventJournal(directory: path)
        let size = EventJournal.pruneBatch
        func finish(_ prefix: String, _ count: Int) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<count { group.addTask { try await journal.append(self.entry("\(prefix)\(i)")) } }
                try await group.waitForAll()
            }
            for i in 0..<count { journal.markDone("\(prefix)\(i)") }
            await journal.drain()
        }
        let batches = Mutex<[Int]>([])
        journal.onPruneBatch { deleted in batches.withLock { $0.append(deleted) } }
        defer { journal.onPruneBatch(nil) }
        try await finish("a", 2 * size + 200)
        #expect(try journal.prune(toFit: 0) == 2 * size + 200)
        #expect(batches.withLock { $0 } == [size, size, 200])

        // After each batch an event of 2 MB is accepted, and commits before the next (a writer turn between two).
        let most = EventJournal.pruneBatchMost
        let count = 7 * size + most + 100  // 500, 1,000, 2,000 (= most), then most and 100
        try await finish("b", count)
        batches.withLock { $0.removeAll() }
        let padding = String(repeating: "x", count: 2 << 20)
        journal.onPruneBatch { deleted in
            let n = batches.withLock {
                $0.append(deleted); return $0.count
            }
            var late = self.entry("late\(n)")
            late.body = Array(#"{"hook_event":"channel_create","padding":"\#(padding)"}"#.utf8)
            journal.append(late, duplicateKey: nil, window: 0) { _ in }
        }
        #expect(try journal.prune(toFit: 0) == count)
        #expect(batches.withLock { $0 } == [size, 2 * size, most, most, 100])
        #expect(try journal.counts() == (pending: 5, done: 0))
    }

    @Test func backoffGrowsWithJitterAndACap() {
        var policy = Outbox.Policy()
        policy.initialBackoff = 1
        policy.maxBackoff = 10
        for failures in 1...8 {
            let full = min(10, pow(2, Double(failures - 1)))
            let delays = (0..<50).map { _ in policy.backoff(afterFailures: failures) }
            #expect(delays.allSatisfy { $0 >= full / 2 && $0 <= full })
            if failures > 1 { #expect(Set(delays).count > 1) }
        }
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
