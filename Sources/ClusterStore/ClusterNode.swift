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
///   engine, which keeps per-call order and backpressure as on one node. It polls every 25 ms, and at once
///   after this node accepted an event; `EventFeed` says how it keeps order when commits land out of `seq`
///   order.
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
    let preparing = Mutex(false)

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
            group.addTask { await self.heartbeats() }
            await withGracefulShutdownHandler {
                await self.leases()
            } onGracefulShutdown: {
                self.stopping.withLock { $0 = true }
                self.wake.signal()
            }
            group.cancelAll()
        }
        await leave()
    }

    // MARK: heartbeat and lease

    /// Renews the lease (and acts on it) every interval; a slow heartbeat or rules check never delays it.
    func leases() async {
        var failures = 0
        while !isStopping && !Task.isCancelled {
            do {
                try await settle(try await journal.acquireLease())
                if failures > 0 { logger.notice("PostgreSQL answers again (\(journal.location))") }
                // The server answers on the lease's own connection: after an outage, or when work on the pool
                // ran out of time since, start a fresh pool rather than wait out the old one's backoff.
                if failures > 0 || journal.poolStalled { journal.renewPool() }
                failures = 0
            } catch {
                failures += 1
                journal.noteOutage()
                if failures == 1 || failures % 20 == 0 {
                    logger.warning(
                        "cannot renew the processing lease in PostgreSQL (\(PostgresJournal.reason(error))): accepting into the local spool; the lease lapses after \(journal.lease) s without renewal"
                    )
                }
            }
            try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
        }
    }

    /// Writes this node's row for `switchboard nodes` and compares rule sets, every interval.
    func heartbeats() async {
        while !isStopping && !Task.isCancelled {
            do {
                try await Deadline.run(.seconds(max(1, journal.lease / 2))) { [self] in
                    try await journal.heartbeat(
                        version: version, rulesHash: Self.hash(engine.generation.source),
                        inFlight: engine.eventsInFlight, startedAt: startedAt)
                    try await compareRules()
                }
            } catch {
                journal.noteOutage()
            }
            try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
        }
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
            let ready = journal.leadership.withLock { l -> Bool in
                l.confirmedAt = .now
                return l.ready
            }
            if !ready { prepare(epoch) }  // an earlier try failed (the database), or it is under way
            return
        }
        // A new term: nothing from an earlier one may be committed (`takeLease` drops it), and the store must
        // be what the database holds (another node may have written it since this node last ran events).
        journal.takeLease(epoch)
        prepare(epoch)
    }

    /// Beside the renewals, which must go on meanwhile: waits until the engine is idle, loads the committed
    /// store, and begins the term. One at a time.
    func prepare(_ epoch: Int64) {
        guard
            preparing.withLock({ busy -> Bool in
                if busy { return false }
                busy = true
                return true
            })
        else { return }
        Task { [self] in
            defer { preparing.withLock { $0 = false } }
            let deadline = ContinuousClock.now + grace
            while engine.eventsInFlight > 0, ContinuousClock.now < deadline, !isStopping {
                try? await Task.sleep(for: .milliseconds(10))
            }
            // Still running an earlier term's events (their marks are dropped, but their store writes must not
            // land in the store loaded below), lost again meanwhile, or the database failed: the next
            // renewal tries again.
            guard engine.eventsInFlight == 0, let records = try? await journal.fetchStoreRecords(),
                journal.leadership.withLock({ $0.epoch == epoch && !$0.ready }), engine.eventsInFlight == 0
            else { return }
            engine.store.replace(records: records)
            journal.beginTerm(epoch)
            term.withLock { $0 += 1 }
            logger.notice("this node runs the cluster's events now (processing lease, epoch \(epoch))")
            wake.signal()
            journal.deliveryObserver.withLock { $0 }?.call(())
        }
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
        var feed = EventFeed()
        var current = -1
        var settleSince: Double? = nil
        var inOrder = true
        let page = Self.page
        while !isStopping && !Task.isCancelled {
            guard journal.isProcessing else {
                await wake.wait(upTo: 0.25)
                continue
            }
            let now = term.withLock { $0 }
            if now != current {
                current = now
                feed = EventFeed()
                inOrder = false
            }
            do {
                // After an outage, every node moves its spool: their events get later `seq`s than events that
                // other nodes wrote meanwhile. Wait until each node has written a heartbeat with an empty
                // spool (at most a lease), then run the backlog in the order the nodes received it.
                if let began = journal.outage.withLock({ $0 }) {
                    logger.debug("waiting for the nodes' spools after an outage")
                    let (moved, at) = try await journal.spoolsMoved(
                        since: settleSince, outageSeconds: (ContinuousClock.now - began).inSeconds,
                        patience: journal.lease)
                    settleSince = settleSince ?? at
                    if !moved {
                        await wake.wait(upTo: 0.1)
                        continue
                    }
                    journal.outage.withLock { $0 = nil }
                    settleSince = nil
                    inOrder = false
                }
                if !inOrder {
                    // The whole backlog in arrival order (after a takeover too: the old holder's unfinished
                    // events and those its spool moved), a page at a time, then back to following `seq`
                    // (`EventFeed.beginBacklog` says why the pass stops at the `seq` it began at). A pass cut
                    // short (the lease paused, the database failed) begins again; what it handed over is
                    // skipped as running.
                    logger.debug("running the backlog in arrival order")
                    try await feed.beginBacklog(from: journal)
                    var finished = false
                    paging: while true {
                        journal.releaseSettled()
                        guard let backlog = try await feed.backlogPage(from: journal, limit: page) else {
                            finished = true
                            break
                        }
                        for (_, entry) in backlog {
                            guard journal.isProcessing, term.withLock({ $0 }) == current, !isStopping else {
                                break paging
                            }
                            if journal.dispatched.withLock({ $0.insert(entry.id) }) {
                                await engine.submit(entry, decoder: decoder)
                            }
                        }
                    }
                    if finished {
                        feed.endBacklog()
                        inOrder = true
                    }
                    continue
                }
                journal.releaseSettled()
                let batch = try await feed.next(
                    from: journal, limit: page, excluding: { Array(journal.dispatched.withLock { $0.ids }) })
                for (index, (_, entry)) in batch.enumerated() {
                    guard journal.isProcessing, term.withLock({ $0 }) == current, !isStopping else {
                        // A late renewal can pause this term and resume it: the rest runs then, in order.
                        feed.reread(batch[index...].map(\.seq))
                        break
                    }
                    if journal.dispatched.withLock({ $0.insert(entry.id) }) {
                        await engine.submit(entry, decoder: decoder)
                    }
                }
                if batch.count < page { await wake.wait(upTo: 0.025) }
            } catch {
                journal.noteOutage()
                logger.warning("could not read events from PostgreSQL: \(PostgresJournal.reason(error))")
                await wake.wait(upTo: 0.5)
            }
        }
    }

    /// Events read per query: small enough for one socket read (see `PostgresJournal.entries`).
    static let page = 32

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
