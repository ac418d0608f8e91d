import Delivery
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// A name's lookups are shared and kept for a while (`HostLookups`): how many times the resolver is asked.
@Suite struct HostLookupTests {
    /// Holds lookups until it is opened, as a slow DNS server would; every lookup after that passes.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

        func wait() async {
            await withCheckedContinuation { continuation in
                let open = state.withLock { state in
                    if !state.open { state.waiting.append(continuation) }
                    return state.open
                }
                if open { continuation.resume() }
            }
        }

        func open() {
            let waiting = state.withLock { state in
                state.open = true
                defer { state.waiting = [] }
                return state.waiting
            }
            for continuation in waiting { continuation.resume() }
        }
    }

    /// A resolver that counts its lookups, each held by `gate` (when there is one) and answering what `answer`
    /// says for the lookup's number (1, 2, …).
    final class Resolver: Sendable {
        let calls = Atomic(0)
        let gate: Gate?
        let answer: @Sendable (Int) throws -> [[UInt8]]

        init(gated: Bool = false, answer: @escaping @Sendable (Int) throws -> [[UInt8]] = { _ in [[127, 0, 0, 1]] }) {
            gate = gated ? Gate() : nil
            self.answer = answer
        }

        var count: Int { calls.load(ordering: .sequentiallyConsistent) }

        var resolve: GuardedHTTPClient.Resolver {
            { [self] _ in
                let call = calls.add(1, ordering: .sequentiallyConsistent).newValue
                await gate?.wait()
                return try answer(call)
            }
        }
    }

    /// Twenty calls to one name while its lookup runs wait for that one lookup, whatever the name's case. With
    /// no lifetime nothing is kept, so only the sharing can make it one.
    @Test func callsToOneNameAtOnceShareOneLookup() async throws {
        let resolver = Resolver(gated: true)
        let lookups = HostLookups(lifetime: .zero, resolver: resolver.resolve)
        let waits = (0..<20).map { lookups.lookup($0 % 2 == 0 ? "crm.example.test" : "CRM.Example.Test") }
        resolver.gate?.open()
        for wait in waits { #expect(try await wait.value == [[127, 0, 0, 1]]) }
        #expect(resolver.count == 1)
        #expect(lookups.count == 0)
    }

    /// An answer serves the calls after it for its lifetime; without one, each call looks the name up again.
    @Test(arguments: [(Duration.seconds(3600), 1), (Duration.zero, 3)])
    func anAnswerServesForItsLifetime(lifetime: Duration, lookupsMade: Int) async throws {
        let resolver = Resolver()
        let lookups = HostLookups(lifetime: lifetime, resolver: resolver.resolve)
        for _ in 0..<3 { #expect(try await lookups.lookup("crm.example.test").value == [[127, 0, 0, 1]]) }
        #expect(resolver.count == lookupsMade)
        _ = try await lookups.lookup("tickets.example.test").value
        #expect(resolver.count == lookupsMade + 1)
    }

    /// A lookup that fails or finds no address is not kept: the next call asks again, and the first answer
    /// with an address is kept.
    @Test func aFailedOrEmptyLookupIsNotKept() async throws {
        let resolver = Resolver { call in
            switch call {
            case 1: throw OutboundHTTPError("cannot resolve crm.example.test")
            case 2: return []
            default: return [[127, 0, 0, 1]]
            }
        }
        let lookups = HostLookups(lifetime: .seconds(3600), resolver: resolver.resolve)
        await #expect(throws: OutboundHTTPError.self) { try await lookups.lookup("crm.example.test").value }
        #expect(try await lookups.lookup("crm.example.test").value == [])
        #expect(try await lookups.lookup("crm.example.test").value == [[127, 0, 0, 1]])
        #expect(try await lookups.lookup("crm.example.test").value == [[127, 0, 0, 1]])
        #expect(resolver.count == 3)
    }

    /// `forget` drops a kept answer, but not a lookup still running: calls that come meanwhile join it.
    @Test func forgetDropsAKeptAnswerNotARunningLookup() async throws {
        let resolver = Resolver(gated: true)
        let lookups = HostLookups(lifetime: .seconds(3600), resolver: resolver.resolve)
        let running = lookups.lookup("crm.example.test")
        lookups.forget("crm.example.test")
        let joined = lookups.lookup("crm.example.test")
        resolver.gate?.open()
        _ = try await running.value
        _ = try await joined.value
        #expect(resolver.count == 1)
        lookups.forget("CRM.example.test")
        _ = try await lookups.lookup("crm.example.test").value
        #expect(resolver.count == 2)
    }

    /// Past `maxNames` names the stale answers are dropped first; the names kept stay bounded.
    @Test func theNamesKeptAreBounded() async throws {
        let resolver = Resolver()
        let lookups = HostLookups(lifetime: .seconds(3600), resolver: resolver.resolve)
        for index in 0..<(HostLookups.maxNames + 10) { _ = try await lookups.lookup("host\(index).test").value }
        #expect(lookups.count <= HostLookups.maxNames)
        #expect(lookups.count > 0)
    }

    /// Through the guarded client: a name is looked up once for calls that follow one another; when none of
    /// its addresses can be connected to (nothing listens on 127.0.0.2), the answer is dropped and the next
    /// call looks the name up again and finds where the host went (the upstream, on 127.0.0.1).
    @Test func aNameNoAddressOfWhichAnswersIsLookedUpAgain() async throws {
        let upstream = try await LoopbackServer()
        defer { Task { try? await upstream.stop() } }
        let resolver = Resolver { call in call == 1 ? [[127, 0, 0, 2]] : [[127, 0, 0, 1]] }
        let client = GuardedHTTPClient(allowed: [CIDR("127.0.0.0/8")!], resolver: resolver.resolve)
        defer { Task { try? await client.shutdown() } }
        let url = "http://crm.moved.test:\(upstream.port)/echo"
        do {
            let answer = try await client.execute(OutboundRequest(method: "GET", url: url, timeout: .seconds(2)))
            Issue.record("expected a failure to connect, got \(answer.status)")
        } catch let error as OutboundHTTPError {
            #expect(error.notConnected, "\(error.message)")
        }
        for _ in 0..<3 {
            let response = try await client.execute(OutboundRequest(method: "GET", url: url, timeout: .seconds(5)))
            #expect(response.status == 200)
        }
        #expect(resolver.count == 2)
        #expect(upstream.requests.count == 3)
    }
}
