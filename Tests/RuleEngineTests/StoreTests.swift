import Foundation
import JSONCore
import KazooEvents
import RuleEngine
import Synchronization
import Testing

/// A clock tests move by hand.
final class TestClock: Sendable {
    let now = Mutex<Double>(1_800_000_000)
    func advance(_ seconds: Double) { now.withLock { $0 += seconds } }
    var read: @Sendable () -> Double { { [self] in now.withLock { $0 } } }
}

@Suite struct StoreTests {
    /// Runs `rules` on one channel_create in `store`, in one session, and returns the report and the marks the
    /// session's finish handed over.
    func run(
        _ rules: [String: String], store: RuleStore, event: WebhookEvent? = nil, id: String = "e1"
    ) async throws -> (EventReport, [DoneMark]) {
        let worker = try makeWorker(rules)
        let session = store.begin()
        let report = await worker.process(try event ?? sample("channel_create__inbound.json"), session: session)
        var marks: [DoneMark] = []
        store.finish(session, mark: DoneMark(id: id, forwards: [])) { marks += $0 }
        return (report, marks)
    }

    /// A done mark is a value: its copies share one box until one changes, and a change never reaches another.
    @Test func aDoneMarksCopiesAreIndependentValues() {
        let original = DoneMark(
            id: "e1", forwards: [],
            writes: [StoreRecord(namespace: "shared", key: "k", value: 1, expiresAt: nil, seq: 1)],
            record: EventRecord(
                name: "channel.channel_create", callID: "c", otherLeg: nil, accountID: nil, outcomes: "[]"))
        var copy = original
        copy.writes.append(StoreRecord(namespace: "shared", key: "j", value: nil, expiresAt: nil, seq: 2))
        copy.id = "e2"
        copy.record?.outcomes = "[{}]"
        #expect(original.id == "e1")
        #expect(original.writes.map(\.key) == ["k"])
        #expect(original.record?.outcomes == "[]")
        #expect(copy.id == "e2")
        #expect(copy.writes.map(\.key) == ["k", "j"])
        #expect(copy.record?.outcomes == "[{}]")
        #expect(copy.record?.callID == "c")
    }

