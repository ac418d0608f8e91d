import AsyncHTTPClient
import Foundation
import JSONCore
import NIOCore
import NIOHTTP1
import Synchronization

/// An HTTP request a rule makes or a forward sends.
public struct OutboundRequest: Sendable, Hashable {
    public var method: String
    public var url: String
    public var headers: [Header]
    public var body: [UInt8]?
    public var timeout: Duration
    /// The rule making the call, for per-rule limits (nil for forwards).
    public var rule: String?
    /// When the whole call must end (`timeout` after it began), set by a client that spends part of the time
    /// before it sends (a lookup, redirects, another address): the send gets what is left, and a timeout is
    /// still reported as `timeout`, the time the caller gave. Nil: `timeout` from the send.
    package var deadline: ContinuousClock.Instant?

    public struct Header: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(
        method: String, url: String, headers: [Header] = [], body: [UInt8]? = nil, timeout: Duration,
        rule: String? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.rule = rule
    }
}

/// The answer to an `OutboundRequest`.
public struct OutboundResponse: Sendable, Hashable {
    public var status: Int
    public var headers: [OutboundRequest.Header]
    public var body: [UInt8]

    public init(status: Int, headers: [OutboundRequest.Header] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Sends rule HTTP requests. Rules see a failure as `nil, message`.
public protocol OutboundHTTPClient: Sendable {
    func execute(_ request: OutboundRequest) async throws -> OutboundResponse
}

/// A failure to send, with the message a rule receives.
public struct OutboundHTTPError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// Trying again cannot help (the address is refused by policy, the URL has no host): a forward that
    /// fails this way becomes a dead letter at once.
    public var permanent: Bool
    /// No connection could be made (refused, no route, no answer to the connect in time): nothing was sent, so
    /// another address of the same host may be tried, whatever the method.
    public var notConnected: Bool
    /// The call's time ran out (`timed out after …`).
    public var timedOut: Bool
    public init(_ message: String, permanent: Bool = false, notConnected: Bool = false, timedOut: Bool = false) {
        self.message = message
        self.permanent = permanent
        self.notConnected = notConnected
        self.timedOut = timedOut
    }
    public var description: String { message }
}

/// `switchboard run` without `--live`: nothing leaves the machine.
public struct DryRunHTTPClient: OutboundHTTPClient {
    public init() {}
    public func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        throw OutboundHTTPError("dry run: not sent")
    }
}

/// Sends for real with AsyncHTTPClient, without blocking a thread: the rule's coroutine waits, nothing else.
///
/// Calls go to the first of several AsyncHTTPClient instances ("shards") that has fewer than `shardSize`
/// calls in flight, a new one made when all have as many. AsyncHTTPClient's pool copies its state of every
/// connection to a host on each new connection, so a burst of N slow calls to one host cost it on the order
/// of N² copies in one pool: `perf` had that at 12% of the server's CPU for the first 1,000 events on a
/// 1-second upstream (`scripts/serve_bench.sh`), against none once the pool's connections existed. Calls
/// below `shardSize` at once all use the first instance, so its connections are reused as before.
public final class LiveHTTPClient: OutboundHTTPClient {
    let maxResponseBytes: Int
    let configuration: HTTPClient.Configuration
    /// Calls in flight at once on one instance before the next is used.
    static let shardSize = 64
    /// How long one connect may take unless the caller says otherwise.
    public static let defaultConnectTimeout = Duration.seconds(5)
    private let shards = Mutex<(clients: [(client: HTTPClient, inFlight: Int)], closed: Bool)>(([], false))
    private let maxShards: Int

