import CLua
import CLuaShim
public import JSONCore

/// One run of a Lua function in a coroutine of its own, which may suspend on host functions (HTTP) and be
/// resumed later while other coroutines run. Its budget (instructions, Lua running time) spans all resumes.
///
/// A coroutine owns the state it was started in: the state (and so its `lua_State`) lives at least until
/// every coroutine started in it is gone, whatever its owner does meanwhile (a rebuild after a kill, a
/// reload). `resume` refuses a state other than its own, so no coroutine ever runs on a closed state or
/// through another state's main thread.
public final class LuaCoroutine {
    /// The state this coroutine's thread belongs to; held strongly so the state outlives its coroutines.
    public let state: LuaState
    let threadReference: LuaReference
    let thread: OpaquePointer
    // Read and written on each resume by the state's one user (see `LuaState`): no dynamic exclusivity checks.
    @exclusivity(unchecked) var argumentCount: Int32
    @exclusivity(unchecked) var started = false
    /// Instructions still allowed across all resumes.
    @exclusivity(unchecked) public internal(set) var instructionsLeft: Int
    /// Lua running time still allowed across all resumes (time spent suspended does not count).
    public var timeLeft: Duration { .seconds(secondsLeft) }
    /// `timeLeft` as the budget counts it (a Double, read from the budget's own clock after each resume).
    @exclusivity(unchecked) var secondsLeft: Double
    @exclusivity(unchecked) public internal(set) var isFinished = false
    /// When the first resume's deadline counts from (`LuaState.clock()` seconds); 0: from that resume.
    let startedAt: Double
    /// When the last resume returned (`LuaState.clock()` seconds, the reading its budget took); 0 before any.
    @exclusivity(unchecked) public internal(set) var lastResumeEnded: Double = 0
    /// When a resume failed: the line its entry function had reached (the frame that called whatever
    /// failed), if known.
    public internal(set) var failedAtEntryLine: Int? = nil

    init(
        state: LuaState, threadReference: LuaReference, thread: OpaquePointer, argumentCount: Int32,
        startedAt: Double
    ) {
        self.state = state
        self.threadReference = threadReference
        self.thread = thread
        self.argumentCount = argumentCount
        self.instructionsLeft = state.limits.instructionLimit
        self.secondsLeft = state.timeLimitSeconds
        self.startedAt = startedAt
    }

    deinit {
        // A coroutine dropped while suspended (its run was cancelled) still holds its thread in the registry.
        if !isFinished { state.release(threadReference) }
    }

    /// Runs until the coroutine finishes or suspends; see `LuaState.resume(_:with:)`.
    public func resume(with values: [JSONValue] = []) throws(LuaError) -> LuaResumeResult {
        try state.resume(self, with: values)
    }
}

/// A value for Lua: any JSON value, or an object with a few members set over it (replacing members of the
/// same key) without copying the object first: a rule's event is the decoded payload plus `kind`, `name` and
/// the like, and copying its members to add them was a twentieth of the engine's time per event.
///
/// An `.object` becomes a lazy table (CLuaShim's lazy.c, `LazyPayload`): its members, and the added ones
/// (which hide its own of the same key), become Lua values when the script first reads them, and everything
/// that sees a table's raw contents (`pairs`, `next`, `rawget`, `rawset`, `getmetatable`, `setmetatable`,
/// the host reading it back) fills it in first.
public enum LuaArgument {
    case value(JSONValue)
    case object(JSONObject, adding: [JSONObject.Member])
}

/// What a resume ended with.
public enum LuaResumeResult: Equatable {
    /// The function returned these values; the coroutine is finished.
    case finished([JSONValue])
    /// A suspending host function asked for this; resume with its results.
    case suspended(JSONValue)
}

extension LuaState {
    /// Prepares `function(arguments...)` in a new coroutine; nothing runs until `resume`.
    public func startCoroutine(_ function: LuaReference, _ arguments: [JSONValue]) throws(LuaError) -> LuaCoroutine {
        try startCoroutine(function, arguments: arguments.map(LuaArgument.value))
    }

