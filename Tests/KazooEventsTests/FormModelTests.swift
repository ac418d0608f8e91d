import JSONCore
import KazooEvents
import TestSupport
import Testing

/// Kazoo's form format (delivery.md §2) written as plainly as it reads, without regard for speed: the model
/// `FormDecoder` is checked against. Pairs split on `&` and `?`; `+` is a space and `%XX` a byte; a key splits
/// into parts on its brackets (taken whole when they do not balance, when it starts with one, or when text
/// follows its last `]`); a part names a member of an object, an empty part after the first appends to a list,
/// and whatever of another kind stands in the way is replaced; a key given again keeps its first place and
/// takes its last value; a list element that reads as a JSON object is one.
enum FormModel {
    indirect enum Tree {
        case value(JSONValue)
        case object([(key: [UInt8], tree: Tree)])
        case list([Tree])

        var json: JSONValue {
            switch self {
            case .value(let value): value
            case .object(let members):
                .object(
                    JSONObject(
                        uniqueMembersUnchecked: members.map {
                            JSONObject.Member(key: String(decoding: $0.key, as: UTF8.self), value: $0.tree.json)
                        }))
            case .list(let elements): .array(elements.map(\.json))
            }
        }
    }

    static func decode(_ body: [UInt8], limits: JSONLimits) -> Result<JSONValue, EventDecodingError> {
        Result { () throws(EventDecodingError) in try read(body, limits: limits) }
    }

    static func read(_ body: [UInt8], limits: JSONLimits) throws(EventDecodingError) -> JSONValue {
        var root = Tree.object([])
        var pairs = 0
        var start = 0
        for end in body.indices.filter({ body[$0] == UInt8(ascii: "&") || body[$0] == UInt8(ascii: "?") })
            + [body.count]
        {
            defer { start = end + 1 }
            guard start < end else { continue }
            pairs += 1
            if pairs > limits.maxKeys {
                throw EventDecodingError(.limit, "too many form fields (limit \(limits.maxKeys))")
            }
            let pair = Array(body[start..<end])
            let equals = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.count
            let rawKey = Array(pair[..<equals])
            let rawValue = equals < pair.count ? Array(pair[(equals + 1)...]) : []
            let keyBytes = try unescape(rawKey, at: start)
            guard let key = String(validating: keyBytes, as: UTF8.self) else {
                throw EventDecodingError(.invalidUTF8, "a form key is not valid UTF-8", offset: start)
            }
            let parts = split(keyBytes)
            if parts.count > limits.maxDepth {
                throw EventDecodingError(
                    .limit, "form key \(key.prefix(80)) nests deeper than \(limits.maxDepth) levels")
            }
            let valueAt = start + rawKey.count + 1
            let valueBytes = try unescape(rawValue, at: valueAt)
            if valueBytes.count > limits.maxStringBytes {
                let name = String(decoding: parts[0], as: UTF8.self)
                throw EventDecodingError(.limit, "form value of \(name) is longer than \(limits.maxStringBytes) bytes")
            }
            guard let value = String(validating: valueBytes, as: UTF8.self) else {
                throw EventDecodingError(.invalidUTF8, "the value of \(key) is not valid UTF-8", offset: start)
            }
            put(value, at: parts[...], into: &root, first: true, limits: limits)
        }
        return root.json
    }

