/// Reads JSON text (RFC 8259) into a `JSONValue`, in one linear pass over the bytes.
///
/// Policies (documented in the README under "Bad input"):
/// - A UTF-8 byte order mark at the very start is skipped.
/// - Strings must be valid UTF-8; raw control characters (including NUL) inside strings are errors, while
///   the escape `\u0000` yields a NUL character.
/// - A number without fraction or exponent that fits in 64 bits is an integer; one that does not fit is read
///   as a float (as Lua 5.4 does with such literals); a number beyond a float's range is an error.
/// - `NaN`, `Infinity`, comments, trailing commas and trailing data are errors.
/// - A key given twice keeps its last value (at its first position).
public enum JSONReader {
    /// Parses one JSON document.
    /// - Throws: `JSONError` with the byte offset of the problem.
    public static func parse(_ bytes: some Sequence<UInt8>, limits: JSONLimits = .default) throws(JSONError)
        -> JSONValue
    {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { (buffer) throws(JSONError) -> JSONValue in
            try parse(buffer: buffer, limits: limits)
        }
    }

    /// Parses one JSON document held in `buffer`.
    /// - Parameters:
    ///   - keys: object keys to take from a shared set instead of building them (see `KeyInterner`).
    ///   - sharedValues: hand out the calling thread's String for a short string value it read before with the
    ///     same bytes, instead of building a new one (see `ValueStrings`): for a stream of documents that
    ///     repeat their values, as webhooks do.
    public static func parse(
        buffer: UnsafeBufferPointer<UInt8>, limits: JSONLimits = .default, keys: KeyInterner? = nil,
        sharedValues: Bool = false
    ) throws(JSONError) -> JSONValue {
        let table = keys?.table
        defer { withExtendedLifetime(table) {} }
        var reader = Cursor(
            bytes: buffer, limits: limits, interner: table?.view, values: sharedValues ? .current : nil)
        if buffer.count >= 3, buffer[0] == 0xEF, buffer[1] == 0xBB, buffer[2] == 0xBF { reader.index = 3 }
        reader.skipWhitespace()
        let value = try reader.readValue(depth: 0, owner: KeyInterner.View.top)
        reader.skipWhitespace()
        if reader.index < buffer.count {
            throw JSONError(.syntax, "unexpected data after the JSON value", offset: reader.index)
        }
        return value
    }
}

/// Byte cursor over the input. Recursion depth is bounded by `limits.maxDepth`, so the native stack is too.
private struct Cursor {
    let bytes: UnsafeBufferPointer<UInt8>
    let limits: JSONLimits
    var index = 0
    var entries = 0
    var scratch: [UInt8] = []
    let interner: KeyInterner.View?
    let values: ValueStrings?

    init(bytes: UnsafeBufferPointer<UInt8>, limits: JSONLimits, interner: KeyInterner.View?, values: ValueStrings?) {
        self.bytes = bytes
        self.limits = limits
        self.interner = interner
        self.values = values
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    func describeByte(at i: Int) -> String {
        guard i < bytes.count else { return "end of input" }
        let b = bytes[i]
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte 0x\(String(b, radix: 16, uppercase: true))"
    }

    /// Reads the value at `index`. `owner` is the interner's position of the key whose value it is (an array's
    /// elements have the array's), -1 for a key not in the interner, `KeyInterner.View.top` for the document.
    mutating func readValue(depth: Int, owner: Int) throws(JSONError) -> JSONValue {
        guard index < bytes.count else { throw JSONError(.syntax, "unexpected end of input", offset: index) }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try readObject(depth: depth + 1, firstKey: interner?.slot(inside: owner) ?? -1)
        case UInt8(ascii: "["): return try readArray(depth: depth + 1, owner: owner)
        case UInt8(ascii: "\""): return try readStringValue()
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try readNumber()
        case UInt8(ascii: "N"), UInt8(ascii: "I"):
            throw JSONError(.syntax, "NaN and Infinity are not valid JSON numbers", offset: index)
        default:
            throw JSONError(.syntax, "expected a JSON value, found \(describeByte(at: index))", offset: index)
        }
    }

    mutating func expectLiteral(_ word: StaticString) throws(JSONError) {
        let n = word.utf8CodeUnitCount
        let start = index
        if bytes.count - index >= n {
            var ok = true
            word.withUTF8Buffer { w in
                for k in 0..<n where bytes[start + k] != w[k] { ok = false }
            }
            if ok {
                index += n
                return
            }
        }
        throw JSONError(.syntax, "expected a JSON value, found \(describeByte(at: start))", offset: start)
    }

    mutating func countEntry() throws(JSONError) {
        entries += 1
        if entries > limits.maxKeys {
            throw JSONError(
                .limit, "too many keys and elements (limit \(limits.maxKeys))", offset: index)
        }
    }

