import Foundation
import JSONCore
import KazooEvents
import Logging
import LuaRuntime
import NIOCore
import RuleEngine
import Synchronization
import TestSupport
import Testing

@Suite struct IsolationTests {
    /// A call's worker is FNV-1a (64-bit) of its id's UTF-8 bytes modulo the workers: the same for every event
    /// of the call, and the same in `switchboard replay`, whatever the string's storage.
    @Test func aCallsWorkerIsFNV1aOfItsID() {
        #expect(Engine.slot(of: "", among: 1000) == 37)
        #expect(Engine.slot(of: "a", among: 1000) == 996)
        #expect(Engine.slot(of: "NDlkNGI3OTZlMDgzNWQxNGYxNTA3NjQ4NDZjNDFkOTc", among: 1000) == 664)
        #expect(Engine.slot(of: "caf\u{E9}", among: 1000) == 713)
        #expect(Engine.slot(of: String("xxcaf\u{E9}".dropFirst(2)), among: 7) == 0)
        #expect(Engine.slot(of: "a", among: 0) == 0)
    }

    @Test func rulesSeeTheEventAsDecodedWhateverOthersDo() async throws {
        let worker = try makeWorker([
            "a_mutate.lua": runRule(
                "event.call_id = 'changed'; event.custom_channel_vars = nil; error('boom')", name: "a"),
            "b_read.lua": runRule("log.info(event.call_id, { ccv = event.custom_channel_vars ~= nil })", name: "b"),
            "c_drop.lua": "return { on = 'channel_create', transform = function() return nil end }",
            "d_read.lua": runRule("log.info(event.call_id)", name: "d"),
        ])
        let report = await worker.process(try sample("channel_create__inbound.json"))
        #expect(report.rules.map(\.outcome) == [.error, .ok, .dropped, .ok])
        #expect(report.outcome("b")?.logs.first?.message == "1783265409_83651247@203.0.113.45")
        #expect(report.outcome("b")?.logs.first?.fields["ccv"] == true)
        #expect(report.outcome("d")?.logs.first?.message == "1783265409_83651247@203.0.113.45")
    }

    /// A worker collects its state once the rules are loaded. A rule file that builds 4 MB of module data
    /// grows the heap fast, after which Lua's generational collector marks incrementally until a collection
    /// finds the heap steady; without that first collection the first events' garbage waited for the heap to
    /// double (9.6 MB at the highest against 4.7 MB live, on this rule).
    @Test func theFirstEventsGarbageIsCollectedYoung() async throws {
        let worker = try makeWorker([
            "big.lua": """
            local kept = {}
            for i = 1, 40000 do kept[i] = string.rep('k', 64) .. i end
            local n, highest = 0, 0
            return { name = "big", on = "channel_create", run = function(e)
              local garbage = {}
              for i = 1, 100 do garbage[i] = { i, e.call_id .. i } end
              highest = math.max(highest, collectgarbage('count'))
              n = n + 1
              if n == 1000 then
                collectgarbage()
                log.info(string.format('%.0f %.0f %d', highest, collectgarbage('count'), #kept))
              end
            end }
            """
        ])
        let event = try sample("channel_create__inbound.json")
        var last: [String] = []
        for _ in 0..<1000 {
            last = await worker.process(event).outcome("big")?.logs.map(\.message) ?? []
        }
        let figures = last.first?.split(separator: " ").compactMap { Int($0) } ?? []
        #expect(figures.count == 3)
        if figures.count == 3 {
            #expect(figures[0] < figures[1] * 3 / 2, "the highest \(figures[0]) KB against \(figures[1]) KB live")
        }
    }

    @Test func moduleStateIsPrivateToEachRuleFile() async throws {
        let counter = "n = (rawget(_G, 'n') or 0) + 1 local seen = n"
        let worker = try makeWorker([
            "a.lua": runRule("\(counter) log.info(tostring(seen))", name: "a"),
            "b.lua": runRule("\(counter) log.info(tostring(seen))", name: "b"),
        ])
        let event = try sample("channel_create__inbound.json")
        _ = await worker.process(event)
        let second = await worker.process(event)
        #expect(second.outcome("a")?.logs.first?.message == "2")
        #expect(second.outcome("b")?.logs.first?.message == "2")
    }

