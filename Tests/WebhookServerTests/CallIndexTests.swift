import Foundation
import GRDB
import RuleEngine
import Testing

@testable import EventStore

/// The journal's call index (`CallIndex.swift`): legs staged with each done record, merged into the index in
/// slices, found in both places, deleted by retention, and built from the old indexes of an earlier layout.
@Suite struct CallIndexTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-calls-\(UUID().uuidString)").path
    }

    func entry(_ id: String, at time: Double) -> EventJournal.Entry {
        EventJournal.Entry(
            id: id, receivedAt: time, hook: "channel_create", format: "json",
            body: Array(#"{"hook_event":"channel_create"}"#.utf8), meta: #"{"id":"\#(id)"}"#)
    }

    func mark(_ id: String, call: String?, otherLeg: String?) -> DoneMark {
        DoneMark(
            id: id, forwards: [],
            record: EventRecord(
                name: "channel.channel_create", callID: call, otherLeg: otherLeg, accountID: "acct", outcomes: "[]"))
    }

    /// Appends the events `ids` (received at `time`, `time + 1`, …), marks them done naming the calls `legs`
    /// gives for each id, and waits for the writer.
    func finish(
        _ ids: [String], in journal: EventJournal, from time: Double = 0,
        legs: (String) -> (call: String?, other: String?)
    ) async throws {
        for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: time + Double(i))) }
        journal.markDone(ids.map { mark($0, call: legs($0).call, otherLeg: legs($0).other) })
        await journal.drain()
    }

    /// Index rows in `call_index`, or legs staged in `call_legs_staged`.
    func rows(_ table: String, in path: String) throws -> Int {
        let count = table == "call_legs_staged" ? "count(call_id) + count(other_leg)" : "count(*)"
        return try journalDatabase(in: path).read { db in
            try Int.fetchOne(db, sql: "SELECT \(count) FROM \(table)") ?? 0
        }
    }

    /// A done mark whose event the journal does not hold (retention deleted it after an earlier mark, say)
    /// writes no record and stages no legs, and the marks beside it in the same transaction are written.
    @Test func aMarkForAnEventNotInTheJournalWritesNoRecord() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let journal = try EventJournal(directory: path)
        try await journal.append(entry("kept", at: 1))
        journal.markDone([
            mark("gone", call: "call-gone", otherLeg: "leg-gone"), mark("kept", call: "call-1", otherLeg: nil),
        ])
        await journal.drain()
        #expect(try journal.counts() == (pending: 0, done: 1))
        #expect(try rows("call_index", in: path) + rows("call_legs_staged", in: path) == 1)
        #expect(try journal.callEvents(["call-1"]).map(\.id) == ["kept"])
        #expect(try journal.callEvents(["call-gone", "leg-gone"]).isEmpty)
    }

    @Test func everyLegIsFoundBeforeAndAfterItsMerges() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Merges start at 10 staged rows and move 4 a turn: this test sees several.
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
        let ids = (0..<60).map { String(format: "e%02d", $0) }
        for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: Double(i))) }
        let call = { (i: Int) in "call-\(i % 7)" }
        // Every third event names no other leg; the others name one of five.
        let other = { (i: Int) in i % 3 == 0 ? nil : "leg-\(i % 5)" }
        // The events marked done so far (the first `done`) are found, and no others.
        func expectEveryLegFound(done: Int) throws {
            let ids = Array(ids.prefix(done))
            for k in 0..<7 {
                let expected = ids.indices.filter { call($0) == "call-\(k)" || other($0) == "call-\(k)" }.map {
                    ids[$0]
                }
                #expect(try journal.callEvents(["call-\(k)"]).map(\.id) == expected)
                let own = ids.indices.filter { call($0) == "call-\(k)" }.map { ids[$0] }
                #expect(try journal.recentEvents(limit: 100, callID: "call-\(k)").map(\.id) == own.reversed())
            }
            for k in 0..<5 {
                let expected = ids.indices.filter { other($0) == "leg-\(k)" }.map { ids[$0] }
                #expect(try journal.callEvents(["leg-\(k)"]).map(\.id) == expected)
            }
            #expect(
                try journal.callEvents(["leg-1", "call-2"]).count
                    == ids.indices.filter { other($0) == "leg-1" || call($0) == "call-2" }.count)
        }
        // Marked in batches, so merges run between them (one slice a writer turn).
        for start in stride(from: 0, to: 60, by: 12) {
            journal.markDone((start..<start + 12).map { mark(ids[$0], call: call($0), otherLeg: other($0)) })
            await journal.drain()
            try expectEveryLegFound(done: start + 12)
        }
        let legs = 60 + ids.indices.filter { other($0) != nil }.count
        #expect(try rows("call_index", in: path) + rows("call_legs_staged", in: path) >= legs)
        #expect(try rows("call_index", in: path) >= 40)  // merged, not left staged
        #expect(try rows("call_legs_staged", in: path) < legs / 2)

        // Opened again: the staged rows are counted and still found.
        let again = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
        #expect(try again.callEvents(["call-3"]).map(\.id) == (try journal.callEvents(["call-3"]).map(\.id)))

        // Retention deletes the done records: their legs are found no more, and a sweep takes their entries.
        #expect(try journal.prune(olderThan: -1) == 60)
        #expect(try journal.callEvents(["call-1"]).isEmpty)
        #expect(try journal.sweepCallIndex() > 0)
        #expect(try rows("call_index", in: path) == 0 && stagedWithRecords(in: path) == 0)
    }

    /// A process stopped in the middle of a merge leaves some of its legs in the index and every staged row the
    /// merge covered (its last slice deletes them): the next merge reads them again, and nothing is lost or found
    /// twice. A sorted copy left by the fourteenth session's merges (`call_legs_merging`) goes when the journal
    /// opens.
    @Test func aMergeCutShortStartsOverFromTheStagedRows() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let journal = try EventJournal(directory: path, callIndexMerge: (1000, 4, 32_768))
            try await finish((0..<20).map { "m\($0)" }, in: journal) { ("call-\(Int($0.dropFirst())! % 2)", nil) }
        }
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: """
                    CREATE TABLE call_legs_merging (n INTEGER PRIMARY KEY, leg TEXT NOT NULL, id TEXT NOT NULL);
                    INSERT INTO call_legs_merging (leg, id) SELECT call_id, id FROM call_legs_staged LIMIT 7;
                    INSERT INTO call_index SELECT 0, call_id, id FROM call_legs_staged ORDER BY call_id, id LIMIT 3;
                    INSERT INTO call_batches (batch) VALUES (0);
                    """)
        }
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
        #expect(try journal.callEvents(["call-0"]).map(\.id) == stride(from: 0, to: 20, by: 2).map { "m\($0)" })
        try await journal.append(entry("m20", at: 20))
        journal.markDone([mark("m20", call: "call-0", otherLeg: nil)])
        await journal.drain()
        // The 20 staged before merged (the 3 already in the index kept once); m20's leg, staged after the merge
        // began, waits for the next.
        #expect(try rows("call_index", in: path) == 20)
        #expect(try rows("call_legs_staged", in: path) == 1)
        #expect(try journal.callEvents(["call-0"]).count == 11)
        let tables = try await journalDatabase(in: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        #expect(tables.contains("call_index") && !tables.contains("call_legs_merging"))
    }

    /// Legs staged faster than merges take them (hundreds of thousands under a sustained load) are merged
    /// in pieces of at most `maximum`, oldest first: a merge never holds them all in memory.
    @Test func aMergeTakesAtMostItsMaximumOfTheStagedLegs() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Merges start at 10 staged legs and take at most 16 (8 rows of two legs).
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 16))
        let ids = (0..<50).map { String(format: "b%02d", $0) }
        for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: Double(i))) }
        // All 100 legs staged in one commit, before any merge can start.
        journal.markDone(ids.map { mark($0, call: "call-\($0)", otherLeg: "leg-\($0)") })
        await journal.drain()
        #expect(journal.largestCallIndexMerge == 16)
        // Merged down to fewer than a merge waits for, with every entry found.
        let (indexed, staged) = (try rows("call_index", in: path), try rows("call_legs_staged", in: path))
        #expect(indexed + staged == 100 && staged < 10, "\(indexed) indexed, \(staged) staged")
        for id in ids { #expect(try journal.callEvents(["call-\(id)", "leg-\(id)"]).map(\.id) == [id]) }
    }

    /// Retention deleting records while merges run (marks, merges and deletions on the writer in whatever order
    /// they come), passes sweeping what they left when it is due: the records kept are all found, and a sweep
    /// leaves no index entry without its record. (Staged rows of deleted records may wait for
    /// the next merge, which leaves them out.)
    @Test func retentionDuringMergesLeavesNoEntryWithoutItsRecord() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 2, 32_768), callIndexSweep: (1, 7))
        for round in 0..<12 {
            let ids = (0..<30).map { "r\(round)-\($0)" }
            for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: Double(round * 30 + i))) }
            journal.markDone(ids.map { mark($0, call: "call-\($0)", otherLeg: "leg-\(round)") })
            if round < 11 { try journal.prune(toFit: 0) }
        }
        await journal.drain()
        // The last round's records were never pruned: each is found by both its legs.
        #expect(try journal.callEvents(["leg-11"]).count == 30)
        #expect(try journal.callEvents(["call-r11-7"]).map(\.id) == ["r11-7"])
        let kept = try journal.counts().done
        #expect(try rows("call_index", in: path) - orphans(in: path) + stagedWithRecords(in: path) == 2 * kept)
        try journal.sweepCallIndex()
        #expect(try orphans(in: path) == 0)
        #expect(try rows("call_index", in: path) + stagedWithRecords(in: path) == 2 * kept)
    }

    /// Index entries whose done record is gone.
    func orphans(in path: String) throws -> Int {
        try journalDatabase(in: path).read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM call_index WHERE id NOT IN (SELECT id FROM events_done)")
                ?? 0
        }
    }

    /// Staged legs whose done record is there.
    func stagedWithRecords(in path: String) throws -> Int {
        try journalDatabase(in: path).read { db in
            try Int.fetchOne(
                db,
                sql: """
                    SELECT count(call_id) + count(other_leg) FROM call_legs_staged
                    WHERE id IN (SELECT id FROM events_done)
                    """) ?? 0
        }
    }

    /// Retention leaves the staged rows of the records it deletes to the merges, which leave their legs out of
    /// the index: in the same process (the last id deleted noted by retention), and in the next one (every id
    /// staged at open counts as possibly deleted). Merges start at 100 staged legs here, so the 80 legs of 40
    /// records stay staged until more come.
    @Test func aMergeLeavesOutTheLegsOfRecordsRetentionDeleted() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        func finish(_ prefix: String, _ count: Int, in journal: EventJournal, from time: Double) async throws {
            try await self.finish((0..<count).map { "\(prefix)\($0)" }, in: journal, from: time) {
                ("call-\($0)", "leg-\(prefix)")
            }
        }
        do {
            let journal = try EventJournal(
                directory: path, callIndexMerge: (100, 16, 32_768), callIndexSweep: (1, 16))
            try await finish("s", 40, in: journal, from: 0)
            #expect(try journal.prune(toFit: 0) == 40)
            #expect(try rows("call_index", in: path) == 0 && rows("call_legs_staged", in: path) == 80)
            #expect(try journal.callEvents(["leg-s", "call-s3"]).isEmpty)
            // 40 more legs: a merge of all 120, of which only the new records' go in.
            try await finish("t", 20, in: journal, from: 100)
            #expect(try rows("call_index", in: path) == 40 && rows("call_legs_staged", in: path) == 0)
            #expect(journal.callIndexEntries == 40)  // what went in, not the 120 legs merged
            #expect(try orphans(in: path) == 0)
            #expect(try journal.callEvents(["leg-t"]).count == 20)
            // And again, with the journal opened anew before the merge (the "t" records' entries swept).
            try await finish("u", 40, in: journal, from: 200)
            #expect(try journal.prune(toFit: 0) == 60)
            #expect(try rows("call_index", in: path) == 0 && rows("call_legs_staged", in: path) == 80)
        }
        let journal = try EventJournal(directory: path, callIndexMerge: (100, 16, 32_768), callIndexSweep: (1, 16))
        try await finish("v", 20, in: journal, from: 300)
        #expect(try rows("call_index", in: path) == 40 && rows("call_legs_staged", in: path) == 0)
        #expect(journal.callIndexEntries == 40)
        #expect(try orphans(in: path) == 0)
        #expect(try journal.callEvents(["leg-v"]).count == 20 && journal.callEvents(["leg-u", "leg-t"]).isEmpty)
    }

    /// The merge's steps (`CallIndexMerge`): a read, then slices, which retention meanwhile does not stop; it
    /// moves the last id deleted, only ever forward.
    @Test func aMergeGoesOnThroughRetention() throws {
        var merge = CallIndexMerge()
        (merge.minimum, merge.sliceSize, merge.staged) = (4, 3, 5)
        guard case .read = merge.nextStep else { return #expect(Bool(false), "a read is due") }
        merge.started()
        #expect(merge.nextStep == nil && merge.busy)
        merge.deleted(through: "e3", legs: 4)  // retention, while the reader reads
        let legs = try MergeLegs((0..<5).map { (leg: "c", id: "e\($0)") })
        merge.read(legs, through: 9)
        guard case .slice(_, let first, _, _) = merge.nextStep else { return #expect(Bool(false), "a slice") }
        #expect(legs.ids(first) == ["e0", "e1", "e2"])
        merge.inserted(3, added: 3)
        merge.deleted(through: "e1", legs: 2)  // an older batch (an earlier id) leaves it where it was
        #expect(merge.lastDeleted == "e3")
        merge.deleted(through: "e30", legs: 2)  // bytes first: "e30" sorts after "e3"
        #expect(merge.lastDeleted == "e30")
        #expect(merge.orphans == 8)
        guard case .slice(_, let second, 9, _) = merge.nextStep else { return #expect(Bool(false), "the last") }
        #expect(legs.ids(second) == ["e3", "e4"])
        merge.inserted(2, added: 2)
        #expect(merge.staged == 0 && merge.indexed == 5 && merge.nextStep == nil && !merge.busy)
        // A sweep is due once the orphans are half the index and at least the minimum; it starts from the
        // index's first entry, goes on from the last one each slice read, and ends at the index's end.
        merge.sweepMinimum = 9
        merge.startSweep()
        #expect(!merge.sweepDue && merge.sweepFrom == nil)
        merge.deleted(through: "e4", legs: 1)
        #expect(merge.sweepDue)
        merge.startSweep()
        #expect(merge.orphans == 0 && !merge.sweepDue && merge.sweepFrom == .beforeAll)
        let e2 = CallIndexMerge.Entry(batch: 0, leg: "c", id: "e2")
        merge.swept(2, through: e2)
        #expect(merge.indexed == 3 && merge.sweepFrom == e2)
        merge.deleted(through: "e5", legs: 9)
        merge.startSweep()  // one is under way: it goes on from where it was
        #expect(merge.sweepFrom == e2 && merge.orphans == 9)
        merge.swept(1, through: nil)
        #expect(merge.indexed == 2 && merge.sweepFrom == nil)
    }

    /// A merge with another whole merge's worth of legs staged behind it moves four slices a turn, and one
    /// otherwise.
    @Test func aMergeFarBehindTakesLargerSlices() throws {
        var merge = CallIndexMerge()
        (merge.minimum, merge.sliceSize, merge.maximum, merge.staged) = (4, 3, 8, 20)
        guard case .read = merge.nextStep else { return #expect(Bool(false), "a read is due") }
        merge.started()
        merge.read(try MergeLegs((0..<8).map { (leg: "d", id: "f\($0)") }), through: 30)
        // 20 staged, 8 of them read: 12 wait behind, more than a merge takes.
        guard case .slice(_, let behind, 30, _) = merge.nextStep else { return #expect(Bool(false), "a slice") }
        #expect(behind == 0..<8)
        merge.inserted(8, added: 8)
        // 12 staged, 8 read: 4 behind, fewer than a merge takes.
        guard case .read = merge.nextStep else { return #expect(Bool(false), "read again") }
        merge.started()
        merge.read(try MergeLegs((0..<8).map { (leg: "d", id: "g\($0)") }), through: 40)
        guard case .slice(_, let caughtUp, _, _) = merge.nextStep else { return #expect(Bool(false), "a slice") }
        #expect(caughtUp == 0..<3)
    }

    /// Legs are inserted in the index's own order (SQLite's BINARY collation: bytes, then length; the leg, then
    /// the event id), so that a slice changes each page of the index once.
    @Test func aMergeSortsItsLegsAsTheIndexOrdersThem() throws {
        let given: [(leg: String, id: String)] = [
            ("b", "e2"), ("ab", "e9"), ("a", "e5"), ("é", "e1"), ("b", "e10"), ("a", "e5x"), ("B", "e3"), ("", "e0"),
        ]
        let legs = try MergeLegs(given)
        try legs.sort()
        let sorted = legs.legs(0..<given.count)
        let expected = try DatabaseQueue().read { db in
            let values = given.map { _ in "(?, ?)" }.joined(separator: ", ")
            return try Row.fetchAll(
                db, sql: "SELECT column1, column2 FROM (VALUES \(values)) ORDER BY column1, column2",
                arguments: StatementArguments(given.flatMap { [$0.leg, $0.id] })
            ).map { (leg: $0[0] as String, id: $0[1] as String) }
        }
        #expect(sorted.map(\.leg) == expected.map(\.leg) && sorted.map(\.id) == expected.map(\.id))
        #expect(sorted.first?.leg == "" && sorted.last?.leg == "é")
    }

    /// Retention leaves the index entries of the records it deletes, which no lookup finds, until they are
    /// half the index and at least `sweepMinimum` (50,000 here, so none goes); then the pass sweeps them.
    @Test func retentionLeavesTheIndexEntriesOfTheRecordsItDeletesToASweep() async throws {
        for sweeps in [false, true] {
            let path = directory()
            defer { try? FileManager.default.removeItem(atPath: path) }
            let journal = try EventJournal(
                directory: path, callIndexMerge: (10, 4, 32_768), callIndexSweep: sweeps ? (1, 16) : nil)
            for i in 0..<40 { try await journal.append(entry("s\(i)", at: Double(i))) }
            journal.markDone((0..<40).map { mark("s\($0)", call: "call-\($0 % 4)", otherLeg: "leg-\($0)") })
            await journal.drain()
            let indexed = try rows("call_index", in: path)
            #expect(indexed > 0)
            #expect(try journal.prune(toFit: 0) == 40)
            #expect(try journal.callEvents(["call-0", "leg-3"]).isEmpty)
            #expect(try orphans(in: path) == (sweeps ? 0 : indexed))
            #expect(try stagedWithRecords(in: path) == 0)
        }
    }

    /// A sweep reads the index in key order a batch at a time (7 entries here), and deletes exactly the entries
    /// whose records are gone, wherever they fall among the batches.
    @Test func aSweepDeletesTheEntriesWithoutRecordsAndKeepsTheRest() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 50, 32_768), callIndexSweep: (1, 7))
        let ids = (0..<100).map { String(format: "w%03d", $0) }
        for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: Double(i))) }
        journal.markDone(ids.enumerated().map { mark($1, call: "call-\($0 % 9)", otherLeg: "leg-\($0)") })
        await journal.drain()
        // Retention's deletions, without its count of the legs left behind.
        try await journalDatabase(in: path).write { db in
            try db.execute(sql: "DELETE FROM events_done WHERE CAST(substr(id, 2) AS INTEGER) % 3 = 0")
        }
        let before = try orphans(in: path)
        let kept = try rows("call_index", in: path) - before
        #expect(before > 20)
        #expect(try journal.sweepCallIndex() == before)
        #expect(try orphans(in: path) == 0 && rows("call_index", in: path) == kept)
        #expect(try journal.callEvents(["call-1"]).count == 11)  // w001, w010, …, w091: none deleted
        #expect(try journal.callEvents(["call-3"]).isEmpty)  // w003, w012, …: all deleted
        #expect(try journal.callEvents(["leg-5"]).map(\.id) == ["w005"])
    }

    /// Entries an earlier process's retention left without their records are not counted by the next one: a
    /// sweep that starts at open goes with its first batch of retention, though the orphans it counted itself
    /// (20) are far from its minimum (100,000). The calls' ids start with a NUL byte, which GRDB cuts a text
    /// short at: the sweep's cursor is read and bound whole, so a sweep of 7 entries a slice gets past them.
    @Test func aSweepAtOpenFindsTheEntriesAnEarlierProcessLeft() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ids = (0..<60).map { String(format: "o%03d", $0) }
        do {
            let journal = try EventJournal(directory: path, callIndexMerge: (10, 50, 32_768))
            for (i, id) in ids.enumerated() { try await journal.append(entry(id, at: Double(i))) }
            journal.markDone(ids.enumerated().map { mark($1, call: "\u{0}call-\($0 % 5)", otherLeg: "leg-\($0)") })
            await journal.drain()
        }
        #expect(try rows("call_index", in: path) == 120)
        // The earlier process's retention deleted o000-o029; o030-o039 are old enough to go now.
        try await journalDatabase(in: path).write { db in
            try db.execute(sql: "DELETE FROM events WHERE id < 'o030'; DELETE FROM events_done WHERE id < 'o030'")
            try db.execute(sql: "UPDATE events_done SET done_at = 1 WHERE id < 'o040'")
        }
        #expect(try orphans(in: path) == 60)
        let journal = try EventJournal(
            directory: path, callIndexMerge: (10, 50, 32_768), callIndexSweep: (100_000, 1_000))
        #expect(try journal.prune(olderThan: 3_600) == 10)
        #expect(try orphans(in: path) == 0 && rows("call_index", in: path) == 40)
        #expect(try journal.callEvents(["leg-45"]).map(\.id) == ["o045"])

        // Its ids are there to find: the legs' NUL bytes are in the index, not cut off.
        let calls = try await journalDatabase(in: path).read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM call_index WHERE hex(leg) LIKE '00%'") ?? 0
        }
        #expect(calls == 20)
        try await journalDatabase(in: path).write { db in
            try db.execute(sql: "DELETE FROM events_done WHERE id >= 'o050'")
        }
        let small = try EventJournal(directory: path, callIndexMerge: (10, 50, 32_768), callIndexSweep: (1, 7))
        #expect(try small.sweepCallIndex() == 20)
        #expect(try orphans(in: path) == 0 && rows("call_index", in: path) == 20)
    }

    /// A journal written with the two old indexes (by an earlier version, or by one that opened this layout
    /// since: it creates them again, and writes no staged rows): its done records go into the index, once.
    @Test func aJournalWithTheOldIndexesGetsTheCallIndex() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let journal = try EventJournal(directory: path)
            try await journal.append(entry("new", at: 1))
            journal.markDone([mark("new", call: "c1", otherLeg: nil)])
            await journal.drain()
        }
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: """
                    DROP TRIGGER events_done_legs;
                    DELETE FROM call_index; DELETE FROM call_legs_staged;
                    CREATE INDEX events_done_call ON events_done(call_id) WHERE call_id IS NOT NULL;
                    CREATE INDEX events_done_other_leg ON events_done(other_leg) WHERE other_leg IS NOT NULL;
                    INSERT INTO events (id, received_at, hook, format, body, meta) VALUES ('old', 2, 'h', 'json', x'7b7d', '{}');
                    INSERT INTO events_done (id, done_at, name, call_id, other_leg) VALUES ('old', 3, 'x', 'c2', 'c1');
                    """)
        }
        let journal = try EventJournal(directory: path)
        #expect(try journal.callEvents(["c1"]).map(\.id) == ["new", "old"])
        #expect(try journal.callEvents(["c2"]).map(\.id) == ["old"])
        let schema = try await journalDatabase(in: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type IN ('index', 'trigger')")
        }
        #expect(!schema.contains("events_done_call") && !schema.contains("events_done_other_leg"))
        #expect(schema.contains("events_done_legs"))
        #expect(try rows("call_index", in: path) == 3)
    }
}

