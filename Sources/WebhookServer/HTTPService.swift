import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The HTTP server as one service: a listener whose connections start with the hooks routes' `HooksHandler`
/// in front of Hummingbird's router, with `services` started before the listener and stopped after it. It
/// runs the way Hummingbird's `Application.run` does, with three differences:
/// - `/hooks…` is answered on the connection's event loop (`HooksHandler`), not by a task per connection
///   through the router's request and response machinery;
/// - a connection gets a task and a `NIOAsyncChannel` (the router's side) only at its first request for the
///   router, not when it is accepted (`Listener`);
/// - the `Date` header comes from `HTTPDate` (libc's `gmtime_r`) instead of Hummingbird's date cache, whose
///   Foundation calendar opens ICU's time zone data at start-up. That cost about 3.9 MB of resident memory in
///   every server (ICU and FoundationInternationalization's pages, `/proc/PID/smaps`) for one header.
struct HTTPService<Responder: HTTPResponder>: Service
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    let responder: Responder
    let hooks: HookIntake
    /// The event loops of the listening socket and its connections.
    let group: any EventLoopGroup
    let host: String
    let port: Int
    let backlog: Int
    let serverName: String?
    let services: [any Service]
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let dates = HTTPDate()
        let responder = self.responder
        let serverName = self.serverName
        let logger = self.logger
        let router = RouterSide { (request, writer: consuming ResponseWriter, channel) in
            var requestLogger = logger
            requestLogger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
            let context = Responder.Context(source: .init(channel: channel, logger: requestLogger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error  // Hummingbird answers 400 and closes the connection
            } catch {
                requestLogger.debug("unhandled error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = dates.now
            if let serverName { response.headers[.server] = serverName }
            do {
                try await writer.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // The request turned out malformed while the answer was written: close the connection
                // rather than let the parse error write a second answer.
                throw ResponseAbandoned()
            }
        }
        let hooks = self.hooks
        let listener = Listener(
            group: group, host: host, port: port, backlog: backlog, router: router, onServerRunning: onServerRunning,
            logger: logger, timeouts: [hooks.readTimeout] + (hooks.idleTimeout.map { [$0] } ?? [])
        ) { wire, watch, openRouter in
            HooksHandler(
                intake: hooks, dates: dates, serverName: serverName, wire: wire, watch: watch, openRouter: openRouter)
        }
        try await ServiceGroup(configuration: .init(services: services + [listener], logger: logger)).run()
    }

    struct ResponseAbandoned: Error {}
}

/// The listening socket and its connections. A connection is accepted with its pipeline (`configure`) and
/// nothing else: a client that only posts hooks is read and answered by its `HooksHandler` on the event loop,
/// and costs no task. The router's side of a connection (`RouterSide`: a `NIOAsyncChannel` and a task that runs
/// Hummingbird's request loop) is opened by the hooks handler just before it passes the router its first part
/// or error, and the task is started in this service's task group.
///
/// Hummingbird's `Server` starts that task and wraps every connection as it is accepted, and hands it from the
/// event loop to the accepting task. With a connection per request (curl, and many webhook senders) that was
/// a third of the server's CPU time per request: `CONNECTIONS=close scripts/compare_ingest.sh`, 292 → 192 µs.
///
/// A graceful shutdown closes the listening socket, tells every connection to quiesce (NIO's
/// `ServerQuiescingHelper`; idle ones close at once, the others once their answer is written) and returns
/// when the last has closed and the last router task has ended.
struct Listener: Service {
    let group: any EventLoopGroup
    let host: String
    let port: Int
    let backlog: Int
    let router: RouterSide
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger
    /// `--read-timeout` and `--idle-timeout`, for the watches' interval.
    let timeouts: [TimeAmount]
    /// Makes a connection's hooks handler, given the context of the response encoder it writes its answers at,
    /// its loop's watch for pauses, and what opens the connection's router side.
    let hooksHandler: @Sendable (ChannelHandlerContext, PauseWatch?, @escaping (any Channel) -> Void) -> HooksHandler

    func run() async throws {
        let group = self.group
        let (opened, open) = AsyncStream.makeStream(of: RouterSide.Connection.self)
        let quiescing = ServerQuiescingHelper(group: group)
        let router = self.router
        let logger = self.logger
        let hooksHandler = self.hooksHandler
        let watches = PauseWatch.perLoop(of: group)
        let interval = PauseWatch.interval(timeouts: timeouts)
        // Each loop's bell for its sweeps (`PauseWatch`): opened before the first connection, closed once the
        // server has stopped or failed to start (closing one never opened does nothing).
        let bells = Array(watches.values)
        let closeBells = { for watch in bells { await watch.close() } }
        let openRouter: @Sendable (any Channel) -> Void = { channel in
            do {
                try Self.addRouterHandlers(channel, logger: logger)
                // After the run (cancelled): nobody would serve the connection.
                if case .terminated = open.yield(try router.wrap(channel)) { channel.close(promise: nil) }
            } catch {
                logger.debug("could not open the router's side of a connection", metadata: ["error": "\(error)"])
                channel.close(promise: nil)
            }
        }
        let server: any Channel
        do {
            for watch in bells { try await watch.open() }
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: Int32(clamping: backlog))
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // Up to 64 connections accepted each time the listening socket is readable, not NIO's 4. NIO sets
                // each accepted connection up on the loop it goes to: the connections of a batch that go to the
                // other loop wake it when it is idle (a loop is woken once for the tasks queued before it runs
                // them), and a burst of 1,000 new connections came in about 250 batches. Round 1 of the slow
                // upstream (`scripts/serve_bench.sh`) ended earlier in 16 of 22 alternated pairs, and the server
                // spent about 40 ms less CPU on it (BENCHMARKS.md, thirty-seventh session).
                .serverChannelOption(.maxMessagesPerRead, value: 64)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            quiescing.makeServerChannelHandler(channel: channel))
                    }
                }
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let watch = watches[ObjectIdentifier(channel.eventLoop)]
                        try Self.configure(channel, logger: logger) { wire in hooksHandler(wire, watch, openRouter) }
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            await closeBells()
            throw error
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await onServerRunning(server)
                await withTaskGroup(of: Void.self) { sweeping in
                    // Peers that keep a connection waiting are timed out until the last connection has closed.
                    sweeping.addTask { await PauseWatch.sweep(bells, every: interval) }
                    await withDiscardingTaskGroup { tasks in
                        for await connection in opened {
                            tasks.addTask { await router.handle(value: connection, logger: logger) }
                        }
                    }
                    sweeping.cancelAll()
                }
            } onGracefulShutdown: {
                let closed = server.eventLoop.makePromise(of: Void.self)
                closed.futureResult.whenComplete { _ in open.finish() }
                quiescing.initiateShutdown(promise: closed)
            }
        } onCancel: {
            // Cancelled rather than shut down: stop accepting at once, and tell the connections to close (the
            // router's tasks are cancelled with this one, and close theirs).
            quiescing.initiateShutdown(promise: nil)
        }
        await closeBells()
    }

    /// A new connection's pipeline: NIO's HTTP/1 response encoder and request decoder, and the `HooksHandler`.
    /// The hooks handler writes its answers as bytes at the response encoder's place, and leaves the bodies out
    /// of the router's answers to HEAD (see `HooksHandler`), so the encoder and decoder are added unpaired rather
    /// than by `configureHTTPServerPipeline`, which would pair them. The rest of Hummingbird's HTTP/1 pipeline
    /// (`addRouterHandlers`) is added when the router's side opens.
    static func configure(
        _ channel: any Channel, logger: Logger, hooksHandler: (ChannelHandlerContext) -> HooksHandler
    ) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 80 * 1024
        limits.maxHeaderListSize = 80 * 1024
        limits.maxHeaderFieldCount = 1000
        let pipeline = channel.pipeline.syncOperations
        let encoder = HTTPResponseEncoder(configuration: .init())
        try pipeline.addHandler(encoder)
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(limitConfiguration: limits)))
        // The hooks handler reads NIO's HTTP/1 parts, before their conversion to HTTPTypes' for the router.
        try pipeline.addHandler(hooksHandler(try pipeline.context(handler: encoder)))
    }

    /// What Hummingbird's HTTP/1 pipeline (`HTTP1Channel`'s, with its defaults) has between the parser and the
    /// router: the conversion to HTTPTypes' parts and the connection's state handler (idle, quiescing), added
    /// behind the hooks handler when a connection's router side opens. A connection that only posts hooks never
    /// needs them. Added to every connection, and with the peer's address formatted a second time (now taken
    /// from NIO's, `HooksHandler.numericHost`), a request on a new connection cost about 9,500 instructions more
    /// (callgrind, `CONNECTIONS=close scripts/count_request_instructions.sh`: 214,808 → 205,309). The hooks
    /// handler closes such a connection itself when a graceful shutdown tells it to quiesce.
    static func addRouterHandlers(_ channel: any Channel, logger: Logger) throws {
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
    }
}