    @Test func theEventCarriesKindNameAndUnixTime() async throws {
        let out = try await outcome(of: "log.info(event.kind .. ' ' .. event.name .. ' ' .. event.unix_time)")
        #expect(out.logs.first?.message == "channel channel_create 1715700187")
    }
}

@Suite struct StageTests {
    @Test func stagesRunInOrderAndReportWhereTheyStop() async throws {
        let worker = try makeWorker([
            "1.lua": """
            return { name = "all", on = "channel_create", match = { call_direction = { "inbound", "outbound" } },
              filter = function(e) log.info("filter") return true end,
              transform = function(e) log.info("transform") return { id = e.call_id } end,
              forward = "https://x.example.com/a",
              run = function(e, p) log.info("run " .. p.id) end }
            """,
            "2.lua":
                #"return { name = "match-no", on = "channel_create", match = { ["custom_channel_vars.Resource-Type"] = "onnet" }, run = function() end }"#,
            "3.lua":
                #"return { name = "match-yes", on = "channel_create", match = { ["custom_channel_vars.Resource-Type"] = "offnet-origination", is_internal_leg = false }, run = function() end }"#,
            "4.lua":
                #"return { name = "filter-no", on = "channel_create", filter = function() return false end, run = function() error("never") end }"#,
            "5.lua": #"return { name = "on-no", on = { "channel_destroy", "notifications.*" }, run = function() end }"#,
            "6.lua":
                #"return { name = "transform-error", on = "channel_create", transform = function(e) return e.nothing.here end }"#,
        ])
        #expect(await worker.diagnostics.isEmpty)
        let report = await worker.process(try sample("channel_create__inbound.json"))
        let all = report.outcome("all")
        #expect(all?.outcome == .ok)
        #expect(all?.logs.map(\.message) == ["filter", "transform", "run 1783265409_83651247@203.0.113.45"])
        #expect(all?.forwards.first?.body == ["id": "1783265409_83651247@203.0.113.45"])
        #expect(report.outcome("match-no")?.stage == "match")
        #expect(report.outcome("match-yes")?.outcome == .ok)
        #expect(report.outcome("filter-no")?.outcome == .skipped)
        #expect(report.outcome("filter-no")?.stage == "filter")
        #expect(report.outcome("on-no")?.stage == "on")
        let failed = report.outcome("transform-error")
        #expect(failed?.outcome == .error)
        #expect(failed?.stage == "transform")
        #expect(failed?.error?.file == "rules/6.lua")
        #expect(failed?.error?.line == 1)
        #expect(failed?.error?.traceback?.contains("rules/6.lua:1") == true)

        // As the server runs it: the rule whose `on` does not name the event is left out, nothing else changes.
        let served = await worker.process(try sample("channel_create__inbound.json"), unnamed: .omitted)
        #expect(!served.rules.contains { $0.rule == "on-no" })
        #expect(served.rules.map(\.rule) == report.rules.map(\.rule).filter { $0 != "on-no" })
        #expect(served.outcome("match-no")?.stage == "match")
        #expect(served.outcome("all")?.logs == all?.logs)
        // An event no rule names runs nothing and reports nothing.
        let nobody = await worker.process(try sample("parking__park_abandoned.json"), unnamed: .omitted)
        #expect(nobody.rules.isEmpty)
    }