    /// Reads an object. `firstKey` is the interner's slot predicting its first key, or -1.
    mutating func readObject(depth: Int, firstKey: Int) throws(JSONError) -> JSONValue {
        if depth > limits.maxDepth {
            throw JSONError(.limit, "nesting deeper than \(limits.maxDepth) levels", offset: index)
        }
        index += 1  // {
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(JSONObject())
        }
        // Room for an event's fields at the top (a Kazoo payload has 20 to 60), a few below it: a nested
        // object (custom_channel_vars) holds a handful, and 32 members there was a 1.3 KB allocation each,
        // past the size malloc keeps per thread.
        var members: [JSONObject.Member] = []
        members.reserveCapacity(depth == 1 ? 32 : 8)
        var keyIndex = KeyIndex()
        var predictor = firstKey
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw JSONError(
                    .syntax, "expected a string key, found \(describeByte(at: index))", offset: index)
            }
            let (key, keyHash, shared) = try readKey(predictor: predictor)
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                throw JSONError(.syntax, "expected ':' after key \"\(key)\"", offset: index)
            }
            index += 1
            skipWhitespace()
            try countEntry()
            let value = try readValue(depth: depth, owner: shared)
            predictor = shared >= 0 ? interner!.slot(after: shared, within: firstKey) : -1
            // Duplicate keys: last value wins. Keys are compared by a hash of their raw bytes first.
            if let at = keyIndex.find(keyHash, key, in: members) {
                members[at].value = value
            } else {
                keyIndex.insert(key, hash: keyHash, before: members)
                members.append(JSONObject.Member(key: key, value: value))
            }
            skipWhitespace()
            guard index < bytes.count else {
                throw JSONError(.syntax, "unexpected end of input inside an object", offset: index)
            }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(JSONObject(uniqueMembersUnchecked: members))
            }
            throw JSONError(
                .syntax, "expected ',' or '}' in an object, found \(describeByte(at: index))", offset: index)
        }
    }

    mutating func readArray(depth: Int, owner: Int) throws(JSONError) -> JSONValue {
        if depth > limits.maxDepth {
            throw JSONError(.limit, "nesting deeper than \(limits.maxDepth) levels", offset: index)
        }
        index += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array([])
        }
        while true {
            skipWhitespace()
            try countEntry()
            elements.append(try readValue(depth: depth, owner: owner))
            skipWhitespace()
            guard index < bytes.count else {
                throw JSONError(.syntax, "unexpected end of input inside an array", offset: index)
            }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            throw JSONError(.syntax, "expected ',' or ']' in an array, found \(describeByte(at: index))", offset: index)
        }
    }

    mutating func readStringValue() throws(JSONError) -> JSONValue {
        .string(try readString())
    }

    /// Reads an object's key, its hash for `KeyIndex`, and its position in the interner (-1 when it is not one
    /// of its keys). A key the interner's `predictor` slot names is recognised by comparing bytes; any other key
    /// without escapes is hashed on the input's bytes (they are its UTF-8) and looked up, and the slot then
    /// remembers it.
    mutating func readKey(predictor: Int) throws(JSONError) -> (String, UInt64, Int) {
        let open = index
        let start = open + 1
        if predictor >= 0, let interner {
            let predicted = interner.prediction(predictor)
            var count = 0
            if predicted >= 0, interner.matches(predicted, bytes, at: start, count: &count),
                count <= limits.maxStringBytes
            {
                index = start + count + 1
                return (interner.entries[predicted].string, interner.entries[predicted].hash, predicted)
            }
        }
        let stop = plainEnd(from: start)
        guard stop < bytes.count, bytes[stop] == UInt8(ascii: "\"") else {
            let key = try readString()
            return (key, KeyTable<Int>.hash(key), -1)
        }
        if stop - start > limits.maxStringBytes { throw stringTooLong(open) }
        let raw = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start..<stop])
        let hash = KeyTable<Int>.hash(bytes: raw)
        index = stop + 1
        if let interner, let found = interner.position(for: raw, hash: hash) {
            if predictor >= 0 { interner.remember(found, in: predictor) }
            return (interner.entries[found].string, hash, found)
        }
        return (try makeString(UnsafeBufferPointer(rebasing: bytes[start..<stop]), at: start), hash, -1)
    }

    /// From `start`, the index of the first byte that ends a plain run of string bytes (`JSONText.plainEnd`).
    func plainEnd(from start: Int) -> Int {
        JSONText.plainEnd(in: bytes, from: start)
    }

    /// `plainEnd(from:)`, also telling whether the run's bytes are all ASCII (then they are valid UTF-8 without
    /// a check: the value strings of a webhook nearly always are).
    func plainEnd(from start: Int, ascii: inout Bool) -> Int {
        JSONText.plainEnd(in: bytes, from: start, ascii: &ascii)
    }

    /// Reads a quoted string starting at the opening quote.
    mutating func readString() throws(JSONError) -> String {
        let open = index
        let start = index + 1
        var ascii = true
        index = plainEnd(from: start, ascii: &ascii)
        guard index < bytes.count else {
            throw JSONError(.syntax, "unterminated string", offset: open)
        }
        if bytes[index] == UInt8(ascii: "\"") {
            if index - start > limits.maxStringBytes { throw stringTooLong(open) }
            let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
            index += 1
            guard ascii else { return try makeString(slice, at: start) }
            return values?.string(slice) ?? String(decoding: slice, as: UTF8.self)
        }
        if bytes[index] < 0x20 { throw controlCharacter(at: index) }
        // Slow path: unescape into scratch.
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                index += 1
                if scratch.count > limits.maxStringBytes { throw stringTooLong(open) }
                let bytesCopy = scratch
                return try bytesCopy.withUnsafeBufferPointer { (p) throws(JSONError) -> String in
                    try makeString(p, at: start)
                }
            }
            if b < 0x20 { throw controlCharacter(at: index) }
            if b != UInt8(ascii: "\\") {
                scratch.append(b)
                index += 1
                continue
            }
            index += 1
            guard index < bytes.count else { break }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""): scratch.append(0x22)
            case UInt8(ascii: "\\"): scratch.append(0x5C)
            case UInt8(ascii: "/"): scratch.append(0x2F)
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try readHex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                        bytes[index + 1] == UInt8(ascii: "u")
                    else {
                        throw JSONError(.invalidUTF8, "unpaired UTF-16 surrogate in \\u escape", offset: index - 6)
                    }
                    index += 2
                    let low = try readHex4()
                    guard low >= 0xDC00 && low < 0xE000 else {
                        throw JSONError(.invalidUTF8, "unpaired UTF-16 surrogate in \\u escape", offset: index - 6)
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw JSONError(.invalidUTF8, "unpaired UTF-16 surrogate in \\u escape", offset: index - 6)
                }
                appendUTF8(scalar)
            default:
                throw JSONError(.syntax, "invalid escape '\\\(Character(Unicode.Scalar(escape)))'", offset: index - 2)
            }
        }
        throw JSONError(.syntax, "unterminated string", offset: open)
    }

    func stringTooLong(_ at: Int) -> JSONError {
        JSONError(.limit, "string longer than \(limits.maxStringBytes) bytes", offset: at)
    }

    func controlCharacter(at i: Int) -> JSONError {
        let b = bytes[i]
        let what = b == 0 ? "a NUL byte" : "control character 0x\(String(b, radix: 16, uppercase: true))"
        return JSONError(.syntax, "\(what) inside a string must be escaped (\\u00XX)", offset: i)
    }

    mutating func readHex4() throws(JSONError) -> UInt32 {
        guard bytes.count - index >= 4 else {
            throw JSONError(.syntax, "truncated \\u escape", offset: index)
        }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[index]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw JSONError(.syntax, "invalid hex digit in \\u escape", offset: index)
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case 0..<0x80:
            scratch.append(UInt8(scalar))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | (scalar >> 6)))
            scratch.append(UInt8(0x80 | (scalar & 0x3F)))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | (scalar >> 12)))
            scratch.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (scalar & 0x3F)))
        default:
            scratch.append(UInt8(0xF0 | (scalar >> 18)))
            scratch.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
            scratch.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (scalar & 0x3F)))
        }
    }

    func makeString(_ slice: UnsafeBufferPointer<UInt8>, at start: Int) throws(JSONError) -> String {
        // Not `String(validating:as:)`: see `UTF8Validation.string`.
        if let bad = UTF8Validation.firstInvalidOffset(slice) {
            throw JSONError(.invalidUTF8, "invalid UTF-8 in a string", offset: start + bad)
        }
        return String(decoding: slice, as: UTF8.self)
    }

    mutating func readNumber() throws(JSONError) -> JSONValue {
        let start = index
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        guard index < bytes.count, isDigit(bytes[index]) else {
            if index < bytes.count, bytes[index] == UInt8(ascii: "I") {
                throw JSONError(.syntax, "NaN and Infinity are not valid JSON numbers", offset: start)
            }
            throw JSONError(.syntax, "expected a digit", offset: index)
        }
        if bytes[index] == UInt8(ascii: "0"), index + 1 < bytes.count, isDigit(bytes[index + 1]) {
            throw JSONError(.syntax, "leading zeros are not allowed in JSON numbers", offset: index)
        }
        var magnitude: UInt64 = 0
        var overflow = false
        while index < bytes.count, isDigit(bytes[index]) {
            let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(UInt64(bytes[index] - UInt8(ascii: "0")))
            magnitude = m2
            overflow = overflow || o1 || o2
            index += 1
        }
        var isFloat = false
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isFloat = true
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw JSONError(.syntax, "expected a digit after '.'", offset: index)
            }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isFloat = true
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw JSONError(.syntax, "expected a digit in the exponent", offset: index)
            }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if !isFloat && !overflow {
            if negative {
                if magnitude <= UInt64(Int64.max) + 1 {
                    return .int(magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude))
                }
            } else if magnitude <= UInt64(Int64.max) {
                return .int(Int64(magnitude))
            }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else {
            throw JSONError(.numberOutOfRange, "number \(text.prefix(40)) is out of range", offset: start)
        }
        return .double(d)
    }

    func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
}

