import EventStore
import Foundation
import JSONCore
import RuleEngine
import Synchronization
import TestSupport
import Testing

@testable import ClusterStore

/// What only several nodes on one PostgreSQL database need: shared de-duplication, the processing lease and
/// its fencing, migrations two nodes run at once.
@Suite struct PostgresJournalTests {
    func node(_ url: String, _ name: String, lease: Double = 30) async throws -> PostgresJournal {
        try await PostgresJournal.open(
            url: url, node: name, lease: lease, spoolDirectory: nil, logger: TestPostgres.logger)
    }

    @Test func twoNodesStartingAtOnceMigrateTheSchemaOnce() async throws {
        let url = try await TestPostgres.freshDatabase()
        async let a = node(url, "a")
        async let b = node(url, "b")
        let (first, second) = try await (a, b)
        try await first.append(JournalBackendTests.event("e1"))
        #expect(try await second.unfinished().map(\.id) == ["e1"])
    }

    @Test func aRepeatIsCaughtWhicheverNodeItReaches() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        let b = try await node(url, "b")
        let key = "hook|call|CHANNEL_CREATE|1"
        #expect(try await a.append(JournalBackendTests.event("e1"), duplicateKey: key, window: 600))
        #expect(!(try await b.append(JournalBackendTests.event("e2"), duplicateKey: key, window: 600)))
        #expect(
            try await b.append(JournalBackendTests.event("e3"), duplicateKey: "hook|call|CHANNEL_CREATE|2", window: 600)
        )
        #expect(try await a.unfinished().map(\.id) == ["e1", "e3"])
        // Past the window the key is free again.
        let brief = "hook|call|CHANNEL_CREATE|3"
        #expect(try await a.append(JournalBackendTests.event("e4"), duplicateKey: brief, window: 0.5))
        let freed = await eventuallyAsync {
            (try? await b.append(JournalBackendTests.event("e5-\(UUID())"), duplicateKey: brief, window: 0.5)) == true
        }
        #expect(freed)
    }

    /// Appends that queue while a statement runs go in the next one together: in the order they came, each
    /// answered for itself, a repeat among them caught as one across nodes is.
    @Test func appendsQueuedTogetherAreWrittenInOrderAndEachAnsweredForItself() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        defer { a.close() }
        let answers = Mutex<[String: Bool]>([:])
        let count = 300  // more than one statement takes
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for i in 0..<count {
                var event = JournalBackendTests.event("e\(i)")
                if i == 7 { event.hook = nil }
                // e1 repeats e0 (one key); e200 repeats e5, in a later statement or the same.
                let key: String? = i == 1 ? "k0" : i == 200 ? "k5" : i % 5 == 0 ? "k\(i)" : nil
                a.append(event, duplicateKey: key, window: 600) { result in
                    let finished = answers.withLock { answers -> Bool in
                        answers["e\(i)"] = (try? result.get()) ?? false
                        return answers.count == count
                    }
                    if finished { done.resume() }
                }
            }
        }
        let got = answers.withLock { $0 }
        #expect(got["e0"] == true && got["e1"] == false && got["e5"] == true && got["e200"] == false)
        #expect(got.filter { !$0.value }.count == 2)
        let kept = (0..<count).filter { $0 != 1 && $0 != 200 }.map { "e\($0)" }
        #expect(try await a.unfinished().map(\.id) == kept)
        #expect(try await a.storedEvent("e7")?.hook == nil)
        #expect(try await a.storedEvent("e8")?.hook == "channel_create")
        // The same event again (a retry of an append that had committed after all) is accepted, not a repeat.
        #expect(try await a.append(JournalBackendTests.event("e0"), duplicateKey: "k0", window: 600))
        #expect(!(try await a.append(JournalBackendTests.event("e0b"), duplicateKey: "k0", window: 600)))
        #expect(try await a.unfinished().count == kept.count)
    }

    /// One statement's appends: a key two of them share is the first one's, the second is a repeat; a nil hook
    /// is stored as none; the order is kept.
    @Test func oneStatementAnswersEachOfItsAppends() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        defer { a.close() }
        func pending(_ id: String, key: String?, hook: String? = "channel_create") -> PostgresJournal.PendingAppend {
            var event = JournalBackendTests.event(id)
            event.hook = hook
            return .init(event: event, duplicateKey: key, window: 600, queuedAt: .now, completion: { _ in })
        }
        let batch = [
            pending("b1", key: "k"), pending("b2", key: "k"), pending("b3", key: nil),
            pending("b4", key: "j", hook: nil), pending("b5", key: nil),
        ]
        #expect(try await a.insert(batch) == [true, false, true, true, true])
        #expect(try await a.unfinished().map(\.id) == ["b1", "b3", "b4", "b5"])
        #expect(try await a.storedEvent("b4")?.hook == nil)
        #expect(try await a.storedEvent("b5")?.hook == "channel_create")
        // The same statement again (a retry after a commit that did land): accepted, nothing written twice.
        #expect(try await a.insert(batch) == [true, false, true, true, true])
        #expect(try await a.unfinished().count == 4)
        #expect(PostgresJournal.statementCount([10, 20, 30]) == 3)
        #expect(PostgresJournal.statementCount([PostgresJournal.appendBatchBytes, 1]) == 1)
        #expect(PostgresJournal.statementCount([PostgresJournal.appendBatchBytes + 1]) == 1)
        #expect(PostgresJournal.statementCount(Array(repeating: 1, count: 300)) == PostgresJournal.appendBatchMost)
    }

    /// While the database is stopped, appends are answered from the local spool, each once; they move over,
    /// in more than one statement, when it answers again.
    @Test func appendsGoToTheSpoolWhileTheDatabaseIsStoppedAndMoveOverAfter() async throws {
        let cluster = try await TestPostgres.OwnCluster.create()
        defer { cluster.destroy() }
        let directory = NSTemporaryDirectory() + "switchboard-spool-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try await PostgresJournal.open(
            url: cluster.url, node: "a", spoolDirectory: directory, appendTimeout: .milliseconds(500),
            logger: TestPostgres.logger)
        defer { a.close() }
        try await a.append(JournalBackendTests.event("before"))
        try await cluster.stop()
        let ids = (0..<150).map { "during-\($0)" }  // more than one statement moves
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for id in ids {
                group.addTask { try await a.append(JournalBackendTests.event(id), duplicateKey: nil, window: 0) }
            }
            for try await accepted in group { #expect(accepted) }
        }
        #expect(a.spooledCount() == ids.count)
        try await cluster.start()
        a.renewPool()  // as the node does once the database answers (the old pool may wait out a backoff)
        let moved = await eventuallyAsync(60) {
            _ = try? await a.moveSpooled()
            return a.spooledCount() == 0
        }
        #expect(moved)
        #expect(try await a.unfinished().map(\.id).sorted() == (["before"] + ids).sorted())
    }

    @Test func aNodeThatLostTheLeaseCommitsNothingAndTheNewHolderRunsTheEvent() async throws {
        let url = try await TestPostgres.freshDatabase()
        // Long enough that a busy machine's pauses between the steps below do not let it lapse early.
        let a = try await node(url, "a", lease: 4)
        let b = try await node(url, "b", lease: 4)
        let first = try #require(try await a.acquireLease())
        a.beginTerm(first)
        #expect(try await b.acquireLease() == nil)  // held
        try await a.append(JournalBackendTests.event("e1"))
        #expect(a.isProcessing)

        // a stops renewing (as if paused or cut off); after the lease b takes over with a new epoch.
        var second: Int64? = nil
        let took = await eventuallyAsync(30) {
            second = try? await b.acquireLease()
            return second != nil
        }
        #expect(took)
        #expect(second.map { $0 > first } == true)
        b.beginTerm(try #require(second))

        // a finishes its run late: its done mark and store write must not land.
        let write = StoreRecord(namespace: "shared", key: "n", value: .int(1), expiresAt: nil, seq: 1)
        a.markDone([DoneMark(id: "e1", forwards: [JournalBackendTests.forward()], writes: [write])])
        await a.drain(limit: .seconds(10))
        #expect(!a.isProcessing)
        #expect(try await b.unfinished().map(\.id) == ["e1"])
        #expect(try await b.fetchStoreRecords().isEmpty)
        #expect(try await b.deliveries(.all, limit: 10).isEmpty)
        #expect(try await a.pendingDestinations().isEmpty)  // only the holder delivers

        // The holder's run lands once.
        b.markDone([DoneMark(id: "e1", forwards: [JournalBackendTests.forward()], writes: [write])])
        await b.drain(limit: .seconds(10))
        #expect(try await b.unfinished().isEmpty)
        #expect(try await b.fetchStoreRecords().map(\.value) == [.int(1)])
        #expect(try await b.deliveries(.all, limit: 10).count == 1)
    }

    /// A batch of done marks whose commit timed out on this side may have committed all the same; its retry
    /// commits the same marks again. That must queue no forward twice, and leave the store as it was.
    @Test func doneMarksCommittedTwiceQueueEachForwardOnce() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        defer { a.close() }
        a.beginTerm(try #require(try await a.acquireLease()))
        try await a.append(JournalBackendTests.event("e1"))
        try await a.append(JournalBackendTests.event("e2"))
        let write = StoreRecord(namespace: "shared", key: "n", value: .int(1), expiresAt: nil, seq: 1)
        let marks = [
            DoneMark(id: "e1", forwards: [JournalBackendTests.forward("/a"), JournalBackendTests.forward("/b")]),
            DoneMark(id: "e2", forwards: [], writes: [write]),
        ]
        a.markDone(marks)
        await a.drain(limit: .seconds(10))
        a.markDone(marks)  // the retry
        a.markDone([DoneMark(id: "e2", forwards: [JournalBackendTests.forward("/c")])])  // a late run of a done event
        await a.drain(limit: .seconds(10))
        #expect(try await a.unfinished().isEmpty)
        #expect(try await a.deliveries(forEvent: "e1").map(\.url) == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
        #expect(try await a.deliveries(forEvent: "e2").isEmpty)
        #expect(try await a.fetchStoreRecords().map(\.value) == [.int(1)])
    }

    @Test func ticksGoToTheLeaseHolderAndHeartbeatsListEveryNodeWithItsRules() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        let b = try await node(url, "b")
        let epoch = try #require(try await a.acquireLease())
        #expect(!(await a.claim(rule: "report", due: 60, node: "a", until: 120)))  // the lease taken, its term not begun
        a.beginTerm(epoch)
        #expect(await a.claim(rule: "report", due: 60, node: "a", until: 120))
        #expect(!(await b.claim(rule: "report", due: 60, node: "b", until: 120)))

        try await a.heartbeat(version: "1.0", rulesHash: "h1", inFlight: 3, startedAt: 10)
        try await b.heartbeat(version: "1.0", rulesHash: "h2", inFlight: 0, startedAt: 20)
        let listed = try await b.nodes()
        #expect(listed.map(\.name).sorted() == ["a", "b"])
        #expect(listed.allSatisfy { $0.live })
        #expect(
            listed.first { $0.name == "a" }.map { ($0.processing, $0.rulesHash, $0.inFlight) } ?? (false, "", 0) == (
                true, "h1", 3
            ))
        #expect(listed.first { $0.name == "b" }.map { ($0.processing, $0.rulesHash) } ?? (true, "") == (false, "h2"))
    }

    @Test func aBadURLSaysWhatToWrite() async throws {
        #expect(throws: JournalError.self) { try PostgresURL("mysql://x@y/z") }
        do {
            _ = try PostgresURL("postgres://127.0.0.1:5432/db")
            Issue.record("a URL without a user was accepted")
        } catch {
            #expect("\(error)".contains("names no user"))
        }
        #expect(try PostgresURL("postgres://u:secret@h:6000/db?sslmode=disable").redacted == "postgres://u@h:6000/db")
        do {
            _ = try PostgresURL("postgres://u:secret@127.0.0.1:70000/db")
            Issue.record("a port past 65535 was accepted (NIO stops the process on it)")
        } catch {
            #expect("\(error)".contains("has port 70000: a port is 1-65535"))
            #expect(!"\(error)".contains("secret"))
        }
        do {
            _ = try await PostgresJournal.open(
                url: "postgres://nobody@127.0.0.1:\(freeLoopbackPort())/x?sslmode=disable", node: "n",
                spoolDirectory: nil, logger: TestPostgres.logger)
            Issue.record("opened a store on a port nothing listens on")
        } catch {
            #expect("\(error)".contains("cannot use the PostgreSQL store postgres://nobody@127.0.0.1"))
        }
    }
    @Test func everyNodeListsTheRequestsAnyNodeRejectedAndRetentionCapsThem() async throws {
        let url = try await TestPostgres.freshDatabase()
        let a = try await node(url, "a")
        let b = try await node(url, "b")
        let base = NSTemporaryDirectory() + "switchboard-rejected-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let onA = RejectedStore(directory: URL(fileURLWithPath: base + "/a"), shared: a)
        let onB = RejectedStore(directory: URL(fileURLWithPath: base + "/b"), shared: b)
        for n in 1...3 {
            #expect(
                onA.keep(
                    body: Array("{\"bad\": \(n)".utf8), reason: "json body: invalid JSON", code: "syntax",
                    method: "POST",
                    path: "/hooks/channel_create?token=secret", headers: [("Authorization", "Basic eDp5")],
                    peer: "10.0.0.9")
                    == nil)
        }
        // Node a kept its own files; node b lists all three from the database, newest first, with their bodies.
        #expect(onA.list().count == 3)
        #expect(onB.list().isEmpty)
        var listed: [(meta: [String: Any], body: Data?)] = []
        let arrived = await eventuallyAsync {
            listed = await onB.listWithBodies()
            return listed.count == 3
        }
        #expect(arrived)
        #expect(
            listed.map { $0.body.map { String(decoding: $0, as: UTF8.self) } } == [
                #"{"bad": 3"#, #"{"bad": 2"#, #"{"bad": 1"#,
            ])
        let first = try #require(listed.first?.meta)
        #expect(first["node"] as? String == "a")
        #expect(first["code"] as? String == "syntax")
        #expect(first["path"] as? String == "/hooks/channel_create?token=REDACTED")
        #expect((first["headers"] as? [String: String])?["authorization"] == "REDACTED")

        // Past the newest two (or a byte cap), the oldest go.
        try await b.prune(olderThan: 3600, rejectedFiles: 2)
        #expect(await onA.listWithBodies().compactMap(\.body).count == 2)
        try await b.prune(olderThan: 3600, rejectedBytes: 9)
        #expect(
            await onA.listWithBodies().map { $0.body.map { String(decoding: $0, as: UTF8.self) } } == [#"{"bad": 3"#])
    }
}