    /// A run that waited on HTTP ends as one that did not: skipped at `filter`, dropped at `transform`, or ok with
    /// its forwards and its HTTP calls recorded; the runs after it in the same event still run.
    @Test func aRunThatWaitedEndsLikeOneThatDidNot() async throws {
        let worker = try makeWorker([
            "1.lua": """
            return { name = "waits-then-skips", on = "channel_create",
              filter = function(e) http.get("http://127.0.0.1:9/a") return false end, run = function() end }
            """,
            "2.lua": """
            return { name = "waits-then-drops", on = "channel_create",
              transform = function(e) http.get("http://127.0.0.1:9/b") return nil end, forward = "https://x.example.com/a" }
            """,
            "3.lua": """
            return { name = "waits-twice-then-forwards", on = "channel_create",
              transform = function(e)
                local _, first = http.get("http://127.0.0.1:9/c")
                local _, second = http.get("http://127.0.0.1:9/d")
                return { call_id = e.call_id, first = first, second = second }
              end, forward = "https://x.example.com/b" }
            """,
            "4.lua":
                #"return { name = "plain", on = "channel_create", transform = function(e) return { n = 1 } end, forward = "https://x.example.com/c" }"#,
        ])
        #expect(await worker.diagnostics.isEmpty)
        let report = await worker.process(try sample("channel_create__inbound.json"))
        #expect(
            report.rules.map(\.rule) == ["waits-then-skips", "waits-then-drops", "waits-twice-then-forwards", "plain"])
        #expect(report.outcome("waits-then-skips")?.outcome == .skipped)
        #expect(report.outcome("waits-then-skips")?.stage == "filter")
        #expect(report.outcome("waits-then-skips")?.http.map(\.url) == ["http://127.0.0.1:9/a"])
        #expect(report.outcome("waits-then-drops")?.outcome == .dropped)
        #expect(report.outcome("waits-then-drops")?.stage == "transform")
        #expect(report.outcome("waits-then-drops")?.forwards.isEmpty == true)
        let forwarded = report.outcome("waits-twice-then-forwards")
        #expect(forwarded?.outcome == .ok)
        #expect(forwarded?.http.map(\.url) == ["http://127.0.0.1:9/c", "http://127.0.0.1:9/d"])
        #expect(forwarded?.http.allSatisfy { $0.error == "dry run: not sent" } == true)
        #expect(forwarded?.forwards.map(\.url) == ["https://x.example.com/b"])
        #expect(forwarded?.forwards.first?.body["second"] == "dry run: not sent")
        #expect(forwarded?.seconds ?? 0 > 0)
        #expect(report.outcome("plain")?.forwards.map(\.url) == ["https://x.example.com/c"])
    }

    /// A failed run reports the stage it had reached, read from its own coroutine: across a wait on HTTP, and
    /// while other events' runs fail in other stages meanwhile.
    @Test func aFailedRunReportsTheStageItReached() async throws {
        let worker = try makeWorker([
            "1.lua":
                #"return { name = "filter-fails", on = "channel_create", filter = function(e) error("f") end, run = function() end }"#,
            "2.lua": """
            return { name = "waits-then-fails", on = "channel_create",
              transform = function(e) http.get("http://127.0.0.1:9/x") return e.nothing.here end }
            """,
            "3.lua": """
            return { name = "forward-fails", on = "channel_create",
              transform = function(e) return { f = function() end } end, forward = "https://x.example.com/a" }
            """,
            "4.lua": #"return { name = "run-fails", on = "channel_create", run = function(e) error("r") end }"#,
        ])
        #expect(await worker.diagnostics.isEmpty)
        let event = try sample("channel_create__inbound.json")
        async let one = worker.process(event)
        async let two = worker.process(event)
        for report in await [one, two] {
            #expect(report.rules.allSatisfy { $0.outcome == .error })
            #expect(report.outcome("filter-fails")?.stage == "filter")
            #expect(report.outcome("waits-then-fails")?.stage == "transform")
            #expect(report.outcome("forward-fails")?.stage == "forward")
            #expect(report.outcome("run-fails")?.stage == "run")
        }
    }

    @Test func wildcardsMatchFamilies() async throws {
        let worker = try makeWorker([
            "n.lua": #"return { name = "n", on = "notifications.*", run = function() end }"#,
            "s.lua": #"return { name = "s", on = "*", run = function() end }"#,
        ])
        let future = await worker.process(try sample("unknown__future_notification.json"))
        #expect(future.outcome("n")?.outcome == .ok)
        let call = await worker.process(try sample("channel_create__inbound.json"))
        #expect(call.outcome("n")?.stage == "on")
        #expect(call.outcome("s")?.outcome == .ok)
    }
}

