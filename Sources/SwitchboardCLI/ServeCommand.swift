public import ArgumentParser
import Delivery
import EventStore
import Foundation
import KazooEvents
public import Logging
import LuaRuntime
import NIOCore
import RuleEngine
import ServiceLifecycle
import UnixSignals
public import WebhookServer
import Yams

/// `switchboard serve`: receive Kazoo webhooks and run the rules on them.
public struct ServeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Receive Kazoo webhooks and run the rules on them.",
        discussion: """
            Point Kazoo's webhooks at http://HOST:PORT/hooks/{hook}, one URI per hook (channel_create, \
            notifications, object, parking, sms, mms, all…; the callflow webhook action at /hooks/webhook). \
            Every accepted event is answered 200 at once and its rules run after the answer; a request that is \
            not an event gets a 4xx with the reason, and its body is kept in DATA_DIR/rejected.

            Every setting comes from a flag, else an environment variable (SWITCHBOARD_ plus the flag's name \
            in capitals with underscores, lists comma-separated), else the --config YAML file (the flag's \
            name with underscores), else its default. Endpoints: GET /healthz, /readyz, /metrics.

            Example config.yaml:
              port: 8080
              token: change-me
              allow_http_to: [127.0.0.1/32]
            """
    )

    @Option(name: .long, help: ArgumentHelp("YAML file with settings (env: SWITCHBOARD_CONFIG).", valueName: "file"))
    var config: String?
    @Option(name: .long, help: ArgumentHelp("Address to listen on. Default 127.0.0.1.", valueName: "host"))
    var host: String?
    @Option(name: .long, help: ArgumentHelp("Port to listen on. Default 8080.", valueName: "n"))
    var port: Int?
    @Option(name: .long, help: ArgumentHelp("The rules directory. Default rules.", valueName: "dir"))
    var rules: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Lua workers, each with every rule loaded. Default: one per core.", valueName: "n"))
    var workers: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Shared secret requests must carry as ?token= or /hooks/{hook}/{token}. Default none.", valueName: "secret")
    )
    var token: String?
    @Option(
        name: .long, help: ArgumentHelp("Require HTTP Basic credentials. Default none.", valueName: "user:password"))
    var basicAuth: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Only accept webhooks from this network (repeatable). Default any.", valueName: "cidr"))
    var allowSource: [String] = []
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Let rule HTTP reach this internal network (repeatable). Default none: loopback, private and link-local are refused.",
            valueName: "cidr"))
    var allowHttpTo: [String] = []
    @Option(name: .long, help: ArgumentHelp("Let env(NAME) read this variable too (repeatable).", valueName: "name"))
    var allowEnv: [String] = []
    @Option(
        name: .long,
        help: ArgumentHelp("Where the journal and rejected bodies are kept. Default var.", valueName: "dir"))
    var dataDir: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Journal accepted events before answering, and re-run unfinished ones on start: on or off. Default on.",
            valueName: "on|off"))
    var journal: String?
    @Flag(name: .long, help: "fsync every journal commit: survives power loss, not only a killed process. Default off.")
    var journalFsync = false
    @Option(name: .long, help: ArgumentHelp("Largest request body. Default 1048576.", valueName: "n"))
    var maxBodyBytes: Int?
    @Option(
        name: .long, help: ArgumentHelp("VM instructions one rule run may execute. Default 10000000.", valueName: "n"))
    var maxInstructions: Int?
    @Option(name: .long, help: ArgumentHelp("Lua running time one rule run may take. Default 1000.", valueName: "ms"))
    var timeLimitMs: Int?
    @Option(name: .long, help: ArgumentHelp("Memory of each worker's Lua state. Default 64.", valueName: "mb"))
    var maxMemoryMb: Int?
    @Option(name: .long, help: ArgumentHelp("Rule HTTP calls in flight at once. Default 2000.", valueName: "n"))
    var maxHttpInFlight: Int?
    @Option(
        name: .long, help: ArgumentHelp("Rule HTTP calls in flight at once for one rule. Default 1000.", valueName: "n")
    )
    var maxHttpInFlightPerRule: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Accepted events whose rules still run; past it answers wait for room. Default 10000.", valueName: "n"))
    var maxEventsInFlight: Int?
    @Option(
        name: .long,
        help: ArgumentHelp("Attempts per forward before it becomes a dead letter. Default 10.", valueName: "n"))
    var forwardAttempts: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A forward still failing this long after its event becomes a dead letter. Default 24h.",
            valueName: "duration"))
    var forwardMaxAge: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Wait after a forward's first failure; doubles per failure (up to 5m), with jitter. Default 1s.",
            valueName: "duration"))
    var forwardBackoff: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Forward attempts in flight to one host:port. Default 8.", valueName: "n"))
    var forwardConcurrency: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "One forward attempt's timeout (connecting included); a timeout is a failed attempt. Default 10s.",
            valueName: "duration"))
    var forwardTimeout: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Delete done events, delivered forwards and rejected bodies older than this. Default 7d.",
            valueName: "duration"))
    var retention: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Past this much data in the journal, delete the oldest done events and delivered forwards too. Default 1024.",
            valueName: "mb"))
    var journalMaxMb: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Answer repeats of a channel event (hook id + call_id + hook_event + timestamp) or notification (msg_id) within this window with 200 and do not run them again. Default 0 (off).",
            valueName: "duration"))
    var dedupeWindow: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Time for running rules to finish after SIGTERM. Default 10000.", valueName: "ms"))
    var shutdownGraceMs: Int?
    @Option(name: .long, help: ArgumentHelp("Log format: text or json. Default text.", valueName: "format"))
    var logFormat: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error. Default info.", valueName: "level"))
    var logLevel: String?

    public init() {}

    /// The settings after flags, environment and file are combined.
    public func settings(environment: [String: String]? = nil) throws
        -> (ServerConfiguration, logFormat: String, logLevel: Logger.Level)
    {
        let environment = environment ?? ProcessInfo.processInfo.environment
        var file: [String: Any] = [:]
        if let path = config ?? environment["SWITCHBOARD_CONFIG"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read the config file \(path)")
            }
            do {
                file = (try Yams.load(yaml: text) as? [String: Any]) ?? [:]
            } catch {
                throw ValidationError("\(path) is not valid YAML: \(error)")
            }
            let known = Self.settingNames.map { $0.replacingOccurrences(of: "-", with: "_") }
            for key in file.keys where !known.contains(key) {
                let hint = Suggestions.closest(to: key, in: known).map { " (did you mean \($0)?)" } ?? ""
                throw ValidationError("\(path): unknown setting '\(key)'\(hint)")
            }
        }
        let settings = SettingSource(environment: environment, file: file)
        var c = ServerConfiguration()
        c.host = settings.string("host", flag: host) ?? c.host
        c.port = try settings.int("port", flag: port) ?? c.port
        c.rulesDirectory = settings.string("rules", flag: rules) ?? c.rulesDirectory
        c.workers = try settings.int("workers", flag: workers) ?? c.workers
        c.token = settings.string("token", flag: token)
        c.basicAuth = settings.string("basic-auth", flag: basicAuth)
        c.allowedSources = try settings.cidrs("allow-source", flag: allowSource)
        c.allowHTTPTo = try settings.cidrs("allow-http-to", flag: allowHttpTo)
        c.dataDirectory = settings.string("data-dir", flag: dataDir) ?? c.dataDirectory
        switch settings.string("journal", flag: journal) ?? "on" {
        case "on", "true", "yes": c.journal = true
        case "off", "false", "no": c.journal = false
        case let other: throw ValidationError("journal must be on or off, not \(other)")
        }
        c.journalFsync =
            journalFsync || ["1", "true", "yes", "on"].contains(settings.string("journal-fsync", flag: nil) ?? "")
        c.decoding.maxBodyBytes = try settings.int("max-body-bytes", flag: maxBodyBytes) ?? c.decoding.maxBodyBytes
        var limits = LuaLimits()
        limits.instructionLimit = try settings.int("max-instructions", flag: maxInstructions) ?? limits.instructionLimit
        limits.timeLimit = .milliseconds(try settings.int("time-limit-ms", flag: timeLimitMs) ?? 1000)
        limits.memoryLimit = (try settings.int("max-memory-mb", flag: maxMemoryMb) ?? 64) << 20
        c.rules = RuleConfiguration(
            limits: limits, allowedEnvironment: Set(settings.list("allow-env", flag: allowEnv)),
            environment: environment)
        c.outbox.maxAttempts = try settings.int("forward-attempts", flag: forwardAttempts) ?? c.outbox.maxAttempts
        c.outbox.maxAge = try settings.seconds("forward-max-age", flag: forwardMaxAge) ?? c.outbox.maxAge
        c.outbox.initialBackoff =
            try settings.seconds("forward-backoff", flag: forwardBackoff) ?? c.outbox.initialBackoff
        c.outbox.perDestination =
            try settings.int("forward-concurrency", flag: forwardConcurrency) ?? c.outbox.perDestination
        if let seconds = try settings.seconds("forward-timeout", flag: forwardTimeout) {
            guard seconds > 0 else { throw ValidationError("forward-timeout must be more than 0") }
            c.outbox.timeout = .milliseconds(Int64(seconds * 1000))
        }
        c.retention = try settings.seconds("retention", flag: retention) ?? c.retention
        c.journalMaxBytes = (try settings.int("journal-max-mb", flag: journalMaxMb) ?? (c.journalMaxBytes >> 20)) << 20
        c.dedupeWindow = try settings.seconds("dedupe-window", flag: dedupeWindow) ?? c.dedupeWindow
        c.maxHTTPInFlight = try settings.int("max-http-in-flight", flag: maxHttpInFlight) ?? c.maxHTTPInFlight
        c.maxHTTPInFlightPerRule =
            try settings.int("max-http-in-flight-per-rule", flag: maxHttpInFlightPerRule) ?? c.maxHTTPInFlightPerRule
        c.maxEventsInFlight = try settings.int("max-events-in-flight", flag: maxEventsInFlight) ?? c.maxEventsInFlight
        c.shutdownGrace = .milliseconds(try settings.int("shutdown-grace-ms", flag: shutdownGraceMs) ?? 10_000)
        for (name, value) in [
            ("port", c.port), ("workers", c.workers), ("max-body-bytes", c.decoding.maxBodyBytes),
            ("max-instructions", limits.instructionLimit), ("max-http-in-flight", c.maxHTTPInFlight),
            ("max-events-in-flight", c.maxEventsInFlight),
            ("forward-attempts", c.outbox.maxAttempts), ("forward-concurrency", c.outbox.perDestination),
            ("journal-max-mb", c.journalMaxBytes >> 20),
        ] where value <= 0 {
            throw ValidationError("\(name) must be positive, not \(value)")
        }
        if let basic = c.basicAuth, !basic.contains(":") { throw ValidationError("basic-auth must be user:password") }
        let format = settings.string("log-format", flag: logFormat) ?? "text"
        guard format == "text" || format == "json" else {
            throw ValidationError("log-format must be text or json, not \(format)")
        }
        let levelName = settings.string("log-level", flag: logLevel) ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError("log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        return (c, format, level)
    }

    static let settingNames = [
        "host", "port", "rules", "workers", "token", "basic-auth", "allow-source", "allow-http-to", "allow-env",
        "data-dir", "journal", "journal-fsync",
        "max-body-bytes", "max-instructions", "time-limit-ms", "max-memory-mb", "max-http-in-flight",
        "max-http-in-flight-per-rule", "max-events-in-flight", "forward-attempts", "forward-max-age",
        "forward-backoff", "forward-concurrency", "forward-timeout", "retention", "journal-max-mb", "dedupe-window",
        "shutdown-grace-ms",
        "log-format",
        "log-level",
    ]

    public func run() async throws {
        let (configuration, format, level) = try settings()
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                format == "json" ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard")
        let source: RuleSource
        do { source = try RuleSource.read(directory: configuration.rulesDirectory) } catch {
            throw ValidationError("\(error)")
        }
        var journal: EventJournal? = nil
        if configuration.journal {
            journal = try EventJournal(directory: configuration.dataDirectory, fsync: configuration.journalFsync)  // its errors say what to fix
        }
        let client = GuardedHTTPClient(
            allowed: configuration.allowHTTPTo, maxInFlight: configuration.maxHTTPInFlight,
            maxInFlightPerRule: configuration.maxHTTPInFlightPerRule)
        let metrics = Metrics()
        // With the journal off, forwards still go through the outbox, from memory.
        let queue: any EventJournaling & DeliveryQueue = journal ?? MemoryJournal()
        do {
            let engine = try await Engine(
                source: source, configuration: configuration.rules, workers: configuration.workers, client: client,
                metrics: metrics, logger: logger, grace: configuration.shutdownGrace,
                maxEventsInFlight: configuration.maxEventsInFlight, journal: queue)
            for d in engine.diagnostics { logger.warning("\(d.description)") }
            logger.info(
                "loaded \(engine.ruleNames.count) rule(s) from \(configuration.rulesDirectory) into \(engine.workers.count) worker(s)"
            )
            let host = configuration.host
            _ = await engine.replayUnfinished(decoder: EventDecoder(limits: configuration.decoding))
            let reloader = RuleReloader(directory: configuration.rulesDirectory, engine: engine, logger: logger)
            let retention = Retention(
                journal: journal, rejected: RejectedStore(directory: configuration.rejectedDirectory),
                maxAge: configuration.retention, maxJournalBytes: configuration.journalMaxBytes, logger: logger)
            let outbox = Outbox(
                journal: queue, client: client, policy: configuration.outbox, metrics: metrics, logger: logger)
            // Stopped in reverse order: the HTTP server (Hummingbird's, after these), the reloader, the engine
            // (its grace period for running rules), retention, and last the outbox, so forwards from rules that
            // finish during the grace period still have their attempts under way.
            let app = buildApplication(
                configuration: configuration, engine: engine, journal: journal, metrics: metrics, logger: logger,
                services: [outbox, retention, engine, reloader]
            ) { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info("listening on http://\(host):\(port)/hooks/{hook}")
            }
            let group = ServiceGroup(
                configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        } catch {
            try? await client.shutdown()  // AsyncHTTPClient must be shut down on every path
            if "\(error)".contains("Address already in use") {
                throw CommandFailure(
                    "cannot listen on \(configuration.host):\(configuration.port): the address is in use (another switchboard?); choose another with --port"
                )
            }
            throw error
        }
        try? await client.shutdown()
    }
}

