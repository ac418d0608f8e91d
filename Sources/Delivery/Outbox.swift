public import EventStore
public import Foundation
public import Logging
public import RuleEngine
public import ServiceLifecycle
import Synchronization

/// Delivers the forwards rules asked for, from the journal's outbox: retried with exponential backoff and
/// jitter until a 2xx, at most `perDestination` at once to one host, every attempt recorded; after the last
/// attempt (or past the maximum age) a delivery becomes a dead letter, kept until `switchboard redeliver`.
///
/// The queue lives in a `DeliveryQueue`, not here: this service only reads what is due. With the SQLite
/// journal a restart, another process's `switchboard redeliver`, or a crash between two attempts loses
/// nothing; with `MemoryJournal` (`--journal off`, `run --live`) the queue ends with the process.
public final class Outbox: Service, Sendable {
    /// How hard to try.
    public struct Policy: Sendable, Equatable {
        /// Attempts before a delivery becomes a dead letter. Default 10.
        public var maxAttempts = 10
        /// A delivery still failing this long after it was queued becomes a dead letter. Default 24 h.
        public var maxAge: Double = 86_400
        /// The wait after the first failure; it doubles with every failure, up to `maxBackoff`. Default 1 s.
        public var initialBackoff: Double = 1
        public var maxBackoff: Double = 300
        /// Attempts in flight to one `scheme://host:port`. Default 8.
        public var perDestination = 8
        /// Attempts in flight overall. Default 256.
        public var maxInFlight = 256
        /// One attempt's timeout. Default 10 s.
        public var timeout: Duration = .seconds(10)

        public init() {}

        /// The wait after `failures` failed attempts: exponential, capped, and between half and all of it
        /// chosen at random so that deliveries failing together do not retry together.
        public func backoff(afterFailures failures: Int) -> Double {
            let full = min(maxBackoff, initialBackoff * pow(2, Double(max(failures, 1) - 1)))
            return full / 2 + Double.random(in: 0...(full / 2))
        }
    }

    struct Claims {
        var ids: Set<Int64> = []
        var perDestination: [String: Int] = [:]
        /// Released since the last read of the queue began: that read may predate their new state.
        var released: Set<Int64> = []
    }

    /// The queue: `EventJournal` (SQLite) or `MemoryJournal` (`--journal off`, `run --live`).
    let journal: any DeliveryQueue
    let client: any OutboundHTTPClient
    public let policy: Policy
    let metrics: Metrics
    let logger: Logger
    let wake = WakeSignal()
    let secrets: @Sendable (String) -> String?
    let claims = Mutex(Claims())
    let stopping = Mutex(false)
    let lastGauges = Mutex<ContinuousClock.Instant?>(nil)

    /// - Parameter secrets: reads a signing secret by its variable's name (the process environment by default).
    public init(
        journal: any DeliveryQueue, client: any OutboundHTTPClient, policy: Policy = Policy(), metrics: Metrics,
        logger: Logger, secrets: @escaping @Sendable (String) -> String? = { ProcessInfo.processInfo.environment[$0] }
    ) {
        self.secrets = secrets
        self.journal = journal
        self.client = client
        self.policy = policy
        self.metrics = metrics
        self.logger = logger
        journal.observeDeliveries { [wake] in wake.signal() }
    }

