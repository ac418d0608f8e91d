import EventStore
import Foundation
import HTTPTypes
import Hummingbird
import JSONCore
import KazooEvents
import Logging
import NIOCore
import RuleEngine

/// `POST|PUT|GET /hooks/{hook}` (and `/hooks`, and `/hooks/{hook}/{token}`): decode, journal, answer 200,
/// and hand the event to the engine, whose rules run after the answer. A request that is not an acceptable
/// event is an `APIError` (4xx with the reason) and its body is kept in the rejected store.
struct HooksController: Sendable {
    let configuration: ServerConfiguration
    let engine: Engine
    /// Where accepted events are committed before their 200 (nil with `--journal off`).
    let journal: (any Journal)?
    let metrics: Metrics
    let logger: Logger
    let rejected: RejectedStore
    let decoder: EventDecoder
    let deduplicator: Deduplicator?

    init(
        configuration: ServerConfiguration, engine: Engine, journal: (any Journal)?, metrics: Metrics, logger: Logger,
        rejected: RejectedStore
    ) {
        self.configuration = configuration
        self.engine = engine
        self.journal = journal
        self.metrics = metrics
        self.logger = logger
        self.rejected = rejected
        self.decoder = EventDecoder(limits: configuration.decoding)
        self.deduplicator = configuration.dedupeWindow > 0 ? Deduplicator(window: configuration.dedupeWindow) : nil
    }

    func addRoutes(to group: RouterGroup<SwitchboardRequestContext>) {
        for path in ["", ":hook", ":hook/:token"] {
            for method in [HTTPRequest.Method.post, .put, .get] {
                group.on(RouterPath(path), method: method) { request, context in
                    try await receive(request, context: context)
                }
            }
        }
    }

    func receive(_ request: Request, context: SwitchboardRequestContext) async throws(APIError) -> Response {
        let hookParameter = context.parameters.get("hook")
        let hookID = request.headers[HTTPField.Name("X-Hook-ID")!]
        let peer = context.remoteAddress?.ipAddress

        // The payload: the query for GET, the body for POST and PUT.
        let rawURI = Self.splitURI(request.uri.description)
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
                var error = reject(
                    .contentTooLarge, code: "limit", reason: reason, body: [], request: request, hookID: hookID,
                    peer: peer)
                error.headers[.connection] = "close"
                if !drained {
                    // Still sending past the linger cap: give the answer a moment to leave, then hang up.
                    let channel = context.channel
                    channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
                }
                throw error
            case .failed:
                throw reject(
                    .badRequest, code: "body", reason: "the request body could not be read", body: [],
                    request: request, hookID: hookID, peer: peer)
            }
            format = WireFormat.detect(contentType: request.headers[.contentType], body: body)
        }
        let hint = hookParameter == "all" ? nil : hookParameter
        let event: WebhookEvent
        do {
            event = try decoder.decode(body, format: format, hook: hint)
        } catch {
            throw reject(
                .badRequest, code: error.kind.code, reason: "\(format) body: \(error)", body: body, request: request,
                hookID: hookID, peer: peer)
        }
        let duplicateKey = deduplicator.flatMap { _ in Deduplicator.key(for: event, hookID: hookID) }
        if let duplicateKey, let deduplicator, !deduplicator.firstSighting(duplicateKey) {
            return duplicate(event)
        }
        var meta = JSONObject()
        let receivedAt = Date().timeIntervalSince1970
        let id = EventID.make(at: receivedAt)
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
                // Several nodes share the keys in the database: a repeat that reached another node is caught
                // there (this node's memory only knows what reached it).
                let first = try await journal.append(
                    entry, duplicateKey: duplicateKey, window: configuration.dedupeWindow)
                if !first { return duplicate(event) }
            } catch {
                if let duplicateKey { deduplicator?.forget(duplicateKey) }
                metrics.increment("switchboard_journal_failures_total")
                logger.error("refused an event because the journal could not be written: \(error)")
                throw APIError(.serviceUnavailable, code: "journal", "\(error)")
            }
        }
        // One node runs what it accepts; with several, the node holding the processing lease reads it back.
        if journal?.runsEventsOnAccept ?? true { await engine.submit(event, meta: .object(meta)) }
        metrics.increment(
            "switchboard_events_total", [("hook", hookParameter ?? "-"), ("name", event.qualifiedName)])
        return .json(.ok, ["accepted": true, "kind": .string(event.kind.rawValue), "name": .string(event.name)])
    }

    func duplicate(_ event: WebhookEvent) -> Response {
        metrics.increment("switchboard_duplicates_total", [("name", event.qualifiedName)])
        logger.debug("a repeat of an event already accepted; answered 200 and not run again")
        return .json(.ok, ["accepted": true, "duplicate": true, "name": .string(event.name)])
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
        let (eightTimes, overflow) = limit.multipliedReportingOverflow(by: 8)
        let lingerBytes = max(64 << 20, overflow ? Int.max / 2 : eightTimes)
        // Like nginx's lingering_time: a client still trickling a refused body after this is cut off.
        let lingerUntil = ContinuousClock.now + .seconds(30)
        var body: [UInt8] = []
        var total = 0
        do {
            for try await chunk in request.body {
                total += chunk.readableBytes
                if total <= limit {
                    chunk.withUnsafeReadableBytes { body.append(contentsOf: $0) }
                } else {
                    body = []
                    if total - limit > lingerBytes || ContinuousClock.now > lingerUntil {
                        return .overLimit(drained: false)
                    }
                }
            }
        } catch {
            return total > limit ? .overLimit(drained: true) : .failed
        }
        return total > limit ? .overLimit(drained: true) : .complete(body)
    }

    func reject(
        _ status: HTTPResponse.Status, code: String, reason: String, body: [UInt8], request: Request, hookID: String?,
        peer: String?
    ) -> APIError {
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
        return APIError(status, code: code, reason)
    }

    /// Splits "path?query" (a stray second '?' stays in the query).
    static func splitURI(_ uri: String) -> (path: String, query: String?) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, nil) }
        return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
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
}
