import TestSupport
import Testing

@testable import JSONCore

func parse(_ text: String, limits: JSONLimits = .default) throws(JSONError) -> JSONValue {
    try JSONReader.parse(Array(text.utf8), limits: limits)
}

func parseError(_ bytes: [UInt8], limits: JSONLimits = .default, sourceLocation: SourceLocation = #_sourceLocation)
    -> JSONError?
{
    do {
        let value = try JSONReader.parse(bytes, limits: limits)
        Issue.record("expected an error, parsed \(value)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite struct JSONReaderTests {
    @Test func readsEveryValueType() throws {
        let value = try parse(#"{"s":"a\"b\\c\/d\n","i":-42,"f":1.5,"e":2e3,"t":true,"n":null,"a":[1,[]],"o":{}}"#)
        #expect(value["s"] == "a\"b\\c/d\n")
        #expect(value["i"] == .int(-42))
        #expect(value["f"] == .double(1.5))
        #expect(value["e"] == .double(2000))
        #expect(value["t"] == .bool(true))
        #expect(value["n"] == .null)
        #expect(value["a"] == [1, .array([])])
        #expect(value["o"] == .object(JSONObject()))
    }

    @Test func integersAndFloatsStayDistinct() throws {
        #expect(
            try parse("[20, 20.0, 9223372036854775807, -9223372036854775808]")
                == [.int(20), .double(20.0), .int(Int64.max), .int(Int64.min)])
    }

    @Test func integersBeyond64BitsBecomeFloats() throws {
        #expect(try parse("[18446744073709551616]") == [.double(18446744073709551616.0)])
    }

    @Test func numbersBeyondAFloatAreRejected() {
        let error = parseError(Array("[1e999]".utf8))
        #expect(error?.kind == .numberOutOfRange)
        #expect(error?.offset == 1)
    }

    @Test(arguments: ["[NaN]", "[Infinity]", "[-Infinity]"])
    func nanAndInfinityAreRejected(text: String) {
        let error = parseError(Array(text.utf8))
        #expect(error?.kind == .syntax)
        #expect(error?.message.contains("NaN and Infinity") == true)
    }

    @Test func syntaxErrorsCarryTheirByteOffset() {
        let error = parseError(Array(#"{"a": 1 "b": 2}"#.utf8))
        #expect(error?.kind == .syntax)
        #expect(error?.offset == 8)
        #expect(error?.message.contains("expected ',' or '}'") == true)
        #expect(parseError(Array("{} x".utf8))?.offset == 3)
        #expect(parseError(Array("[01]".utf8))?.message.contains("leading zeros") == true)
        #expect(parseError(Array(#"{"a":1,}"#.utf8))?.kind == .syntax)
        #expect(parseError(Array(#"{"a":"#.utf8))?.kind == .syntax)
        #expect(parseError(Array(#"{"a":"abc"#.utf8))?.message.contains("unterminated") == true)
    }

    @Test func byteOrderMarkIsSkipped() throws {
        #expect(try JSONReader.parse([0xEF, 0xBB, 0xBF] + Array(#"{"a":1}"#.utf8)) == ["a": 1])
    }

    // The check reads eight bytes at a time and its tail in one overlapping load: a bad byte or a valid
    // multi-byte character anywhere in strings of 1 to 40 bytes must still be told apart.
    @Test func utf8CheckFindsEveryPositionOfEveryLength() {
        func check(_ bytes: [UInt8]) -> Int? { bytes.withUnsafeBufferPointer(UTF8Validation.firstInvalidOffset) }
        for length in 1...40 {
            let ascii = [UInt8](repeating: UInt8(ascii: "a"), count: length)
            #expect(check(ascii) == nil)
            for position in 0..<length {
                var bad = ascii
                bad[position] = 0xFF
                #expect(check(bad) == position, "0xFF at \(position) of \(length)")
                var cut = ascii
                cut[position] = 0xC3  // a two-byte lead with an ASCII byte (or nothing) after it
                #expect(check(cut) == position, "a cut character at \(position) of \(length)")
                guard position + 1 < length else { continue }
                var good = ascii
                good[position] = 0xC3
                good[position + 1] = 0xA9  // é
                #expect(check(good) == nil, "é at \(position) of \(length)")
            }
        }
    }

    /// A string's bytes are scanned eight at a time, and only a string with a byte over 0x7F is checked as
    /// UTF-8: a bad byte or a good character at any position of strings of 1 to 24 bytes, at the end of the
    /// input (the byte-at-a-time tail) or with more after it (the word loop), is still told apart.
    @Test func theReaderChecksEveryNonASCIIStringAtEveryPosition() throws {
        for length in 1...24 {
            for position in 0..<length {
                for more in [false, true] {
                    let ascii = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    let after = Array((more ? #","bbbbbbbbbbbbbbbb"]"# : #""]"#).utf8)
                    var bad = ascii
                    bad[position] = 0xFF
                    let error = parseError(Array(#"[""#.utf8) + bad + (more ? Array(#"""#.utf8) : []) + after)
                    #expect(error?.kind == .invalidUTF8, "0xFF at \(position) of \(length)")
                    #expect(error?.offset == 2 + position, "0xFF at \(position) of \(length)")
                    guard position + 1 < length else { continue }
                    var good = ascii
                    good[position] = 0xC3
                    good[position + 1] = 0xA9  // é
                    let body = Array(#"[""#.utf8) + good + (more ? Array(#"""#.utf8) : []) + after
                    let value = try JSONReader.parse(body)
                    #expect(value.arrayValue?.first == .string(String(decoding: good, as: UTF8.self)))
                }
            }
        }
    }

    @Test func invalidUTF8IsRejectedWithItsOffset() {
        let error = parseError(Array(#"{"a":"x"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))
        #expect(error?.kind == .invalidUTF8)
        #expect(error?.offset == 7)
        // Overlong encodings and surrogates in UTF-8 are invalid too.
        #expect(parseError(Array(#"[""#.utf8) + [0xC0, 0xAF] + Array(#""]"#.utf8))?.kind == .invalidUTF8)
        #expect(parseError(Array(#"[""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""]"#.utf8))?.kind == .invalidUTF8)
    }

    @Test func nulBytes() throws {
        // A raw NUL inside a string must be escaped; the escape decodes to NUL.
        #expect(parseError(Array(#"[""#.utf8) + [0x00] + Array(#""]"#.utf8))?.message.contains("NUL") == true)
        #expect(try parse(#"["a\u0000b"]"#) == ["a\u{0}b"])
        #expect(parseError([0x00])?.kind == .syntax)
    }

    @Test func unicodeEscapesAndSurrogatePairs() throws {
        #expect(try parse(#"["\u00e9\u260E\ud83d\ude00"]"#) == ["é☎😀"])
        #expect(parseError(Array(#"["\ud83d"]"#.utf8))?.kind == .invalidUTF8)
        #expect(parseError(Array(#"["\ude00"]"#.utf8))?.kind == .invalidUTF8)
    }

    @Test func duplicateKeysKeepTheLastValue() throws {
        let value = try parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(value.objectValue?.keys == ["a", "b"])
        #expect(value["a"] == 3)
        // The same in a large (hashed) object.
        let keys = (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        let large = try parse("{\(keys),\"k7\":700}")
        #expect(large.objectValue?.count == 40)
        #expect(large["k7"] == 700)
    }

    @Test func limitsAreEnforced() {
        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        #expect(parseError(Array(deep.utf8))?.kind == .limit)
        let wide = "[" + Array(repeating: "1", count: 11).joined(separator: ",") + "]"
        #expect(parseError(Array(wide.utf8), limits: JSONLimits(maxKeys: 10))?.kind == .limit)
        let long = "[\"" + String(repeating: "x", count: 101) + "\"]"
        #expect(parseError(Array(long.utf8), limits: JSONLimits(maxStringBytes: 100))?.kind == .limit)
        let escaped = "[\"" + String(repeating: "\\n", count: 101) + "\"]"
        #expect(parseError(Array(escaped.utf8), limits: JSONLimits(maxStringBytes: 100))?.kind == .limit)
    }

    @Test func largeObjectsParseInLinearTime() throws {
        // 10,000 distinct keys: a quadratic duplicate check would take seconds here.
        let members = (0..<9_999).map { "\"key\($0)\":\($0)" }.joined(separator: ",")
        let value = try parse("{\(members)}")
        #expect(value.objectValue?.count == 9_999)
        #expect(value["key9998"] == 9_998)
    }
}

@Suite struct JSONWriterTests {
    @Test func writesCompactJSONThatReadsBack() throws {
        let value: JSONValue = [
            "s": "é \"q\" \n\u{1}/", "i": 3, "f": 20.0, "a": [true, .null], "o": .object(JSONObject()), "e": .array([]),
        ]
        let text = try JSONWriter.string(value)
        #expect(text == #"{"s":"é \"q\" \n\u0001/","i":3,"f":20.0,"a":[true,null],"o":{},"e":[]}"#)
        #expect(try parse(text) == value)
    }

    @Test func writesFloatsAsTheShortestTextWithAPointOrExponent() {
        #expect(JSONWriter.formatDouble(20) == "20.0")
        #expect(JSONWriter.formatDouble(-3) == "-3.0")
        #expect(JSONWriter.formatDouble(0.1) == "0.1")
        #expect(JSONWriter.formatDouble(1e-07) == "1e-07")
        #expect(JSONWriter.formatDouble(1_764_858_000.123456) == "1764858000.123456")
        #expect(JSONWriter.formatDouble(1e300) == "1e+300")
        #expect((try? JSONWriter.string([.double(2.5), .double(1e21)])) == "[2.5,1e+21]")
        // Floats JSON has no text for (a Lua table key of `math.huge`, a NaN in a log line): their names.
        #expect(JSONWriter.formatDouble(.infinity) == "inf")
        #expect(JSONWriter.formatDouble(-.infinity) == "-inf")
        #expect(JSONWriter.formatDouble(.nan) == "nan")
        #expect(JSONWriter.formatDouble(Double(bitPattern: Double.nan.bitPattern | 1 << 63)) == "nan")  // x86's 0/0
    }

    /// Every ASCII byte, and a two-byte character, at every position of strings of 1 to 24 bytes (the word
    /// scan and the byte tail): written as the byte-by-byte rule says, and read back as the same string.
    @Test func escapesEveryByteAtEveryPosition() throws {
        func expected(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u00" + (hex.count == 1 ? "0" : "") + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        var checked = 0
        for length in 1...24 {
            for position in 0..<length {
                for special in (0..<0x80).map({ String(UnicodeScalar(UInt8($0))) }) + ["é"] {
                    var text = String(repeating: "a", count: length - 1)
                    text.insert(contentsOf: special, at: text.index(text.startIndex, offsetBy: position))
                    let written = try JSONWriter.string(.string(text))
                    #expect(
                        written == expected(text),
                        "byte \(special.unicodeScalars.first!.value) at \(position) of \(length)")
                    #expect(try parse(written) == .string(text))
                    checked += 1
                }
            }
        }
        #expect(checked == 300 * 129)
    }

    /// Integers are written digit by digit: zero, both ends of 64 bits, and every power of ten's neighbours
    /// read back as written, and as `String(_:)` prints them.
    @Test func writesEveryIntegerAsItsDecimal() throws {
        var numbers: [Int64] = [0, 1, -1, 9, -9, Int64.max, Int64.min, Int64.min + 1]
        var power: Int64 = 1
        for _ in 1...18 {
            power *= 10  // up to 10^18; 10^19 is past Int64.max
            numbers += [power - 1, power, power + 1, -(power - 1), -power, -(power + 1)]
        }
        for n in numbers {
            #expect(try JSONWriter.string(.int(n)) == String(n))
        }
        #expect(try parse(JSONWriter.string(.array(numbers.map { .int($0) }))) == .array(numbers.map { .int($0) }))
    }

    @Test func refusesWhatJSONCannotSay() {
        #expect(throws: JSONError.self) { try JSONWriter.encode(.bytes([0xFF])) }
        #expect(throws: JSONError.self) { try JSONWriter.encode(["x": .double(.nan)]) }
        #expect(throws: JSONError.self) { try JSONWriter.byteCount(["x": .double(.nan)]) }
    }

    /// `byteCount` is the size of the text `encode` writes (what the store's limit on a value measures).
    @Test func byteCountIsTheEncodedTextsSize() throws {
        let values: [JSONValue] = [
            .null, "", "é \"q\" \n\u{1}", .int(-12_345), 0.1, [], [:], ["a": [1, 2, ["b": .null]], "☎": true],
            .string(String(repeating: "x\u{7}", count: 400)),
        ]
        for value in values { #expect(try JSONWriter.byteCount(value) == JSONWriter.encode(value).count) }
    }

    /// The error names where the value is, as a path from the root.
    @Test func refusalsNameThePath() {
        let value: JSONValue = ["ok": 1, "a": ["b": [1, .double(.infinity)]]]
        do {
            _ = try JSONWriter.encode(value)
            Issue.record("encoded an infinity")
        } catch {
            #expect(error.kind == .notEncodable)
            #expect(error.message.hasPrefix("$.a.b[2]: "), "\(error.message)")
        }
        #expect(throws: JSONError.self) { try JSONWriter.encode([.bytes([0xFF])]) }
    }

    @Test func objectsCompareRegardlessOfOrder() {
        let a: JSONValue = ["x": 1, "y": 2]
        let b: JSONValue = ["y": 2, "x": 1]
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(a != ["x": 1, "y": 3])
    }
}

@Suite struct DuplicateKeyEscapeTests {
    @Test func anEscapedKeyIsTheSameKey() throws {
        let value = try parse(#"{"a":1,"\u0061":2}"#)
        #expect(value.objectValue?.count == 1)
        #expect(value["a"] == 2)
    }
}

@Suite struct StringScanTests {
    /// The reader skips plain bytes eight at a time; a quote, backslash or control byte at any offset must stop it.
    @Test func specialBytesAreFoundAtEveryOffset() throws {
        for offset in 0..<24 {
            let prefix = String(repeating: "a", count: offset)
            #expect(try parse("[\"\(prefix)\\n\(prefix)\"]") == .array([.string(prefix + "\n" + prefix)]))
            #expect(try parse("[\"\(prefix)\",\"\(prefix)x\"]") == .array([.string(prefix), .string(prefix + "x")]))
            let control = Array("[\"\(prefix)".utf8) + [0x1F] + Array("\"]".utf8)
            #expect(parseError(control)?.offset == 2 + offset)
            let high = "[\"\(prefix)é☎\(prefix)\"]"
            #expect(try parse(high) == .array([.string(prefix + "é☎" + prefix)]))
        }
    }
}

@Suite struct KeyHashingTests {
    /// The hash reads keys eight bytes at a time with an overlapping load for the tail: every byte must count.
    @Test func everyByteOfAKeyChangesItsHash() {
        for length in 1...40 {
            let key = Array("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH".utf8.prefix(length))
            let base = key.withUnsafeBytes { KeyTable<Int>.hash(bytes: $0) }
            #expect(KeyTable<Int>.hash(String(decoding: key, as: UTF8.self)) == base)
            for position in 0..<length {
                var changed = key
                changed[position] ^= 0x01
                #expect(
                    changed.withUnsafeBytes { KeyTable<Int>.hash(bytes: $0) } != base,
                    "length \(length) byte \(position)")
            }
        }
    }

    /// Duplicates are found before and after an object passes 64 keys (a filter, then a table).
    @Test func duplicatesAcrossTheSwitchToATable() throws {
        var members = (0..<100).map { "\"key\($0)\":\($0)" }
        members.insert("\"key5\":-5", at: 30)
        members.insert("\"key70\":-70", at: 90)
        members.append("\"key99\":-99")
        let value = try parse("{\(members.joined(separator: ","))}")
        #expect(value.objectValue?.count == 100)
        #expect(value["key5"] == -5)
        #expect(value["key70"] == -70)
        #expect(value["key99"] == -99)
        #expect(value.objectValue?.keys.first == "key0")
    }
}

@Suite struct CollidingKeyTests {
    /// 16-byte printable keys that all have the same `KeyTable.hash`: the hash is not keyed, and its second word
    /// can be solved for. Built the way an attacker would, by trying first words until the solved second word
    /// is printable.
    static func collidingKeys(_ count: Int) -> [String] {
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var inverse = k
        for _ in 0..<6 { inverse = inverse &* (2 &- k &* inverse) }  // Newton's step: k · inverse ≡ 1 (mod 2⁶⁴)
        let target: UInt64 = 0x1234_5678_90AB_CDEF
        var keys: [String] = []
        var n: UInt64 = 0
        func printable(_ word: UInt64) -> Bool {
            (0..<8).allSatisfy { i in
                let b = UInt8(truncatingIfNeeded: word >> (8 * UInt64(i)))
                return b >= 0x20 && b < 0x7F && b != 0x22 && b != 0x5C
            }
        }
        while keys.count < count {
            n += 1
            // The first word: "k" and seven base-16 digits of n written "a"…"p".
            var first: UInt64 = 0x6B
            for i in 1..<8 { first |= UInt64(0x61 + UInt8((n >> (4 * UInt64(i - 1))) & 15)) << (8 * UInt64(i)) }
            var h = (16 &* k ^ first) &* k
            h ^= h >> 29
            let second = (target &* inverse) ^ h
            guard printable(second) else { continue }
            let bytes = (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? first : second) >> (8 * UInt64(i % 8))) }
            keys.append(String(decoding: bytes, as: UTF8.self))
        }
        return keys
    }

    /// Keys crafted to collide are still told apart, and a repeat among them still keeps its last value, in
    /// objects small enough for the filter and large enough for the table.
    @Test(arguments: [40, 200]) func collidingKeysAreToldApart(count: Int) throws {
        let keys = Self.collidingKeys(count)
        #expect(Set(keys).count == count)
        #expect(Set(keys.map { KeyTable<Int>.hash($0) }).count == 1)
        var members = keys.enumerated().map { "\"\($1)\":\($0)" }
        members.append("\"\(keys[5])\":-5")
        let value = try parse("{\(members.joined(separator: ","))}")
        #expect(value.objectValue?.count == count)
        #expect(value[keys[5]] == -5)
        #expect(value[keys[count - 1]] == .int(Int64(count - 1)))
    }
}

@Suite struct KeyInternerTests {
    /// A key another reader recognizes (`recognize`, as the form decoder does after percent-decoding) is
    /// remembered for the JSON reader only when JSON writes it without escapes: the reader compares a remembered
    /// key's bytes with its input's raw text, and would otherwise take `{"a"b":1}` for the key `a"b`.
    @Test func aKeyJSONWouldEscapeIsRecognizedButNotRemembered() throws {
        let keys = KeyInterner(["a\"b", "plain"])
        let slot = keys.slot(inside: KeyInterner.document)
        for key in ["a\"b", "plain"] {
            let found = Array(key.utf8).withUnsafeBytes { keys.recognize($0, slot: slot) }
            #expect(found.shared?.string == key)
        }
        // "plain" was remembered last: the reader still reads it, and a quote inside a key is still refused.
        func read(_ text: String) throws(JSONError) -> JSONValue {
            try Array(text.utf8).withUnsafeBufferPointer { (p) throws(JSONError) in
                try JSONReader.parse(buffer: p, keys: keys)
            }
        }
        #expect(try read(#"{"plain":1}"#) == ["plain": 1])
        let keysOnly = KeyInterner(["a\"b"])
        _ = Array("a\"b".utf8).withUnsafeBytes {
            keysOnly.recognize($0, slot: keysOnly.slot(inside: KeyInterner.document))
        }
        #expect(throws: JSONError.self) {
            try Array(#"{"a"b":1}"#.utf8).withUnsafeBufferPointer { (p) throws(JSONError) in
                try JSONReader.parse(buffer: p, keys: keysOnly)
            }
        }
        #expect(try read(#"{"a\"b":1}"#) == ["a\"b": 1])
    }

    let interner = KeyInterner(["call_id", "a", "custom_channel_vars", "", "owner_id", "call_id"])

    func intern(_ key: String) -> String? {
        Array(key.utf8).withUnsafeBytes { interner.string(for: $0, hash: KeyTable<Int>.hash(bytes: $0)) }
    }

    @Test func givesTheKnownKeysAndNothingElse() {
        #expect(interner.count == 5)
        #expect(intern("call_id") == "call_id")
        #expect(intern("custom_channel_vars") == "custom_channel_vars")
        #expect(intern("") == "")
        #expect(intern("call_ie") == nil)
        #expect(intern("call_id_") == nil)
        #expect(intern("b") == nil)
    }

    /// Parsing with an interner gives the same value as without: known and unknown keys, escaped keys, nested
    /// objects, duplicates, non-ASCII keys.
    @Test func parsingWithAnInternerGivesTheSameValue() throws {
        let documents = [
            #"{"call_id":"x","a":1,"other":{"owner_id":"o","a":[{"a":2}]},"custom_channel_vars":{}}"#,
            #"{"\u0061":1,"a":2,"call\u005fid":"y","call_id":"z"}"#,
            #"{"a":1,"b":2,"a":3,"":4,"é":5,"owner_id":null}"#,
        ]
        for text in documents {
            let bytes = Array(text.utf8)
            let plain = try JSONReader.parse(bytes)
            let shared = try bytes.withUnsafeBufferPointer { try JSONReader.parse(buffer: $0, keys: interner) }
            #expect(shared == plain, "\(text)")
            #expect(shared.objectValue?.keys == plain.objectValue?.keys, "\(text)")
        }
    }

    func parseShared(_ text: String, limits: JSONLimits = .default) throws -> JSONValue {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { try JSONReader.parse(buffer: $0, limits: limits, keys: interner) }
    }

    /// `position(ofShared:)` knows the interner's own Strings by their words: the keys the reader hands out, and
    /// small ones (whose words are their bytes) however they were made; a large key built elsewhere is not one of
    /// them, though `position(of:)` finds its contents.
    @Test func sharedStringsAreKnownByTheirWords() throws {
        let object = try #require(try parseShared(#"{"custom_channel_vars":1,"a":2}"#).objectValue)
        let keys = object.map(\.key)
        #expect(interner.position(ofShared: keys[0]) == interner.position(of: "custom_channel_vars"))
        #expect(interner.position(ofShared: keys[1]) == interner.position(of: "a"))
        let built = String(decoding: Array("custom_channel_vars".utf8), as: UTF8.self)
        #expect(interner.position(ofShared: built) == nil)
        #expect(interner.position(of: built) != nil)
        #expect(interner.position(ofShared: String(decoding: [UInt8(ascii: "a")], as: UTF8.self)) != nil)
        #expect(interner.position(ofShared: "b") == nil && interner.position(of: "b") == nil)
    }

    /// The interner remembers which key followed which, per place: after one document, the slot after `call_id`
    /// at the top names `a`, and the one inside `custom_channel_vars` names `owner_id`.
    @Test func theKeyOrderOfADocumentIsRemembered() throws {
        _ = try parseShared(#"{"call_id":1,"a":2,"custom_channel_vars":{"owner_id":3,"a":4}}"#)
        let view = interner.table.view
        func position(_ key: String) -> Int {
            Array(key.utf8).withUnsafeBytes { view.position(for: $0, hash: KeyTable<Int>.hash(bytes: $0))! }
        }
        let top = view.slot(inside: KeyInterner.View.top)
        let nested = view.slot(inside: position("custom_channel_vars"))
        #expect(view.prediction(top) == position("call_id"))
        #expect(view.prediction(view.slot(after: position("call_id"), within: top)) == position("a"))
        #expect(view.prediction(view.slot(after: position("a"), within: top)) == position("custom_channel_vars"))
        #expect(view.prediction(nested) == position("owner_id"))
        #expect(view.prediction(view.slot(after: position("owner_id"), within: nested)) == position("a"))
    }

    /// Whatever the interner remembers, a document reads the same as without it: a key order that changes from
    /// one document to the next, a remembered key that is only a prefix of the key read (or longer than it), a
    /// remembered key that is a duplicate here, the same key escaped, and the input ending inside the key.
    @Test func rememberedKeyOrdersNeverChangeTheValue() throws {
        let documents = [
            #"{"call_id":1,"a":2,"owner_id":3}"#,
            #"{"call_id":1,"a":2,"owner_id":3}"#,
            #"{"call_id":1,"ab":2,"owner_id":3}"#,
            #"{"call_id":1,"":2,"owner_id":3}"#,
            #"{"call_id":1,"call_id":2,"a":3}"#,
            #"{"a":0,"call_id":1,"a":2,"owner_id":3}"#,
            #"{"call_id":1,"\u0061":2,"owner_id":3}"#,
            #"{"call_i":1,"a":2}"#,
            #"{"call_id":1,"a":{"call_id":{"a":[{"owner_id":1},{"owner_id":2,"a":3}]}},"owner_id":3}"#,
            #"{"call_id":1,"a":{"call_id":{"a":[{"owner_id":1},{"a":3,"owner_id":2}]}},"owner_id":3}"#,
            #"{"call_id":1,"a":2,"owner_id":3}"#,
        ]
        for round in 0..<3 {
            for text in documents {
                let plain = try JSONReader.parse(Array(text.utf8))
                let shared = try parseShared(text)
                #expect(shared == plain, "round \(round): \(text)")
                #expect(shared.objectValue?.keys == plain.objectValue?.keys, "round \(round): \(text)")
            }
        }
        _ = try parseShared(#"{"call_id":1,"a":2}"#)
        for cut in [#"{"call_id":1,"a"#, #"{"call_id":1,"a""#, #"{"call_id":1,"#] {
            #expect(throws: JSONError.self, "\(cut)") { try parseShared(cut) }
        }
    }

    /// Random documents over a few keys, known and unknown, nested and repeated, read one after another with one
    /// interner (so each starts from what the last left), equal those read without it.
    @Test func randomDocumentsReadTheSameWithRememberedOrders() throws {
        var random = SplitMix(seed: 17)
        let keys = ["call_id", "a", "custom_channel_vars", "", "owner_id", "b", "call_i", "owner_id_", #"\u0061"#]
        func object(_ depth: Int) -> String {
            let members = (0..<random.next(upTo: 6)).map { _ -> String in
                let key = keys[random.next(upTo: keys.count)]
                let value =
                    depth < 3 && random.next(upTo: 4) == 0
                    ? (random.next(upTo: 2) == 0 ? object(depth + 1) : "[\(object(depth + 1)),\(object(depth + 1))]")
                    : String(random.next(upTo: 100))
                return "\"\(key)\":\(value)"
            }
            return "{" + members.joined(separator: ",") + "}"
        }
        for _ in 0..<2_000 {
            let text = object(0)
            let plain = try JSONReader.parse(Array(text.utf8))
            let shared = try parseShared(text)
            #expect(shared == plain, "\(text)")
            #expect(shared.objectValue?.keys == plain.objectValue?.keys, "\(text)")
        }
    }

    /// Readers on several threads share what one interner remembers, each with its own key order.
    @Test func readersOnSeveralThreadsShareAnInterner() async throws {
        let interner = interner
        let documents = [
            #"{"call_id":1,"a":2,"owner_id":3}"#, #"{"owner_id":3,"a":2,"call_id":1}"#,
            #"{"a":{"call_id":1,"owner_id":{"a":1}},"call_id":2}"#, #"{"a":1,"b":2,"a":3,"call_id":{"a":[]}}"#,
        ]
        let failures = await withTaskGroup(of: Int.self) { group in
            for text in documents {
                group.addTask {
                    let bytes = Array(text.utf8)
                    guard let plain = try? JSONReader.parse(bytes) else { return 1 }
                    var failures = 0
                    for _ in 0..<2_000 {
                        let shared = try? bytes.withUnsafeBufferPointer {
                            try JSONReader.parse(buffer: $0, keys: interner)
                        }
                        if shared != plain || shared?.objectValue?.keys != plain.objectValue?.keys { failures += 1 }
                    }
                    return failures
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
    }

    @Test func anInternedKeyStillObeysTheStringLimit() throws {
        let bytes = Array(#"{"custom_channel_vars":1}"#.utf8)
        #expect(throws: JSONError.self) {
            try bytes.withUnsafeBufferPointer {
                try JSONReader.parse(buffer: $0, limits: JSONLimits(maxStringBytes: 8), keys: interner)
            }
        }
        // Also when the key is the one remembered from the last document.
        _ = try parseShared(#"{"custom_channel_vars":1}"#)
        #expect(throws: JSONError.self) {
            try parseShared(#"{"custom_channel_vars":1}"#, limits: JSONLimits(maxStringBytes: 8))
        }
    }
}

/// `KeyTable` and `KeyInterner` share their slot index (`HashSlots`): every key is found, none is invented,
/// and in a table a repeated key keeps its last value.
@Suite struct KeyTableTests {
    @Test func everyKeyIsFoundAndARepeatedKeyKeepsItsLastValue() {
        let keys = (0..<300).map { "key_\($0)_" + String(repeating: "x", count: $0 % 23) }
        let table = KeyTable(keys.enumerated().map { ($1, $0) } + [(keys[7], -7), ("", 1000)])
        #expect(table.count == 301)
        for (i, key) in keys.enumerated() { #expect(table[key] == (i == 7 ? -7 : i), "\(key)") }
        #expect(table[""] == 1000)
        #expect(table["key_7"] == nil)
        #expect(table["nothing"] == nil)
        #expect(KeyTable<Int>([])["anything"] == nil)
    }

    /// A table `recognizing` an interner finds keys by the Strings the interner hands out (their two words), and
    /// still by contents for any other String with the same bytes: a copy built elsewhere, a small or a large one.
    @Test func aRecognizingTableFindsSharedStringsAndCopiesAlike() throws {
        let keys = ["id", "caller_id_number", "a_key_well_over_fifteen_bytes", "é_non_ascii", "only_in_table"]
        let interner = KeyInterner(keys.dropLast() + ["only_interned"])
        let table = KeyTable(keys.enumerated().map { ($1, $0) }).recognizing(interner)
        // The Strings the reader takes from the interner.
        let text = #"{"id":0,"caller_id_number":1,"a_key_well_over_fifteen_bytes":2,"é_non_ascii":3,"only_interned":4}"#
        let bytes = Array(text.utf8)
        let parsed = try bytes.withUnsafeBufferPointer { try JSONReader.parse(buffer: $0, keys: interner) }
        let object = try #require(parsed.objectValue)
        for member in object where member.key != "only_interned" {
            #expect(table[member.key] == keys.firstIndex(of: member.key), "\(member.key)")
            #expect(table.position(of: member.key) == keys.firstIndex(of: member.key), "\(member.key)")
        }
        #expect(table["only_interned"] == nil)
        // Copies with their own storage, built from bytes at run time.
        for (i, key) in keys.enumerated() {
            let copy = String(decoding: Array(key.utf8), as: UTF8.self)
            #expect(table[copy] == i, "\(key)")
        }
        for other in ["", "i", "ids", "caller_id_numbeR", "a_key_well_over_fifteen_bytez", "only_interned"] {
            #expect(table[other] == nil, "\(other)")
        }
        #expect(table.values == [0, 1, 2, 3, 4])
    }
}

/// `ValueStrings`: a string value read again is handed out as the String kept for it, and a value that differs
/// from the kept one in any byte, or takes its slot over, still reads as itself.
@Suite struct ValueStringsTests {
    /// Reads `text` with the thread's shared values. (The tests are synchronous: each runs on one thread, so
    /// its reads share one `ValueStrings`.)
    func read(_ text: String) throws -> JSONValue {
        try Array(text.utf8).withUnsafeBufferPointer { (p) throws(JSONError) in
            try JSONReader.parse(buffer: p, sharedValues: true)
        }
    }

    /// A String's two words: equal for two Strings that share their storage (or are the same small string).
    func words(_ string: String?) -> [UInt64] {
        guard let string else { return [] }
        let pair = unsafeBitCast(string, to: (UInt64, UInt64).self)
        return [pair.0, pair.1]
    }

    @Test func aValueReadAgainSharesTheStringReadBefore() throws {
        let id = "91eb05e5c68d7ca05e7618b6821d2d16"
        let first = try read(#"{"account_id":"\#(id)"}"#)
        let again = try read(#"{"other":[1,{"owner_id":"\#(id)"}]}"#)
        #expect(first["account_id"]?.stringValue == id)
        #expect(again["other"]?.arrayValue?[1]["owner_id"]?.stringValue == id)
        #expect(
            words(first["account_id"]?.stringValue) == words(again["other"]?.arrayValue?[1]["owner_id"]?.stringValue))
        // Without shared values each read makes its own.
        let plain = try JSONReader.parse(Array(#"{"account_id":"\#(id)"}"#.utf8))
        #expect(plain["account_id"]?.stringValue == id)
        #expect(words(plain["account_id"]?.stringValue) != words(first["account_id"]?.stringValue))
    }

    /// Two values of one length that land on one slot, found by trying `make(0)`, `make(1)`… (512 slots: at most
    /// 513 tries).
    func twoOfOneSlot(_ make: (Int) -> String) -> [String] {
        var seen: [Int: String] = [:]
        for i in 0..<1_000 {
            let value = make(i)
            let slot = Array(value.utf8).withUnsafeBufferPointer { ValueStrings.slot($0.baseAddress!, $0.count) }
            if let other = seen[slot] { return [other, value] }
            seen[slot] = value
        }
        Issue.record("no two values on one slot in 1,000 tries")
        return []
    }

    /// Values that share a slot and a length, so that only their bytes tell them apart: the same first and last
    /// eight bytes (all the slot's hash reads) and different bytes between; and, found by trying, two of five
    /// bytes (compared one by one) and two of twelve with the same first eight (told apart only by the last
    /// eight, read where they end). Each read gives its own text, in any order.
    @Test func valuesThatShareASlotEachReadAsThemselves() throws {
        var sameSlot = ["aaaaaaaa-X-bbbbbbbb", "aaaaaaaa-Y-bbbbbbbb", "aaaaaaaa-Z-bbbbbbbb"]
        sameSlot += twoOfOneSlot { "s\(1_000 + $0)" }
        sameSlot += twoOfOneSlot { "abcdefgh\(1_000 + $0)" }
        #expect(sameSlot.count == 7)
        for round in 0..<3 {
            for value in round == 1 ? sameSlot.reversed() : sameSlot {
                #expect(try read(#"{"v":"\#(value)"}"#)["v"]?.stringValue == value)
                #expect(try read(#"["\#(value)"]"#).arrayValue?.first?.stringValue == value)
            }
        }
    }

    /// Short and empty values, values that differ only in their last byte or their length, escaped, non-ASCII
    /// and long ones (never kept), each read twice.
    @Test func everyKindOfStringReadsAsItselfTwice() throws {
        let long = String(repeating: "x", count: ValueStrings.maxBytes) + "y"
        let values: [(json: String, text: String)] = [
            ("", ""), ("a", "a"), ("ab", "ab"), ("abc", "abc"), ("abd", "abd"), ("inbound", "inbound"),
            ("inbound1", "inbound1"), ("inbound2", "inbound2"), ("+15556783945", "+15556783945"),
            ("+155567839450", "+155567839450"), (#"a\"b"#, "a\"b"), (#"\u0041BC"#, "ABC"), ("ABC", "ABC"),
            ("é-é", "é-é"), (long, long), (String(long.dropLast()), String(long.dropLast())),
        ]
        for _ in 0..<2 {
            for (json, text) in values {
                #expect(try read(#"{"k":"\#(json)"}"#)["k"]?.stringValue == text, "\(json)")
            }
        }
    }
}
