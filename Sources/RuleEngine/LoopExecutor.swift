public import NIOCore
import NIOPosix
import Synchronization

/// Runs a task's work on one NIO event loop: with `Task(executorPreference:)`, an event's task runs on its
/// worker's loop (`RuleWorker.executor`), so going from the HTTP handler to the rules and back needs no other
/// thread when the request arrived on that loop, and no wake-up of the shared pool.
///
/// Jobs go into the executor's own queue, and one loop task (`drain`) runs them in order: a job enqueued
/// while it runs (a task resuming after an await that completed on this loop) runs in the same pass, without
/// a task of its own on the loop. Handing each job to `loop.execute` instead cost a
/// closure allocated per job and NIO's scheduling and dequeuing around it: about 4,400 instructions per event
/// for the two (callgrind on `SwitchboardEngineLoop`).
public final class LoopExecutor: TaskExecutor {
    public let loop: any EventLoop

    private struct Queue: ~Copyable {
        var jobs: [UnownedJob] = []
        /// A `drain` is scheduled on the loop or running: the jobs enqueued meanwhile are its to run.
        var draining = false
    }
    private let queue = Mutex(Queue())
    /// How many jobs one pass runs before it gives the loop back to its I/O (and schedules itself again).
    package static let jobsPerPass = 256

    public init(_ loop: any EventLoop) { self.loop = loop }

    /// One executor per loop of NIO's shared group: the engine's worker i has the i-th.
    static let shared: [LoopExecutor] = MultiThreadedEventLoopGroup.singleton.makeIterator().map(LoopExecutor.init)
    private static let handedOut = Atomic(0)

    /// The shared loops in turn: for a worker made without a loop of its own (the commands, replay's pool,
    /// the console's Try it, tests), so that several such workers run side by side.
    static func next() -> LoopExecutor {
        shared[handedOut.add(1, ordering: .relaxed).oldValue % shared.count]
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let schedule = queue.withLock { queue in
            queue.jobs.append(job)
            if queue.draining { return false }
            queue.draining = true
            return true
        }
        if schedule { loop.execute { self.drain() } }
    }

    /// Runs the queued jobs in order on the loop, including those enqueued while it runs, up to `jobsPerPass`;
    /// what is left waits for the next pass, scheduled behind what the loop has queued meanwhile.
    private func drain() {
        var batch: [UnownedJob] = []
        var ran = 0
        while true {
            let more = queue.withLock { queue in
                if queue.jobs.isEmpty {
                    queue.draining = false
                    return false
                }
                swap(&batch, &queue.jobs)
                return true
            }
            guard more else { return }
            var next = 0
            while next < batch.count, ran < Self.jobsPerPass {
                batch[next].runSynchronously(on: asUnownedTaskExecutor())
                next += 1
                ran += 1
            }
            if ran >= Self.jobsPerPass {
                // Still draining: the rest goes back in front of what was enqueued meanwhile.
                queue.withLock { $0.jobs.insert(contentsOf: batch[next...], at: 0) }
                loop.execute { self.drain() }
                return
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
