import BenchSupport
import EventStore
// `make bench`: the per-event engine cost, measured the way ../shared/bench/inproc.lua measures its anchor
// (CPU time over N events): decode the request body, hand the event to Lua as a table, run a trivial rule,
// and encode what the rule returns as JSON.
//
//   SwitchboardBench EVENT_FILE [N]
import Foundation
import Glibc
import JSONCore
import KazooEvents
import LuaRuntime
import RuleEngine

/// The anchor's rule, as a Switchboard rule function: keep inbound channel_create, count, transform.
let ruleSource = """
    local matched = 0
    return function(e)
      if e.hook_event == "channel_create" and e.call_direction == "inbound" then
        matched = matched + 1
        return { call_id = e.call_id, from = e.caller_id_number, to = e.callee_id_number, n = matched }
      end
    end
    """

/// Runs `body` n times and reports CPU time per iteration.
func measure(_ label: String, _ n: Int, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0..<min(n / 10, 10_000) { try body() }  // warm up
    let t0 = cpuSeconds()
    for _ in 0..<n { try body() }
    let dt = cpuSeconds() - t0
    let line =
        "switchboard \(label): \(n) events in \(String(format3(dt))) s cpu = \(Int(Double(n) / dt)) events/s (\(format3(dt / Double(n) * 1e6)) us/event)"
    print(line)
    return Double(n) / dt
}

func format3(_ x: Double) -> String {
    let scaled = (x * 1000).rounded() / 1000
    return "\(scaled)"
}

let arguments = CommandLine.arguments

