import Foundation
public import Logging
public import RuleEngine
public import ServiceLifecycle

/// Keeps the data directory from growing without bound: at start and every `interval`, deletes done events,
/// delivered forwards and rejected bodies older than `maxAge` seconds, then the oldest done events and
/// delivered forwards while the journal holds more than `maxJournalBytes` (pending events and dead letters
/// stay). Expired rule-store keys go too, from the file and from memory.
public final class Retention: Service, Sendable {
    let journal: EventJournal?
    let store: RuleStore?
    let rejected: RejectedStore
    let maxAge: Double
    let maxJournalBytes: Int?
    let interval: Duration
    let logger: Logger

    public init(
        journal: EventJournal?, rejected: RejectedStore, maxAge: Double, maxJournalBytes: Int? = nil,
        interval: Duration = .seconds(600), store: RuleStore? = nil, logger: Logger
    ) {
        self.store = store
        self.maxJournalBytes = maxJournalBytes
        self.journal = journal
        self.rejected = rejected
        self.maxAge = maxAge
        self.interval = interval
        self.logger = logger
    }

    /// One pass; returns how many rows and files went.
    @discardableResult
    public func prune() -> Int {
        var removed = rejected.prune(maxAge: maxAge)
        removed += store?.sweepExpired() ?? 0
        if let journal {
            do {
                removed += try journal.pruneExpiredStoreKeys()
                removed += try journal.prune(olderThan: maxAge)
                if let maxJournalBytes { removed += try journal.prune(toFit: maxJournalBytes) }
            } catch {
                logger.error("retention: cannot prune the journal: \(error)")
            }
        }
        if removed > 0 { logger.info("retention: deleted \(removed) old record(s)") }
        return removed
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                self.prune()
                try await Task.sleep(for: self.interval)
            }
        }
    }
}