/// Checking UTF-8, and locating the first invalid byte for error messages.
public enum UTF8Validation {
    /// The bytes as a String when they are valid UTF-8, else nil. Use this, not `String(validating:as:)`: that
    /// one is generic and unspecialized in the standard library, and looking up its metadata cost about 1,000
    /// instructions per call in callgrind, several times the check itself.
    @inlinable
    public static func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard firstInvalidOffset(bytes) == nil else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The offset of the first byte that does not belong to a valid UTF-8 sequence, or nil if all are valid.
    public static func firstInvalidOffset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        let n = bytes.count
        // ASCII fast path, eight bytes at a time.
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            while i + 8 <= n, raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
            }
            // Under eight bytes left, all after ASCII words: one load of the last eight (overlapping those
            // already checked) clears an ASCII tail without the byte loop.
            if i < n, i + 8 > n, n >= 8,
                raw.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
            {
                return nil
            }
        }
        while i < n {
            let b = bytes[i]
            let length: Int
            var minimum: UInt32
            var scalar: UInt32
            switch b {
            case 0..<0x80:
                i += 1
                continue
            case 0xC2...0xDF: length = 2; minimum = 0x80; scalar = UInt32(b & 0x1F)
            case 0xE0...0xEF: length = 3; minimum = 0x800; scalar = UInt32(b & 0x0F)
            case 0xF0...0xF4: length = 4; minimum = 0x10000; scalar = UInt32(b & 0x07)
            default: return i
            }
            guard i + length <= n else { return i }
            for k in 1..<length {
                let c = bytes[i + k]
                guard c & 0xC0 == 0x80 else { return i }
                scalar = scalar << 6 | UInt32(c & 0x3F)
            }
            if scalar < minimum || scalar > 0x10FFFF || (scalar >= 0xD800 && scalar < 0xE000) { return i }
            i += length
        }
        return nil
    }
}

