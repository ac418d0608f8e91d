import EventStore
import Foundation
import HTTPTypes
import Hummingbird
import JSONCore
import KazooEvents
import Logging
import NIOCore
import RuleEngine
import ServiceLifecycle

/// `GET /console`: the web console (one page, shipped in the binary) and the JSON it reads under
/// `/console/api/…`, behind the same authentication as `/admin`. Pages read what the journal kept (events
/// with their rules' outcomes, deliveries and attempts) and the `ConsoleFeed` (the live tail, the last
/// hour's figures); actions (redeliver, reload) are logged with who asked.
struct ConsoleController: Sendable {
    let configuration: ServerConfiguration
    let engine: Engine
    let journal: (any Journal)?
    let rejected: RejectedStore
    let feed: ConsoleFeed
    let failures: HookFailureTracker
    let logger: Logger

    func addRoutes(to group: RouterGroup<SwitchboardRequestContext>) {
        group.get("") { _, _ in Self.page() }
        group.get("api/live") { request, _ in live(request) }
        group.get("api/stream") { request, _ in stream(request) }
        group.get("api/events") { request, _ in try await events(request) }
        group.get("api/events/:id") { _, context in try await event(Self.parameter("id", context)) }
        group.get("api/calls/:id") { _, context in try await call(Self.parameter("id", context)) }
        group.get("api/deliveries") { request, _ in try await deliveries(request) }
        group.post("api/deliveries/:id/redeliver") { _, context in
            try await redeliver(context.parameters.require("id"), context: context)
        }
        group.post("api/deliveries/redeliver-dead") { _, context in try await redeliver(nil, context: context) }
        group.get("api/rejected") { _, _ in await rejectedRequests() }
        group.get("api/rules") { _, _ in await rules() }
        group.post("api/reload") { _, context in await reload(context: context) }
        group.get("api/samples") { _, _ in samples() }
        group.get("api/samples/:name") { _, context in try sample(Self.parameter("name", context)) }
        group.post("api/try") { request, _ in try await tryIt(request) }
        group.get("api/health") { _, _ in await health() }
    }