    @Test func theLuaAPIReadsItsOwnWritesAndEachRuleHasItsOwnKeys() async throws {
        let store = RuleStore()
        let a = runRule(
            """
            assert(store.get("k") == nil)
            store.set("k", { n = 1, tags = { "a" } })
            assert(store.get("k").tags[1] == "a")
            assert(store.incr("hits") == 1 and store.incr("hits", 2) == 3)
            assert(store.add("once", true) == true and store.add("once", true) == false)
            store.set("gone", 1); store.delete("gone"); assert(store.get("gone") == nil)
            store.shared.set("everyone", "a was here")
            assert(store.count("calls", 600) == 1 and store.count("calls", 600) == 2)
            """, name: "a")
        let b = runRule(
            """
            assert(store.get("k") == nil, "b sees a's key")
            assert(store.shared.get("everyone") == "a was here")
            store.set("k", "b's own")
            """, name: "b")
        let (report, marks) = try await run(["a.lua": a, "b.lua": b], store: store)
        #expect(report.outcome("a")?.error == nil, "\(report.outcome("a")?.error?.message ?? "")")
        #expect(report.outcome("b")?.error == nil, "\(report.outcome("b")?.error?.message ?? "")")
        let committed = Dictionary(
            uniqueKeysWithValues: try #require(marks.first).writes.map { ("\($0.namespace)/\($0.key)", $0.value) })
        #expect(committed["rule:a/hits"] == .int(3))
        #expect(committed["rule:a/gone"] == .some(nil))
        #expect(committed["rule:b/k"] == .string("b's own"))
        #expect(committed["shared/everyone"] == .string("a was here"))
        #expect(store.records(namespace: "rule:a").map(\.key) == ["calls", "hits", "k", "once"])
    }

    @Test func mistakesAreErrorsThatSayWhatToFix() async throws {
        var limits = StoreLimits()
        limits.maxKeysPerNamespace = 2
        limits.maxValueBytes = 100
        let cases: [(String, String)] = [
            (#"store.set("a", 1); store.set("b", 2); store.set("c", 3)"#, "the store holds 2 keys for rule t already"),
            (#"store.set("big", string.rep("x", 200))"#, "is 202 bytes as JSON, more than 100"),
            (#"store.set("s", "text"); store.incr("s")"#, #"store.incr: "s" holds a string, not a number"#),
            (#"store.incr("n", 1e308); store.incr("n", 1e308)"#, #""n" would become inf: only finite numbers"#),
            (#"store.incr("m", 0/0)"#, "only finite numbers can be stored"),
            (#"store.set("", 1)"#, "keys must not be empty"),
            (#"store.set("k", 1, { ttl = -5 })"#, "ttl must be a number of seconds"),
            (#"store.set("k", 1, { tll = 5 })"#, "unknown option 'tll'"),
            (#"store.count("c", 0)"#, "the window must be a number of seconds"),
        ]
        for (body, message) in cases {
            let (report, _) = try await run(["t.lua": runRule(body)], store: RuleStore(limits: limits))
            let error = report.outcome("t")?.error?.message ?? "no error"
            #expect(error.contains(message), "\(body): \(error)")
        }
        let loading = try makeWorker([
            "t.lua": #"store.set("x", 1) return { name = "t", on = "*", run = function() end }"#
        ])
        #expect(await loading.diagnostics.first?.message.contains("not available while a rule file loads") == true)
    }

    @Test func ttlsAndWindowsFollowTheClock() async throws {
        let clock = TestClock()
        let store = RuleStore(clock: clock.read)
        _ = try await run(
            ["t.lua": runRule(#"store.set("short", 1, { ttl = "10m" }); store.count("c", 60)"#)], store: store)
        clock.advance(30)
        let (second, _) = try await run(
            ["t.lua": runRule(#"assert(store.get("short") == 1); assert(store.count("c", 60) == 2)"#)], store: store)
        #expect(second.outcome("t")?.error == nil, "\(second.outcome("t")?.error?.message ?? "")")
        clock.advance(45)  // the first occurrence is now 75 s old
        let (third, _) = try await run(["t.lua": runRule(#"assert(store.count("c", 60) == 2)"#)], store: store)
        #expect(third.outcome("t")?.error == nil, "\(third.outcome("t")?.error?.message ?? "")")
        clock.advance(600)
        let (fourth, _) = try await run(["t.lua": runRule(#"assert(store.get("short") == nil)"#)], store: store)
        #expect(fourth.outcome("t")?.error == nil, "\(fourth.outcome("t")?.error?.message ?? "")")
        #expect(store.sweepExpired() >= 1)
    }

    @Test func callStateIsSharedByRulesAndEndsAfterTheCallsDestroy() async throws {
        let clock = TestClock()
        let store = RuleStore(clock: clock.read)
        let writer = """
            return { name = "w", on = "channel_create", run = function(event) call.set("crm", { name = "Ada" }) end }
            """
        let reader = """
            return { name = "r", on = "channel_destroy", run = function(event)
              assert(call.get("crm").name == "Ada", "no crm state")
            end }
            """
        _ = try await run(["w.lua": writer, "r.lua": reader], store: store)
        let destroy = try sample("channel_destroy__inbound.json")
        let session = store.begin()
        let worker = try makeWorker(["w.lua": writer, "r.lua": reader])
        let report = await worker.process(destroy, session: session)
        #expect(report.outcome("r")?.error == nil, "\(report.outcome("r")?.error?.message ?? "")")
        session.expireNamespace("call:" + (destroy.callID ?? ""), at: clock.read() + 3600)
        store.finish(session, mark: nil) { _ in }
        #expect(store.records(namespace: "call:" + (destroy.callID ?? "")).count == 1)
        clock.advance(3601)
        #expect(store.records(namespace: "call:" + (destroy.callID ?? "")).isEmpty)
        let notification = try sample("notifications__low_balance.json")
        let (noCall, _) = try await run(
            ["n.lua": #"return { name = "n", on = "*", run = function() call.set("x", 1) end }"#], store: store,
            event: notification)
        #expect(noCall.outcome("n")?.error?.message.contains("belongs to no call") == true)
    }

    /// A run that read another run's uncommitted write is committed with or after it, never before.
    @Test func aRunBuiltOnAnUncommittedWriteWaitsForIt() throws {
        let store = RuleStore()
        let a = store.begin(), b = store.begin(), c = store.begin()
        _ = try a.incr("shared", "n", by: .int(1))
        _ = try b.incr("shared", "n", by: .int(1))  // b read a's write
        #expect(try c.get("shared", "other") == nil)  // c touches nothing of theirs
        var batches: [[String]] = []
        let commit: ([DoneMark]) -> Void = { batches.append($0.map(\.id)) }
        store.finish(b, mark: DoneMark(id: "b", forwards: []), commit: commit)
        store.finish(c, mark: DoneMark(id: "c", forwards: []), commit: commit)
        #expect(batches == [["c"]])  // b waits for a
        store.finish(a, mark: DoneMark(id: "a", forwards: []), commit: commit)
        #expect(batches.joined().elementsEqual(["c", "a", "b"]))  // a, then b: in one batch or in order
        #expect(store.uncommitted == 0)
    }

    @Test func runsThatDependOnEachOtherCommitInOneBatch() throws {
        let store = RuleStore()
        let a = store.begin(), b = store.begin()
        try a.set("shared", "x", .int(1))
        try b.set("shared", "y", .int(2))
        #expect(try a.get("shared", "y") == .int(2))  // a depends on b
        #expect(try b.get("shared", "x") == .int(1))  // b depends on a
        var batches: [[String]] = []
        store.finish(a, mark: DoneMark(id: "a", forwards: [])) { batches.append($0.map(\.id)) }
        #expect(batches.isEmpty)
        store.finish(b, mark: DoneMark(id: "b", forwards: [])) { batches.append($0.map(\.id)) }
        #expect(batches == [["a", "b"]])
    }

    /// A session never finished (a run cut at shutdown) holds back what depends on it, for ever: those events
    /// stay unfinished and run again at the next start, from the committed state.
    @Test func anUnfinishedRunHoldsBackItsDependents() throws {
        let store = RuleStore()
        let cut = store.begin(), later = store.begin()
        _ = try cut.incr("shared", "n", by: .int(1))
        _ = try later.incr("shared", "n", by: .int(1))
        var committed: [String] = []
        store.finish(later, mark: DoneMark(id: "later", forwards: [])) { committed += $0.map(\.id) }
        #expect(committed.isEmpty)
    }

    @Test func concurrentIncrementsLoseNothing() async throws {
        let store = RuleStore()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<500 {
                        let session = store.begin()
                        _ = try? session.incr("shared", "n", by: .int(1))
                        store.finish(session, mark: nil) { _ in }
                    }
                }
            }
        }
        #expect(store.records(namespace: "shared").first?.value == .int(4000))
        #expect(store.uncommitted == 0)
    }
}

@Suite struct StoreSweepTests {
    /// Committed deletions and expired values leave memory; an uncommitted writer's entry stays so later readers
    /// still depend on it.
    @Test func sweepingKeepsOnlyWhatIsLiveOrUncommitted() throws {
        let clock = TestClock()
        let store = RuleStore(clock: clock.read)
        let first = store.begin()
        try first.set("shared", "gone", .int(1))
        try first.set("shared", "gone", nil)
        try first.set("shared", "brief", .int(1), ttl: 10)
        #expect(store.sweepExpired() == 0)  // `first` has not committed: both entries stay
        store.finish(first, mark: nil) { _ in }
        clock.advance(11)
        let open = store.begin()
        try open.set("shared", "pending", nil)
        #expect(store.sweepExpired() == 2)  // "gone" (committed deletion) and "brief" (expired)
        let reader = store.begin()
        #expect(try reader.get("shared", "pending") == nil)
        var committed: [String] = []
        store.finish(reader, mark: DoneMark(id: "reader", forwards: [])) { committed += $0.map(\.id) }
        #expect(committed.isEmpty)  // it read `open`'s uncommitted deletion, which the sweep kept
    }
}
