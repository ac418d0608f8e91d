import NIOCore
import NIOPosix
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// The executor an event's task runs on: its own queue of jobs drained by one loop task at a time.
@Suite struct LoopExecutorTests {
    /// A record of which task ran, and whether on the executor's loop.
    final class Ran: Sendable {
        let entries = Mutex<[(task: Int, onLoop: Bool)]>([])
        func add(_ task: Int, _ loop: any EventLoop) { entries.withLock { $0.append((task, loop.inEventLoop)) } }
        var tasks: [Int] { entries.withLock { $0.map(\.task) } }
        var allOnLoop: Bool { entries.withLock { $0.allSatisfy(\.onLoop) } }
    }

    @Test func tasksRunOnTheLoopInTheOrderTheyWereStarted() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = LoopExecutor(group.next())
        let ran = Ran()
        let count = 3 * LoopExecutor.jobsPerPass + 7
        for i in 0..<count {
            Task(executorPreference: executor) { ran.add(i, executor.loop) }
        }
        #expect(await eventually { ran.tasks.count == count })
        #expect(ran.tasks == Array(0..<count))
        #expect(ran.allOnLoop)
        try await group.shutdownGracefully()
    }

    @Test func tasksStartedFromSeveralThreadsAllRunEachInItsOrder() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = LoopExecutor(group.next())
        let ran = Ran()
        let perThread = 500
        await withTaskGroup(of: Void.self) { starters in
            for thread in 0..<4 {
                starters.addTask {
                    for i in 0..<perThread {
                        let id = thread * perThread + i
                        Task(executorPreference: executor) { ran.add(id, executor.loop) }
                    }
                }
            }
        }
        #expect(await eventually { ran.tasks.count == 4 * perThread })
        let tasks = ran.tasks
        #expect(Set(tasks).count == 4 * perThread)
        for thread in 0..<4 {
            let own = tasks.filter { $0 / perThread == thread }
            #expect(own == Array(thread * perThread..<(thread + 1) * perThread))
        }
        #expect(ran.allOnLoop)
        try await group.shutdownGracefully()
    }

    /// A long queue must not hold the loop: after `jobsPerPass` jobs the loop's other work (its I/O, other
    /// loop tasks) runs before the rest.
    @Test func aLongQueueGivesTheLoopBackBetweenPasses() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let executor = LoopExecutor(loop)
        let ran = Ran()
        let count = 3 * LoopExecutor.jobsPerPass
        let marker = -1
        try await loop.submit {
            for i in 0..<count {
                Task(executorPreference: executor) { ran.add(i, loop) }
            }
            // Queued on the loop after the executor's first pass, before its second.
            loop.execute { ran.add(marker, loop) }
        }.get()
        #expect(await eventually { ran.tasks.count == count + 1 })
        let tasks = ran.tasks
        #expect(tasks.filter { $0 != marker } == Array(0..<count))
        let markerAt = try #require(tasks.firstIndex(of: marker))
        #expect(markerAt > 0 && markerAt < count, "the loop's own task ran at \(markerAt) of \(count + 1)")
        try await group.shutdownGracefully()
    }
}
