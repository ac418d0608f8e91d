import Foundation
import JSONCore
import KazooEvents
import Logging
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// Unix time of a wall-clock time in a zone.
func unix(_ text: String, zone: String = "UTC") -> Double {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: zone)
    formatter.dateFormat = "yyyy-MM-dd HH:mm"
    return formatter.date(from: text)!.timeIntervalSince1970
}

@Suite struct CronTests {
    func next(_ cron: String, after: String, zone: String = "UTC") throws -> Double? {
        try CronExpression(cron).next(after: unix(after, zone: zone), in: TimeZone(identifier: zone)!)
    }

    @Test func weekdayMorningsInBerlin() throws {
        // Monday 30 Nov 2026 10:00 Berlin: today's 9:00 has passed, so Tuesday's (CET, UTC+1).
        #expect(try next("0 9 * * 1-5", after: "2026-11-30 10:00", zone: "Europe/Berlin") == unix("2026-12-01 08:00"))
        // Friday after 9:00: the next is Monday.
        #expect(
            try next("0 9 * * mon-fri", after: "2026-12-04 09:00", zone: "Europe/Berlin") == unix("2026-12-07 08:00"))
        // In summer Berlin is UTC+2.
        #expect(try next("0 9 * * *", after: "2026-07-01 00:00", zone: "Europe/Berlin") == unix("2026-07-01 07:00"))
    }

    @Test func stepsListsShorthandsAndTheDayFieldsEitherRule() throws {
        #expect(try next("*/15 * * * *", after: "2026-11-30 10:07") == unix("2026-11-30 10:15"))
        #expect(try next("5,35 8-9 * * *", after: "2026-11-30 09:35") == unix("2026-12-01 08:05"))
        #expect(try next("@hourly", after: "2026-11-30 10:00") == unix("2026-11-30 11:00"))
        #expect(try next("@daily", after: "2026-11-30 10:00") == unix("2026-12-01 00:00"))
        // Both day fields restricted: the 1st of the month or any Monday, whichever comes first.
        #expect(try next("0 0 1 * mon", after: "2026-11-30 10:00") == unix("2026-12-01 00:00"))
        #expect(try next("0 0 1 * mon", after: "2026-12-01 10:00") == unix("2026-12-07 00:00"))
        // 7 is Sunday too; names are case-insensitive.
        #expect(try next("0 12 * * 7", after: "2026-11-30 10:00") == unix("2026-12-06 12:00"))
        #expect(try next("0 12 1 JAN *", after: "2026-11-30 10:00") == unix("2027-01-01 12:00"))
        // Leap days: the next 29 February after 2026 is in 2028.
        #expect(try next("0 0 29 2 *", after: "2026-03-01 00:00") == unix("2028-02-29 00:00"))
        #expect(try next("0 0 30 2 *", after: "2026-03-01 00:00") == nil)
    }

    @Test func aTimeTheClockChangeSkipsDoesNotExist() throws {
        // 29 March 2026 Berlin goes from 02:00 to 03:00: 02:30 that day never happens.
        #expect(try next("30 2 * * *", after: "2026-03-29 00:00", zone: "Europe/Berlin") == unix("2026-03-30 00:30"))
    }

    @Test func aTimeTheClockChangeRepeatsRunsOnce() throws {
        // 1 November 2026 New York goes from 02:00 EDT back to 01:00 EST: 01:30 happens twice, the job runs once.
        #expect(try next("30 1 * * *", after: "2026-11-01 00:00", zone: "America/New_York") == unix("2026-11-01 05:30"))
        let after = try CronExpression("30 1 * * *").next(
            after: unix("2026-11-01 05:30"), in: TimeZone(identifier: "America/New_York")!)
        #expect(after == unix("2026-11-02 06:30"))
        // Every-minute jobs still run through the repeated hour's second pass (no wall time is skipped twice).
        let minute = try CronExpression("* * * * *").next(
            after: unix("2026-11-01 06:10"), in: TimeZone(identifier: "America/New_York")!)
        #expect(minute == unix("2026-11-01 06:11"))
    }

    @Test func mistakesSayWhichFieldAndWhy() {
        func message(_ text: String) -> String {
            do {
                _ = try CronExpression(text)
                return "parsed"
            } catch { return error.message }
        }
        #expect(message("0 9 * *").contains("has 4 field(s); it needs 5"))
        #expect(message("0 24 * * *") == "cron hour 24 is out of range 0-23")
        #expect(message("0 9 * * fri-mon").contains("runs backwards"))
        #expect(message("*/0 * * * *").contains("step"))
        #expect(message("0 9 * * someday").contains("not a number or a name"))
        #expect(message("0 9 ,1 * *").contains("empty item"))
    }
}