    static func unescape(_ bytes: [UInt8], at offset: Int) throws(EventDecodingError) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count,
                    let byte = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16),
                    bytes[i + 1] != UInt8(ascii: "+"), bytes[i + 1] != UInt8(ascii: "-")
                else {
                    throw EventDecodingError(.syntax, "invalid percent-encoding (expected %XX)", offset: offset + i)
                }
                out.append(byte)
                i += 2
            } else {
                out.append(bytes[i])
            }
            i += 1
        }
        return out
    }

    static func split(_ key: [UInt8]) -> [[UInt8]] {
        guard let open = key.firstIndex(of: UInt8(ascii: "[")), open > 0 else { return [key] }
        var parts = [Array(key[..<open])]
        var rest = key[open...]
        while !rest.isEmpty {
            guard rest.first == UInt8(ascii: "["), let close = rest.dropFirst().firstIndex(of: UInt8(ascii: "]")) else {
                return [key]
            }
            parts.append(Array(rest[(rest.startIndex + 1)..<close]))
            rest = rest[(close + 1)...]
        }
        return parts
    }

    static func put(
        _ value: String, at parts: ArraySlice<[UInt8]>, into tree: inout Tree, first: Bool, limits: JSONLimits
    ) {
        guard let part = parts.first else {
            tree = .value(.string(value))
            return
        }
        let rest = parts.dropFirst()
        if part.isEmpty, !first {
            guard case .list(var elements) = tree else {
                tree = .list([])
                return put(value, at: parts, into: &tree, first: first, limits: limits)
            }
            var element = Tree.object([])
            if rest.isEmpty {
                element = .value(listElement(value, limits: limits))
            } else {
                put(value, at: rest, into: &element, first: false, limits: limits)
            }
            elements.append(element)
            tree = .list(elements)
            return
        }
        guard case .object(var members) = tree else {
            tree = .object([])
            return put(value, at: parts, into: &tree, first: first, limits: limits)
        }
        let at = members.firstIndex { $0.key == part } ?? members.count
        if at == members.count { members.append((part, .value(.null))) }
        put(value, at: rest, into: &members[at].tree, first: false, limits: limits)
        tree = .object(members)
    }

    static func listElement(_ value: String, limits: JSONLimits) -> JSONValue {
        guard value.hasPrefix("{"), let parsed = try? JSONReader.parse(Array(value.utf8), limits: limits),
            case .object = parsed
        else { return .string(value) }
        return parsed
    }
}

@Suite struct FormModelTests {
    /// Pieces the bodies are made of: keys the interner holds and others, brackets, separators, escapes (good,
    /// cut short, not hex, not UTF-8), JSON objects for lists, raw UTF-8, and runs long enough to cross the
    /// decoder's eight-byte words at every offset.
    static let pieces = [
        "call_id", "custom_channel_vars", "account_id", "owner_id", "k", "a", "b", "Resource-Type", "[", "]", "[]",
        "=", "=", "&", "&", "?", "+", "%", "%2", "%2B", "%5B", "%5D", "%26", "%3D", "%C3%A9", "%FF", "%zz", "%7B%7D",
        "{\"x\":1}", "{", "é", "\u{301}", "12345678", "abcdefghijklmnopq", "x",
    ]

    static func body(_ random: inout SplitMix) -> [UInt8] {
        let count = Int.random(in: 0...24, using: &random)
        return Array((0..<count).map { _ in pieces.randomElement(using: &random)! }.joined().utf8)
    }

    /// Two renderings agree when they are the same text: the members in the same order.
    static func text(_ result: Result<JSONValue, EventDecodingError>) -> String {
        switch result {
        case .success(let value): (try? JSONWriter.string(value)) ?? "unwritable"
        case .failure(let error): "error \(error.kind) \(error.message) at \(error.offset.map(String.init) ?? "-")"
        }
    }

    static func decoded(_ body: [UInt8], limits: JSONLimits, keys: KeyInterner?) -> Result<
        JSONValue, EventDecodingError
    > {
        Result { () throws(EventDecodingError) in .object(try FormDecoder.decode(body, limits: limits, keys: keys)) }
    }

