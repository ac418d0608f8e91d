import ArgumentParser
import Delivery
import Foundation
import SwitchboardCLI
import Testing
import WebhookServer

@Suite struct ServeSettingsTests {
    func configFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchboard-\(UUID().uuidString).yaml"
        ).path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func flagsOverrideTheEnvironmentWhichOverridesTheFile() throws {
        let file = try configFile(
            "port: 1111\ntoken: from-file\nallow_http_to: [127.0.0.1/32, 10.0.0.0/8]\nworkers: 3\n")
        let env = ["SWITCHBOARD_PORT": "2222", "SWITCHBOARD_TOKEN": "from-env"]
        let flagged = try ServeCommand.parse(["--config", file, "--port", "3333"]).settings(environment: env).0
        #expect(flagged.port == 3333)
        #expect(flagged.token == "from-env")
        #expect(flagged.workers == 3)
        #expect(flagged.allowHTTPTo.map(\.description) == ["127.0.0.1/32", "10.0.0.0/8"])
        let fromEnv = try ServeCommand.parse(["--config", file]).settings(environment: env).0
        #expect(fromEnv.port == 2222)
        let fromFile = try ServeCommand.parse(["--config", file]).settings(environment: [:]).0
        #expect(fromFile.port == 1111)
        #expect(fromFile.token == "from-file")
        let defaults = try ServeCommand.parse([]).settings(environment: [:])
        #expect(defaults.0.port == 8080)
        #expect(defaults.0.host == "127.0.0.1")
        #expect(defaults.0.token == nil)
        #expect(defaults.logFormat == "text")
    }

    @Test func deliverySettingsTakeDurations() throws {
        let file = try configFile("retention: 2d\nforward_concurrency: 3\n")
        let c = try ServeCommand.parse(["--config", file, "--forward-max-age", "2h", "--dedupe-window", "90"])
            .settings(environment: ["SWITCHBOARD_FORWARD_BACKOFF": "500ms", "SWITCHBOARD_FORWARD_ATTEMPTS": "4"]).0
        #expect(c.outbox.maxAge == 7200)
        #expect(c.outbox.initialBackoff == 0.5)
        #expect(c.outbox.maxAttempts == 4)
        #expect(c.outbox.perDestination == 3)
        #expect(c.retention == 2 * 86_400)
        #expect(c.dedupeWindow == 90)
        let timed = try ServeCommand.parse(["--forward-timeout", "2500ms"]).settings(environment: [:]).0
        #expect(timed.outbox.timeout == .milliseconds(2500))
        let defaults = try ServeCommand.parse([]).settings(environment: [:]).0
        #expect(defaults.outbox == Outbox.Policy())
        #expect(defaults.dedupeWindow == 0)
        do {
            _ = try ServeCommand.parse(["--retention", "a week"]).settings(environment: [:])
            Issue.record("expected an error")
        } catch let error as ValidationError {
            #expect(error.message == #"--retention: "a week" is not a duration like 30s, 15m, 24h or 7d"#)
        }
    }

    @Test func mistakesAreClearErrors() throws {
        let file = try configFile("prot: 1\n")
        #expect(throws: ValidationError.self) { try ServeCommand.parse(["--config", file]).settings(environment: [:]) }
        do {
            _ = try ServeCommand.parse(["--config", file]).settings(environment: [:])
        } catch let error as ValidationError {
            #expect(error.message.contains("unknown setting 'prot' (did you mean port?)"))
        }
        do {
            _ = try ServeCommand.parse([]).settings(environment: ["SWITCHBOARD_PORT": "eighty"])
            Issue.record("expected an error")
        } catch let error as ValidationError {
            #expect(error.message == #"SWITCHBOARD_PORT: "eighty" is not a whole number"#)
        }
        #expect(throws: ValidationError.self) {
            try ServeCommand.parse(["--allow-http-to", "nonsense"]).settings(environment: [:])
        }
        #expect(throws: ValidationError.self) {
            try ServeCommand.parse(["--log-format", "xml"]).settings(environment: [:])
        }
    }
}
