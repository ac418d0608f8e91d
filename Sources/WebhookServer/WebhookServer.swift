import Delivery
public import EventStore
import Foundation
import HTTPTypes
public import Hummingbird
import JSONCore
import KazooEvents
public import Logging
public import NIOCore
public import RuleEngine

/// The request context: Hummingbird's core storage plus the peer address (for CIDR checks and `event.meta`).
public struct SwitchboardRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The connection, so an over-limit body can be cut off after its 413 (see `WebhookHandler.readBody`).
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }
}

/// Builds the webhook server: `POST|PUT|GET /hooks/{hook}` (and `/hooks`, and `/hooks/{hook}/{token}`),
/// `GET /healthz`, `/readyz`, `/metrics`, `/admin/rejected`.
///
/// Answers are Kazoo-safe: 200 for every accepted event whatever the rules do (they run after the answer),
/// 4xx only for a request that is not an acceptable event, with the reason in the body and the body kept.
public func buildApplication(
    configuration: ServerConfiguration, engine: Engine, journal: EventJournal?, metrics: Metrics, logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let handler = WebhookHandler(
        configuration: configuration, engine: engine, journal: journal, metrics: metrics, logger: logger,
        rejected: RejectedStore(directory: configuration.rejectedDirectory), failures: HookFailureTracker())
    let router = Router(context: SwitchboardRequestContext.self)
    for path in ["/hooks", "/hooks/:hook", "/hooks/:hook/:token"] {
        for method in [HTTPRequest.Method.post, .put, .get] {
            router.on(RouterPath(path), method: method) { request, context in
                await handler.receive(request, context: context)
            }
        }
    }
    router.get("/healthz") { _, _ in WebhookHandler.json(.ok, ["status": "ok"]) }
    router.get("/readyz") { _, _ in handler.readiness() }
    router.get("/metrics") { _, _ in
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
            body: .init(byteBuffer: ByteBuffer(string: metrics.prometheus())))
    }
    router.post("/admin/reload") { request, context in
        if let denied = handler.authorizeAdmin(request, context: context) { return denied }
        let result = await engine.reload(directory: configuration.rulesDirectory, reason: "POST /admin/reload")
        return WebhookHandler.json(
            result.ok ? .ok : .unprocessableContent,
            [
                "ok": .bool(result.ok), "changed": .bool(result.changed), "version": .int(Int64(result.version)),
                "rules": .array(engine.ruleNames.map(JSONValue.string)),
                "errors": .array(result.errors.map(JSONValue.string)),
            ])
    }
    router.get("/admin/rejected") { request, context in
        if let denied = handler.authorizeAdmin(request, context: context) { return denied }
        let data =
            (try? JSONSerialization.data(withJSONObject: handler.rejected.list(), options: [.sortedKeys]))
            ?? Data("[]".utf8)
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
    router.get("/admin/deliveries") { request, context in
        if let denied = handler.authorizeAdmin(request, context: context) { return denied }
        guard let journal else {
            return WebhookHandler.json(
                .notFound, ["error": "the journal is off (--journal off): forwards are not kept", "code": "no_journal"])
        }
        let state = request.uri.queryParameters.get("state") ?? "all"
        guard let filter = DeliveryFilter(rawValue: state) else {
            let names = DeliveryFilter.allCases.map(\.rawValue).joined(separator: ", ")
            return WebhookHandler.json(
                .badRequest, ["error": .string("state must be one of \(names), not \(state)"), "code": "bad_state"])
        }
        let limit = request.uri.queryParameters.get("limit").flatMap { Int($0) } ?? 100
        do {
            let listed = try journal.deliveries(filter, limit: max(1, min(limit, 10_000)))
            return WebhookHandler.json(
                .ok, .array(try listed.map { try $0.json(attempts: journal.attempts($0.id)) }))
        } catch {
            return WebhookHandler.json(.internalServerError, ["error": .string("\(error)"), "code": "journal"])
        }
    }
    return Application(
        router: router,
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard",
            backlog: configuration.listenBacklog),
        onServerRunning: onServerRunning, logger: logger)
}

