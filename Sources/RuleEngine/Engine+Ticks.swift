public import Foundation
import JSONCore
import Logging
import Synchronization

/// Who runs a rule's tick when several nodes share one store.
///
/// A node asks for the lease of a rule's tick before running it and gives it back when the tick's effects
/// are committed. One node's store (`LocalTickLeases`) grants it to whoever asks first. With several nodes
/// on PostgreSQL (`ClusterStore.PostgresJournal`) a tick is granted only to the node holding the cluster's
/// processing lease, the node that also runs events and delivers forwards; its commit (store writes and
/// `timer:<rule>/last_due`) is fenced by that lease's epoch like an event's done mark, so a node that lost
/// the lease mid-tick cannot commit it, and the next holder runs the tick again from the committed state.
public protocol TickLeasing: Sendable {
    /// Claims the tick of `rule` due at `due` (Unix seconds) for `node` until `until`. True: run it.
    func claim(rule: String, due: Double, node: String, until: Double) async -> Bool
    /// The tick ended (committed or cut): the lease goes back.
    func release(rule: String, node: String) async
}

/// The leases of one node's store: a rule's tick is held by one task at a time, until released or `until`.
public final class LocalTickLeases: TickLeasing {
    let held = Mutex<[String: (node: String, until: Double)]>([:])
    let clock: @Sendable () -> Double

    public init(clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.clock = clock
    }

    public func claim(rule: String, due: Double, node: String, until: Double) async -> Bool {
        let now = clock()
        return held.withLock { held in
            if let lease = held[rule], lease.until > now, lease.node != node { return false }
            held[rule] = (node, until)
            return true
        }
    }

    public func release(rule: String, node: String) async {
        held.withLock { held in if held[rule]?.node == node { held[rule] = nil } }
    }
}

/// The scheduler's memory: when each timed rule is next due and which are running.
struct TickState {
    var schedules: [String: TickSchedule] = [:]
    var next: [String: Double] = [:]
    var running: Set<String> = []
}

extension Engine {
    /// The store namespace where a rule's timer keeps the due time of its last committed tick.
    static func timerNamespace(_ rule: String) -> String { "timer:" + rule }
    static let lastDueKey = "last_due"
    /// How long a node holds a tick's lease: longer than any tick may run (budgets and HTTP timeouts).
    static let tickLease: Double = 120

    /// Runs due ticks until the task is cancelled (at shutdown). Wakes when the next tick is due, when a
    /// tick finishes and after a reload.
    func runTicks() async {
        while !Task.isCancelled {
            let wait = startDueTicks()
            await tickWake.wait(upTo: wait)
        }
    }

    /// Starts every tick that is due and not already running. Returns the seconds until the next is due.
    @discardableResult
    package func startDueTicks() -> Double {
        let generation = self.generation
        let now = store.clock()
        var wait = 60.0
        let due = ticks.withLock { t -> [(String, Double)] in
            for name in t.schedules.keys where generation.schedules[name] == nil {
                t.schedules[name] = nil
                t.next[name] = nil
            }
            var due: [(String, Double)] = []
            for (name, schedule) in generation.schedules.sorted(by: { $0.key < $1.key }) {
                if t.schedules[name] != schedule {
                    t.schedules[name] = schedule
                    t.next[name] = firstDue(of: name, schedule, now: now)
                }
                guard !t.running.contains(name), let next = t.next[name] else { continue }
                if next <= now {
                    t.running.insert(name)
                    due.append((name, next))
                } else {
                    wait = min(wait, next - now)
                }
            }
            return due
        }
        for (name, slot) in due { startTick(name, slot: slot, generation: generation) }
        return wait
    }

    /// When a rule's tick is first due: after the last committed tick by its schedule, or now when that
    /// time has passed (ticks missed while the server was down run once, not once per missed time); a rule
    /// that never ticked waits for its first due time from now.
    func firstDue(of name: String, _ schedule: TickSchedule, now: Double) -> Double? {
        guard let last = store.value(Self.timerNamespace(name), Self.lastDueKey)?.doubleValue,
            let next = schedule.next(after: last)
        else { return schedule.next(after: now) }
        return next <= now ? now : next
    }

    /// Runs one tick on the worker its rule's ticks always use, under the rule's lease. Its store writes,
    /// forwards and the timer's new due time are committed together, as an event's are with its done mark.
    func startTick(_ name: String, slot: Double, generation: Generation) {
        let worker = generation.workers[Self.slot(of: "tick:" + name, among: generation.workers.count)]
        running.withLock { running in
            let id = running.newID()
            running.tasks[id] = Task(executorPreference: worker.executor) {
                if await self.leases.claim(
                    rule: name, due: slot, node: self.node, until: self.store.clock() + Self.tickLease)
                {
                    let session = self.store.begin()
                    let outcome = await worker.tickHere(name, now: self.store.clock(), session: session)
                    // A tick cut by shutdown is not committed: its due time stays, so it runs at the next start.
                    if !Task.isCancelled {
                        var mark: DoneMark? = nil
                        // nil: the rule left the worker's set (a reload) before the tick started; nothing ran.
                        if let outcome {
                            self.metrics.increment(
                                "switchboard_ticks_total", [("rule", name), ("outcome", outcome.outcome.rawValue)])
                            self.record([outcome], forEvent: false) { ["rule.tick": "\(slot)"] }
                            try? session.set(Self.timerNamespace(name), Self.lastDueKey, .double(slot))
                            mark = DoneMark(id: "tick:\(name):\(slot)", forwards: Self.deliveries([outcome]))
                        }
                        self.store.finish(session, mark: mark) { self.journal.markDone($0) }
                    }
                    await self.leases.release(rule: name, node: self.node)
                }
                self.tickFinished(name, slot: slot)
                self.finished(id)
            }
        }
    }

    /// Schedules the next tick after the one due at `slot`: one period on, or the next due time after now
    /// when the tick outlasted its period (ticks that would overlap are skipped, never queued).
    func tickFinished(_ name: String, slot: Double) {
        let now = store.clock()
        ticks.withLock { t in
            t.running.remove(name)
            guard let schedule = t.schedules[name] else { return }
            var next = schedule.next(after: slot)
            if let due = next, due <= now { next = schedule.next(after: now) }
            t.next[name] = next
        }
        tickWake.signal()
    }

    /// When each timed rule's tick is next due (Unix seconds), for `/readyz` and tests.
    public var nextTicks: [String: Double] { ticks.withLock { $0.next } }
}