@Suite struct BudgetInRuleTests {
    @Test func aKilledRuleIsThatRulesErrorAndOthersComplete() async throws {
        let worker = try makeWorker(
            [
                "a_loop.lua": runRule("while true do end", name: "loop"),
                "b_pcall_loop.lua": runRule(
                    "while true do pcall(function() while true do end end) end", name: "pcall-loop"),
                "c_memory.lua": runRule(
                    "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end", name: "memory"),
                "d_fine.lua": runRule("log.info('still here')", name: "fine"),
            ], limits: LuaLimits(memoryLimit: 32 << 20, instructionLimit: 2_000_000, timeLimit: .seconds(5)))
        let report = await worker.process(try sample("channel_create__inbound.json"))
        #expect(report.outcome("loop")?.outcome == .error)
        #expect(report.outcome("loop")?.error?.message.contains("instruction limit exceeded") == true)
        #expect(report.outcome("pcall-loop")?.error?.message.contains("instruction limit exceeded") == true)
        #expect(report.outcome("memory")?.error?.message.contains("memory limit exceeded") == true)
        #expect(report.outcome("fine")?.outcome == .ok)
        #expect(report.outcome("fine")?.logs.first?.message == "still here")
        // And the worker keeps going.
        let again = await worker.process(try sample("channel_create__inbound.json"))
        #expect(again.outcome("fine")?.outcome == .ok)
    }
}

@Suite struct CheckMessageTests {
    func diagnostics(_ files: [String: String]) async throws -> [Diagnostic] {
        try await makeWorker(files).diagnostics
    }

    @Test func syntaxErrorsSayFileAndLine() async throws {
        let d = try await diagnostics(["bad.lua": "return {\n  on = 'sms',\n  run = function() end end\n}"])
        #expect(d.count == 1)
        #expect(d.first?.file == "rules/bad.lua")
        #expect(d.first?.line == 3)
        #expect(d.first?.description.hasPrefix("rules/bad.lua:3: error:") == true)
    }

