import Glibc
public import RuleEngine

// What `SwitchboardBench` and `SwitchboardEngineLoop` share: the clock they read and the engine they time.

/// CPU time of the whole process, in seconds.
public func cpuSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buffer, 1, buffer.count, f)
        if n <= 0 { break }
        bytes.append(contentsOf: buffer[0..<n])
    }
    return bytes
}

public struct BenchSetupError: Error, CustomStringConvertible {
    public let description: String
}

/// The engine row's worker: 20 rules loaded, 1 matching (scripts/anchor/anchor.lua, read from the repository's
/// root, with a forward of its result added), the other 19 on events the anchor's event is not.
public func engineBenchWorker() async throws -> RuleWorker {
    guard let anchorRule = readFile("scripts/anchor/anchor.lua").map({ String(decoding: $0, as: UTF8.self) }),
        let close = anchorRule.lastIndex(of: "}")
    else { throw BenchSetupError(description: "scripts/anchor/anchor.lua not found: run from the repository's root") }
    var files: [String: String] = [
        "00_anchor.lua": anchorRule[..<close] + "  forward = \"http://127.0.0.1:9/sink\",\n" + anchorRule[close...]
    ]
    let others = ["notifications.*", "channel_destroy", "object.*", "parking.*", "sms"]
    for i in 1..<20 {
        files["rule_\(i).lua"] =
            "return { on = \"\(others[i % others.count])\", run = function(e) log.info(e.name) end }"
    }
    let worker = try RuleWorker(
        source: RuleSource(directory: "bench-rules", files: files), configuration: RuleConfiguration(environment: [:]))
    let problems = await worker.diagnostics
    guard problems.isEmpty else { throw BenchSetupError(description: "bench rules did not load: \(problems)") }
    return worker
}

/// Checks that a report of the anchor's event ran the anchor's rule with `forwards` forwards.
public func expectAnchor(_ report: EventReport, forwards: Int = 1) {
    precondition(report.rules.first?.forwards.count == forwards, "the anchor's rule did not run as expected")
}
