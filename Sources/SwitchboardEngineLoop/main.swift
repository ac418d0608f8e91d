// The engine row of `make bench` alone, for `valgrind --tool=callgrind` (scripts/count_instructions.sh) and
// `perf record`: a worker with 20 rules loaded and 1 matching, called from a task as the server calls it.
//
//   SwitchboardEngineLoop EVENT_FILE [N]     (from the repository's root; N/10 warm-up events, then N)
//
// Its main is synchronous and waits on a semaphore: valgrind 3.19 crashes here when an async main (top-level
// `await`, as SwitchboardBench has) parks the main thread in dispatch_main and the first pool thread starts.
import BenchSupport
import Dispatch
import Glibc
import KazooEvents
import RuleEngine

let arguments = CommandLine.arguments
guard arguments.count >= 2, let body = readFile(arguments[1]) else {
    print("usage: SwitchboardEngineLoop EVENT_FILE [N]")
    exit(2)
}
let n = arguments.count >= 3 ? Int(arguments[2]) ?? 100_000 : 100_000
let finished = DispatchSemaphore(value: 0)
Task.detached {
    do {
        let worker = try await engineBenchWorker()
        // As the server starts an event's task: on the worker's event loop.
        try await Task.detached(executorPreference: worker.executor) { try await loop(worker) }.value
    } catch {
        print("\(error)")
        exit(1)
    }
    finished.signal()
}
finished.wait()

func loop(_ worker: RuleWorker) async throws {
    let decoder = EventDecoder()
    for _ in 0..<n / 10 {
        expectAnchor(
            await worker.processHere(
                try decoder.decode(body, format: .json), meta: nil, only: nil, session: nil, unnamed: .omitted))
    }
    let t0 = cpuSeconds()
    for _ in 0..<n {
        expectAnchor(
            await worker.processHere(
                try decoder.decode(body, format: .json), meta: nil, only: nil, session: nil, unnamed: .omitted))
    }
    let seconds = cpuSeconds() - t0
    print("engine from a task: \(n) events, \(Int(Double(n) / seconds)) events/s")
}
