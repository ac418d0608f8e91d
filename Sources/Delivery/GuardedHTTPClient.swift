import EventStore
import Foundation
import NIOCore
import NIOPosix
public import RuleEngine
import Synchronization

/// The HTTP client rules use in the server: refuses internal addresses (after DNS resolution, and again on
/// every redirect), caps how many rule HTTP calls are in flight overall and per rule, then sends with
/// AsyncHTTPClient.
///
/// The address that was checked is the address that is connected to: the host is resolved here (normally once
/// a `lookupLifetime`, however many calls name it: `HostLookups`), and the request is pinned to that address
/// (plain HTTP: the URL names the address and `Host` the name; HTTPS: a client whose DNS override maps the
/// name to the address, so SNI and the certificate check still use the name). A DNS answer that changes
/// between the check and the connection (DNS rebinding) cannot reach an internal address.
public final class GuardedHTTPClient: OutboundHTTPClient {
    /// Resolves a host name to IPv4 (4 bytes) and IPv6 (16 bytes) addresses.
    public typealias Resolver = @Sendable (String) async throws -> [[UInt8]]

    let inner: LiveHTTPClient
    /// `inner` without its retries of a failed connect, and 1 s for a connect where `inner` waits 5: for each
    /// address of a name but its last, so that the next is tried soon (`send(_:pinnedTo:deadline:)`; the
    /// default timeout of a rule's call is 5 s). It makes no connection until one is needed.
    let failingFast: LiveHTTPClient
    let allowed: [CIDR]
    let global: AsyncSemaphore
    let perRuleLimit: Int
    let perRule = Mutex<[String: AsyncSemaphore]>([:])
    let lookups: HostLookups
    let pinned: PinnedClients
    /// False for `unrestricted()`: no network policy, nothing pinned.
    let restricted: Bool

    /// - Parameters:
    ///   - allowed: networks rules may reach even though they are internal (`--allow-http-to`).
    ///   - maxInFlight: rule HTTP calls in flight at once, overall. Default 2,000.
    ///   - maxInFlightPerRule: in flight at once for one rule. Default 1,000.
    ///   - resolver: how host names are resolved (getaddrinfo; tests inject their own).
    ///   - lookupLifetime: how long a name's addresses serve before it is looked up again (`lookupLifetime`).
    public init(
        allowed: [CIDR], maxInFlight: Int = 2000, maxInFlightPerRule: Int = 1000,
        resolver: @escaping Resolver = GuardedHTTPClient.resolve,
        lookupLifetime: Duration = GuardedHTTPClient.lookupLifetime,
        restricted: Bool = true
    ) {
        self.restricted = restricted
        self.inner = LiveHTTPClient(followRedirects: false, maxConnectionsPerHost: max(maxInFlight, 8))
        self.failingFast = LiveHTTPClient(
            followRedirects: false, maxConnectionsPerHost: max(maxInFlight, 8), retryConnecting: false,
            connectTimeout: Self.fastConnectTimeout)
        self.allowed = allowed
        self.global = AsyncSemaphore(maxInFlight)
        self.perRuleLimit = maxInFlightPerRule
        self.lookups = HostLookups(lifetime: lookupLifetime, resolver: resolver)
        self.pinned = PinnedClients(maxConnectionsPerHost: max(maxInFlight, 8))
    }

    /// How long a name's addresses are used before it is looked up again: 30 s. getaddrinfo gives no TTL; a
    /// recursive resolver's cache already serves answers up to their TTL (often minutes), so this adds at
    /// most 30 s to how long a moved host is still called at its old address, and a name none of whose
    /// addresses can be connected to (or whose call timed out) is looked up again by the next call
    /// (`HostLookups.forget`). Meanwhile the calls try the addresses in the kept answer's order.
    public static let lookupLifetime = Duration.seconds(30)

    /// How long a connect to an address that is not a name's last may take before the next is tried: 1 s over
    /// HTTP; 3 s over HTTPS, where AsyncHTTPClient's connect time covers the TLS handshake too (two more
    /// round trips with TLS 1.2).
    static let fastConnectTimeout = Duration.seconds(1)
    static let fastTLSConnectTimeout = Duration.seconds(3)

    /// `switchboard run --live`'s client: the URL checks and the redirect handling, without the network policy.
    /// An author trying rules calls their own machine's services, so names are left to the HTTP library, which
    /// tries every address a name has (a `localhost` server may listen on `::1` alone).
    public static func unrestricted() -> GuardedHTTPClient { GuardedHTTPClient(allowed: [], restricted: false) }