    /// Prepares `function(arguments...)` in a new coroutine; nothing runs until `resume`.
    /// - Parameter startedAt: a reading of `LuaState.clock()` the caller has just taken: the run's time limit
    ///   counts from it (a clock read fewer per run). 0: from the first resume.
    public func startCoroutine(_ function: LuaReference, arguments: [LuaArgument], startedAt: Double = 0)
        throws(LuaError) -> LuaCoroutine
    {
        let (reference, thread) = try coroutineThread(calling: function, argumentCount: arguments.count)
        let threadStack = LuaStack(L: thread, strings: strings.table)
        for argument in arguments {
            do { try threadStack.push(argument, maxDepth: limits.maxValueDepth) } catch {
                release(reference)
                throw error
            }
        }
        return LuaCoroutine(
            state: self, threadReference: reference, thread: thread, argumentCount: Int32(arguments.count),
            startedAt: startedAt)
    }

    /// `startCoroutine(_:arguments:startedAt:)` with one argument (a rule's event or a tick's time), which
    /// needs no array made and freed for it on every run.
    public func startCoroutine(_ function: LuaReference, argument: LuaArgument, startedAt: Double = 0)
        throws(LuaError) -> LuaCoroutine
    {
        let (reference, thread) = try coroutineThread(calling: function, argumentCount: 1)
        do { try LuaStack(L: thread, strings: strings.table).push(argument, maxDepth: limits.maxValueDepth) } catch {
            release(reference)
            throw error
        }
        return LuaCoroutine(
            state: self, threadReference: reference, thread: thread, argumentCount: 1, startedAt: startedAt)
    }

    /// A thread for a new coroutine (a spare one when there is one), with `function` pushed on it and room
    /// for its arguments, and the registry reference that keeps it alive.
    private func coroutineThread(calling function: LuaReference, argumentCount: Int) throws(LuaError)
        -> (LuaReference, OpaquePointer)
    {
        let reference: LuaReference
        let thread: OpaquePointer
        if let spare = spareThreads.popLast() {
            (reference, thread) = spare
        } else {
            guard let created = lua_newthread(L) else { throw LuaError(.memory, "could not create a coroutine") }
            thread = created
            reference = popReference()
        }
        sb_mark_host_thread(thread)
        guard lua_checkstack(thread, Int32(clamping: argumentCount + 2)) != 0 else {
            release(reference)
            throw LuaError(.conversion, "too many arguments")
        }
        sb_getref(L, reference.ref)  // keep the thread alive while we fill it
        push(function)
        lua_xmove(L, thread, 1)
        sb_pop(L, 1)
        return (reference, thread)
    }