    /// Bodies made pair by pair, with no error in them unless a limit is passed: a key (interned or not, empty,
    /// percent-encoded, brackets included) with up to three parts after it (named, `[]`, or left unbalanced),
    /// then `=` and a value (empty, spaces, escapes, a JSON object as a list's element would be, raw or encoded),
    /// or no `=` at all; separated by `&`, `&&` or `?`. So nesting, lists, and values of one kind replaced by
    /// another are common.
    static func structuredBody(_ random: inout SplitMix) -> [UInt8] {
        let names = [
            "call_id", "custom_channel_vars", "account_id", "owner_id", "k", "a", "b", "Resource-Type", "caf%C3%A9",
            "x%5By%5D", "", "a_name_long_enough_to_cross_words",
        ]
        let values = [
            "", "1", "Test+Man", "%2B15556783945", "%7B%22x%22%3A1%7D", "{\"y\":2}", "%C3%A9t%C3%A9",
            "abcdefghijklmnopq", "a%26b%3Dc", "%7B",
        ]
        let pairs = (0..<Int.random(in: 1...12, using: &random)).map { _ in
            var key = names.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 0...3, using: &random) {
                key += Bool.random(using: &random) ? "[\(names.randomElement(using: &random)!)]" : "[]"
            }
            if Int.random(in: 0..<12, using: &random) == 0 { key += ["[", "]", "x"].randomElement(using: &random)! }
            if Int.random(in: 0..<10, using: &random) == 0 { return key }
            return key + "=" + values.randomElement(using: &random)!
        }
        var body = ""
        for (i, pair) in pairs.enumerated() {
            if i > 0 { body += ["&", "&", "&", "&&", "?"].randomElement(using: &random)! }
            body += pair
        }
        return Array(body.utf8)
    }

    /// Whether the decoder gives the model's result or error for `body` under `limits`, with the interner (twice:
    /// its predictions learnt from the first) and without; the first few disagreements are added to `found`.
    static func check(_ body: [UInt8], limits: JSONLimits, keys: KeyInterner, into found: inout [String]) {
        let expected = text(FormModel.decode(body, limits: limits))
        for interner in [keys, keys, nil] {
            let got = text(decoded(body, limits: limits, keys: interner))
            if got != expected, found.count < 5 {
                found.append("\(String(decoding: body, as: UTF8.self)): \(got) instead of \(expected)")
            }
        }
    }

    static let keys = KeyInterner(["call_id", "custom_channel_vars", "account_id", "owner_id", "k"])

    @Test func theDecoderAgreesWithTheModelOnRandomBodies() {
        var random = SplitMix(seed: 17)
        let small = JSONLimits(maxDepth: 3, maxKeys: 6, maxStringBytes: 12)
        var disagreements: [String] = []
        for round in 0..<6_000 {
            Self.check(
                Self.body(&random), limits: round % 3 == 0 ? small : .default, keys: Self.keys, into: &disagreements)
        }
        #expect(disagreements.isEmpty, "\(disagreements.joined(separator: "\n"))")
    }

    @Test func theDecoderAgreesWithTheModelOnStructuredBodies() {
        var random = SplitMix(seed: 5)
        let limits = [
            JSONLimits.default, JSONLimits(maxDepth: 3, maxKeys: 6, maxStringBytes: 12),
            JSONLimits(maxDepth: 1, maxKeys: 100, maxStringBytes: 100),
            JSONLimits(maxDepth: 0, maxKeys: 100, maxStringBytes: 100),
            // Nonsense, but a caller's to give: every key is refused, nothing traps.
            JSONLimits(maxDepth: -2, maxKeys: 100, maxStringBytes: 100),
        ]
        var disagreements: [String] = []
        var decodedWhole = 0
        for round in 0..<6_000 {
            let body = Self.structuredBody(&random)
            Self.check(body, limits: limits[round % limits.count], keys: Self.keys, into: &disagreements)
            if case .success = FormModel.decode(body, limits: .default) { decodedWhole += 1 }
        }
        #expect(disagreements.isEmpty, "\(disagreements.joined(separator: "\n"))")
        // Most bodies decode under the default limits: the comparison is of results, not only of errors.
        #expect(decodedWhole > 4_000, "\(decodedWhole) of 6,000")
    }

    /// A body that is not in contiguous memory is copied first, and reads the same.
    @Test func aBodyNotInContiguousMemoryReadsTheSame() {
        var random = SplitMix(seed: 9)
        for _ in 0..<300 {
            let body = Self.structuredBody(&random)
            let scattered = Result { () throws(EventDecodingError) in
                JSONValue.object(try FormDecoder.decode(body.lazy.map { $0 }, keys: Self.keys))
            }
            #expect(Self.text(scattered) == Self.text(FormModel.decode(body, limits: .default)))
        }
    }

    /// Objects with more keys than are searched in order (`KeyIndex` then indexes them), keys given again.
    @Test func theDecoderAgreesWithTheModelOnWideObjects() {
        var random = SplitMix(seed: 4)
        let keys = KeyInterner((0..<40).map { "k\($0)" })
        var disagreements: [String] = []
        var widest = 0
        for _ in 0..<200 {
            let pairs = (0..<Int.random(in: 100...400, using: &random)).map { _ in
                let key = "k\(Int.random(in: 0..<200, using: &random))"
                return switch Int.random(in: 0..<3, using: &random) {
                case 0: "\(key)=\(Int.random(in: 0..<9, using: &random))"
                case 1: "o[\(key)]=1"
                default: "\(key)[]=2"
                }
            }
            let body = Array(pairs.joined(separator: "&").utf8)
            Self.check(body, limits: .default, keys: keys, into: &disagreements)
            if case .success(.object(let top)) = FormModel.decode(body, limits: .default) {
                widest = max(widest, top.count, top["o"]?.objectValue?.count ?? 0)
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.joined(separator: "\n"))")
        // Past the 64 keys `KeyIndex` searches before it makes a table.
        #expect(widest > 64)
    }
}
