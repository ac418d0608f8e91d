import Foundation
import JSONCore
import LuaRuntime
import Testing

@Suite struct CoroutineTests {
    /// A state with `fetch(x)`, a suspending host function whose request is its argument.
    func makeState(_ limits: LuaLimits = .default) throws -> (LuaState, LuaReference) {
        let state = try LuaState(limits: limits)
        try state.installGlobal("fetch", .suspending { args in ["wants": args[1]] })
        let env = try state.newEnvironment()
        return (state, env)
    }

    func function(_ source: String, in state: LuaState, env: LuaReference) throws -> LuaReference {
        let chunk = try state.load(source, chunkName: "co.lua", environment: env)
        return try state.callReferences(chunk)[0]
    }

    @Test func suspendsOnHostCallsAndResumesWithTheirResults() throws {
        let (state, env) = try makeState()
        let f = try function(
            "return function(a) local r = fetch(a) local s = fetch(r .. '!') return s, 'done' end", in: state, env: env)
        let co = try state.startCoroutine(f, ["x"])
        #expect(try state.resume(co) == .suspended(["wants": "x"]))
        #expect(try state.resume(co, with: ["y"]) == .suspended(["wants": "y!"]))
        #expect(try state.resume(co, with: ["z"]) == .finished(["z", "done"]))
        #expect(co.isFinished)
        #expect(state.top == 0)
    }

    /// A coroutine that fails tells the line its entry function had reached: the call that failed, however
    /// deep the error, after a suspension too. A coroutine that finishes has none.
    @Test func aFailedCoroutineTellsTheLineItsEntryFunctionReached() throws {
        let (state, env) = try makeState()
        let f = try function(
            """
            local function deep(n) if n == 0 then error("deep") end return deep(n - 1) end
            local function forever(n) return 1 + forever(n + 1) end
            return function(mode)
              fetch(mode)
              if mode == "deep" then
                deep(50)
              elseif mode == "overflow" then
                forever(0)
              end
              return mode
            end
            """, in: state, env: env)
        for (mode, line) in [("deep", 6), ("overflow", 8)] {
            let co = try state.startCoroutine(f, [.string(mode)])
            #expect(try co.resume() == .suspended(["wants": .string(mode)]))
            #expect(throws: LuaError.self) { try co.resume(with: [.null]) }
            #expect(co.failedAtEntryLine == line, "\(mode)")
        }
        let fine = try state.startCoroutine(f, ["fine"])
        _ = try fine.resume()
        #expect(try fine.resume(with: [.null]) == .finished(["fine"]))
        #expect(fine.failedAtEntryLine == nil)
    }

