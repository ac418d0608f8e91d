public import JSONCore
public import RuleEngine

/// Everything the server, the console and the admin API ask of durable storage, whichever database keeps it:
/// SQLite (`EventJournal`, one node, the default) or PostgreSQL (`PostgresJournal` in ClusterStore, several
/// nodes sharing one database). Reads are `async` because PostgreSQL's are; SQLite's synchronous methods
/// satisfy them as they are.
public protocol Journal: EventJournaling, DeliveryQueue {
    /// Where it is, for messages: the SQLite file's path, or the PostgreSQL URL without its password.
    var location: String { get }
    /// True when the HTTP handler hands each accepted event to this node's engine itself (one node). False
    /// when accepted events are read back from the database by the node that holds the processing lease.
    var runsEventsOnAccept: Bool { get }

    /// Writes the event durably unless `duplicateKey` was seen within `window` seconds (then nothing is
    /// written). Returns false for such a repeat. One node keeps the keys in memory (the server's
    /// `Deduplicator`); several nodes share them in the database.
    func append(_ event: AcceptedEvent, duplicateKey: String?, window: Double) async throws -> Bool

    /// The same append, answered through `completion` (called once, on any thread) instead of by suspending:
    /// the HTTP handler calls it from its event loop, which must not wait. `completion` may run on the
    /// journal's own writer (SQLite's calls it from the database's writer queue, right after the commit): it
    /// must hand work on and return, and never wait on the journal itself.
    func append(
        _ event: AcceptedEvent, duplicateKey: String?, window: Double,
        completion: @escaping @Sendable (Result<Bool, any Error>) -> Void)

    func deliveries(_ filter: DeliveryFilter, limit: Int) async throws -> [Delivery]
    func delivery(_ id: Int64) async throws -> Delivery?
    func attempts(_ id: Int64) async throws -> [DeliveryAttempt]
    func redeliver(_ ids: [Int64]) async throws -> [Int64]
    func redeliverDead() async throws -> [Int64]

    func recentEvents(limit: Int, before: Int64?, name: String?, callID: String?, accountID: String?)
        async throws -> [StoredEvent]
    func storedEvent(_ id: String) async throws -> StoredEvent?
    func callEvents(_ callIDs: [String], limit: Int) async throws -> [StoredEvent]
    func deliveries(forEvent id: String) async throws -> [Delivery]

    /// The nodes sharing this storage, live ones first (empty for one node's SQLite file).
    func nodes() async throws -> [NodeStatus]

    /// Keeps a copy of a rejected request (`meta`: its JSON description) where every node lists it. Returns
    /// at once; the node's own `RejectedStore` files keep the request whatever happens here.
    func shareRejected(meta: String, body: [UInt8])
    /// Every node's rejected requests, newest first, each description with a `node` key; nil when this storage
    /// keeps none (one node: its files are the list).
    func sharedRejected(limit: Int) async throws -> [(meta: String, body: [UInt8])]?
}

extension Journal {
    public var runsEventsOnAccept: Bool { true }

    public func append(_ event: AcceptedEvent, duplicateKey: String?, window: Double) async throws -> Bool {
        try await append(event)
        return true
    }

    /// A task per append; a journal with a queue of its own answers from it instead (`EventJournal`).
    public func append(
        _ event: AcceptedEvent, duplicateKey: String?, window: Double,
        completion: @escaping @Sendable (Result<Bool, any Error>) -> Void
    ) {
        Task {
            do {
                completion(.success(try await append(event, duplicateKey: duplicateKey, window: window)))
            } catch {
                completion(.failure(error))
            }
        }
    }

    public func nodes() async throws -> [NodeStatus] { [] }
    public func shareRejected(meta: String, body: [UInt8]) {}
    public func sharedRejected(limit: Int) async throws -> [(meta: String, body: [UInt8])]? { nil }
}

/// One node of a cluster as its heartbeat describes it.
public struct NodeStatus: Sendable, Hashable {
    public var name: String
    public var version: String
    /// A hash of the node's rule files (names and contents): nodes with different rules differ here.
    public var rulesHash: String
    /// Events and forwards the node holds unfinished.
    public var inFlight: Int
    /// Events accepted while the database was unreachable, waiting in the node's local spool.
    public var spooled: Int
    /// True for the node that holds the processing lease.
    public var processing: Bool
    public var startedAt: Double
    public var heartbeatAt: Double
    /// Whether the heartbeat is recent (within the lease).
    public var live: Bool

    public init(
        name: String, version: String, rulesHash: String, inFlight: Int, spooled: Int, processing: Bool,
        startedAt: Double, heartbeatAt: Double, live: Bool
    ) {
        self.name = name
        self.version = version
        self.rulesHash = rulesHash
        self.inFlight = inFlight
        self.spooled = spooled
        self.processing = processing
        self.startedAt = startedAt
        self.heartbeatAt = heartbeatAt
        self.live = live
    }
}

extension NodeStatus {
    /// As `/readyz`, the console's Health page and `switchboard nodes --json` show it.
    public var json: JSONValue {
        [
            "name": .string(name), "version": .string(version), "rules_hash": .string(rulesHash),
            "events_in_flight": .int(Int64(inFlight)), "spooled": .int(Int64(spooled)),
            "processing": .bool(processing), "started_at": .double(startedAt), "heartbeat_at": .double(heartbeatAt),
            "live": .bool(live),
        ]
    }
}

extension EventJournal: Journal {
    public var location: String { path }
}

extension Journal {
    /// Deliveries as the admin API and the console show them, each with its attempt log.
    public func json(_ deliveries: [Delivery]) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        for delivery in deliveries { out.append(delivery.json(attempts: try await attempts(delivery.id))) }
        return out
    }
}
