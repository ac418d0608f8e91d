public import JSONCore

/// Reads Kazoo's `application/x-www-form-urlencoded` bodies and GET query strings (delivery.md §2):
/// `a[b][c]=v` nests objects, `k[]=v` appends to a list, list elements that are JSON objects were
/// JSON-encoded by Kazoo and are decoded back, empty `&&` segments are skipped, `+` is a space, and a
/// literal `?` separates pairs like `&` (Kazoo appends `?payload` even to a URI that already has a query).
/// Every value is a string; `EventDecoder` coerces known fields to their types.
public enum FormDecoder {
    /// Decodes pairs into a tree of objects, lists and strings.
    /// - Throws: `EventDecodingError` for bad percent-encoding, invalid UTF-8 or exceeded limits.
    public static func decode(_ bytes: some Collection<UInt8>, limits: JSONLimits = .default)
        throws(EventDecodingError) -> JSONObject
    {
        let root = Node.object(ObjectNode())
        var pairs = 0
        var start = bytes.startIndex
        var offset = 0
        var segmentOffset = 0
        var index = bytes.startIndex
        while true {
            let atEnd = index == bytes.endIndex
            if atEnd || bytes[index] == UInt8(ascii: "&") || bytes[index] == UInt8(ascii: "?") {
                if start != index {
                    pairs += 1
                    if pairs > limits.maxKeys {
                        throw EventDecodingError.limit("too many form fields (limit \(limits.maxKeys))")
                    }
                    try decodePair(bytes[start..<index], at: segmentOffset, into: root, limits: limits)
                }
                if atEnd { break }
                start = bytes.index(after: index)
                segmentOffset = offset + 1
            }
            index = bytes.index(after: index)
            offset += 1
        }
        guard case .object(let object) = root.value else { return JSONObject() }
        return object
    }

    private static func decodePair(
        _ pair: some Collection<UInt8>, at offset: Int, into root: Node, limits: JSONLimits
    ) throws(EventDecodingError) {
        let equals = pair.firstIndex(of: UInt8(ascii: "="))
        let rawKey = pair[pair.startIndex..<(equals ?? pair.endIndex)]
        let rawValue = equals.map { pair[pair.index(after: $0)...] } ?? pair[pair.endIndex...]
        let keyBytes = try percentDecode(rawKey, at: offset)
        let key = try utf8(keyBytes, what: "a form key", at: offset)
        let path = splitPath(key)
        let name = path.first ?? key
        if path.count > limits.maxDepth {
            throw EventDecodingError.limit("form key \(key.prefix(80)) nests deeper than \(limits.maxDepth) levels")
        }
        let valueBytes = try percentDecode(rawValue, at: offset + (rawKey.count + 1))
        if valueBytes.count > limits.maxStringBytes {
            throw EventDecodingError.limit("form value of \(name) is longer than \(limits.maxStringBytes) bytes")
        }
        let value = try utf8(valueBytes, what: "the value of \(key)", at: offset)
        root.insert(path: path[...], value: value, limits: limits)
    }

    /// Splits `a[b][]` into ["a", "b", ""]; a key with unbalanced brackets is taken literally.
    ///
    /// On the key's UTF-8 bytes, as Kazoo's encoder writes them: a bracket is a bracket whatever follows it. (The
    /// first form searched the key's Characters, which cost about 6,000 instructions a key, two fifths of a form
    /// body's decoding.) The brackets are ASCII, so the parts between them are whole UTF-8.
    static func splitPath(_ key: String) -> [String] {
        var contiguous = key
        return contiguous.withUTF8 { bytes in
            guard let open = bytes.firstIndex(of: UInt8(ascii: "[")), open != 0 else { return [key] }
            func part(_ range: Range<Int>) -> String {
                String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            }
            var parts = [part(0..<open)]
            var at = open
            while at < bytes.count {
                guard bytes[at] == UInt8(ascii: "["),
                    let close = bytes[(at + 1)...].firstIndex(of: UInt8(ascii: "]"))
                else { return [key] }
                parts.append(part((at + 1)..<close))
                at = close + 1
            }
            return parts
        }
    }

