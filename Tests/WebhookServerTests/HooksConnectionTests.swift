import Delivery
import Foundation
import Logging
import NIOHTTP1
import RuleEngine
import ServiceLifecycle
import TestSupport
import Testing
import WebhookServer

/// The hooks routes are answered by their own channel handler, in front of the router that answers the rest;
/// one connection may carry both, pipelined. These tests speak HTTP/1.1 on a plain socket to see the bytes.
@Suite struct HooksConnectionTests {
    /// The server did not close the connection within 20 s.
    struct NotClosed: Error { let received: String }

    /// Writes `requests` in one go (then shuts down its sending side, with `halfClose`) and reads until the
    /// server closes the connection; throws `NotClosed` after 20 s.
    static func exchange(port: Int, _ requests: String, halfClose: Bool = false) throws -> String {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        try write(fd, requests)
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        return try read(fd)
    }

    /// Writes all of `text` to `fd`.
    static func write(_ fd: Int32, _ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, 0) }
            guard n > 0 else { throw CocoaError(.fileWriteUnknown) }
            sent += n
        }
    }

    /// Reads from `fd` until the server closes the connection, or (with `until`) until what was read
    /// satisfies it; throws `NotClosed` after 20 s.
    static func read(_ fd: Int32, until enough: ((String) -> Bool)? = nil) throws -> String {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                throw NotClosed(received: String(decoding: answer, as: UTF8.self))
            }
            if n <= 0 { break }
            answer += buffer[0..<n]
            if let enough, enough(String(decoding: answer, as: UTF8.self)) { break }
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// The answers in `text`, in order: status and body (by `Content-Length`).
    static func answers(_ text: String) -> [(status: Int, body: String)] {
        var rest = Substring(text)
        var out: [(Int, String)] = []
        while let end = rest.range(of: "\r\n\r\n") {
            let lines = rest[..<end.lowerBound].split(separator: "\r\n")
            guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
                break
            }
            let length =
                lines.first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            let body = rest[end.upperBound...].utf8.prefix(length)
            out.append((status, String(decoding: body, as: UTF8.self)))
            rest = rest[rest.utf8.index(end.upperBound, offsetBy: body.count)...]
        }
        return out
    }

    /// A request as a client writes it: `body` (JSON) with its length, `connection` as the `Connection` header.
    static func request(
        _ method: String, _ path: String, version: String = "1.1", connection: String? = nil, body: String? = nil
    ) -> String {
        "\(method) \(path) HTTP/\(version)\r\nHost: 127.0.0.1\r\n"
            + (body.map { "Content-Type: application/json\r\nContent-Length: \($0.utf8.count)\r\n" } ?? "")
            + (connection.map { "Connection: \($0)\r\n" } ?? "") + "\r\n" + (body ?? "")
    }

    static func post(_ path: String, _ body: String, close: Bool = false) -> String {
        request("POST", path, connection: close ? "close" : nil, body: body)
    }

    static func get(_ path: String, close: Bool = false) -> String {
        request("GET", path, connection: close ? "close" : nil)
    }

    /// With the journal on, a hook's answer waits for its commit, and what follows waits for the answer.
    @Test(arguments: [false, true]) func pipelinedRequestsForTheHooksAndTheRouterAreAnsweredInOrder(journal: Bool)
        async throws
    {
        try await withServer(journal: journal) { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let requests =
                Self.get("/healthz") + Self.post("/hooks/channel_create", event) + Self.get("/metrics")
                + Self.post("/hooks/channel_create", "{not json") + Self.get("/hooks/nope/a/b")
                + Self.post("/hooks", event, close: true) + Self.get("/healthz")
            let text = try await onOwnThread { try Self.exchange(port: port, requests) }
            let answers = Self.answers(text)
            // The last GET came after `Connection: close`: never answered.
            #expect(answers.map(\.status) == [200, 200, 200, 400, 404, 200], "got: \(text.debugDescription)")
            guard answers.count == 6 else { return }
            #expect(answers[0].body == #"{"status":"ok"}"#)
            #expect(answers[1].body.contains(#""accepted":true"#))
            #expect(answers[2].body.contains("switchboard_events_total"))
            #expect(answers[3].body.contains(#""code":"syntax""#))
            #expect(answers[5].body.contains(#""name":"channel_create""#))
            #expect(await server.eventually { server.metrics.value("switchboard_events_total") == 2 })
        }
    }

    /// A client that stops sending (a half close, or a full close: the server cannot tell them apart) gets the
    /// answers to what it sent, then the server closes the connection: one that only posted hooks (which has
    /// no router side, see `Listener`), one that only used the router, both, and one that sent nothing.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aClientThatStopsSendingIsAnsweredThenClosed(journal: Bool) async throws {
        try await withServer(journal: journal) { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let cases: [(String, [Int])] = [
                ("", []),
                (Self.post("/hooks/channel_create", event), [200]),
                (Self.get("/healthz"), [200]),
                (Self.post("/hooks/channel_create", event) + Self.get("/healthz"), [200, 200]),
                (Self.get("/healthz") + Self.post("/hooks/channel_create", event), [200, 200]),
            ]
            for (requests, statuses) in cases {
                let text = try await onOwnThread { try Self.exchange(port: port, requests, halfClose: true) }
                #expect(Self.answers(text).map(\.status) == statuses, "got: \(text.debugDescription)")
            }
            #expect(await server.eventually { server.metrics.value("switchboard_events_total") == 3 })
        }
    }

    /// An HTTP/1.0 request closes its connection after the answer unless it asks to keep it (`Connection:
    /// keep-alive`; the answer then says so), and `Connection: close` closes it in any case and among other
    /// options: on the hooks routes and the router's alike. Each exchange reads until the server closes, so a
    /// connection left open fails it (`NotClosed`). What follows a closing request is never answered (before this
    /// was mended, NIO's parser took it as an error and the router answered it 400).
    @Test(.timeLimit(.minutes(2)), arguments: [false, true])
    func http10AndConnectionCloseInAnySpellingCloseAfterTheAnswer(journal: Bool) async throws {
        try await withServer(journal: journal) { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let hook = "/hooks/channel_create"
            let cases: [(requests: String, statuses: [Int], keptAlive: Int)] = [
                (Self.request("POST", hook, version: "1.0", body: event) + Self.get("/healthz"), [200], 0),
                (Self.request("GET", "/healthz", version: "1.0") + Self.get("/healthz"), [200], 0),
                (Self.request("POST", hook, connection: "Close", body: event) + Self.get("/healthz"), [200], 0),
                (Self.request("GET", "/healthz", connection: "TE, close") + Self.get("/healthz"), [200], 0),
                (
                    Self.request("POST", hook, version: "1.0", connection: "Keep-Alive", body: event)
                        + Self.request("GET", "/healthz", version: "1.0", connection: "keep-alive")
                        + Self.request("GET", "/healthz", version: "1.0") + Self.get("/healthz"),
                    [200, 200, 200], 2
                ),
            ]
            for (requests, statuses, keptAlive) in cases {
                let text = try await onOwnThread { try Self.exchange(port: port, requests) }
                #expect(Self.answers(text).map(\.status) == statuses, "got: \(text.debugDescription)")
                let saysKeepAlive = text.lowercased().components(separatedBy: "\r\nconnection: keep-alive\r\n")
                #expect(saysKeepAlive.count - 1 == keptAlive, "got: \(text.debugDescription)")
            }
            #expect(await server.eventually { server.metrics.value("switchboard_events_total") == 3 })
        }
    }

    /// A graceful shutdown closes an idle kept-alive connection, and the server's run then ends (`withServer`
    /// waits for it): one that sent nothing yet, or only posted hooks, has no router side (see `Listener`) and
    /// is closed by its hooks handler; one that also asked the router something is closed by Hummingbird's
    /// state handler, added then.
    @Test(.timeLimit(.minutes(1)), arguments: [[], [200], [200, 200]])
    func aShutdownClosesAnIdleConnection(answered expected: [Int]) async throws {
        try await withServer(journal: true) { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let fd = try connectLoopback(port: port)
            defer { close(fd) }
            let requests = [Self.post("/hooks/channel_create", event), Self.get("/healthz")]
            if !expected.isEmpty {
                try Self.write(fd, requests.prefix(expected.count).joined())
                let first = try await onOwnThread {
                    try Self.read(fd) { Self.answers($0).count == expected.count && $0.hasSuffix("}") }
                }
                #expect(Self.answers(first).map(\.status) == expected, "got: \(first.debugDescription)")
            } else {
                // A hook answered on a connection opened after it: the server has accepted this one (connections
                // are accepted in the order they were made).
                let later = try connectLoopback(port: port)
                defer { close(later) }
                try Self.write(later, Self.post("/hooks/channel_create", event, close: true))
                let text = try await onOwnThread { try Self.read(later) }
                #expect(Self.answers(text).map(\.status) == [200], "got: \(text.debugDescription)")
            }
            await server.group.triggerGracefulShutdown()
            let rest = try await onOwnThread { try Self.read(fd) }
            #expect(rest.isEmpty, "got: \(rest.debugDescription)")
        }
    }

    /// An event's `meta.peer` is the address its request came from, as text.
    @Test func anEventsPeerIsTheSendersAddress() async throws {
        let rule =
            #"return { name = "peer", on = "channel_create", run = function(e) log.info("peer=" .. tostring(e.meta.peer)) end }"#
        try await withServer(rules: ["r.lua": rule]) { server in
            let body = try sampleBody("channel_create__inbound.json")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            #expect(await server.eventually { server.logs.contains(.info, "peer=127.0.0.1") })
        }
    }

    /// The router's answer to HEAD keeps its headers and has no body, and what follows it on the connection
    /// is read as the next answer (NIO's encoder is not paired with the decoder here: the hooks handler leaves
    /// the body out).
    @Test func aHeadAnswerHasNoBodyBetweenPipelinedAnswers() async throws {
        try await withServer { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let requests =
                Self.post("/hooks/channel_create", event) + Self.request("HEAD", "/healthz")
                + Self.get("/healthz", close: true)
            let text = try await onOwnThread { try Self.exchange(port: port, requests) }
            let heads = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
            #expect(heads.count == 3, "got: \(text.debugDescription)")
            guard heads.count == 3 else { return }
            let head = Array(heads)[1]
            #expect(head.hasPrefix("200 OK\r\n"), "got: \(text.debugDescription)")
            #expect(head.lowercased().contains("content-length: 15\r\n"), "got: \(text.debugDescription)")
            #expect(head.hasSuffix("\r\n\r\n"), "the HEAD answer carried a body: \(text.debugDescription)")
            let last = Self.answers("HTTP/1.1 " + Array(heads)[2])
            #expect(last.map(\.status) == [200] && last.first?.body == #"{"status":"ok"}"#)
        }
    }

    /// A graceful shutdown closes idle connections at once, and others once their answer is written: a hooks
    /// answer held back by a full engine is written first, on a connection whose router side is open (a
    /// request for the router came first) as on one that only posted hooks.
    @Test(arguments: [false, true])
    func aShutdownWaitsForAHeldHooksAnswerBeforeClosingItsConnection(routerSideOpen: Bool) async throws {
        try await Self.withFullEngine(holdingFor: 3000) { server in
            let port = Int(server.base.split(separator: ":").last!)!
            // The second event's 200 waits for the first run (3 s on the upstream); the connection stays open.
            let second = String(
                decoding: try sampleBody("channel_create__inbound.json", callID: "held-1"), as: UTF8.self)
            let requests = (routerSideOpen ? Self.get("/healthz") : "") + Self.post("/hooks", second)
            let exchange = Task { try await onOwnThread { try Self.exchange(port: port, requests) } }
            #expect(await server.eventually { server.metrics.value("switchboard_engine_full_total") == 1 })
            await server.group.triggerGracefulShutdown()
            let text = try await exchange.value
            let expected = routerSideOpen ? [200, 200] : [200]
            #expect(Self.answers(text).map(\.status) == expected, "got: \(text.debugDescription)")
        }
    }

    /// A server whose engine takes one event at a time, and a rule that holds call `held-0`'s event for `ms` on
    /// a loopback upstream; `body` runs once that event has been sent and answered, so the next event's 200
    /// waits for its run to end.
    static func withFullEngine(
        holdingFor ms: Int, configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (ServerFixture) async throws -> Void
    ) async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "slow", on = "channel_create", run = function(event)
              if event.call_id == "held-0" then http.get("\(upstream.url("/slow?ms=\(ms)"))", { timeout = 20 }) end
            end }
            """
        try await withServer(
            rules: ["r.lua": rule],
            configure: {
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
                $0.maxEventsInFlight = 1
                configure(&$0)
            }
        ) { server in
            let first = try sampleBody("channel_create__inbound.json", callID: "held-0")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: first).status == 200)
            try await body(server)
        }
    }

    /// The 200 of an accepted event names the event, and each route and name has its own count (the answer
    /// and the counter are made once per route and name, then reused).
    @Test func eachAcceptedAnswerNamesItsEventAndCountsIt() async throws {
        try await withServer { server in
            let sends: [(path: String, sample: String, name: String)] = [
                ("/hooks/channel_create", "channel_create__inbound.json", "channel_create"),
                ("/hooks", "channel_destroy__inbound.json", "channel_destroy"),
                ("/hooks", "channel_create__inbound.json", "channel_create"),
                ("/hooks/notifications", "notifications__low_balance.json", "low_balance"),
                ("/hooks/notifications", "notifications__missed_call.json", "missed_call"),
                ("/hooks", "channel_destroy__inbound.json", "channel_destroy"),
            ]
            for send in sends {
                let answer = try await server.send(.POST, send.path, body: try sampleBody(send.sample))
                #expect(answer.status == 200)
                #expect(answer.body.contains(#""name":"\#(send.name)""#), "\(send.path): \(answer.body)")
            }
            let counts = [
                (["hook": "channel_create", "name": "channel_create"], 1),
                (["hook": "-", "name": "channel_destroy"], 2),
                (["hook": "-", "name": "channel_create"], 1),
                (["hook": "notifications", "name": "notifications.low_balance"], 1),
                (["hook": "notifications", "name": "notifications.missed_call"], 1),
            ]
            for (labels, count) in counts {
                let value = server.metrics.value(
                    "switchboard_events_total", [("hook", labels["hook"]!), ("name", labels["name"]!)])
                #expect(value == count, "\(labels)")
            }
        }
    }

    @Test func aMalformedRequestBehindAHookIsAnswered400AfterIt() async throws {
        try await withServer { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let requests =
                Self.post("/hooks/channel_create", event)
                + "POST /hooks/channel_create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            let text = try await onOwnThread { try Self.exchange(port: port, requests) }
            #expect(Self.answers(text).map(\.status) == [200, 400], "got: \(text.debugDescription)")
        }
    }

    /// A client that asks before sending its body (curl did for bodies over 1 KB) is told to go on at once.
    @Test func expectContinueGetsA100BeforeTheAnswer() async throws {
        try await withServer { server in
            let port = Int(server.base.split(separator: ":").last!)!
            let event = String(decoding: try sampleBody("channel_create__inbound.json"), as: UTF8.self)
            let request = Self.post("/hooks/channel_create", event, close: true)
                .replacingOccurrences(
                    of: "Connection: close\r\n", with: "Connection: close\r\nExpect: 100-continue\r\n")
            let text = try await onOwnThread { try Self.exchange(port: port, request) }
            #expect(Self.answers(text).map(\.status) == [100, 200], "got: \(text.debugDescription)")
        }
    }

    @Test func otherMethodsAndDeeperPathsUnderHooksAreTheRoutersNotFound() async throws {
        try await withServer { server in
            for (method, path) in [("DELETE", "/hooks/channel_create"), ("HEAD", "/hooks"), ("GET", "/hooks/a/b/c")] {
                let answer = try await server.send(HTTPMethod(rawValue: method), path)
                #expect(answer.status == 404, "\(method) \(path)")
            }
            #expect(server.metrics.value("switchboard_events_total") == 0)
        }
    }

    /// Backpressure: past `maxEventsInFlight` unfinished events, the next 200 waits until a run finishes.
    @Test(arguments: [false, true]) func aFullEngineHoldsTheAnswerUntilARunFinishes(journal: Bool) async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let rule = """
            return { name = "slow", on = "channel_create", run = function()
              local r, err = http.get("\(upstream.url("/slow?ms=5000"))", { timeout = 20 })
              if not r then error(err) end
            end }
            """
        try await withServer(
            rules: ["r.lua": rule], journal: journal,
            configure: {
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
                $0.maxEventsInFlight = 2
            }
        ) { server in
            for i in 0..<2 {
                let body = try sampleBody("channel_create__inbound.json", callID: "full-\(i)")
                #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            }
            // Both runs wait 5 s on the upstream (long enough that the two answers above come first even on a
            // loaded machine): the third event's answer comes only once one has finished.
            #expect(server.metrics.value("switchboard_rule_runs_total") == 0)
            let third = try sampleBody("channel_create__inbound.json", callID: "full-2")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: third).status == 200)
            #expect(server.metrics.value("switchboard_rule_runs_total", [("outcome", "ok")]) >= 1)
        }
    }
}
