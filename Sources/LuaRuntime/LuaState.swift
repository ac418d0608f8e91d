import CLua
import CLuaShim
public import JSONCore

/// Limits applied to every call into Lua code. All are per call except `memoryLimit`, which caps the state.
public struct LuaLimits: Sendable, Hashable {
    /// Bytes the whole state may hold while script code runs. Default 64 MiB.
    public var memoryLimit: Int
    /// VM instructions one call may run (checked every 1,000). Default 10,000,000.
    public var instructionLimit: Int
    /// Wall-clock time one call may take. Default 1 s.
    public var timeLimit: Duration
    /// Deepest table nesting converted between Lua and Swift. Default 64.
    public var maxValueDepth: Int

    public init(
        memoryLimit: Int = 64 << 20, instructionLimit: Int = 10_000_000, timeLimit: Duration = .seconds(1),
        maxValueDepth: Int = 64
    ) {
        self.memoryLimit = memoryLimit
        self.instructionLimit = instructionLimit
        self.timeLimit = timeLimit
        self.maxValueDepth = maxValueDepth
    }

    public static let `default` = LuaLimits()
}

/// A reference to a Lua value (a function or an environment table) kept alive in the state's registry.
/// Valid only with the state that made it, until `release(_:)`.
public struct LuaReference: Hashable, Sendable {
    let ref: Int32
}

/// Owner of one sandboxed `lua_State`: all access to Lua goes through here.
///
/// Not `Sendable`: a state is confined to one actor or thread at a time. Every call into script code runs
/// under `pcall` with a traceback handler, an instruction budget, a deadline and the memory cap; the state
/// stays usable after an error or a kill unless `needsRebuild` says otherwise.
/// Being confined, the properties used on every call skip Swift's dynamic exclusivity checks
/// (`@exclusivity(unchecked)`; about 70 instructions per access).
public final class LuaState {
    let L: OpaquePointer
    @exclusivity(unchecked) public private(set) var limits: LuaLimits
    /// `limits.timeLimit` in seconds, worked out when the limits are set: every call and coroutine starts
    /// its deadline from it, and `Duration.components` costs about 185 instructions each time.
    @exclusivity(unchecked) private(set) var timeLimitSeconds: Double
    /// Host functions stay alive as long as the state: Lua holds them as raw pointers.
    var hostFunctions: [HostFunctionBox] = []
    /// Lua strings made once for the keys and short values pushed on every call (`LuaStringCache`).
    let strings = LuaStringCache()
    /// Set after a kill that left the state holding most of its memory cap: the owner should discard it.
    public internal(set) var needsRebuild = false
    /// Threads of coroutines that returned normally, kept for the next `startCoroutine`: an empty thread
    /// whose last function returned starts a new one like a fresh thread, without allocating it, registering
    /// it and collecting it again.
    @exclusivity(unchecked) var spareThreads: [(reference: LuaReference, thread: OpaquePointer)] = []
    /// Most spare threads kept (one per run in flight is the most a worker reuses at once).
    static let maximumSpareThreads = 8

    /// Creates a sandboxed state (see the README's "Sandbox" for what scripts can reach).
    /// - Throws: `LuaError.Kind.setup` if the state cannot be created.
    public init(limits: LuaLimits = .default) throws(LuaError) {
        LuaState.installDispatch
        LazyPayload.installCallbacks
        guard let L = sb_newstate(limits.memoryLimit) else {
            throw LuaError(.setup, "could not create a Lua state (out of memory)")
        }
        self.L = L
        self.limits = limits
        self.timeLimitSeconds = Self.seconds(limits.timeLimit)
        let status = sb_open_sandbox(L)
        if status != LUA_OK {
            sb_close(L)
            throw LuaError(.setup, "could not open the sandboxed Lua libraries (status \(status))")
        }
    }

    deinit {
        sb_close(L)
    }

    /// The clock budgets' deadlines count on (CLOCK_MONOTONIC), in seconds: for timing a run with the same
    /// readings its budget takes (`startCoroutine(_:arguments:startedAt:)`, `LuaCoroutine.lastResumeEnded`).
    @inline(__always) public static func clock() -> Double { sb_clock() }

    static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    /// Changes the limits used by later calls.
    public func setLimits(_ limits: LuaLimits) {
        self.limits = limits
        timeLimitSeconds = Self.seconds(limits.timeLimit)
        sb_set_memory_limit(L, limits.memoryLimit)
    }

    /// Number of values on the main thread's stack (0 between calls).
    public var top: Int { Int(lua_gettop(L)) }

    /// Bytes the state holds now.
    public var memoryUsed: Int { sb_memory_used(L) }

    /// Runs a full garbage collection.
    public func collectGarbage() { sb_collect_garbage(L) }

    /// Drops a reference; the value may then be collected.
    public func release(_ reference: LuaReference) {
        sb_unref(L, reference.ref)
    }

    /// Pushes the referenced value. Stack effect: +1.
    func push(_ reference: LuaReference) {
        sb_getref(L, reference.ref)
    }

    /// Pops the top value into a new registry reference. Stack effect: -1.
    func popReference() -> LuaReference {
        LuaReference(ref: sb_ref(L))
    }

    // MARK: Environments

    /// Creates a fresh sandbox environment: private copies of the allowed libraries, its own `_G` and `load`,
    /// and an error when code reads a global that does not exist. Stack effect: none.
    public func newEnvironment() throws(LuaError) -> LuaReference {
        let status = sb_new_environment(L)
        if status != LUA_OK {
            let message = stack.string(at: -1) ?? "unknown error"
            sb_pop(L, 1)
            throw LuaError(.setup, "could not create an environment: \(message)")
        }
        return popReference()
    }

    /// Sets `name` in the environment to a value. Stack effect: none.
    /// - Throws: `LuaError.Kind.conversion` if the value is nested deeper than `limits.maxValueDepth`.
    public func setGlobal(_ name: String, _ value: JSONValue, in environment: LuaReference) throws(LuaError) {
        push(environment)
        defer { sb_pop(L, 1) }
        try stack.push(value, maxDepth: limits.maxValueDepth)
        stack.setField(-2, name)
    }

    /// Sets `name` in the environment to a table of host functions (`log`, `json`…). Stack effect: none.
    public func setGlobal(_ name: String, functions: [String: HostFunction], in environment: LuaReference) {
        push(environment)
        lua_createtable(L, 0, Int32(functions.count))
        for (key, body) in functions.sorted(by: { $0.key < $1.key }) {
            pushHostFunction(name: "\(name).\(key)", .values(body))
            stack.setField(-2, key)
        }
        stack.setField(-2, name)
        sb_pop(L, 1)
    }

    /// Sets `name` in the environment to one host function. Stack effect: none.
    public func setGlobal(_ name: String, function: @escaping HostFunction, in environment: LuaReference) {
        push(environment)
        pushHostFunction(name: name, .values(function))
        stack.setField(-2, name)
        sb_pop(L, 1)
    }

    /// Reads a global from the environment (without triggering the undefined-global error).
    public func global(_ name: String, in environment: LuaReference) throws(LuaError) -> JSONValue {
        push(environment)
        defer { sb_pop(L, 1) }
        stack.pushString(name)
        lua_rawget(L, -2)
        defer { sb_pop(L, 1) }
        return try stack.value(at: -1, maxDepth: limits.maxValueDepth)
    }

    var stack: LuaStack { LuaStack(L: L, strings: strings.table) }
}