    public func shutdown() async throws {
        var failure: (any Error)?
        do { try await inner.shutdown() } catch { failure = error }
        do { try await failingFast.shutdown() } catch { failure = failure ?? error }
        await pinned.shutdown()  // also when the first one failed
        if let failure { throw failure }
    }

    func semaphore(for rule: String?) -> AsyncSemaphore? {
        guard let rule else { return nil }
        return perRule.withLock { map in
            if let s = map[rule] { return s }
            let s = AsyncSemaphore(perRuleLimit)
            map[rule] = s
            return s
        }
    }

    public func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        let ruleSemaphore = semaphore(for: request.rule)
        await global.wait()
        defer { global.signal() }
        await ruleSemaphore?.wait()
        defer { ruleSemaphore?.signal() }

        // The request's timeout bounds the whole call: the lookups, every address tried and every redirect
        // followed, not each of them (five slow redirects must not hold a rule six times as long as it asked).
        let deadline = request.deadline ?? ContinuousClock.now + request.timeout
        var current = request
        current.deadline = deadline
        for hop in 0...5 {
            let response: OutboundResponse
            do {
                let address = try await check(current.url, deadline: deadline, timeout: request.timeout)
                response = try await send(current, pinnedTo: address, deadline: deadline)
            } catch let error as OutboundHTTPError where hop > 0 && error.timedOut {
                throw OutboundHTTPError(
                    "timed out after \(request.timeout), \(hop) redirect\(hop == 1 ? "" : "s") followed",
                    timedOut: true)
            }
            guard [301, 302, 303, 307, 308].contains(response.status),
                let location = response.headers.first(where: { $0.name.lowercased() == "location" })?.value,
                let next = URL(string: location, relativeTo: URL(string: current.url))?.absoluteString
            else { return response }
            // The outbox's notion of a destination (scheme://host:port) is the origin; host names ignore case.
            let from = EventStore.Delivery.destination(of: current.url).lowercased()
            if EventStore.Delivery.destination(of: next).lowercased() != from {
                // Credentials (and any header named for a secret: `X-Auth-Token`, `X-Api-Key`) and the Host the
                // rule set were meant for the first origin, not this one.
                current.headers.removeAll {
                    $0.name.lowercased() == "host" || Secrets.isCredentialHeader($0.name)
                }
            }
            if response.status == 303
                || ((response.status == 301 || response.status == 302) && current.method == "POST")
            {
                current.method = "GET"
                current.body = nil
            }
            current.url = next
        }
        throw OutboundHTTPError("too many redirects")
    }

    /// Sends the request to the addresses `check` approved, never to a second resolution of its host: to the
    /// first, and to the next while one cannot be connected to (refused, no route, no usable source address,
    /// the family not supported, the network down, no answer to the connect: nothing was sent;
    /// `LiveHTTPClient.connectFailure`), as long as `deadline` leaves time. A name with several addresses
    /// stays reachable while one of them is down. Only the last address gets AsyncHTTPClient's retries of a
    /// failed connect (until the deadline): with them, the first address took the whole timeout.
    func send(_ request: OutboundRequest, pinnedTo checked: CheckedAddress, deadline: ContinuousClock.Instant)
        async throws -> OutboundResponse
    {
        guard !checked.sentAsIs else { return try await inner.execute(request) }
        do {
            var failed: [String] = []
            for (index, address) in checked.addresses.enumerated() {
                guard failed.isEmpty || ContinuousClock.now < deadline else { break }
                do {
                    return try await send(
                        request, to: address, of: checked, retryConnecting: index == checked.addresses.count - 1)
                } catch let error as OutboundHTTPError where error.notConnected {
                    failed.append("\(Self.text(address)): \(error.message)")
                }
            }
            throw OutboundHTTPError(
                "cannot connect to \(checked.host) (\(failed.joined(separator: "; ")))", notConnected: true)
        } catch let error as OutboundHTTPError where error.notConnected || error.timedOut {
            // The name is looked up again by the next call: it may point elsewhere now. Also after a timeout:
            // the HTTP library reports a last address that never connected before the deadline as one (on a
            // busy machine, one that refused every try), and a call that timed out after all costs the next
            // one a lookup, no more.
            if let lookup = checked.lookup { lookups.forget(checked.host, lookup: lookup) }
            throw error
        }
    }

    /// One try of `send(_:pinnedTo:deadline:)`: to `address`, with the name in `Host` (HTTP) or in SNI and the
    /// certificate check (HTTPS).
    private func send(
        _ request: OutboundRequest, to address: [UInt8], of checked: CheckedAddress, retryConnecting: Bool
    ) async throws -> OutboundResponse {
        if checked.scheme == "https" {
            return try await pinned.execute(
                request, host: checked.host, address: Self.text(address), retryConnecting: retryConnecting)
        }
        var outgoing = request
        outgoing.url = try checked.url(request.url, at: address)
        if !outgoing.headers.contains(where: { $0.name.lowercased() == "host" }) {
            outgoing.headers.append(.init(name: "Host", value: checked.hostHeader))
        }
        return try await (retryConnecting ? inner : failingFast).execute(outgoing)
    }

    /// A host that passed the internal-network check, with the addresses requests to it are sent to.
    struct CheckedAddress {
        var scheme: String
        var host: String
        var port: Int?
        /// Every address the name resolved to (all checked), in the order they are tried: IPv4 first, each
        /// family in the resolver's order. The address itself for a URL naming one; empty for `unrestricted()`.
        var addresses: [[UInt8]]
        /// The request's URL, parsed.
        var components: URLComponents
        /// Which of `HostLookups`' lookups gave `addresses`; nil when no lookup was made (see `sentAsIs`).
        var lookup: UInt64? = nil
        /// The URL is sent as it is: it names an address already (no DNS involved), or the client is
        /// `unrestricted()`. Only addresses a lookup gave need pinning.
        var sentAsIs: Bool { lookup == nil }
        /// `name[:port]` for the `Host` header.
        var hostHeader: String { port.map { "\(host):\($0)" } ?? host }

        /// `url` (the request's, which `components` parsed) with the host replaced by `address`. Only a
        /// plain-HTTP request to a name needs it, so only that one pays for the rewrite.
        func url(_ url: String, at address: [UInt8]) throws -> String {
            var rewritten = components
            rewritten.percentEncodedHost =
                address.count == 4 ? GuardedHTTPClient.text(address) : "[\(GuardedHTTPClient.text(address))]"
            // Never fall back to the name: a URL that cannot be pinned is not sent (it would be resolved again).
            guard let pinned = rewritten.string else {
                throw OutboundHTTPError("cannot send \(url) to the checked address", permanent: true)
            }
            return pinned
        }
    }

    /// Resolves the URL's host (unless it is an address), refuses it when any address it resolves to is
    /// internal and not allowed, and returns the addresses to connect to. Resolution ends by `deadline`;
    /// `timeout` is the whole call's, for the message.
    func check(_ url: String, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> CheckedAddress {
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw OutboundHTTPError("no host in \(url)", permanent: true)
        }
        // Rules may only name http:// and https:// URLs, but a redirect may name any scheme, and AsyncHTTPClient
        // also speaks `unix`, `http+unix` and `https+unix`: a Unix socket on this machine, whatever the host.
        guard let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw OutboundHTTPError("refused: \"\(url)\" is not an http:// or https:// URL", permanent: true)
        }
        // The URL parser takes any digits for a port; NIO stops the process on one past 65535 when it makes the
        // socket address, and a redirect's Location is the upstream's to choose.
        if let port = components.port, !(1...65_535).contains(port) {
            throw OutboundHTTPError("refused: \"\(url)\" has port \(port) (a port is 1-65535)", permanent: true)
        }
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        guard restricted else {
            return CheckedAddress(
                scheme: scheme, host: bare, port: components.port, addresses: [], components: components)
        }
        let addresses: [[UInt8]]
        var lookup: UInt64?
        if let literal = CIDR.parseAddress(bare) {
            addresses = [literal]
        } else {
            // Not waited for past the deadline: a running getaddrinfo cannot be stopped, and with an unanswering
            // DNS server it blocks for the system resolver's own timeouts (5 s a try, several tries and servers).
            // The lookup is shared (`HostLookups`): during a DNS outage a name has one lookup running, whatever
            // the number of calls waiting for it; a call that gives up leaves it to the others, and when the
            // last one gives up the lookup is cancelled (one still queued for NIO's thread pool, a thread per
            // core, never starts), so stuck lookups do not pile up. (A task group, as until the thirty-fourth
            // session, waits for every child before it returns: the call waited for getaddrinfo whatever its
            // timeout said.)
            let answer = try await lookups.addresses(
                of: bare, within: max(.zero, deadline - .now),
                expired: { OutboundHTTPError("timed out after \(timeout) resolving \(bare)", timedOut: true) })
            addresses = answer.addresses
            lookup = answer.lookup
        }
        guard !addresses.isEmpty else { throw OutboundHTTPError("\(bare) did not resolve") }
        for address in addresses where CIDR.internalNetworks.contains(where: { $0.contains(address) }) {
            if !allowed.contains(where: { $0.contains(address) }) {
                throw OutboundHTTPError(
                    "refused: \(bare) is an internal address (\(Self.text(address))); allow it with --allow-http-to",
                    permanent: true)
            }
        }
        var order: [[UInt8]] = []  // IPv4 first; an address listed twice is tried once
        for address in addresses.filter({ $0.count == 4 }) + addresses.filter({ $0.count != 4 })
        where !order.contains(address) {
            order.append(address)
        }
        return CheckedAddress(
            scheme: scheme, host: bare, port: components.port, addresses: order, components: components,
            lookup: lookup)
    }

    static func text(_ address: [UInt8]) -> String {
        address.count == 4
            ? address.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map {
                String(UInt16(address[$0]) << 8 | UInt16(address[$0 + 1]), radix: 16)
            }
            .joined(separator: ":")
    }

    /// getaddrinfo on NIO's blocking-I/O thread pool, so no cooperative thread blocks.
    @Sendable public static func resolve(_ host: String) async throws -> [[UInt8]] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>? = nil
            let status = getaddrinfo(host, nil, &hints, &result)
            guard status == 0 else {
                throw OutboundHTTPError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(result) }
            var out: [[UInt8]] = []
            var cursor = result
            while let info = cursor {
                if info.pointee.ai_family == AF_INET, let sa = info.pointee.ai_addr {
                    sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                        var a = p.pointee.sin_addr
                        out.append(withUnsafeBytes(of: &a) { Array($0) })
                    }
                } else if info.pointee.ai_family == AF_INET6, let sa = info.pointee.ai_addr {
                    sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                        var a = p.pointee.sin6_addr
                        out.append(withUnsafeBytes(of: &a) { Array($0) })
                    }
                }
                cursor = info.pointee.ai_next
            }
            return out
        }
    }
}

