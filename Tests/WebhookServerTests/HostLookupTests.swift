import Delivery
import RuleEngine
import Synchronization
import TestSupport
import Testing

/// A name's lookups are shared and kept for a while (`HostLookups`): how many times the resolver is asked.
@Suite(.timeLimit(.minutes(1))) struct HostLookupTests {
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

    static let address: [[UInt8]] = [[127, 0, 0, 1]]

    /// `host`'s addresses from `lookups`, waiting at most `limit`.
    static func addresses(_ lookups: HostLookups, _ host: String, within limit: Duration = .seconds(20))
        async throws -> [[UInt8]]
    {
        try await lookups.addresses(of: host, within: limit, expired: { OutboundHTTPError("no answer in time") })
            .addresses
    }

    /// Twenty calls to one name while its lookup runs wait for that one lookup, whatever the name's case. With
    /// no lifetime nothing is kept, so only the sharing can make it one.
    @Test func callsToOneNameAtOnceShareOneLookup() async throws {
        let resolver = Resolver(gated: true)
        let lookups = HostLookups(lifetime: .zero, resolver: resolver.resolve)
        let calls = (0..<20).map { index in
            Task { try await Self.addresses(lookups, index % 2 == 0 ? "crm.example.test" : "CRM.Example.Test") }
        }
        #expect(await eventually { lookups.waiting(for: "crm.example.test") == 20 })
        resolver.gate?.open()
        for call in calls { #expect(try await call.value == Self.address) }
        #expect(resolver.count == 1)
        #expect(lookups.count == 0)
    }

    /// An answer serves the calls after it for its lifetime; without one, each call looks the name up again.
    @Test(arguments: [(Duration.seconds(3600), 1), (Duration.zero, 3)])
    func anAnswerServesForItsLifetime(lifetime: Duration, lookupsMade: Int) async throws {
        let resolver = Resolver()
        let lookups = HostLookups(lifetime: lifetime, resolver: resolver.resolve)
        for _ in 0..<3 { #expect(try await Self.addresses(lookups, "crm.example.test") == Self.address) }
        #expect(resolver.count == lookupsMade)
        _ = try await Self.addresses(lookups, "tickets.example.test")
        #expect(resolver.count == lookupsMade + 1)
    }

    /// Once its lifetime has passed, an answer is not used: the name is looked up again.
    @Test func anAnswerPastItsLifetimeIsLookedUpAgain() async throws {
        let resolver = Resolver()
        let lookups = HostLookups(lifetime: .milliseconds(10), resolver: resolver.resolve)
        _ = try await Self.addresses(lookups, "crm.example.test")
        try await Task.sleep(for: .milliseconds(50))
        _ = try await Self.addresses(lookups, "crm.example.test")
        #expect(resolver.count == 2)
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
        await #expect(throws: OutboundHTTPError.self) { try await Self.addresses(lookups, "crm.example.test") }
        #expect(try await Self.addresses(lookups, "crm.example.test") == [])
        #expect(try await Self.addresses(lookups, "crm.example.test") == Self.address)
        #expect(try await Self.addresses(lookups, "crm.example.test") == Self.address)
        #expect(resolver.count == 3)
    }

    /// `forget` drops the answer the failed call had, not a newer one, and not a lookup still running.
    @Test func forgetDropsTheAnswerThatFailedOnly() async throws {
        let resolver = Resolver(gated: true)
        let lookups = HostLookups(lifetime: .seconds(3600), resolver: resolver.resolve)
        let running = Task { try await Self.addresses(lookups, "crm.example.test") }
        #expect(await eventually { lookups.waiting(for: "crm.example.test") == 1 })
        lookups.forget("crm.example.test", lookup: 1)  // the running lookup's own id (ids count from 1)
        resolver.gate?.open()
        _ = try await running.value
        let answer = try await lookups.addresses(of: "crm.example.test", within: .seconds(20), expired: { Expired() })
        #expect(resolver.count == 1)
        lookups.forget("crm.example.test", lookup: answer.lookup + 1)  // a newer lookup's: not this answer
        _ = try await Self.addresses(lookups, "crm.example.test")
        #expect(resolver.count == 1)
        lookups.forget("CRM.example.test", lookup: answer.lookup)
        _ = try await Self.addresses(lookups, "crm.example.test")
        #expect(resolver.count == 2)
    }

    struct Expired: Error {}

    /// When every call waiting for a lookup has given up, the lookup is cancelled (here it notices, as one
    /// still queued for NIO's thread pool does) and the name forgotten: the next call looks it up afresh.
    @Test func aLookupEveryCallerGaveUpOnIsCancelled() async throws {
        let cancelled = Atomic(0)
        let resolver = Resolver { _ in [[127, 0, 0, 1]] }
        let hanging: GuardedHTTPClient.Resolver = { host in
            if resolver.count == 0 {
                _ = try await resolver.resolve(host)
                do { try await Task.sleep(for: .seconds(60)) } catch {
                    cancelled.add(1, ordering: .sequentiallyConsistent)
                    throw error
                }
            }
            return try await resolver.resolve(host)
        }
        let lookups = HostLookups(lifetime: .seconds(3600), resolver: hanging)
        await #expect(throws: Expired.self) {
            _ = try await lookups.addresses(of: "dead-dns.test", within: .milliseconds(50), expired: { Expired() })
        }
        #expect(await eventually { cancelled.load(ordering: .sequentiallyConsistent) == 1 })
        #expect(lookups.count == 0)
        #expect(try await Self.addresses(lookups, "dead-dns.test") == Self.address)
        #expect(resolver.count == 2)
    }

    /// A caller that is cancelled stops waiting at once; it was the only one, so the lookup is cancelled too.
    @Test func aCancelledCallerGivesUpItsLookup() async throws {
        let cancelled = Atomic(0)
        let lookups = HostLookups(lifetime: .seconds(3600)) { _ in
            do { try await Task.sleep(for: .seconds(60)) } catch {
                cancelled.add(1, ordering: .sequentiallyConsistent)
                throw error
            }
            return Self.address
        }
        let call = Task { try await Self.addresses(lookups, "crm.example.test") }
        #expect(await eventually { lookups.waiting(for: "crm.example.test") == 1 })
        call.cancel()
        await #expect(throws: CancellationError.self) { try await call.value }
        #expect(await eventually { cancelled.load(ordering: .sequentiallyConsistent) == 1 })
        #expect(lookups.count == 0)
    }

    /// A call that gives up leaves the lookup to the calls still waiting for it; a call with no time left
    /// starts none.
    @Test func aLookupOthersStillWaitForRunsOn() async throws {
        let resolver = Resolver(gated: true)
        let stillWanted = Atomic(false)
        let lookups = HostLookups(lifetime: .seconds(3600)) { host in
            let addresses = try await resolver.resolve(host)
            stillWanted.store(!Task.isCancelled, ordering: .sequentiallyConsistent)
            return addresses
        }
        await #expect(throws: Expired.self) {
            _ = try await lookups.addresses(of: "crm.example.test", within: .zero, expired: { Expired() })
        }
        #expect(resolver.count == 0)
        let patient = Task { try await Self.addresses(lookups, "crm.example.test") }
        #expect(await eventually { lookups.waiting(for: "crm.example.test") == 1 })
        await #expect(throws: Expired.self) {
            _ = try await lookups.addresses(of: "crm.example.test", within: .milliseconds(20), expired: { Expired() })
        }
        #expect(lookups.waiting(for: "crm.example.test") == 1)
        resolver.gate?.open()
        #expect(try await patient.value == Self.address)
        let wanted = stillWanted.load(ordering: .sequentiallyConsistent)
        #expect(wanted)
        #expect(resolver.count == 1)
    }

    /// Past `maxNames` names the stale answers are dropped; the names kept stay bounded.
    @Test func theNamesKeptAreBounded() async throws {
        let resolver = Resolver()
        let short = HostLookups(lifetime: .milliseconds(20), resolver: resolver.resolve)
        for index in 0..<HostLookups.maxNames { _ = try await Self.addresses(short, "host\(index).test") }
        #expect(short.count == HostLookups.maxNames)
        try await Task.sleep(for: .milliseconds(50))
        _ = try await Self.addresses(short, "one-more.test")
        #expect(short.count == 1)
        let long = HostLookups(lifetime: .seconds(3600), resolver: resolver.resolve)
        for index in 0..<(HostLookups.maxNames + 10) { _ = try await Self.addresses(long, "host\(index).test") }
        #expect(long.count <= HostLookups.maxNames)
        #expect(long.count > 0)
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
            let answer = try await client.execute(OutboundRequest(method: "GET", url: url, timeout: .seconds(1)))
            Issue.record("expected a failure to connect, got \(answer.status)")
        } catch let error as OutboundHTTPError {
            // (Under load the HTTP library may report the deadline instead of the refusals.)
            #expect(error.notConnected || error.timedOut, "\(error.message)")
        }
        for _ in 0..<3 {
            let response = try await client.execute(OutboundRequest(method: "GET", url: url, timeout: answerTimeout))
            #expect(response.status == 200)
        }
        #expect(resolver.count == 2)
        #expect(upstream.requests.count == 3)
    }
}
