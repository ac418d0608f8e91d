public import Foundation
public import JSONCore
import Synchronization

/// One key of the rule store as durable storage keeps it.
public struct StoreRecord: Sendable, Equatable {
    /// `rule:<name>`, `shared` or `call:<call_id>`.
    public var namespace: String
    public var key: String
    /// nil: the key was deleted.
    public var value: JSONValue?
    /// Unix time after which the key reads as absent.
    public var expiresAt: Double?
    /// The order of writes: larger is later. Durable storage keeps a key's write only if its `seq` is larger
    /// than the stored one, so applying the same writes twice, or two batches out of order, is harmless.
    public var seq: Int64

    public init(namespace: String, key: String, value: JSONValue?, expiresAt: Double?, seq: Int64) {
        self.namespace = namespace
        self.key = key
        self.value = value
        self.expiresAt = expiresAt
        self.seq = seq
    }
}

/// How big the store may grow; past a limit the call fails with a message saying which.
public struct StoreLimits: Sendable, Equatable {
    public var maxKeyBytes = 256
    public var maxValueBytes = 64 * 1024
    public var maxKeysPerNamespace = 10_000
    /// Occurrences `store.count` keeps for one key within its window.
    public var maxOccurrences = 10_000
    public init() {}
}

/// What marks an accepted event done: its forwards and its rules' store writes, committed in one
/// transaction, so each event's effects land exactly once.
///
/// A value, kept in a box shared by its copies until one of them changes (copy on write): a mark passes through
/// several hands on its way to the journal (the engine, the store's session and its queue, the journal's
/// queue), and each copy of its parts apart retained its id, its lists and the five strings of its record, 40
/// retains and as many releases an event.
public struct DoneMark: Sendable {
    public var id: String {
        get { storage.id }
        set { unique().id = newValue }
    }
    public var forwards: [NewDelivery] {
        get { storage.forwards }
        set { unique().forwards = newValue }
    }
    public var writes: [StoreRecord] {
        get { storage.writes }
        set { unique().writes = newValue }
    }
    /// What the rules did, kept with the event for the console (nil for ticks and when not kept).
    public var record: EventRecord? {
        get { storage.record }
        set { unique().record = newValue }
    }
    private var storage: Storage

    public init(id: String, forwards: [NewDelivery], writes: [StoreRecord] = [], record: EventRecord? = nil) {
        storage = Storage(id: id, forwards: forwards, writes: writes, record: record)
    }

    /// The box, made this mark's own first when another mark shares it.
    private mutating func unique() -> Storage {
        if !isKnownUniquelyReferenced(&storage) {
            storage = Storage(
                id: storage.id, forwards: storage.forwards, writes: storage.writes, record: storage.record)
        }
        return storage
    }

    /// Why `@unchecked Sendable` is safe: a box is changed only through `unique()`, by the one mark holding it;
    /// a box two marks (and so possibly two threads) share is only read.
    private final class Storage: @unchecked Sendable {
        var id: String
        var forwards: [NewDelivery]
        var writes: [StoreRecord]
        var record: EventRecord?

        init(id: String, forwards: [NewDelivery], writes: [StoreRecord], record: EventRecord?) {
            self.id = id
            self.forwards = forwards
            self.writes = writes
            self.record = record
        }
    }
}

/// The rule store: what `store.*` and `call.*` read and write. Every worker shares this one object.
///
/// **The guarantee.** Each accepted event's writes are committed in the same transaction as its done mark
/// (`DoneMark`), so after a crash the event runs again from the committed state and its effects land once.
///
/// **How.** The values live here in memory, loaded from durable storage at start; a call reads and writes
/// them at once under one lock, so concurrent `incr`s never lose an update and `add` is a true
/// test-and-set. A run that reads or writes a key another *uncommitted* run wrote depends on that run:
/// it is committed in the same batch or a later one, never before (`finish`), so durable storage never
/// holds an effect built on one it does not hold. Runs that depend on each other both ways are committed
/// together, in one batch. A run cut at shutdown is never committed, nor is anything that depends on it:
/// all of them run again at the next start.
public final class RuleStore: Sendable {
    public let limits: StoreLimits
    public let clock: @Sendable () -> Double
    let state: Mutex<State>

