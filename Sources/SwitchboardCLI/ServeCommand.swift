public import ArgumentParser
import ClusterStore
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

            Every setting below comes from its flag, else its environment variable (SWITCHBOARD_ plus the \
            name in capitals with underscores: --max-body-bytes is SWITCHBOARD_MAX_BODY_BYTES; lists \
            comma-separated), else the --config YAML file (the name with underscores: max_body_bytes; lists as \
            YAML lists), else its default. --config <file> (or SWITCHBOARD_CONFIG) names that file. Endpoints: \
            GET /healthz, /readyz, /metrics.

            Example config.yaml:
              port: 8080
              token: change-me
              allow_http_to: [127.0.0.1/32]

            SETTINGS:
            \(ServeSettings.helpText)
            """
    )

    /// The settings as given on the command line; read with the environment and the file by `ServeSettings`.
    @Argument(
        parsing: .captureForPassthrough,
        help: ArgumentHelp("Settings as --name value (listed below).", valueName: "settings"))
    var arguments: [String] = []

    public init() {}

    /// The settings after flags, environment and file are combined.
    public func settings(environment: [String: String]? = nil) throws
        -> (ServerConfiguration, logFormat: String, logLevel: Logger.Level)
    {
        if arguments.contains(where: { $0 == "--help" || $0 == "-h" }) { throw CleanExit.helpRequest(self) }
        let settings = try allSettings(environment: environment)
        return (settings.server, settings.logFormat, settings.logLevel)
    }

    func allSettings(environment: [String: String]? = nil) throws -> ServeSettings {
        if arguments.contains(where: { $0 == "--help" || $0 == "-h" }) { throw CleanExit.helpRequest(self) }
        return try ServeSettings.read(
            arguments: arguments, environment: environment ?? ProcessInfo.processInfo.environment)
    }

    public func run() async throws {
        let all = try allSettings()
        let (configuration, format, level) = (all.server, all.logFormat, all.logLevel)
        let keeper = all.kazoo.keepEnabled ? try all.kazoo.crossbar() : nil
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                format == "json" ? JSONLogHandler(label: label) : TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard")
        if let descriptors = Descriptors.prepare() {
            // A descriptor for each rule call in flight and each webhook arriving meanwhile, and some for the
            // event loops, the journal's files and the database's connections.
            let needed = 2 * configuration.maxHTTPInFlight + 256
            if descriptors.limit < needed {
                logger.warning(
                    "open-file limit \(descriptors.limit) is below the \(needed) that --max-http-in-flight \(configuration.maxHTTPInFlight) needs: raise it (LimitNOFILE= in a systemd unit, ulimit -n) or lower --max-http-in-flight"
                )
            } else if descriptors.limit > descriptors.limitBefore {
                logger.info("open-file limit raised from \(descriptors.limitBefore) to \(descriptors.limit)")
            }
            logger.debug("descriptor table: \(descriptors.tableSlots.map(String.init) ?? "unknown") slots")
        }
        let source: RuleSource
        do { source = try RuleSource.read(directory: configuration.rulesDirectory) } catch {
            throw ValidationError("\(error)")
        }
        var journal: EventJournal? = nil
        var cluster: PostgresJournal? = nil
        if let store = configuration.store {
            guard configuration.journal else {
                throw ValidationError(
                    "--store postgres://… keeps every accepted event; it cannot be used with --journal off")
            }
            let name =
                configuration.nodeName.isEmpty
                ? "\(ProcessInfo.processInfo.hostName):\(configuration.port)" : configuration.nodeName
            // Its errors say what to fix (unreachable, refused, no such database).
            cluster = try await PostgresJournal.open(
                url: store, node: name, lease: configuration.lease, spoolDirectory: configuration.dataDirectory,
                logger: logger)
            logger.info(
                "store: PostgreSQL \(cluster!.location) as node \(name) (processing lease \(configuration.lease) s)")
        } else if configuration.journal {
            journal = try EventJournal(directory: configuration.dataDirectory, fsync: configuration.journalFsync)  // its errors say what to fix
        }
        let client = GuardedHTTPClient(
            allowed: configuration.allowHTTPTo, maxInFlight: configuration.maxHTTPInFlight,
            maxInFlightPerRule: configuration.maxHTTPInFlightPerRule)
        let metrics = Metrics()
        // With the journal off, forwards still go through the outbox, from memory.
        let queue: any EventJournaling & DeliveryQueue =
            if let cluster { cluster } else if let journal { journal } else { MemoryJournal() }
        do {
            let engine = try await Engine(
                source: source, configuration: configuration.rules, workers: configuration.workers, client: client,
                metrics: metrics, logger: logger, grace: configuration.shutdownGrace,
                maxEventsInFlight: configuration.maxEventsInFlight, journal: queue, leases: cluster)
            for d in engine.diagnostics { logger.warning("\(d.description)") }
            logger.info(
                "loaded \(engine.ruleNames.count) rule(s) from \(configuration.rulesDirectory) into \(engine.workers.count) worker(s)"
            )
            let host = configuration.host
            // Several nodes: the node holding the processing lease reads unfinished events from the database.
            if cluster == nil {
                _ = await engine.replayUnfinished(decoder: EventDecoder(limits: configuration.decoding))
            }
            let reloader = RuleReloader(directory: configuration.rulesDirectory, engine: engine, logger: logger)
            let retention = Retention(
                journal: journal, rejected: RejectedStore(directory: configuration.rejectedDirectory),
                maxAge: configuration.retention, maxJournalBytes: configuration.journalMaxBytes, store: engine.store,
                logger: logger)
            let outbox = Outbox(
                journal: queue, client: client, policy: configuration.outbox, metrics: metrics, logger: logger)
            // Stopped in reverse order: the HTTP server (Hummingbird's, after these), the reloader, the engine
            // (its grace period for running rules), retention, and last the outbox, so forwards from rules that
            // finish during the grace period still have their attempts under way.
            var services: [any Service] = [outbox, retention, engine, reloader]
            if let cluster {
                // Last, so stopped first: it stops reading events, lets the engine finish, gives the lease up.
                services.append(
                    ClusterNode(
                        journal: cluster, engine: engine, decoder: EventDecoder(limits: configuration.decoding),
                        version: SwitchboardCommand.configuration.version, retention: configuration.retention,
                        grace: configuration.shutdownGrace, logger: logger))
            }
            if let keeper {
                services.append(
                    KazooKeeper(crossbar: keeper, every: all.kazoo.checkEvery, metrics: metrics, logger: logger))
            }
            let app = buildApplication(
                configuration: configuration, engine: engine, journal: cluster ?? journal, metrics: metrics,
                logger: logger, services: services
            ) { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info("listening on http://\(host):\(port)/hooks/{hook}")
            }
            let group = ServiceGroup(
                configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        } catch {
            try? await client.shutdown()  // AsyncHTTPClient must be shut down on every path
            cluster?.close()
            await keeper?.shutdown()
            if "\(error)".contains("Address already in use") {
                throw CommandFailure(
                    "cannot listen on \(configuration.host):\(configuration.port): the address is in use (another switchboard?); choose another with --port"
                )
            }
            throw error
        }
        try? await client.shutdown()
        cluster?.close()
    }
}
