public import JSONCore

/// How a webhook's payload was encoded on the wire (delivery.md §2).
public enum WireFormat: String, Sendable, CaseIterable {
    /// `application/json` (a `format: json` hook, 4.3+).
    case json
    /// `application/x-www-form-urlencoded` with Kazoo's bracket nesting (the default `form-data` format).
    case form
    /// A GET hook's query string (the part after `?`, or a whole URL).
    case query

    /// Picks the format from a Content-Type header, else from the bytes themselves.
    public static func detect(contentType: String?, body: some Collection<UInt8>) -> WireFormat {
        if let type = contentType {
            // Bytes, not `lowercased().contains`: that allocates and runs the generic string search on every
            // request (3% of the server's CPU in `perf`).
            if Self.contains(type.utf8, "json") { return .json }
            if Self.contains(type.utf8, "x-www-form-urlencoded") { return .form }
        }
        var bytes = body.drop(while: { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 })
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        guard let first = bytes.first else { return .json }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") { return .json }
        if first == UInt8(ascii: "?") || first == UInt8(ascii: "/") || bytes.starts(with: Array("http".utf8)) {
            return .query
        }
        if bytes.contains(UInt8(ascii: "=")) { return .form }
        return .json
    }

    /// Whether `text` holds `needle` (lowercase ASCII), ignoring ASCII case.
    static func contains(_ text: String.UTF8View, _ needle: StaticString) -> Bool {
        let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        func search(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
            guard text.count >= pattern.count else { return false }
            for start in 0...(text.count - pattern.count) {
                var i = 0
                while i < pattern.count {
                    let byte = text[start + i]
                    if (byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte) != pattern[i] { break }
                    i += 1
                }
                if i == pattern.count { return true }
            }
            return false
        }
        return text.withContiguousStorageIfAvailable(search) ?? Array(text).withUnsafeBufferPointer(search)
    }
}

/// Limits on what a request may contain. All have defaults and are configurable.
public struct DecodingLimits: Sendable, Hashable {
    /// Largest body (or query string) accepted, in bytes. Default 1 MiB.
    public var maxBodyBytes: Int
    /// Depth, key count and string length for the body's contents.
    public var json: JSONLimits

    public init(maxBodyBytes: Int = 1 << 20, json: JSONLimits = .default) {
        self.maxBodyBytes = maxBodyBytes
        self.json = json
    }

    public static let `default` = DecodingLimits()
}

/// Turns a webhook request's bytes into a `WebhookEvent`: any wire format, any known or unknown event.
///
/// Payloads are not always self-describing (the callflow webhook carries no event name, and notifications
/// have no `hook_event`), so `hook` — the hook the request was sent for, from its URL — is a hint. The
/// payload's own discriminators (`hook_event`, `event_category`/`event_name`, `action`+`type`, `PARK_*`)
/// win; the hint decides where the payload says nothing.
public struct EventDecoder: Sendable {
    public var limits: DecodingLimits
    /// `EventCatalog.index`, held: reaching a static through its lazy initializer's check on every event cost
    /// about 300 instructions each time.
    let catalog = EventCatalog.index

    public init(limits: DecodingLimits = .default) {
        self.limits = limits
    }

    /// Decodes a body in the given format.
    /// - Throws: `EventDecodingError` saying what is wrong and where.
    public func decode(_ body: [UInt8], format: WireFormat, hook: String? = nil) throws(EventDecodingError)
        -> WebhookEvent
    {
        if body.count > limits.maxBodyBytes {
            throw EventDecodingError.limit("body is \(body.count) bytes, over the limit of \(limits.maxBodyBytes)")
        }
        let fields: JSONObject
        switch format {
        case .json: fields = try decodeJSON(body)
        case .form: fields = try decodeForm(body[...])
        case .query: fields = try decodeForm(Self.queryPart(body))
        }
        return try makeEvent(fields: fields, hook: hook)
    }

    /// Decodes a body, detecting the format from the Content-Type (or the bytes).
    public func decode(_ body: [UInt8], contentType: String?, hook: String? = nil) throws(EventDecodingError)
        -> WebhookEvent
    {
        try decode(body, format: WireFormat.detect(contentType: contentType, body: body), hook: hook)
    }

    /// Identifies the event in already-parsed fields and coerces known fields to their types.
    /// `fields` is consumed: a caller that passes its last use of them lets coercion change them in place.
    public func makeEvent(fields: consuming JSONObject, hook: String? = nil) throws(EventDecodingError)
        -> WebhookEvent
    {
        let (kind, name, family) = Self.identify(fields, hook: Self.normalizeHook(hook))
        if let position = catalog.position(kind: kind, name: name) {
            try Coercion.coerce(&fields, spec: catalog.specs[position].lookup)
        }
        return WebhookEvent(kind: kind, name: name, hook: family, fields: fields)
    }

    // MARK: Formats

