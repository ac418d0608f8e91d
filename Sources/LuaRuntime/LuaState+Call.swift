import CLua
import CLuaShim
public import JSONCore

extension LuaState {
    // MARK: Loading

    /// Compiles a text chunk whose globals live in `environment`. Binary chunks are refused.
    /// - Parameters:
    ///   - source: Lua source text.
    ///   - chunkName: the name errors and tracebacks show, usually the file path (`rules/crm.lua`).
    /// - Returns: a reference to the compiled chunk, to pass to `call(_:_:)`.
    /// - Throws: `LuaError.Kind.syntax` with the file and line.
    public func load(_ source: String, chunkName: String, environment: LuaReference) throws(LuaError)
        -> LuaReference
    {
        try load(Array(source.utf8), chunkName: chunkName, environment: environment)
    }

    /// Compiles a text chunk given as bytes. Stack effect: none.
    public func load(_ source: [UInt8], chunkName: String, environment: LuaReference) throws(LuaError)
        -> LuaReference
    {
        push(environment)
        let name = "@" + chunkName
        let status = source.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                name.withCString { cName in
                    sb_load_text(L, chars.baseAddress, chars.count, cName, -1)
                }
            }
        }
        if status != LUA_OK {
            let message = stack.string(at: -1) ?? "could not load the chunk"
            sb_pop(L, 2)
            var error = LuaError.parse(kind: status == LUA_ERRMEM ? .memory : .syntax, raw: message)
            if error.chunk == nil { error.chunk = chunkName }
            throw error
        }
        let reference = popReference()
        sb_pop(L, 1)
        return reference
    }

    // MARK: Calling

    /// Calls the referenced function with `arguments` under the budget, and returns its results.
    /// - Throws: `LuaError` with kind `.runtime`, `.instructions`, `.timeout`, `.memory` or `.conversion`,
    ///   the file and line, and Lua's traceback. The state stays usable (see `needsRebuild`).
    @discardableResult
    public func call(_ function: LuaReference, _ arguments: [JSONValue] = []) throws(LuaError) -> [JSONValue] {
        try call(function, arguments: arguments.map(LuaArgument.value))
    }

    /// Calls the referenced function as `call(_:_:)` does; an `.object` argument is a lazy table, as a rule's
    /// event is (see `LuaArgument`).
    @discardableResult
    public func call(_ function: LuaReference, arguments: [LuaArgument]) throws(LuaError) -> [JSONValue] {
        let base = try callLeavingResults(function, arguments)
        defer { lua_settop(L, base) }
        var results: [JSONValue] = []
        let top = lua_gettop(L)
        if top > base {
            for i in (base + 1)...top {
                results.append(try stack.value(at: i, maxDepth: limits.maxValueDepth, root: "result #\(i - base)"))
            }
        }
        return results
    }

    /// Loads and runs a chunk in `environment`, returning what it returns.
    @discardableResult
    public func run(_ source: String, chunkName: String, environment: LuaReference) throws(LuaError) -> [JSONValue] {
        let chunk = try load(source, chunkName: chunkName, environment: environment)
        defer { release(chunk) }
        return try call(chunk)
    }

    /// Pushes the function and its arguments and calls it; its results are left above the returned base.
    func callLeavingResults(_ function: LuaReference, _ arguments: [LuaArgument]) throws(LuaError) -> Int32 {
        let base = lua_gettop(L)
        guard lua_checkstack(L, Int32(clamping: arguments.count + 2)) != 0 else {
            throw LuaError(.conversion, "too many arguments")
        }
        push(function)
        for argument in arguments {
            do { try stack.push(argument, maxDepth: limits.maxValueDepth) } catch {
                lua_settop(L, base)
                throw error
            }
        }
        try callPushed(argumentCount: Int32(arguments.count), base: base)
        return base
    }

    /// Calls the function under `argumentCount` pushed arguments, leaving its results above `base`.
    /// Stack effect on success: the function and arguments are replaced by the results. On error the stack
    /// is reset to `base`.
    func callPushed(argumentCount: Int32, base: Int32) throws(LuaError) {
        sb_budget_begin(L, Int64(limits.instructionLimit), timeLimitSeconds, 0)
        let status = sb_pcall_traceback(L, argumentCount, LUA_MULTRET)
        let killed = sb_budget_end(L)
        guard status != LUA_OK || killed != SB_KILL_NONE else { return }

        let raw = status == LUA_OK ? Self.lateKill : stack.string(at: -1) ?? "(error object is not a string)"
        lua_settop(L, base)
        throw failure(status: status == LUA_OK ? LUA_ERRMEM : status, killed: killed, message: raw)
    }
}

