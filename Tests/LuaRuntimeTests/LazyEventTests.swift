import JSONCore
import Testing

@testable import LuaRuntime

/// A rule's `event` is a lazy table: its fields become Lua values when the rule reads them. Nothing a rule can
/// do may tell it apart from a table built in full (the README's "The Lua runtime").
@Suite struct LazyEventTests {
    static let payloadValue: JSONValue = [
        "call_id": "abc-123", "hook_event": "channel_create", "duration": 42, "ratio": 0.5, "is_internal_leg": false,
        "gone": .null, "name_ü": "zoë", "id": "payload-id",
        "custom_channel_vars": ["owner_id": "o-1", "Account-ID": "a-1", "deep": ["x": 1]],
        "custom_application_vars": [:], "list": ["a", 2, ["k": "v"], [1, 2]],
    ]
    var payload: JSONObject { Self.payloadValue.objectValue! }
    let extras = [JSONObject.Member(key: "kind", value: "channel"), JSONObject.Member(key: "id", value: "meta-id")]

    /// The function a chunk returns, loaded in a new environment of `state`.
    func function(_ source: String, in state: LuaState) throws -> LuaReference {
        let env = try state.newEnvironment()
        return try state.callReferences(try state.load(source, chunkName: "lazy.lua", environment: env))[0]
    }

    /// Runs `function(e) <body> end` on the payload (plus `kind` and `id` set over it) and returns its results.
    /// `seen(x)` is a host function that reads its argument as the host reads any table.
    func run(_ body: String, state: LuaState? = nil) throws -> [JSONValue] {
        let state = try state ?? LuaState()
        let env = try state.newEnvironment()
        state.setGlobal("seen", function: { args in [args[1]] }, in: env)
        let chunk = try state.load("return function(e) \(body) end", chunkName: "lazy.lua", environment: env)
        let f = try state.callReferences(chunk)[0]
        let co = try state.startCoroutine(f, arguments: [.object(payload, adding: extras)])
        guard case .finished(let values) = try state.resume(co) else {
            Issue.record("the function suspended")
            return []
        }
        return values
    }

