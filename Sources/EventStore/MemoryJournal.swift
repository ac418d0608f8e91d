import Foundation
public import RuleEngine
import Synchronization

/// Nothing on disk: for `--journal off` and `switchboard run --live`. Accepted events are not kept (a crash
/// loses the ones whose rules had not finished), and forwards wait in memory for the `Outbox`, with the
/// same retries, per-destination limits and dead letters as the durable queue; they are lost if the
/// process stops. Finished deliveries are kept for inspection up to `keepFinished`, oldest dropped first.
public final class MemoryJournal: EventJournaling, DeliveryQueue, Sendable {
    struct State {
        var nextID: Int64 = 1
        var deliveries: [Int64: Delivery] = [:]
        var finished: [Int64] = []
        var observer: (@Sendable () -> Void)? = nil
    }
    let state = Mutex(State())
    let keepFinished: Int

    public init(keepFinished: Int = 10_000) { self.keepFinished = keepFinished }

    // MARK: EventJournaling

    /// Nothing is kept: an accepted event is not durable with the journal off.
    public func append(_ event: AcceptedEvent) async throws {}

    public func markDone(_ marks: [DoneMark]) {
        for mark in marks { enqueue(mark.forwards, event: mark.id) }
    }

    /// Nothing is kept: without a journal the rule store lives in memory only.
    public func storeRecords() throws -> [StoreRecord] { [] }

    public func unfinished() throws -> [AcceptedEvent] { [] }

    public func drain(limit: Duration) async {}

    /// Queues forwards and returns their ids, in order.
    @discardableResult
    public func enqueue(_ forwards: [NewDelivery], event: String) -> [Int64] {
        guard !forwards.isEmpty else { return [] }
        let now = Date().timeIntervalSince1970
        let (ids, observer) = state.withLock { s -> ([Int64], (@Sendable () -> Void)?) in
            var ids: [Int64] = []
            for forward in forwards {
                let id = s.nextID
                s.nextID += 1
                s.deliveries[id] = Delivery(
                    id: id, eventID: event, rule: forward.rule, method: forward.method, url: forward.url,
                    headers: forward.headers, body: forward.body, state: .pending, attempts: 0, createdAt: now,
                    nextAttemptAt: now, updatedAt: now, lastStatus: nil, lastError: nil,
                    destination: Delivery.destination(of: forward.url))
                ids.append(id)
            }
            return (ids, s.observer)
        }
        observer?()
        return ids
    }

    /// A delivery as it stands now (finished ones while they are kept).
    public func delivery(_ id: Int64) -> Delivery? { state.withLock { $0.deliveries[id] } }

    // MARK: DeliveryQueue

    public func observeDeliveries(_ observer: @escaping @Sendable () -> Void) {
        state.withLock { $0.observer = observer }
    }

    public func pendingDestinations() throws -> [String] {
        state.withLock { s in Set(s.deliveries.values.lazy.filter { $0.state == .pending }.map(\.destination)).sorted()
        }
    }

    public func upcomingDeliveries(to destination: String, limit: Int) throws -> [Delivery] {
        state.withLock { s in
            Array(
                s.deliveries.values.filter { $0.state == .pending && $0.destination == destination }
                    .sorted { ($0.nextAttemptAt, $0.id) < ($1.nextAttemptAt, $1.id) }
                    .prefix(max(limit, 0)))
        }
    }

    public func record(
        _ attempt: DeliveryAttempt, of id: Int64, result: AttemptResult, unchangedSince: Double?
    ) async throws {
        state.withLock { s in
            guard var delivery = s.deliveries[id] else { return }
            if let unchangedSince, delivery.updatedAt != unchangedSince { return }
            switch result {
            case .delivered:
                delivery.state = .delivered
                delivery.nextAttemptAt = attempt.at
            case .retry(let at):
                delivery.state = .pending
                delivery.nextAttemptAt = at
            case .dead:
                delivery.state = .dead
                delivery.nextAttemptAt = attempt.at
            }
            delivery.attempts += 1
            delivery.updatedAt = attempt.at
            delivery.lastStatus = attempt.status
            delivery.lastError = attempt.error
            s.deliveries[id] = delivery
            if delivery.state != .pending {
                s.finished.append(id)
                if s.finished.count > keepFinished {
                    let drop = s.finished.count - keepFinished
                    for old in s.finished.prefix(drop) { s.deliveries[old] = nil }
                    s.finished.removeFirst(drop)
                }
            }
        }
    }

    public func deliveryCounts(_ states: [Delivery.State]) throws -> [Delivery.State: Int] {
        state.withLock { s in
            var counts: [Delivery.State: Int] = [:]
            for delivery in s.deliveries.values where states.contains(delivery.state) {
                counts[delivery.state, default: 0] += 1
            }
            return counts
        }
    }
}