    struct Slot: Hashable {
        var namespace: String
        var key: String
    }

    struct Entry {
        /// nil: deleted by a run not yet committed (kept so later readers depend on it).
        var value: JSONValue?
        var expiresAt: Double?
        var seq: Int64
        /// The session that wrote it, while that session is not yet committed.
        var writer: Int?
    }

    struct Session {
        var writes: [Slot: StoreRecord] = [:]
        var dependsOn: Set<Int> = []
        var finished = false
        var mark: DoneMark?

        /// The done mark with the session's writes in the order they were made, as it is committed.
        var markWithWrites: DoneMark? {
            guard var mark else { return nil }
            mark.writes = writes.values.sorted { $0.seq < $1.seq }
            return mark
        }
    }

    struct State {
        var entries: [String: [String: Entry]] = [:]
        var sessions: [Int: Session] = [:]
        /// Finished sessions waiting for one they depend on.
        var waiting: Set<Int> = []
        var nextSession = 1
        var seq: Int64 = 0
        /// When a call's namespace ends (its channel_destroy plus the keep time): later writes expire then too.
        var namespaceEnds: [String: Double] = [:]
    }

    /// - Parameter records: what durable storage holds (expired ones are dropped).
    /// - Parameter clock: Unix time now (tests move it).
    public init(
        records: [StoreRecord] = [], limits: StoreLimits = StoreLimits(),
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.limits = limits
        self.clock = clock
        self.state = Mutex(Self.loaded(records, now: clock()))
    }

    static func loaded(_ records: [StoreRecord], now: Double) -> State {
        var state = State()
        for record in records {
            state.seq = max(state.seq, record.seq)
            guard let value = record.value, (record.expiresAt ?? .infinity) > now else { continue }
            state.entries[record.namespace, default: [:]][record.key] = Entry(
                value: value, expiresAt: record.expiresAt, seq: record.seq, writer: nil)
        }
        return state
    }

    /// Replaces every key with `records`, what the database holds now: when this node takes over processing
    /// from another node whose writes it never saw. Call it with no event running (no session open); the
    /// sequence never goes back, so later writes still win over every stored row.
    public func replace(records: [StoreRecord]) {
        let now = clock()
        state.withLock { s in
            let seq = s.seq
            let next = s.nextSession
            s = Self.loaded(records, now: now)
            s.seq = max(s.seq, seq)
            s.nextSession = next
        }
    }

    /// Starts the store work of one accepted event (all its rules). End it with `finish`.
    ///
    /// A session gets its record in `sessions` only when it first writes or reads another's uncommitted write:
    /// most events touch no store, and registering each (a dictionary insert here, a removal at `finish`) was
    /// about 900 instructions per event on the engine row.
    public func begin() -> StoreSession {
        let id = state.withLock { s -> Int in
            let id = s.nextSession
            s.nextSession += 1
            return id
        }
        return StoreSession(id: id, store: self)
    }

    /// The event's rules are done. Its done mark (with its writes) is handed to `commit` once every session
    /// it depends on has been handed over too; `commit` is called in commit order, under the store's lock, and
    /// must only queue (the journal's `markDone`). With `mark` nil the session is released without a mark
    /// (a dry run, a test).
    public func finish(
        _ session: StoreSession, mark: DoneMark?, commit: ([DoneMark]) -> Void
    ) {
        state.withLock { s in
            // Taken out, and put back only if it must wait. No record: the session neither wrote nor read an
            // uncommitted write (see `begin`).
            var finished = s.sessions.removeValue(forKey: session.id) ?? Session()
            finished.finished = true
            finished.mark = mark
            // The usual case: it read nothing uncommitted, so it goes now, alone, without a search for its
            // group; then any session that read its writes may be ready too.
            if finished.dependsOn.allSatisfy({ s.sessions[$0] == nil }) {
                if let ready = finished.markWithWrites { commit([ready]) }
                if !s.waiting.isEmpty { s.releaseReady(commit) }
                return
            }
            s.sessions[session.id] = finished
            s.waiting.insert(session.id)
            s.releaseReady(commit)
        }
    }

