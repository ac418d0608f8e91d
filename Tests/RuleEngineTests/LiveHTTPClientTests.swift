import Glibc
import NIOCore
import TestSupport
import Testing

@testable import RuleEngine

/// `LiveHTTPClient` spreads calls over AsyncHTTPClient instances only when more than `shardSize` are in
/// flight at once, so ordinary traffic keeps reusing one pool's connections.
@Suite struct LiveHTTPClientTests {
    @Test func callsPastTheShardSizeAtOnceGoToASecondInstanceAndCallsOneAtATimeStayOnOne() async throws {
        let upstream = try await LoopbackServer()
        let client = LiveHTTPClient(maxConnectionsPerHost: 256)
        defer { Task { try? await upstream.stop() } }
        for _ in 0..<3 {
            let response = try await client.execute(
                OutboundRequest(method: "GET", url: upstream.url("/status/200"), timeout: answerTimeout))
            #expect(response.status == 200)
        }
        #expect(client.shardCount == 1)
        // Each call waits at the upstream far longer than the test, so however slowly the calls start on a
        // loaded machine, all of them end up in flight together; they are cut off by the shutdown.
        let count = LiveHTTPClient.shardSize + 36
        let calls = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<count {
                    group.addTask {
                        _ = try? await client.execute(
                            OutboundRequest(method: "GET", url: upstream.url("/slow?ms=60000"), timeout: .seconds(90)))
                    }
                }
            }
        }
        #expect(await eventually(30) { upstream.maxConcurrent == count })
        #expect(client.shardCount == 2)
        try await client.shutdown()
        await calls.value
    }

    @Test func aClientShutDownRefusesNewCalls() async throws {
        let client = LiveHTTPClient()
        try await client.shutdown()
        await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(OutboundRequest(method: "GET", url: "http://127.0.0.1:9/", timeout: .seconds(1)))
        }
        #expect(client.shardCount == 0)
    }

    @Test func aResponseBodyPastTheCapIsAnErrorThatSaysSo() async throws {
        let upstream = try await LoopbackServer()
        let client = LiveHTTPClient(maxResponseBytes: 100)
        defer { close(upstream, client) }
        let small = try await client.execute(
            OutboundRequest(method: "POST", url: upstream.url("/echo"), body: Array("hi".utf8), timeout: answerTimeout))
        #expect(small.status == 200)
        let error = await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(
                OutboundRequest(
                    method: "POST", url: upstream.url("/echo"), body: Array(repeating: UInt8(ascii: "x"), count: 200),
                    timeout: answerTimeout))
        }
        #expect(error?.message == "response body larger than 100 bytes")
    }

    /// NIO stops the process on a header name that is not ASCII; a rule's or a forward's is refused instead,
    /// for good (a forward becomes a dead letter at once), and nothing is sent.
    @Test func aHeaderNameThatIsNotASCIIIsRefused() async throws {
        let (upstream, client) = try await liveFixture()
        defer { close(upstream, client) }
        let error = await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(
                OutboundRequest(
                    method: "GET", url: upstream.url("/echo"), headers: [.init(name: "X-Café", value: "1")],
                    timeout: answerTimeout))
        }
        #expect(error?.message == #"the header name "X-Café" is not ASCII"#)
        #expect(error?.permanent == true)
        #expect(upstream.requests.isEmpty)
    }

    /// A request that cannot be sent as it is fails for good, saying why (a forward becomes a dead letter at
    /// once rather than being retried), and nothing is sent: a header value with CR and LF in it (it would
    /// split the header), a name that is not a token, a URL with no host.
    @Test(arguments: [
        ("/echo", "X-Note", "a\r\nX-Injected: 1", #"the value of the header "X-Note" holds a control character"#),
        ("/echo", "Bad Name", "1", #"the header name "Bad Name" is not a token"#),
        ("", "X-Ok", "1", "the URL cannot be sent: "),
    ])
    func aRequestThatCannotBeSentFailsForGood(path: String, name: String, value: String, message: String) async throws {
        let (upstream, client) = try await liveFixture()
        defer { close(upstream, client) }
        let url = path.isEmpty ? "http:///echo" : upstream.url(path)
        let error = await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(
                OutboundRequest(
                    method: "GET", url: url, headers: [.init(name: name, value: value)], timeout: answerTimeout))
        }
        #expect(error?.message.hasPrefix(message) == true)
        #expect(error?.permanent == true)
        #expect(upstream.requests.isEmpty)
    }

    /// A request whose whole call has no time left (a lookup or a redirect took it) starts nothing, and fails
    /// as a timeout of the time the caller gave; not even on an idle kept-alive connection, where its head
    /// could be written before the HTTP library's deadline fired.
    @Test func aRequestWithNoTimeLeftSendsNothing() async throws {
        let (upstream, client) = try await liveFixture()
        defer { close(upstream, client) }
        _ = try await client.execute(OutboundRequest(method: "GET", url: upstream.url("/echo"), timeout: answerTimeout))
        var request = OutboundRequest(method: "POST", url: upstream.url("/echo"), body: [1], timeout: .seconds(2))
        request.deadline = .now - .milliseconds(1)
        let error = await #expect(throws: OutboundHTTPError.self) { try await client.execute(request) }
        #expect(error?.message == "timed out after 2.0 seconds")
        #expect(error?.timedOut == true)
        #expect(upstream.requests.map(\.method) == ["GET"])
    }

    /// The errors a connect gives when nothing could be sent mark the call as not connected, so the name's next
    /// address is tried: among them those of an IPv6 address on a host without IPv6, which this machine (it has
    /// IPv6) cannot produce for real. A reset can come after the request went out, and is not one of them.
    @Test(arguments: [
        (ECONNREFUSED, "connection refused"), (EHOSTUNREACH, "no route to host"),
        (ENETUNREACH, "network is unreachable"),
        (EADDRNOTAVAIL, "cannot assign requested address"), (EAFNOSUPPORT, "address family not supported by protocol"),
        (ENETDOWN, "network is down"),
    ])
    func connectErrorsThatSentNothingAreNotConnected(code: Int32, reason: String) {
        #expect(LiveHTTPClient.connectFailure(IOError(errnoCode: code, reason: "connect")) == reason)
    }

    @Test func aResetIsNotAFailureToConnect() {
        #expect(LiveHTTPClient.connectFailure(IOError(errnoCode: ECONNRESET, reason: "read")) == nil)
    }

    @Test func cancellingTheCallerEndsAWaitingCall() async throws {
        let (upstream, client) = try await liveFixture()
        defer { close(upstream, client) }
        let call = Task {
            try await client.execute(
                OutboundRequest(method: "GET", url: upstream.url("/slow?ms=60000"), timeout: .seconds(90)))
        }
        #expect(await eventually(30) { upstream.maxConcurrent == 1 })
        call.cancel()
        await #expect(throws: OutboundHTTPError.self) { try await call.value }
    }
}