    /// A coroutine whose function returned leaves its thread for the next one, which starts clean: no values
    /// left on it, still a rule's own thread (it can suspend), still under the budget. A thread that
    /// failed is never reused, and a script that kept a finished thread cannot disturb the next run on it.
    @Test func aFinishedCoroutinesThreadStartsTheNextOneClean() throws {
        let (state, env) = try makeState(LuaLimits(instructionLimit: 300_000))
        let f = try function(
            """
            kept = nil
            return function(mode, ...)
              local me = tostring(coroutine.running())
              if mode == "keep" then kept = coroutine.running() return me, select("#", ...) end
              if mode == "close" then return coroutine.close(kept) end
              if mode == "wait" then return me, fetch("w") end
              if mode == "loop" then while true do end end
              if mode == "fail" then error("no") end
              return me, select("#", ...)
            end
            """, in: state, env: env)
        func run(_ arguments: [JSONValue], with results: [[JSONValue]] = []) throws -> (LuaCoroutine, [JSONValue]) {
            let co = try state.startCoroutine(f, arguments)
            var step = try co.resume()
            for values in results {
                guard case .suspended = step else { break }
                step = try co.resume(with: values)
            }
            guard case .finished(let out) = step else { throw LuaError(.runtime, "did not finish: \(step)") }
            return (co, out)
        }
        let (first, one) = try run(["keep", 1, 2, 3])
        #expect(one[1] == 3 && first.failedAtEntryLine == nil)
        let thread = one[0]
        // The next coroutine runs on the same thread, with only its own arguments.
        let (_, two) = try run(["plain"])
        #expect(two == [thread, 0])
        // It is still the rule's own thread: a host function can suspend it.
        #expect(try run(["wait"], with: [["back"]]).1 == [thread, "back"])
        // A rule that kept it cannot resume or close it, in the run now on it or from another run's thread.
        let waiting = try state.startCoroutine(f, ["wait"])
        #expect(try waiting.resume() == .suspended(["wants": "w"]))
        let other = try state.startCoroutine(f, ["close"])
        #expect {
            _ = try other.resume()
        } throws: { ($0 as? LuaError)?.message.contains("cannot resume or close the coroutine it runs in") == true }
        #expect(try waiting.resume(with: ["still"]) == .finished([thread, "still"]))
        #expect(try run(["plain", "x"]).1 == [thread, 1])
        // The budget holds on a reused thread; a thread that failed goes, and the next run gets another.
        #expect(throws: LuaError.self) { try run(["loop"]) }
        #expect(throws: LuaError.self) { try run(["fail"]) }
        let after = try run(["plain"]).1
        #expect(after[0] != thread && after[1] == 0)
        #expect(state.top == 0)
    }

    /// The deadline counts only the time Lua runs: a coroutine suspended for longer than its whole limit still
    /// finishes, and what its resumes ran is taken off what is left.
    @Test func timeSpentSuspendedDoesNotCountAgainstTheDeadline() async throws {
        let (state, env) = try makeState(LuaLimits(instructionLimit: Int.max / 2, timeLimit: .seconds(1)))
        let f = try function(
            "return function() local n = 0 for i = 1, 1000 do n = n + i end fetch(n) for i = 1, 1000 do n = n + i end return n end",
            in: state, env: env)
        let co = try state.startCoroutine(f, [])
        #expect(co.timeLeft == .seconds(1))
        #expect(try co.resume() == .suspended(["wants": 500_500]))
        let afterFirst = co.timeLeft
        #expect(afterFirst < .seconds(1) && afterFirst > .zero)
        // The suspension itself, longer than the whole limit. (Not `Thread.sleep`: that held one of the threads
        // Swift's tasks share, two on a 2-core machine, for the whole second while every other test ran.)
        try await Task.sleep(for: .milliseconds(1100))
        #expect(try co.resume(with: [0]) == .finished([1_001_000]))
        #expect(co.timeLeft < afterFirst && co.timeLeft > .zero)
    }

    /// A run that read the clock when it started passes that reading (`startedAt`): its first resume's deadline
    /// counts from it, so time spent before the first resume counts too. Each resume keeps the clock's reading
    /// it ended at (`lastResumeEnded`), which a run's outcome uses as its end.
    @Test func theDeadlineCountsFromTheRunsOwnStartAndEachResumeKeepsItsEnd() throws {
        let (state, env) = try makeState(LuaLimits(instructionLimit: Int.max / 2, timeLimit: .milliseconds(500)))
        // The deadline is checked every few thousand instructions: the loop reaches a check.
        let f = try function(
            "return function(x, spin) local n = 0 for i = 1, spin do n = n + i end fetch(x) return x end", in: state,
            env: env)

        // Started (by its own reading) longer ago than its whole limit: killed at its first check, for its
        // deadline, though it ran for far less than the limit itself.
        let late = try state.startCoroutine(
            f, arguments: [.value("late"), .value(100_000)], startedAt: LuaState.clock() - 1)
        #expect {
            try late.resume()
        } throws: { ($0 as? LuaError)?.kind == .timeout }

        // Started just now: it runs, and each resume's end lies between the readings taken around it.
        let before = LuaState.clock()
        let run = try state.startCoroutine(f, arguments: [.value("now"), .value(100_000)], startedAt: before)
        #expect(run.lastResumeEnded == 0)
        #expect(try run.resume() == .suspended(["wants": "now"]))
        let suspendedAt = run.lastResumeEnded
        #expect(suspendedAt >= before && suspendedAt <= LuaState.clock())
        #expect(try run.resume(with: [.null]) == .finished(["now"]))
        #expect(run.lastResumeEnded >= suspendedAt && run.lastResumeEnded <= LuaState.clock())
        #expect(state.top == 0)
    }

    /// A suspended coroutine keeps its state open after its owner lets go of the state (a rebuild or a
    /// reload while a run waits on HTTP): the run finishes in the state it started in.
    @Test func aSuspendedCoroutineKeepsItsStateAlive() throws {
        var co: LuaCoroutine? = nil
        weak var weakState: LuaState? = nil
        do {
            let (state, env) = try makeState()
            weakState = state
            let f = try function(
                "local kept = {} return function(a) kept[1] = a local r = fetch(a) return r .. kept[1] end",
                in: state, env: env)
            co = try state.startCoroutine(f, ["x"])
            #expect(try co?.resume() == .suspended(["wants": "x"]))
        }
        #expect(weakState != nil, "the coroutine must hold its state")
        // Other states come and go meanwhile, as a rebuild makes them.
        for _ in 0..<3 { _ = try makeState() }
        #expect(try co?.resume(with: ["y"]) == .finished(["yx"]))
        co = nil
        #expect(weakState == nil, "the state closes once its last coroutine is gone")
    }

    /// A suspended coroutine that is dropped without finishing (its run was cancelled) releases its thread.
    @Test func aDroppedSuspendedCoroutineReleasesItsThread() throws {
        let (state, env) = try makeState()
        let f = try function("return function(a) return fetch(a) end", in: state, env: env)
        state.collectGarbage()
        let before = state.memoryUsed
        for i in 0..<200 {
            let co = try state.startCoroutine(f, [.int(Int64(i))])
            _ = try co.resume()
        }
        state.collectGarbage()
        #expect(state.memoryUsed < before + 16_384, "threads of dropped coroutines were kept")
    }

    /// The memory cap's error has no position of its own (the allocator raises it): it is given the line.
    @Test func aMemoryKillNamesTheLine() throws {
        let (state, env) = try makeState(LuaLimits(memoryLimit: 4 << 20))
        let f = try function(
            "local keep = {}\nreturn function()\n  for i = 1, 1e7 do\n    keep[#keep + 1] = string.rep('x', 256) .. i\n  end\nend",
            in: state, env: env)
        let co = try state.startCoroutine(f, [])
        do {
            _ = try co.resume()
            Issue.record("expected a kill")
        } catch {
            #expect(error.kind == .memory)
            #expect(error.chunk == "co.lua")
            // The allocator fails on line 4, or the budget hook catches the kill first at the loop on line 3.
            #expect(error.line == 3 || error.line == 4)
            #expect(error.message.hasPrefix("co.lua:\(error.line ?? 0): memory limit exceeded"), "\(error.message)")
        }
    }

    /// A run's garbage is collected young. With megabytes that live as long as the state (as loaded rules and
    /// their modules do), runs that each leave some garbage never take the heap to one and a half times that:
    /// the incremental collector waits for it to double. After a full collection (the one after the rules are
    /// loaded, after a failed run, or a rule's own `collectgarbage()`) the collector is generational and the
    /// next young collection is as near as ever, not put off until as much as the full collection freed has
    /// been allocated again (Lua 5.4.4's generational mode, left alone, does that), whether the collector was
    /// still generational (old data dropped) or had fallen back to incremental after a fast-growing heap (the
    /// load's 4 MB, or 8 MB of litter in one run).
    @Test func aRunsGarbageIsCollectedYoungAfterAFullCollectionToo() throws {
        let (state, env) = try makeState()
        let f = try function(
            """
            local kept, dropped = {}, {}
            for i = 1, 20000 do kept[i] = string.rep('k', 64) .. i end
            for i = 1, 20000 do dropped[i] = string.rep('d', 64) .. i end
            return function(mode, n)
              if mode == 'drop' then
                dropped = nil
                return 0
              elseif mode == 'litter' then
                local litter = {}
                for i = 1, 80000 do litter[i] = string.rep('l', 64) .. i end
                return #litter
              elseif mode == 'collect' then
                collectgarbage()
                return 0
              end
              local garbage = {}
              for i = 1, 100 do garbage[i] = { i, tostring(i) .. n } end
              return #garbage + #kept
            end
            """, in: state, env: env)
        func highWater(_ mode: String = "work", runs: Int = 2_000) throws -> Int {
            var highest = 0
            for n in 0..<runs {
                let co = try state.startCoroutine(f, [.string(mode), .int(Int64(n))])
                guard case .finished = try state.resume(co) else { throw LuaError(.runtime, "a run suspended") }
                highest = max(highest, state.memoryUsed)
            }
            return highest
        }
        // As a rule worker does once its rules are loaded: loading 4 MB at once made the collector fall back to
        // incremental marking (each major collection freed too little), and runs then took the heap to twice
        // the live size, 9.8 MB here, before a collection found it steady.
        state.collectGarbage()
        let both = state.memoryUsed
        #expect(both > 4_000_000)
        #expect(try highWater() < both * 3 / 2, "young garbage waited for an old-generation collection")
        // Half the old data goes; the host's full collection frees it.
        _ = try highWater("drop", runs: 1)
        state.collectGarbage()
        let live = state.memoryUsed
        #expect(live < both * 2 / 3)
        #expect(try highWater() < live * 3 / 2, "after the host's full collection freed old data")
        // About 8 MB of garbage made at once, then the host's full collection.
        #expect(try highWater("litter", runs: 1) > live * 3)
        state.collectGarbage()
        #expect(try highWater() < live * 3 / 2, "after the host's full collection freed a burst")
        // The same by a rule's own collectgarbage().
        _ = try highWater("litter", runs: 1)
        _ = try highWater("collect", runs: 1)
        #expect(try highWater() < live * 3 / 2, "after a rule's collectgarbage()")
    }

    /// An allocation the memory cap refuses kills the run, even when Lua's emergency collection then lets it
    /// through and the run ends, suspends or leaves a `pcall` before the hook that raises kills comes round:
    /// about 2.4 MB of old garbage and a 1 MB string do not fit under 4 MB until the garbage is collected.
    @Test func aRefusedAllocationKillsTheRunHoweverItEnds() throws {
        let (state, env) = try makeState(LuaLimits(memoryLimit: 4 << 20))
        let f = try function(
            """
            local function nearTheCap()
              local t = {}
              for i = 1, 15000 do t[i] = string.rep('g', 100) .. i end
              t = nil
              return string.rep('y', 1 << 20)
            end
            local after = 0
            return function(mode)
              if mode == 'after' then return after end
              if mode == 'pcall' then
                local ok = pcall(nearTheCap)
                after = after + 1
                return ok
              end
              local s = nearTheCap()
              if mode == 'fetch' then fetch(#s) end
              return #s
            end
            """, in: state, env: env)
        for mode in ["return", "fetch", "pcall"] {
            for _ in 0..<3 {
                let co = try state.startCoroutine(f, [.string(mode)])
                do {
                    let result = try state.resume(co)
                    Issue.record("\(mode): expected a memory kill, the run gave \(result)")
                } catch {
                    #expect(error.kind == .memory, "\(mode): \(error.message)")
                    // Raised where the run called the host function, so the message says where.
                    if mode == "fetch" { #expect(error.line == 16, "\(error.message)") }
                }
                #expect(co.isFinished)
            }
        }
        #expect(try state.call(f, ["after"]) == [0], "code ran after a pcall that a kill should have left")
        // Called outside a coroutine too.
        let error = #expect(throws: LuaError.self) { try state.call(f, ["return"]) }
        #expect(error?.kind == .memory)
        // The state is usable afterwards.
        let g = try function("return function() return 'fine' end", in: state, env: env)
        #expect(try state.call(g, []) == ["fine"])
    }

    /// A rule's collectgarbage() counts against its instruction budget (a full collection takes time the count
    /// does not see): a loop of them is stopped at the budget, after about 100 with the default limit.
    @Test func aRulesCollectionsCountAgainstItsBudget() throws {
        let (state, env) = try makeState()
        let f = try function(
            """
            local n = 0
            return function(mode)
              if mode == 'count' then return n end
              while true do
                n = n + 1
                collectgarbage(mode)
              end
            end
            """, in: state, env: env)
        for mode in ["collect", "step"] {
            let error = #expect(throws: LuaError.self) { try state.call(f, [.string(mode)]) }
            #expect(error?.kind == .instructions, "\(mode): \(error?.message ?? "")")
        }
        let count = try state.call(f, ["count"]).first?.intValue ?? 0
        // 100 of 100,000 instructions each use a run's whole budget; the next one kills it.
        #expect(count >= 190 && count <= 210, "\(count) collections in two runs of 10,000,000 instructions")
    }

    @Test func manyCoroutinesInterleave() throws {
        let (state, env) = try makeState()
        let f = try function(
            "local n = 0 return function(a) n = n + 1 local r = fetch(a) return r + a end", in: state, env: env)
        let coroutines = try (1...50).map { try state.startCoroutine(f, [.int(Int64($0))]) }
        for (i, co) in coroutines.enumerated() {
            #expect(try state.resume(co) == .suspended(["wants": .int(Int64(i + 1))]))
        }
        for (i, co) in coroutines.enumerated() {
            #expect(try state.resume(co, with: [.int(1000)]) == .finished([.int(Int64(1001 + i))]))
        }
    }

    @Test func suspendingInsideAPcallWorks() throws {
        let (state, env) = try makeState()
        let f = try function("return function() local ok, v = pcall(fetch, 1) return ok, v end", in: state, env: env)
        let co = try state.startCoroutine(f, [])
        guard case .suspended = try state.resume(co) else { Issue.record("expected a suspension"); return }
        #expect(try state.resume(co, with: ["r"]) == .finished([true, "r"]))
    }

    @Test func suspendingWhereItCannotIsAClearError() throws {
        let (state, env) = try makeState()
        // While a chunk loads (a plain call, not a coroutine).
        do {
            try state.run("fetch(1)", chunkName: "load.lua", environment: env)
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("must be called from the rule's own code"))
        }
        // Inside a coroutine the script made.
        let f = try function(
            "return function() local co = coroutine.create(function() return fetch(1) end) return coroutine.resume(co) end",
            in: state, env: env)
        let co = try state.startCoroutine(f, [])
        guard case .finished(let out) = try state.resume(co) else { Issue.record("expected it to finish"); return }
        #expect(out.first == .bool(false))
        #expect(out.last?.stringValue?.contains("inside a coroutine the rule created") == true)
        // Inside a C callback that cannot yield.
        let g = try function(
            "return function() return pcall(table.sort, {2, 1}, function(a, b) fetch(1) return a < b end) end",
            in: state, env: env)
        let co2 = try state.startCoroutine(g, [])
        guard case .finished(let out2) = try state.resume(co2) else { Issue.record("expected it to finish"); return }
        #expect(out2.last?.stringValue?.contains("cannot wait for a result here") == true)
    }

    @Test func aBareYieldIsAnError() throws {
        let (state, env) = try makeState()
        let f = try function("return function() coroutine.yield(1) end", in: state, env: env)
        let co = try state.startCoroutine(f, [])
        #expect(throws: LuaError.self) { try state.resume(co) }
        #expect(co.isFinished)
    }

    @Test func theBudgetSpansResumes() throws {
        let (state, env) = try makeState(LuaLimits(instructionLimit: 300_000))
        let f = try function(
            "return function() for round = 1, 10 do for i = 1, 50000 do end fetch(round) end return 'finished' end",
            in: state, env: env)
        let co = try state.startCoroutine(f, [])
        var error: LuaError? = nil
        do {
            for _ in 0..<20 { _ = try state.resume(co, with: [1]) }
        } catch let e {
            error = e
        }
        #expect(error?.kind == .instructions)
        #expect(error?.traceback?.contains("co.lua") == true)
    }

    @Test func errorsCarryFileLineAndTraceback() throws {
        let (state, env) = try makeState()
        let f = try function("return function()\n  local x = nil\n  return x.y\nend", in: state, env: env)
        let co = try state.startCoroutine(f, [])
        do {
            _ = try state.resume(co)
            Issue.record("expected an error")
        } catch {
            #expect(error.kind == .runtime)
            #expect(error.chunk == "co.lua")
            #expect(error.line == 3)
            #expect(error.traceback?.hasPrefix("stack traceback:") == true)
        }
    }
}

