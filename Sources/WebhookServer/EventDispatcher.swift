import Foundation
public import JSONCore
public import KazooEvents
public import Logging
import NIOCore
public import RuleEngine
public import ServiceLifecycle
import Synchronization

/// Hands accepted events to the Lua workers (round robin) without making the HTTP answer wait, records
/// what the rules did (metrics, one log line per rule error), and on shutdown lets in-flight runs finish
/// up to a deadline.
public final class EventDispatcher: Service, Sendable {
    public let workers: [RuleWorker]
    public let metrics: Metrics
    let logger: Logger
    let grace: Duration
    let next = Mutex(0)
    let inFlight = Mutex<[Int: Task<Void, Never>]>([:])
    let counter = Mutex(0)
    /// Limits accepted events whose rules have not finished: past it `submit` waits, so a backlog never
    /// grows without bound behind the 200s (Kazoo sees slower answers instead).
    let slots: AsyncSemaphore
    /// Problems found loading the rules (the same for every worker).
    public let diagnostics: [Diagnostic]
    public let ruleNames: [String]

    public init(
        source: RuleSource, configuration: RuleConfiguration, workers count: Int, client: any OutboundHTTPClient,
        metrics: Metrics, logger: Logger, grace: Duration, maxEventsInFlight: Int = 10_000
    ) async throws {
        self.slots = AsyncSemaphore(maxEventsInFlight)
        var workers: [RuleWorker] = []
        for _ in 0..<max(count, 1) {
            workers.append(
                try RuleWorker(source: source, configuration: configuration, client: client, sendForwards: true))
        }
        self.workers = workers
        self.metrics = metrics
        self.logger = logger
        self.grace = grace
        self.diagnostics = await workers[0].diagnostics
        self.ruleNames = await workers[0].rules.map(\.name)
        metrics.set("switchboard_rules_loaded", Double(ruleNames.count))
        for (file, record) in await workers[0].loadLogs {
            logger.info("\(record.message)", metadata: ["rule.file": "\(file)"])
        }
    }

    /// Starts the rules on an accepted event and returns as soon as there is room for it.
    public func submit(_ event: WebhookEvent, meta: JSONValue) async {
        await slots.wait()
        let worker = next.withLock { i -> RuleWorker in
            i = (i + 1) % workers.count
            return workers[i]
        }
        let id = counter.withLock { c -> Int in
            c += 1
            return c
        }
        inFlight.withLock { tasks in
            tasks[id] = Task {
                let report = await worker.process(event, meta: meta)
                self.record(report)
                self.finished(id)
                self.slots.signal()
            }
            metrics.set("switchboard_events_in_flight", Double(tasks.count))
        }
    }

    func finished(_ id: Int) {
        inFlight.withLock { tasks in
            tasks[id] = nil
            metrics.set("switchboard_events_in_flight", Double(tasks.count))
        }
    }

    public var eventsInFlight: Int { inFlight.withLock { $0.count } }

    func record(_ report: EventReport) {
        for outcome in report.rules {
            metrics.increment(
                "switchboard_rule_runs_total", [("rule", outcome.rule), ("outcome", outcome.outcome.rawValue)])
            if outcome.stage == "on" || outcome.stage == "match" { continue }
            metrics.observeRuleDuration(rule: outcome.rule, seconds: outcome.seconds)
            for call in outcome.http {
                metrics.increment(
                    "switchboard_rule_http_requests_total", [("status", call.status.map(String.init) ?? "error")])
            }
            for forward in outcome.forwards {
                metrics.increment(
                    "switchboard_forwards_total", [("status", forward.status.map(String.init) ?? "error")])
                if forward.status.map({ !(200..<300).contains($0) }) ?? true {
                    logger.warning(
                        "forward failed",
                        metadata: [
                            "rule.name": "\(outcome.rule)", "forward.url": "\(forward.url)",
                            "forward.status": "\(forward.status.map(String.init) ?? forward.error ?? "?")",
                        ])
                }
            }
            var metadata: Logger.Metadata = [
                "rule.name": "\(outcome.rule)", "event.name": "\(report.event.qualifiedName)",
            ]
            if let callID = report.event.callID { metadata["call.id"] = "\(callID)" }
            for line in outcome.logs {
                var lineMetadata = metadata
                if case .object(let fields) = line.fields {
                    for member in fields { lineMetadata["rule.\(member.key)"] = "\(Self.text(member.value))" }
                }
                logger.log(level: Self.level(line.level), "\(line.message)", metadata: lineMetadata)
            }
            if let error = outcome.error {
                metadata["rule.file"] = "\(error.file ?? outcome.file):\(error.line.map(String.init) ?? "?")"
                metadata["rule.stage"] = "\(outcome.stage ?? "?")"
                logger.warning("rule failed: \(error.message)", metadata: metadata)
            }
        }
    }

    static func level(_ name: String) -> Logger.Level {
        switch name {
        case "debug": .debug
        case "warn": .warning
        case "error": .error
        default: .info
        }
    }

    static func text(_ value: JSONValue) -> String {
        if case .string(let s) = value { return s }
        return (try? JSONWriter.string(value)) ?? "?"
    }

    /// Waits for shutdown, then gives in-flight rule runs `grace` to finish and says what was cut.
    public func run() async throws {
        try? await gracefulShutdown()
        let deadline = ContinuousClock.now + grace
        while eventsInFlight > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let cut = inFlight.withLock { tasks -> Int in
            for task in tasks.values { task.cancel() }
            return tasks.count
        }
        if cut > 0 {
            logger.warning("shutdown: \(cut) event(s) still running their rules after \(grace) were cut")
        } else {
            logger.info("shutdown: every accepted event finished its rules")
        }
    }
}