extension LuaState {
    /// What a kill says when the run returned, or suspended, before it could be stopped: its allocator refused
    /// memory, Lua's emergency collection then let the allocation through, and the run ended before the hook
    /// that raises the kill came round (it comes every `SB_HOOK_STRIDE` instructions). It fails as any kill.
    static let lateKill = "the run went over the limit and ended before it could be stopped"

    /// The error for a call or resume that failed with `status` (and was killed for `killed`, SB_KILL_*).
    /// After a kill or an out-of-memory error the state is collected, and flagged `needsRebuild` when it
    /// still holds most of its memory cap.
    func failure(status: Int32, killed: Int32, message: String) -> LuaError {
        let kind: LuaError.Kind
        switch killed {
        case SB_KILL_INSTRUCTIONS: kind = .instructions
        case SB_KILL_DEADLINE: kind = .timeout
        case SB_KILL_MEMORY: kind = .memory
        default: kind = status == LUA_ERRMEM ? .memory : .runtime
        }
        var error = LuaError.parse(kind: kind, raw: message)
        if kind == .memory, !error.message.contains("memory limit exceeded") {
            error.message = "memory limit exceeded (\(limits.memoryLimit) bytes): \(error.message)"
        }
        if killed != SB_KILL_NONE || status == LUA_ERRMEM {
            collectGarbage()
            if memoryUsed > limits.memoryLimit / 10 * 9 { needsRebuild = true }
        }
        return error
    }

    /// Calls the referenced function and keeps each result in the registry as it is (functions and tables
    /// included), for the host to call or read later. Release them with `release(_:)`.
    public func callReferences(_ function: LuaReference, _ arguments: [JSONValue] = []) throws(LuaError)
        -> [LuaReference]
    {
        let base = try callLeavingResults(function, arguments.map(LuaArgument.value))
        var references: [LuaReference] = []
        while lua_gettop(L) > base { references.append(popReference()) }
        return references.reversed()
    }

    /// Calls the referenced function with referenced values as arguments (tables and functions included)
    /// and keeps each result in the registry.
    public func callReferences(_ function: LuaReference, referenceArguments: [LuaReference]) throws(LuaError)
        -> [LuaReference]
    {
        let base = lua_gettop(L)
        guard lua_checkstack(L, Int32(clamping: referenceArguments.count + 2)) != 0 else {
            throw LuaError(.conversion, "too many arguments")
        }
        push(function)
        for argument in referenceArguments { push(argument) }
        try callPushed(argumentCount: Int32(referenceArguments.count), base: base)
        var references: [LuaReference] = []
        while lua_gettop(L) > base { references.append(popReference()) }
        return references.reversed()
    }

    /// Converts a value into Lua and keeps it in the registry. Stack effect: none.
    public func makeReference(_ value: JSONValue) throws(LuaError) -> LuaReference {
        try stack.push(value, maxDepth: limits.maxValueDepth)
        return popReference()
    }

    /// The Lua type name of a referenced value ("function", "table"…).
    public func typeName(of reference: LuaReference) -> String {
        push(reference)
        defer { sb_pop(L, 1) }
        return String(cString: lua_typename(L, lua_type(L, -1)))
    }
}
