public import JSONCore

/// One entry of a rule's `match`: a field (dotted keys reach nested fields, as in
/// `custom_channel_vars.Resource-Type`) and the values it may have. Checked in Swift, before any Lua runs.
public struct MatchCondition: Sendable, Hashable {
    public var field: String
    public var path: [String]
    /// The event matches when the field equals any of these (numbers compare by value: 1 == 1.0).
    public var accepted: [JSONValue]

    public init(field: String, accepted: [JSONValue]) {
        self.field = field
        self.path = field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        self.accepted = accepted
    }

    /// Whether the event's fields satisfy this condition.
    public func matches(_ fields: JSONObject) -> Bool { matches(fields, first: nil) }

    /// `matches(_:)`, finding the first key of `path` with `first` (its `KeyHint`, kept by the rule's gate)
    /// when given.
    func matches(_ fields: JSONObject, first: KeyHint?) -> Bool {
        // The first key is looked up in `fields` itself, not in a `.object(fields)` made for it (a retain and
        // a release of the event's fields for every condition of every event).
        guard !path.isEmpty else { return false }
        let found = if let first { fields[first] } else { fields[path[0]] }
        guard var value = found else { return false }
        for i in path.indices.dropFirst() {
            guard let next = value[path[i]] else { return false }
            value = next
        }
        // By index, as `RuleGate.matches`: `contains` copies each accepted value out.
        for i in accepted.indices where MatchCondition.equal(accepted[i], value) { return true }
        return false
    }

    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.int(let x), .double(let y)), (.double(let y), .int(let x)): return Double(x) == y
        default: return a == b
        }
    }
}