/// The webhook endpoint's logic, apart from routing.
struct WebhookHandler: Sendable {
    let configuration: ServerConfiguration
    let engine: Engine
    /// Where accepted events are committed before their 200 (nil with `--journal off`).
    let journal: EventJournal?
    let metrics: Metrics
    let logger: Logger
    let rejected: RejectedStore
    let failures: HookFailureTracker
    let decoder: EventDecoder
    let deduplicator: Deduplicator?

    init(
        configuration: ServerConfiguration, engine: Engine, journal: EventJournal?, metrics: Metrics, logger: Logger,
        rejected: RejectedStore,
        failures: HookFailureTracker
    ) {
        self.configuration = configuration
        self.engine = engine
        self.journal = journal
        self.metrics = metrics
        self.logger = logger
        self.rejected = rejected
        self.failures = failures
        self.decoder = EventDecoder(limits: configuration.decoding)
        self.deduplicator = configuration.dedupeWindow > 0 ? Deduplicator(window: configuration.dedupeWindow) : nil
    }

    func receive(_ request: Request, context: SwitchboardRequestContext) async -> Response {
        let hookParameter = context.parameters.get("hook")
        let pathToken = context.parameters.get("token")
        let hookID = request.headers[HTTPField.Name("X-Hook-ID")!]
        let peer = context.remoteAddress?.ipAddress

        if let denied = authorize(request, context: context, pathToken: pathToken) {
            return answer(denied, hookID: hookID)
        }
        // The payload: the query for GET, the body for POST and PUT.
        let rawURI = splitURI(request.uri.description)
        var body: [UInt8]
        var format: WireFormat
        if request.method == .get {
            body = Array(Self.removingToken(rawURI.query ?? "").utf8)
            format = .query
        } else {
            switch await readBody(request, context: context) {
            case .complete(let bytes):
                body = bytes
            case .overLimit(let drained):
                let reason = "body is over the limit of \(configuration.decoding.maxBodyBytes) bytes"
                var response = reject(
                    .contentTooLarge, code: "limit", reason: reason, body: [], request: request, hookID: hookID,
                    peer: peer)
                response.headers[.connection] = "close"
                if !drained {
                    // Still sending past the linger cap: give the answer a moment to leave, then hang up.
                    let channel = context.channel
                    channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
                }
                return response
            case .failed:
                return Self.json(.badRequest, ["error": "the request body could not be read", "code": "body"])
            }
            format = WireFormat.detect(contentType: request.headers[.contentType], body: body)
        }
        let hint = hookParameter == "all" ? nil : hookParameter
        let event: WebhookEvent
        do {
            event = try decoder.decode(body, format: format, hook: hint)
        } catch {
            return reject(
                .badRequest, code: error.kind.code, reason: "\(format) body: \(error)", body: body, request: request,
                hookID: hookID, peer: peer)
        }
        let duplicateKey = deduplicator.flatMap { _ in Deduplicator.key(for: event, hookID: hookID) }
        if let duplicateKey, let deduplicator, !deduplicator.firstSighting(duplicateKey) {
            metrics.increment("switchboard_duplicates_total", [("name", event.qualifiedName)])
            logger.debug("a repeat of an event already accepted; answered 200 and not run again")
            return Self.json(.ok, ["accepted": true, "duplicate": true, "name": .string(event.name)])
        }
        var meta = JSONObject()
        let id = UUID().uuidString.lowercased()
        let receivedAt = Date().timeIntervalSince1970
        meta["id"] = .string(id)
        meta["received_at"] = .double(receivedAt)
        meta["hook"] = hookParameter.map(JSONValue.string) ?? .null
        meta["method"] = .string(request.method.rawValue)
        meta["format"] = .string(format.rawValue)
        if let hookID { meta["hook_id"] = .string(hookID) }
        if let account = request.headers[HTTPField.Name("X-Account-ID")!] { meta["account_id"] = .string(account) }
        if let peer { meta["peer"] = .string(peer) }
        if let journal {
            // Acknowledged means durable: the event is committed before the 200.
            let entry = EventJournal.Entry(
                id: id, receivedAt: receivedAt, hook: hint, format: format.rawValue, body: body,
                meta: (try? JSONWriter.string(.object(meta))) ?? "{}")
            do {
                try await journal.append(entry)
            } catch {
                if let duplicateKey { deduplicator?.forget(duplicateKey) }
                metrics.increment("switchboard_journal_failures_total")
                logger.error("refused an event because the journal could not be written: \(error)")
                return answer(
                    Self.json(.serviceUnavailable, ["error": .string("\(error)"), "code": "journal"]), hookID: hookID)
            }
        }
        await engine.submit(event, meta: .object(meta))
        metrics.increment(
            "switchboard_events_total", [("hook", hookParameter ?? "-"), ("name", event.qualifiedName)])
        return Self.json(.ok, ["accepted": true, "kind": .string(event.kind.rawValue), "name": .string(event.name)])
    }