extension CallIndexTests {
    /// The index's batches: the number of each entry, and those `call_batches` lists.
    func batches(in path: String) throws -> (entries: [Int64], listed: [Int64]) {
        try journalDatabase(in: path).read { db in
            (
                try Int64.fetchAll(db, sql: "SELECT DISTINCT batch FROM call_index ORDER BY batch"),
                try Int64.fetchAll(db, sql: "SELECT batch FROM call_batches ORDER BY batch")
            )
        }
    }

    /// Each merge puts its legs in a batch one above the last, so that they go in at the index's end; the first
    /// merge of a journal opened again goes into the largest batch, and the index still holds each leg once.
    /// Every batch with entries is listed for lookups, which find a call's events across batches; the sweep's end
    /// takes the batches it left empty out of the list.
    @Test func eachMergeTakesTheNextBatchAndLookupsFindEveryBatch() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Each event received after the one before, whichever journal appends it.
        var received = 0.0
        func finish(_ ids: [String], in journal: EventJournal) async throws {
            try await self.finish(ids, in: journal, from: received) { ("call-\($0.last!)", "leg-\($0)") }
            received += Double(ids.count)
        }
        do {
            let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
            // A round of 10 events stages 20 legs, past the merges' minimum of 10: a merge each round.
            for round in 0..<3 { try await finish((0..<10).map { "b\(round)-\($0)" }, in: journal) }
            #expect(try rows("call_legs_staged", in: path) == 0 && rows("call_index", in: path) == 60)
            #expect(try batches(in: path) == ([0, 1, 2], [0, 1, 2]))
            // Each call's events from all three batches.
            #expect(try journal.callEvents(["call-4"]).map(\.id) == ["b0-4", "b1-4", "b2-4"])
            #expect(try journal.callEvents(["leg-b1-7", "leg-b2-3"]).map(\.id) == ["b1-7", "b2-3"])
        }
        // Staged rows a merge in batch 2 had taken when the process stopped, 3 of them (6 legs) already in the
        // index.
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: """
                    INSERT INTO call_legs_staged (call_id, other_leg, id) SELECT call_id, other_leg, id
                    FROM events_done WHERE id LIKE 'b2-%' ORDER BY id;
                    DELETE FROM call_index WHERE batch = 2 AND id > 'b2-2';
                    """)
        }
        let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
        try await finish(["b3-0"], in: journal)
        #expect(try batches(in: path) == ([0, 1, 2], [0, 1, 2]))
        // The 20 staged legs merged into batch 2 (the 6 already there kept once); b3-0's, staged after that merge
        // began, wait for the next.
        #expect(try rows("call_index", in: path) == 60)
        #expect(try rows("call_legs_staged", in: path) == 2)
        try await finish((1..<6).map { "b4-\($0)" }, in: journal)
        #expect(try batches(in: path) == ([0, 1, 2, 3], [0, 1, 2, 3]))
        #expect(try journal.callEvents(["call-3"]).map(\.id) == ["b0-3", "b1-3", "b2-3", "b4-3"])

        // Retention deletes the first two rounds' records; the sweep takes their entries, and their batches.
        try await journalDatabase(in: path).write { db in
            try db.execute(sql: "UPDATE events_done SET done_at = 1 WHERE id < 'b2'")
        }
        #expect(try journal.prune(olderThan: 3_600) == 20)
        try journal.sweepCallIndex()
        #expect(try batches(in: path) == ([2, 3], [2, 3]))
        #expect(try journal.callEvents(["call-3"]).map(\.id) == ["b2-3", "b4-3"])
        // Merges go on above them.
        try await finish((0..<10).map { "b5-\($0)" }, in: journal)
        #expect(try batches(in: path).listed == [2, 3, 4])
    }

    /// A journal keyed by (leg, event id) alone (`call_legs`, the fourteenth to the forty-ninth sessions) gets
    /// its entries moved into a batch of `call_index` when it opens, once; so does a `call_legs` an earlier
    /// version made again and filled after that, into the next batch: an entry it holds again is then in two
    /// batches, and its event is found once.
    @Test func aJournalWithTheUnbatchedIndexHasItMovedIntoABatch() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let journal = try EventJournal(directory: path)
            try await finish((0..<6).map { "u\($0)" }, in: journal) { ("call-\($0.last!.wholeNumberValue! % 2)", nil) }
        }
        // The layout before: the index keyed by (leg, id), holding u0-u3; u4 and u5 still staged.
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: """
                    DROP TABLE call_index; DROP TABLE call_batches;
                    CREATE TABLE call_legs (leg TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (leg, id)) WITHOUT ROWID;
                    INSERT INTO call_legs SELECT call_id, id FROM call_legs_staged WHERE id < 'u4';
                    DELETE FROM call_legs_staged WHERE id < 'u4';
                    """)
        }
        do {
            let journal = try EventJournal(directory: path)
            #expect(try journal.callEvents(["call-0"]).map(\.id) == ["u0", "u2", "u4"])
            #expect(try batches(in: path) == ([0], [0]))
            #expect(try rows("call_index", in: path) == 4 && rows("call_legs_staged", in: path) == 2)
        }
        let tables = try await journalDatabase(in: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        #expect(!tables.contains("call_legs"))
        // An earlier version opened it since, and indexed u1 again and u4 and u5 in a `call_legs` of its own.
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: """
                    CREATE TABLE call_legs (leg TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (leg, id)) WITHOUT ROWID;
                    INSERT INTO call_legs SELECT call_id, id FROM events_done WHERE id IN ('u1', 'u4', 'u5');
                    DELETE FROM call_legs_staged;
                    """)
        }
        let journal = try EventJournal(directory: path)
        #expect(try journal.callEvents(["call-1"]).map(\.id) == ["u1", "u3", "u5"])
        #expect(try batches(in: path) == ([0, 1], [0, 1]))
        #expect(try rows("call_index", in: path) == 7)
        #expect(try journal.callEvents(["call-0"]).map(\.id) == ["u0", "u2", "u4"])
        // An empty `call_legs` goes, and makes no batch.
        try await journalDatabase(in: path).write { db in
            try db.execute(
                sql: "CREATE TABLE call_legs (leg TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (leg, id)) WITHOUT ROWID"
            )
        }
        _ = try EventJournal(directory: path)
        #expect(try batches(in: path) == ([0, 1], [0, 1]))
        let left = try await journalDatabase(in: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE name = 'call_legs'")
        }
        #expect(left.isEmpty)
    }

}

extension CallIndexTests {
    /// Journals let go while a merge's legs are being read: the read's callback can hold a journal's last
    /// reference, and the journal then closes its log copier from the copier's own queue. A `sync` onto that
    /// queue trapped there (in 5 runs of 5, before `LogCopier.close` checked where it runs).
    @Test func aJournalLetGoDuringAMergeReadClosesCleanly() async throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        for round in 0..<40 {
            let journal = try EventJournal(directory: path, callIndexMerge: (10, 4, 32_768))
            let ids = (0..<12).map { "g\(round)-\($0)" }
            for id in ids { try await journal.append(entry(id, at: Double(round))) }
            journal.markDone(ids.map { mark($0, call: "call-\($0)", otherLeg: nil) })
        }
        // Every append was acknowledged, so every event is there, finished or not.
        let counts = try EventJournal(directory: path).counts()
        #expect(counts.pending + counts.done == 480)
    }
}
