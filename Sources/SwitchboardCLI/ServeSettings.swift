import ArgumentParser
import Configuration
import Delivery
import Foundation
import KazooEvents
public import Logging
import LuaRuntime
import RuleEngine
import Synchronization
public import WebhookServer
import Yams

/// Everything `switchboard serve` is told: the server's configuration and how it logs.
public struct ServeSettings: Sendable {
    public var server = ServerConfiguration()
    public var logFormat = "text"
    public var logLevel = Logger.Level.info
    /// `--kazoo-keep-enabled` and the crossbar connection it uses.
    public var kazoo = KazooSettings()
    public init() {}
}

/// Where Kazoo's API is and how to log in, for `serve --kazoo-keep-enabled`.
public struct KazooSettings: Sendable {
    public var keepEnabled = false
    public var api = ""
    public var account = ""
    public var apiKey: String? = nil
    public var user = ""
    public var password: String? = nil
    public var accountName = ""
    public var checkEvery: Double = 60

    /// The crossbar client these settings describe; an error naming what is missing.
    func crossbar() throws -> Crossbar {
        guard api.hasPrefix("http"), !account.isEmpty else {
            throw ValidationError("--kazoo-keep-enabled needs --kazoo-api URL and --kazoo-account ID")
        }
        guard
            let crossbar = Crossbar.make(
                api: api, account: account, apiKey: apiKey, user: user, password: password, accountName: accountName)
        else {
            throw ValidationError(
                "--kazoo-keep-enabled needs --kazoo-api-key, or --kazoo-user, --kazoo-password and --kazoo-account-name"
            )
        }
        return crossbar
    }
}

/// One setting of `switchboard serve`, declared once. Its flag (`--max-body-bytes`), environment variable
/// (`SWITCHBOARD_MAX_BODY_BYTES`) and config-file key (`max_body_bytes`) all come from `name`; its default is
/// read from a default `ServeSettings` (so the help can never disagree with the code); `apply` parses the raw
/// text and stores it.
struct Setting: Sendable {
    enum Shape: Sendable {
        case scalar, list, flag
    }

    let name: String
    let valueName: String
    let help: String
    let shape: Shape
    let isSecret: Bool
    /// The default as the help shows it, when it is not a constant (the number of cores).
    var shownDefault: String? = nil
    /// The value in `settings`, as the help shows it.
    let show: @Sendable (ServeSettings) -> String
    /// Parses `raw` (one string, or several for a list; a flag's "true"/"false") and stores it.
    let apply: @Sendable (inout ServeSettings, _ raw: [String], _ origin: String) throws -> Void

    var environmentVariable: String { "SWITCHBOARD_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }
    var fileKey: String { name.replacingOccurrences(of: "-", with: "_") }
}

extension Setting {
    static func text(
        _ name: String, _ valueName: String, _ help: String,
        _ path: any WritableKeyPath<ServeSettings, String> & Sendable
    ) -> Setting {
        Setting(
            name: name, valueName: valueName, help: help, shape: .scalar, isSecret: false, show: { $0[keyPath: path] },
            apply: { settings, raw, _ in settings[keyPath: path] = raw.joined(separator: ",") })
    }

    static func secret(
        _ name: String, _ valueName: String, _ help: String,
        _ path: any WritableKeyPath<ServeSettings, String?> & Sendable,
        validate: @escaping @Sendable (String) -> String? = { _ in nil }
    ) -> Setting {
        Setting(
            name: name, valueName: valueName, help: help, shape: .scalar, isSecret: true,
            show: { $0[keyPath: path] == nil ? "none" : "set" },
            apply: { settings, raw, origin in
                let text = raw.joined(separator: ",")
                if let problem = validate(text) { throw ValidationError("\(origin): \(problem)") }
                settings[keyPath: path] = text
            })
    }

    /// A whole number; `minimum` guards the ones where 0 or less makes no sense.
    static func number(
        _ name: String, _ valueName: String, _ help: String, _ path: any WritableKeyPath<ServeSettings, Int> & Sendable,
        minimum: Int = 1, maximum: Int = .max, shownDefault: String? = nil
    ) -> Setting {
        Setting(
            name: name, valueName: valueName, help: help, shape: .scalar, isSecret: false, shownDefault: shownDefault,
            show: { String($0[keyPath: path]) },
            apply: { settings, raw, origin in
                let text = raw.joined(separator: ",")
                guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("\(origin): \"\(text)\" is not a whole number")
                }
                guard value >= minimum else {
                    throw ValidationError("\(origin): \(name) must be at least \(minimum), not \(value)")
                }
                guard value <= maximum else {
                    throw ValidationError("\(origin): \(name) must be at most \(maximum), not \(value)")
                }
                settings[keyPath: path] = value
            })
    }

