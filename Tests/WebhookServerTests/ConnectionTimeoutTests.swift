import Delivery
import EventStore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
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

    /// A server with the given timeouts (`--idle-timeout` off unless given), and a connection to it, whose
    /// client side (`client`) runs on a thread of its own from the connect on. `body` gets what `client`
    /// returned; the connection stays open until `body` returns. With `loops`, the server's connections are on
    /// those event loops rather than the process's shared ones.
    ///
    /// A thread of its own, because the timeouts here are a second or two: between a connect and a write made
    /// from a task, the task may wait for the process's shared executor, which the other tests keep busy, and
    /// a connection that sends nothing for a second is rightly closed. Twice under `make test`, a connection
    /// was closed as one that had sent nothing although the test wrote its request right after connecting.
    static func withConnection<Seen: Sendable>(
        readTimeout: Double, idleTimeout: Double = 0, rules: [String: String] = [:], journal: Bool = false,
        loops: (any EventLoopGroup)? = nil, client: @escaping @Sendable (Int32) throws -> Seen,
        _ body: (ServerFixture, Int32, Seen) async throws -> Void
    ) async throws {
        try await withServer(
            rules: rules, journal: journal,
            configure: {
                $0.readTimeout = readTimeout
                $0.idleTimeout = idleTimeout
                $0.eventLoopGroup = loops
            }
        ) { server in
            let port = Self.port(server)
            let (fd, seen) = try await onOwnThread {
                let fd = try connectLoopback(port: port)
                do { return (fd, try client(fd)) } catch {
                    close(fd)
                    throw error
                }
            }
            defer { close(fd) }
            try await body(server, fd, seen)
        }
    }

    static func timedOut(_ server: ServerFixture, while stage: String) -> Int {
        server.metrics.value("switchboard_connections_timed_out_total", [("while", stage)])
    }

    /// A hooks request whose body stops arriving is answered 408 and its connection closed; what arrived is
    /// kept with the rejected requests, and nothing is accepted.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aHooksBodyThatStopsArrivingIsAnswered408AndKept(journal: Bool) async throws {
        let part = #"{"call_id":"cut-off","#
        try await Self.withConnection(
            readTimeout: 1, rules: ["r.lua": recordingRule], journal: journal,
            client: { fd in
                try Wire.write(fd, Self.head("/hooks/channel_create", length: 500, extra: "X-Hook-ID: h1\r\n") + part)
                return try Wire.read(fd)
            }
        ) { server, _, text in
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
        try await Self.withConnection(
            readTimeout: 1,
            client: { fd in
                try Wire.write(fd, "POST /hooks/channel_create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
                return try Wire.read(fd)
            }
        ) { server, _, text in
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
        try await Self.withConnection(
            readTimeout: 1,
            client: { fd in
                if malformed { try Wire.write(fd, Wire.get("/healthz") + "NONSENSE\r\n\r\n") }
                return try Wire.read(fd)
            }
        ) { server, _, text in
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
    ///
    /// Until the router answers, the body not coming is the peer's pause, timed out as a request's: so the
    /// client sends a byte of it every 100 ms until the answer is there. (The router's task runs on the
    /// process's shared executor, which the other tests keep busy: were its answer to come more than a second
    /// after the head, the connection would rightly be closed as a request that stopped arriving.)
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aConnectionEndedByARouterRequestIsClosedIfThePeerLeavesItOpen(answeredBeforeItsBody: Bool) async throws {
        let request =
            answeredBeforeItsBody
            ? Self.head("/nothing-here", length: 1000, extra: "Connection: close\r\n") + "{"
            : Wire.get("/healthz", close: true)
        try await Self.withConnection(
            readTimeout: 1,
            client: { fd in
                try Wire.write(fd, request)
                if answeredBeforeItsBody { try Self.drip(fd, bytes: 999) }
                return try Wire.read(fd)
            }
        ) { server, _, text in
            #expect(
                Wire.answers(text).map(\.status) == [answeredBeforeItsBody ? 404 : 200], "got: \(text.debugDescription)"
            )
            #expect(await server.eventually { Self.timedOut(server, while: "answer") == 1 })
        }
    }

    /// A request for the router whose body stops arriving is closed too (the router's answer, if it gave one
    /// before reading the body, may come first).
    @Test(.timeLimit(.minutes(1))) func aRouterBodyThatStopsArrivingIsClosed() async throws {
        try await Self.withConnection(
            readTimeout: 1,
            client: { fd in
                try Wire.write(fd, Self.head("/console/api/nothing-here", length: 500) + "{")
                return try Wire.read(fd)
            }
        ) { server, _, _ in
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
        let body = Array(try sampleBody("channel_create__inbound.json"))
        try await Self.withConnection(
            readTimeout: 2,
            client: { fd in
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
        ) { server, _, text in
            #expect(Wire.answers(text).map(\.status) == [200], "got: \(text.debugDescription)")
            #expect(Self.timedOut(server, while: "request") == 0)
        }
    }

    /// What arrived while the server's event loop was held up (a machine short of CPU, a long task on the loop)
    /// is read before the connection's pause is judged: a body sent after its `100 Continue`, and a kept-alive
    /// connection's next request, each sent while the loop was held for longer than `--read-timeout` and
    /// `--idle-timeout`, are answered 200. (The server has a loop of its own, so that no other test's server is
    /// held up with it. Before the pause was measured up to the loop's last read of its sockets, the body was
    /// answered 408, "0 of … bytes of its body, then nothing for 1s", and the next request's connection closed
    /// as idle.)
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func whatArrivedWhileTheLoopWasHeldIsReadBeforeItsPauseIsJudged(nextRequest: Bool) async throws {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = loops.next()
        let body = String(decoding: try sampleBody("channel_create__inbound.json", callID: "held"), as: UTF8.self)
        let path = "/hooks/channel_create"
        do {
            try await Self.withConnection(
                readTimeout: 1, idleTimeout: 1, loops: loops,
                client: { fd in
                    let first: String
                    if nextRequest {
                        try Wire.write(fd, Wire.post(path, body))
                        first = try Wire.read(fd) { Wire.answers($0).count == 1 }
                    } else {
                        let extra = "Expect: 100-continue\r\nConnection: close\r\n"
                        try Wire.write(fd, Self.head(path, length: body.utf8.count, extra: extra))
                        first = try Wire.read(fd) { $0.hasSuffix("\r\n\r\n") }
                    }
                    try Self.hold(loop, seconds: 1.5) {
                        try Wire.write(fd, nextRequest ? Wire.post(path, body, close: true) : body)
                    }
                    return (first, try Wire.read(fd))
                }
            ) { server, _, seen in
                let (first, text) = seen
                if nextRequest {
                    #expect(Wire.answers(first).map(\.status) == [200], "got: \(first.debugDescription)")
                } else {
                    #expect(first.hasPrefix("HTTP/1.1 100 Continue"), "got: \(first.debugDescription)")
                }
                #expect(Wire.answers(text).map(\.status) == [200], "got: \(text.debugDescription)")
                #expect(Self.timedOut(server, while: "request") == 0)
                #expect(Self.timedOut(server, while: "idle") == 0)
            }
        } catch {
            try? await loops.shutdownGracefully()
            throw error
        }
        try await loops.shutdownGracefully()
    }

    /// Sends `fd` a byte (of up to `bytes`) every 100 ms until something is there to read.
    static func drip(_ fd: Int32, bytes: Int) throws {
        for _ in 0..<bytes {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, 100) != 0 { return }
            try Wire.write(fd, " ")
        }
    }

    /// Holds `loop` up for `seconds` (a task on it that sleeps), and calls `meanwhile` once the hold has begun.
    static func hold(_ loop: any EventLoop, seconds: Double, meanwhile: () throws -> Void) throws {
        let begun = DispatchSemaphore(value: 0)
        loop.execute {
            begun.signal()
            usleep(UInt32(seconds * 1_000_000))
        }
        begun.wait()
        try meanwhile()
    }

    /// A graceful shutdown waits for a request being read, for at most `--read-timeout` of silence: the
    /// request is answered 408 and the server's run ends (`withServer` waits for it).
    @Test(.timeLimit(.minutes(1))) func aShutdownIsNotHeldOpenByARequestThatStopped() async throws {
        try await Self.withConnection(
            readTimeout: 1,
            client: { fd in
                // The 100 Continue says the server has read the head.
                try Wire.write(fd, Self.head("/hooks/channel_create", length: 500, extra: "Expect: 100-continue\r\n"))
                let continued = try Wire.read(fd) { $0.hasSuffix("\r\n\r\n") }
                if continued.hasPrefix("HTTP/1.1 100 Continue") { try Wire.write(fd, "{") }
                return continued
            }
        ) { server, fd, continued in
            #expect(continued.hasPrefix("HTTP/1.1 100 Continue"), "got: \(continued.debugDescription)")
            await server.group.triggerGracefulShutdown()
            let text = try await onOwnThread { try Wire.read(fd) }
            #expect(Wire.answers(text).map(\.status) == [408], "got: \(text.debugDescription)")
        }
    }
}
