import JSONCore

/// Coerces known fields to their catalog types. Form and query bodies carry only strings, and the docs show
/// JSON with numeric strings (`"timestamp": "63724349409"`); after coercion all formats give the same event.
///
/// Rules: an empty string in a non-string field means absent (form cannot say null) and is dropped; `null`
/// stays `null`; anything that cannot be the field's type is an error naming the field's path.
enum Coercion {
    static func coerce(_ fields: inout JSONObject, spec: FieldLookup) throws(EventDecodingError) {
        // In place: most JSON bodies already have every known field in its type and change nothing, and the
        // others (numeric strings such as `"timestamp": "63724349409"`, every field of a form body) change a
        // value where it is. Copying the members into a new array retained and released each key and value:
        // most of this function's cost.
        var position = 0
        while let (at, type) = nextToCoerce(fields.members, from: position, spec: spec) {
            let member = fields[at]
            if let value = try coerce(member.value, to: type, path: member.key) {
                fields.setValue(value, at: at)
                position = at + 1
            } else {
                fields.remove(at: at)
                position = at
            }
        }
    }

    /// The first member from `start` on whose value is not yet its field's type, with that type. Indices over
    /// the array, not `enumerated()` on the object: that copied every member out (a retain and release of its
    /// key and value).
    static func nextToCoerce(_ members: [JSONObject.Member], from start: Int, spec: FieldLookup) -> (Int, FieldType)? {
        members.withUnsafeBufferPointer { members in
            var i = start
            while i < members.count {
                if let field = spec.types.position(of: members[i].key), !conforms(members[i].value, spec.accepts[field])
                {
                    return (i, spec.types.value(at: field))
                }
                i += 1
            }
            return nil
        }
    }

    /// Whether a value already has its field's type, so coercion would return it unchanged.
    static func conforms(_ value: JSONValue, _ accepts: EventSpec.Accepts) -> Bool {
        switch (accepts, value) {
        case (_, .null), (.anything, _), (.string, .string), (.integer, .int), (.number, .int), (.number, .double),
            (.boolean, .bool), (.emptyObject, .object):
            true
        default: false
        }
    }

    /// The value as `type`, nil when it should be dropped (an empty form value).
    static func coerce(_ value: JSONValue, to type: FieldType, path: String) throws(EventDecodingError) -> JSONValue? {
        if case .null = value { return .null }
        if case .string(let s) = value, s.isEmpty, type != .string { return nil }
        switch type {
        case .string:
            switch value {
            case .string: return value
            case .int(let i): return .string(String(i))
            case .double(let d): return .string(JSONWriter.formatDouble(d))
            case .bool(let b): return .string(b ? "true" : "false")
            default: throw wrongType(path, "string", value)
            }
        case .integer, .gregorianSeconds:
            switch value {
            case .int: return value
            case .double(let d):
                if let i = Int64(exactly: d) { return .int(i) }
            case .string(let s):
                if let i = Int64(s) { return .int(i) }
                if let d = Double(s), d.isFinite, let i = Int64(exactly: d) { return .int(i) }
            default: break
            }
            throw wrongType(path, "integer", value)
        case .number:
            switch value {
            case .int, .double: return value
            case .string(let s):
                if !s.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let i = Int64(s) { return .int(i) }
                if let d = Double(s), d.isFinite, s.first != "+" { return .double(d) }
            default: break
            }
            throw wrongType(path, "number", value)
        case .boolean:
            switch value {
            case .bool: return value
            case .string("true"): return .bool(true)
            case .string("false"): return .bool(false)
            case .int(0): return .bool(false)
            case .int(1): return .bool(true)
            default: throw wrongType(path, "boolean", value)
            }
        case .object(let members):
            switch value {
            case .object(let object):
                guard !members.isEmpty else { return value }
                let nested = EventSpec(.unknown, path, hook: "", "", fields: members)
                var out: [JSONObject.Member] = []
                for m in object {
                    if let t = nested.type(of: m.key) {
                        if let v = try coerce(m.value, to: t, path: "\(path).\(m.key)") {
                            out.append(JSONObject.Member(key: m.key, value: v))
                        }
                    } else {
                        out.append(m)
                    }
                }
                return .object(JSONObject(uniqueMembersUnchecked: out))
            case .array(let a) where a.isEmpty:
                return .object(JSONObject())  // Erlang's empty proplist encodes as []
            default: throw wrongType(path, "object", value)
            }
        case .array(let element):
            switch value {
            case .array(let elements):
                var out: [JSONValue] = []
                out.reserveCapacity(elements.count)
                for (i, e) in elements.enumerated() {
                    if let v = try coerce(e, to: element, path: "\(path)[\(i + 1)]") { out.append(v) }
                }
                return .array(out)
            case .object: throw wrongType(path, "array", value)
            default:
                return .array([try coerce(value, to: element, path: "\(path)[1]") ?? value])
            }
        case .stringOrList:
            return value
        }
    }

    static func wrongType(_ path: String, _ expected: String, _ value: JSONValue) -> EventDecodingError {
        var got = value.typeName
        switch value {
        case .string(let s): got += " \"\(s.prefix(40))\(s.count > 40 ? "…" : "")\""
        case .int(let i): got += " \(i)"
        case .double(let d): got += " \(d)"
        case .bool(let b): got += " \(b)"
        default: break
        }
        return EventDecodingError(.wrongType, "\(path): expected \(expected), got \(got)", path: path)
    }
}