@Suite struct GlobalsAndModulesTests {
    @Test func installedGlobalsReachEveryNewEnvironmentAsCopies() throws {
        let state = try LuaState()
        try state.installGlobal(
            "util", .table(["twice": .function { [.int(($0[1].intValue ?? 0) * 2)] }, "name": .value("u")]))
        let a = try state.newEnvironment()
        let b = try state.newEnvironment()
        try state.run("util.name = 'changed'", chunkName: "a.lua", environment: a)
        #expect(try state.run("return util.twice(4), util.name", chunkName: "b.lua", environment: b) == [8, "u"])
    }

    @Test func jsonMarkersForceListOrObject() throws {
        let state = try LuaState()
        try state.installGlobal(
            "json", .table(["array": .arrayMarker, "object": .objectMarker, "null": .value(.null)]))
        let env = try state.newEnvironment()
        let out = try state.run(
            "return json.array(), json.object(), json.array({1, 2}), {a = json.null}, json.null == json.null",
            chunkName: "j.lua", environment: env)
        #expect(out == [.array([]), .object(JSONObject()), [1, 2], ["a": .null], true])
    }

    @Test func requireLoadsOnlyGivenModulesOncePerState() throws {
        let state = try LuaState()
        try state.installRequire(modules: [
            "lib.phone": (
                "local M = {} count = (rawget(_G, 'count') or 0) + 1 M.count = count function M.digits(s) return (s:gsub('%D', '')) end return M",
                "rules/lib/phone.lua"
            ),
            "lib.bad": ("error('broken module')", "rules/lib/bad.lua"),
            "lib.a": ("return require 'lib.b'", "rules/lib/a.lua"),
            "lib.b": ("return require 'lib.a'", "rules/lib/b.lua"),
        ])
        let env = try state.newEnvironment()
        #expect(
            try state.run(
                "local p = require 'lib.phone' return p.digits('+1 (415) 555')", chunkName: "r.lua", environment: env)
                == ["1415555"])
        let other = try state.newEnvironment()
        #expect(
            try state.run(
                "return require('lib.phone') == require('lib.phone'), require('lib.phone').count", chunkName: "s.lua",
                environment: other) == [true, 1])
        #expect(try state.run("return rawget(_G, 'count')", chunkName: "s.lua", environment: other) == [.null])  // the module's globals are its own
        for (source, expected) in [
            ("require 'os'", "module 'os' not found"),
            ("require '../etc/passwd'", "not found"),
            ("require 'lib.bad'", "broken module"),
            ("require 'lib.a'", "circular require of 'lib.a'"),
        ] {
            do {
                try state.run(source, chunkName: "r.lua", environment: env)
                Issue.record("expected \(source) to fail")
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
    }
}
