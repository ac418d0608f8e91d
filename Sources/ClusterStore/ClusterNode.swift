import EventStore
import Foundation
public import KazooEvents
public import Logging
public import RuleEngine
public import ServiceLifecycle
import Synchronization

/// One node of a cluster on PostgreSQL, as a service beside the engine and the outbox:
///
/// - **heartbeat** (every lease/4): writes the node's row (`switchboard nodes`) and takes or renews the
///   processing lease. On taking it with a new epoch the node waits until its engine is idle, loads the
///   committed rule store (another node may have written it) and starts reading events; on losing it, it
///   stops, and whatever its engine still finishes is not committed (the new holder runs those events again).
/// - **feed** (the lease holder only): reads unfinished events in acceptance order and submits them to the
///   engine, which keeps per-call order and backpressure as on one node. It polls every 25 ms, at once after
///   this node accepted an event, and once a second looks again below its cursor for events whose commit
///   landed after later ones had been read.
/// - **spool**: moves events accepted while PostgreSQL was unreachable from the local spool.
/// - **retention** (the lease holder only): every minute, like `--retention` on one node.
///
/// At graceful shutdown it stops reading, lets the engine finish what it holds (up to `grace`), commits,
/// gives the lease up so another node takes over at once, and leaves the node list.
public final class ClusterNode: Service, Sendable {
    let journal: PostgresJournal
    let engine: Engine
    let decoder: EventDecoder
    let version: String
    let retention: Double
    let grace: Duration
    let logger: Logger
    let wake = WakeSignal()
    let startedAt = Date().timeIntervalSince1970
    let stopping = Mutex(false)
    /// Counts the terms this node began: the feed starts from the first event again in each.
    let term = Mutex(0)
    let warned = Mutex<Set<String>>([])

    public init(
        journal: PostgresJournal, engine: Engine, decoder: EventDecoder, version: String, retention: Double,
        grace: Duration, logger: Logger
    ) {
        self.journal = journal
        self.engine = engine
        self.decoder = decoder
        self.version = version
        self.retention = retention
        self.grace = grace
        self.logger = logger
        journal.accepted.withLock { [wake] in $0 = Callback { _ in wake.signal() } }
    }

