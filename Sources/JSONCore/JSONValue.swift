/// The one value type shared by event decoding, the Lua runtime and every host API.
///
/// It is JSON plus two things Lua needs to round-trip exactly:
/// - integers and floats are distinct (`int` is 64-bit, `double` is a float), as in Lua 5.4;
/// - `bytes` carries a string that is not valid UTF-8, byte for byte (Lua strings are byte strings).
///
/// `object([])` and `array([])` are different values, so `{}` and `[]` survive every round trip.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    /// A string whose bytes are not valid UTF-8 (or must stay byte-exact). Encodes to JSON only lossily.
    case bytes([UInt8])
    case array([JSONValue])
    case object(JSONObject)
}

extension JSONValue {
    /// The name of the value's type as a person reads it in an error: "string", "integer", "object"…
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int: "integer"
        case .double: "number"
        case .string, .bytes: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var intValue: Int64? {
        if case .int(let i) = self { return i }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case .double(let d): d
        case .int(let i): Double(i)
        default: nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// Reads a member of an object value; nil for anything else.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements.map { JSONObject.Member(key: $0.0, value: $0.1) }))
    }
    public init(nilLiteral: ()) { self = .null }
}

/// A JSON object that keeps its members in the order they arrived (so output reads like the input) and
/// holds each key once. Lookups are linear for small objects and hashed for large ones.
public struct JSONObject: Sendable, Hashable, RandomAccessCollection {
    public struct Member: Sendable, Hashable {
        public var key: String
        public var value: JSONValue
        public init(key: String, value: JSONValue) {
            self.key = key
            self.value = value
        }
    }

    public internal(set) var members: [Member]

    public init() { members = [] }

    /// Builds an object from members; a key given twice keeps its first position and its last value.
    public init(_ members: [Member]) {
        self.members = []
        self.members.reserveCapacity(members.count)
        if members.count <= JSONObject.linearLimit {
            for m in members { self[m.key] = m.value }
        } else {
            var index: [String: Int] = [:]
            index.reserveCapacity(members.count)
            for m in members {
                if let at = index[m.key] {
                    self.members[at].value = m.value
                } else {
                    index[m.key] = self.members.count
                    self.members.append(m)
                }
            }
        }
    }

    /// Wraps members the caller guarantees to have distinct keys (no duplicate check).
    public init(uniqueMembersUnchecked members: [Member]) {
        self.members = members
    }

    /// Replaces the value at `position` (a valid index), keeping its key. Changes the object in place when
    /// nothing else shares its storage.
    public mutating func setValue(_ value: JSONValue, at position: Int) {
        members[position].value = value
    }

    /// Removes the member at `position` (a valid index).
    public mutating func remove(at position: Int) {
        members.remove(at: position)
    }

    /// Objects up to this size are searched linearly; past it `init(_:)` hashes.
    public static let linearLimit = 16

    public var startIndex: Int { members.startIndex }
    public var endIndex: Int { members.endIndex }
    public subscript(position: Int) -> Member { members[position] }

    public var keys: [String] { members.map(\.key) }

    /// Gets, replaces, appends (new key) or removes (nil) a member.
    public subscript(key: String) -> JSONValue? {
        get { members.position(of: key).map { members[$0].value } }
        set {
            if let at = members.position(of: key) {
                if let newValue { members[at].value = newValue } else { members.remove(at: at) }
            } else if let newValue {
                members.append(Member(key: key, value: newValue))
            }
        }
    }

    /// Two objects are equal when they hold the same keys with equal values, in any order.
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.members.count == rhs.members.count else { return false }
        if lhs.members == rhs.members { return true }
        var right: [String: JSONValue] = [:]
        for m in rhs.members { right[m.key] = m.value }
        for m in lhs.members where right[m.key] != m.value { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        // Order-independent, to agree with ==.
        var sum = 0
        for m in members {
            var h = Hasher()
            h.combine(m.key)
            h.combine(m.value)
            sum &+= h.finalize()
        }
        hasher.combine(members.count)
        hasher.combine(sum)
    }
}

extension [JSONObject.Member] {
    /// Where the member called `key` is, for the object's subscript and the reader's repeated-key check. Keys of
    /// another length are passed over without comparing their bytes: a lookup in a 30-field event otherwise ran
    /// a string comparison per member.
    func position(of key: String) -> Int? {
        let count = key.utf8.count
        return firstIndex { $0.key.utf8.count == count && $0.key == key }
    }
}