    enum BodyRead {
        case complete([UInt8])
        /// Over `maxBodyBytes`; `drained` when the rest was read to its end (or the client stopped).
        case overLimit(drained: Bool)
        case failed
    }

    /// Reads the body up to the limit. Past it, keeps reading and discarding what the client still sends
    /// (up to `lingerBytes`, like nginx's lingering close): most HTTP clients send the whole body before they
    /// read any answer, so a server that stops reading leaves them blocked until their own timeout instead of
    /// reading the 413 and its reason.
    func readBody(_ request: Request, context: SwitchboardRequestContext) async -> BodyRead {
        let limit = configuration.decoding.maxBodyBytes
        let lingerBytes = max(64 << 20, limit * 8)
        var body: [UInt8] = []
        var total = 0
        do {
            for try await chunk in request.body {
                total += chunk.readableBytes
                if total <= limit {
                    chunk.withUnsafeReadableBytes { body.append(contentsOf: $0) }
                } else {
                    body = []
                    if total - limit > lingerBytes { return .overLimit(drained: false) }
                }
            }
        } catch {
            return total > limit ? .overLimit(drained: true) : .failed
        }
        return total > limit ? .overLimit(drained: true) : .complete(body)
    }

    /// nil when the request may proceed, else the 401/403 to send.
    func authorize(_ request: Request, context: SwitchboardRequestContext, pathToken: String?) -> Response? {
        if !configuration.allowedSources.isEmpty {
            let address = context.remoteAddress?.ipAddress.flatMap(CIDR.parseAddress)
            guard let address, configuration.allowedSources.contains(where: { $0.contains(address) }) else {
                return Self.json(.forbidden, ["error": "source address not allowed", "code": "forbidden"])
            }
        }
        if let token = configuration.token {
            let uri = splitURI(request.uri.description)
            let given = pathToken ?? Self.token(inQuery: uri.query ?? "")
            guard let given, Self.constantTimeEqual(given, token) else {
                return Self.json(
                    .unauthorized,
                    ["error": "missing or wrong token (?token= or /hooks/{hook}/{token})", "code": "unauthorized"])
            }
        }
        if let basic = configuration.basicAuth {
            let header = request.headers[.authorization] ?? ""
            let expected = "Basic " + Data(basic.utf8).base64EncodedString()
            guard Self.constantTimeEqual(header, expected) else {
                var response = Self.json(
                    .unauthorized, ["error": "HTTP Basic credentials required", "code": "unauthorized"])
                response.headers[.wwwAuthenticate] = "Basic realm=\"switchboard\""
                return response
            }
        }
        return nil
    }