    /// `%XX` to a byte and `+` to a space.
    static func percentDecode(_ bytes: some Collection<UInt8>, at offset: Int) throws(EventDecodingError) -> [UInt8] {
        // Most keys and values have nothing to decode: copied whole.
        if !bytes.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) { return Array(bytes) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var it = bytes.makeIterator()
        var position = offset
        while let b = it.next() {
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let hi = hexValue(h), let lo = hexValue(l) else {
                    throw EventDecodingError.syntax("invalid percent-encoding (expected %XX)", offset: position)
                }
                out.append(hi << 4 | lo)
                position += 2
            } else {
                out.append(b)
            }
            position += 1
        }
        return out
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// `what` names the text in the error; it is made only for an error (an interpolated name for every pair cost
    /// about 500 instructions a pair).
    static func utf8(_ bytes: [UInt8], what: @autoclosure () -> String, at offset: Int) throws(EventDecodingError)
        -> String
    {
        // Not `String(validating:as:)`: see `UTF8Validation.string`.
        if let s = bytes.withUnsafeBufferPointer(UTF8Validation.string) { return s }
        throw EventDecodingError.invalidUTF8("\(what()) is not valid UTF-8", offset: offset)
    }
}

/// A mutable tree used while pairs arrive in any order. Reference semantics keep insertion linear.
private final class Node {
    enum Value {
        case object(ObjectNode)
        case array([Node])
        case leaf(JSONValue)
    }
    var storage: Value

    init(_ storage: Value) { self.storage = storage }

    static func object(_ o: ObjectNode) -> Node { Node(.object(o)) }

    func insert(path: ArraySlice<String>, value: String, limits: JSONLimits) {
        guard let head = path.first else {
            storage = .leaf(.string(value))
            return
        }
        let rest = path.dropFirst()
        if head.isEmpty, !(path.startIndex == 0) {  // `[]`: append
            var elements: [Node]
            if case .array(let existing) = storage { elements = existing } else { elements = [] }
            let element = Node(.leaf(.null))
            if rest.isEmpty {
                element.storage = .leaf(FormDecoder.listElement(value, limits: limits))
            } else {
                element.storage = .object(ObjectNode())
                element.insert(path: rest, value: value, limits: limits)
            }
            elements.append(element)
            storage = .array(elements)
            return
        }
        let object: ObjectNode
        if case .object(let existing) = storage {
            object = existing
        } else {
            object = ObjectNode()
            storage = .object(object)
        }
        let child = object.child(head)
        if rest.isEmpty {
            child.storage = .leaf(.string(value))
        } else {
            child.insert(path: rest, value: value, limits: limits)
        }
    }

    var value: JSONValue {
        switch storage {
        case .leaf(let v): v
        case .array(let nodes): .array(nodes.map(\.value))
        case .object(let o):
            .object(
                JSONObject(
                    uniqueMembersUnchecked: zip(o.keys, o.nodes).map { JSONObject.Member(key: $0, value: $1.value) }))
        }
    }
}

private final class ObjectNode {
    /// The keys in the order they first came, and their nodes at the same positions.
    var keys: [String] = []
    var nodes: [Node] = []
    /// Positions by key, made once the object holds more than `linearLimit` keys. Below that a search of
    /// `keys` is cheaper: in a table, a Kazoo body's two dozen top-level keys cost a hash each and a table that
    /// grew five times, 62,000 instructions an event where the search takes 37,000 (callgrind).
    var index: [String: Int]? = nil
    static let linearLimit = 32

    func child(_ key: String) -> Node {
        if let index {
            if let at = index[key] { return nodes[at] }
        } else if let at = keys.firstIndex(of: key) {
            return nodes[at]
        }
        let node = Node(.leaf(.null))
        keys.append(key)
        nodes.append(node)
        if index != nil {
            index?[key] = keys.count - 1
        } else if keys.count > Self.linearLimit {
            index = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        }
        return node
    }
}

extension FormDecoder {
    /// A list element: Kazoo JSON-encodes objects inside lists, so one that reads as a JSON object is one.
    static func listElement(_ value: String, limits: JSONLimits) -> JSONValue {
        guard value.utf8.first == UInt8(ascii: "{") else { return .string(value) }
        if let parsed = try? JSONReader.parse(value.utf8, limits: limits), case .object = parsed { return parsed }
        return .string(value)
    }
}
