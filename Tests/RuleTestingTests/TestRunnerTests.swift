import Foundation
import JSONCore
import KazooEvents
import LuaRuntime
import RuleEngine
import RuleTesting
import Testing

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../..").standardizedFileURL

@Suite struct TestRunnerTests {
    let rule = """
        local calls = 0
        return {
          name = "lookup",
          on = "channel_create",
          run = function(event)
            calls = calls + 1
            local r, err = http.get("https://crm.example.com/c?n=" .. event.caller_id_number)
            forward("https://pop.example.com/x", { name = r and r.json and r.json.name or err, calls = calls })
          end,
        }
        """

    func report(_ tests: String, limits: LuaLimits = .default) async -> TestReport {
        let source = RuleSource(directory: "rules", files: ["lookup.lua": rule, "lookup_test.lua": tests])
        let samples = repositoryRoot.appendingPathComponent("samples").path
        return await TestRunner(
            source: source, samplesDirectory: samples,
            configuration: RuleConfiguration(limits: limits, environment: [:])
        )
        .run()
    }

    @Test func mocksAnswerAndAssertionsPass() async {
        let r = await report(
            """
            test("mocked", function()
              http.mock{ method = "GET", url = "https://crm.example.com/c?n=*", json = { name = "Acme" } }
              local out = run("lookup", sample("channel_create__inbound"))
              expect(out.http[1].status).to_be(200)
              expect(out.forwards[1].body).to_be({ name = "Acme", calls = 1 })
            end)
            """)
        #expect(r.ok)
        #expect(r.results.map(\.passed) == [true])
    }

    @Test func failuresGiveTheAssertionsLineAndADiff() async {
        let r = await report(
            """
            test("wrong", function()
              http.mock{ url = "https://crm.example.com/*", json = { name = "Acme" } }
              local out = run("lookup", sample("channel_create__inbound"))
              expect(out.forwards[1].body).to_be({ name = "Globex", calls = 1 })
            end)
            """)
        #expect(!r.ok)
        let failure = r.results.first?.failure
        #expect(failure?.file == "rules/lookup_test.lua")
        #expect(failure?.line == 4)
        #expect(failure?.message.contains(#"name: expected "Globex", got "Acme""#) == true)
    }

    @Test func mocksStateAndLogsDoNotCarryOverBetweenTests() async {
        let r = await report(
            """
            test("first", function()
              http.mock{ url = "https://crm.example.com/*", json = { name = "Acme" } }
              expect(run("lookup", sample("channel_create__inbound")).forwards[1].body.calls).to_be(1)
            end)
            test("second has no mock", function()
              run("lookup", sample("channel_create__inbound"))
            end)
            test("third starts from fresh rule state", function()
              http.mock{ url = "https://crm.example.com/*", status = 500, body = "down" }
              local out = run("lookup", sample("channel_create__inbound"))
              expect(out.forwards[1].body.calls).to_be(1)
              expect(out.http[1].status).to_be(500)
            end)
            """)
        #expect(r.results.map(\.passed) == [true, false, true])
        #expect(
            r.results[1].failure?.message.contains(
                "unmocked HTTP request: GET https://crm.example.com/c?n=+14155550123") == true)
    }

    @Test func errorAndTimeoutMocksReachTheRule() async {
        let r = await report(
            """
            test("timeout", function()
              http.mock{ url = "https://crm.example.com/*", timeout = true }
              expect(run("lookup", sample("channel_create__inbound")).forwards[1].body.name).to_contain("timed out")
            end)
            test("error", function()
              http.mock{ url = "https://crm.example.com/*", error = "connection refused" }
              expect(run("lookup", sample("channel_create__inbound")).forwards[1].body.name).to_be("connection refused")
            end)
            """)
        #expect(r.results.map(\.passed) == [true, true])
    }

    @Test func anInfiniteLoopFailsThatTestOnly() async {
        let r = await report(
            """
            test("loops", function() while true do end end)
            test("still runs", function() expect(1).to_be(1) end)
            """, limits: LuaLimits(instructionLimit: 500_000))
        #expect(r.results.map(\.passed) == [false, true])
        #expect(r.results[0].failure?.message.contains("instruction limit exceeded") == true)
    }

    @Test func eventsFromRawBodiesAndInlineTables() async {
        let r = await report(
            """
            test("form body", function()
              http.mock{ url = "*", json = { name = "F" } }
              local e = decode("form", "hook_event=channel_create&caller_id_number=%2B1415&call_id=a")
              expect(run("lookup", e).forwards[1].body.name).to_be("F")
            end)
            test("inline table", function()
              http.mock{ url = "*", json = { name = "T" } }
              expect(run("lookup", { hook_event = "channel_create", caller_id_number = "1" }).outcome).to_be("ok")
            end)
            test("other event is skipped", function()
              local out = run("lookup", sample("channel_destroy__inbound"))
              expect(out.skipped).to_be(true)
              expect(out.stage).to_be("on")
            end)
            """)
        #expect(r.results.map(\.passed) == [true, true, true], "\(r.results.compactMap(\.failure?.message))")
    }

    @Test func aTestFileThatDoesNotLoadIsReported() async {
        let r = await report("test('x', function() end")
        #expect(!r.ok)
        #expect(r.loadErrors.first?.file == "rules/lookup_test.lua")
        #expect(r.loadErrors.first?.message.contains("expected") == true)
    }
}