    /// Admin endpoints need the token or Basic credentials; with neither configured, only loopback peers.
    func authorizeAdmin(_ request: Request, context: SwitchboardRequestContext) -> Response? {
        if configuration.token != nil || configuration.basicAuth != nil {
            return authorize(request, context: context, pathToken: nil)
        }
        let address = context.remoteAddress?.ipAddress.flatMap(CIDR.parseAddress) ?? []
        let loopback = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]
        guard loopback.contains(where: { $0.contains(address) }) else {
            return Self.json(
                .forbidden,
                [
                    "error": "admin endpoints need --token or --basic-auth to be used from other hosts",
                    "code": "forbidden",
                ])
        }
        return nil
    }

    func reject(
        _ status: HTTPResponse.Status, code: String, reason: String, body: [UInt8], request: Request, hookID: String?,
        peer: String?
    ) -> Response {
        metrics.increment("switchboard_rejected_total", [("reason", code)])
        let headers = request.headers.map { ($0.name.rawName, $0.value) }
        if let problem = rejected.keep(
            body: body, reason: reason, code: code, method: request.method.rawValue, path: Self.redactedPath(request),
            headers: headers, peer: peer)
        {
            logger.error("\(problem)")
        }
        logger.info(
            "rejected a request: \(reason)", metadata: ["request.code": "\(code)", "hook.id": "\(hookID ?? "-")"])
        return answer(Self.json(status, ["error": .string(reason), "code": .string(code)]), hookID: hookID)
    }

    /// Counts non-200 answers per Kazoo hook and warns before Kazoo would disable it.
    func answer(_ response: Response, hookID: String?) -> Response {
        if response.status != .ok, let hookID {
            metrics.increment("switchboard_non200_responses_total", [("hook_id", hookID)])
            if let count = failures.record(hookID: hookID) {
                logger.warning(
                    "Kazoo hook \(hookID) got \(count) non-200 answers in the last 60 s; Kazoo disables a hook after \(HookFailureTracker.kazooDisableAt)",
                    metadata: ["hook.id": "\(hookID)"])
            }
        }
        return response
    }

    func readiness() -> Response {
        let generation = engine.generation
        let errors = generation.diagnostics.filter { $0.severity == .error }.map { JSONValue.string($0.description) }
        let ready = !generation.ruleNames.isEmpty
        var body = JSONObject()
        body["ready"] = .bool(ready)
        body["version"] = .int(Int64(generation.version))
        body["rules"] = .array(generation.ruleNames.map(JSONValue.string))
        body["errors"] = .array(errors)
        if let last = engine.lastReloadResult {
            body["last_reload"] = [
                "ok": .bool(last.ok), "at": .double(last.at.timeIntervalSince1970),
                "errors": .array(last.errors.map(JSONValue.string)),
            ]
        }
        return Self.json(ready ? .ok : .serviceUnavailable, .object(body))
    }

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        let text = (try? JSONWriter.string(value)) ?? "{}"
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Splits "path?query" (a stray second '?' stays in the query).
    func splitURI(_ uri: String) -> (path: String, query: String?) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, nil) }
        return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
    }

    /// The `token=` pair of a query, which Kazoo may follow with a literal '?'.
    static func token(inQuery query: String) -> String? {
        for pair in query.split(whereSeparator: { $0 == "&" || $0 == "?" }) where pair.hasPrefix("token=") {
            return String(pair.dropFirst(6)).removingPercentEncoding
        }
        return nil
    }

    /// The query without its `token=` pair, so the secret never becomes an event field.
    static func removingToken(_ query: String) -> String {
        var out = ""
        var rest = Substring(query)
        while !rest.isEmpty {
            let end = rest.firstIndex(where: { $0 == "&" || $0 == "?" }) ?? rest.endIndex
            let pair = rest[..<end]
            let separator = end < rest.endIndex ? String(rest[end]) : ""
            if !pair.hasPrefix("token=") { out += pair + separator }
            rest = end < rest.endIndex ? rest[rest.index(after: end)...] : ""
        }
        return out
    }

    /// The request path with any secret (path segment or query) replaced.
    static func redactedPath(_ request: Request) -> String {
        var path = request.uri.path
        let parts = path.split(separator: "/")
        if parts.count == 3, parts[0] == "hooks" { path = "/hooks/\(parts[1])/REDACTED" }
        let query = request.uri.description.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init)
        return query.map { path + "?" + RejectedStore.redact($0) } ?? path
    }

    /// Compares without stopping at the first difference, so timing does not reveal the secret.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }
}
