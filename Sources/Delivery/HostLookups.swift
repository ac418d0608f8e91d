import Synchronization

/// The guarded client's lookups of host names, shared and kept for a while. Calls to one name at the same
/// time wait for one lookup, and its addresses serve the calls that follow for `lifetime`. Without it every
/// rule call to a name ran its own getaddrinfo on NIO's thread pool (a thread per core): 1,000 events calling
/// one CRM made 1,000 lookups, queued two at a time behind a DNS server's round trips.
///
/// getaddrinfo gives no TTL, so an answer is kept for a fixed time (`GuardedHTTPClient.lookupLifetime`). A
/// failed or empty lookup is not kept (the next call looks again), and `forget` drops an answer none of whose
/// addresses could be connected to (the host may have moved). A lookup runs to its end whoever still waits
/// for it: getaddrinfo cannot be stopped, and a late answer still serves the calls after it.
package final class HostLookups: Sendable {
    private struct Entry {
        let lookup: Task<[[UInt8]], any Error>
        let id: UInt64
        /// When the answer stops serving; nil while the lookup runs.
        var expires: ContinuousClock.Instant?
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var lastID: UInt64 = 0
    }
    private let state = Mutex(State())
    private let resolver: GuardedHTTPClient.Resolver
    private let lifetime: Duration
    /// Names kept at most (a rule may build URLs from event data); past it the stale answers go first, then
    /// every finished one. A running lookup is never dropped.
    package static let maxNames = 1024

    package init(lifetime: Duration, resolver: @escaping GuardedHTTPClient.Resolver) {
        self.lifetime = lifetime
        self.resolver = resolver
    }

    /// The lookup of `host` to wait for: the one running, a kept answer, or one started now. Names are compared
    /// without case.
    package func lookup(_ host: String) -> Task<[[UInt8]], any Error> {
        let key = host.lowercased()
        let now = ContinuousClock.now
        return state.withLock { state in
            if let entry = state.entries[key], entry.expires.map({ now < $0 }) ?? true { return entry.lookup }
            if state.entries.count >= Self.maxNames { Self.prune(&state.entries, now: now) }
            state.lastID &+= 1
            let id = state.lastID
            let lookup = Task { [resolver] in
                do {
                    let addresses = try await resolver(host)
                    self.ended(key, id: id, keep: !addresses.isEmpty)
                    return addresses
                } catch {
                    self.ended(key, id: id, keep: false)
                    throw error
                }
            }
            state.entries[key] = Entry(lookup: lookup, id: id, expires: nil)
            return lookup
        }
    }

    /// Drops the kept answer for `host`, so the next call looks the name up again. A lookup still running is
    /// left alone: its answer is newer than the one that failed.
    package func forget(_ host: String) {
        let key = host.lowercased()
        state.withLock { state in
            if state.entries[key]?.expires != nil { state.entries[key] = nil }
        }
    }

    /// How many names have a lookup running or an answer kept (for tests).
    package var count: Int { state.withLock { $0.entries.count } }

    private func ended(_ key: String, id: UInt64, keep: Bool) {
        let now = ContinuousClock.now
        state.withLock { state in
            // A newer lookup has taken the name's place (this one was forgotten or pruned meanwhile).
            guard state.entries[key]?.id == id else { return }
            if keep && lifetime > .zero {
                state.entries[key]?.expires = now + lifetime
            } else {
                state.entries[key] = nil
            }
        }
    }

    private static func prune(_ entries: inout [String: Entry], now: ContinuousClock.Instant) {
        entries = entries.filter { $0.value.expires.map { now < $0 } ?? true }
        if entries.count >= maxNames { entries = entries.filter { $0.value.expires == nil } }
    }
}
