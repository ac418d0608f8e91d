import ArgumentParser
import Foundation
import JSONCore
import KazooEvents
import RuleEngine
import RuleTesting
import SwitchboardCLI
import Testing

@Suite struct StubsTests {
    let stubs = LuaStubs.definitions()

    @Test func everyEventHasAClassWithEveryField() {
        var missing: [String] = []
        for spec in EventCatalog.all {
            let name = LuaStubs.className(spec)
            guard let start = stubs.range(of: "---@class \(name): Event\n") else {
                missing.append(name)
                continue
            }
            let body = stubs[start.upperBound...].prefix { _ in true }.split(separator: "\n\n", maxSplits: 1)[0]
            for field in spec.fields {
                let key = field.name.contains("-") ? "[\"\(field.name)\"]" : field.name
                if !body.contains("---@field \(key) ") { missing.append("\(name).\(field.name)") }
            }
        }
        #expect(missing.isEmpty, "not in the stubs: \(missing.prefix(10))")
        #expect(stubs.contains("---@class NotificationsLowBalanceEvent: Event\n"))
        #expect(stubs.contains("---@field current_balance number? in billing units"))
        // Nested objects with known members get their own class.
        #expect(stubs.contains("---@field notify NotificationsMissedCallNotify? the CHANNEL_DESTROY"))
        #expect(stubs.contains("---@class NotificationsMissedCallNotify\n---@field billing_seconds integer?"))
    }

    /// Every function the rule API installs, read from a real Lua state, is declared.
    @Test func everyFunctionOfTheRuleAPIIsDeclared() async throws {
        let rule = """
            local names = {}
            local function collect(prefix, t)
              for k, v in pairs(t) do
                if type(v) == "function" then names[#names + 1] = prefix .. "." .. k end
              end
            end
            for _, area in ipairs({ "log", "http", "json", "kazoo", "store", "call" }) do collect(area, _G[area]) end
            collect("store.shared", store.shared)
            for _, name in ipairs({ "env", "forward", "print" }) do
              if type(_G[name]) == "function" then names[#names + 1] = name end
            end
            return { name = "probe", on = "channel_create", run = function() log.info(table.concat(names, " ")) end }
            """
        let worker = try RuleWorker(
            source: RuleSource(directory: "rules", files: ["probe.lua": rule]),
            configuration: RuleConfiguration(environment: [:]))
        let report = await worker.process(
            try EventDecoder().decode(Array(#"{"call_id":"c"}"#.utf8), format: .json, hook: "channel_create"))
        let names = try #require(report.rules.first?.logs.first?.message).split(separator: " ").map(String.init)
        #expect(names.count > 20)
        var undeclared: [String] = []
        for name in names where name != "print" {
            let declared =
                name.hasPrefix("store.")
                ? "function StoreFunctions.\(name.split(separator: ".").last!)(" : "function \(name)("
            if !stubs.contains(declared) { undeclared.append(name) }
        }
        #expect(undeclared.isEmpty, "the rule API has functions the stubs do not declare: \(undeclared)")
    }

    @Test func theShippedStubsAreCurrent() throws {
        let shipped = try String(contentsOfFile: rulesDirectory + "/.luals/switchboard.lua", encoding: .utf8)
        #expect(shipped == stubs, "rules/.luals/switchboard.lua is stale: run switchboard stubs")
        #expect(FileManager.default.fileExists(atPath: rulesDirectory + "/.luarc.json"))
    }

    @Test func theStubsAreNeverLoadedAsRules() throws {
        let source = try RuleSource.read(directory: rulesDirectory)
        #expect(!source.rules.contains { $0.path.contains(".luals") })
    }
}

@Suite struct NewCommandTests {
    let samples = rulesDirectory + "/../samples"

    func write(_ arguments: [String], into directory: String) throws {
        let command = try NewCommand.parse(arguments + ["--rules", directory, "--samples", samples])
        try command.run()
    }

    @Test func theRuleAndTestItWritesPassCheckAndTest() async throws {
        let directory = try temporaryRules([:])
        try write(["crm-pop", "--on", "channel_create", "--forward", "https://crm.example.com/pop"], into: directory)
        try write(["balance-alert", "--on", "notifications.low_balance"], into: directory)
        let rule = try String(contentsOfFile: directory + "/crm_pop.lua", encoding: .utf8)
        #expect(rule.contains("---@param event ChannelCreateEvent"))
        #expect(rule.contains(#"forward = "https://crm.example.com/pop","#))
        let (text, ok) = try await CheckReport.run(
            directory: directory, configuration: RuleConfiguration(environment: [:]))
        #expect(ok, "\(text)")
        #expect(text.hasSuffix("check: 2 of 2 rules OK, 0 errors, 0 warnings"))
        let report = await TestRunner(
            source: try RuleSource.read(directory: directory), samplesDirectory: samples,
            configuration: RuleConfiguration(environment: [:])
        ).run()
        #expect(report.ok, "\(report.results.compactMap(\.failure?.message)) \(report.loadErrors)")
        #expect(
            report.results.map(\.name).sorted() == [
                "balance-alert handles notifications.low_balance", "crm-pop handles channel_create",
            ])
    }

    @Test func mistakesAreRefusedWithWhatToDo() throws {
        let directory = try temporaryRules([:])
        #expect(throws: (any Error).self) { try NewCommand.parse(["x", "--on", "low_balanc"]) }
        do {
            _ = try NewCommand.parse(["x", "--on", "low_balanc"])
        } catch {
            #expect(NewCommand.message(for: error).contains("did you mean notifications.low_balance?"))
        }
        #expect(throws: (any Error).self) { try NewCommand.parse(["x", "--on", "notifications.*"]) }
        #expect(throws: (any Error).self) { try NewCommand.parse(["a b", "--on", "sms"]) }
        try write(["dup", "--on", "sms"], into: directory)
        #expect(throws: (any Error).self) { try write(["dup", "--on", "sms"], into: directory) }
    }
}
