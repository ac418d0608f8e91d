/// What the engine asks of durable storage. The EventStore target implements it (SQLite today); the engine
/// itself knows no database. Accepted events are appended by the server before its 200; the engine marks
/// each done, with its rules' forwards, when its rules finish, and runs unfinished ones again at start.
public protocol EventJournaling: Sendable {
    /// Writes the event durably; returns once it is committed.
    func append(_ event: AcceptedEvent) async throws
    /// These events' rules have finished: mark them done, queue their forwards for delivery and apply their
    /// store writes, all of `marks` in one transaction, after every batch given before. Returns at once; the
    /// write is batched and may be lost in a crash (the events then run again, from the stored state).
    func markDone(_ marks: [DoneMark])
    /// Events accepted but never marked done, oldest first.
    func unfinished() async throws -> [AcceptedEvent]
    /// The rule store as committed when the journal was opened (`RuleStore` loads it at start).
    func storeRecords() throws -> [StoreRecord]
    /// Waits (up to `limit`) until every queued write is committed.
    func drain(limit: Duration) async
    /// Whether done marks should carry an `EventRecord` (what the rules did, for the console).
    var keepsEventRecords: Bool { get }
}

extension EventJournaling {
    public var keepsEventRecords: Bool { false }

    /// Marks one event done with its forwards and no store writes.
    public func markDone(_ id: String, forwards: [NewDelivery] = []) {
        markDone([DoneMark(id: id, forwards: forwards)])
    }
}

/// One accepted request, as needed to decode it again.
public struct AcceptedEvent: Sendable {
    public var id: String
    public var receivedAt: Double
    public var hook: String?
    public var format: String
    public var body: [UInt8]
    /// `event.meta` as JSON text.
    public var meta: String

    public init(id: String, receivedAt: Double, hook: String?, format: String, body: [UInt8], meta: String) {
        self.id = id
        self.receivedAt = receivedAt
        self.hook = hook
        self.format = format
        self.body = body
        self.meta = meta
    }
}

/// A forward waiting to enter the outbox: what a rule asked to send.
public struct NewDelivery: Sendable, Hashable {
    public var rule: String
    public var method: String
    public var url: String
    public var headers: [OutboundRequest.Header]
    public var body: [UInt8]

    public init(rule: String, method: String, url: String, headers: [OutboundRequest.Header], body: [UInt8]) {
        self.rule = rule
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}
