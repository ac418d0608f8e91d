import EventStore
import Foundation
import HTTPTypes
import JSONCore
import KazooEvents
import Logging
import NIOCore
import NIOHTTP1
import RuleEngine
import Synchronization

/// What `POST|PUT|GET /hooks/{hook}` (and `/hooks`, and `/hooks/{hook}/{token}`) does with a request once it
/// is read: check who sent it, decode it, journal it, hand it to the engine (whose rules run after the answer)
/// and say what to answer. A request that is not an acceptable event gets a 4xx with the reason, and its body
/// is kept in the rejected store. Every non-200 answer is counted per Kazoo hook (`X-Hook-ID`), with a warning
/// before Kazoo would disable the hook (6 failures in 60 s).
///
/// It knows nothing of connections: `HooksHandler` reads the request off the event loop's pipeline and writes
/// the answer back. Nothing here suspends; the journal and a full engine answer through a callback.
///
/// A class: the callbacks of every request capture it, and as a struct of ten fields (the configuration, the
/// logger, the decoder…) each capture copied all of them (callgrind: 643 instructions a request in that copy
/// alone; 2,166 fewer a request with the journal on, 921 with it off, once it was a class).
final class HookIntake: Sendable {
    let configuration: ServerConfiguration
    let engine: Engine
    /// Where accepted events are committed before their 200 (nil with `--journal off`).
    let journal: (any Journal)?
    let metrics: Metrics
    let logger: Logger
    let rejected: RejectedStore
    let failures: HookFailureTracker
    let decoder: EventDecoder
    let deduplicator: Deduplicator?
    let acceptedAnswers = AcceptedAnswers()
    /// `--read-timeout` and `--idle-timeout` (nil: never), for `HooksHandler`.
    let readTimeout: TimeAmount
    let idleTimeout: TimeAmount?

    init(
        configuration: ServerConfiguration, engine: Engine, journal: (any Journal)?, metrics: Metrics, logger: Logger,
        rejected: RejectedStore, failures: HookFailureTracker
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
        self.readTimeout = Self.timeAmount(configuration.readTimeout)
        self.idleTimeout = configuration.idleTimeout > 0 ? Self.timeAmount(configuration.idleTimeout) : nil
    }

