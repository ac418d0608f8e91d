import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The server's counters, gauges and the rule-duration histogram, recorded through apple/swift-metrics and
/// exported in Prometheus text by swift-server/swift-prometheus at `GET /metrics`. Each instance has its own
/// registry (a server, a test, a benchmark), so nothing is bootstrapped globally.
public final class Metrics: Sendable {
    /// Upper bounds of the rule-duration histogram's buckets, in seconds.
    static let durationBuckets: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    /// swift-metrics handles by metric and labels: made once, then only incremented.
    private let counters = Mutex<[CounterKey: CoreMetrics.Counter]>([:])
    private let gauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    /// Each rule's run counters and duration recorder, by the rule's name.
    private let rules = Mutex<[String: RuleHandles]>([:])
    private let readings = Mutex<[(gauge: String, read: @Sendable () -> Double)]>([])

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets = ["switchboard_rule_duration_seconds": Self.durationBuckets]
        self.factory = factory
        // Present from the start (the per-rule one appears with each rule's first run).
        for (name, type, _) in Self.help where type == "gauge" && name != Self.lastRunGauge { set(name, 0) }
    }

    static let help: [(String, String, String)] = [
        ("switchboard_events_total", "counter", "Accepted events by hook (URL path) and event name."),
        ("switchboard_rejected_total", "counter", "Requests answered 4xx, by reason."),
        (
            "switchboard_connections_timed_out_total", "counter",
            "Connections closed for their peer's pause: mid-request, an answer unread or the connection ending (--read-timeout), between requests (--idle-timeout)."
        ),
        ("switchboard_rule_runs_total", "counter", "Rule runs by rule and outcome (ok, skipped, dropped, error)."),
        ("switchboard_rule_http_requests_total", "counter", "Rule HTTP calls by status (or error)."),
        ("switchboard_forwards_total", "counter", "Forward attempts by status (or error)."),
        ("switchboard_deliveries_total", "counter", "Forwards finished, by result (delivered, dead)."),
        ("switchboard_duplicates_total", "counter", "Repeats of an accepted event answered 200 and not run again."),
        ("switchboard_non200_responses_total", "counter", "Answers other than 200, by X-Hook-ID."),
        ("switchboard_rule_duration_seconds", "histogram", "Wall time of one rule run, HTTP waits included."),
        (
            lastRunGauge, "gauge",
            "Unix time the rule's last run on an event ended, whatever its outcome (0 before the first)."
        ),
        ("switchboard_reloads_total", "counter", "Rule reloads by result (ok, failed)."),
        ("switchboard_ticks_total", "counter", "Timer ticks run, by rule and outcome (ok, error)."),
        (
            "switchboard_kazoo_hooks_reenabled_total", "counter",
            "Kazoo hooks re-enabled by --kazoo-keep-enabled, by name."
        ),
        (
            "switchboard_kazoo_check_failures_total", "counter",
            "--kazoo-keep-enabled checks that could not reach Kazoo."
        ),
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
        handle(metric, labels).increment(by: by)
    }

    /// One counter with its labels, for a caller that increments it often and keeps it (`increment` finds
    /// it by name and labels each time).
    public struct Counter: Sendable {
        let handle: CoreMetrics.Counter
        public func increment() { handle.increment(by: 1) }
    }

    /// The counter `metric` with labels given as (name, value) pairs.
    public func counter(_ metric: String, _ labels: [(String, String)] = []) -> Counter {
        Counter(handle: handle(metric, labels))
    }

    private func handle(_ metric: String, _ labels: [(String, String)]) -> CoreMetrics.Counter {
        let key = CounterKey(metric: metric, labels: labels)
        return counters.withLock { map in
            if let existing = map[key] { return existing }
            let made = CoreMetrics.Counter(label: metric, dimensions: labels, factory: factory)
            map[key] = made
            return made
        }
    }

    public func set(_ gauge: String, _ value: Double) {
        let handle = gauges.withLock { map in
            if let existing = map[gauge] { return existing }
            let made = CoreMetrics.Gauge(label: gauge, dimensions: [], factory: factory)
            map[gauge] = made
            return made
        }
        handle.record(value)
    }

    /// What one rule's runs record: `switchboard_rule_runs_total` for each outcome, the rule's
    /// `switchboard_rule_duration_seconds`, and when its last run ended. Found with one lookup of the rule's name
    /// per run: counting a run by metric and labels made an array of labels and hashed the metric's name and
    /// every label each time.
    struct RuleHandles: Sendable {
        /// By outcome, in `RuleOutcome.Outcome.index` order.
        let runs: [CoreMetrics.Counter]
        let duration: CoreMetrics.Recorder
        /// `switchboard_rule_last_run_timestamp_seconds`: kept as the bits of a `Double` and given to the gauge
        /// only when the metrics are exported (a gauge's `record` per run would take the exporter's lock).
        let lastRun: LastRun
    }

    static let lastRunGauge = "switchboard_rule_last_run_timestamp_seconds"

    /// The latest time a rule's run ended, raised by whichever loop records one, never lowered.
    final class LastRun: Sendable {
        private let bits = Atomic<UInt64>(0)
        let gauge: CoreMetrics.Gauge

        init(gauge: CoreMetrics.Gauge) { self.gauge = gauge }

        var seconds: Double { Double(bitPattern: bits.load(ordering: .relaxed)) }

        /// Raises the time to `seconds` (two loops can end runs of one rule at once: the later time stays).
        func raise(to seconds: Double) {
            var seen = bits.load(ordering: .relaxed)
            while Double(bitPattern: seen) < seconds {
                let (exchanged, now) = bits.compareExchange(
                    expected: seen, desired: seconds.bitPattern, ordering: .relaxed)
                if exchanged { return }
                seen = now
            }
        }
    }

    private func handles(of rule: String) -> RuleHandles {
        rules.withLock { map in
            if let existing = map[rule] { return existing }
            // The same counters `increment` finds by metric and labels (its map is another lock, never taken
            // before this one).
            let made = RuleHandles(
                runs: RuleOutcome.Outcome.all.map {
                    handle("switchboard_rule_runs_total", [("rule", rule), ("outcome", $0.rawValue)])
                },
                duration: CoreMetrics.Recorder(
                    label: "switchboard_rule_duration_seconds", dimensions: [("rule", rule)], aggregate: true,
                    factory: factory),
                lastRun: LastRun(
                    gauge: CoreMetrics.Gauge(label: Self.lastRunGauge, dimensions: [("rule", rule)], factory: factory)))
            map[rule] = made
            return made
        }
    }

    /// Counts a run of `rule` that ended with `outcome` (`switchboard_rule_runs_total`) at `endedAt` (Unix
    /// seconds, `switchboard_rule_last_run_timestamp_seconds`) and, when given, records how long it took
    /// (`switchboard_rule_duration_seconds`): one lookup of the rule's handles for all three.
    public func recordRun(rule: String, outcome: RuleOutcome.Outcome?, seconds: Double?, endedAt: Double? = nil) {
        let handles = handles(of: rule)
        if let outcome { handles.runs[outcome.index].increment(by: 1) }
        if let seconds { handles.duration.record(seconds) }
        if let endedAt { handles.lastRun.raise(to: endedAt) }
    }

    /// A counter's value (for tests and the benchmark), summed over label sets containing `labels`: read
    /// back from the exposition, so it is exactly what `/metrics` says.
    public func value(_ metric: String, _ labels: [(String, String)] = []) -> Int {
        series(metric, labels).reduce(0) { $0 + (Int($1) ?? 0) }
    }

    /// A gauge's value as `/metrics` gives it (for tests and the benchmark): its first series whose labels
    /// contain `labels`; nil when there is none.
    public func gaugeValue(_ metric: String, _ labels: [(String, String)] = []) -> Double? {
        series(metric, labels).first.flatMap { Double($0) }
    }

    /// The values, as exported, of the series of `metric` whose labels contain `labels`.
    private func series(_ metric: String, _ labels: [(String, String)]) -> [Substring] {
        // Each wanted pair must be a whole label: after `{` or `,`, so `id="x"` does not match `hook_id="x"`.
        let wanted = labels.map { pair in
            "\(pair.0)=\""
                + pair.1.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        var values: [Substring] = []
        for line in prometheus().split(separator: "\n") where !line.hasPrefix("#") {
            guard line.hasPrefix(metric), let space = line.lastIndex(of: " ") else { continue }
            let series = line[..<space]
            let name = series.firstIndex(of: "{").map { series[..<$0] } ?? series
            guard name == metric,
                wanted.allSatisfy({ series.contains("{" + $0) || series.contains("," + $0) })
            else { continue }
            values.append(line[line.index(after: space)...])
        }
        return values
    }

    /// A counter's name and labels as the key of its handle: hashed and compared as they are, with no string
    /// built for each increment (the hooks path counts every event with two labels).
    struct CounterKey: Hashable {
        var metric: String
        var labels: [(String, String)]

        func hash(into hasher: inout Hasher) {
            hasher.combine(metric)
            hasher.combine(labels.count)
            for (name, value) in labels {
                hasher.combine(name)
                hasher.combine(value)
            }
        }

        static func == (a: CounterKey, b: CounterKey) -> Bool {
            a.metric == b.metric && a.labels.count == b.labels.count
                && zip(a.labels, b.labels).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        }
    }

    /// A gauge read when the metrics are exported, for a figure that is cheap to read but would cost a lock
    /// per event to keep up to date (the events in flight).
    public func gauge(_ gauge: String, reading: @escaping @Sendable () -> Double) {
        readings.withLock { $0.append((gauge, reading)) }
    }

    /// The Prometheus text exposition, with a `# HELP` line for each metric Switchboard documents.
    public func prometheus() -> String {
        for (gauge, read) in readings.withLock({ $0 }) { set(gauge, read()) }
        for handles in rules.withLock({ Array($0.values) }) {
            let seconds = handles.lastRun.seconds
            if seconds > 0 { handles.lastRun.gauge.record(seconds) }
        }
        var text = ""
        let help = Dictionary(uniqueKeysWithValues: Self.help.map { ($0.0, $0.2) })
        for line in registry.emitToString().split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE "), let name = line.split(separator: " ").dropFirst(2).first,
                let text2 = help[String(name)]
            {
                text += "# HELP \(name) \(text2)\n"
            }
            text += line + "\n"
        }
        return text
    }
}