    /// Delivers until shutdown; attempts already started finish (each within `policy.timeout`).
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                while !stopping.withLock({ $0 }), !Task.isCancelled {
                    let wait = await startDue { delivery in
                        group.addTask {
                            await self.attempt(delivery)
                            self.release(delivery)
                            self.wake.signal()
                        }
                    }
                    await updateGauges()
                    // While waiting, attempts finish (each releases its delivery and signals) and new forwards
                    // arrive; `startDue` reads the queue afresh on every turn, so nothing read before is reused.
                    await wake.wait(upTo: wait)
                }
            }
        } onGracefulShutdown: {
            self.stopping.withLock { $0 = true }
            self.wake.signal()
        }
    }

    /// Starts every due delivery there is room for, destination by destination (so a busy destination's
    /// backlog never hides another's deliveries); returns how long to wait before looking again.
    func startDue(_ start: (Delivery) -> Void) async -> Double {
        let snapshot = claims.withLock { c -> Claims in
            c.released.removeAll(keepingCapacity: true)
            return c
        }
        var free = policy.maxInFlight - snapshot.ids.count
        guard free > 0 else { return 1 }  // a finishing attempt wakes the loop
        var wait = 1.0  // look again at least this often: `switchboard redeliver` may run in another process
        do {
            let now = Date().timeIntervalSince1970
            for destination in try await journal.pendingDestinations() where free > 0 {
                let busy = snapshot.perDestination[destination, default: 0]
                var room = min(policy.perDestination - busy, free)
                guard room > 0 else { continue }  // its next release wakes the loop
                // Its in-flight deliveries are pending too and come back first: read past them.
                for delivery in try await journal.upcomingDeliveries(to: destination, limit: room + busy) where room > 0
                {
                    if delivery.nextAttemptAt > now {
                        wait = min(wait, delivery.nextAttemptAt - now)
                        break
                    }
                    let claimed = claims.withLock { c -> Bool in
                        guard !c.ids.contains(delivery.id), !c.released.contains(delivery.id) else { return false }
                        c.ids.insert(delivery.id)
                        c.perDestination[destination, default: 0] += 1
                        return true
                    }
                    if claimed {
                        start(delivery)
                        free -= 1
                        room -= 1
                    }
                }
            }
        } catch {
            logger.error("outbox: cannot read the journal: \(error)")
            return 1
        }
        return max(wait, 0.001)
    }

    func release(_ delivery: Delivery) {
        let destination = delivery.destination
        claims.withLock { c in
            c.ids.remove(delivery.id)
            c.released.insert(delivery.id)
            c.perDestination[destination, default: 1] -= 1
            if c.perDestination[destination] == 0 { c.perDestination[destination] = nil }
        }
    }

    /// One try: send, record the attempt, decide what happens next.
    func attempt(_ delivery: Delivery) async {
        let request = OutboundRequest(
            method: delivery.method, url: delivery.url, headers: delivery.headers, body: delivery.body,
            timeout: policy.timeout)
        let started = ContinuousClock.now
        let startedAt = Date().timeIntervalSince1970
        var status: Int? = nil
        var failure: String? = nil
        var excerpt: String? = nil
        var permanent = false
        do {
            // Across this await the outbox loop goes on: `delivery` is this attempt's snapshot and stays marked
            // in flight (no second attempt of it starts until `release`), but an operator's `redeliver` may
            // reset its row meanwhile: `record` below writes the new state only if the row is unchanged.
            // Signed forwards are signed per attempt: a fresh timestamp, the same webhook-id.
            let signed = try WebhookSignature.sign(request, now: Int(startedAt), secret: secrets)
            let response = try await client.execute(signed)
            status = response.status
            excerpt = String(decoding: response.body.prefix(DeliveryAttempt.excerptBytes), as: UTF8.self)
            if !(200..<300).contains(response.status) { failure = "HTTP \(response.status)" }
        } catch let error as OutboundHTTPError {
            failure = error.message
            permanent = error.permanent
        } catch {
            failure = "\(error)"
        }
        let elapsed = ContinuousClock.now - started
        let latency = elapsed.inSeconds * 1000
        let now = Date().timeIntervalSince1970
        let attempt = DeliveryAttempt(
            number: delivery.attempts + 1, at: startedAt, status: status, latencyMs: latency, error: failure,
            excerpt: excerpt)
        let result: AttemptResult
        let deadline = delivery.createdAt + policy.maxAge
        if failure == nil {
            result = .delivered
        } else if permanent || attempt.number >= policy.maxAttempts || now >= deadline {
            result = .dead
        } else {
            result = .retry(at: min(now + policy.backoff(afterFailures: attempt.number), deadline))
        }
        metrics.increment("switchboard_forwards_total", [("status", status.map(String.init) ?? "error")])
        var metadata: Logger.Metadata = [
            "delivery.id": "\(delivery.id)", "rule.name": "\(delivery.rule)", "forward.url": "\(delivery.url)",
            "forward.attempt": "\(attempt.number)",
        ]
        if let failure { metadata["forward.error"] = "\(failure)" }
        switch result {
        case .delivered:
            metrics.increment("switchboard_deliveries_total", [("result", "delivered")])
            logger.debug("forward delivered", metadata: metadata)
        case .retry(let at):
            metadata["forward.retry_in_s"] = "\(String(format: "%.1f", at - now))"
            // The first failure is a warning; later ones are info, so a long outage does not flood the log.
            logger.log(
                level: attempt.number == 1 ? .warning : .info, "forward failed; will retry", metadata: metadata)
        case .dead:
            metrics.increment("switchboard_deliveries_total", [("result", "dead")])
            logger.error(
                "forward failed for good; kept as a dead letter (switchboard redeliver \(delivery.id))",
                metadata: metadata)
        }
        do {
            try await journal.record(attempt, of: delivery.id, result: result, unchangedSince: delivery.updatedAt)
        } catch {
            // The attempt stays pending and is tried again: at least once, never lost. Pause so a broken
            // disk does not turn into a tight resend loop.
            logger.error("outbox: cannot record an attempt of delivery \(delivery.id): \(error)")
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Counts pending and dead deliveries for the gauges; at most twice a second.
    func updateGauges() async {
        let now = ContinuousClock.now
        let due = lastGauges.withLock { last -> Bool in
            guard last.map({ now - $0 >= .milliseconds(500) }) ?? true else { return false }
            last = now
            return true
        }
        guard due, let counts = try? await journal.deliveryCounts([.pending, .dead]) else { return }
        metrics.set("switchboard_outbox_pending", Double(counts[.pending] ?? 0))
        metrics.set("switchboard_outbox_dead", Double(counts[.dead] ?? 0))
    }
}

extension Outbox {
    /// Sends `forwards` through the same retry engine from memory and waits until each is delivered or dead:
    /// `switchboard run --live`. Returns the deliveries as they ended, in the order given.
    public static func deliverNow(
        _ forwards: [NewDelivery], client: any OutboundHTTPClient, policy: Policy, logger: Logger
    ) async -> [Delivery] {
        guard !forwards.isEmpty else { return [] }
        let queue = MemoryJournal(keepFinished: forwards.count)  // every result is read back below
        let ids = queue.enqueue(forwards, event: "run")
        let outbox = Outbox(journal: queue, client: client, policy: policy, metrics: Metrics(), logger: logger)
        let running = Task { try await outbox.run() }
        while ((try? queue.deliveryCounts([.pending])[.pending]) ?? 0) > 0, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))  // a command-line wait; the server never does this
        }
        running.cancel()
        _ = try? await running.value
        return ids.compactMap(queue.delivery)
    }
}