    var isStopping: Bool { stopping.withLock { $0 } }
    var interval: Double { min(2.5, max(0.2, journal.lease / 4)) }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.feed() }
            group.addTask { await self.moveSpool() }
            group.addTask { await self.prune() }
            await withGracefulShutdownHandler {
                await self.heartbeats()
            } onGracefulShutdown: {
                self.stopping.withLock { $0 = true }
                self.wake.signal()
            }
            group.cancelAll()
        }
        await leave()
    }

    // MARK: heartbeat and lease

    func heartbeats() async {
        var failures = 0
        while !isStopping && !Task.isCancelled {
            do {
                try await beat()
                if failures > 0 { logger.notice("PostgreSQL answers again (\(journal.location))") }
                failures = 0
            } catch {
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning(
                        "heartbeat to PostgreSQL failed (\(PostgresJournal.reason(error))): accepting into the local spool; the processing lease lapses after \(journal.lease) s without one"
                    )
                }
            }
            try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
        }
    }

    func beat() async throws {
        let epoch = try await journal.acquireLease()
        try await settle(epoch)
        try await journal.heartbeat(
            version: version, rulesHash: Self.hash(engine.generation.source), inFlight: engine.eventsInFlight,
            startedAt: startedAt)
        try await compareRules()
    }

    /// Acts on what the database said about the lease.
    func settle(_ epoch: Int64?) async throws {
        let held = journal.leadership.withLock { $0.epoch }
        guard let epoch else {
            if held != nil {
                logger.notice("another node holds the processing lease now: this node only accepts events")
                journal.forgetLease()
            }
            return
        }
        if held == epoch {
            journal.leadership.withLock { $0.confirmedAt = .now }
            return
        }
        // A new term: nothing from an earlier one may be committed, and the store must be what the database
        // holds (another node may have written it since this node last ran events).
        journal.forgetLease()
        let deadline = ContinuousClock.now + grace
        while engine.eventsInFlight > 0, ContinuousClock.now < deadline, !isStopping {
            try? await Task.sleep(for: .milliseconds(10))
        }
        engine.store.replace(records: try await journal.fetchStoreRecords())
        journal.beginTerm(epoch)
        term.withLock { $0 += 1 }
        logger.notice("this node runs the cluster's events now (processing lease, epoch \(epoch))")
        wake.signal()
        journal.deliveryObserver.withLock { $0 }?.call(())
    }

    /// Warns once per node and rule set when a live node runs other rules than this one.
    func compareRules() async throws {
        let mine = Self.hash(engine.generation.source)
        for node in try await journal.nodes() where node.live && node.name != journal.node && node.rulesHash != mine {
            let key = node.name + "|" + node.rulesHash + "|" + mine
            guard warned.withLock({ $0.insert(key).inserted }) else { continue }
            logger.warning(
                "node \(node.name) runs other rules (hash \(node.rulesHash)) than this node (\(mine)): events run with whichever rules the processing node has; deploy the same rules/ to every node"
            )
        }
    }

    /// FNV-1a (64 bits) of the rule and module files, names and contents, in name order.
    public static func hash(_ source: RuleSource) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        let files = (source.rules + Array(source.modules.values)).sorted { $0.displayPath < $1.displayPath }
        for file in files {
            for byte in file.displayPath.utf8 + [0] + file.text.utf8 + [0] {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
        }
        return String(hash, radix: 16)
    }

    // MARK: running events

    func feed() async {
        var cursor: Int64 = 0
        var current = -1
        var lastLook = ContinuousClock.now
        let page = 256
        while !isStopping && !Task.isCancelled {
            guard journal.isProcessing else {
                await wake.wait(upTo: 0.25)
                continue
            }
            let now = term.withLock { $0 }
            if now != current {
                current = now
                cursor = 0
            }
            do {
                var batch = try await journal.pending(after: cursor, limit: page)
                let full = batch.count == page
                if ContinuousClock.now - lastLook > .seconds(1) {
                    lastLook = .now
                    batch = try await journal.stragglers(upTo: cursor, limit: 4096) + batch
                }
                for (seq, entry) in batch {
                    guard journal.isProcessing, term.withLock({ $0 }) == current, !isStopping else { break }
                    if journal.dispatched.withLock({ $0.insert(entry.id).inserted }) {
                        await engine.submit(entry, decoder: decoder)
                    }
                    cursor = max(cursor, seq)
                }
                if !full { await wake.wait(upTo: 0.025) }
            } catch {
                logger.warning("could not read events from PostgreSQL: \(PostgresJournal.reason(error))")
                await wake.wait(upTo: 0.5)
            }
        }
    }

    func moveSpool() async {
        while !Task.isCancelled {
            if journal.spooledCount() > 0 {
                do {
                    while try await journal.moveSpooled() > 0 {}
                    wake.signal()
                } catch {
                    logger.debug("the spool waits for PostgreSQL: \(PostgresJournal.reason(error))")
                }
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    func prune() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(60))
            guard journal.isProcessing, !Task.isCancelled else { continue }
            do { try await journal.prune(olderThan: retention) } catch {
                logger.warning("retention in PostgreSQL failed: \(PostgresJournal.reason(error))")
            }
        }
    }

    // MARK: leaving

    /// Lets the engine finish what it holds (renewing the lease meanwhile), commits, gives the lease up.
    func leave() async {
        let deadline = ContinuousClock.now + grace
        var lastBeat = ContinuousClock.now
        while engine.eventsInFlight > 0, ContinuousClock.now < deadline {
            if ContinuousClock.now - lastBeat > .seconds(interval) {
                lastBeat = .now
                try? await settle(try await journal.acquireLease())
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        await journal.drain(limit: .seconds(5))
        await journal.releaseLease()
        await journal.leave()
        logger.info("left the cluster (processing lease released)")
    }
}
