import Foundation
import FuzzTargets

// `make fuzz` builds this with --sanitize=fuzzer and -DFUZZING: libFuzzer's main calls the entry point, and
// SWITCHBOARD_FUZZ_TARGET (json-reader, event-decoder, lua-bridge) says which target body it runs.
// Built normally (swift build), it replays files or directories: `SwitchboardFuzz lua-bridge crash-…`.
#if FUZZING
let body: @Sendable (UnsafeRawBufferPointer) -> Void = {
    let name = ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_TARGET"] ?? ""
    guard let body = FuzzTargets.named[name] else {
        fatalError("set SWITCHBOARD_FUZZ_TARGET to one of \(FuzzTargets.named.keys.sorted())")
    }
    return body
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    body(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
@main enum Replay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, let body = FuzzTargets.named[name] else {
            print("usage: SwitchboardFuzz \(FuzzTargets.named.keys.sorted().joined(separator: "|")) FILE|DIR...")
            exit(2)
        }
        let count = FuzzTargets.replay(Array(arguments.dropFirst()), body)
        print("\(name): \(count) input(s) replayed without a crash")
    }
}
#endif