@Suite struct TestClockAndStoreTests {
    let rules = [
        "count.lua": """
        return {
          name = "count", on = "channel_create",
          run = function(event) store.incr("seen", 1, { ttl = "10m" }) end,
        }
        """,
        "beat.lua": """
        return {
          name = "beat", every = "1m",
          tick = function(now) store.set("last", now); forward("https://chat.example.com/beat", { at = now }) end,
        }
        """,
    ]

    func report(_ tests: String) async -> TestReport {
        var files = rules
        files["count_test.lua"] = tests
        let samples = repositoryRoot.appendingPathComponent("samples").path
        return await TestRunner(
            source: RuleSource(directory: "rules", files: files), samplesDirectory: samples,
            configuration: RuleConfiguration(environment: [:])
        )
        .run()
    }

    @Test func theStoreIsVisibleFollowsTheClockAndStartsEmptyInEveryTest() async {
        let r = await report(
            """
            test("writes", function()
              run("count", sample("channel_create__inbound"))
              run("count", sample("channel_create__inbound"))
              expect(store.rule("count").get("seen")).to_be(2)
              expect(store.rule("count").keys()).to_be({ "seen" })
              clock.advance("10m")
              expect(store.rule("count").get("seen")).to_be_nil()
            end)
            test("starts empty", function()
              expect(store.rule("count").get("seen")).to_be_nil()
              store.shared.set("flag", true)
              expect(store.shared.get("flag")).to_be(true)
            end)
            test("ticks by hand at the test clock's now", function()
              clock.set(1800000000)
              local out = tick("beat")
              expect(out.outcome).to_be("ok")
              expect(out.forwards[1].body).to_be({ at = 1800000000 })
              expect(store.rule("beat").get("last")).to_be(1800000000)
              expect(clock.now()).to_be(1800000000)
            end)
            """)
        #expect(r.results.map(\.passed) == [true, true, true], "\(r.results.compactMap(\.failure?.message))")
        #expect(r.ok)
    }

    @Test func misusesAreFailuresThatSayWhatToDo() async {
        let r = await report(
            """
            test("tick without a schedule", function() tick("count") end)
            test("tick of no rule", function() tick("beet") end)
            test("run of a rule that only ticks", function() run("beat", sample("channel_create__inbound")) end)
            test("advance by nonsense", function() clock.advance("soon") end)
            test("a clock past a tick's seconds", function() clock.set(1e19) tick("beat") end)
            test("advance past the clock", function() clock.advance(1e300) tick("beat") end)
            test("a duration past Double", function() clock.advance("1e305d") end)
            """)
        let messages = r.results.map { $0.failure?.message ?? "passed" }
        #expect(messages.count == 7)
        #expect(messages[0].contains("rule \"count\" has no schedule"))
        #expect(messages[1].contains("no rule named \"beet\" (did you mean beat?)"))
        #expect(messages[2].contains("rule \"beat\" has no on: it only ticks (use tick(\"beat\"))"))
        #expect(messages[3].contains("clock.advance: give seconds or a duration such as \"11m\""))
        // These stopped the process (a tick's whole seconds overflowed Int64) instead of failing their test.
        #expect(messages[4].contains("bad argument #1 to 'clock.set' (Unix time in seconds expected"), "\(messages[4])")
        #expect(messages[5].contains("clock.advance: the clock would pass"), "\(messages[5])")
        #expect(messages[6].contains("clock.advance: give seconds or a duration"), "\(messages[6])")
    }
}