    /// A duration in seconds, written `90`, `90s`, `500ms`, `15m`, `24h` or `7d`.
    static func duration(
        _ name: String, _ help: String, _ path: any WritableKeyPath<ServeSettings, Double> & Sendable,
        positive: Bool = false
    ) -> Setting {
        Setting(
            name: name, valueName: "duration", help: help, shape: .scalar, isSecret: false,
            show: { Durations.format($0[keyPath: path]) },
            apply: { settings, raw, origin in
                let text = raw.joined(separator: ",")
                guard let seconds = Durations.parse(text) else {
                    throw ValidationError("\(origin): \"\(text)\" is not a duration like 30s, 15m, 24h or 7d")
                }
                if positive && seconds <= 0 { throw ValidationError("\(origin): \(name) must be more than 0") }
                if seconds > Durations.longest {
                    throw ValidationError("\(origin): \(name) must be at most \(Durations.format(Durations.longest))")
                }
                settings[keyPath: path] = seconds
            })
    }

    /// One of a few words, each standing for a value.
    static func choice<Value: Sendable & Equatable>(
        _ name: String, _ help: String, _ path: any WritableKeyPath<ServeSettings, Value> & Sendable,
        _ choices: KeyValuePairs<String, Value>
    ) -> Setting {
        let table = choices.map { ($0.key, $0.value) }
        // Synonyms (yes/true for on) are accepted; the help names one word per value.
        let shown = table.enumerated().filter { i, pair in !table[..<i].contains { $0.1 == pair.1 } }.map(\.element.0)
        return Setting(
            name: name, valueName: shown.joined(separator: "|"), help: help, shape: .scalar, isSecret: false,
            show: { settings in table.first { $0.1 == settings[keyPath: path] }?.0 ?? "" },
            apply: { settings, raw, origin in
                let text = raw.joined(separator: ",").trimmingCharacters(in: .whitespaces).lowercased()
                guard let value = table.first(where: { $0.0 == text })?.1 else {
                    throw ValidationError(
                        "\(origin): \(name) must be one of \(shown.joined(separator: ", ")), not \"\(text)\"")
                }
                settings[keyPath: path] = value
            })
    }

    static func flag(_ name: String, _ help: String, _ path: any WritableKeyPath<ServeSettings, Bool> & Sendable)
        -> Setting
    {
        Setting(
            name: name, valueName: "", help: help, shape: .flag, isSecret: false,
            show: { $0[keyPath: path] ? "on" : "off" },
            apply: { settings, raw, origin in
                switch raw.joined(separator: ",").trimmingCharacters(in: .whitespaces).lowercased() {
                case "", "1", "true", "yes", "on": settings[keyPath: path] = true
                case "0", "false", "no", "off": settings[keyPath: path] = false
                case let other: throw ValidationError("\(origin): \"\(other)\" is not true or false")
                }
            })
    }

    /// A repeatable flag; comma-separated in the environment, a YAML list in the file.
    static func list(
        _ name: String, _ valueName: String, _ help: String,
        _ path: any WritableKeyPath<ServeSettings, [String]> & Sendable,
        check: @escaping @Sendable (String) -> Bool = { _ in true }, problem: String = "", shownDefault: String? = nil
    ) -> Setting {
        Setting(
            name: name, valueName: valueName, help: help, shape: .list, isSecret: false, shownDefault: shownDefault,
            show: { $0[keyPath: path].isEmpty ? "none" : $0[keyPath: path].joined(separator: ",") },
            apply: { settings, raw, origin in
                let items = raw.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                if let bad = items.first(where: { !check($0) }) {
                    throw ValidationError("\(origin): \"\(bad)\" \(problem)")
                }
                settings[keyPath: path] = items
            })
    }
}