    /// - Parameters:
    ///   - maxResponseBytes: the most of a response body that is read. Default 1 MiB.
    ///   - followRedirects: follow up to 5 redirects; off when the caller checks each hop itself.
    ///   - maxConnectionsPerHost: concurrent connections to one host (calls to a slow upstream run in parallel).
    ///   - dnsOverride: host name → the address to connect to instead of resolving it (TLS still uses the name).
    ///   - retryConnecting: a connect that fails is tried again until the request's deadline (AsyncHTTPClient's
    ///     default); false fails the call at once, for a caller with another address to try.
    ///   - connectTimeout: how long one connect may take (`defaultConnectTimeout`, 5 s).
    public init(
        maxResponseBytes: Int = 1 << 20, followRedirects: Bool = true, maxConnectionsPerHost: Int = 64,
        dnsOverride: [String: String] = [:], retryConnecting: Bool = true,
        connectTimeout: Duration = defaultConnectTimeout
    ) {
        var configuration = HTTPClient.Configuration()
        configuration.dnsOverride = dnsOverride
        configuration.redirectConfiguration = followRedirects ? .follow(max: 5, allowCycles: false) : .disallow
        configuration.timeout = .init(connect: .nanoseconds(Self.nanoseconds(connectTimeout)))
        // Switchboard bootstraps no tracer. With the global no-op one AsyncHTTPClient still starts a span for
        // every request and builds its attributes (a dictionary per attribute, the URL's path and query);
        // nil skips all of it.
        configuration.tracing.tracer = nil
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: maxConnectionsPerHost)
        configuration.connectionPool.retryConnectionEstablishment = retryConnecting
        self.configuration = configuration
        self.maxResponseBytes = maxResponseBytes
        maxShards = max(1, (maxConnectionsPerHost + Self.shardSize - 1) / Self.shardSize)
    }

    /// Closes connections. Call once when done.
    public func shutdown() async throws {
        let clients = shards.withLock { shards in
            shards.closed = true
            return shards.clients.map(\.client)
        }
        for client in clients { try await client.shutdown() }
    }

    /// How many AsyncHTTPClient instances have been made (for tests).
    var shardCount: Int { shards.withLock { $0.clients.count } }

    /// The instance for the next call, counted in flight until `release`; nil once shut down (an instance
    /// made then would never be shut down).
    private func acquire() -> (client: HTTPClient, index: Int)? {
        shards.withLock { shards in
            guard !shards.closed else { return nil }
            var chosen = shards.clients.firstIndex { $0.inFlight < Self.shardSize }
            if chosen == nil, shards.clients.count < maxShards {
                let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
                shards.clients.append((client, 0))
                chosen = shards.clients.count - 1
            }
            let clients = shards.clients
            let index = chosen ?? clients.indices.min { clients[$0].inFlight < clients[$1].inFlight } ?? 0
            shards.clients[index].inFlight += 1
            return (shards.clients[index].client, index)
        }
    }

    private func release(_ index: Int) {
        shards.withLock { $0.clients[index].inFlight -= 1 }
    }

    /// Uses AsyncHTTPClient's future-based `execute(request:delegate:deadline:)`, the body collected on the
    /// connection's event loop by a `ResponseAccumulator` capped at `maxResponseBytes`. Its async
    /// `execute(_:timeout:)` starts an unstructured task on the global executor for every call (to register
    /// the request with its cancellation handler), waking one of Swift's pool threads on cores the event loops
    /// need, and keeps a deeper chain of async frames alive while the call waits. For 1,000 calls waiting on a
    /// slow upstream this path took 15% less of the server's CPU and 2,300 fewer page faults
    /// (`scripts/serve_bench.sh`'s first section).
    public func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        guard let (client, shard) = acquire() else { throw OutboundHTTPError("the HTTP client is shut down") }
        defer { release(shard) }
        // Only the task crosses the wait: the request, its headers and the response are built and read in
        // synchronous functions, so the async frame a waiting call keeps stays small.
        var delegate: SentNoting?
        do {
            let (task, noting) = try start(request, on: client)
            delegate = noting
            return Self.outbound(
                try await withTaskCancellationHandler {
                    try await task.futureResult.get()
                } onCancel: {
                    task.cancel()
                })
        } catch {
            throw outboundError(error, timeout: request.timeout, sent: delegate?.headSent ?? false)
        }
    }

    private typealias Call = HTTPClient.Task<HTTPClient.Response>
    /// `Durations.longest` (settings refuse more), so a timeout's nanoseconds cannot overflow.
    private static let longestTimeout = Duration.seconds(Durations.longest)

    private func start(_ request: OutboundRequest, on client: HTTPClient) throws -> (Call, SentNoting) {
        var headers = HTTPHeaders()
        for header in request.headers {
            // NIO stops the process on a name that is not ASCII (a precondition). AsyncHTTPClient would refuse
            // the rest of a bad name or value too, but as an error a forward retries; these never go out, so
            // they fail for good, saying what is wrong (a value with CR or LF in it would split the header).
            guard header.name.utf8.allSatisfy({ $0 < 0x80 }) else {
                throw OutboundHTTPError("the header name \"\(header.name)\" is not ASCII", permanent: true)
            }
            guard !header.name.isEmpty, header.name.utf8.allSatisfy(Self.isTokenByte) else {
                throw OutboundHTTPError(
                    "the header name \"\(header.name)\" is not a token (letters, digits and !#$%&'*+-.^_`|~)",
                    permanent: true)
            }
            guard header.value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw OutboundHTTPError(
                    "the value of the header \"\(header.name)\" holds a control character (CR, LF, NUL…)",
                    permanent: true)
            }
            headers.add(name: header.name, value: header.value)
        }
        let outgoing: HTTPClient.Request
        do {
            outgoing = try HTTPClient.Request(
                url: request.url, method: HTTPMethod(rawValue: request.method), headers: headers,
                body: request.body.map { .byteBuffer(ByteBuffer(bytes: $0)) })
        } catch {
            // The URL cannot be sent (no host, say): trying again cannot help. (Not quoted: a query may hold a
            // secret, and this message is kept with a forward's dead letter.)
            throw OutboundHTTPError("the URL cannot be sent: \(error)", permanent: true)
        }
        let timeout = min(request.deadline.map { $0 - .now } ?? request.timeout, Self.longestTimeout)
        // No time left (a lookup or a redirect took it): nothing is started, not even a connection.
        guard timeout > .zero else { throw OutboundHTTPError("timed out after \(request.timeout)", timedOut: true) }
        let delegate = SentNoting(ResponseAccumulator(request: outgoing, maxBodySize: maxResponseBytes))
        return (
            client.execute(
                request: outgoing, delegate: delegate, deadline: .now() + .nanoseconds(Self.nanoseconds(timeout))),
            delegate
        )
    }

    /// RFC 9110's `tchar`: what a header name is made of.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return tokenPunctuation.contains(byte)
        }
    }
    private static let tokenPunctuation = Array("!#$%&'*+-.^_`|~".utf8)

    /// `duration` in whole nanoseconds (durations here are at most `longestTimeout`: no overflow).
    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }

    private static func outbound(_ response: HTTPClient.Response) -> OutboundResponse {
        var body = response.body ?? ByteBuffer()
        return OutboundResponse(
            status: Int(response.status.code),
            headers: response.headers.map { OutboundRequest.Header(name: $0.name, value: $0.value) },
            body: body.readBytes(length: body.readableBytes) ?? [])
    }

    /// Why no connection could be made, when that is what `error` says; nil for any other error. (A connection
    /// that breaks after the request went out can fail with "no route" too: the caller also checks that its
    /// head was never sent, `SentNoting`.)
    static func connectFailure(_ error: any Error) -> String? {
        if let error = error as? IOError, notConnectedErrors.contains(error.errnoCode) {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        if let error = error as? HTTPClientError {
            // (A TLS handshake that runs past the connect's time is part of making the connection.)
            if error == .connectTimeout || error == .tlsHandshakeTimeout { return "no answer to the connect" }
            if error == .getConnectionFromPoolTimeout { return "no connection in time" }
        }
        if let error = error as? ChannelError, case .connectTimeout = error { return "no answer to the connect" }
        return nil
    }

    /// What the socket or its connect fail with when nothing could be sent, so that the name's next address is
    /// tried: refused, no route, no usable source address or no free local port, the address family not
    /// supported (an IPv6 address on a host without IPv6 gives one of these), the network down.
    static let notConnectedErrors = [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT, ENETDOWN]

    private func outboundError(_ error: any Error, timeout: Duration, sent: Bool) -> OutboundHTTPError {
        if !sent, let reason = Self.connectFailure(error) { return OutboundHTTPError(reason, notConnected: true) }
        switch error {
        case let error as OutboundHTTPError:
            return error
        case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout:
            return OutboundHTTPError("timed out after \(timeout)", timedOut: true)
        case is ResponseAccumulator.ResponseTooBigError:
            return OutboundHTTPError("response body larger than \(maxResponseBytes) bytes")
        default:
            return OutboundHTTPError("\(error)")
        }
    }
}

