public import NIOCore
import NIOPosix

/// Runs a task's work on one NIO event loop: with `Task(executorPreference:)`, an event's task runs on its
/// worker's loop (`RuleWorker.executor`), so going from the HTTP handler to the rules and back needs no other
/// thread when the request arrived on that loop, and no wake-up of the shared pool.
public final class LoopExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    /// One executor per loop of NIO's shared group: the engine's worker i has the i-th; a worker made without
    /// one (the commands, the console's Try it, the benchmarks) has the first, which only a task that asks
    /// for it runs on.
    static let shared: [LoopExecutor] = MultiThreadedEventLoopGroup.singleton.makeIterator().map(LoopExecutor.init)

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