extension ServeSettings {
    /// Every setting of `switchboard serve`, in the order `--help` lists them.
    static let all: [Setting] = [
        .text("host", "host", "Address to listen on.", \.server.host),
        .number("port", "n", "Port to listen on.", \.server.port, maximum: 65_535),
        .text("rules", "dir", "The rules directory.", \.server.rulesDirectory),
        .number(
            "workers", "n", "Lua workers, each with every rule loaded.", \.server.workers,
            shownDefault: "one per core"),
        .secret(
            "token", "secret", "Shared secret requests must carry as ?token= or /hooks/{hook}/{token}.",
            \.server.token),
        .secret(
            "basic-auth", "user:password", "Require HTTP Basic credentials.", \.server.basicAuth,
            validate: { $0.contains(":") ? nil : "basic-auth must be user:password" }),
        .list(
            "allow-source", "cidr", "Only accept webhooks from this network (repeatable).", \.allowSources,
            check: { CIDR($0) != nil }, problem: "is not an address or network like 10.0.0.0/8", shownDefault: "any"),
        .list(
            "allow-http-to", "cidr",
            "Let rule HTTP reach this internal network (repeatable). Loopback, private and link-local are refused otherwise.",
            \.allowHTTPTo, check: { CIDR($0) != nil }, problem: "is not an address or network like 10.0.0.0/8"),
        .list("allow-env", "name", "Let env(NAME) read this variable too (repeatable).", \.allowEnvironment),
        .text("data-dir", "dir", "Where the journal and rejected bodies are kept.", \.server.dataDirectory),
        .secret(
            "store", "url",
            "postgres://USER@HOST:PORT/DB: several nodes share one PostgreSQL database (the password may come from PGPASSWORD). Without it: one node, SQLite in the data directory.",
            \.server.store,
            validate: {
                $0.hasPrefix("postgres://") || $0.hasPrefix("postgresql://")
                    ? nil : "store must be a postgres:// URL (leave it out for SQLite in --data-dir)"
            }),
        .duration(
            "lease",
            "With --store postgres://: how long after a node stops renewing the processing lease another takes over.",
            \.server.lease, positive: true),
        .text(
            "node-name", "name",
            "With --store postgres://: this node's name in `switchboard nodes` (default hostname:port).",
            \.server.nodeName),
        .choice(
            "journal", "Journal accepted events before answering, and re-run unfinished ones on start.",
            \.server.journal, ["on": true, "off": false, "true": true, "false": false, "yes": true, "no": false]),
        .flag(
            "journal-fsync",
            "Commit each event to SQLite and fsync it before answering, instead of writing it to the accepted-event log: survives power loss, not only a killed process.",
            \.server.journalFsync),
        .number("max-body-bytes", "n", "Largest request body.", \.server.decoding.maxBodyBytes),
        .number(
            "max-instructions", "n", "VM instructions one rule run may execute.",
            \.server.rules.limits.instructionLimit),
        .number("time-limit-ms", "ms", "Lua running time one rule run may take.", \.timeLimitMilliseconds),
        .number("max-memory-mb", "mb", "Memory of each worker's Lua state.", \.maxMemoryMegabytes),
        // Each call in flight holds a descriptor: Linux allows a process at most 1,048,576 by default.
        .number(
            "max-http-in-flight", "n", "Rule HTTP calls in flight at once.", \.server.maxHTTPInFlight,
            maximum: 1_000_000),
        .number(
            "max-http-in-flight-per-rule", "n", "Rule HTTP calls in flight at once for one rule.",
            \.server.maxHTTPInFlightPerRule, maximum: 1_000_000),
        .number(
            "max-events-in-flight", "n", "Accepted events whose rules still run; past it answers wait for room.",
            \.server.maxEventsInFlight),
        .number(
            "forward-attempts", "n", "Attempts per forward before it becomes a dead letter.",
            \.server.outbox.maxAttempts),
        .duration(
            "forward-max-age", "A forward still failing this long after its event becomes a dead letter.",
            \.server.outbox.maxAge),
        .duration(
            "forward-backoff", "Wait after a forward's first failure; doubles per failure (up to 5m), with jitter.",
            \.server.outbox.initialBackoff),
        .number(
            "forward-concurrency", "n", "Forward attempts in flight to one host:port.", \.server.outbox.perDestination
        ),
        .duration(
            "forward-timeout", "One forward attempt's timeout (connecting included); a timeout is a failed attempt.",
            \.forwardTimeoutSeconds, positive: true),
        .duration(
            "retention", "Delete done events, delivered forwards and rejected bodies older than this.",
            \.server.retention),
        .number(
            "journal-max-mb", "mb",
            "Past this much data in the journal, delete the oldest done events and delivered forwards too.",
            \.journalMaxMegabytes),
        .duration(
            "dedupe-window",
            "Answer repeats of a channel event (hook id + call_id + hook_event + timestamp) or notification (msg_id) within this window with 200 and do not run them again (0: off).",
            \.server.dedupeWindow),
        .duration(
            "call-state-keep", "How long a call's call.* state is kept after its channel_destroy.",
            \.server.rules.callStateKeep),
        .duration(
            "read-timeout",
            "Cut off a client that pauses this long while it sends a request (its head or body): 408 once its head has come, then close. Also bounds how long a shutdown waits for it.",
            \.server.readTimeout, positive: true),
        .duration(
            "idle-timeout", "Close a kept-alive connection that sends no new request for this long (0: never).",
            \.server.idleTimeout),
        .number(
            "shutdown-grace-ms", "ms", "Time for running rules to finish after SIGTERM.", \.shutdownGraceMilliseconds),
        .flag(
            "kazoo-keep-enabled",
            "Check Kazoo's hooks on a schedule and re-enable the ones Kazoo disabled that `switchboard kazoo sync` created.",
            \.kazoo.keepEnabled),
        .text("kazoo-api", "url", "Kazoo's API base URL (for --kazoo-keep-enabled).", \.kazoo.api),
        .text("kazoo-account", "id", "The Kazoo account whose hooks to keep enabled.", \.kazoo.account),
        .secret("kazoo-api-key", "key", "A Kazoo API key.", \.kazoo.apiKey),
        .text("kazoo-user", "name", "A Kazoo user (instead of an API key).", \.kazoo.user),
        .secret("kazoo-password", "password", "The Kazoo user's password.", \.kazoo.password),
        .text("kazoo-account-name", "name", "The account name the Kazoo user logs in to.", \.kazoo.accountName),
        .duration(
            "kazoo-check-every", "How often --kazoo-keep-enabled checks Kazoo's hooks.", \.kazoo.checkEvery,
            positive: true),
        .choice("log-format", "Log format.", \.logFormat, ["text": "text", "json": "json"]),
        .choice(
            "log-level", "Log level.", \.logLevel,
            [
                "trace": .trace, "debug": .debug, "info": .info, "notice": .notice, "warning": .warning,
                "error": .error, "critical": .critical,
            ]),
    ]

