import ArgumentParser
import EventStore
import Foundation
import JSONCore
import KazooEvents
import RuleEngine
import Testing

@testable import SwitchboardCLI

/// `switchboard replay` on a real journal file.
@Suite struct ReplayTests {
    /// A journal holding the given samples (in that order, one per second from `start`), with `callID`s set.
    func journal(_ items: [(sample: String, hook: String, callID: String)], start: Double = 1_800_000_000) async throws
        -> (String, EventJournal)
    {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchboard-replay-\(UUID().uuidString)"
        ).path
        let journal = try EventJournal(directory: directory)
        for (index, item) in items.enumerated() {
            var fields = try JSONReader.parse(
                [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(samples)/\(item.sample)")))
            ).objectValue!
            fields["call_id"] = .string(item.callID)
            let id = "e\(index)"
            try await journal.append(
                EventJournal.Entry(
                    id: id, receivedAt: start + Double(index), hook: item.hook, format: "json",
                    body: try JSONWriter.encode(.object(fields)), meta: #"{"id":"\#(id)"}"#))
        }
        return (directory, journal)
    }

    let rules = [
        "summary.lua": """
        return { name = "summary", on = { "channel_create", "channel_destroy" },
          transform = function(event)
            if event.name == "channel_create" then call.set("seen", true) return nil end
            return { call_id = event.call_id, seen = call.get("seen") or false, n = store.incr("n") }
          end,
          forward = "https://reports.example.com/calls" }
        """
    ]

    @Test func filtersByTimeNameCallAndLimit() async throws {
        let (_, journal) = try await journal([
            ("channel_create__inbound.json", "channel_create", "a"),
            ("channel_destroy__inbound.json", "channel_destroy", "a"),
            ("channel_create__inbound.json", "channel_create", "b"),
            ("channel_destroy__inbound.json", "channel_destroy", "b"),
            ("notifications__low_balance.json", "notifications", "-"),
        ])
        func ids(_ filter: ReplayCommand.Filter) throws -> [String] {
            try ReplayCommand.events(journal, filter).0.map(\.id)
        }
        let all = ReplayCommand.Filter(since: 0, until: .greatestFiniteMagnitude)
        #expect(try ids(all) == ["e0", "e1", "e2", "e3", "e4"])
        var f = all
        f.since = 1_800_000_001
        f.until = 1_800_000_003
        #expect(try ids(f) == ["e1", "e2"])
        f = all
        f.pattern = EventPattern("channel_destroy")
        #expect(try ids(f) == ["e1", "e3"])
        f.pattern = EventPattern("notifications.*")
        #expect(try ids(f) == ["e4"])
        f = all
        f.call = "b"
        f.limit = 1
        #expect(try ids(f) == ["e2"])
        #expect(ReplayCommand.time("2026-11-30T09:00:00Z", now: 0) == 1_796_029_200)
        #expect(ReplayCommand.time("2026-11-30", now: 0) == 1_795_996_800)
        #expect(ReplayCommand.time("24h", now: 100_000) == 13_600)
        #expect(ReplayCommand.time("yesterday", now: 0) == nil)
    }

    @Test func replayRunsEventsInOrderWithCallStateAndShowsOnlyWhatAChangeChanges() async throws {
        let (_, journal) = try await journal([
            ("channel_create__inbound.json", "channel_create", "a"),
            ("channel_destroy__inbound.json", "channel_destroy", "a"),
            ("channel_destroy__inbound.json", "channel_destroy", "b"),
        ])
        let (events, _) = try ReplayCommand.events(journal, .init(since: 0, until: .greatestFiniteMagnitude))
        func run(_ files: [String: String]) async throws -> [EventReport] {
            let set = try await ReplaySet(
                source: RuleSource(directory: "rules", files: files),
                configuration: RuleConfiguration(environment: [:]),
                client: DryRunHTTPClient(), workers: 1)
            return await set.run(events)
        }
        let base = try await run(rules)
        #expect(base[0].rules[0].outcome == .dropped)
        #expect(base[1].rules[0].forwards[0].body == ["call_id": "a", "seen": true, "n": 1])
        #expect(base[2].rules[0].forwards[0].body == ["call_id": "b", "seen": false, "n": 2])
        // The same rules again: no difference, so the replay is deterministic.
        let again = try await run(rules)
        #expect(zip(base, again).allSatisfy { ReplayOutput.compare($0, $1).isEmpty })
        // A change to one field of the payload shows as that field's line, nothing else.
        var changed = rules
        changed["summary.lua"] = rules["summary.lua"]!.replacingOccurrences(
            of: "seen = call.get(\"seen\") or false", with: "seen = call.get(\"seen\") or \"no\"")
        let next = try await run(changed)
        #expect(ReplayOutput.compare(base[0], next[0]).isEmpty)
        #expect(ReplayOutput.compare(base[1], next[1]).isEmpty)
        let differences = ReplayOutput.compare(base[2], next[2])
        #expect(differences.count == 1)
        #expect(differences.first?.what == "forward 1 (POST https://reports.example.com/calls): the body differs")
        #expect(
            differences.first?.diff.filter { !$0.hasPrefix(" ") } == ["-   \"seen\": false", "+   \"seen\": \"no\""])
        // A rule that now fails shows its outcome and error.
        changed["summary.lua"] = rules["summary.lua"]!.replacingOccurrences(
            of: "n = store.incr(\"n\")", with: "n = nil + 1")
        let broken = try await run(changed)
        let failed = ReplayOutput.compare(base[1], broken[1])
        #expect(failed.first?.what == "outcome")
        #expect(failed.first?.against.hasPrefix("error (transform): ") == true)
        #expect(failed.contains { $0.what == "forward 1" && $0.against == "none" })
    }

    /// The store's clock follows the events' accepted times: four events a second apart, counted in a 2 s window,
    /// count as they did (1, 2, 2, 2), not as the instant replay runs them (1, 2, 3, 4).
    @Test func windowsAndTTLsFollowTheTimeEventsWereAccepted() async throws {
        let (_, journal) = try await journal(
            (0..<4).map { i in ("channel_create__inbound.json", "channel_create", "c\(i)") })
        let (events, _) = try ReplayCommand.events(journal, .init(since: 0, until: .greatestFiniteMagnitude))
        let set = try await ReplaySet(
            source: RuleSource(
                directory: "rules",
                files: [
                    "w.lua":
                        #"return { name = "w", on = "channel_create", run = function() log.info(tostring(store.count("k", 2))) end }"#
                ]), configuration: RuleConfiguration(environment: [:]), client: DryRunHTTPClient(), workers: 1)
        let reports = await set.run(events)
        #expect(reports.map { $0.rules.first?.logs.first?.message } == ["1", "2", "2", "2"])
    }

    @Test func theCommandReadsTheJournalAndExitsOneOnDifferences() async throws {
        let (directory, _) = try await journal([
            ("channel_create__inbound.json", "channel_create", "a"),
            ("channel_destroy__inbound.json", "channel_destroy", "a"),
        ])
        let base = try temporaryRules(rules)
        let same = try ReplayCommand.parse(["--rules", base, "--against", base, "--data-dir", directory, "--summary"])
        try await same.run()
        let next = try temporaryRules([
            "summary.lua": rules["summary.lua"]!.replacingOccurrences(
                of: "reports.example.com", with: "reports.example.org")
        ])
        let different = try ReplayCommand.parse(["--rules", base, "--against", next, "--data-dir", directory, "--json"])
        await #expect(throws: ExitCode(1)) { try await different.run() }
        let noJournal = try ReplayCommand.parse(["--rules", base, "--data-dir", directory + "-missing"])
        await #expect(throws: (any Error).self) { try await noJournal.run() }
        #expect(throws: (any Error).self) {
            try ReplayCommand.parse(["--name", "channel_destory", "--data-dir", directory])
        }
        #expect(throws: (any Error).self) { try ReplayCommand.parse(["--since", "soon", "--data-dir", directory]) }
    }
}
