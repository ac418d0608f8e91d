import ArgumentParser
import Delivery
import Foundation
import JSONCore
import KazooEvents
import RuleEngine
import SwitchboardCLI
import TestSupport
import Testing

let rulesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../rules").standardizedFileURL.path

/// A temporary rules directory holding `files`.
func temporaryRules(_ files: [String: String]) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-rules-\(UUID().uuidString)")
    for (path, text) in files {
        let url = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }
    return dir.path
}

@Suite struct RunCommandTests {
    func report(_ sampleName: String, rules: String = rulesDirectory) async throws -> EventReport {
        let worker = try RuleWorker(
            source: try RuleSource.read(directory: rules), configuration: RuleConfiguration(environment: [:]))
        guard case .success(let (event, _)) = EventFileReader().read("\(samples)/\(sampleName)") else {
            throw EventFileReader.Failure(message: "could not read \(sampleName)")
        }
        return await worker.process(event)
    }

    @Test func jsonOutputHasExactlyTheDocumentedKeys() async throws {
        let line = RunReport.json(file: "x.json", report: try await report("channel_create__inbound.json"))
        let object = try JSONReader.parse(Array(line.utf8))
        #expect(Set(object.objectValue?.keys ?? []) == ["file", "event", "rules"])
        #expect(object["event"] == ["kind": "channel", "name": "channel_create"])
        for rule in object["rules"]?.arrayValue ?? [] {
            #expect(
                Set(rule.objectValue?.keys ?? []) == ["rule", "outcome", "stage", "forwards", "http", "logs", "error"])
        }
        let crm = object["rules"]?.arrayValue?.first { $0["rule"] == "crm-popup" }
        #expect(crm?["outcome"] == "ok")
        #expect(
            Set(crm?["forwards"]?.arrayValue?.first?.objectValue?.keys ?? []) == ["method", "url", "headers", "body"])
        #expect(Set(crm?["http"]?.arrayValue?.first?.objectValue?.keys ?? []) == ["method", "url", "status", "error"])
        #expect(Set(crm?["logs"]?.arrayValue?.first?.objectValue?.keys ?? []) == ["level", "message", "fields"])
    }

    @Test func errorsShowFileLineAndTraceback() async throws {
        let dir = try temporaryRules([
            "broken.lua":
                "return {\n  on = 'channel_create',\n  run = function(event)\n    return event.nope.x\n  end,\n}\n"
        ])
        let report = try await report("channel_create__inbound.json", rules: dir)
        let text = RunReport.text(file: "f.json", report: report)
        #expect(text.contains("  error    broken (run failed)"))
        #expect(
            text.contains("error: \(dir)/broken.lua:4: attempt to index a userdata value (field 'nope')")
                || text.contains("broken.lua:4:"))
        #expect(text.contains("stack traceback:"))
        let json = try JSONReader.parse(Array(RunReport.json(file: "f.json", report: report).utf8))
        let error = json["rules"]?.arrayValue?.first?["error"]
        #expect(error?["line"] == 4)
        #expect(error?["file"] == .string("\(dir)/broken.lua"))
    }

    @Test func humanOutputSummarisesRulesSkippedByOn() async throws {
        let text = RunReport.text(file: "f.json", report: try await report("notifications__low_balance.json"))
        #expect(text.hasPrefix("f.json: notification low_balance"))
        #expect(text.contains("  ok       low-balance-chat"))
        #expect(text.contains("  ok       low-balance-digest"))
        #expect(
            text.contains(
                "  skipped  (on) call-summary, crm-popup, drop-internal-legs, missed-call-storm, missed-call-ticket, voicemail-to-chat"
            ))
    }

    @Test func parsing() throws {
        #expect(throws: (any Error).self) { try RunCommand.parse([]) }
        _ = try RunCommand.parse([
            "--rules", "r", "--live", "--json", "--hook", "webhook", "--allow-env", "CRM", "a.form",
        ])
        #expect(throws: (any Error).self) { try RunCommand.parse(["--max-instructions", "0", "a.json"]) }
    }
}

@Suite struct CheckCommandTests {
    @Test func theShippedRulesPass() async throws {
        let (text, ok) = try await CheckReport.run(
            directory: rulesDirectory, configuration: RuleConfiguration(environment: [:]))
        #expect(ok, "\(text)")
        #expect(text.hasSuffix("check: 8 of 8 rules OK, 0 errors, 0 warnings"))
        #expect(text.contains("timer: low-balance-digest ticks cron \"0 9 * * 1-5\" (Europe/Berlin), next at "))
    }

    @Test func problemsAreListedWithFileAndLine() async throws {
        let dir = try temporaryRules([
            "a.lua": "return {\n  on = 'notifications.low_balace',\n  run = function() end,\n}\n",
            "b.lua": "return { on = 'sms', run = function() end }",
        ])
        let (text, ok) = try await CheckReport.run(directory: dir, configuration: RuleConfiguration(environment: [:]))
        #expect(!ok)
        #expect(
            text.contains(
                "\(dir)/a.lua:2: error: unknown event \"notifications.low_balace\" in on (did you mean notifications.low_balance?)"
            ))
        #expect(text.hasSuffix("check: 1 of 2 rules OK, 1 error, 0 warnings"))
    }

    @Test func aMissingDirectoryIsAClearError() async throws {
        let (text, ok) = try await CheckReport.run(directory: "/nonexistent/rules", configuration: RuleConfiguration())
        #expect(!ok)
        #expect(text.contains("rules directory /nonexistent/rules does not exist"))
    }
}

/// `switchboard run --live`: forwards go through the outbox's retry engine, after the rule, for real.
@Suite struct LiveRunTests {
    @Test func liveForwardsAreSentAfterTheRule() async throws {
        let server = try await LoopbackServer()
        let client = GuardedHTTPClient.unrestricted()
        defer {
            Task {
                try? await client.shutdown()
                try? await server.stop()
            }
        }
        let rule = """
            return { name = "f", on = "channel_create", run = function()
              forward({ url = '\(server.url("/echo"))', format = 'form' }, { a = 'x y', n = 2 })
            end }
            """
        let worker = try RuleWorker(
            source: RuleSource(directory: "rules", files: ["f.lua": rule]),
            configuration: RuleConfiguration(environment: [:]), client: client)
        guard case .success(let (event, _)) = EventFileReader().read("\(samples)/channel_create__inbound.json") else {
            Issue.record("the sample did not decode")
            return
        }
        var report = await worker.process(event)
        #expect(server.requests.isEmpty, "a forward left before the outbox sent it")
        await RunCommand.sendForwards(of: &report.rules, client: client)
        #expect(report.rules.first?.forwards.first?.status == 200)
        let request = server.requests.first
        #expect(request?.method == "POST")
        #expect(request?.body == "a=x+y&n=2")
        #expect(
            request?.headers.contains {
                $0.0.lowercased() == "content-type" && $0.1 == "application/x-www-form-urlencoded"
            } == true)
        // A redirect the HTTP library cannot follow (NIO stops the process on a port past 65535) is an error.
        let refused = await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(
                OutboundRequest(
                    method: "GET", url: server.url("/redirect?to=http://127.0.0.1:65536/"), timeout: answerTimeout))
        }
        #expect(refused?.message.contains("(a port is 1-65535)") == true)
        // Names are the HTTP library's to resolve (no network policy): localhost reaches the loopback server.
        let local = try await client.execute(
            OutboundRequest(method: "GET", url: "http://localhost:\(server.port)/echo", timeout: answerTimeout))
        #expect(local.status == 200)
    }
}