    /// `--config FILE` (or `SWITCHBOARD_CONFIG`) names the YAML file; it is read from flags and environment only.
    static let configSetting = "config"

    // The settings' units as a person writes them, over the configuration's own.
    var allowSources: [String] {
        get { server.allowedSources.map(\.description) }
        set { server.allowedSources = newValue.compactMap(CIDR.init) }
    }
    var allowHTTPTo: [String] {
        get { server.allowHTTPTo.map(\.description) }
        set { server.allowHTTPTo = newValue.compactMap(CIDR.init) }
    }
    var allowEnvironment: [String] {
        get { server.rules.allowedEnvironment.sorted() }
        set { server.rules.allowedEnvironment = Set(newValue) }
    }
    var timeLimitMilliseconds: Int {
        get { Int(server.rules.limits.timeLimit / .milliseconds(1)) }
        set { server.rules.limits.timeLimit = .milliseconds(newValue) }
    }
    var maxMemoryMegabytes: Int {
        get { server.rules.limits.memoryLimit >> 20 }
        set { server.rules.limits.memoryLimit = newValue << 20 }
    }
    var journalMaxMegabytes: Int {
        get { server.journalMaxBytes >> 20 }
        set { server.journalMaxBytes = newValue << 20 }
    }
    var shutdownGraceMilliseconds: Int {
        get { Int(server.shutdownGrace / .milliseconds(1)) }
        set { server.shutdownGrace = .milliseconds(newValue) }
    }
    var forwardTimeoutSeconds: Double {
        get { server.outbox.timeout / .seconds(1) }
        set { server.outbox.timeout = .milliseconds(Int64((newValue * 1000).rounded())) }
    }

