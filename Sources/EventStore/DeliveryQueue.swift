import RuleEngine

/// The outbox's queue, as the `Outbox` service reads it: due deliveries destination by destination, and each
/// attempt's result. `EventJournal` keeps it in SQLite; `MemoryJournal` in memory (`--journal off` and
/// `switchboard run --live`), so both go through the one retry engine.
public protocol DeliveryQueue: Sendable {
    /// Called after forwards are queued (or put back by `redeliver`), so the outbox looks again at once.
    func observeDeliveries(_ observer: @escaping @Sendable () -> Void)
    /// The destinations (`scheme://host:port`) that have pending deliveries.
    func pendingDestinations() async throws -> [String]
    /// One destination's pending deliveries, soonest first.
    func upcomingDeliveries(to destination: String, limit: Int) async throws -> [Delivery]
    /// Records an attempt and the delivery's new state; see `EventJournal.record` for `unchangedSince`.
    func record(
        _ attempt: DeliveryAttempt, of id: Int64, result: AttemptResult, unchangedSince: Double?
    ) async throws
    /// How many deliveries are in each of `states`.
    func deliveryCounts(_ states: [Delivery.State]) async throws -> [Delivery.State: Int]
}

/// What an attempt means for its delivery.
public enum AttemptResult: Sendable {
    case delivered
    case retry(at: Double)
    case dead
}
