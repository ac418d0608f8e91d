public import NIOCore
import NIOPosix
import Synchronization

/// Runs a task's work on one NIO event loop: with `Task(executorPreference:)`, an event's task runs on its
/// worker's loop (`RuleWorker.executor`), so going from the HTTP handler to the rules and back needs no other
/// thread when the request arrived on that loop, and no wake-up of the shared pool.
public final class LoopExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    /// One executor per loop of NIO's shared group, for workers made without one.
    static let shared: [LoopExecutor] = MultiThreadedEventLoopGroup.singleton.makeIterator().map(LoopExecutor.init)
    static let next = Mutex(0)

    /// The shared group's loops in turn.
    static func nextShared() -> LoopExecutor {
        let i = next.withLock { i -> Int in
            defer { i += 1 }
            return i
        }
        return shared[i % shared.count]
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
