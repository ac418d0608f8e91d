import Delivery
import EventStore
import Foundation
import NIOHTTP1
import RuleEngine
import ServiceLifecycle
import TestSupport
import Testing
import WebhookServer

/// `--read-timeout` and `--idle-timeout`: a peer that keeps its connection waiting (mid-request, or between
/// requests) is timed out; one that the server keeps waiting (an answer held back) is not. The timeouts here
/// are fractions of a second; each test waits for the close or the answer it expects, up to the socket's 20 s.
@Suite struct ConnectionTimeoutTests {
    typealias Wire = HooksConnectionTests

    static func port(_ server: ServerFixture) -> Int { Int(server.base.split(separator: ":").last!)! }

    static func head(_ path: String, length: Int, extra: String = "") -> String {
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(length)\r\n"
            + extra + "\r\n"
    }

    /// A server with the given timeouts (`--idle-timeout` off unless given), and a connection to it.
    static func withConnection(
        readTimeout: Double, idleTimeout: Double = 0, rules: [String: String] = [:], journal: Bool = false,
        _ body: (ServerFixture, Int32) async throws -> Void
    ) async throws {
        try await withServer(
            rules: rules, journal: journal,
            configure: {
                $0.readTimeout = readTimeout
                $0.idleTimeout = idleTimeout
            }
        ) { server in
            let fd = try connectLoopback(port: Self.port(server))
            defer { close(fd) }
            try await body(server, fd)
        }
    }

    static func timedOut(_ server: ServerFixture, while stage: String) -> Int {
        server.metrics.value("switchboard_connections_timed_out_total", [("while", stage)])
    }