    static func page() -> Response {
        var response = Response(
            status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: ConsolePage.html)))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    func requireJournal() throws(APIError) -> any Journal {
        guard let journal else {
            throw APIError(
                .notFound, code: "no_journal",
                "the journal is off (--journal off): events and forwards are not kept, only the live view works")
        }
        return journal
    }

    /// A path parameter, percent-decoded: Kazoo's call ids hold `@` (`…@203.0.113.45`), which the page
    /// sends as `%40`, and the router hands over the segment as it came.
    static func parameter(_ name: String, _ context: SwitchboardRequestContext) throws(APIError) -> String {
        guard let raw = context.parameters.get(name), let value = raw.removingPercentEncoding else {
            throw APIError(.badRequest, code: "bad_path", "the \(name) in the path is missing or not percent-encoded")
        }
        return value
    }

    static func who(_ context: SwitchboardRequestContext) -> String {
        context.remoteAddress?.ipAddress ?? "?"
    }

    // MARK: live

    func live(_ request: Request) -> Response {
        let after = request.uri.queryParameters.get("after").flatMap { Int($0) } ?? 0
        let batch = feed.live(after: after, limit: 200)
        return .json(.ok, Self.batch(batch))
    }

    static func batch(_ batch: (events: [ConsoleFeed.LiveEvent], latest: Int, missed: Int)) -> JSONValue {
        [
            "latest": .int(Int64(batch.latest)), "missed": .int(Int64(batch.missed)),
            "events": .array(batch.events.map(\.json)),
        ]
    }

    /// Server-sent events: a batch of the live tail every 250 ms while there is something new (at most 200
    /// events per batch, so a burst costs the server a bounded amount and says how many it skipped), a
    /// comment every 15 s to keep proxies from closing it. A stream ends after 10 minutes or at shutdown;
    /// the browser reconnects by itself with `Last-Event-ID` (`<boot>.<seq>`), and misses nothing the tail
    /// still holds; after a restart the old id starts it from the new tail's beginning.
    func stream(_ request: Request) -> Response {
        let resume =
            feed.resume(from: request.headers[HTTPField.Name("Last-Event-ID")!])
            ?? request.uri.queryParameters.get("after").flatMap { Int($0) }
        let feed = self.feed
        var headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var seq = resume ?? feed.latest
                let end = ContinuousClock.now + .seconds(600)
                var quietSince = ContinuousClock.now
                try await writer.write(ByteBuffer(string: "retry: 1000\n: switchboard live tail\n\n"))
                while ContinuousClock.now < end, !Task.isCancelled, !Task.isShuttingDownGracefully {
                    let batch = feed.live(after: seq, limit: 200)
                    if !batch.events.isEmpty || batch.missed > 0 {
                        let text = (try? JSONWriter.string(Self.batch(batch))) ?? "{}"
                        try await writer.write(
                            ByteBuffer(string: "id: \(feed.boot).\(batch.latest)\ndata: \(text)\n\n"))
                        seq = batch.latest
                        quietSince = ContinuousClock.now
                    } else if ContinuousClock.now - quietSince > .seconds(15) {
                        try await writer.write(ByteBuffer(string: ": still here\n\n"))
                        quietSince = ContinuousClock.now
                    }
                    try? await Task.sleep(for: .milliseconds(250))
                }
                try await writer.finish(nil)
            })
    }

    // MARK: events and calls

    func events(_ request: Request) async throws(APIError) -> Response {
        let journal = try requireJournal()
        let query = request.uri.queryParameters
        let limit = max(1, min(query.get("limit").flatMap { Int($0) } ?? 100, 1000))
        do {
            let rows = try await journal.recentEvents(
                limit: limit, before: query.get("before").flatMap { Int64($0) }, name: query.get("name"),
                callID: query.get("call_id"), accountID: query.get("account_id"))
            return .json(.ok, ["events": .array(rows.map { Self.summary($0) })])
        } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
    }

    static func meta(of row: StoredEvent) -> JSONValue { (try? JSONReader.parse(Array(row.meta.utf8))) ?? .null }

    /// An event as the lists show it: how it arrived and each matching rule's outcome.
    static func summary(_ row: StoredEvent, meta: JSONValue? = nil) -> JSONValue {
        let meta = meta ?? Self.meta(of: row)
        // URLs a rule called may carry keys (`?api_key=…`): shown redacted, as rejected bodies are.
        let outcomes =
            row.outcomes.flatMap { try? JSONReader.parse(Array(ConsoleRedaction.redact($0).utf8)) } ?? .array([])
        var out = JSONObject()
        out["row"] = .int(row.row)
        out["id"] = .string(row.id)
        out["at"] = .double(row.receivedAt)
        out["hook"] = row.hook.map(JSONValue.string) ?? .null
        out["format"] = .string(row.format)
        out["hook_id"] = meta["hook_id"] ?? .null
        out["state"] = .string(row.done ? "done" : "running")
        out["done_at"] = row.doneAt.map(JSONValue.double) ?? .null
        let parts = row.name?.split(separator: ".", maxSplits: 1).map(String.init) ?? []
        out["kind"] = parts.count == 2 ? .string(parts[0]) : .null
        out["name"] = parts.last.map(JSONValue.string) ?? .null
        out["call_id"] = row.callID.map(JSONValue.string) ?? .null
        out["other_leg"] = row.otherLeg.map(JSONValue.string) ?? .null
        out["account_id"] = row.accountID.map(JSONValue.string) ?? meta["account_id"] ?? .null
        out["rules"] = outcomes
        return .object(out)
    }

    func event(_ id: String) async throws(APIError) -> Response {
        let journal = try requireJournal()
        let found: StoredEvent?
        let forwards: [Delivery]
        do {
            found = try await journal.storedEvent(id)
            forwards = try await journal.deliveries(forEvent: id)
        } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
        guard let found else {
            throw APIError(
                .notFound, code: "not_found",
                "no event \(id) in the journal (retention deletes done events after --retention)")
        }
        let meta = Self.meta(of: found)
        guard case .object(var out) = Self.summary(found, meta: meta) else { return .json(.ok, .null) }
        let body = found.body ?? []
        out["meta"] = meta
        out.setBody(body)
        let decoder = EventDecoder(limits: configuration.decoding)
        do {
            let decoded = try decoder.decode(
                body, format: WireFormat(rawValue: found.format) ?? .json, hook: found.hook)
            out["fields"] = .object(decoded.typedFields)
            out["kind"] = .string(decoded.kind.rawValue)
            out["name"] = .string(decoded.name)
        } catch {
            out["fields"] = .null
            out["decode_error"] = .string("\(error)")
        }
        var shown: [JSONValue] = []
        for delivery in forwards {
            shown.append(delivery.json(attempts: (try? await journal.attempts(delivery.id)) ?? []))
        }
        out["deliveries"] = .array(shown)
        return .json(.ok, .object(out))
    }

    /// Every event of a call and of the legs it was bridged to (found through `other_leg_call_id` either
    /// way, two hops).
    func call(_ callID: String) async throws(APIError) -> Response {
        let journal = try requireJournal()
        do {
            var legs = [callID]
            for _ in 0..<2 {
                let rows = try await journal.callEvents(legs, limit: 500)
                let more = Set(rows.flatMap { [$0.callID, $0.otherLeg].compactMap { $0 } }).subtracting(legs).sorted()
                if more.isEmpty { break }
                legs += more
            }
            let rows = try await journal.callEvents(legs, limit: 500)
            return .json(
                .ok,
                [
                    "call_id": .string(callID), "legs": .array(legs.map(JSONValue.string)),
                    "events": .array(rows.map { Self.summary($0) }),
                ])
        } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
    }

    // MARK: deliveries

    func deliveries(_ request: Request) async throws(APIError) -> Response {
        let journal = try requireJournal()
        let filter = try DeliveryFilter.from(request)
        do {
            let listed = try await journal.deliveries(filter, limit: 200)
            var counts = JSONObject()
            for (state, n) in try await journal.deliveryCounts(Delivery.State.allCases) {
                counts[state.rawValue] = .int(Int64(n))
            }
            return .json(
                .ok,
                [
                    "counts": .object(counts),
                    "deliveries": .array(try await journal.json(listed)),
                ])
        } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
    }

    /// Puts one delivery (by id) or every dead letter (nil) back in the outbox.
    func redeliver(_ id: String?, context: SwitchboardRequestContext) async throws(APIError) -> Response {
        let journal = try requireJournal()
        var ids: [Int64] = []
        if let id {
            guard let number = Int64(id) else {
                throw APIError(.badRequest, code: "bad_id", "a delivery id is a number, not \(id)")
            }
            ids = [number]
        }
        let queued: [Int64]
        do { queued = try await id == nil ? journal.redeliverDead() : journal.redeliver(ids) } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
        if id != nil, queued.isEmpty {
            throw APIError(.notFound, code: "not_found", "no delivery \(id ?? "")")
        }
        logger.notice(
            "console: \(queued.count) delivery(ies) queued again (\(queued.map(String.init).joined(separator: ", ")))",
            metadata: ["console.peer": "\(Self.who(context))"])
        return .json(.ok, ["queued": .array(queued.map { .int($0) })])
    }

    // MARK: rejected

    func rejectedRequests() async -> Response {
        let listed = await rejected.listWithBodies(limit: 100).map { meta, data -> JSONValue in
            var out = JSONObject()
            for key in ["reason", "code", "method", "path", "peer", "body_bytes", "received_at", "node"] {
                switch meta[key] {
                case let s as String: out[key] = .string(s)
                case let n as Int: out[key] = .int(Int64(n))
                case let d as Double: out[key] = .double(d)
                default: break
                }
            }
            var headers = JSONObject()
            for (name, value) in (meta["headers"] as? [String: String] ?? [:]).sorted(by: { $0.key < $1.key }) {
                headers[name] = .string(value)
            }
            out["headers"] = .object(headers)
            if let data {
                let shown = data.prefix(64 << 10)
                out["body"] = .string(ConsoleRedaction.redact(String(decoding: shown, as: UTF8.self)))
                out["body_truncated"] = .bool(shown.count < data.count)
            }
            return .object(out)
        }
        return .json(.ok, ["rejected": .array(listed)])
    }

    // MARK: rules

    func rules() async -> Response {
        let generation = engine.generation
        let definitions = await generation.workers[0].rules
        let stats = feed.ruleStats()
        var list: [JSONValue] = []
        for definition in definitions {
            var out = JSONObject()
            out["name"] = .string(definition.name)
            out["file"] = .string(definition.file.displayPath)
            out["on"] = .array(definition.on.map { .string("\($0)") })
            out["forwards"] = .array(definition.forward.map { .string($0.url) })
            out["schedule"] = definition.schedule.map { .string("\($0)") } ?? .null
            out["last_hour"] = stats[definition.name] ?? ["runs": 0, "errors": 0, "p50": .null, "p99": .null]
            list.append(.object(out))
        }
        var body = JSONObject()
        body["version"] = .int(Int64(generation.version))
        body["directory"] = .string(configuration.rulesDirectory)
        body["rules"] = .array(list)
        body["diagnostics"] = .array(generation.diagnostics.map { .string($0.description) })
        body["recent_errors"] = .array(feed.recentErrors())
        if let last = engine.lastReloadResult {
            body["last_reload"] = [
                "ok": .bool(last.ok), "changed": .bool(last.changed), "version": .int(Int64(last.version)),
                "at": .double(last.at.timeIntervalSince1970), "errors": .array(last.errors.map(JSONValue.string)),
            ]
        } else {
            body["last_reload"] = .null
        }
        return .json(.ok, .object(body))
    }

    func reload(context: SwitchboardRequestContext) async -> Response {
        let who = Self.who(context)
        let result = await engine.reload(directory: configuration.rulesDirectory, reason: "console, from \(who)")
        logger.notice(
            "console: reload asked: \(result.ok ? (result.changed ? "version \(result.version) running" : "no change") : "rejected")",
            metadata: ["console.peer": "\(who)"])
        return .json(
            result.ok ? .ok : .unprocessableContent,
            [
                "ok": .bool(result.ok), "changed": .bool(result.changed), "version": .int(Int64(result.version)),
                "errors": .array(result.errors.map(JSONValue.string)),
            ])
    }

    // MARK: try it

    /// Where Try it finds samples: `samples/` beside the rules directory (the repository's layout).
    var samplesDirectory: URL {
        URL(fileURLWithPath: configuration.rulesDirectory).deletingLastPathComponent().appendingPathComponent(
            "samples")
    }

    func sampleNames() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: samplesDirectory.path)) ?? [])
            .filter { !$0.hasPrefix(".") && ($0.hasSuffix(".json") || $0.hasSuffix(".form") || $0.hasSuffix(".query")) }
            .sorted()
    }

    func samples() -> Response {
        .json(
            .ok, ["directory": .string(samplesDirectory.path), "samples": .array(sampleNames().map(JSONValue.string))])
    }

    func sample(_ name: String) throws(APIError) -> Response {
        guard sampleNames().contains(name),
            let data = FileManager.default.contents(atPath: samplesDirectory.appendingPathComponent(name).path)
        else { throw APIError(.notFound, code: "not_found", "no sample \(name) in \(samplesDirectory.path)") }
        let format = name.hasSuffix(".form") ? "form" : name.hasSuffix(".query") ? "query" : "json"
        return .json(
            .ok,
            ["name": .string(name), "format": .string(format), "body": .string(String(decoding: data, as: UTF8.self))])
    }

    /// A dry run of a pasted body through the running rules: a fresh worker on the running rule files whose
    /// `http.*` sends nothing, and a copy of the store that is thrown away. Nothing is journaled or forwarded.
    func tryIt(_ request: Request) async throws(APIError) -> Response {
        let input: JSONValue
        // The pasted body travels as a JSON string: escaping can double it.
        let limit = configuration.decoding.maxBodyBytes * 2 + 4096
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: limit) } catch {
            throw APIError(
                .contentTooLarge, code: "limit",
                "the pasted body is over the server's --max-body-bytes (\(configuration.decoding.maxBodyBytes))")
        }
        do {
            input = try JSONReader.parse(Array(buffer.readableBytesView))
        } catch {
            throw APIError(
                .badRequest, code: "syntax",
                "send {\"body\": \"…\", \"format\": \"auto|json|form|query\", \"hook\": \"…\"} as JSON")
        }
        guard let text = input["body"]?.stringValue, !text.isEmpty else {
            throw APIError(.badRequest, code: "body", "paste a body (JSON, form or query) or pick a sample")
        }
        let bytes = Array(text.utf8)
        let formatName = input["format"]?.stringValue ?? "auto"
        let format: WireFormat
        if formatName == "auto" {
            format = WireFormat.detect(contentType: nil, body: bytes)
        } else if let given = WireFormat(rawValue: formatName) {
            format = given
        } else {
            throw APIError(.badRequest, code: "format", "format must be auto, json, form or query, not \(formatName)")
        }
        let hook = input["hook"]?.stringValue.flatMap { $0.isEmpty || $0 == "all" ? nil : $0 }
        let event: WebhookEvent
        do {
            event = try EventDecoder(limits: configuration.decoding).decode(bytes, format: format, hook: hook)
        } catch {
            throw APIError(.badRequest, code: error.kind.code, "\(format) body: \(error)")
        }
        let worker: RuleWorker
        do {
            worker = try RuleWorker(
                source: engine.generation.source, configuration: configuration.rules, client: DryRunHTTPClient())
        } catch {
            throw APIError(.internalServerError, code: "rules", "the running rules could not be loaded again: \(error)")
        }
        let store = RuleStore(records: engine.store.records())
        let session = store.begin()
        let meta: JSONValue = [
            "id": .string("try-" + EventID.make()),
            "received_at": .double(Date().timeIntervalSince1970),
            "hook": hook.map(JSONValue.string) ?? .null, "format": .string(format.rawValue), "dry_run": true,
        ]
        let report = await worker.process(event, meta: meta, session: session)
        store.finish(session, mark: nil) { _ in }
        return .json(
            .ok,
            [
                "format": .string(format.rawValue), "kind": .string(event.kind.rawValue), "name": .string(event.name),
                "call_id": event.callID.map(JSONValue.string) ?? .null, "fields": .object(event.typedFields),
                "rules": .array(report.rules.filter(\.matched).map(\.record)),
                "not_matching": .int(Int64(report.rules.filter { !$0.matched }.count)),
            ])
    }

    // MARK: health

    func health() async -> Response {
        let hooks = failures.snapshot().map { entry -> JSONValue in
            [
                "hook_id": .string(entry.hook), "failures_last_60s": .int(Int64(entry.count)),
                "last": .double(entry.last),
                "warning": entry.count >= failures.warnAt
                    ? .string(
                        "\(entry.count) non-200 answers in 60 s: Kazoo disables the hook at \(HookFailureTracker.kazooDisableAt)"
                    ) : .null,
            ]
        }
        var deliveries = JSONObject()
        if let counts = try? await journal?.deliveryCounts(Delivery.State.allCases) {
            for (state, n) in counts { deliveries[state.rawValue] = .int(Int64(n)) }
        }
        let process = ProcessInfo.processInfo
        let node: JSONValue = [
            "name": .string("\(process.hostName):\(process.processIdentifier)"), "state": "one node",
            "rules_version": .int(Int64(engine.generation.version)),
            "events_in_flight": .int(Int64(engine.eventsInFlight)),
            "journal": .bool(journal != nil),
        ]
        var nodes = [node]
        if let listed = try? await journal?.nodes(), !listed.isEmpty { nodes = listed.map(\.json) }
        return .json(
            .ok,
            [
                "minutes": feed.series(), "hooks": .array(hooks), "deliveries": .object(deliveries),
                "nodes": .array(nodes),
            ])
    }
}