    /// Sessions not yet committed that wrote or read an uncommitted write (running, or waiting on one that is).
    public var uncommitted: Int { state.withLock { $0.sessions.count } }

    /// Removes expired keys from memory (durable storage is swept by retention).
    @discardableResult
    public func sweepExpired() -> Int {
        let now = clock()
        return state.withLock { s -> Int in
            var removed = 0
            for (namespace, keys) in s.entries {
                // An entry stays while its writer is uncommitted (later readers must still depend on it), or
                // while it holds a live value; committed deletions and expired values go.
                let kept = keys.filter { _, e in
                    e.writer.map { s.sessions[$0] != nil } == true
                        || (e.value != nil && (e.expiresAt ?? .infinity) > now)
                }
                removed += keys.count - kept.count
                s.entries[namespace] = kept.isEmpty ? nil : kept
            }
            s.namespaceEnds = s.namespaceEnds.filter { $0.value > now }
            return removed
        }
    }

    /// The live value of one key as it stands (committed or not), outside any run.
    public func value(_ namespace: String, _ key: String) -> JSONValue? {
        let now = clock()
        return state.withLock { s in
            guard let entry = s.entries[namespace]?[key], (entry.expiresAt ?? .infinity) > now else { return nil }
            return entry.value
        }
    }

    /// Every live key of a namespace (or all), for `switchboard store` and tests.
    public func records(namespace: String? = nil) -> [StoreRecord] {
        let now = clock()
        return state.withLock { s in
            s.entries.filter { namespace == nil || $0.key == namespace }.flatMap { ns, keys in
                keys.compactMap { key, e -> StoreRecord? in
                    guard let value = e.value, (e.expiresAt ?? .infinity) > now else { return nil }
                    return StoreRecord(namespace: ns, key: key, value: value, expiresAt: e.expiresAt, seq: e.seq)
                }
            }.sorted { ($0.namespace, $0.key) < ($1.namespace, $1.key) }
        }
    }
}

extension RuleStore.State {
    /// Hands over every waiting session whose dependencies are all finished, with those dependencies, as
    /// one batch; repeats until nothing more can go.
    mutating func releaseReady(_ commit: ([DoneMark]) -> Void) {
        var progress = true
        while progress {
            progress = false
            for id in waiting {
                guard let group = readyGroup(from: id) else { continue }
                var marks: [DoneMark] = []
                for member in group.sorted() {
                    guard let session = sessions.removeValue(forKey: member) else { continue }
                    waiting.remove(member)
                    if let mark = session.markWithWrites { marks.append(mark) }
                }
                if !marks.isEmpty { commit(marks) }
                progress = true
                break  // `waiting` changed
            }
        }
    }

    /// `id` and every uncommitted session it depends on (directly or not), if all have finished.
    func readyGroup(from id: Int) -> Set<Int>? {
        var group: Set<Int> = [id]
        var stack = [id]
        while let next = stack.popLast() {
            for dependency in sessions[next]?.dependsOn ?? [] where !group.contains(dependency) {
                guard let other = sessions[dependency] else { continue }  // already handed over
                guard other.finished else { return nil }
                group.insert(dependency)
                stack.append(dependency)
            }
        }
        return group
    }

    /// The entry at `slot` for `session`, noting the dependency on an uncommitted writer; nil when absent or
    /// expired.
    mutating func read(_ slot: RuleStore.Slot, by session: Int, now: Double) -> RuleStore.Entry? {
        guard let entry = entries[slot.namespace]?[slot.key] else { return nil }
        if let writer = entry.writer, writer != session {
            if sessions[writer] != nil {
                sessions[session, default: RuleStore.Session()].dependsOn.insert(writer)
            } else {
                entries[slot.namespace]?[slot.key]?.writer = nil  // committed since
                if entry.value == nil { entries[slot.namespace]?[slot.key] = nil }
            }
        }
        guard entry.value != nil, (entry.expiresAt ?? .infinity) > now else { return nil }
        return entry
    }

