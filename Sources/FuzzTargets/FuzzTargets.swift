import Foundation
import JSONCore
import KazooEvents
import LuaRuntime

/// The bodies of the libFuzzer targets (`make fuzz`), kept in a library so the regression tests run every
/// input the fuzzers ever found against the same code. Each body checks an invariant and traps
/// (`precondition`) when it does not hold: libFuzzer reports a trap like a crash and keeps the input.
public enum FuzzTargets {
    /// The targets by the name `SwitchboardFuzz` and `make fuzz` know them by.
    public static let named: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
        "json-reader": jsonReader, "event-decoder": eventDecoder, "lua-bridge": luaBridge,
    ]

    /// Keys for the JSON reader to share and remember the order of, across inputs: a few short ones the fuzzer
    /// finds quickly, a prefix of another, the empty key, and Kazoo's.
    static let keys = KeyInterner(["a", "b", "ab", "", "call_id", "owner_id"] + EventCatalog.fieldNames)

    /// JSON reader: never crashes on any bytes; what it accepts, the writer writes as JSON the reader takes
    /// back to the same value; and reading with a shared interner, whatever key orders it remembers from the
    /// inputs before, and with the thread's shared value Strings, whatever values they hold from the inputs
    /// before, gives the same value, keys in the same order, or the same error.
    public static func jsonReader(_ bytes: UnsafeRawBufferPointer) {
        let input = bytes.bindMemory(to: UInt8.self)
        let plain = Result { () throws(JSONError) in try JSONReader.parse(buffer: input) }
        let shared = Result { () throws(JSONError) in
            try JSONReader.parse(buffer: input, keys: keys, sharedValues: true)
        }
        switch (plain, shared) {
        case (.success(let a), .success(let b)):
            precondition(
                a == b && a.objectValue?.keys == b.objectValue?.keys, "the interner or shared values changed the value")
        case (.failure(let a), .failure(let b)):
            precondition(a == b, "the interner changed the error: \(a) / \(b)")
        default:
            preconditionFailure("the interner changed whether the input is accepted")
        }
        guard case .success(let value) = plain else { return }
        guard let written = try? JSONWriter.encode(value) else {
            preconditionFailure("the writer refused a value the reader produced")
        }
        guard let again = try? JSONReader.parse(written) else {
            preconditionFailure("the reader refused what the writer wrote: \(String(decoding: written, as: UTF8.self))")
        }
        precondition(again == value, "a JSON round trip changed the value")
    }

    static let decoder = EventDecoder()

    /// Event decoding in every wire format: never crashes; a form body and its query-string twin decode to
    /// the same event.
    public static func eventDecoder(_ bytes: UnsafeRawBufferPointer) {
        let body = Array(bytes)
        for hook in [nil, "channel_create", "notifications", "object", "webhook"] as [String?] {
            _ = try? decoder.decode(body, format: .json, hook: hook)
            let form = try? decoder.decode(body, format: .form, hook: hook)
            // (A query string loses trailing whitespace and everything up to a '?'; leave those out.)
            if !body.contains(UInt8(ascii: "?")), ![0x0A, 0x0D, 0x20].contains(body.last ?? 0) {
                let query = try? decoder.decode(Array("/hooks/x?".utf8) + body, format: .query, hook: hook)
                precondition(
                    form?.fields == query?.fields,
                    "a form body and the same text as a query string decoded differently")
            }
        }
    }

    /// One Lua state reused across inputs, as a worker reuses its state across events. Recreated when a
    /// kill leaves it full.
    nonisolated(unsafe) static var state: LuaState? = nil
    nonisolated(unsafe) static var environment: LuaReference? = nil

    static func luaState() -> (LuaState, LuaReference)? {
        if let state, let environment, !state.needsRebuild { return (state, environment) }
        guard let fresh = try? LuaState(limits: LuaLimits(memoryLimit: 16 << 20, instructionLimit: 200_000)),
            let env = try? fresh.newEnvironment()
        else { return nil }
        state = fresh
        environment = env
        return (fresh, env)
    }

    /// The JSON ↔ Lua bridge. Input that parses as JSON goes into Lua and must come back equal; anything else
    /// runs as a Lua chunk under a small budget and whatever it returns (cycles, functions, metatables, odd
    /// keys, deep nesting) is converted back: errors are fine, crashes and a changed stack are not.
    public static func luaBridge(_ bytes: UnsafeRawBufferPointer) {
        guard let (state, env) = luaState() else { return }
        let top = state.top
        defer { precondition(state.top == top, "the bridge left values on the Lua stack") }
        if let value = try? JSONReader.parse(bytes.bindMemory(to: UInt8.self)) {
            guard let reference = try? state.makeReference(value) else { return }  // too deep: an error, fine
            defer { state.release(reference) }
            guard let back = try? state.value(of: reference) else {
                preconditionFailure("a value that went into Lua did not come back")
            }
            precondition(back == value, "a JSON → Lua → JSON round trip changed the value")
            // An object also as a rule's event is passed: a lazy table, read back whole without being touched.
            if case .object(let object) = value,
                let echo = try? state.load("return ...", chunkName: "echo.lua", environment: env)
            {
                defer { state.release(echo) }
                if let lazyBack = try? state.call(echo, arguments: [.object(object, adding: [])]) {
                    precondition(lazyBack == [value], "a lazy event read back whole differs from its payload")
                }
            }
            return
        }
        guard let chunk = try? state.load(Array(bytes), chunkName: "fuzz.lua", environment: env) else { return }
        defer { state.release(chunk) }
        // The chunk gets a lazy event as `...`, to poke at (pairs, next, rawset, setmetatable, nested tables).
        _ = try? state.call(
            chunk, arguments: [.object(fuzzEvent, adding: [JSONObject.Member(key: "kind", value: "x")])])
    }

    /// The event fuzzed chunks get: scalars, a nested object, an array, an empty object, a null.
    static let fuzzEvent = JSONObject([
        JSONObject.Member(key: "call_id", value: "c-1"), JSONObject.Member(key: "n", value: 7),
        JSONObject.Member(key: "ok", value: true), JSONObject.Member(key: "none", value: .null),
        JSONObject.Member(key: "vars", value: ["a": "b", "deep": ["x": [1, 2, ["y": "z"]]]]),
        JSONObject.Member(key: "list", value: ["p", 1.5, [:], []]), JSONObject.Member(key: "kind", value: "payload"),
    ])

    /// Runs `body` on every file named (a directory: every file in it), as libFuzzer runs a corpus. Used
    /// when a target is built without the fuzzer and by the regression tests. Returns how many ran.
    @discardableResult
    public static func replay(_ paths: [String], _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        var count = 0
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            let files =
                isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" }
                : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { body($0) }
                count += 1
            }
        }
        return count
    }
}