/// The router's side of a connection: a `NIOAsyncChannel` at the end of its pipeline, read by Hummingbird's
/// request loop (`handleHTTP`) in a task of its own.
struct RouterSide: HTTPChannelHandler {
    typealias Connection = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>
    typealias Value = Connection
    let responder: HTTPChannelHandler.Responder

    init(responder: @escaping HTTPChannelHandler.Responder) {
        self.responder = responder
    }

    /// Wraps `channel`, whose pipeline `Listener.configure` and `Listener.addRouterHandlers` built, on its event
    /// loop.
    func wrap(_ channel: any Channel) throws -> Connection {
        try NIOAsyncChannel(
            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Connection> {
        channel.eventLoop.makeCompletedFuture { try wrap(channel) }
    }

    func handle(value: Connection, logger: Logger) async {
        await handleHTTP(asyncChannel: value, logger: logger)
    }
}

/// The current time as an HTTP date (RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`), formatted at most
/// once a second.
final class HTTPDate: Sendable {
    private let cached = Mutex<(second: Int, text: String)>((-1, ""))

    var now: String {
        let second = time(nil)
        return cached.withLock { cache in
            if cache.second != second { cache = (second, UTCTime.httpDate(second)) }
            return cache.text
        }
    }
}

/// Unix seconds as UTC text, from libc's `gmtime_r`. Not Foundation's formatters: their calendar opens ICU.
enum UTCTime {
    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Sun, 06 Nov 1994 08:49:37 GMT`
    static func httpDate(_ second: Int) -> String {
        let t = fields(second)
        return
            "\(days[Int(t.tm_wday)]), \(two(t.tm_mday)) \(months[Int(t.tm_mon)]) \(t.tm_year + 1900) \(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)) GMT"
    }

    /// `1994-11-06T08:49:37Z`, as Foundation's `ISO8601DateFormatter` writes it.
    static func iso8601(_ second: Int) -> String {
        let t = fields(second)
        return
            "\(t.tm_year + 1900)-\(two(t.tm_mon + 1))-\(two(t.tm_mday))T\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec))Z"
    }

    static func fields(_ second: Int) -> tm {
        var t = time_t(second)
        var parts = tm()
        gmtime_r(&t, &parts)
        return parts
    }

    static func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
}
