import EventStore
import Foundation
import PostgresNIO
import RuleEngine
import Synchronization
import TestSupport
import Testing

@testable import ClusterStore

/// The processing node's feed when commits land out of `seq` order: an insert held open on a connection of the
/// test's own takes its `seq` first and commits after a later one was read.
@Suite struct EventFeedTests {
    static let start = ContinuousClock.now

    func journal() async throws -> (PostgresJournal, url: String) {
        let url = try await TestPostgres.freshDatabase()
        let journal = try await PostgresJournal.open(
            url: url, node: "a", spoolDirectory: nil, logger: TestPostgres.logger)
        return (journal, url)
    }

    /// Begins a transaction that inserts an event (taking the next `seq`) and leaves it open.
    func holdInsert(_ id: String, url: String) async throws -> PostgresConnection {
        let connection = try await PostgresURL(url).connect(logger: TestPostgres.logger)
        try await connection.query("BEGIN", logger: TestPostgres.logger)
        let body = ByteBuffer(bytes: JournalBackendTests.event(id).body)
        try await connection.query(
            """
            INSERT INTO events (id, received_at, hook, format, body, meta, accepted_by)
            VALUES (\(id), 0, 'channel_create', 'json', \(body), '{}', 'held')
            """, logger: TestPostgres.logger)
        return connection
    }

    func next(_ feed: inout EventFeed, _ journal: PostgresJournal, at seconds: Double, running: [String] = [])
        async throws -> [String]
    {
        try await feed.next(from: journal, limit: 32, excluding: { running }, now: Self.start + .seconds(seconds))
            .map(\.entry.id)
    }

    @Test func anEventThatCommitsAfterALaterOneWasReadRunsBeforeItsCallsNextEvent() async throws {
        let (journal, url) = try await journal()
        defer { journal.close() }
        var feed = EventFeed(now: Self.start)
        let held = try await holdInsert("call-1#1", url: url)  // seq 1, not committed
        try await journal.append(JournalBackendTests.event("call-2#1"))  // seq 2
        #expect(try await next(&feed, journal, at: 0) == ["call-2#1"])
        #expect(feed.position == 2 && Array(feed.holes.keys) == [1])

        // The event commits (its 200 goes out) and its call's next event arrives.
        try await held.query("COMMIT", logger: TestPostgres.logger)
        try await held.close()
        try await journal.append(JournalBackendTests.event("call-1#2"))  // seq 3
        // Well within the second before the look below the position: the hole alone brings #1 back, first.
        #expect(try await next(&feed, journal, at: 0.1) == ["call-1#1", "call-1#2"])
        #expect(feed.position == 3 && feed.holes.isEmpty)
    }

    /// The backlog pass after a takeover or an outage runs the unfinished events in arrival order (a spool
    /// moved late has later `seq`s), up to the `seq` it began at. An insert another node was still committing
    /// then is not in the pass; its call's next event, sent after its 200, must still not run before it (the
    /// cluster test once saw a call out of order right after a takeover: the pass read on past its start, took
    /// the next event, and the earlier one came a second later, below the feed's position).
    @Test func theBacklogRunsInArrivalOrderAndAnEventStillCommittingThenRunsBeforeItsCallsNextEvent() async throws {
        let (journal, url) = try await journal()
        defer { journal.close() }
        var feed = EventFeed(now: Self.start)
        try await journal.append(JournalBackendTests.event("e1"))  // seq 1
        let held = try await holdInsert("call-1#1", url: url)  // seq 2, not committed
        try await journal.append(JournalBackendTests.event("e3"))  // seq 3
        var spooled = JournalBackendTests.event("spooled")  // seq 4, moved from a spool: it arrived first
        spooled.receivedAt = 1
        try await journal.append(spooled)
        try await feed.beginBacklog(from: journal)
        #expect(feed.backlog?.top == 4 && feed.backlog?.order == [4, 1, 3])

        var passed: [String] = []
        let first = try #require(try await feed.backlogPage(from: journal, limit: 2))
        passed += first.map(\.entry.id)
        // The insert commits (its 200 goes out) and its call's next event arrives, while the pass goes on.
        try await held.query("COMMIT", logger: TestPostgres.logger)
        try await held.close()
        try await journal.append(JournalBackendTests.event("call-1#2"))  // seq 5
        while let page = try await feed.backlogPage(from: journal, limit: 2) { passed += page.map(\.entry.id) }
        #expect(passed == ["spooled", "e1", "e3"])
        feed.endBacklog(now: Self.start)
        #expect(feed.position == 4 && Array(feed.holes.keys) == [2])
        #expect(try await next(&feed, journal, at: 0.1, running: passed) == ["call-1#1", "call-1#2"])
        #expect(feed.holes.isEmpty && feed.position == 5)
    }