/// AsyncHTTPClient's `ResponseAccumulator`, noting whether the request's head went out: a call that failed
/// before it did sent nothing, so another address may be tried whatever the method (`connectFailure`).
final class SentNoting: HTTPClientResponseDelegate {
    typealias Response = HTTPClient.Response
    let accumulator: ResponseAccumulator
    private let sent = Atomic(false)

    init(_ accumulator: ResponseAccumulator) { self.accumulator = accumulator }

    /// Read once the call has ended (its future completed, on any thread).
    var headSent: Bool { sent.load(ordering: .acquiring) }

    func didSendRequestHead(task: HTTPClient.Task<Response>, _ head: HTTPRequestHead) {
        sent.store(true, ordering: .releasing)
        accumulator.didSendRequestHead(task: task, head)
    }
    func didSendRequestPart(task: HTTPClient.Task<Response>, _ part: IOData) {
        accumulator.didSendRequestPart(task: task, part)
    }
    func didSendRequest(task: HTTPClient.Task<Response>) { accumulator.didSendRequest(task: task) }
    func didVisitURL(task: HTTPClient.Task<Response>, _ request: HTTPClient.Request, _ head: HTTPResponseHead) {
        accumulator.didVisitURL(task: task, request, head)
    }
    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        accumulator.didReceiveHead(task: task, head)
    }
    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        accumulator.didReceiveBodyPart(task: task, buffer)
    }
    func didReceiveError(task: HTTPClient.Task<Response>, _ error: any Error) {
        accumulator.didReceiveError(task: task, error)
    }
    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        try accumulator.didFinishRequest(task: task)
    }
}
