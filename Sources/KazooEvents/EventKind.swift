/// The family an event belongs to. Kazoo adds events over time, so anything unrecognised is `unknown`,
/// never an error.
public struct EventKind: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// `channel_create`, `channel_answer`, `channel_bridge`, `channel_destroy` (one hook each).
    public static let channel = EventKind(rawValue: "channel")
    /// The `notifications` hook: one of the 39 types, by `event_name`.
    public static let notification = EventKind(rawValue: "notification")
    /// The `object` hook: a document created, edited or deleted.
    public static let object = EventKind(rawValue: "object")
    /// The `parking` hook: `PARK_PARKED`, `PARK_RETRIEVED`, `PARK_ABANDONED`.
    public static let parking = EventKind(rawValue: "parking")
    /// The `sms` hook (Kazoo 4.3+): an inbound offnet text message.
    public static let sms = EventKind(rawValue: "sms")
    /// The `mms` hook (Kazoo 4.3+).
    public static let mms = EventKind(rawValue: "mms")
    /// The callflow `webhook` action: the call record plus custom_data; nothing in it names the event.
    public static let webhook = EventKind(rawValue: "webhook")
    /// An event this version does not know; all its fields are kept as they came.
    public static let unknown = EventKind(rawValue: "unknown")

    public static let all: [EventKind] = [.channel, .notification, .object, .parking, .sms, .mms, .webhook, .unknown]

    public var description: String { rawValue }
    public static func < (lhs: EventKind, rhs: EventKind) -> Bool { lhs.rawValue < rhs.rawValue }
}
