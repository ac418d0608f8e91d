public import Foundation
public import JSONCore
import KazooEvents
public import RuleEngine
import Synchronization

/// What the console shows without reading the journal: the newest events with a badge per matching rule
/// (the live tail, which pages poll or stream by sequence number), and the last hour's figures per minute
/// (events, errors, each rule's runs and durations) with the latest rule errors. Fed by the engine's reports
/// as rules finish; every call takes one short lock, so a busy server pays little for it.
public final class ConsoleFeed: Sendable {
    /// One rule's result in the live tail.
    public struct Badge: Sendable {
        public var rule: String
        public var outcome: String
        public var stage: String?
        public var seconds: Double
    }

    /// One event in the live tail.
    public struct LiveEvent: Sendable {
        public var seq: Int
        public var id: String?
        public var at: Double
        public var kind: String
        public var name: String
        public var callID: String?
        public var accountID: String?
        public var hook: String?
        public var badges: [Badge]
    }

    /// Durations in 72 buckets, each 25% wider than the last, from 10 µs to about 96 s: percentiles are read
    /// to within one bucket (the upper edge is reported).
    struct Histogram {
        static let base = 1e-5
        static let growth = 1.25
        static let logGrowth = log(growth)
        static let count = 72
        var buckets = [UInt32](repeating: 0, count: Histogram.count)
        var total = 0

        mutating func add(_ seconds: Double) {
            let index = seconds <= Self.base ? 0 : Int(log(seconds / Self.base) / Self.logGrowth)
            buckets[min(max(index, 0), Self.count - 1)] += 1
            total += 1
        }

        mutating func merge(_ other: Histogram) {
            for i in buckets.indices { buckets[i] += other.buckets[i] }
            total += other.total
        }

        func quantile(_ q: Double) -> Double? {
            guard total > 0 else { return nil }
            let wanted = max(1, Int((Double(total) * q).rounded(.up)))
            var seen = 0
            for (i, n) in buckets.enumerated() {
                seen += Int(n)
                if seen >= wanted { return Self.base * pow(Self.growth, Double(i + 1)) }
            }
            return nil
        }
    }

    struct RuleMinute {
        var runs = 0
        var errors = 0
        var durations = Histogram()

        mutating func add(seconds: Double, failed: Bool) {
            runs += 1
            durations.add(seconds)
            if failed { errors += 1 }
        }
    }

    struct Minute {
        var index: Int
        var events = 0
        /// Events with at least one rule error.
        var failedEvents = 0
        var durations = Histogram()
        var rules: [String: RuleMinute] = [:]
    }

    struct State {
        var seq = 0
        var live: [LiveEvent] = []
        var minutes: [Minute] = []
        var errors: [JSONValue] = []
    }

    /// How many events the live tail keeps.
    public let capacity: Int
    /// This process's start, in the stream's event ids (`<boot>.<seq>`): a browser reconnecting after a
    /// restart sends an id from the old process, whose sequence numbers mean nothing here.
    public let boot = String(Int(Date().timeIntervalSince1970 * 1000), radix: 36)
    private let state = Mutex(State())
    private let clock: @Sendable () -> Double

    public init(capacity: Int = 500, clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.capacity = capacity
        self.clock = clock
    }

    /// Records an event's report: called by the engine as each event's rules finish. What does not need the
    /// state is made before the lock; the outcomes are read in place, by index (a `filter` or a `for … in`
    /// copied each one out: a retain and a release of each of its parts).
    public func record(_ report: EventReport, meta: JSONValue) {
        let now = clock()
        let event = report.event
        let rules = report.rules
        var badges: [Badge] = []
        var failed = false
        for i in rules.indices where RuleOutcome.matched(rules[i].outcome, stage: rules[i].stage) {
            badges.append(
                Badge(
                    rule: rules[i].rule, outcome: rules[i].outcome.rawValue, stage: rules[i].stage,
                    seconds: rules[i].seconds))
            if rules[i].outcome == .error { failed = true }
        }
        let errorEntries =
            failed
            ? rules.filter { $0.matched && $0.outcome == .error }.map { outcome -> JSONValue in
                [
                    "at": .double(now), "rule": .string(outcome.rule), "event_id": meta["id"] ?? .null,
                    "event": .string(event.qualifiedName), "stage": outcome.stage.map(JSONValue.string) ?? .null,
                    "message": .string(outcome.error?.message ?? "failed"),
                    "where": .string(
                        "\(outcome.error?.file ?? outcome.file):\(outcome.error?.line.map(String.init) ?? "?")"),
                ]
            } : []
        var live = LiveEvent(
            seq: 0, id: meta["id"]?.stringValue, at: now, kind: event.kind.rawValue, name: event.name,
            callID: event.callID, accountID: event.accountID ?? meta["account_id"]?.stringValue,
            hook: meta["hook"]?.stringValue, badges: badges)
        let minute = Self.minute(of: now)
        state.withLock { state in
            state.seq += 1
            live.seq = state.seq
            state.live.append(live)
            if state.live.count > capacity + capacity / 4 { state.live.removeFirst(state.live.count - capacity) }
            if state.minutes.last?.index != minute {
                state.minutes.append(Minute(index: minute))
                state.minutes.removeAll { $0.index <= minute - 60 }
            }
            let last = state.minutes.count - 1
            state.minutes[last].events += 1
            if failed { state.minutes[last].failedEvents += 1 }
            for badge in badges {
                state.minutes[last].durations.add(badge.seconds)
                // One lookup of the rule's entry, changed in place.
                state.minutes[last].rules[badge.rule, default: RuleMinute()]
                    .add(seconds: badge.seconds, failed: badge.outcome == RuleOutcome.Outcome.error.rawValue)
            }
            if !errorEntries.isEmpty {
                state.errors.append(contentsOf: errorEntries)
                if state.errors.count > 50 { state.errors.removeFirst(state.errors.count - 50) }
            }
        }
    }

