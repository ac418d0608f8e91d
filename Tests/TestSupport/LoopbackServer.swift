import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A real HTTP server on 127.0.0.1 for tests: the CRM, chat or ticket system a rule talks to.
///   GET  /customer?phone=…   200 {"name":"Acme","phone":…}
///   ANY  /echo               200, the request's method, headers and body as JSON
///   ANY  /status/NNN         NNN, empty body
///   ANY  /slow?ms=N          answers after N ms (default 2000)
///   ANY  /switch             503 while `failing` is set, else 200 "ok"
///   ANY  /redirect?to=URL    302 to URL (not percent-decoded)
///   ANY  /redirect-after?ms=N&to=URL   the same, N ms late
/// Every request is recorded.
public final class LoopbackServer: Sendable {
    public struct Request: Sendable {
        public var method: String
        public var uri: String
        public var headers: [(String, String)]
        public var body: String
    }

    let channel: any Channel
    public let port: Int
    /// What the handlers record and read. Made before the socket is bound and handed to them, so a request that
    /// arrives the moment the port opens is recorded too (a retrying client is often waiting for it: with the
    /// record kept behind a reference set after binding, such a request was answered but not recorded).
    private let state: State

    public var requests: [Request] { state.recorded.withLock { $0 } }

    /// The most requests that were being answered at the same time.
    public var maxConcurrent: Int { state.concurrency.withLock { $0.max } }

    /// While true, `/switch` answers 503.
    public var failing: Bool {
        get { state.failing.withLock { $0 } }
        set { state.failing.withLock { $0 = newValue } }
    }

    /// - Parameter port: 0 for any free port; a given port lets a test bring a "down" upstream back.
    public init(port: Int = 0) async throws {
        let state = State()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        self.channel = channel
        self.port = channel.localAddress!.port!
        self.state = state
    }

    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    public func stop() async throws { try await channel.close() }

    private final class State: Sendable {
        let recorded = Mutex<[Request]>([])
        let concurrency = Mutex<(now: Int, max: Int)>((0, 0))
        let failing = Mutex(false)

        func started() {
            concurrency.withLock {
                $0.now += 1; $0.max = max($0.max, $0.now)
            }
        }

        func ended() { concurrency.withLock { $0.now -= 1 } }
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        // Confined to its channel's event loop.
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let state: State
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(state: State) { self.state = state }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                let text = body.readString(length: body.readableBytes) ?? ""
                let request = Request(
                    method: "\(head.method.rawValue)", uri: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                    body: text)
                state.recorded.withLock { $0.append(request) }
                state.started()
                respond(context: context, request: request)
            }
        }

        func respond(context: ChannelHandlerContext, request: Request) {
            let path = String(request.uri.split(separator: "?").first ?? "")
            var status = HTTPResponseStatus.ok
            var payload = ""
            var delay: TimeAmount = .zero
            var location: String? = nil
            if path == "/customer" {
                let phone = request.uri.split(separator: "=").last.map(String.init) ?? ""
                payload = #"{"name":"Acme","phone":"\#(phone)"}"#
            } else if path == "/echo" {
                let headers = request.headers.map { #""\#($0.0.lowercased())":"\#($0.1)""# }.joined(separator: ",")
                let escaped = request.body.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                    of: "\"", with: "\\\"")
                payload = #"{"method":"\#(request.method)","headers":{\#(headers)},"body":"\#(escaped)"}"#
            } else if path.hasPrefix("/status/"), let code = Int(path.dropFirst(8)) {
                status = HTTPResponseStatus(statusCode: code)
            } else if path == "/switch" {
                let failing = state.failing.withLock { $0 }
                status = failing ? .serviceUnavailable : .ok
                payload = failing ? "down for maintenance" : "ok"
            } else if path == "/redirect" {
                status = .found
                location = request.uri.split(separator: "?", maxSplits: 1).last.map { String($0.dropFirst(3)) }
            } else if path == "/redirect-after" {
                // /redirect-after?ms=N&to=URL: a redirect to URL (which may have a query of its own), N ms late.
                let query = request.uri.split(separator: "?", maxSplits: 1).last ?? ""
                let parts = query.split(separator: "&", maxSplits: 1)
                delay = .milliseconds(parts.first.flatMap { Int64($0.dropFirst(3)) } ?? 0)
                status = .found
                location = parts.count == 2 ? String(parts[1].dropFirst(3)) : nil
            } else if path == "/slow" {
                let ms = request.uri.split(separator: "=").last.flatMap { Int64($0) } ?? 2000
                delay = .milliseconds(ms)
                payload = "late"
            } else {
                status = .notFound
            }
            let send = {
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: payload.hasPrefix("{") ? "application/json" : "text/plain")
                headers.add(name: "Content-Length", value: "\(payload.utf8.count)")
                headers.add(name: "X-Test", value: "yes")
                if let location { headers.add(name: "Location", value: location) }
                context.write(
                    self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                    promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: payload)))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                self.state.ended()
            }
            if delay == .zero { send() } else { context.eventLoop.scheduleTask(in: delay) { send() } }
        }
    }
}
