import ArgumentParser
import Foundation
import JSONCore
import NIOHTTP1
import RuleEngine
import TestSupport
import Testing

@testable import SwitchboardCLI

/// `switchboard kazoo sync|status` against a loopback stand-in for crossbar (Fixtures/crossbar_mock.py): the
/// edge a user would mock too.
@Suite(.serialized) struct KazooSyncTests {
    static let apiKey = String(repeating: "k", count: 64)

    /// A running mock; `state()` reads what it holds.
    final class Mock {
        let process = Process()
        let port: Int
        init(seed: JSONValue) async throws {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent(
                "crossbar-\(UUID().uuidString).json")
            try Data(try JSONWriter.encode(seed)).write(to: file)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Fixtures/crossbar_mock.py").path
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", script, file.path]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice  // it must not hold the test runner's output open
            try process.run()
            // Its first line is its port. (Waited for on a thread of its own, not one of those Swift's tasks share.)
            let output = pipe.fileHandleForReading
            let line = try await onOwnThread {
                var line = Data()
                while let byte = try output.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) { line += byte }
                return line
            }
            port = Int(String(decoding: line, as: UTF8.self)) ?? 0
        }
        /// SIGKILL: the test process blocks SIGTERM for its own handlers, and a child inherits that mask.
        func stop() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        var api: String { "http://127.0.0.1:\(port)" }

