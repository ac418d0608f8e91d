public import EventStore
import Hummingbird
import HummingbirdCore
public import Logging
public import NIOCore
import NIOPosix
public import RuleEngine
public import ServiceLifecycle

/// Builds the webhook server: `POST|PUT|GET /hooks/{hook}` (and `/hooks`, and `/hooks/{hook}/{token}`),
/// `GET /healthz`, `/readyz`, `/metrics`, `/admin/…` and the web console at `/console`. The hooks routes are
/// `HookIntake`, answered on the event loop by `HooksHandler`; the rest is Hummingbird's router, where each
/// part is a controller that adds its routes and authentication is middleware on the route group it guards.
/// `services` (the engine, the outbox, the reloader, retention) run in the application's service group,
/// started before the HTTP server and stopped after it, so nothing is accepted that cannot be handled.
///
/// Answers are Kazoo-safe: 200 for every accepted event whatever the rules do (they run after the answer),
/// 4xx only for a request that is not an acceptable event, with the reason in the body and the body kept.
public func buildApplication(
    configuration: ServerConfiguration, engine: Engine, journal: (any Journal)?, metrics: Metrics, logger: Logger,
    services: [any Service] = [], onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) -> some Service {
    let rejected = RejectedStore(directory: configuration.rejectedDirectory, shared: journal)
    let failures = HookFailureTracker()
    let feed = ConsoleFeed()
    engine.observeReports { report, meta in feed.record(report, meta: meta) }
    let router = Router(context: SwitchboardRequestContext.self)
    HealthController(engine: engine, metrics: metrics, journal: journal).addRoutes(to: router)
    AdminController(configuration: configuration, engine: engine, journal: journal, rejected: rejected)
        .addRoutes(to: router.group("admin").add(middleware: AdminAuthentication(configuration: configuration)))
    ConsoleController(
        configuration: configuration, engine: engine, journal: journal, rejected: rejected, feed: feed,
        failures: failures, logger: logger
    )
    .addRoutes(
        to: router.group("console").add(middleware: AdminAuthentication(configuration: configuration))
            .add(middleware: ConsoleGuard(configuration: configuration)))
    let hooks = HookIntake(
        configuration: configuration, engine: engine, journal: journal, metrics: metrics, logger: logger,
        rejected: rejected, failures: failures)
    return HTTPService(
        responder: router.buildResponder(), hooks: hooks,
        group: configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton,
        host: configuration.host, port: configuration.port, backlog: configuration.listenBacklog,
        serverName: "switchboard",
        services: services, onServerRunning: onServerRunning, logger: logger)
}