    private func decodeJSON(_ body: [UInt8]) throws(EventDecodingError) -> JSONObject {
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            throw EventDecodingError(.emptyBody, "the body is empty; expected a JSON object")
        }
        let value: JSONValue
        do {
            value = try body.withUnsafeBufferPointer { (p) throws(JSONError) -> JSONValue in
                try JSONReader.parse(buffer: p, limits: limits.json, keys: catalog.keys, sharedValues: true)
            }
        } catch {
            throw EventDecodingError(json: error)
        }
        guard case .object(let object) = value else {
            throw EventDecodingError(
                .notAnObject,
                "expected a JSON object at the top level, got \(value.typeName == "array" ? "an array" : "a \(value.typeName)")"
            )
        }
        return object
    }

    private func decodeForm(_ body: ArraySlice<UInt8>) throws(EventDecodingError) -> JSONObject {
        let object = try FormDecoder.decode(body, limits: limits.json, keys: catalog.keys)
        if object.isEmpty {
            throw EventDecodingError(.emptyBody, "the body has no fields; expected key=value pairs")
        }
        return object
    }

    /// The payload part of a GET request: everything after the first `?` of a URL or path; a bare query as is.
    static func queryPart(_ body: [UInt8]) -> ArraySlice<UInt8> {
        var bytes = body[...]
        while let last = bytes.last, last == 0x0A || last == 0x0D || last == 0x20 { bytes = bytes.dropLast() }
        if bytes.first == UInt8(ascii: "?") { return bytes.dropFirst() }
        if bytes.first == UInt8(ascii: "/") || bytes.starts(with: Array("http".utf8)) {
            if let q = bytes.firstIndex(of: UInt8(ascii: "?")) { return bytes[(q + 1)...] }
            return bytes[bytes.endIndex...]
        }
        return bytes
    }

    // MARK: Identification

    static func normalizeHook(_ hook: String?) -> String? {
        guard let hook, !hook.isEmpty else { return nil }
        switch hook.lowercased() {
        case "notification", "notifications": return "notifications"
        case "callflow": return "webhook"
        case let h where EventCatalog.channelNames.contains(h) || EventCatalog.hooks.contains(h): return h
        default: return hook
        }
    }

    /// Names the docs use that Kazoo does not send.
    static let notificationAliases = ["top_up": "topup"]

    /// Decides kind, name and hook family from the payload, then the hint.
    static func identify(_ f: JSONObject, hook: String?) -> (EventKind, String, String?) {
        if let inferred = inferFromPayload(f) { return inferred }
        switch hook {
        case let h? where EventCatalog.channelNames.contains(h): return (.channel, h, h)
        case "notifications": return (.unknown, f["event_name"]?.stringValue ?? "unknown", "notifications")
        case "object": return (.unknown, f["action"]?.stringValue ?? "unknown", "object")
        case "parking": return (.unknown, f["event_name"]?.stringValue ?? "unknown", "parking")
        case "sms": return (.sms, "sms", "sms")
        case "mms": return (.mms, "mms", "mms")
        case "webhook": return (.webhook, "webhook", "webhook")
        default: break
        }
        if looksLikeCallflowWebhook(f) { return (.webhook, "webhook", "webhook") }
        return (.unknown, "unknown", hook == "all" ? nil : hook)
    }

    /// What the payload says about itself, when it says anything definite.
    static func inferFromPayload(_ f: JSONObject) -> (EventKind, String, String?)? {
        if let hookEvent = f[WebhookEvent.Hints.hookEvent]?.stringValue {
            if EventCatalog.channelNames.contains(hookEvent) { return (.channel, hookEvent, hookEvent) }
            return (.unknown, hookEvent, hookEvent)
        }
        let eventName = f["event_name"]?.stringValue
        if f["event_category"]?.stringValue == "notification"
            || (eventName != nil && f["msg_id"] != nil && f["app_name"] != nil && !(eventName!.hasPrefix("PARK_")))
        {
            let raw = eventName ?? "unknown"
            let name = notificationAliases[raw] ?? raw
            if EventCatalog.notificationNames.contains(name) { return (.notification, name, "notifications") }
            return (.unknown, raw, "notifications")
        }
        if let eventName, eventName.hasPrefix("PARK_") {
            if EventCatalog.parkingNames.contains(eventName) { return (.parking, eventName, "parking") }
            return (.unknown, eventName, "parking")
        }
        if let action = f["action"]?.stringValue, f["type"] != nil, f["id"] != nil {
            // Kazoo 4.3 leaks the hook's custom_data into the payload: an `all` hook's action arrives as "all",
            // and the real action is lost. Still an object event; its name is then "all".
            if EventCatalog.objectActions.contains(action) || action == "all" {
                return (.object, action, "object")
            }
            return (.unknown, action, "object")
        }
        if let type = f["type"]?.stringValue, type == "sms" || type == "mms",
            f["origin"] != nil || f["body"] != nil || f["from"] != nil
        {
            return (type == "sms" ? .sms : .mms, type, type)
        }
        return nil
    }

    /// The callflow webhook action has no discriminator; these fields come only from kapps_call:to_json.
    static let callflowMarkers = [
        "switch_hostname", "switch_nodename", "switch_uri", "switch_url", "fetch_id", "bridge_id", "call_bridged",
        "request_user", "from_tag", "to_tag", "is_recording",
    ]

    static func looksLikeCallflowWebhook(_ f: JSONObject) -> Bool {
        guard f[WebhookEvent.Hints.callID] != nil else { return false }
        return callflowMarkers.filter { f[$0] != nil }.count >= 2
    }
}