    /// Runs the coroutine until it finishes or suspends. `values` are the results of the suspending call it
    /// is resumed from (ignored on the first resume); a top-level `.null` among them is `nil`.
    /// - Throws: `LuaError` as `call` does; the coroutine is then finished.
    public func resume(_ coroutine: LuaCoroutine, with values: [JSONValue] = []) throws(LuaError) -> LuaResumeResult {
        precondition(!coroutine.isFinished, "resumed a finished coroutine")
        precondition(coroutine.state === self, "resumed a coroutine through a state it was not started in")
        let thread = coroutine.thread
        sb_touch(L)
        sb_touch(thread)
        let threadStack = LuaStack(L: thread, strings: strings.table)
        var count = coroutine.argumentCount
        if coroutine.started {
            lua_settop(thread, 0)
            guard lua_checkstack(thread, Int32(clamping: values.count + 1)) != 0 else {
                finish(coroutine)
                throw LuaError(.conversion, "too many values")
            }
            for value in values {
                if value == .null {  // as with host function results: a missing value is nil
                    lua_pushnil(thread)
                    continue
                }
                do { try threadStack.push(value, maxDepth: limits.maxValueDepth) } catch {
                    finish(coroutine)
                    throw error
                }
            }
            count = Int32(values.count)
        }
        let first = !coroutine.started
        coroutine.started = true

        sb_budget_begin(
            L, Int64(coroutine.instructionsLeft), max(coroutine.secondsLeft, 0.000_001),
            first ? coroutine.startedAt : 0)
        var resultCount: Int32 = 0
        let status = lua_resume(thread, L, count, &resultCount)
        let left = sb_budget_instructions_left(L)
        coroutine.secondsLeft = sb_budget_seconds_left(L)
        coroutine.lastResumeEnded = sb_budget_last_clock(L)
        let killed = sb_budget_end(L)
        coroutine.instructionsLeft = Int(max(left, 0))
        if killed != SB_KILL_NONE && (status == LUA_OK || status == LUA_YIELD) {
            finish(coroutine)
            throw failure(status: LUA_ERRMEM, killed: killed, message: Self.lateKill)
        }

        switch status {
        case LUA_OK:
            defer { finish(coroutine, reusingThread: true) }
            var results: [JSONValue] = []
            let top = lua_gettop(thread)
            let first = top - resultCount + 1
            if resultCount > 0 {
                for i in first...top {
                    results.append(
                        try threadStack.value(at: i, maxDepth: limits.maxValueDepth, root: "result #\(i - first + 1)"))
                }
            }
            return .finished(results)
        case LUA_YIELD:
            let top = lua_gettop(thread)
            guard resultCount == 2, sb_is_host_suspension(thread, top - 1) != 0 else {
                finish(coroutine)
                throw LuaError(
                    .runtime,
                    "coroutine.yield was called outside a coroutine the rule created (the rule itself cannot yield)")
            }
            do {
                let request = try threadStack.value(at: top, maxDepth: limits.maxValueDepth, root: "request")
                lua_settop(thread, 0)
                return .suspended(request)
            } catch {
                finish(coroutine)
                throw error
            }
        default:
            let message = threadStack.string(at: -1) ?? "(error object is not a string)"
            let line = sb_entry_line(thread)
            coroutine.failedAtEntryLine = line > 0 ? Int(line) : nil
            luaL_traceback(L, thread, nil, 0)
            let traceback = stack.string(at: -1)
            sb_pop(L, 1)
            // Where it failed, read while the thread's stack is still there (a memory error from the allocator
            // carries no position of its own).
            var position: String? = nil
            if killed == SB_KILL_MEMORY || status == LUA_ERRMEM, sb_push_position(L, thread) != 0 {
                position = stack.string(at: -1)
                sb_pop(L, 1)
            }
            // Finished before `failure` collects garbage, so the dead run's locals can be freed and the state
            // is only flagged for a rebuild when memory really stays held (module-level data).
            finish(coroutine)
            var error = failure(status: status, killed: killed, message: message)
            if error.chunk == nil, let position {
                (error.chunk, error.line) = LuaError.location(in: position)
                error.message = position + " " + error.message
            }
            error.traceback = traceback
            throw error
        }
    }

    /// Abandons a coroutine (finished or suspended) and lets it be collected.
    public func finish(_ coroutine: LuaCoroutine) {
        finish(coroutine, reusingThread: false)
    }

    /// With `reusingThread` (the coroutine's function returned, so its thread is empty and ready to start
    /// another), the thread is kept for the next coroutine when there is room.
    func finish(_ coroutine: LuaCoroutine, reusingThread: Bool) {
        precondition(coroutine.state === self, "finished a coroutine through a state it was not started in")
        guard !coroutine.isFinished else { return }
        coroutine.isFinished = true
        if reusingThread && spareThreads.count < Self.maximumSpareThreads {
            lua_settop(coroutine.thread, 0)
            spareThreads.append((coroutine.threadReference, coroutine.thread))
        } else {
            release(coroutine.threadReference)
        }
    }
}