    @Test func misspeltEventNamesSuggestTheNearestOne() async throws {
        let d = try await diagnostics([
            "a.lua": "return {\n  on = { 'notifications.low_balace' },\n  run = function() end,\n}",
            "b.lua": "return { on = 'low_balance', run = function() end }",
            "c.lua": "return { on = 'chanel_create', run = function() end }",
        ])
        #expect(
            d.map(\.description) == [
                "rules/a.lua:2: error: unknown event \"notifications.low_balace\" in on (did you mean notifications.low_balance?)",
                "rules/b.lua:1: error: unknown event \"low_balance\" in on (did you mean notifications.low_balance?)",
                "rules/c.lua:1: error: unknown event \"chanel_create\" in on (did you mean channel_create?)",
            ])
    }

    @Test func tableProblems() async throws {
        let d = try await diagnostics([
            "a.lua": "return {\n  on = 'sms',\n  tranform = function() end,\n  run = function() end,\n}",
            "b.lua": "return { on = 'sms' }",
            "c.lua": "local x = 1",
            "d.lua": "return { run = function() end }",
            "e.lua": "return { on = 'sms', filter = 'yes', run = function() end }",
            "f.lua": "return { name = 'same', on = 'sms', run = function() end }",
            "g.lua": "return { name = 'same', on = 'mms', run = function() end }",
            "h.lua": "error('exploded while loading')",
        ])
        let text = d.map(\.description)
        #expect(
            text.contains("rules/a.lua:3: error: unknown key 'tranform' in the rule table (did you mean transform?)"))
        #expect(text.contains { $0.hasPrefix("rules/b.lua:1: error: the rule does nothing") })
        #expect(text.contains { $0.hasPrefix("rules/c.lua:1: error: a rule file must return a table") })
        #expect(text.contains { $0.hasPrefix("rules/d.lua:1: error: the rule has no on") })
        #expect(text.contains("rules/e.lua:1: error: filter must be a function, not string"))
        #expect(
            text.contains { $0.hasPrefix("rules/g.lua:1: error: rule name \"same\" is already used by rules/f.lua") })
        #expect(text.contains("rules/h.lua:1: error: exploded while loading"))
    }

    @Test func matchOnAFieldTheEventNeverHasIsAWarning() async throws {
        let d = try await diagnostics([
            "a.lua":
                "return {\n  on = 'channel_create',\n  match = { hangup_cause = 'NORMAL_CLEARING' },\n  run = function() end,\n}"
        ])
        #expect(d.count == 1)
        #expect(d.first?.severity == .warning)
        #expect(d.first?.line == 3)
        #expect(
            d.first?.message.contains(
                "match field \"hangup_cause\" is not sent with channel_create events (it comes with channel_destroy")
                == true)
    }

    @Test func librariesAndTestsAreNotRules() async throws {
        let worker = try makeWorker([
            "lib/util.lua": "return { shout = function(s) return s:upper() end }",
            "tests/helper.lua": "return 1",
            "crm_test.lua": "return 2",
            "a.lua": "local u = require 'lib.util' return { on = 'sms', run = function() log.info(u.shout('hi')) end }",
        ])
        #expect(await worker.diagnostics.isEmpty)
        #expect(await worker.rules.map(\.name) == ["a"])
        let report = await worker.process(try sample("sms__inbound_offnet.json"))
        #expect(report.outcome("a")?.logs.first?.message == "HI")
    }
}

@Suite struct MetricsTests {
    @Test func aCounterIsReadBackByWholeLabels() {
        let metrics = Metrics()
        metrics.increment("switchboard_non200_responses_total", [("hook_id", "x")])
        metrics.increment("switchboard_rule_runs_total", [("rule", "wait"), ("outcome", "ok")], by: 2)
        metrics.increment("switchboard_rule_runs_total", [("rule", "wait2"), ("outcome", "ok")])
        #expect(metrics.value("switchboard_non200_responses_total", [("hook_id", "x")]) == 1)
        #expect(metrics.value("switchboard_non200_responses_total", [("id", "x")]) == 0)
        #expect(metrics.value("switchboard_rule_runs_total", [("rule", "wait")]) == 2)
        #expect(metrics.value("switchboard_rule_runs_total") == 3)
        #expect(metrics.prometheus().contains("# HELP switchboard_rule_runs_total "))
    }

    /// A rule's last-run time is exported once it has run on an event, only ever moves forward (two loops may
    /// record runs of one rule out of order), and reads 0 for a rule that has run only on ticks.
    @Test func aRulesLastRunTimeOnlyMovesForward() {
        let metrics = Metrics()
        let gauge = "switchboard_rule_last_run_timestamp_seconds"
        #expect(metrics.gaugeValue(gauge) == nil)
        metrics.recordRun(rule: "a", outcome: .ok, seconds: 0.001, endedAt: 1_800_000_000.25)
        metrics.recordRun(rule: "a", outcome: .skipped, seconds: nil, endedAt: 1_800_000_000.5)
        metrics.recordRun(rule: "a", outcome: .ok, seconds: 0.001, endedAt: 1_800_000_000)
        metrics.recordRun(rule: "b", outcome: .ok, seconds: 0.001, endedAt: 1_700_000_000)
        metrics.recordRun(rule: "tick", outcome: nil, seconds: 0.001)
        #expect(metrics.gaugeValue(gauge, [("rule", "a")]) == 1_800_000_000.5)
        #expect(metrics.gaugeValue(gauge, [("rule", "b")]) == 1_700_000_000)
        #expect(metrics.gaugeValue(gauge, [("rule", "tick")]) == 0)
        #expect(metrics.prometheus().contains("# HELP \(gauge) "))
    }
}

