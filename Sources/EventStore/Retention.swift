import Foundation
public import Logging
public import RuleEngine
public import ServiceLifecycle

/// Keeps the data directory from growing without bound: at start and every `interval`, deletes done events,
/// delivered forwards and rejected bodies older than `maxAge` seconds, then the oldest done events and
/// delivered forwards while the journal holds more than `maxJournalBytes` (pending events and dead letters
/// stay). Expired rule-store keys go too, from the file and from memory. Between two passes, every
/// `sizeCheckInterval`, the journal's size is looked at (three `PRAGMA`s), and the size rule applied if it has
/// passed the cap: at 2,000 events a second (about 2 KB each), ten minutes would put 2.4 GB over a 1 GB cap. A
/// pass deletes only events done before it started, so under a load that outruns it the next check starts the
/// next one. Checked every 10 s, a journal capped at 200 MB under `wrk -t1 -c32` (35,000 events a second) grew
/// to 1,451 MB; the file never shrinks, and SQLite reuses the pages freed within it.
public final class Retention: Service, Sendable {
    let journal: EventJournal?
    let store: RuleStore?
    let rejected: RejectedStore
    let maxAge: Double
    let maxJournalBytes: Int?
    let interval: Duration
    let sizeCheckInterval: Duration
    let logger: Logger
    /// Where `run()`'s passes and checks run. They block: each batch waits for the journal's writer, and a pass
    /// also reads directories and deletes files. On the task calling `run()` they held one of the threads of
    /// Swift's cooperative pool (one per core: two on the machines this is measured on), which everything else
    /// asynchronous shares (the console, `/metrics`, the outbox, timers), for as long as they lasted: under a
    /// load that keeps the journal at its cap, back to back (`perf`, `wrk -t1 -c32` against `--journal-max-mb 200`:
    /// 17% of the server's samples, on a thread named `com.apple.root.default-qos`).
    ///
    /// At the default QoS, not `.utility`: libdispatch on Linux runs a queue's thread at the QoS's nice value
    /// (2 for `.utility`, 0 here as on the cooperative pool's threads), and a batch preempted while it holds
    /// SQLite's write lock keeps the journal's writer waiting. At `.utility`, under `wrk -t1 -c32` against a 200 MB
    /// cap the 99th percentile read 34–43 ms against 31–39 ms before the move (`scripts/capped_journal.sh`, five
    /// runs each, alternated); at the default, 32–41 ms against 32–36 ms (three runs each).
    private let queue = DispatchQueue(label: "switchboard.retention", qos: .default)
    private static let queueKey = DispatchSpecificKey<Bool>()
    /// Whether the caller runs on a retention's queue (tests).
    package static var isOnQueue: Bool { DispatchQueue.getSpecific(key: queueKey) ?? false }

    public init(
        journal: EventJournal?, rejected: RejectedStore, maxAge: Double, maxJournalBytes: Int? = nil,
        interval: Duration = .seconds(600), sizeCheckInterval: Duration = .seconds(1), store: RuleStore? = nil,
        logger: Logger
    ) {
        self.store = store
        self.maxJournalBytes = maxJournalBytes
        self.journal = journal
        self.rejected = rejected
        self.maxAge = maxAge
        self.interval = interval
        self.sizeCheckInterval = sizeCheckInterval
        self.logger = logger
        queue.setSpecific(key: Self.queueKey, value: true)
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

    /// Between passes: the size rule alone, once the journal holds more than `maxJournalBytes`. Returns how
    /// many rows went.
    @discardableResult
    public func pruneIfOverCap() -> Int {
        guard let journal, let maxJournalBytes else { return 0 }
        do {
            guard try journal.bytesInUse() > maxJournalBytes else { return 0 }
            let removed = try journal.prune(toFit: maxJournalBytes)
            if removed > 0 {
                logger.info("retention: the journal passed --journal-max-mb; deleted \(removed) record(s)")
            }
            return removed
        } catch {
            logger.error("retention: cannot prune the journal: \(error)")
            return 0
        }
    }

    /// Runs `work` on `queue`, the calling task waiting without holding a thread. A pass under way when the
    /// server stops still runs to its end, as it did on the calling task.
    private func onQueue(_ work: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            queue.async {
                work()
                done.resume()
            }
        }
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var nextPass = ContinuousClock.now
            while !Task.isCancelled {
                if ContinuousClock.now >= nextPass {
                    await self.onQueue { self.prune() }
                    nextPass = ContinuousClock.now + self.interval
                } else {
                    await self.onQueue { self.pruneIfOverCap() }
                }
                try await Task.sleep(for: min(self.sizeCheckInterval, self.interval))
            }
        }
    }
}