/// HTTPS clients, each pinned to one checked address (AsyncHTTPClient's DNS override is a client setting,
/// not a request's), kept while in use and closed once more than `maxClients` exist and they are idle.
final class PinnedClients: Sendable {
    struct Entry {
        let client: LiveHTTPClient
        var inUse = 0
        var lastUsed = ContinuousClock.now
    }
    struct State {
        var entries: [String: Entry] = [:]
        /// Set by `shutdown`: no client is made after it.
        var closed = false
    }
    let state = Mutex(State())
    let maxConnectionsPerHost: Int
    let maxClients = 32

    init(maxConnectionsPerHost: Int) { self.maxConnectionsPerHost = maxConnectionsPerHost }

    /// Sends to `host` over a connection to `address`; TLS still names and verifies `host`. `retryConnecting`:
    /// see `LiveHTTPClient.init`.
    func execute(_ request: OutboundRequest, host: String, address: String, retryConnecting: Bool) async throws
        -> OutboundResponse
    {
        let key = host + " " + address + (retryConnecting ? "" : " fast")
        let made = state.withLock { s -> (LiveHTTPClient, [LiveHTTPClient])? in
            if s.closed { return nil }
            if s.entries[key] == nil {
                // AsyncHTTPClient looks the override up by the URL's host as it parsed it: give both spellings.
                // Not as one dictionary literal: for a host already in lower case its two keys are the same, and
                // a literal with a repeated key stops the process.
                var override = [host: address]
                override[host.lowercased()] = address
                let client = LiveHTTPClient(
                    followRedirects: false, maxConnectionsPerHost: maxConnectionsPerHost, dnsOverride: override,
                    retryConnecting: retryConnecting,
                    connectTimeout: retryConnecting
                        ? LiveHTTPClient.defaultConnectTimeout : GuardedHTTPClient.fastTLSConnectTimeout)
                s.entries[key] = Entry(client: client)
            }
            s.entries[key]!.inUse += 1
            var evicted: [LiveHTTPClient] = []
            if s.entries.count > maxClients {
                let idle = s.entries.filter { $0.value.inUse == 0 }.sorted { $0.value.lastUsed < $1.value.lastUsed }
                for (name, entry) in idle.prefix(s.entries.count - maxClients) {
                    s.entries[name] = nil
                    evicted.append(entry.client)
                }
            }
            return (s.entries[key]!.client, evicted)
        }
        guard let (client, evicted) = made else { throw OutboundHTTPError("shutting down: not sent") }
        // Idle clients: nothing waits on their shutdown, and no request can reach them any more.
        for old in evicted { Task { try? await old.shutdown() } }
        defer {
            state.withLock { s in
                s.entries[key]?.inUse -= 1
                s.entries[key]?.lastUsed = .now
            }
        }
        return try await client.execute(request)
    }

    func shutdown() async {
        let all = state.withLock { s -> [LiveHTTPClient] in
            s.closed = true
            defer { s.entries = [:] }
            return s.entries.values.map(\.client)
        }
        for client in all { try? await client.shutdown() }
    }
}
