import RuleEngine

/// Where the processing node's feed is in `seq` order, and what it must look at again below that.
///
/// A node takes an event's `seq` when its insert starts and the row becomes visible when it commits, so
/// reads see `seq`s out of order: a read can return 101 and 102 while 100 is still committing. Moving past
/// 100 then and finding it a second later (the old straggler scan) broke per-call order: Kazoo sends a call's
/// next event only after the last one's 200, so that next event can be read, and run, before 100.
///
/// So every `seq` a read skipped is a **hole**, and every later read asks for the holes again in the same
/// statement, ordered by `seq` with the new rows. The event behind a hole has committed before its call's
/// next event was even sent (that event's 200 waited for the commit), so any read that sees the next event
/// sees the earlier one too, and runs it first. Nothing waits: a hole costs a few entries in the query's
/// array, never a pause in the feed.
///
/// A hole is usually filled a millisecond later. One that stays empty was a rolled-back insert or an insert
/// that lost a race on its id; after `patience` it is dropped, and the scan once a second below the position
/// (`stragglers`) still finds an insert that committed later than that, as before.
struct EventFeed {
    /// The highest `seq` read, or the top of the last backlog pass.
    private(set) var position: Int64 = 0
    /// `seq`s below `position` that no read returned, with when they were first missed.
    private(set) var holes: [Int64: ContinuousClock.Instant] = [:]
    private var lastLook: ContinuousClock.Instant

    /// How long a hole is asked for before it is taken to be a rolled-back insert.
    static let patience: Duration = .seconds(10)
    /// Most holes kept: one jump keeps the `seq`s just below it (a commit in flight sits there; a longer
    /// run is a batch that failed, or the sequence skipping ahead after a crash). Each node writes up to
    /// `PostgresJournal.appendBatchMost` events a statement, so with several nodes the commits in flight can
    /// span a few hundred `seq`s: this covers eight nodes' statements.
    static let maximumHoles = 1024
    /// How often the feed looks below its position for events that committed after their hole was dropped.
    static let lookBelowEvery: Duration = .seconds(1)

    init(now: ContinuousClock.Instant = .now) { lastLook = now }

    /// The next events to run, in `seq` order: the holes that have filled, then new ones. `excluding`: the
    /// ids running now (a look below the position skips them).
    mutating func next(
        from journal: PostgresJournal, limit: Int, excluding running: () -> [String],
        now: ContinuousClock.Instant = .now
    ) async throws -> [(seq: Int64, entry: AcceptedEvent)] {
        expire(now: now)
        var batch = try await journal.pending(after: position, orAt: Array(holes.keys), limit: limit)
        read(batch.map(\.seq), now: now)
        if now - lastLook > Self.lookBelowEvery {
            lastLook = now
            let late = try await journal.stragglers(upTo: position, excluding: running(), limit: limit)
            for event in late { holes[event.seq] = nil }
            batch = late + batch
        }
        return batch
    }

    /// Takes note of the `seq`s one read returned, in ascending order.
    mutating func read(_ seqs: [Int64], now: ContinuousClock.Instant) {
        for seq in seqs {
            if seq <= position {
                holes[seq] = nil
                continue
            }
            let skipped = seq - position - 1
            let kept = min(skipped, Int64(Self.maximumHoles))
            var hole = seq - kept
            while hole < seq {
                holes[hole] = now
                hole += 1
            }
            position = seq
        }
        trimHoles()
    }

    /// Keeps the highest `maximumHoles` holes (the lowest ones are the oldest).
    private mutating func trimHoles() {
        guard holes.count > Self.maximumHoles else { return }
        for seq in holes.keys.sorted().prefix(holes.count - Self.maximumHoles) { holes[seq] = nil }
    }

    /// Asks for these `seq`s (read but not run: the feed stopped partway through a batch) again in the next
    /// read, as holes.
    mutating func reread(_ seqs: [Int64], now: ContinuousClock.Instant = .now) {
        for seq in seqs where seq <= position { holes[seq] = now }
    }

    // MARK: the backlog

    /// A pass over the backlog (after a takeover or an outage), in arrival order: the highest `seq` that had
    /// committed when it began, the `seq`s that existed then just below it (done or not), the unfinished events
    /// up to it in arrival order, and how far the pass is.
    struct Backlog {
        let top: Int64
        let existing: Set<Int64>
        let order: [Int64]
        var next = 0
    }
    private(set) var backlog: Backlog? = nil

    /// Begins a pass over every unfinished event up to the highest `seq` committed now. Events accepted after
    /// that wait for the pass to end, then come in `seq` order: an event of a call that another node was
    /// still committing when the pass began commits before that call's next event is even sent, so the next
    /// one always has a later `seq` than the top and runs after it.
    mutating func beginBacklog(from journal: PostgresJournal) async throws {
        let (top, existing) = try await journal.highestSeqs(Self.maximumHoles)
        beginBacklog(top: top, existing: existing, order: try await journal.arrivalOrder(upTo: top))
    }

    mutating func beginBacklog(top: Int64, existing: [Int64], order: [Int64]) {
        backlog = Backlog(top: top, existing: Set(existing), order: order)
    }

    /// The pass's next page: the events of up to `limit` of its `seq`s that are still unfinished, in arrival
    /// order (it can be empty). Nil when the pass is over: call `endBacklog`.
    mutating func backlogPage(from journal: PostgresJournal, limit: Int) async throws -> [(
        seq: Int64, entry: AcceptedEvent
    )]? {
        guard let pass = backlog, pass.next < pass.order.count else { return nil }
        let end = min(pass.next + limit, pass.order.count)
        let page = try await journal.unfinished(at: Array(pass.order[pass.next..<end]))
        backlog?.next = end
        return page
    }

    /// Ends the pass: the feed goes on in `seq` order from its top. An insert still committing when the pass
    /// began has a `seq` just below the top that did not exist yet: the `seq`s just below the top that neither
    /// existed then nor were listed by the pass are holes, asked for first in the next reads, so such an
    /// event still runs before its call's next one. (A `seq` that existed then is no hole: its event was
    /// listed, or done.)
    mutating func endBacklog(now: ContinuousClock.Instant = .now) {
        guard let pass = backlog else { return }
        backlog = nil
        let low = max(1, pass.top - Int64(Self.maximumHoles) + 1, position + 1)
        var listed = Set<Int64>()
        for seq in pass.order {
            if seq >= low { listed.insert(seq) }
            if !holes.isEmpty { holes[seq] = nil }
        }
        var seq = low
        while seq <= pass.top {
            if !listed.contains(seq), !pass.existing.contains(seq) { holes[seq] = holes[seq] ?? now }
            seq += 1
        }
        position = max(position, pass.top)
        trimHoles()
    }

    mutating func expire(now: ContinuousClock.Instant) {
        guard !holes.isEmpty else { return }
        holes = holes.filter { now - $0.value < Self.patience }
    }
}