        func state() async throws -> JSONValue {
            try await Crossbar(api: api, account: "acct1", credentials: .apiKey("")).using {
                try await $0.send(.GET, "/_state", data: nil, authenticated: false).1
            }
        }
    }

    static let rules = [
        "calls.lua": #"return { on = { "channel_create", "channel_destroy" }, run = function() end }"#,
        "money.lua":
            #"return { on = { "notifications.low_balance", "notifications.missed_call" }, run = function() end }"#,
        "objects.lua":
            #"return { on = { "object.doc_edited", "parking.PARK_PARKED", "webhook" }, run = function() end }"#,
    ]

    func sync(_ mock: Mock, _ extra: [String], rules: String) async throws {
        try await Self.kazoo(
            [
                "sync", "--api", mock.api, "--account", "acct1", "--rules", rules,
                "--public-url", "https://switchboard.example.com", "--token", "s3cret",
            ] + extra)
    }

    /// Runs `switchboard kazoo ARGUMENTS...` in this process.
    static func kazoo(_ arguments: [String]) async throws {
        guard var command = try KazooCommand.parseAsRoot(arguments) as? any AsyncParsableCommand else {
            throw CommandFailure("not async")
        }
        try await command.run()
    }

    @Test func syncCreatesUpdatesAndDeletesOnlyItsOwnHooks() async throws {
        let mock = try await Mock(seed: [
            "api_key": .string(Self.apiKey), "page_size": 2, "token_requests": 3,
            "hooks": [
                [
                    "id": "u1", "name": "crm (by hand)", "hook": "channel_create", "uri": "https://crm.example.com/k",
                    "enabled": true,
                ],
                [
                    "id": "s1", "name": "switchboard: sms", "hook": "sms", "uri": "https://old.example.com/hooks/sms",
                    "enabled": true,
                ],
                [
                    "id": "s2", "name": "switchboard: channel_create", "hook": "channel_create",
                    "uri": "https://old.example.com/hooks/channel_create", "enabled": false,
                    "disable_reason": "too many failed attempts",
                ],
                // Disabled by hand (no reason): left off.
                [
                    "id": "s3", "name": "switchboard: channel_destroy", "hook": "channel_destroy",
                    "uri": "https://switchboard.example.com/hooks/channel_destroy/s3cret", "enabled": false,
                ],
                // Two of one name (an interrupted sync): one goes.
                [
                    "id": "s4", "name": "switchboard: parking", "hook": "parking",
                    "uri": "https://switchboard.example.com/hooks/parking/s3cret", "enabled": true, "format": "json",
                ],
                [
                    "id": "s5", "name": "switchboard: parking", "hook": "parking",
                    "uri": "https://switchboard.example.com/hooks/parking/s3cret", "enabled": true, "format": "json",
                ],
            ],
        ])
        defer { mock.stop() }
        let rules = try temporaryRules(Self.rules)
        // Dry run: the plan, no change.
        try await sync(mock, ["--api-key", Self.apiKey, "--dry-run"], rules: rules)
        #expect(try await mock.state()["hooks"]?.arrayValue?.count == 6)

        try await sync(mock, ["--api-key", Self.apiKey], rules: rules)
        let state = try await mock.state()
        let hooks = try #require(state["hooks"]?.arrayValue)
        let byName = Dictionary(uniqueKeysWithValues: hooks.compactMap { h in h["name"]?.stringValue.map { ($0, h) } })
        #expect(
            Set(byName.keys) == [
                "crm (by hand)", "switchboard: channel_create", "switchboard: channel_destroy",
                "switchboard: notifications type=low_balance", "switchboard: notifications type=missed_call",
                "switchboard: object type=all action=doc_edited", "switchboard: parking",
            ])
        #expect(Set(state["deleted"]?.arrayValue ?? []) == ["switchboard: sms", "switchboard: parking"])
        #expect(hooks.count == 7)
        #expect(byName["switchboard: channel_destroy"]?["enabled"] == false)
        // The user's own hook is untouched; the disabled one of ours is re-pointed and enabled again.
        #expect(byName["crm (by hand)"]?["uri"] == "https://crm.example.com/k")
        let create = try #require(byName["switchboard: channel_create"])
        #expect(create["uri"] == "https://switchboard.example.com/hooks/channel_create/s3cret")
        #expect(create["enabled"] == true && create["disable_reason"] == nil)
        let lowBalance = try #require(byName["switchboard: notifications type=low_balance"])
        #expect(lowBalance["custom_data"] == ["type": "low_balance"])
        #expect(lowBalance["format"] == "json")
        #expect(lowBalance["uri"] == "https://switchboard.example.com/hooks/notifications/s3cret")
        #expect(
            byName["switchboard: object type=all action=doc_edited"]?["custom_data"] == [
                "type": "all", "action": "doc_edited",
            ])
        // Tokens lasted 3 requests, so the client logged in again along the way.
        #expect((state["auth_calls"]?.intValue ?? 0) >= 2)

        // Run again: everything is kept.
        try await sync(mock, ["--api-key", Self.apiKey], rules: rules)
        #expect(try await mock.state()["hooks"]?.arrayValue?.count == 7)
        #expect(try await mock.state()["deleted"]?.arrayValue?.count == 2)
        // include_subaccounts is not in Kazoo's list: sync reads each hook and updates the ones that differ.
        try await sync(mock, ["--api-key", Self.apiKey, "--include-subaccounts"], rules: rules)
        let widened = try #require(try await mock.state()["hooks"]?.arrayValue)
        let ours = widened.filter { $0["name"]?.stringValue?.hasPrefix("switchboard: ") == true }
        #expect(ours.filter { $0["include_subaccounts"] == true }.count == 5)  // not the one left off by hand
    }

    @Test func errorsSayWhatKazooSaid() async throws {
        let mock = try await Mock(seed: [
            "api_key": .string(Self.apiKey), "users": ["admin": "secret"], "account_name": "acme",
        ])
        defer { mock.stop() }
        let rules = try temporaryRules(Self.rules)
        func message(_ arguments: [String]) async -> String {
            do {
                try await Self.kazoo(["sync", "--api", mock.api, "--account", "acct1", "--rules", rules] + arguments)
                return "ok"
            } catch { return "\(error)" }
        }
        // Kazoo refuses a loopback URL for a hook.
        let local = await message(["--api-key", Self.apiKey, "--public-url", "http://localhost:8080"])
        #expect(local.contains("400 validation error: uri: invalid client URL (http://localhost:8080/hooks/"))
        let wrongUser = await message([
            "--user", "admin", "--password", "nope", "--account-name", "acme", "--public-url", "https://s.example.com",
        ])
        #expect(wrongUser.contains("401 invalid_credentials"))
        #expect(wrongUser.contains("check the API key, or the user, password and account name"))
        let user = await message([
            "--user", "Admin", "--password", "secret", "--account-name", "acme", "--public-url",
            "https://s.example.com",
        ])
        #expect(user == "ok")
        let shortKey = await message(["--api-key", "short", "--public-url", "https://s.example.com"])
        #expect(shortKey.contains("api_key: String must be at least 64 characters"))
    }

    /// An API URL that redirects (http to https, a moved host) is not followed: the login's credentials and
    /// the token would go along to wherever it points. The error says so and names the place.
    @Test func aRedirectingAPIIsNotFollowed() async throws {
        let elsewhere = try await LoopbackServer()
        let redirector = try await LoopbackServer()
        defer {
            Task {
                try? await elsewhere.stop()
                try? await redirector.stop()
            }
        }
        let rules = try temporaryRules(Self.rules)
        // LoopbackServer's /redirect answers 302 to what follows `to=`, the request's path included.
        let api = "http://127.0.0.1:\(redirector.port)/redirect?to=http://127.0.0.1:\(elsewhere.port)"
        do {
            try await Self.kazoo([
                "sync", "--api", api, "--account", "acct1", "--rules", rules, "--api-key", Self.apiKey,
                "--public-url", "https://s.example.com",
            ])
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("with 302, a redirect to http://127.0.0.1:\(elsewhere.port)/v2/"))
            #expect("\(error)".contains("not followed (it would take the credentials along): give the API's own URL"))
        }
        #expect(elsewhere.requests.isEmpty)
        #expect(redirector.requests.count == 1)
    }

    @Test func statusShowsDisabledHooksAndFailedAttempts() async throws {
        let mock = try await Mock(seed: [
            "api_key": .string(Self.apiKey), "page_size": 1,
            "hooks": [
                [
                    "id": "a", "name": "switchboard: channel_create", "hook": "channel_create",
                    "uri": "https://s.example.com/hooks/channel_create/tok", "enabled": false,
                    "disable_reason": "too many failed attempts",
                ],
                [
                    "id": "b", "name": "switchboard: parking", "hook": "parking",
                    "uri": "https://s.example.com/hooks/parking", "enabled": true,
                ],
            ],
            "attempts": [
                "a": [
                    ["hook_id": "a", "result": "failure", "reason": "bad response code", "resp_status_code": "500"],
                    ["hook_id": "a", "result": "failure", "reason": "bad response code", "resp_status_code": "502"],
                ]
            ],
        ])
        defer { mock.stop() }
        let crossbar = Crossbar(api: mock.api, account: "acct1", credentials: .apiKey(Self.apiKey))
        let lines = try await KazooHooks.status(crossbar: crossbar)
        await crossbar.shutdown()
        #expect(
            lines == [
                "DISABLED  switchboard: channel_create (too many failed attempts)  https://s.example.com/hooks/channel_create/…",
                "          2 failed attempt(s) in Kazoo's log; the latest: bad response code 500",
                "enabled   switchboard: parking  https://s.example.com/hooks/parking",
            ])
    }
}

