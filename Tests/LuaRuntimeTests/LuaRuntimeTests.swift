import JSONCore
import LuaRuntime
import Testing

/// Runs `source` in a fresh environment of `state` and returns its results.
func run(_ source: String, in state: LuaState, chunk: String = "test.lua") throws -> [JSONValue] {
    let env = try state.newEnvironment()
    defer { state.release(env) }
    return try state.run(source, chunkName: chunk, environment: env)
}

/// Expects `source` to fail with a LuaError and returns it.
func expectLuaError(_ source: String, in state: LuaState, sourceLocation: SourceLocation = #_sourceLocation)
    -> LuaError?
{
    do {
        let results = try run(source, in: state)
        Issue.record("expected an error, got \(results)", sourceLocation: sourceLocation)
        return nil
    } catch let error as LuaError {
        return error
    } catch {
        Issue.record("unexpected error type \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite struct ValueRoundTripTests {
    let state: LuaState
    init() throws { state = try LuaState() }

    /// Passes the value into Lua as an argument and returns it unchanged.
    func roundTrip(_ value: JSONValue) throws -> JSONValue {
        let env = try state.newEnvironment()
        let identity = try state.load("return ...", chunkName: "identity.lua", environment: env)
        let out = try state.call(identity, [value])
        #expect(state.top == 0)
        return out.first ?? .null
    }

    @Test func scalarsKeepTheirTypes() throws {
        #expect(try roundTrip(.int(42)) == .int(42))
        #expect(try roundTrip(.int(Int64.max)) == .int(Int64.max))
        #expect(try roundTrip(.int(Int64.min)) == .int(Int64.min))
        #expect(try roundTrip(.double(42.0)) == .double(42.0))
        #expect(try roundTrip(.double(0.0075)) == .double(0.0075))
        #expect(try roundTrip(.bool(false)) == .bool(false))
        #expect(try roundTrip(.string("héllo ☎")) == .string("héllo ☎"))
        #expect(try roundTrip(.null) == .null)
    }

    @Test func nullIsASentinelNotNil() throws {
        let out = try state.call(
            try state.load(
                "local t = ...; return t.a == nil, type(t.a), tostring(t.a)", chunkName: "n.lua",
                environment: try state.newEnvironment()),
            [["a": .null]])
        #expect(out == [.bool(false), .string("userdata"), .string("null")])
    }

    @Test func emptyObjectAndEmptyArraySurvive() throws {
        #expect(try roundTrip(.object(JSONObject())) == .object(JSONObject()))
        #expect(try roundTrip(.array([])) == .array([]))
        let nested: JSONValue = [
            "custom_application_vars": .object(JSONObject()), "to": .array([]), "n": [1, 2.5, "x"],
        ]
        #expect(try roundTrip(nested) == nested)
    }

    @Test func stringsAreByteExact() throws {
        #expect(try roundTrip(.string("a\u{0}b")) == .string("a\u{0}b"))
        let invalid: [UInt8] = [0xFF, 0x00, 0xC3, 0x28, 0x41]
        #expect(try roundTrip(.bytes(invalid)) == .bytes(invalid))
        let out = try run("return #'\\0\\0\\0', 'a\\0b'", in: state)
        #expect(out == [.int(3), .string("a\u{0}b")])
    }

    @Test func luaTablesBecomeArraysOrObjects() throws {
        let out = try run(
            """
            return {1, 2, 3}, {a = 1}, {}, {[1] = "x", [3] = "y"}, {1, 2, n = 3}
            """, in: state)
        #expect(out[0] == [1, 2, 3])
        #expect(out[1] == ["a": 1])
        #expect(out[2] == .object(JSONObject()))
        #expect(out[3] == ["1": "x", "3": "y"])
        #expect(out[4] == ["1": 1, "2": 2, "n": 3])
    }

    @Test func aNumberKeyAndAStringKeyOfTheSameTextBecomeOneMember() throws {
        let out = try run(
            """
            return {[1] = "number", ["1"] = "string", a = 0}, {[1.5] = "number", ["1.5"] = "string"}
            """, in: state)
        for value in out {
            let object = try #require(value.objectValue)
            let keys = object.members.map(\.key)
            #expect(keys.count == Set(keys).count, "repeated keys in \(keys)")
        }
        #expect(out[0].objectValue?.members.map(\.key) == ["1", "a"])
        #expect(out[1].objectValue?.members.map(\.key) == ["1.5"])
    }

    @Test func depthIsLimited() throws {
        var deep: JSONValue = 1
        for _ in 0..<100 { deep = [deep] }
        #expect(throws: LuaError.self) { try roundTrip(deep) }
        #expect(state.top == 0)
        let error = expectLuaError(
            "local t = {} local c = t for i = 1, 100 do c.x = {} c = c.x end return t", in: state)
        #expect(error?.kind == .conversion)
        #expect(error?.message.contains("deeper than 64") == true)
    }

    @Test func cyclesAreAnErrorNotAHang() throws {
        let error = expectLuaError("local t = {a = {}} t.a.b = t return t", in: state)
        #expect(error?.kind == .conversion)
        #expect(error?.message.contains("result #1.a.b") == true)
        #expect(error?.message.contains("cycle") == true)
        // The same table twice (not a cycle) is fine.
        let out = try run("local s = {1} return {a = s, b = s}", in: state)
        #expect(out == [["a": [1], "b": [1]]])
    }

    @Test func functionsDoNotConvert() throws {
        let error = expectLuaError("return {f = function() end}", in: state)
        #expect(error?.kind == .conversion)
        #expect(error?.message.contains("function") == true)
    }

    // The state reuses the Lua strings it made for keys and short values (LuaStringCache): whatever it hands
    // out must be the text pushed, across more strings than it has slots, for equal texts in different
    // Strings, and after a String it kept was changed.
    @Test func reusedStringsAreAlwaysTheTextPushed() throws {
        let env = try state.newEnvironment()
        // Lua sees the keys and values themselves, not only the round trip: it joins them in key order.
        let join = try state.load(
            """
            local t = ... local keys = {}
            for k in pairs(t) do keys[#keys + 1] = k end
            table.sort(keys)
            local out = {}
            for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. t[k] end
            return table.concat(out, ",")
            """, chunkName: "join.lua", environment: env)
        // Keys of 1 to 60 bytes (past Lua's 40-byte interned strings) and short values, 600 of each.
        func text(_ i: Int, _ length: Int) -> String {
            let digits = String(i)
            return String(repeating: "k", count: max(0, length - digits.count)) + digits
        }
        var shared: [String] = []
        for i in 0..<600 { shared.append(text(i, 1 + i % 60)) }
        for round in 0..<3 {
            for start in stride(from: 0, to: shared.count, by: 50) {
                var object = JSONObject()
                var expected: [String] = []
                for i in start..<(start + 50) {
                    // Round 0 and 2 push the same Strings; round 1 pushes equal texts in new Strings.
                    let key = round == 1 ? text(i, 1 + i % 60) : shared[i]
                    let value = "v\(i % 7)"
                    object[key] = .string(value)
                    expected.append("\(key)=\(value)")
                }
                let out = try state.call(join, [.object(object)])
                #expect(out == [.string(expected.sorted().joined(separator: ","))])
                #expect(try roundTrip(.object(object)) == .object(object))
            }
        }
        // A String the cache keeps cannot be changed under it: changing it makes new storage.
        var key = String(repeating: "x", count: 20)
        key.reserveCapacity(64)
        #expect(try roundTrip(.object(JSONObject([.init(key: key, value: 1)]))) == ["xxxxxxxxxxxxxxxxxxxx": 1])
        key.append("y")
        #expect(try roundTrip(.object(JSONObject([.init(key: key, value: 1)]))) == ["xxxxxxxxxxxxxxxxxxxxy": 1])
    }
}

@Suite struct SandboxTests {
    let state: LuaState
    init() throws { state = try LuaState() }

    @Test(arguments: ["io", "package", "debug", "require", "dofile", "loadfile", "print", "warn"])
    func forbiddenGlobalsAreUndefined(name: String) throws {
        let error = expectLuaError("return \(name)", in: state)
        #expect(error?.message.contains("undefined global '\(name)'") == true)
        #expect(error?.line == 1)
    }

    @Test func osIsLimitedToTimeClockAndDate() throws {
        let out = try run(
            "return type(os.time()), type(os.clock()), type(os.date('%Y')), os.execute, os.getenv, os.exit",
            in: state)
        #expect(out == [.string("number"), .string("number"), .string("string"), .null, .null, .null])
    }

    @Test func stringDumpIsGone() throws {
        #expect(try run("return string.dump", in: state) == [.null])
    }

    @Test func loadRefusesBinaryChunksAndUsesTheCallersEnvironment() throws {
        let out = try run(
            """
            secret = 7
            local f = load("return secret")
            local g, err = load("\\27Lua", "bin", "b")
            local h, err2 = load("\\27LuaT\\0", "bin")
            return f(), g, err, h, err2
            """, in: state)
        #expect(out[0] == .int(7))
        #expect(out[1] == .null)
        #expect(out[2].stringValue?.contains("binary chunks are not allowed") == true)
        #expect(out[3] == .null)
        #expect(out[4].stringValue?.contains("binary chunk") == true)
    }

    @Test func sharedTablesCannotBeChangedForOthers() throws {
        // One environment cannot change another's libraries, nor the string metatable they share.
        _ = try run("string.upper = function() return 'pwned' end; math.pi = 3", in: state)
        #expect(try run("return string.upper('a'), math.pi > 3.14", in: state) == [.string("A"), .bool(true)])
        #expect(try run("return getmetatable('')", in: state) == [.bool(false)])
        let error = expectLuaError("setmetatable(_G, {})", in: state)
        #expect(error?.message.contains("protected metatable") == true)
        #expect(try run("return ('x'):upper()", in: state) == [.string("X")])
    }

    @Test func finalizersAreRefused() throws {
        let error = expectLuaError("setmetatable({}, {__gc = function() while true do end end})", in: state)
        #expect(error?.message.contains("__gc") == true)
    }

    @Test func collectgarbageCannotStopTheCollector() throws {
        let error = expectLuaError("collectgarbage('stop')", in: state)
        #expect(error?.message.contains("not allowed") == true)
        #expect(try run("return type(collectgarbage('count'))", in: state) == [.string("number")])
    }

    @Test func globalsArePrivateToTheirEnvironment() throws {
        let a = try state.newEnvironment()
        let b = try state.newEnvironment()
        try state.run("counter = 1", chunkName: "a.lua", environment: a)
        try state.run("counter = 2", chunkName: "b.lua", environment: b)
        #expect(try state.run("counter = counter + 1 return counter", chunkName: "a.lua", environment: a) == [2])
        #expect(try state.global("counter", in: b) == .int(2))
    }

    @Test func undefinedGlobalNamesItself() throws {
        let error = expectLuaError("local x = 1\nreturn undefined_thing + x", in: state)
        #expect(error?.message == "test.lua:2: undefined global 'undefined_thing'")
        #expect(error?.chunk == "test.lua")
        #expect(error?.line == 2)
        #expect(error?.traceback?.contains("stack traceback:") == true)
    }
}

@Suite struct BudgetTests {
    let state: LuaState
    init() throws {
        state = try LuaState(
            limits: LuaLimits(memoryLimit: 16 << 20, instructionLimit: 2_000_000, timeLimit: .seconds(5)))
    }

    /// After any kill the state must still run code.
    func expectUsable() throws {
        #expect(try run("return 1 + 1", in: state) == [2])
        #expect(state.top == 0)
    }

    @Test func infiniteLoopIsKilled() throws {
        let error = expectLuaError("while true do end", in: state)
        #expect(error?.kind == .instructions)
        #expect(error?.line == 1)
        try expectUsable()
    }

    @Test func pcallCannotCatchTheKill() throws {
        let error = expectLuaError(
            """
            local caught = 0
            while true do
              local ok = pcall(function() while true do end end)
              caught = caught + 1
            end
            """, in: state)
        #expect(error?.kind == .instructions)
        let error2 = expectLuaError(
            "xpcall(function() while true do end end, function(m) return m end) return 'escaped'", in: state)
        #expect(error2?.kind == .instructions)
        let error3 = expectLuaError(
            "local co = coroutine.create(function() while true do end end) coroutine.resume(co) return 'escaped'",
            in: state)
        #expect(error3?.kind == .instructions)
        let error4 = expectLuaError(
            "local f = coroutine.wrap(function() while true do end end) pcall(f) return 'escaped'", in: state)
        #expect(error4?.kind == .instructions)
        try expectUsable()
    }

    @Test func deadlineKillsEvenWithAHugeInstructionBudget() throws {
        state.setLimits(LuaLimits(memoryLimit: 16 << 20, instructionLimit: Int.max / 2, timeLimit: .milliseconds(50)))
        let error = expectLuaError("while true do end", in: state)
        #expect(error?.kind == .timeout)
        try expectUsable()
    }

    @Test func memoryBombIsKilled() throws {
        let error = expectLuaError("local t = {} for i = 1, 1e9 do t[i] = {i} end", in: state)
        #expect(error?.kind == .memory)
        try expectUsable()
        #expect(state.memoryUsed < 16 << 20)
    }

    @Test func aStateLeftFullAfterAKillAsksToBeRebuilt() throws {
        let env = try state.newEnvironment()
        #expect(!state.needsRebuild)
        // The global keeps what was allocated before the kill, so collecting cannot free it.
        #expect(throws: LuaError.self) {
            try state.run("big = {} for i = 1, 1e9 do big[i] = i end", chunkName: "hog.lua", environment: env)
        }
        #expect(state.needsRebuild)
    }

    @Test func stringRepTowardsAGigabyteIsKilled() throws {
        let error = expectLuaError("local s = string.rep('x', 1 << 30) return #s", in: state)
        #expect(error?.kind == .memory)
        let error2 = expectLuaError("local ok = pcall(string.rep, 'x', 1 << 30) return 'escaped'", in: state)
        #expect(error2?.kind == .memory)
        try expectUsable()
    }

    @Test func deepRecursionIsContained() throws {
        let error = expectLuaError("local function f(n) return 1 + f(n + 1) end return f(1)", in: state)
        #expect(error != nil)
        #expect(error?.message.contains("stack overflow") == true || error?.isKill == true)
        try expectUsable()
    }

    @Test func normalErrorsStillReachScriptPcall() throws {
        #expect(try run("local ok, err = pcall(error, 'boom') return ok, err", in: state) == [false, "boom"])
        #expect(try run("return select('#', pcall(function() return 1, 2 end))", in: state) == [3])
    }
}

@Suite struct HostFunctionTests {
    let state: LuaState
    init() throws { state = try LuaState() }

    @Test func hostFunctionsReceiveAndReturnValues() throws {
        let env = try state.newEnvironment()
        state.setGlobal("double", function: { args in [.int((args[1].intValue ?? 0) * 2)] }, in: env)
        state.setGlobal(
            "util",
            functions: ["join": { args in [.string(args.values.compactMap(\.stringValue).joined(separator: "-"))] }],
            in: env)
        #expect(
            try state.run("return double(21), util.join('a', 'b')", chunkName: "h.lua", environment: env) == [
                42, "a-b",
            ])
        #expect(state.top == 0)
    }

    @Test func hostErrorsAreRaisedInLuaWithThePosition() throws {
        let env = try state.newEnvironment()
        state.setGlobal("need_string", function: { args in [.string(try args.string(1))] }, in: env)
        do {
            try state.run("local x = 1\nneed_string(5)", chunkName: "rule.lua", environment: env)
            Issue.record("expected an error")
        } catch {
            #expect(error.message == "rule.lua:2: bad argument #1 to 'need_string' (string expected, got integer)")
            #expect(error.line == 2)
        }
        // A script can catch a host error with pcall.
        let out = try state.run("return pcall(need_string)", chunkName: "rule.lua", environment: env)
        #expect(out.first == .bool(false))
    }

    @Test func functionArgumentsAreAConversionErrorNotACrash() throws {
        let env = try state.newEnvironment()
        state.setGlobal("f", function: { _ in [] }, in: env)
        let out = try state.run("return pcall(f, {cb = function() end})", chunkName: "r.lua", environment: env)
        #expect(out.first == .bool(false))
        #expect(out.last?.stringValue?.contains("argument #1.cb") == true)
    }
}

@Suite struct LoadingTests {
    @Test func syntaxErrorsSayFileAndLine() throws {
        let state = try LuaState()
        let env = try state.newEnvironment()
        do {
            _ = try state.load("local x = 1\nlocal y = = 2\n", chunkName: "rules/bad.lua", environment: env)
            Issue.record("expected a syntax error")
        } catch {
            #expect(error.kind == .syntax)
            #expect(error.chunk == "rules/bad.lua")
            #expect(error.line == 2)
            #expect(error.message.hasPrefix("rules/bad.lua:2:"))
        }
        #expect(state.top == 0)
    }

    @Test func runtimeErrorsCarryATraceback() throws {
        let state = try LuaState()
        let error = expectLuaError(
            "local function inner() error('bad thing') end\nlocal function outer() inner() end\nouter()", in: state)
        #expect(error?.kind == .runtime)
        #expect(error?.message == "test.lua:1: bad thing")
        #expect(error?.traceback?.contains("in local 'inner'") == true || error?.traceback?.contains("inner") == true)
        #expect(error?.traceback?.contains("test.lua:2") == true)
    }

    @Test func nonStringErrorObjectsAreDescribed() throws {
        let state = try LuaState()
        let error = expectLuaError("error({code = 1})", in: state)
        #expect(error?.message.contains("error object is a table value") == true)
    }
}