    static func minute(of time: Double) -> Int { Int((time / 60).rounded(.down)) }

    /// The tail after `seq` (oldest first, at most `limit`: the newest ones when more are waiting), the
    /// newest sequence number, and how many after `seq` are not in the answer (skipped or no longer kept).
    public func live(after seq: Int, limit: Int) -> (events: [LiveEvent], latest: Int, missed: Int) {
        // Sequence numbers start at 1: anything below 0 (a client may send any integer) means the start.
        let seq = max(seq, 0)
        return state.withLock { state in
            let newer = state.live.filter { $0.seq > seq }
            let shown = Array(newer.suffix(limit))
            return (shown, state.seq, max(0, state.seq - seq) - shown.count)
        }
    }

    public var latest: Int { state.withLock { $0.seq } }

    /// Where a stream resumes from a `Last-Event-ID`: after its sequence number when it is this process's,
    /// from the start of the tail when it is another's (the server restarted), nil when there is none.
    public func resume(from lastEventID: String?) -> Int? {
        guard let lastEventID, !lastEventID.isEmpty else { return nil }
        let parts = lastEventID.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, parts[0] == boot, let seq = Int(parts[1]), seq <= latest else { return 0 }
        return seq
    }

    /// Per rule over the last hour: runs, errors, p50 and p99 duration in seconds.
    public func ruleStats() -> [String: JSONValue] {
        let now = Self.minute(of: clock())
        return state.withLock { state in
            var merged: [String: RuleMinute] = [:]
            for minute in state.minutes where minute.index > now - 60 {
                for (rule, figures) in minute.rules {
                    merged[rule, default: RuleMinute()].runs += figures.runs
                    merged[rule]!.errors += figures.errors
                    merged[rule]!.durations.merge(figures.durations)
                }
            }
            return merged.mapValues { figures in
                [
                    "runs": .int(Int64(figures.runs)), "errors": .int(Int64(figures.errors)),
                    "p50": figures.durations.quantile(0.5).map(JSONValue.double) ?? .null,
                    "p99": figures.durations.quantile(0.99).map(JSONValue.double) ?? .null,
                ]
            }
        }
    }

    /// The last hour, one entry per minute (oldest first, 60 of them, empty minutes included): events,
    /// events with a rule error, and the rules' p50 and p99 duration.
    public func series() -> JSONValue {
        let now = Self.minute(of: clock())
        return state.withLock { state in
            var byIndex: [Int: Minute] = [:]
            for minute in state.minutes { byIndex[minute.index] = minute }
            return .array(
                ((now - 59)...now).map { index in
                    let minute = byIndex[index] ?? Minute(index: index)
                    return [
                        "at": .int(Int64(index * 60)), "events": .int(Int64(minute.events)),
                        "errors": .int(Int64(minute.failedEvents)),
                        "p50": minute.durations.quantile(0.5).map(JSONValue.double) ?? .null,
                        "p99": minute.durations.quantile(0.99).map(JSONValue.double) ?? .null,
                    ]
                })
        }
    }

    /// The latest rule errors, newest first.
    public func recentErrors() -> [JSONValue] { state.withLock { $0.errors.reversed() } }
}

extension ConsoleFeed.LiveEvent {
    public var json: JSONValue {
        [
            "seq": .int(Int64(seq)), "id": id.map(JSONValue.string) ?? .null, "at": .double(at),
            "kind": .string(kind), "name": .string(name), "call_id": callID.map(JSONValue.string) ?? .null,
            "account_id": accountID.map(JSONValue.string) ?? .null, "hook": hook.map(JSONValue.string) ?? .null,
            "rules": .array(
                badges.map {
                    [
                        "rule": .string($0.rule), "outcome": .string($0.outcome),
                        "stage": $0.stage.map(JSONValue.string) ?? .null, "seconds": .double($0.seconds),
                    ]
                }),
        ]
    }
}