    /// A hooks request whose body stops arriving is answered 408 and its connection closed; what arrived is
    /// kept with the rejected requests, and nothing is accepted.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aHooksBodyThatStopsArrivingIsAnswered408AndKept(journal: Bool) async throws {
        try await Self.withConnection(readTimeout: 1, rules: ["r.lua": recordingRule], journal: journal) {
            server, fd in
            let part = #"{"call_id":"cut-off","#
            try Wire.write(fd, Self.head("/hooks/channel_create", length: 500, extra: "X-Hook-ID: h1\r\n") + part)
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(Wire.answers(text).map(\.status) == [408], "got: \(text.debugDescription)")
            #expect(text.contains("Connection: close\r\n"), "got: \(text.debugDescription)")
            #expect(text.contains(#""code":"timeout""#), "got: \(text.debugDescription)")
            #expect(
                text.contains("\(part.utf8.count) of 500 bytes of its body, then nothing for 1s"),
                "got: \(text.debugDescription)")
            #expect(Self.timedOut(server, while: "request") == 1)
            #expect(server.metrics.value("switchboard_rejected_total", [("reason", "timeout")]) == 1)
            #expect(server.metrics.value("switchboard_non200_responses_total", [("hook_id", "h1")]) == 1)
            #expect(server.metrics.value("switchboard_events_total") == 0)
            let store = RejectedStore(
                directory: RejectedStore.directory(inDataDirectory: server.dataDirectory.path))
            let kept = await store.listWithBodies()
            #expect(kept.count == 1)
            #expect(kept.first?.meta["code"] as? String == "timeout")
            #expect(kept.first?.body == Data(part.utf8))
        }
    }

    /// A request whose head stops arriving is closed after `--read-timeout`, even with `--idle-timeout` off:
    /// bytes came, so it is not idle.
    @Test(.timeLimit(.minutes(1))) func aHeadThatStopsArrivingIsClosed() async throws {
        try await Self.withConnection(readTimeout: 1) { server, fd in
            try Wire.write(fd, "POST /hooks/channel_create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(text.isEmpty, "got: \(text.debugDescription)")
            #expect(Self.timedOut(server, while: "request") == 1)
        }
    }

    /// A connection that sends nothing at all is closed after `--read-timeout`, even with `--idle-timeout`
    /// off (as nginx's `client_header_timeout`). So is one whose malformed request was answered 400: the
    /// router's side then closes its sending side (the read below ends there) and waits for the peer to close.
    /// (The malformed request comes in one write behind a good one, so that no read of it is without a
    /// request part.)
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aSilentOrMalformedConnectionIsClosed(malformed: Bool) async throws {
        try await Self.withConnection(readTimeout: 1) { server, fd in
            if malformed { try Wire.write(fd, Wire.get("/healthz") + "NONSENSE\r\n\r\n") }
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(Wire.answers(text).map(\.status) == (malformed ? [200, 400] : []), "got: \(text.debugDescription)")
            #expect(await server.eventually { Self.timedOut(server, while: malformed ? "answer" : "request") == 1 })
        }
    }

    /// A refused request that waits for `100 Continue` before its body gets the refusal at once (not a wait
    /// for a body that is not coming), and the connection closes.
    @Test(.timeLimit(.minutes(1))) func aRefusalIsTheAnswerToExpectContinue() async throws {
        try await withServer(configure: {
            $0.token = "s3cret"
            $0.readTimeout = 60
        }) { server in
            let fd = try connectLoopback(port: Self.port(server))
            defer { close(fd) }
            try Wire.write(fd, Self.head("/hooks/channel_create", length: 500, extra: "Expect: 100-continue\r\n"))
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(Wire.answers(text).map(\.status) == [401], "got: \(text.debugDescription)")
            #expect(text.contains("Connection: close\r\n"), "got: \(text.debugDescription)")
            #expect(Self.timedOut(server, while: "request") == 0)
        }
    }

    /// A refused request's body is read and dropped (most clients send all of it before they read), but not
    /// without end: past 64 MiB (or eight times `--max-body-bytes`), as a body over the limit, it is answered
    /// at once, with `Connection: close`, and cut off a second later.
    @Test(.timeLimit(.minutes(1))) func aRefusedBodyIsNotReadWithoutEnd() async throws {
        try await withServer(configure: { $0.token = "s3cret" }) { server in
            let fd = try connectLoopback(port: Self.port(server))
            defer { close(fd) }
            let length = 70 << 20
            let text = try await onOwnThread {
                try Wire.write(fd, Self.head("/hooks/channel_create", length: length))
                try Wire.write(fd, String(repeating: "a", count: length))
                return try Wire.read(fd) { Wire.answers($0).count == 1 && $0.hasSuffix("}") }
            }
            #expect(Wire.answers(text).map(\.status) == [401], "got: \(text.prefix(300).debugDescription)")
            #expect(text.contains("Connection: close\r\n"), "got: \(text.prefix(300).debugDescription)")
        }
    }

    /// After a router request that ends the connection (`Connection: close`), the router's side answers it,
    /// closes its sending side and waits for the peer to close: a peer that leaves it open is closed after
    /// `--read-timeout`, even with `--idle-timeout` off; so is one whose request the router answered before
    /// its body had come (the router reads no more of it). (Bytes sent after such a request are a parse error
    /// in NIO's decoder, which ends the connection the same way.)
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aConnectionEndedByARouterRequestIsClosedIfThePeerLeavesItOpen(answeredBeforeItsBody: Bool) async throws {
        try await Self.withConnection(readTimeout: 1) { server, fd in
            let request =
                answeredBeforeItsBody
                ? Self.head("/nothing-here", length: 1000, extra: "Connection: close\r\n") + "{"
                : Wire.get("/healthz", close: true)
            try Wire.write(fd, request)
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(
                Wire.answers(text).map(\.status) == [answeredBeforeItsBody ? 404 : 200], "got: \(text.debugDescription)"
            )
            #expect(await server.eventually { Self.timedOut(server, while: "answer") == 1 })
        }
    }

    /// A request for the router whose body stops arriving is closed too (the router's answer, if it gave one
    /// before reading the body, may come first).
    @Test(.timeLimit(.minutes(1))) func aRouterBodyThatStopsArrivingIsClosed() async throws {
        try await Self.withConnection(readTimeout: 1) { server, fd in
            try Wire.write(fd, Self.head("/console/api/nothing-here", length: 500) + "{")
            _ = try await onOwnThread { try Wire.read(fd) }
            #expect(Self.timedOut(server, while: "request") == 1)
        }
    }

    /// A kept-alive connection is closed once it has sent nothing for `--idle-timeout`; while its answer is
    /// held back (a full engine, for longer than either timeout), it is the server that keeps it waiting, and it
    /// is not timed out. (The timeouts are 2 s, not less: the test client's own first connection must send
    /// its request within them, on a machine busy with the other tests; the hold, 4 s, outlasts them.)
    @Test(.timeLimit(.minutes(1))) func anIdleConnectionIsClosedButNotWhileItsAnswerIsHeld() async throws {
        try await Wire.withFullEngine(
            holdingFor: 4000,
            configure: {
                $0.readTimeout = 2
                $0.idleTimeout = 2
            }
        ) { server in
            let second = String(
                decoding: try sampleBody("channel_create__inbound.json", callID: "held-1"), as: UTF8.self)
            let text = try await onOwnThread {
                try Wire.exchange(port: Self.port(server), Wire.post("/hooks/channel_create", second))
            }
            #expect(Wire.answers(text).map(\.status) == [200], "got: \(text.debugDescription)")
            #expect(server.metrics.value("switchboard_engine_full_total") == 1)
            #expect(Self.timedOut(server, while: "idle") >= 1)
            #expect(Self.timedOut(server, while: "request") == 0)
        }
    }

    /// A body that keeps arriving, slowly, is not cut off: the timeout is for a pause, not for the request.
    @Test(.timeLimit(.minutes(1))) func aSlowButSteadyBodyIsAnswered() async throws {
        try await Self.withConnection(readTimeout: 2) { server, fd in
            let body = Array(try sampleBody("channel_create__inbound.json"))
            let text = try await onOwnThread {
                try Wire.write(
                    fd, Self.head("/hooks/channel_create", length: body.count, extra: "Connection: close\r\n"))
                // 3 s in all, 100 ms between pieces.
                let pieces = 30
                let size = (body.count + pieces - 1) / pieces
                for start in stride(from: 0, to: body.count, by: size) {
                    usleep(100_000)
                    try Wire.write(fd, String(decoding: body[start..<min(start + size, body.count)], as: UTF8.self))
                }
                return try Wire.read(fd)
            }
            #expect(Wire.answers(text).map(\.status) == [200], "got: \(text.debugDescription)")
            #expect(Self.timedOut(server, while: "request") == 0)
        }
    }

    /// A graceful shutdown waits for a request being read, for at most `--read-timeout` of silence: the
    /// request is answered 408 and the server's run ends (`withServer` waits for it).
    @Test(.timeLimit(.minutes(1))) func aShutdownIsNotHeldOpenByARequestThatStopped() async throws {
        try await Self.withConnection(readTimeout: 1) { server, fd in
            // The 100 Continue says the server has read the head.
            try Wire.write(fd, Self.head("/hooks/channel_create", length: 500, extra: "Expect: 100-continue\r\n"))
            let continued = try await onOwnThread { try Wire.read(fd) { $0.hasSuffix("\r\n\r\n") } }
            #expect(continued.hasPrefix("HTTP/1.1 100 Continue"), "got: \(continued.debugDescription)")
            try Wire.write(fd, "{")
            await server.group.triggerGracefulShutdown()
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(Wire.answers(text).map(\.status) == [408], "got: \(text.debugDescription)")
        }
    }
}
