public import KazooEvents

/// One entry of a rule's `on`: an event name (`channel_create`, `notifications.low_balance`,
/// `object.doc_edited`, `parking.PARK_PARKED`, `sms`), a family wildcard (`channel.*`, `notifications.*`,
/// `object.*`, `parking.*`), or `*` for every event, unknown ones included.
public struct EventPattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    /// The families a wildcard can name, with the kind or hook they match.
    static let families = ["channel", "notifications", "object", "parking"]

    /// Every name `on` accepts, for validation and suggestions.
    public static let knownNames: [String] =
        ["*"] + families.map { "\($0).*" } + EventCatalog.all.map(\.qualifiedName)

    private static let knownSet = Set(knownNames)

    /// Parses an `on` entry. Returns nil for a name no Kazoo event has.
    public init?(_ text: String) {
        guard EventPattern.knownSet.contains(text) else { return nil }
        self.text = text
        if text == "*" {
            form = .any
        } else if text == "channel.*" {
            form = .channels
        } else if text.hasSuffix(".*") {
            form = .hook(String(text.dropLast(2)))
        } else {
            form = .name
        }
    }

    /// What `text` says, worked out once: `matches` runs for every rule on every event.
    private enum Form: Sendable, Hashable {
        /// `*`
        case any
        /// `channel.*`: every call event.
        case channels
        /// `notifications.*`, `object.*`, `parking.*`: every event of that hook.
        case hook(String)
        /// One event's qualified name.
        case name
    }
    private let form: Form

    public var description: String { text }

    /// Whether the event is one this pattern names (`qualifiedName` is `event.qualifiedName`, computed once per
    /// event by the caller).
    public func matches(_ event: WebhookEvent, qualifiedName: String) -> Bool {
        switch form {
        case .any: return true
        case .channels: return event.kind == .channel || event.hook?.hasPrefix("channel_") == true
        case .hook(let hook): return event.hook == hook
        case .name: return qualifiedName == text
        }
    }

    /// The catalog entries this pattern can match (empty for `*`: anything can).
    public var specs: [EventSpec] {
        if text == "*" { return [] }
        if text.hasSuffix(".*") {
            let family = String(text.dropLast(2))
            return EventCatalog.all.filter { family == "channel" ? $0.kind == .channel : $0.hook == family }
        }
        return EventCatalog.all.filter { $0.qualifiedName == text }
    }

    /// The known name closest to `text`, when it is close enough to be a likely typo.
    public static func suggestion(for text: String) -> String? {
        // A bare notification, object or parking name missing its family: "low_balance".
        for family in families where knownSet.contains("\(family).\(text)") { return "\(family).\(text)" }
        if let close = Suggestions.closest(to: text, in: knownNames) { return close }
        // A misspelt name missing its family too: "low_balanc".
        for family in families where !text.contains(".") {
            if let close = Suggestions.closest(to: "\(family).\(text)", in: knownNames) { return close }
        }
        return nil
    }
}

/// "Did you mean …?" by edit distance.
public enum Suggestions {
    /// The candidate closest to `text`, when close enough to be a likely typo.
    public static func closest(to text: String, in candidates: [String]) -> String? {
        var best: (String, Int)? = nil
        for candidate in candidates {
            let d = distance(text.lowercased(), candidate.lowercased())
            if d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        guard let (name, d) = best else { return nil }
        let tolerance = max(2, min(text.count, name.count) / 3)
        return d <= tolerance ? name : nil
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