    /// Seconds as a `TimeAmount`, at least a millisecond and at most a century.
    static func timeAmount(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64(min(max(seconds, 0.001), Durations.longest) * 1e9))
    }

    static let hookIDHeader = "X-Hook-ID"
    static let accountIDHeader = "X-Account-ID"

    /// The `{hook}` and `{token}` segments of a hooks route.
    struct Route: Sendable, Equatable {
        var hook: String?
        var token: String?
    }

    /// The hooks route a request is for, nil for every other request (the router answers those, 404 included).
    /// Empty segments are skipped, as the router does.
    static func route(_ method: HTTPMethod, target: String) -> Route? {
        guard method == .POST || method == .PUT || method == .GET else { return nil }
        // A scan of the bytes for at most three segments, without an array: splitting the String walked it
        // Character by Character, and even a generic split of its bytes cost about 4,500 instructions a request
        // (callgrind) for a path as short as `/hooks/channel_create`.
        var target = target
        return target.withUTF8 { bytes -> Route? in
            let slash = UInt8(ascii: "/")
            let end = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
            var segments: (Range<Int>?, Range<Int>?, Range<Int>?) = (nil, nil, nil)
            var count = 0
            var i = 0
            while i < end {
                guard bytes[i] != slash else {
                    i += 1
                    continue
                }
                let start = i
                while i < end, bytes[i] != slash { i += 1 }
                switch count {
                case 0: segments.0 = start..<i
                case 1: segments.1 = start..<i
                case 2: segments.2 = start..<i
                default: return nil
                }
                count += 1
            }
            func text(_ range: Range<Int>) -> String {
                String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            }
            guard let first = segments.0, bytes[first].elementsEqual("hooks".utf8) else { return nil }
            return Route(hook: segments.1.map(text), token: segments.2.map(text))
        }
    }

    /// The path and query of a request target: the target itself in the origin form every client sends
    /// (`/hooks/x?y`); from the absolute form (`http://host/hooks/x?y`, which HTTP/1.1 servers must accept)
    /// its path and query; "/" when it has neither.
    static func path(ofTarget target: String) -> String {
        guard target.utf8.first != UInt8(ascii: "/"), let url = URLComponents(string: target), url.scheme != nil
        else { return target }
        let path = url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath
        return url.percentEncodedQuery.map { path + "?" + $0 } ?? path
    }

    /// A request on a hooks route, its head read. It is NIO's HTTP/1 head, not converted to HTTPTypes' (that
    /// conversion, done for the router's requests, cost about 10,000 instructions a request: callgrind). A
    /// class: the handler's state and the answer's callback hold it, and copying the request's fields for
    /// each part of the request cost thousands of instructions in retains and releases.
    final class Head: Sendable {
        let request: HTTPRequestHead
        let route: Route
        /// The target's path and query (`path(ofTarget:)`).
        let target: String
        /// The peer's address (`127.0.0.1`).
        let peer: String?

        init(request: HTTPRequestHead, route: Route, target: String, peer: String?) {
            self.request = request
            self.route = route
            self.target = target
            self.peer = peer
        }

        var hookID: String? { request.headers.first(name: HookIntake.hookIDHeader) }
        /// Whether the connection closes after this answer: the client asked (`Connection: close`, in any case
        /// and among other options), or spoke HTTP/1.0 without asking to keep it (`Connection: keep-alive`).
        var closes: Bool { !request.isKeepAlive }
    }

    /// What to answer.
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        /// JSON text.
        var body: [UInt8]
        /// Beyond `Content-Type`, `Content-Length`, `Date` and `Server`.
        var headers: HTTPFields = [:]

        init(_ status: HTTPResponse.Status, _ body: JSONValue, headers: HTTPFields = [:]) {
            self.init(status, json: (try? JSONWriter.encode(body)) ?? Array("{}".utf8), headers: headers)
        }

        init(_ status: HTTPResponse.Status, json: [UInt8], headers: HTTPFields = [:]) {
            self.status = status
            self.body = json
            self.headers = headers
        }

        init(_ error: APIError) {
            self.init(
                error.status, ["error": .string(error.message), "code": .string(error.code)], headers: error.headers)
        }

        /// The answer with `Connection: close`: the connection closes after it.
        var closingConnection: Self {
            var answer = self
            answer.headers[.connection] = "close"
            return answer
        }
    }

    /// The answer for a request its sender may not make (`--allow-source`, `--token`, `--basic-auth`), nil when
    /// it may proceed. Read before the body, which is then not kept.
    func refusal(_ head: Head) -> Answer? {
        do {
            try Credentials(configuration).check(
                authorization: head.request.headers.first(name: "authorization"),
                query: Self.splitURI(head.target).query, peer: head.peer,
                pathToken: head.route.token)
            return nil
        } catch {
            return Answer(error)
        }
    }

    /// The 413 for a body over `maxBodyBytes` (its bytes are not kept).
    func tooLarge(_ head: Head) -> Answer {
        let reason = "body is over the limit of \(configuration.decoding.maxBodyBytes) bytes"
        return Answer(reject(.contentTooLarge, code: "limit", reason: reason, body: [], head: head)).closingConnection
    }

    /// The 408 for a request whose body stopped arriving for `--read-timeout`; what arrived is kept.
    func timedOut(_ head: Head, body: [UInt8]) -> Answer {
        let expected = head.request.headers.first(name: "content-length").map { " of \($0)" } ?? ""
        let pause = Durations.format(configuration.readTimeout)
        let reason =
            "the request stopped arriving: \(body.count)\(expected) bytes of its body, then nothing for \(pause)"
        return Answer(reject(.requestTimeout, code: "timeout", reason: reason, body: body, head: head))
            .closingConnection
    }

    /// Counts (and logs) a connection timed out while it waited on its peer for `pause`: the rest of a request
    /// (`--read-timeout`), a new one (`--idle-timeout`), or the reading of an answer or the close of a connection
    /// that is ending (`--read-timeout`).
    func timingOut(_ pause: String, peer: String?) {
        metrics.increment("switchboard_connections_timed_out_total", [("while", pause)])
        logger.debug(
            "timed out a connection waiting for its peer", metadata: ["peer": "\(peer ?? "-")", "while": "\(pause)"])
    }

    /// Takes a whole request: `body` is what a POST or PUT sent (a GET's event is its query). `answer` is
    /// called once, with what to send back: at once when the event is rejected, a repeat, or accepted with the
    /// journal off and room in the engine; from the journal's writer once the event is durable; from a task
    /// once the engine has room (backpressure: the 200 waits for it).
    func accept(_ head: Head, body: [UInt8], answer: @escaping @Sendable (Answer) -> Void) {
        let isGet = head.request.method == .GET
        let body = isGet ? Array(Self.removingToken(Self.splitURI(head.target).query ?? "").utf8) : body
        let format =
            isGet
            ? .query : WireFormat.detect(contentType: head.request.headers.first(name: "content-type"), body: body)
        let hint = head.route.hook == "all" ? nil : head.route.hook
        let event: WebhookEvent
        do {
            event = try decoder.decode(body, format: format, hook: hint)
        } catch {
            let reason = "\(format) body: \(error)"
            return answer(Answer(reject(.badRequest, code: error.kind.code, reason: reason, body: body, head: head)))
        }
        let hookID = head.hookID
        let duplicateKey = deduplicator.flatMap { _ in Deduplicator.key(for: event, hookID: hookID) }
        if let duplicateKey, let deduplicator, !deduplicator.firstSighting(duplicateKey) {
            return answer(duplicate(event))
        }
        let receivedAt = Date().timeIntervalSince1970
        let id = EventID.make(at: receivedAt)
        // Distinct keys by construction: appended without the per-key search of `JSONObject`'s subscript.
        var members: [JSONObject.Member] = [
            .init(key: "id", value: .string(id)), .init(key: "received_at", value: .double(receivedAt)),
            .init(key: "hook", value: head.route.hook.map(JSONValue.string) ?? .null),
            .init(key: "method", value: .string(head.request.method.rawValue)),
            .init(key: "format", value: .string(format.rawValue)),
        ]
        members.reserveCapacity(8)
        if let hookID { members.append(.init(key: "hook_id", value: .string(hookID))) }
        if let account = head.request.headers.first(name: Self.accountIDHeader) {
            members.append(.init(key: "account_id", value: .string(account)))
        }
        if let peer = head.peer { members.append(.init(key: "peer", value: .string(peer))) }
        let meta = JSONObject(uniqueMembersUnchecked: members)
        let accepted = Accepted(event: event, meta: .object(meta), hook: head.route.hook)
        guard let journal else { return run(accepted, answer: answer) }
        // Acknowledged means durable: the event is committed before the 200.
        let entry = EventJournal.Entry(
            id: id, receivedAt: receivedAt, hook: hint, format: format.rawValue, body: body,
            meta: (try? JSONWriter.string(.object(meta))) ?? "{}")
        // Several nodes share the keys in the database: a repeat that reached another node is caught there
        // (this node's memory only knows what reached it).
        journal.append(entry, duplicateKey: duplicateKey, window: configuration.dedupeWindow) { [self] result in
            switch result {
            case .success(true):
                run(accepted, answer: answer)
            case .success(false):
                answer(duplicate(event))
            case .failure(let error):
                if let duplicateKey { deduplicator?.forget(duplicateKey) }
                metrics.increment("switchboard_journal_failures_total")
                logger.error("refused an event because the journal could not be written: \(error)")
                answer(Answer(APIError(.serviceUnavailable, code: "journal", "\(error)")))
            }
        }
    }

    /// An event taken, on its way to the engine.
    struct Accepted: Sendable {
        var event: WebhookEvent
        var meta: JSONValue
        var hook: String?
    }

    /// Hands the event to the engine (one node runs what it accepts; with several, the node holding the
    /// processing lease reads it back from the database) and answers 200 once it is in.
    func run(_ accepted: Accepted, answer: @escaping @Sendable (Answer) -> Void) {
        if journal?.runsEventsOnAccept ?? true, !engine.trySubmit(accepted.event, meta: accepted.meta) {
            metrics.increment("switchboard_engine_full_total")
            Task {
                await engine.submit(accepted.event, meta: accepted.meta)
                answer(taken(accepted))
            }
            return
        }
        answer(taken(accepted))
    }

    func taken(_ accepted: Accepted) -> Answer {
        let event = accepted.event
        let key = AcceptedAnswers.Key(route: accepted.hook, hook: event.hook, kind: event.kind, name: event.name)
        let made = acceptedAnswers.get(key) {
            let json: JSONValue = ["accepted": true, "kind": .string(event.kind.rawValue), "name": .string(event.name)]
            let labels = [("hook", accepted.hook ?? "-"), ("name", event.qualifiedName)]
            return (Answer(.ok, json).body, metrics.counter("switchboard_events_total", labels))
        }
        made.counter.increment()
        return Answer(.ok, json: made.json)
    }

    /// The 200 of an accepted event and its `switchboard_events_total` counter, made once for each route and
    /// event name rather than for every request (about 5,000 instructions each, by callgrind). Names
    /// outside Kazoo's catalog are not bounded, so past `limit` entries the rest are made each time.
    final class AcceptedAnswers: Sendable {
        struct Key: Hashable {
            var route: String?
            var hook: String?
            var kind: EventKind
            var name: String
        }
        typealias Made = (json: [UInt8], counter: Metrics.Counter)
        static let limit = 1024
        private let known = Mutex<[Key: Made]>([:])

        /// The entry for `key`, made (outside the lock) and kept the first time.
        func get(_ key: Key, make: () -> Made) -> Made {
            if let known = known.withLock({ $0[key] }) { return known }
            let made = make()
            known.withLock { if $0.count < Self.limit { $0[key] = made } }
            return made
        }
    }

    func duplicate(_ event: WebhookEvent) -> Answer {
        metrics.increment("switchboard_duplicates_total", [("name", event.qualifiedName)])
        logger.debug("a repeat of an event already accepted; answered 200 and not run again")
        return Answer(.ok, ["accepted": true, "duplicate": true, "name": .string(event.name)])
    }

    /// Counts a non-200 answer against its Kazoo hook and warns as the hook nears being disabled.
    func answered(_ status: HTTPResponse.Status, hookID: String?) {
        guard status != .ok, let hookID else { return }
        metrics.increment("switchboard_non200_responses_total", [("hook_id", hookID)])
        if let count = failures.record(hookID: hookID) {
            logger.warning(
                "Kazoo hook \(hookID) got \(count) non-200 answers in the last 60 s; Kazoo disables a hook after \(HookFailureTracker.kazooDisableAt)",
                metadata: ["hook.id": "\(hookID)"])
        }
    }

    func reject(_ status: HTTPResponse.Status, code: String, reason: String, body: [UInt8], head: Head) -> APIError {
        metrics.increment("switchboard_rejected_total", [("reason", code)])
        let headers = head.request.headers.map { ($0.name, $0.value) }
        if let problem = rejected.keep(
            body: body, reason: reason, code: code, method: head.request.method.rawValue,
            path: Self.redactedPath(head.target), headers: headers, peer: head.peer)
        {
            logger.error("\(problem)")
        }
        logger.info(
            "rejected a request: \(reason)", metadata: ["request.code": "\(code)", "hook.id": "\(head.hookID ?? "-")"])
        return APIError(status, code: code, reason)
    }

    /// Splits "path?query" (a stray second '?' stays in the query).
    static func splitURI(_ uri: String) -> (path: String, query: String?) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, nil) }
        return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
    }

    /// The query without its `token=` pair, so the secret never becomes an event field.
    static func removingToken(_ query: String) -> String {
        QueryPieces.split(query).filter { !$0.piece.hasPrefix("token=") }.map { $0.piece + $0.separator }.joined()
    }

    /// The request target with the `/hooks/{hook}/{token}` segment replaced; the rejected store redacts the
    /// query's secrets as it keeps it.
    static func redactedPath(_ target: String) -> String {
        var (path, query) = splitURI(target)
        let parts = path.split(separator: "/")
        if parts.count == 3, parts[0] == "hooks" { path = "/hooks/\(parts[1])/REDACTED" }
        return query.map { path + "?" + $0 } ?? path
    }
}