// `SwitchboardBench --make-journal DIR N EVENT_FILE`: a journal holding N accepted copies of the event (each its
// own call), for timing `switchboard replay` on a real file.
if arguments.count == 5, arguments[1] == "--make-journal", let count = Int(arguments[3]),
    let event = readFile(arguments[4])
{
    let journal = try EventJournal(directory: arguments[2])
    let text = String(decoding: event, as: UTF8.self)
    guard let start = text.range(of: "\"call_id\": \"")?.upperBound, let end = text[start...].firstIndex(of: "\"")
    else {
        print("the event has no \"call_id\": \"…\" to vary")
        exit(1)
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<count {
            if i >= 256 { try await group.next() }
            let body = Array((text[..<start] + "replay-\(i)" + text[end...]).utf8)
            group.addTask {
                try await journal.append(
                    EventJournal.Entry(
                        id: "r\(i)", receivedAt: 1_800_000_000 + Double(i) / 1000, hook: "channel_create",
                        format: "json",
                        body: body, meta: #"{"id":"r\#(i)"}"#))
            }
        }
        try await group.waitForAll()
    }
    print("wrote \(count) events to \(journal.path)")
    exit(0)
}

guard arguments.count >= 2, let body = readFile(arguments[1]) else {
    print("usage: SwitchboardBench EVENT_FILE [N]")
    exit(2)
}
let n = arguments.count >= 3 ? Int(arguments[2]) ?? 200_000 : 200_000

let decoder = EventDecoder()
let state = try LuaState()
let env = try state.newEnvironment()
let chunk = try state.load(ruleSource, chunkName: "bench_rule.lua", environment: env)
guard let rule = try state.callReferences(chunk).first, state.typeName(of: rule) == "function" else {
    print("the bench rule did not return a function")
    exit(1)
}

// Sanity: the rule matches this event.
let first = try state.call(rule, [.object(try decoder.decode(body, format: .json).fields)])
guard case .object(let out)? = first.first, out["call_id"] != nil else {
    print("the bench rule did not match the event: \(first)")
    exit(1)
}

// BENCH_BRIDGE_ONLY=1: only the decode + Lua + rule + JSON row, then stop (for `perf record`, and for
// `valgrind --tool=callgrind` instruction counts: the difference between two N, per event).
let bridgeOnly = ProcessInfo.processInfo.environment["BENCH_BRIDGE_ONLY"] != nil
if !bridgeOnly {
    _ = try measure("decode only", n) {
        _ = try decoder.decode(body, format: .json)
    }
    _ = try measure("decode + Lua table", n) {
        let event = try decoder.decode(body, format: .json)
        state.release(try state.makeReference(.object(event.fields)))
    }
}
// BENCH_UNIQUE_VALUES=1: each event of this row differs from every other in each string value but the three
// that make it an inbound channel_create (`hook_event`, `call_direction`) or that Kazoo sends as a number's text
// (`timestamp`): the event's number is appended. 4,096 such events are made first (the same number whatever N,
// so that `scripts/count_instructions.sh`'s difference between two N leaves their making out) and taken in turn:
// a value comes back only after 4,095 other events have been read, when the decoder's shared value Strings
// (`ValueStrings`, 512 of them a thread) no longer hold it, as if every event came from a new account, device
// and call. (They still hit on a value the event repeats itself: its `account_id` inside `custom_channel_vars`,
// say. The bodies are written anew by `JSONWriter`, without the file's spaces.)
let bodies: [[UInt8]]
if let unique = ProcessInfo.processInfo.environment["BENCH_UNIQUE_VALUES"], !unique.isEmpty {
    let kept: Set<String> = ["hook_event", "call_direction", "timestamp"]
    func numbered(_ value: JSONValue, _ i: Int, key: String?) -> JSONValue {
        switch value {
        case .string(let text) where !kept.contains(key ?? ""): return .string("\(text)-\(i)")
        case .object(let object):
            return .object(JSONObject(object.map { .init(key: $0.key, value: numbered($0.value, i, key: $0.key)) }))
        case .array(let items): return .array(items.map { numbered($0, i, key: nil) })
        default: return value
        }
    }
    let parsed = try JSONReader.parse(body)
    bodies = try (0..<4_096).map { try JSONWriter.encode(numbered(parsed, $0, key: nil)) }
} else {
    bodies = [body]
}
// BENCH_FORMAT=form: the row's bodies are posted as Kazoo's default `form-data` format (`FormEncoder`, as
// `kz_http_util:json_to_querystring/1` writes them: `custom_channel_vars[owner_id]=…`, `+` for spaces) and
// decoded as such.
let wireFormat: WireFormat = ProcessInfo.processInfo.environment["BENCH_FORMAT"] == "form" ? .form : .json
let rowBodies =
    wireFormat == .json
    ? bodies
    : try bodies.map { Array(FormEncoder.encode(try decoder.decode($0, format: .json).fields).utf8) }
var next = 0
// The event goes to the rule as the engine passes it: a lazy table (`LuaArgument.object`).
let full = try measure("decode + Lua + rule + JSON out", n) {
    let event = try decoder.decode(rowBodies[next], format: wireFormat)
    next = next + 1 == rowBodies.count ? 0 : next + 1
    let results = try state.call(rule, arguments: [.object(event.fields, adding: [])])
    _ = try JSONWriter.encode(results.first ?? .null)
}
print("switchboard_events_per_second \(Int(full))")
if bridgeOnly { exit(0) }

// The rule engine: 20 rules loaded, 1 matching (the anchor's rule, its payload JSON-encoded as a forward).
let worker = try await engineBenchWorker()
let check = await worker.process(try decoder.decode(body, format: .json))
guard check.rules.filter({ $0.outcome == .ok }).count == 1, check.rules[0].forwards.count == 1 else {
    print("bench rules did not run as expected: \(check.rules.map(\.outcome))")
    exit(1)
}
// As many events as the first row, which it is compared with: at a quarter of them (0.2 s of CPU) the row moved by
// several percent between rounds.
let engineN = max(n, 1)
// From a task started on the worker's event loop, as the server starts its event tasks
// (`Task(executorPreference:)`), calling the worker as the engine does (`processHere`): the worker runs on the
// task's own thread, with no executor switch. Rules whose `on` does not name the event are left out of the
// report, as the server leaves them. (A call from the main thread, `process`, hops to the worker's loop and
// back for every event: about 65 µs of thread hand-offs, which is what such a row would measure.)
let engineSeconds = try await Task.detached(executorPreference: worker.executor) {
    for _ in 0..<min(engineN / 10, 5_000) {
        let event = try decoder.decode(body, format: .json)
        expectAnchor(await worker.processHere(event, meta: nil, only: nil, session: nil, unnamed: .omitted))
    }
    let t0 = cpuSeconds()
    for _ in 0..<engineN {
        let event = try decoder.decode(body, format: .json)
        expectAnchor(await worker.processHere(event, meta: nil, only: nil, session: nil, unnamed: .omitted))
    }
    return cpuSeconds() - t0
}.value
print(
    "switchboard engine (20 rules, 1 matching) from a task, as the server calls it: \(engineN) events in \(format3(engineSeconds)) s cpu = \(Int(Double(engineN) / engineSeconds)) events/s (\(format3(engineSeconds / Double(engineN) * 1e6)) us/event)"
)
print("switchboard_engine_task_events_per_second \(Int(Double(engineN) / engineSeconds))")

// The rule store: a rule making 100 store calls per event (50 incr, 50 get over 10 keys), each event in its
// own session committed with a done mark, as the server does.
let storeWorker = try RuleWorker(
    source: RuleSource(
        directory: "bench-rules",
        files: [
            "store.lua": """
            return { name = "store", on = "channel_create", run = function(e)
              for i = 1, 50 do store.incr("k" .. (i % 10)) end
              for i = 1, 50 do store.get("k" .. (i % 10)) end
            end }
            """
        ]), configuration: RuleConfiguration(environment: [:]))
let benchStore = RuleStore()
let storeEvent = try decoder.decode(body, format: .json)
let storeN = max(n / 20, 1)
// From a task on the worker's loop, as the engine runs events.
let (sdt, marks) = await Task.detached(executorPreference: storeWorker.executor) {
    var marks = 0
    let s0 = cpuSeconds()
    for i in 0..<storeN {
        let session = benchStore.begin()
        let report = await storeWorker.processHere(
            storeEvent, meta: nil, only: nil, session: session, unnamed: .omitted)
        precondition(report.rules[0].outcome == .ok)
        benchStore.finish(session, mark: DoneMark(id: "e\(i)", forwards: [])) { marks += $0.count }
    }
    return (cpuSeconds() - s0, marks)
}.value
precondition(marks == storeN && benchStore.value("rule:store", "k1") == .int(Int64(storeN * 5)))
print(
    "switchboard store inside a rule: \(storeN * 100) operations (\(storeN) events x 50 incr + 50 get) in \(format3(sdt)) s cpu = \(Int(Double(storeN * 100) / sdt)) operations/s"
)
print("switchboard_store_operations_per_second \(Int(Double(storeN * 100) / sdt))")
