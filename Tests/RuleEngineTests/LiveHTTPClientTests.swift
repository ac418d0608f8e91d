import TestSupport
import Testing

@testable import RuleEngine

/// `LiveHTTPClient` spreads calls over AsyncHTTPClient instances only when more than `shardSize` are in
/// flight at once, so ordinary traffic keeps reusing one pool's connections.
@Suite struct LiveHTTPClientTests {
    @Test func callsPastTheShardSizeAtOnceGoToASecondInstanceAndCallsOneAtATimeStayOnOne() async throws {
        let upstream = try await LoopbackServer()
        let client = LiveHTTPClient(maxConnectionsPerHost: 256)
        defer {
            Task {
                try? await client.shutdown()
                try? await upstream.stop()
            }
        }
        for _ in 0..<3 {
            let response = try await client.execute(
                OutboundRequest(method: "GET", url: upstream.url("/status/200"), timeout: .seconds(10)))
            #expect(response.status == 200)
        }
        #expect(client.shardCount == 1)
        // Each call waits a second at the upstream, so all of them are in flight together.
        let count = LiveHTTPClient.shardSize + 36
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<count {
                group.addTask {
                    try await client.execute(
                        OutboundRequest(method: "GET", url: upstream.url("/slow?ms=1000"), timeout: .seconds(20))
                    ).status
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.count == count && statuses.allSatisfy { $0 == 200 })
        #expect(client.shardCount == 2)
        #expect(upstream.maxConcurrent > LiveHTTPClient.shardSize)
    }

    @Test func aClientShutDownRefusesNewCalls() async throws {
        let client = LiveHTTPClient()
        try await client.shutdown()
        await #expect(throws: OutboundHTTPError.self) {
            try await client.execute(OutboundRequest(method: "GET", url: "http://127.0.0.1:9/", timeout: .seconds(1)))
        }
        #expect(client.shardCount == 0)
    }
}