/// An HTTP client whose answers wait until the test opens the gate.
final class GateClient: OutboundHTTPClient {
    let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])
    let open = Mutex(false)

    func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        await withCheckedContinuation { continuation in
            let now = open.withLock { isOpen -> Bool in
                if !isOpen { waiting.withLock { $0.append(continuation) } }
                return isOpen
            }
            if now { continuation.resume() }
        }
        return OutboundResponse(status: 200)
    }

    func release() {
        let all = open.withLock { isOpen -> [CheckedContinuation<Void, Never>] in
            isOpen = true
            return waiting.withLock { list in
                defer { list = [] }
                return list
            }
        }
        for continuation in all { continuation.resume() }
    }
}

/// A rule that fills its state on every event while another waits on HTTP: each kill replaces the state and
/// the waiting runs keep the old ones alive, but never more than `RuleWorker.maxRetired` of them.
@Suite struct RetiredStateTests {
    @Test func replacedStatesKeptForWaitingRunsAreBounded() async throws {
        let gate = GateClient()
        let worker = try makeWorker(
            [
                "a_hog.lua": """
                local keep = {}
                return { name = "hog", on = "channel_create", run = function()
                  for i = 1, 1e7 do keep[#keep + 1] = string.rep("x", 512) .. i end
                end }
                """,
                "b_wait.lua": """
                return { name = "wait", on = "channel_create", run = function()
                  http.get("https://crm.example.com/slow", { timeout = 10 })
                end }
                """,
            ], client: gate, limits: LuaLimits(memoryLimit: 3 << 20, instructionLimit: 5_000_000))
        let event = try sample("channel_create__inbound.json")
        let events = RuleWorker.maxRetired * 3  // not every kill leaves the state full enough to replace it
        let runs = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<events { group.addTask { _ = await worker.process(event) } }
            }
        }
        // Every wait holds the state it started in until the gate opens: watch the kept states grow to the cap.
        var most = 0
        let deadline = ContinuousClock.now + .seconds(60)
        while most < RuleWorker.maxRetired, ContinuousClock.now < deadline {
            most = max(most, await worker.retiredStates)
            try await Task.sleep(for: .milliseconds(10))
        }
        for _ in 0..<20 { most = max(most, await worker.retiredStates) }  // and never past it
        gate.release()
        await runs.value
        #expect(most == RuleWorker.maxRetired, "kept states: \(most)")
        #expect(await worker.retiredStates == 0, "replaced states outlived the runs that held them")
    }
}