    /// Writes (or, with `value` nil, deletes) `slot` for `session`.
    mutating func write(_ slot: RuleStore.Slot, _ value: JSONValue?, expiresAt: Double?, by session: Int) {
        var expiresAt = expiresAt
        if let end = namespaceEnds[slot.namespace] { expiresAt = min(expiresAt ?? end, end) }
        seq += 1
        entries[slot.namespace, default: [:]][slot.key] = RuleStore.Entry(
            value: value, expiresAt: expiresAt, seq: seq, writer: session)
        sessions[session, default: RuleStore.Session()].writes[slot] = StoreRecord(
            namespace: slot.namespace, key: slot.key, value: value, expiresAt: expiresAt, seq: seq)
    }

    /// Throws when `namespace` already holds `limit` live keys; called before a write makes a new key. The
    /// live keys (not deleted, not expired) are counted only when the entries alone reach the limit, so a
    /// new key costs a scan of the namespace only near its limit.
    func ensureRoom(in namespace: String, limit: Int, now: Double) throws(StoreError) {
        guard let keys = entries[namespace], keys.count >= limit else { return }
        let live = keys.values.reduce(0) { n, e in n + (e.value != nil && (e.expiresAt ?? .infinity) > now ? 1 : 0) }
        if live >= limit { throw StoreSession.full(namespace, limit: limit) }
    }
}

/// The store work of one accepted event. Its functions are what `store.*` and `call.*` call; each is one
/// step under the store's lock, never a suspension.
public struct StoreSession: Sendable {
    public let id: Int
    public let store: RuleStore

    public func get(_ namespace: String, _ key: String) throws(StoreError) -> JSONValue? {
        try check(key: key)
        let now = store.clock()
        return store.state.withLock { s in s.read(.init(namespace: namespace, key: key), by: id, now: now)?.value }
    }

    /// Sets `key` (nil deletes). `ttl` in seconds; nil keeps no expiry.
    public func set(_ namespace: String, _ key: String, _ value: JSONValue?, ttl: Double? = nil)
        throws(StoreError)
    {
        try check(key: key)
        if let value { try check(value: value, key: key) }
        let now = store.clock()
        let limit = store.limits.maxKeysPerNamespace
        let slot = RuleStore.Slot(namespace: namespace, key: key)
        try store.state.withLock { s throws(StoreError) in
            let existing = s.read(slot, by: id, now: now)
            if value != nil, existing == nil { try s.ensureRoom(in: namespace, limit: limit, now: now) }
            s.write(slot, value, expiresAt: ttl.map { now + $0 }, by: id)
        }
    }

    /// Adds `by` to the number at `key` (absent counts as 0) and returns the new number.
    public func incr(_ namespace: String, _ key: String, by: JSONValue, ttl: Double? = nil) throws(StoreError)
        -> JSONValue
    {
        try check(key: key)
        let now = store.clock()
        let limit = store.limits.maxKeysPerNamespace
        let slot = RuleStore.Slot(namespace: namespace, key: key)
        return try store.state.withLock { s throws(StoreError) -> JSONValue in
            let existing = s.read(slot, by: id, now: now)
            let current = existing?.value ?? .int(0)
            let sum: JSONValue
            switch (current, by) {
            case (.int(let a), .int(let b)):
                let (r, overflow) = a.addingReportingOverflow(b)
                sum = overflow ? .double(Double(a) + Double(b)) : .int(r)
            case (.int, .double), (.double, .int), (.double, .double):
                sum = .double((current.doubleValue ?? 0) + (by.doubleValue ?? 0))
            default:
                throw StoreError("\"\(key)\" holds a \(current.typeName), not a number")
            }
            // JSON has no infinity or NaN: the journal could not commit the write, nor anything after it.
            if case .double(let d) = sum, !d.isFinite {
                throw StoreError("\"\(key)\" would become \(d): only finite numbers can be stored")
            }
            if existing == nil { try s.ensureRoom(in: namespace, limit: limit, now: now) }
            // An incr without a ttl keeps the key's expiry; with one, it sets it.
            s.write(slot, sum, expiresAt: ttl.map { now + $0 } ?? existing?.expiresAt, by: id)
            return sum
        }
    }

