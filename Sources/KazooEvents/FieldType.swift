import JSONCore

/// The type a known field has. Decoding coerces values to it (form bodies carry only strings), and
/// `switchboard events` prints it.
public indirect enum FieldType: Sendable, Hashable, CustomStringConvertible {
    case string
    /// A 64-bit integer. Accepts an integer, an integral float, or a numeric string.
    case integer
    /// An integer count of Gregorian seconds (Unix + 62,167,219,200); events also expose it as Unix time.
    case gregorianSeconds
    /// A number kept as it came: integer text stays an integer, text with a '.' or exponent is a float.
    case number
    /// `true`/`false`, or the strings "true"/"false".
    case boolean
    /// An object; known members (if any) are typed, the rest kept as they came.
    case object([FieldSpec])
    /// A list whose elements have the given type. A single form value is wrapped into a one-element list.
    case array(FieldType)
    /// A string, or a list of strings or objects (the notification address fields: to, cc, bcc…).
    case stringOrList

    public var description: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .gregorianSeconds: "gregorian"
        case .number: "number"
        case .boolean: "boolean"
        case .object: "object"
        case .array(let element): "array<\(element)>"
        case .stringOrList: "string|array"
        }
    }
}

/// One known field: its name, type and what it means.
public struct FieldSpec: Sendable, Hashable {
    public var name: String
    public var type: FieldType
    public var summary: String

    public init(_ name: String, _ type: FieldType, _ summary: String = "") {
        self.name = name
        self.type = type
        self.summary = summary
    }
}

/// A spec's fields by name, as decoding looks them up for every member of every event. A class, so handing it
/// to `Coercion` retains one reference instead of every array in the tables.
final class FieldLookup: Sendable {
    let types: KeyTable<FieldType>
    /// For each field, in the order of `types`' pairs, the values it keeps as they are (`Coercion.conforms`).
    let accepts: [EventSpec.Accepts]

    init(types: KeyTable<FieldType>) {
        self.types = types
        self.accepts = types.values.map { EventSpec.Accepts($0) }
    }
}

/// Everything known about one event: its kind and name, the hook that delivers it, and its fields.
public struct EventSpec: Sendable {
    public var kind: EventKind
    public var name: String
    /// The Kazoo hook a webhook must be created for to receive it (`channel_create`, `notifications`…).
    public var hook: String
    public var summary: String
    public var fields: [FieldSpec]
    /// The fields by name, for decoding.
    private(set) var lookup: FieldLookup

    init(_ kind: EventKind, _ name: String, hook: String, _ summary: String, fields: [FieldSpec]) {
        self.kind = kind
        self.name = name
        self.hook = hook
        self.summary = summary
        // Later entries refine earlier ones (a type-specific field over the envelope's).
        var merged: [FieldSpec] = []
        for f in fields {
            if let at = merged.firstIndex(where: { $0.name == f.name }) {
                merged[at] = f
            } else {
                merged.append(f)
            }
        }
        self.fields = merged
        self.lookup = FieldLookup(types: KeyTable(merged.map { ($0.name, $0.type) }))
    }

    /// Which values a field keeps without coercion, as one byte: checking every member of every event against
    /// its `FieldType` copied the type out of the table each time.
    enum Accepts: UInt8, Sendable {
        case anything, string, integer, number, boolean, emptyObject, onlyNull

        init(_ type: FieldType) {
            switch type {
            case .string: self = .string
            case .integer, .gregorianSeconds: self = .integer
            case .number: self = .number
            case .boolean: self = .boolean
            case .object(let members): self = members.isEmpty ? .emptyObject : .onlyNull
            case .array: self = .onlyNull
            case .stringOrList: self = .anything
            }
        }
    }

    /// This spec, finding its fields' types from the Strings `keys` shares without hashing them again.
    func recognizing(_ keys: KeyInterner) -> EventSpec {
        var spec = self
        spec.lookup = FieldLookup(types: lookup.types.recognizing(keys))
        return spec
    }

    /// The type of a top-level field, when known.
    public func type(of field: String) -> FieldType? { lookup.types[field] }

    /// The name rules use in `on`: `channel_create`, `notifications.low_balance`, `object.doc_edited`…
    public var qualifiedName: String {
        switch kind {
        case .channel, .sms, .mms, .webhook: name
        case .notification: "notifications.\(name)"
        default: "\(kind.rawValue).\(name)"
        }
    }
}