@Suite struct DeclinedEventTests {
    /// Kazoo sends every event of a hook's kind; most are taken by no rule. The engine finishes those before
    /// `submit` returns (no task, no worker), with the report a worker would give, except when an earlier
    /// event of the same call is still running: then the call's order holds.
    @Test func anEventNoRuleTakesIsFinishedAtOnceUnlessItsCallIsStillRunning() async throws {
        let gate = GateClient()
        let files = [
            "picky.lua":
                "return { name = 'picky', on = 'channel_create', match = { call_direction = 'nowhere' }, run = function() end }",
            "slow.lua": """
            return { name = 'slow', on = 'channel_create', match = { call_direction = 'inbound' },
              run = function() http.get('http://127.0.0.1:9/slow') end }
            """,
        ]
        let journal = RecordingJournal()
        let engine = try await Engine(
            source: RuleSource(directory: "rules", files: files), configuration: RuleConfiguration(), workers: 2,
            client: gate, metrics: Metrics(), logger: Logger(label: "test"), grace: .seconds(1), journal: journal)
        let seen = Mutex<[(id: String, rules: [String])]>([])
        engine.observeReports { report, meta in
            let rules = report.rules.map { "\($0.rule):\($0.outcome.rawValue):\($0.stage ?? "-")" }
            seen.withLock { $0.append((meta["id"]?.stringValue ?? "?", rules)) }
        }
        func marked(_ id: String) -> Bool { journal.marks.withLock { $0.contains { $0.id == id } } }

        // An inbound call's first event: `slow` runs and waits on the gate.
        await engine.submit(try sample("channel_create__inbound.json"), meta: ["id": "create"])
        #expect(await eventually { gate.waiting.withLock { $0.count } == 1 })
        // Another call's event that both rules decline at `match`: done when submit returns.
        await engine.submit(try sample("channel_create__outbound.json"), meta: ["id": "other"])
        #expect(marked("other"))
        #expect(engine.eventsInFlight == 1)
        // The first call's channel_destroy, which no rule names: it waits for the call's running event.
        await engine.submit(try sample("channel_destroy__inbound.json"), meta: ["id": "destroy"])
        #expect(!marked("destroy"))
        gate.release()
        #expect(await eventually { marked("create") && marked("destroy") })
        let reports = seen.withLock { $0 }
        #expect(reports.map(\.id) == ["other", "create", "destroy"])
        #expect(reports.first?.rules == ["picky:skipped:match", "slow:skipped:match"])
        #expect(reports.last?.rules == [])
        #expect(engine.metrics.value("switchboard_rule_runs_total", [("rule", "slow"), ("outcome", "skipped")]) == 1)
    }
}

/// Notes, for each request, whether it was sent from `loop`'s thread, and answers 1 ms later from a timer.
final class WhereClient: OutboundHTTPClient {
    let loop = Mutex<(any EventLoop)?>(nil)
    let sentOnLoop = Mutex<[Bool]>([])

    func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        let onLoop = loop.withLock { $0?.inEventLoop == true }
        sentOnLoop.withLock { $0.append(onLoop) }
        try await Task.sleep(for: .milliseconds(1))
        return OutboundResponse(status: 200)
    }
}

@Suite struct WorkerLoopTests {
    /// Each worker has an event loop of its own, and an event's task runs there from its start to its report,
    /// the worker included: from the HTTP handler on that loop to the rules and back, no other thread.
    @Test func workersRunOnTheirOwnLoopsAndEventsRunOnTheirWorkersLoop() async throws {
        let files = ["t.lua": "return { name = 't', on = 'channel_create', run = function() end }"]
        let engine = try await Engine(
            source: RuleSource(directory: "rules", files: files), configuration: RuleConfiguration(), workers: 2,
            client: DryRunHTTPClient(), metrics: Metrics(), logger: Logger(label: "test"), grace: .seconds(1),
            journal: RecordingJournal())
        let workers = engine.workers
        #expect(workers[0].executor.loop !== workers[1].executor.loop)
        for worker in workers {
            #expect(await Task(executorPreference: worker.executor) { worker.executor.loop.inEventLoop }.value)
        }
        // The report is made at the end of the event's task: on the loop of the worker its call maps to.
        let loops = Mutex<[Bool]>([])
        engine.observeReports { report, _ in
            let worker = workers[Engine.slot(of: report.event.callID ?? "", among: workers.count)]
            loops.withLock { $0.append(worker.executor.loop.inEventLoop) }
        }
        for i in 0..<8 {
            var event = try sample("channel_create__inbound.json")
            event.fields["call_id"] = .string("loop-\(i)")
            await engine.submit(event, meta: ["id": .string("e\(i)")])
        }
        #expect(await eventually { loops.withLock { $0.count } == 8 })
        #expect(loops.withLock { $0 } == Array(repeating: true, count: 8))
    }