    /// A pass lists its events when it begins; one done by then is skipped, and a page may come back empty.
    @Test func aBacklogPageSkipsEventsDoneSinceThePassBegan() async throws {
        let (journal, _) = try await journal()
        defer { journal.close() }
        journal.beginTerm(try #require(try await journal.acquireLease()))
        for id in ["a", "b", "c"] { try await journal.append(JournalBackendTests.event(id)) }
        var feed = EventFeed(now: Self.start)
        try await feed.beginBacklog(from: journal)
        journal.markDone([DoneMark(id: "a", forwards: [], writes: []), DoneMark(id: "b", forwards: [], writes: [])])
        await journal.drain(limit: .seconds(10))
        #expect(try await feed.backlogPage(from: journal, limit: 2)?.isEmpty == true)
        #expect(try await feed.backlogPage(from: journal, limit: 2)?.map(\.entry.id) == ["c"])
        #expect(try await feed.backlogPage(from: journal, limit: 2) == nil)
    }

    /// A backlog page read while an event's done mark was queued still lists the event; the mark commits while
    /// the feed works through the page. The feed must still skip the event (it ran), until a query that begins
    /// after the commit no longer lists it. Forgetting it at the commit ran such events twice after an outage.
    @Test func anEventWhoseMarkCommitsWhileItsPageIsWorkedThroughIsNotRunAgain() async throws {
        let (journal, _) = try await journal()
        defer { journal.close() }
        journal.beginTerm(try #require(try await journal.acquireLease()))
        try await journal.append(JournalBackendTests.event("e1"))
        journal.releaseSettled()
        #expect(try await journal.pending(after: 0, limit: 32).map(\.entry.id) == ["e1"])
        #expect(journal.dispatched.withLock { $0.insert("e1") })  // handed to the engine
        journal.markDone([DoneMark(id: "e1", forwards: [], writes: [])])
        await journal.drain(limit: .seconds(10))
        #expect(try await journal.counts().pending == 0)
        // Committed, but the page in hand was read before the commit: the feed reaching e1 in it skips it.
        #expect(!journal.dispatched.withLock { $0.insert("e1") })
        // The next query begins after the commit: it sees e1 done, and the id is let go.
        journal.releaseSettled()
        #expect(try await journal.pending(after: 0, limit: 32).isEmpty)
        #expect(journal.dispatched.withLock { $0.ids.isEmpty })
    }

    @Test func aRolledBackInsertIsAHoleForAWhileAndNeverPausesTheFeed() async throws {
        let (journal, url) = try await journal()
        defer { journal.close() }
        var feed = EventFeed(now: Self.start)
        let held = try await holdInsert("gone", url: url)
        try await held.query("ROLLBACK", logger: TestPostgres.logger)
        try await held.close()
        try await journal.append(JournalBackendTests.event("e2"))
        try await journal.append(JournalBackendTests.event("e3"))
        #expect(try await next(&feed, journal, at: 0) == ["e2", "e3"])
        #expect(Array(feed.holes.keys) == [1])
        try await journal.append(JournalBackendTests.event("e4"))
        #expect(try await next(&feed, journal, at: 0.5) == ["e4"])
        #expect(Array(feed.holes.keys) == [1])
        // After the patience it is dropped.
        #expect(try await next(&feed, journal, at: 10.5, running: ["e2", "e3", "e4"]).isEmpty)
        #expect(feed.holes.isEmpty && feed.position == 4)
    }

    @Test func anInsertThatCommitsAfterItsHoleWasDroppedIsStillFoundBelowThePosition() async throws {
        let (journal, url) = try await journal()
        defer { journal.close() }
        var feed = EventFeed(now: Self.start)
        let held = try await holdInsert("slow", url: url)
        try await journal.append(JournalBackendTests.event("e2"))
        #expect(try await next(&feed, journal, at: 0) == ["e2"])
        #expect(try await next(&feed, journal, at: 10.5, running: ["e2"]).isEmpty)
        #expect(feed.holes.isEmpty)
        try await held.query("COMMIT", logger: TestPostgres.logger)
        try await held.close()
        // Not yet a second since the last look below.
        #expect(try await next(&feed, journal, at: 11, running: ["e2"]).isEmpty)
        #expect(try await next(&feed, journal, at: 12, running: ["e2"]) == ["slow"])
    }

    @Test func holesAreKeptForTheSeqsJustBelowAJumpAndUpToALimit() {
        var feed = EventFeed(now: Self.start)
        feed.read([1, 2, 5], now: Self.start)
        #expect(feed.holes.keys.sorted() == [3, 4])
        feed.read([4, 6], now: Self.start)
        #expect(feed.holes.keys.sorted() == [3] && feed.position == 6)
        // A jump longer than the limit keeps the seqs just below it.
        feed.read([10_000], now: Self.start)
        let kept = feed.holes.keys.sorted()
        #expect(kept.count == EventFeed.maximumHoles)
        #expect(kept.first == 10_000 - Int64(EventFeed.maximumHoles) && kept.last == 9_999)
        // Events read but not run (the feed stopped partway) are asked for again; nothing above the position.
        feed.reread([9_000, 10_000, 10_001], now: Self.start)
        #expect(feed.holes[9_000] != nil && feed.holes[10_000] != nil && feed.holes[10_001] == nil)
    }

    @Test func theBacklogPassLeavesHolesForTheSeqsJustBelowItsTopThatItDidNotList() {
        var feed = EventFeed(now: Self.start)
        feed.read([1, 2, 3, 7], now: Self.start)
        #expect(feed.holes.keys.sorted() == [4, 5, 6])
        // The pass (seqs up to 10,000, of which 9,000 and 10,000 existed when it began) lists 5 and the top: the
        // seqs near the top that did not exist become holes, and holes from before stay unless it listed them.
        let top: Int64 = 10_000
        feed.beginBacklog(top: top, existing: [9_000, top], order: [top, 5])
        feed.endBacklog(now: Self.start)
        #expect(feed.position == top && feed.backlog == nil)
        let holes = feed.holes.keys.sorted()
        let window = top - Int64(EventFeed.maximumHoles) + 1
        #expect(holes == [4, 6] + (window..<top).filter { $0 != 9_000 })
        // A short history: none at or below the position before the pass, and none where an event was.
        var short = EventFeed(now: Self.start)
        short.read([1, 2], now: Self.start)
        short.beginBacklog(top: 6, existing: [1, 2, 3, 4, 6], order: [4, 6])
        short.endBacklog(now: Self.start)
        #expect(short.holes.keys.sorted() == [5] && short.position == 6)
    }
}
