import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
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

/// The HTTP server as one service: the hooks routes' `HooksHandler` in front of Hummingbird's router on one
/// HTTP/1 channel, with `services` started before the listener and stopped after it. It runs the way
/// Hummingbird's `Application.run` does, with two differences:
/// - `/hooks…` is answered on the connection's event loop (`HooksHandler`), not by a task per connection
///   through the router's request and response machinery;
/// - the `Date` header comes from `HTTPDate` (libc's `gmtime_r`) instead of Hummingbird's date cache, whose
///   Foundation calendar opens ICU's time zone data at start-up. That cost about 3.9 MB of resident memory in
///   every server (ICU and FoundationInternationalization's pages, `/proc/PID/smaps`) for one header.
struct HTTPService<Responder: HTTPResponder>: Service
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    let responder: Responder
    let hooks: HookIntake
    let configuration: HummingbirdCore.ServerConfiguration
    let services: [any Service]
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let dates = HTTPDate()
        let responder = self.responder
        let serverName = configuration.serverName
        let logger = self.logger
        let hooks = self.hooks
        let builder = HTTPServerBuilder { responder in
            HooksFirstChannel(responder: responder) { wire in
                HooksHandler(intake: hooks, dates: dates, serverName: serverName, wire: wire)
            }
        }
        let server = try builder.buildServer(
            configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
            responder: { (request, writer: consuming ResponseWriter, channel) in
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
            }, onServerRunning: onServerRunning)
        try await ServiceGroup(configuration: .init(services: services + [server], logger: logger)).run()
    }

    struct ResponseAbandoned: Error {}
}

/// Hummingbird's HTTP/1 child channel (`HTTP1Channel`, with its defaults) with a `HooksHandler` in front of
/// the connection's state handler (idle, quiescing) and the router. The hooks handler writes its answers as
/// bytes at the response encoder's place, and leaves the bodies out of the router's answers to HEAD (see
/// `HooksHandler`), so NIO's encoder and decoder are added unpaired rather than by
/// `configureHTTPServerPipeline`, which would pair them.
struct HooksFirstChannel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>
    let responder: HTTPChannelHandler.Responder
    /// Makes the hooks handler, given the context of the response encoder it writes its answers at.
    let hooksHandler: @Sendable (ChannelHandlerContext) -> HooksHandler

    init(
        responder: @escaping HTTPChannelHandler.Responder,
        hooksHandler: @escaping @Sendable (ChannelHandlerContext) -> HooksHandler
    ) {
        self.responder = responder
        self.hooksHandler = hooksHandler
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
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
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try NIOAsyncChannel(
                wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value: Value, logger: Logger) async {
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
