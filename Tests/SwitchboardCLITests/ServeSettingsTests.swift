import ArgumentParser
import Delivery
import Foundation
import Logging
import LuaRuntime
import RuleEngine
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
        // Each of these stopped the process (an empty network's address part, a timeout whose nanoseconds
        // overflow) instead of being a mistake to fix.
        do {
            _ = try ServeCommand.parse(["--forward-timeout", "1e10"]).settings(environment: [:])
            Issue.record("expected an error")
        } catch let error as ValidationError {
            #expect(error.message == "--forward-timeout: forward-timeout must be at most 36500d")
        }
        #expect(throws: ValidationError.self) {
            try ServeCommand.parse(["--allow-source", "/"]).settings(environment: [:])
        }
        #expect(CIDR("/") == nil && CIDR("") == nil)
        do {
            _ = try ServeCommand.parse(["--port", "70000"]).settings(environment: [:])
            Issue.record("expected an error")
        } catch let error as ValidationError {
            #expect(error.message == "--port: port must be at most 65535, not 70000")
        }
        // Each call in flight holds a descriptor; a larger ceiling could only overflow the server's arithmetic.
        do {
            _ = try ServeCommand.parse(["--max-http-in-flight", "\(Int.max)"]).settings(environment: [:])
            Issue.record("expected an error")
        } catch let error as ValidationError {
            #expect(
                error.message
                    == "--max-http-in-flight: max-http-in-flight must be at most 1000000, not \(Int.max)")
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

    @Test func listsFlagsAndCommasReadTheSameFromEverySource() throws {
        let repeated = try ServeCommand.parse(["--allow-http-to", "10.0.0.0/8", "--allow-http-to=127.0.0.1/32"])
            .settings(environment: [:]).0
        #expect(repeated.allowHTTPTo.map(\.description) == ["10.0.0.0/8", "127.0.0.1/32"])
        let fromEnv = try ServeCommand.parse([]).settings(environment: [
            "SWITCHBOARD_ALLOW_ENV": "A, B", "SWITCHBOARD_JOURNAL_FSYNC": "1", "SWITCHBOARD_TOKEN": "x,y",
        ]).0
        #expect(fromEnv.rules.allowedEnvironment == ["A", "B"])
        #expect(fromEnv.journalFsync)
        #expect(fromEnv.token == "x,y")
        let flagged = try ServeCommand.parse(["--journal-fsync", "--token", "p,q", "--journal", "off"])
            .settings(environment: [:]).0
        #expect(flagged.journalFsync)
        #expect(flagged.token == "p,q")
        #expect(!flagged.journal)
        let file = try configFile("journal_fsync: true\nmax_memory_mb: 32\nshutdown_grace_ms: 250\nlog_level: debug\n")
        let fromFile = try ServeCommand.parse(["--config", file]).settings(environment: [:])
        #expect(fromFile.0.journalFsync)
        #expect(fromFile.0.rules.limits.memoryLimit == 32 << 20)
        #expect(fromFile.0.shutdownGrace == .milliseconds(250))
        #expect(fromFile.logLevel == .debug)
    }

    /// The message of the error `serve` gives for these arguments and environment, or nil if it accepts them.
    func refusal(_ arguments: [String], _ environment: [String: String] = [:]) throws -> String? {
        do {
            _ = try ServeCommand.parse(arguments).settings(environment: environment)
            return nil
        } catch let error as ValidationError {
            return error.message
        }
    }

    @Test func unknownFlagsAndStrayWordsAreNamed() throws {
        #expect(try refusal(["--prot", "1"])?.hasPrefix("unknown option '--prot' (did you mean --port?)") == true)
        #expect(try refusal(["--port", "1", "2"])?.hasPrefix("unexpected argument '2'") == true)
        #expect(
            try refusal([], ["SWITCHBOARD_WORKERS": "0"]) == "SWITCHBOARD_WORKERS: workers must be at least 1, not 0")
        #expect(try refusal(["--port", "1"]) == nil)
    }

    /// The help is generated from the same table the settings are read from: every flag it lists parses, and its
    /// defaults are the configuration's own.
    @Test func theHelpListsEverySettingWithItsDefault() throws {
        let help = ServeCommand.helpMessage(columns: 200)
        let flags = help.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("--"), !trimmed.hasPrefix("--version"), !trimmed.hasPrefix("--help") else {
                return nil
            }
            return String(trimmed.prefix { $0 != " " })
        }
        #expect(flags.count >= 30)
        #expect(Set(flags).count == flags.count)
        for flag in flags {
            #expect(throws: Never.self, "\(flag)") { try ServeSettingsProbe.acceptsFlag(flag) }
        }
        #expect(help.contains("--port <n>"))
        #expect(help.contains("Default: 8080."))
        #expect(help.contains("Default: 7d."))
        #expect(help.contains("--journal <on|off>"))
    }
}

/// Gives each flag a value of its kind and checks nothing complains that the flag is unknown.
enum ServeSettingsProbe {
    static func acceptsFlag(_ flag: String) throws {
        for value in ["1", "on", "1s", "info", "text", "127.0.0.1/32", "x:y", "NAME", "postgres://u@h/db"] {
            do {
                _ = try ServeCommand.parse([flag, value]).settings(environment: [:])
                return
            } catch let error as ValidationError where !error.message.contains("unknown option") {
                continue
            }
        }
        _ = try ServeCommand.parse([flag]).settings(environment: [:])  // a flag without a value
    }
}