    /// A worker called from a task that prefers no loop (the commands, the console's Try it, tests) still
    /// runs its rules on its own loop, before an HTTP wait and after it, whose answer comes from a timer's
    /// thread; two events at once interleave there at their waits.
    @Test func aWorkerCalledFromElsewhereRunsOnItsOwnLoop() async throws {
        let client = WhereClient()
        let worker = try makeWorker(
            [
                "w.lua": """
                return { name = "w", on = "channel_create", run = function()
                  http.get("http://127.0.0.1:9/a")
                  http.get("http://127.0.0.1:9/b")
                end }
                """
            ], client: client)
        client.loop.withLock { $0 = worker.executor.loop }
        #expect(!worker.executor.loop.inEventLoop)
        let event = try sample("channel_create__inbound.json")
        async let one = worker.process(event)
        async let two = worker.process(event)
        let reports = await [one, two]
        #expect(reports.map { $0.outcome("w")?.outcome } == [.ok, .ok])
        #expect(reports.map { $0.outcome("w")?.http.count } == [2, 2])
        #expect(client.sentOnLoop.withLock { $0 } == [true, true, true, true])
        #expect(await worker.rules.map(\.name) == ["w"])
    }
}

/// `on` patterns are parsed once into a form; matching must still mean what the names say, for every sample
/// event and every name `on` accepts, with and without the hook the URL gives.
@Suite struct EventPatternTests {
    static func expected(_ text: String, _ event: WebhookEvent) -> Bool {
        if text == "*" { return true }
        if text == "channel.*" { return event.kind == .channel || event.hook?.hasPrefix("channel_") == true }
        if text.hasSuffix(".*") { return event.hook == String(text.dropLast(2)) }
        return event.qualifiedName == text
    }

    @Test func everyKnownNameMatchesWhatItSays() throws {
        let files = try FileManager.default.contentsOfDirectory(
            atPath: repositoryRoot.appendingPathComponent("samples").path
        ).sorted()
        var matched = 0
        for file in files {
            let hook = file.components(separatedBy: "__").first
            for event in [try sample(file), try sample(file, hook: hook)] {
                for text in EventPattern.knownNames {
                    let pattern = try #require(EventPattern(text))
                    let got = pattern.matches(event, qualifiedName: event.qualifiedName)
                    #expect(got == Self.expected(text, event), "\(text) on \(file) (hook \(event.hook ?? "none"))")
                    if got, text.hasSuffix(".*"), text != "*" { matched += 1 }
                }
            }
        }
        // The families really were exercised, not only "no".
        #expect(matched > files.count)
    }
}

/// Rules get the payload with `kind`, `name`, `unix_time`, `meta` and (when the payload has none) `id` set
/// over it; the worker pushes those beside the payload instead of copying it, and `luaEvent` (used by
/// `switchboard test`) must describe the same table.
@Suite struct EventTableTests {
    @Test func addedFieldsReplaceThePayloadsAndMatchLuaEvent() async throws {
        let text = try String(
            contentsOf: repositoryRoot.appendingPathComponent("samples/channel_create__inbound.json"), encoding: .utf8)
        let body = text.replacingOccurrences(
            of: "{", with: #"{"kind": "payload", "name": "payload", "#, options: [], range: text.range(of: "{"))
        let event = try EventDecoder().decode(Array(body.utf8), format: .json, hook: nil)
        let worker = try makeWorker([
            "e.lua": #"""
            return { name = "e", on = "channel_create", forward = "http://127.0.0.1:9/x", transform = function(e)
              return { kind = e.kind, name = e.name, id = e.id, meta_id = e.meta.id, call_id = e.call_id,
                unix_time = e.unix_time }
            end }
            """#
        ])
        let meta: JSONValue = ["id": "m-1"]
        let report = await worker.process(event, meta: meta)
        let seen = try #require(report.outcome("e")?.forwards.first?.body)
        #expect(seen["kind"] == "channel")
        #expect(seen["name"] == "channel_create")
        #expect(seen["id"] == "m-1")
        #expect(seen["meta_id"] == "m-1")
        let described = RuleWorker.luaEvent(event, meta: meta)
        for key in ["kind", "name", "id", "call_id", "unix_time"] {
            #expect(seen[key] == described[key], "\(key)")
        }
        #expect(described["unix_time"] != nil)
    }
}