    /// Reads every setting from `arguments` (flags) > `SWITCHBOARD_*` in `environment` > the YAML file named by
    /// `--config`/`SWITCHBOARD_CONFIG` > the default, through swift-configuration's providers. Errors name the
    /// flag, variable or file key that was wrong.
    static func read(arguments: [String], environment: [String: String]) throws -> ServeSettings {
        let known = all.map(\.name) + [configSetting]
        let flags = try flagNames(in: arguments)
        for flag in flags where !known.contains(flag) {
            let hint = Suggestions.closest(to: flag, in: known).map { " (did you mean --\($0)?)" } ?? ""
            throw ValidationError("unknown option '--\(flag)'\(hint); see switchboard serve --help")
        }
        let commandLine = CommandLineArgumentsProvider(arguments: ["switchboard"] + arguments)
        let variables = EnvironmentVariablesProvider(environmentVariables: environment).prefixKeys(with: "switchboard")
        var providers: [any ConfigProvider] = [commandLine, variables]
        let bootstrap = ConfigReader(providers: providers)
        if let path = bootstrap.stringArray(forKey: ConfigKey(configSetting))?.joined(separator: ",") {
            providers.append(try fileProvider(path: path))
        }
        let sources = SourceRecorder()
        let reader = ConfigReader(providers: providers, accessReporter: sources)
        var settings = ServeSettings()
        settings.server.rules.environment = environment
        for setting in all {
            guard let raw = reader.stringArray(forKey: ConfigKey(setting.name), isSecret: setting.isSecret) else {
                continue
            }
            let origin = sources.origin(of: setting)
            try setting.apply(&settings, raw, origin)
        }
        return settings
    }

    /// The names of the `--flags` in `arguments`. A word is a value of the flag before it (one, or several for
    /// a list); any other word is an error.
    static func flagNames(in arguments: [String]) throws -> [String] {
        var names: [String] = []
        var takesValues: Setting.Shape? = nil
        var taken = 0
        for argument in arguments {
            if argument.hasPrefix("--") {
                let name = String(argument.dropFirst(2).prefix { $0 != "=" })
                names.append(name)
                let shape = all.first { $0.name == name }?.shape ?? .scalar
                takesValues = argument.contains("=") || shape == .flag ? nil : shape
                taken = 0
            } else if let shape = takesValues, taken == 0 || shape == .list {
                taken += 1
            } else {
                throw ValidationError("unexpected argument '\(argument)'; settings are given as --name value")
            }
        }
        return names
    }

    /// The YAML file as a provider. Keys are the settings' names with underscores; an unknown key is an error
    /// with the closest name, so a typo does not silently fall back to a default.
    static func fileProvider(path: String) throws -> InMemoryProvider {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the config file \(path)")
        }
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw ValidationError("\(path) is not valid YAML: \(error)")
        }
        guard let mapping = (document ?? [String: Any]()) as? [String: Any] else {
            throw ValidationError("\(path): expected settings as `name: value` lines")
        }
        let keys = all.map(\.fileKey)
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in mapping {
            guard let setting = all.first(where: { $0.fileKey == key }) else {
                let hint = Suggestions.closest(to: key, in: keys).map { " (did you mean \($0)?)" } ?? ""
                throw ValidationError("\(path): unknown setting '\(key)'\(hint)")
            }
            let items = (value as? [Any])?.map { "\($0)" } ?? ["\(value)"]
            values[AbsoluteConfigKey([setting.name])] = ConfigValue(.stringArray(items), isSecret: setting.isSecret)
        }
        return InMemoryProvider(name: path, values: values)
    }

    /// The settings as `--help` lists them, with each one's default, wrapped so every line keeps its indent.
    static var helpText: String {
        let defaults = ServeSettings()
        return all.map { setting in
            let flag = setting.shape == .flag ? "--\(setting.name)" : "--\(setting.name) <\(setting.valueName)>"
            let text = "\(setting.help) Default: \(setting.shownDefault ?? setting.show(defaults))."
            return (["  " + flag] + wrap(text, width: 70).map { "        " + $0 }).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        return lines + (line.isEmpty ? [] : [line])
    }
}

/// Which provider answered each lookup, so an error can name the flag, variable or file key to fix.
final class SourceRecorder: AccessReporter, Sendable {
    private let answered = Mutex<[String: String]>([:])

    func report(_ event: AccessEvent) {
        let provider = event.providerResults.first { result in
            if case .success(let lookup) = result.result { return lookup.value != nil }
            return false
        }
        guard let provider else { return }
        answered.withLock { $0[event.metadata.key.components.joined(separator: ".")] = provider.providerName }
    }

    func origin(of setting: Setting) -> String {
        let provider = answered.withLock { $0[setting.name] } ?? ""
        if provider.hasPrefix("CommandLine") { return "--\(setting.name)" }
        if provider.contains("Environment") { return setting.environmentVariable }
        return "\(setting.fileKey) in the config file"
    }
}
