import Foundation
import NIOCore
import NIOPosix
public import RuleEngine
import Synchronization

/// The HTTP client rules use in the server: refuses internal addresses (after DNS resolution, and again on
/// every redirect), caps how many rule HTTP calls are in flight overall and per rule, then sends with
/// AsyncHTTPClient.
public final class GuardedHTTPClient: OutboundHTTPClient {
    let inner: LiveHTTPClient
    let allowed: [CIDR]
    let global: AsyncSemaphore
    let perRuleLimit: Int
    let perRule = Mutex<[String: AsyncSemaphore]>([:])

    /// - Parameters:
    ///   - allowed: networks rules may reach even though they are internal (`--allow-http-to`).
    ///   - maxInFlight: rule HTTP calls in flight at once, overall. Default 2,000.
    ///   - maxInFlightPerRule: in flight at once for one rule. Default 1,000.
    public init(allowed: [CIDR], maxInFlight: Int = 2000, maxInFlightPerRule: Int = 1000) {
        self.inner = LiveHTTPClient(followRedirects: false, maxConnectionsPerHost: max(maxInFlight, 8))
        self.allowed = allowed
        self.global = AsyncSemaphore(maxInFlight)
        self.perRuleLimit = maxInFlightPerRule
    }

    public func shutdown() async throws { try await inner.shutdown() }

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

        var current = request
        for _ in 0...5 {
            try await check(current.url, timeout: current.timeout)
            let response = try await inner.execute(current)
            guard [301, 302, 303, 307, 308].contains(response.status),
                let location = response.headers.first(where: { $0.name.lowercased() == "location" })?.value,
                let next = URL(string: location, relativeTo: URL(string: current.url))?.absoluteString
            else { return response }
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

    /// Throws when the URL's host is, or resolves to, an internal address that is not allowed. Resolution
    /// counts against the request's timeout.
    func check(_ url: String, timeout: Duration) async throws {
        guard let host = URL(string: url)?.host, !host.isEmpty else {
            throw OutboundHTTPError("no host in \(url)", permanent: true)
        }
        let addresses: [[UInt8]]
        if let literal = CIDR.parseAddress(host) {
            addresses = [literal]
        } else {
            addresses = try await withThrowingTaskGroup(of: [[UInt8]].self) { group in
                group.addTask { try await Self.resolve(host) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw OutboundHTTPError("timed out after \(timeout) resolving \(host)")
                }
                defer { group.cancelAll() }
                return try await group.next() ?? []
            }
        }
        guard !addresses.isEmpty else { throw OutboundHTTPError("\(host) did not resolve") }
        for address in addresses where CIDR.internalNetworks.contains(where: { $0.contains(address) }) {
            if !allowed.contains(where: { $0.contains(address) }) {
                throw OutboundHTTPError(
                    "refused: \(host) is an internal address (\(Self.text(address))); allow it with --allow-http-to",
                    permanent: true)
            }
        }
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
    static func resolve(_ host: String) async throws -> [[UInt8]] {
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

/// A counting semaphore for tasks: `wait` suspends (never blocks a thread) until a slot is free.
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(available: count)) }

    func wait() async {
        let ready = state.withLock { s -> Bool in
            if s.available > 0 {
                s.available -= 1
                return true
            }
            return false
        }
        if ready { return }
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { s -> Bool in
                if s.available > 0 {
                    s.available -= 1
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst() }
            s.available += 1
            return nil
        }
        waiter?.resume()
    }
}