/// Looks a setting up: the flag, else SWITCHBOARD_NAME, else the file's name key.
struct SettingSource {
    var environment: [String: String]
    var file: [String: Any]

    func raw(_ name: String) -> (String, String)? {
        let variable = "SWITCHBOARD_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
        if let value = environment[variable] { return (value, variable) }
        let key = name.replacingOccurrences(of: "-", with: "_")
        if let value = file[key] {
            if let list = value as? [Any] {
                return (list.map { "\($0)" }.joined(separator: ","), "\(key) in the config file")
            }
            return ("\(value)", "\(key) in the config file")
        }
        return nil
    }

    func string(_ name: String, flag: String?) -> String? { flag ?? raw(name)?.0 }

    func int(_ name: String, flag: Int?) throws -> Int? {
        if let flag { return flag }
        guard let (text, origin) = raw(name) else { return nil }
        guard let value = Int(text) else { throw ValidationError("\(origin): \"\(text)\" is not a whole number") }
        return value
    }

    /// A duration: `90` or `90s`, `500ms`, `15m`, `24h`, `7d`; in seconds.
    func seconds(_ name: String, flag: String?) throws -> Double? {
        let text: String
        let origin: String
        if let flag {
            (text, origin) = (flag, "--\(name)")
        } else if let (value, from) = raw(name) {
            (text, origin) = (value, from)
        } else {
            return nil
        }
        guard let seconds = Self.parseDuration(text) else {
            throw ValidationError("\(origin): \"\(text)\" is not a duration like 30s, 15m, 24h or 7d")
        }
        return seconds
    }

    static func parseDuration(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            guard let n = Double(trimmed.dropLast(suffix.count)), n >= 0, n.isFinite else { return nil }
            return n * scale
        }
        guard let n = Double(trimmed), n >= 0, n.isFinite else { return nil }
        return n
    }

    func list(_ name: String, flag: [String]) -> [String] {
        if !flag.isEmpty { return flag }
        return raw(name)?.0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            ?? []
    }

    func cidrs(_ name: String, flag: [String]) throws -> [CIDR] {
        try list(name, flag: flag).map { text in
            guard let cidr = CIDR(text) else {
                throw ValidationError("\(name): \"\(text)\" is not an address or network like 10.0.0.0/8")
            }
            return cidr
        }
    }
}