/// Hides what looks like a secret in text the console shows (rejected bodies, the URLs rules called):
/// `token=`, `password=`, `secret=`, `api_key=` pairs of form bodies and query strings (up to the next `&`,
/// quote or space, so JSON around a URL stays whole) and the same names as JSON keys.
enum ConsoleRedaction {
    /// `token|password|api[-_]key…`: the words `Secrets` (the rejected requests' redaction) uses too, with `-`
    /// for `_` as it reads them (`x-api-key`).
    static let secretWords = Secrets.nameParts.map { $0.replacingOccurrences(of: "_", with: "[-_]") }.joined(
        separator: "|")
    static let patterns: [NSRegularExpression] = [
        #"((?:^|[&?])[A-Za-z0-9_\-\[\]]*(?:\#(secretWords))[A-Za-z0-9_\-\]]*=)[^&"\s]*"#,
        #"("[A-Za-z0-9_\-]*(?:\#(secretWords))[A-Za-z0-9_\-]*"\s*:\s*")[^"]*""#,
    ].compactMap { try? NSRegularExpression(pattern: $0, options: [.caseInsensitive]) }

    static func redact(_ text: String) -> String {
        var out = text
        for pattern in patterns {
            out = pattern.stringByReplacingMatches(
                in: out, range: NSRange(out.startIndex..., in: out),
                withTemplate: pattern.pattern.hasPrefix("(\"")
                    ? "$1REDACTED\"" : "$1REDACTED")
        }
        return out
    }
}
