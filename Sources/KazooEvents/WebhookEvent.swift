public import JSONCore

/// One decoded Kazoo webhook: its kind and name, and every field as it came (known fields coerced to their
/// types). Typed accessors read the common fields; everything else stays in `fields`, including
/// custom_channel_vars with their Header-Case keys, custom_data keys merged at top level, and cluster_id.
public struct WebhookEvent: Sendable, Hashable {
    public var kind: EventKind
    /// `channel_create`, `low_balance`, `doc_edited`, `PARK_PARKED`, `sms`, `webhook`… For an unknown event,
    /// the name it carried (`hook_event` or `event_name`), or "unknown".
    public var name: String
    /// The hook that delivers this event (`channel_create`, `notifications`, `object`…), when known.
    public var hook: String?
    /// Every field, in arrival order.
    public var fields: JSONObject

    public init(kind: EventKind, name: String, hook: String?, fields: JSONObject) {
        self.kind = kind
        self.name = name
        self.hook = hook
        self.fields = fields
    }

    /// The catalog entry for this event, when it is a known one.
    public var spec: EventSpec? { EventCatalog.spec(kind: kind, name: name) }

    /// `channel_create`, `notifications.low_balance`, `object.doc_edited`, `parking.PARK_PARKED`…
    public var qualifiedName: String {
        if let spec { return spec.qualifiedName }
        if let hook, hook != name, hook != "all" { return "\(hook).\(name)" }
        return name
    }

    public subscript(field: String) -> JSONValue? { fields[field] }

    // MARK: Typed common fields

    public var accountID: String? { fields["account_id"]?.stringValue }
    public var callID: String? { Self.callID(in: fields) }
    /// The call id in an event's fields.
    public static func callID(in fields: JSONObject) -> String? { fields[Hints.callID]?.stringValue }

    /// The fields read on every event, each with the position it had in the last event (`KeyHint`).
    enum Hints {
        static let callID = KeyHint("call_id")
        static let hookEvent = KeyHint("hook_event")
        static let otherLeg = KeyHint("other_leg_call_id")
        /// `timeFields`, in their order.
        static let time = timeFields.map(KeyHint.init)
    }

    /// `other_leg_call_id`: the call this leg is bridged to, when there is one.
    public var otherLegCallID: String? { fields[Hints.otherLeg]?.stringValue }
    public var callDirection: String? { fields["call_direction"]?.stringValue }
    public var callerIDName: String? { fields["caller_id_name"]?.stringValue }
    public var callerIDNumber: String? { fields["caller_id_number"]?.stringValue }
    public var calleeIDName: String? { fields["callee_id_name"]?.stringValue }
    public var calleeIDNumber: String? { fields["callee_id_number"]?.stringValue }
    public var isInternalLeg: Bool? { fields["is_internal_leg"]?.boolValue }
    public var hangupCause: String? { fields["hangup_cause"]?.stringValue }
    public var durationSeconds: Int64? { fields["duration_seconds"]?.intValue }
    public var billingSeconds: Int64? { fields["billing_seconds"]?.intValue }
    public var ringingSeconds: Int64? { fields["ringing_seconds"]?.intValue }
    public var messageID: String? { fields["msg_id"]?.stringValue }
    public var clusterID: String? { fields["cluster_id"]?.stringValue }
    public var customChannelVars: JSONObject? { fields["custom_channel_vars"]?.objectValue }

    /// Fields that may carry the event's own time, in the order they are preferred.
    static let timeFields = ["timestamp", "event_timestamp", "voicemail_timestamp", "fax_timestamp"]

    /// When the event happened, in Gregorian seconds, from `timestamp` (or `event_timestamp`,
    /// `voicemail_timestamp`, `fax_timestamp`).
    public var gregorianTime: Int64? {
        let hints = Hints.time
        for i in hints.indices {
            if let t = fields[hints[i]]?.intValue {
                return t < EventCatalog.gregorianOffset ? t + EventCatalog.gregorianOffset : t
            }
        }
        return nil
    }

    /// The same instant as Unix seconds. A value below the Gregorian offset is taken as Unix time already.
    public var unixTime: Int64? { gregorianTime.map { $0 - EventCatalog.gregorianOffset } }

    /// Converts Gregorian seconds to Unix seconds.
    public static func unixTime(fromGregorian seconds: Int64) -> Int64 { seconds - EventCatalog.gregorianOffset }
    /// Converts Unix seconds to Gregorian seconds.
    public static func gregorian(fromUnix seconds: Int64) -> Int64 { seconds + EventCatalog.gregorianOffset }

    /// The typed common fields that are present, by their wire names, plus `unix_time`.
    public var typedFields: JSONObject {
        var out = JSONObject()
        let names = [
            "account_id", "call_id", "call_direction", "caller_id_name", "caller_id_number", "callee_id_name",
            "callee_id_number", "is_internal_leg", "hangup_cause", "duration_seconds", "billing_seconds",
            "ringing_seconds", "msg_id", "cluster_id",
        ]
        for name in names { if let v = fields[name] { out[name] = v } }
        if let g = gregorianTime {
            out["timestamp"] = .int(g)
            out["unix_time"] = .int(g - EventCatalog.gregorianOffset)
        }
        return out
    }
}
