import Foundation
import Synchronization

/// Counters and a histogram, rendered in Prometheus text format at `GET /metrics`.
public final class Metrics: Sendable {
    struct Histogram {
        static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        var buckets = [Int](repeating: 0, count: bounds.count)
        var count = 0
        var sum = 0.0

        mutating func observe(_ value: Double) {
            for (i, bound) in Self.bounds.enumerated() where value <= bound { buckets[i] += 1 }
            count += 1
            sum += value
        }
    }

    struct State {
        var counters: [String: [String: Int]] = [:]  // metric -> rendered labels -> value
        var histograms: [String: Histogram] = [:]  // rendered labels -> histogram (rule duration)
        var gauges: [String: Double] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    static let help: [(String, String, String)] = [
        ("switchboard_events_total", "counter", "Accepted events by hook (URL path) and event name."),
        ("switchboard_rejected_total", "counter", "Requests answered 4xx, by reason."),
        ("switchboard_rule_runs_total", "counter", "Rule runs by rule and outcome (ok, skipped, dropped, error)."),
        ("switchboard_rule_http_requests_total", "counter", "Rule HTTP calls by status (or error)."),
        ("switchboard_forwards_total", "counter", "Forward attempts by status (or error)."),
        ("switchboard_deliveries_total", "counter", "Forwards finished, by result (delivered, dead)."),
        ("switchboard_duplicates_total", "counter", "Repeats of an accepted event answered 200 and not run again."),
        ("switchboard_non200_responses_total", "counter", "Answers other than 200, by X-Hook-ID."),
        ("switchboard_rule_duration_seconds", "histogram", "Wall time of one rule run, HTTP waits included."),
        ("switchboard_reloads_total", "counter", "Rule reloads by result (ok, failed)."),
        ("switchboard_replayed_events_total", "counter", "Unfinished events run again at start."),
        (
            "switchboard_journal_failures_total", "counter",
            "Events refused (503) because the journal could not be written."
        ),
        ("switchboard_events_in_flight", "gauge", "Accepted events whose rules have not finished."),
        ("switchboard_outbox_pending", "gauge", "Forwards in the outbox not delivered yet."),
        ("switchboard_outbox_dead", "gauge", "Dead letters: forwards whose attempts ran out."),
        ("switchboard_rules_loaded", "gauge", "Rules loaded and running."),
        ("switchboard_rules_version", "gauge", "The running rule set's version (1 at start, +1 per good reload)."),
    ]

    /// Adds `by` to a counter with labels given as (name, value) pairs.
    public func increment(_ metric: String, _ labels: [(String, String)] = [], by: Int = 1) {
        let key = Self.render(labels)
        state.withLock { $0.counters[metric, default: [:]][key, default: 0] += by }
    }

    public func set(_ gauge: String, _ value: Double) {
        state.withLock { $0.gauges[gauge] = value }
    }

    public func observeRuleDuration(rule: String, seconds: Double) {
        let key = Self.render([("rule", rule)])
        state.withLock { $0.histograms[key, default: Histogram()].observe(seconds) }
    }

    /// A counter's value (for tests and the benchmark), summed over label sets containing `labels`.
    public func value(_ metric: String, _ labels: [(String, String)] = []) -> Int {
        let wanted = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }
        return state.withLock { s in
            (s.counters[metric] ?? [:]).filter { key, _ in wanted.allSatisfy { key.contains($0) } }.values.reduce(0, +)
        }
    }

    static func escape(_ value: String) -> String {
        // Labels are nearly always plain: skip the copies unless there is something to escape.
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == 0x0A }) else {
            return value
        }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func render(_ labels: [(String, String)]) -> String {
        labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
    }

    /// The Prometheus text exposition.
    public func prometheus() -> String {
        let s = state.withLock { $0 }
        var lines: [String] = []
        for (name, type, help) in Self.help {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            switch type {
            case "counter":
                for (labels, value) in (s.counters[name] ?? [:]).sorted(by: { $0.key < $1.key }) {
                    lines.append(labels.isEmpty ? "\(name) \(value)" : "\(name){\(labels)} \(value)")
                }
            case "gauge":
                lines.append("\(name) \(Self.number(s.gauges[name] ?? 0))")
            default:
                for (labels, h) in s.histograms.sorted(by: { $0.key < $1.key }) {
                    for (i, bound) in Histogram.bounds.enumerated() {
                        lines.append("\(name)_bucket{\(labels),le=\"\(Self.number(bound))\"} \(h.buckets[i])")
                    }
                    lines.append("\(name)_bucket{\(labels),le=\"+Inf\"} \(h.count)")
                    lines.append("\(name)_sum{\(labels)} \(Self.number(h.sum))")
                    lines.append("\(name)_count{\(labels)} \(h.count)")
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
    }
}