    @Test func fieldsReadAsTheyWouldFromAFullTable() throws {
        #expect(
            try run(
                """
                return e.call_id, e.duration, e.ratio, e.is_internal_leg, e.gone == nil, e["name_ü"],
                  e.missing, e.kind, e.id, e.custom_channel_vars.owner_id, e.custom_channel_vars["Account-ID"],
                  e.custom_channel_vars.deep.x, #e.list, e.list[1], e.list[3].k, e.list[4][2], e[1]
                """)
                == [
                    "abc-123", 42, 0.5, false, false, "zoë", .null, "channel", "meta-id", "o-1", "a-1", 1, 4, "a",
                    "v", 2, .null,
                ])
        // A null field is json.null (a light userdata), as before; an empty object stays an object.
        #expect(
            try run("return type(e.gone), seen(e.custom_application_vars), seen(e.list)") == [
                "userdata", .object(JSONObject()), ["a", 2, ["k": "v"], [1, 2]],
            ])
    }

    @Test func theRulesAssignmentsAndDeletionsStick() throws {
        #expect(
            try run(
                """
                local before = e.call_id
                e.call_id = nil                 -- read, then deleted
                e.duration = nil                -- never read, deleted
                e.hook_event = "changed"        -- never read, assigned
                e.id = nil                      -- a field the host set over the payload's, deleted
                e.custom_channel_vars.owner_id = nil
                return before, e.call_id, e.duration, e.hook_event, e.id, e.custom_channel_vars.owner_id
                """) == ["abc-123", .null, .null, "changed", .null, .null])
    }

    @Test func iterationAndRawAccessSeeEveryField() throws {
        let all = try run(
            """
            e.duration = nil
            e.added = true
            local n, keys = 0, {}
            for k, v in pairs(e) do n = n + 1; keys[k] = v end
            return n, keys.call_id, keys.duration, keys.added, keys.id, keys.kind
            """)
        // 12 payload fields (one of them "id", replaced), less duration, plus kind and added.
        #expect(all == [12, "abc-123", .null, true, "meta-id", "channel"])
        #expect(
            try run("return next(e) ~= nil, rawget(e, 'hook_event'), getmetatable(e)") == [
                true, "channel_create", .null,
            ])
        #expect(try run("rawset(e, 'call_id', nil) return e.call_id, rawget(e, 'duration')") == [.null, 42])
        #expect(try run("local n = 0 for _ in next, e do n = n + 1 end return n") == [12])
        #expect(
            try run("setmetatable(e, { __index = function() return 'fallback' end }) return e.call_id, e.nothing")
                == ["abc-123", "fallback"])
        #expect(try run("local n = 0 for _ in pairs(e.custom_channel_vars) do n = n + 1 end return n") == [3])
    }

    /// The host reads a lazy table (a returned event, a host function's argument) in full, with the rule's
    /// changes.
    @Test func theHostReadsTheWholeEvent() throws {
        var expected = payload
        expected["id"] = "meta-id"
        expected["kind"] = "channel"
        expected["duration"] = nil
        expected["call_id"] = "new"
        #expect(try run("e.duration = nil e.call_id = 'new' return e") == [.object(expected)])
        #expect(try run("e.duration = nil e.call_id = 'new' return seen(e)") == [.object(expected)])
        #expect(try run("local _ = e.call_id return e.custom_channel_vars") == [payload["custom_channel_vars"]!])
    }

    /// A field the host adds hides the payload's own of the same key (`id`: `meta-id` over `payload-id`), also
    /// once the rule has deleted it: filling the table in never brings the payload's back.
    @Test func anAddedFieldHidesThePayloadsEvenDeleted() throws {
        var expected = payload
        expected["id"] = nil
        expected["kind"] = "channel"
        #expect(try run("e.id = nil return e") == [.object(expected)])
        #expect(try run("e.id = nil local n = 0 for k in pairs(e) do n = n + 1 end return n, e.id") == [11, .null])
        #expect(try run("local n = 0 for k, v in pairs(e) do if k == 'id' then n = n + 1 end end return n") == [1])
    }

    /// An event a rule keeps (here in a global) stays readable after the run that got it, and its payload is
    /// released when Lua collects it.
    @Test func aKeptEventOutlivesItsRun() throws {
        let state = try LuaState()
        let f = try function(
            "return function(e) if e then kept = e return end return kept.custom_channel_vars.owner_id, kept.call_id end",
            in: state)
        for _ in 0..<3 {
            let co = try state.startCoroutine(f, arguments: [.object(payload, adding: [])])
            _ = try state.resume(co)
        }
        state.collectGarbage()
        let co = try state.startCoroutine(f, arguments: [])
        #expect(try state.resume(co) == .finished(["o-1", "abc-123"]))
    }

    /// Every payload Lua holds (the event's, and each nested object or array opened) is given back when Lua
    /// collects its table, and when the state closes.
    @Test func luaGivesEveryPayloadBack() throws {
        let before = LazyPayload.liveOnThisThread
        do {
            let state = try LuaState()
            let f = try function(
                "return function(e) local a = e.custom_channel_vars.deep.x local b = e.list[3].k if e.kind == 'keep' then kept = e end return a, b end",
                in: state)
            for i in 0..<200 {
                let co = try state.startCoroutine(
                    f,
                    arguments: [
                        .object(payload, adding: [JSONObject.Member(key: "kind", value: i == 7 ? "keep" : "x")])
                    ])
                #expect(try state.resume(co) == .finished([1, "v"]))
            }
            state.collectGarbage()
            state.collectGarbage()
            // The kept event and what it opened are still Lua's; everything else came back.
            #expect(LazyPayload.liveOnThisThread - before <= 4)
        }
        // The state is gone: so is the kept event.
        #expect(LazyPayload.liveOnThisThread == before)
    }

    /// Reading fields counts against the run's memory cap like any other allocation, and running out is the
    /// run's error, not the host's.
    @Test func readingUnderTheMemoryCapFailsTheRunOnly() throws {
        var limits = LuaLimits.default
        limits.memoryLimit = 1 << 20
        let state = try LuaState(limits: limits)
        let big = JSONObject(
            (0..<2_000).map { JSONObject.Member(key: "f\($0)", value: .string(String(repeating: "x", count: 300))) })
        let f = try function(
            "return function(e) local t = {} for k, v in pairs(e) do t[#t + 1] = v .. k end return #t end", in: state)
        let co = try state.startCoroutine(f, arguments: [.object(big, adding: [])])
        #expect(throws: LuaError.self) { try state.resume(co) }
        let again = try state.startCoroutine(
            f, arguments: [.object((["a": "b"] as JSONValue).objectValue!, adding: [])])
        #expect(try state.resume(again) == .finished([1]))
    }
}
