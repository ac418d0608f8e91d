import RuleEngine
import Synchronization

/// The guarded client's lookups of host names, shared and kept for a while. Calls to one name at the same
/// time wait for one lookup, and its addresses serve the calls that follow for `lifetime`. Without it every
/// rule call to a name ran its own getaddrinfo on NIO's thread pool (a thread per core): 1,000 events calling
/// one CRM made 1,000 lookups, queued behind a DNS server's round trips.
///
/// getaddrinfo gives no TTL, so an answer is kept for a fixed time (`GuardedHTTPClient.lookupLifetime`). A
/// failed or empty lookup is not kept (the next call looks again), and `forget` drops an answer none of whose
/// addresses could be connected to, or whose call timed out (the host may have moved). A lookup whose every
/// caller has given up (its time ran out, or it was cancelled) is cancelled and forgotten: one still queued
/// for NIO's thread pool never starts, so during a DNS outage lookups do not pile up behind the stuck ones,
/// and one that hangs holds the name only while someone waits for it; the next call starts afresh.
package final class HostLookups: Sendable {
    /// A name's answer as one call sees it: the addresses, and which lookup gave them (for `forget`).
    package struct Answer: Sendable {
        package var addresses: [[UInt8]]
        package var lookup: UInt64
    }

    private struct Entry {
        let lookup: Task<[[UInt8]], any Error>
        let id: UInt64
        /// Calls waiting for the lookup while it runs.
        var waiting = 0
        /// The addresses and when they stop serving; nil while the lookup runs.
        var kept: (addresses: [[UInt8]], until: ContinuousClock.Instant)?
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var lastID: UInt64 = 0
    }
    private let state = Mutex(State())
    private let resolver: GuardedHTTPClient.Resolver
    private let lifetime: Duration
    /// Names kept at most (a rule may build URLs from event data); past it the stale answers go first, then
    /// every kept one. A lookup someone waits for is never dropped.
    package static let maxNames = 1024

    package init(lifetime: Duration, resolver: @escaping GuardedHTTPClient.Resolver) {
        self.lifetime = lifetime
        self.resolver = resolver
    }

    /// `host`'s addresses: a kept answer at once, else the running lookup's or a new one's, waited for at most
    /// `limit` (then `expired()`'s error). Names are compared, and looked up, with ASCII letters in lower case.
    package func addresses(
        of host: String, within limit: Duration, expired: @escaping @Sendable () -> any Error
    ) async throws -> Answer {
        try Task.checkCancellation()
        // No time left: not even a kept answer (the call could not be sent), and no lookup started.
        guard limit > .zero else { throw expired() }
        let key = Self.key(host)
        let now = ContinuousClock.now
        enum Found {
            case kept(Answer)
            case running(Task<[[UInt8]], any Error>, UInt64)
        }
        let found = state.withLock { state -> Found in
            if let entry = state.entries[key] {
                if let kept = entry.kept {
                    if now < kept.until { return .kept(Answer(addresses: kept.addresses, lookup: entry.id)) }
                } else {
                    state.entries[key]?.waiting += 1
                    return .running(entry.lookup, entry.id)
                }
            }
            if state.entries.count >= Self.maxNames { Self.prune(&state.entries, now: now) }
            state.lastID &+= 1
            let id = state.lastID
            // Only queued here; `ended` takes this lock, so it finds the entry in place.
            let lookup = Task { [resolver] in
                do {
                    let addresses = try await resolver(key)
                    self.ended(key, id: id, addresses: addresses)
                    return addresses
                } catch {
                    self.ended(key, id: id, addresses: [])
                    throw error
                }
            }
            state.entries[key] = Entry(lookup: lookup, id: id, waiting: 1)
            return .running(lookup, id)
        }
        switch found {
        case .kept(let answer):
            return answer
        case .running(let lookup, let id):
            do {
                let addresses = try await Deadline.run(limit, cancelling: true, expired: expired) {
                    try await lookup.value
                }
                // (`ended` has kept or dropped the entry by now: nothing to count down.)
                return Answer(addresses: addresses, lookup: id)
            } catch {
                gaveUp(key, id: id)
                throw error
            }
        }
    }

    /// Drops the answer `lookup` gave for `host`, so the next call looks the name up again. A newer answer, or
    /// a lookup still running, is left alone.
    package func forget(_ host: String, lookup: UInt64) {
        let key = Self.key(host)
        state.withLock { state in
            if let entry = state.entries[key], entry.id == lookup, entry.kept != nil { state.entries[key] = nil }
        }
    }

    /// How many names have a lookup running or an answer kept (for tests).
    package var count: Int { state.withLock { $0.entries.count } }

    /// How many calls wait for `host`'s running lookup (for tests).
    package func waiting(for host: String) -> Int {
        state.withLock { $0.entries[Self.key(host)].map { $0.kept == nil ? $0.waiting : 0 } ?? 0 }
    }

    private func ended(_ key: String, id: UInt64, addresses: [[UInt8]]) {
        let now = ContinuousClock.now
        state.withLock { state in
            // Its callers gave up and it was forgotten; a newer lookup may hold the name now.
            guard state.entries[key]?.id == id else { return }
            if !addresses.isEmpty && lifetime > .zero {
                state.entries[key]?.kept = (addresses, now + lifetime)
                state.entries[key]?.waiting = 0
            } else {
                state.entries[key] = nil
            }
        }
    }

    /// One caller of lookup `id` gave up (its time ran out, or it was cancelled). When the last of them has, on
    /// a lookup still running, the lookup is cancelled (one still queued for a thread never starts) and the
    /// name forgotten.
    private func gaveUp(_ key: String, id: UInt64) {
        let abandoned = state.withLock { state -> Task<[[UInt8]], any Error>? in
            guard let entry = state.entries[key], entry.id == id, entry.kept == nil else { return nil }
            state.entries[key]?.waiting -= 1
            guard entry.waiting == 1 else { return nil }
            state.entries[key] = nil
            return entry.lookup
        }
        abandoned?.cancel()
    }

    private static func prune(_ entries: inout [String: Entry], now: ContinuousClock.Instant) {
        entries = entries.filter { $0.value.kept.map { now < $0.until } ?? true }
        if entries.count >= maxNames { entries = entries.filter { $0.value.kept == nil } }
    }

    /// `host` with its ASCII letters in lower case (DNS compares names so; a Unicode lower-casing could make
    /// two different names one).
    private static func key(_ host: String) -> String {
        String(decoding: host.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