/// A journal that keeps the done marks it is given (the engine's tests need no database).
final class RecordingJournal: EventJournaling {
    let marks = Mutex<[DoneMark]>([])
    let records: [StoreRecord]
    init(records: [StoreRecord] = []) { self.records = records }
    func append(_ event: AcceptedEvent) async throws {}
    func markDone(_ marks: [DoneMark]) { self.marks.withLock { $0 += marks } }
    func unfinished() throws -> [AcceptedEvent] { [] }
    func storeRecords() throws -> [StoreRecord] { records }
    func drain(limit: Duration) async {}
}

@Suite struct TickTests {
    static let counter = """
        return {
          name = "beat",
          every = "1m",
          tick = function(now)
            local n = store.incr("ticks")
            store.shared.set("last_now", now)
            forward("http://127.0.0.1:9/beat", { n = n, now = now })
          end,
        }
        """

    func engine(
        _ files: [String: String], clock: TestClock, journal: RecordingJournal = RecordingJournal(),
        client: any OutboundHTTPClient = DryRunHTTPClient()
    ) async throws -> Engine {
        try await Engine(
            source: RuleSource(directory: "rules", files: files), configuration: RuleConfiguration(), workers: 2,
            client: client, metrics: Metrics(), logger: Logger(label: "test"), grace: .seconds(1),
            journal: journal, store: RuleStore(records: try journal.storeRecords(), clock: clock.read))
    }

    @Test func aTickRunsWhenDueAndCommitsItsWritesForwardsAndDueTimeTogether() async throws {
        let clock = TestClock()
        let journal = RecordingJournal()
        let engine = try await engine(["beat.lua": Self.counter], clock: clock, journal: journal)
        let start = clock.read()
        // A rule that never ticked waits a full period from now.
        #expect(engine.startDueTicks() == 60)
        #expect(engine.nextTicks["beat"] == start + 60)
        clock.advance(60)
        engine.startDueTicks()
        #expect(await eventually { journal.marks.withLock { $0.count } == 1 })
        let mark = try #require(journal.marks.withLock { $0.first })
        #expect(mark.id == "tick:beat:\(start + 60)")
        #expect(mark.forwards.map(\.url) == ["http://127.0.0.1:9/beat"])
        let writes = Dictionary(uniqueKeysWithValues: mark.writes.map { ("\($0.namespace)/\($0.key)", $0.value) })
        #expect(writes["rule:beat/ticks"] == .int(1))
        #expect(writes["shared/last_now"] == .int(Int64(start + 60)))
        #expect(writes["timer:beat/last_due"] == .double(start + 60))
        #expect(await eventually { engine.nextTicks["beat"] == start + 120 })
        #expect(engine.metrics.value("switchboard_ticks_total", [("rule", "beat"), ("outcome", "ok")]) == 1)
    }

    @Test func oneTickAtATimePerRule() async throws {
        let clock = TestClock()
        let gate = GateClient()
        let slow = """
            return {
              name = "slow", every = 10,
              tick = function(now) store.incr("started"); http.get("http://127.0.0.1:9/slow") end,
            }
            """
        let engine = try await engine(["slow.lua": slow], clock: clock, client: gate)
        engine.startDueTicks()
        clock.advance(10)
        engine.startDueTicks()
        #expect(await eventually { gate.waiting.withLock { $0.count } == 1 })
        // Three more periods pass while it waits: none of them starts a second run.
        for _ in 0..<3 {
            clock.advance(10)
            engine.startDueTicks()
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(gate.waiting.withLock { $0.count } == 1)
        gate.release()
        #expect(
            await eventually { engine.store.value("rule:slow", "started") == .int(1) && engine.eventsInFlight == 0 })
        // The overlapped periods were skipped: the next is one period after now, not a queue of catch-ups.
        #expect(engine.nextTicks["slow"] == clock.read() + 10)
    }