    /// Sets `key` only if it is absent; true if it did.
    public func add(_ namespace: String, _ key: String, _ value: JSONValue, ttl: Double? = nil) throws(StoreError)
        -> Bool
    {
        try check(key: key)
        try check(value: value, key: key)
        let now = store.clock()
        let limit = store.limits.maxKeysPerNamespace
        let slot = RuleStore.Slot(namespace: namespace, key: key)
        return try store.state.withLock { s throws(StoreError) -> Bool in
            guard s.read(slot, by: id, now: now) == nil else { return false }
            try s.ensureRoom(in: namespace, limit: limit, now: now)
            s.write(slot, value, expiresAt: ttl.map { now + $0 }, by: id)
            return true
        }
    }

    /// Records one occurrence now at `key` and returns how many fall within the last `window` seconds.
    public func count(_ namespace: String, _ key: String, window: Double) throws(StoreError) -> Int {
        try check(key: key)
        guard window > 0, window.isFinite else { throw StoreError("the window must be more than 0 seconds") }
        let now = store.clock()
        let limits = store.limits
        let slot = RuleStore.Slot(namespace: namespace, key: key)
        return try store.state.withLock { s throws(StoreError) -> Int in
            let existing = s.read(slot, by: id, now: now)
            guard existing == nil || existing?.value?.arrayValue != nil else {
                throw StoreError(
                    "\"\(key)\" holds a \(existing?.value?.typeName ?? "value") set by store.set, not occurrences")
            }
            var times = (existing?.value?.arrayValue ?? []).compactMap(\.doubleValue).filter { $0 > now - window }
            times.append(now)
            if times.count > limits.maxOccurrences { times.removeFirst(times.count - limits.maxOccurrences) }
            if existing == nil { try s.ensureRoom(in: namespace, limit: limits.maxKeysPerNamespace, now: now) }
            s.write(slot, .array(times.map(JSONValue.double)), expiresAt: now + window, by: id)
            return times.count
        }
    }

    /// Gives every key of `namespace` (a call's) the expiry `at`, and records when the namespace ends.
    public func expireNamespace(_ namespace: String, at: Double) {
        let now = store.clock()
        store.state.withLock { s in
            s.namespaceEnds[namespace] = min(s.namespaceEnds[namespace] ?? at, at)
            for key in Array((s.entries[namespace] ?? [:]).keys) {
                let slot = RuleStore.Slot(namespace: namespace, key: key)
                guard let entry = s.read(slot, by: id, now: now), let value = entry.value else { continue }
                if let current = entry.expiresAt, current <= at { continue }
                s.write(slot, value, expiresAt: at, by: id)
            }
        }
    }

    func check(key: String) throws(StoreError) {
        guard !key.isEmpty else { throw StoreError("keys must not be empty") }
        guard key.utf8.count <= store.limits.maxKeyBytes else {
            throw StoreError("a key of \(key.utf8.count) bytes is longer than \(store.limits.maxKeyBytes)")
        }
    }

    func check(value: JSONValue, key: String) throws(StoreError) {
        let size: Int
        do { size = try JSONWriter.byteCount(value) } catch {
            throw StoreError("the value for \"\(key)\" cannot be stored: \(error)")
        }
        guard size <= store.limits.maxValueBytes else {
            throw StoreError(
                "the value for \"\(key)\" is \(size) bytes as JSON, more than \(store.limits.maxValueBytes)")
        }
    }

    static func full(_ namespace: String, limit: Int) -> StoreError {
        StoreError("the store holds \(limit) keys for \(describe(namespace)) already: delete some, or give them a ttl")
    }

    static func describe(_ namespace: String) -> String {
        if namespace.hasPrefix("rule:") { return "rule \(namespace.dropFirst(5))" }
        if namespace.hasPrefix("call:") { return "call \(namespace.dropFirst(5))" }
        if namespace.hasPrefix("timer:") { return "the timer of rule \(namespace.dropFirst(6))" }
        return "store.shared"
    }
}

/// A store call that cannot be done; the message says why.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