/// Finds duplicate keys while an object is read. Up to 64 keys: a 256-bit filter indexed by the top byte of
/// each key's hash (`KeyTable.hash` of its raw bytes) says "certainly new" for most keys, and only a filter hit
/// compares the key with the members read so far; nothing is allocated. (It was an array of hashes scanned for
/// every key: 7% of decoding in `perf`.) Past 64 keys: a Swift dictionary of the keys themselves, whose hashing
/// is seeded per process, so keys crafted to collide under `KeyTable.hash` (easy: it is not keyed) cannot make
/// reading a large object quadratic.
package struct KeyIndex {
    var filter: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    var table: [String: Int]? = nil

    package init() {}

    package func find(_ hash: UInt64, _ key: String, in members: [JSONObject.Member]) -> Int? {
        if let table { return table[key] }
        let (word, bit) = Self.slot(hash)
        guard filterWord(word) & bit != 0 else { return nil }
        return members.position(of: key)
    }

    /// Records `key`, about to be appended to `members` (which it is not in).
    package mutating func insert(_ key: String, hash: UInt64, before members: [JSONObject.Member]) {
        let position = members.count
        if table != nil {
            table![key] = position
            return
        }
        let (word, bit) = Self.slot(hash)
        switch word {
        case 0: filter.0 |= bit
        case 1: filter.1 |= bit
        case 2: filter.2 |= bit
        default: filter.3 |= bit
        }
        if position >= 64 {
            var map: [String: Int] = [:]
            map.reserveCapacity(position * 2 + 2)
            for (i, m) in members.enumerated() { map[m.key] = i }
            map[key] = position
            table = map
        }
    }

    static func slot(_ hash: UInt64) -> (Int, UInt64) {
        let top = Int(truncatingIfNeeded: hash >> 56)
        return (top >> 6, 1 << UInt64(top & 63))
    }

    func filterWord(_ word: Int) -> UInt64 {
        switch word {
        case 0: filter.0
        case 1: filter.1
        case 2: filter.2
        default: filter.3
        }
    }
}