    @Test func aTickMissedWhileDownRunsOnceAtStart() async throws {
        let clock = TestClock()
        let now = clock.read()
        // The last committed tick was an hour ago: 59 were missed.
        let journal = RecordingJournal(records: [
            StoreRecord(namespace: "timer:beat", key: "last_due", value: .double(now - 3600), expiresAt: nil, seq: 1),
            StoreRecord(namespace: "rule:beat", key: "ticks", value: .int(41), expiresAt: nil, seq: 2),
        ])
        let engine = try await engine(["beat.lua": Self.counter], clock: clock, journal: journal)
        engine.startDueTicks()
        #expect(await eventually { journal.marks.withLock { $0.count } == 1 && engine.eventsInFlight == 0 })
        #expect(engine.store.value("rule:beat", "ticks") == .int(42))
        #expect(engine.store.value("timer:beat", "last_due") == .double(now))
        #expect(await eventually { engine.nextTicks["beat"] == now + 60 })
        engine.startDueTicks()
        try await Task.sleep(for: .milliseconds(50))
        #expect(journal.marks.withLock { $0.count } == 1)
    }

    @Test func aTickThatFailsIsCountedAndLoggedAndTheTimerGoesOn() async throws {
        let clock = TestClock()
        let journal = RecordingJournal()
        let failing = """
            return { name = "boom", every = 5, tick = function(now) while true do end end }
            """
        let engine = try await engine(["boom.lua": failing], clock: clock, journal: journal)
        engine.startDueTicks()
        clock.advance(5)
        engine.startDueTicks()
        #expect(await eventually { journal.marks.withLock { $0.count } == 1 })
        #expect(engine.metrics.value("switchboard_ticks_total", [("rule", "boom"), ("outcome", "error")]) == 1)
        #expect(await eventually { engine.nextTicks["boom"] == clock.read() + 5 })
    }

    @Test func schedulesAreCheckedWhenTheFileLoads() async throws {
        func errors(_ text: String) async throws -> [String] {
            let worker = try makeWorker(["r.lua": text])
            return await worker.diagnostics.filter { $0.severity == .error }.map(\.message)
        }
        #expect(
            try await errors(#"return { every = 60 }"#) == ["a schedule needs a tick = function(now) ... end to run"])
        #expect(try await errors(#"return { tick = function() end }"#)[0].hasPrefix("tick needs a schedule"))
        #expect(
            try await errors(#"return { every = 60, cron = "* * * * *", tick = function() end }"#) == [
                "give every or cron, not both"
            ])
        #expect(
            try await errors(#"return { every = 0.2, tick = function() end }"#)[0].hasPrefix("every must be seconds"))
        #expect(try await errors(#"return { every = "soon", tick = function() end }"#)[0].hasPrefix("every must be"))
        #expect(
            try await errors(#"return { every = 1e300, tick = function() end }"#).first?.hasPrefix("every must be")
                == true)
        #expect(Durations.format(1e300) == "1e+300s")
        #expect(
            try await errors(#"return { cron = "0 9 * * *", timezone = "Europe/Berln", tick = function() end }"#) == [
                "unknown timezone \"Europe/Berln\" (did you mean Europe/Berlin?)"
            ])
        #expect(
            try await errors(#"return { every = 60, timezone = "UTC", tick = function() end }"#)[0].hasPrefix(
                "timezone applies to cron only"))
        #expect(
            try await errors(#"return { cron = "0 0 31 2 *", tick = function() end }"#) == [
                "cron \"0 0 31 2 *\" never fires (no date matches it)"
            ])
        #expect(try await errors(#"return { cron = "0 9 * * 1-5", tick = function() end }"#).isEmpty)
    }

    @Test func aRuleThatOnlyTicksSeesNoEvents() async throws {
        let worker = try makeWorker([
            "digest.lua": #"return { every = "1h", tick = function(now) log.info("tick at " .. now) end }"#
        ])
        let report = await worker.process(try sample("channel_create__inbound.json"))
        #expect(report.rules.isEmpty)
        let outcome = try #require(await worker.tick("digest", now: 1_800_000_000.7))
        #expect(outcome.outcome == .ok)
        #expect(outcome.stage == nil || outcome.stage == "tick")
        #expect(outcome.logs.map(\.message) == ["tick at 1800000000"])
        #expect(await worker.tick("nope", now: 0) == nil)
    }
}