/// `serve --kazoo-keep-enabled` with the real binary and the crossbar stand-in.
@Suite struct KazooKeepEnabledTests {
    @Test func theServerEnablesAgainTheHooksKazooDisabled() async throws {
        let binary = rulesDirectory + "/../.build/debug/switchboard"
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the binary first")
        let mock = try await KazooSyncTests.Mock(seed: [
            "api_key": .string(KazooSyncTests.apiKey),
            "hooks": [
                [
                    "id": "a", "name": "switchboard: channel_create", "hook": "channel_create",
                    "uri": "https://s.example.com/hooks/channel_create", "enabled": false,
                    "disable_reason": "too many failed attempts",
                ],
                // Disabled by hand (no reason), and someone else's: both left alone.
                [
                    "id": "b", "name": "switchboard: parking", "hook": "parking",
                    "uri": "https://s.example.com/hooks/parking", "enabled": false,
                ],
                [
                    "id": "c", "name": "crm", "hook": "channel_create", "uri": "https://crm.example.com/k",
                    "enabled": false,
                    "disable_reason": "too many failed attempts",
                ],
            ],
        ])
        defer { mock.stop() }
        let rules = try temporaryRules(["r.lua": #"return { on = "channel_create", run = function() end }"#])
        let port = freeLoopbackPort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = [
            "serve", "--rules", rules, "--port", "\(port)", "--journal", "off", "--log-level", "error",
            "--kazoo-keep-enabled", "--kazoo-api", mock.api, "--kazoo-account", "acct1", "--kazoo-check-every", "1s",
        ]
        server.environment = ["SWITCHBOARD_KAZOO_API_KEY": KazooSyncTests.apiKey]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        func enabled() async throws -> [String: Bool] {
            let hooks = try await mock.state()["hooks"]?.arrayValue ?? []
            return Dictionary(
                uniqueKeysWithValues: hooks.compactMap { h in
                    h["id"]?.stringValue.map { ($0, h["enabled"]?.boolValue ?? false) }
                })
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, try await enabled()["a"] != true {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await enabled() == ["a": true, "b": false, "c": false])
        // /metrics counts it.
        let crossbar = Crossbar(api: "http://127.0.0.1:\(port)", account: "", credentials: .apiKey(""))
        var metricsText = ""
        while ContinuousClock.now < deadline, !metricsText.contains("switchboard_kazoo_hooks_reenabled_total") {
            if let (_, body) = try? await crossbar.sendText(.GET, "/metrics") { metricsText = body }
            try await Task.sleep(for: .milliseconds(50))
        }
        await crossbar.shutdown()
        #expect(metricsText.contains(#"switchboard_kazoo_hooks_reenabled_total{hook="switchboard: channel_create"} 1"#))
    }
}
