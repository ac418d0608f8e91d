import JSONCore
import Testing

/// `JSONTextWriter` writes what `JSONWriter` writes of the same value, commas and nesting included.
@Suite struct JSONTextWriterTests {
    /// Writes `value` through the piecewise writer, the way a caller with its data in structs would.
    func write(_ value: JSONValue, into writer: inout JSONTextWriter) {
        switch value {
        case .object(let object):
            writer.openObject()
            for member in object {
                writer.key(member.key)
                write(member.value, into: &writer)
            }
            writer.closeObject()
        case .array(let elements):
            writer.openArray()
            for element in elements { write(element, into: &writer) }
            writer.closeArray()
        case .string(let s): writer.string(s)
        case .int(let i): writer.int(i)
        case .double(let d): writer.double(d)
        case .null: writer.null()
        default: writer.value(value)
        }
    }

    @Test func itWritesWhatJSONWriterWrites() throws {
        let values: [JSONValue] = [
            [:], [], .null, "plain", "q\"uote\\back\nline\u{1F}/slash ☎", .int(-9_223_372_036_854_775_808), 0.1, 3.0,
            1e300, true,
            [
                "a": [1, [2, [3, []]], [:], ["b": .null]], "": "empty key", "c": ["d": ["e": false]],
                "f": [.null, .null], "g": -0.5,
            ],
            [[], [[]], [[:]], ["x": []]],
        ]
        for value in values {
            var writer = JSONTextWriter()
            write(value, into: &writer)
            #expect(writer.text == (try JSONWriter.string(value)))
        }
        // Members and elements after a nested container, and mixed with `value`.
        var writer = JSONTextWriter()
        writer.openArray()
        writer.value(["k": [1, 2]])
        writer.string(nil as String?)
        writer.openObject()
        writer.key("v")
        writer.value([true])
        writer.rawKey("w")
        writer.int(1)
        writer.closeObject()
        writer.closeArray()
        #expect(writer.text == #"[{"k":[1,2]},null,{"v":[true],"w":1}]"#)
    }

    @Test func whatJSONCannotHoldIsWrittenAsNull() {
        var writer = JSONTextWriter()
        writer.openArray()
        writer.double(.nan)
        writer.value(["a": .double(.infinity)])
        writer.value(.bytes([0xFF, 0xFE]))
        writer.int(7)
        writer.closeArray()
        #expect(writer.text == "[null,null,null,7]")
    }

    /// The writer's memory grows as the text does, from its smallest (16 bytes): strings of every length up to
    /// 300 bytes, escapes at both ends and in the middle (so some land where the memory has to grow), keys,
    /// numbers and floats, each written into a writer of its own and into one long text. Each reads back as
    /// what was written, and the strings are escaped as the rule says, checked byte by byte.
    @Test func itsMemoryGrowsWithTheText() throws {
        func escaped(_ text: String) -> String {
            var out = "\""
            for byte in text.utf8 {
                switch byte {
                case 0x22: out += "\\\""
                case 0x5C: out += "\\\\"
                case 0x0A: out += "\\n"
                case 0x09: out += "\\t"
                case 0x0D: out += "\\r"
                case ..<0x20: out += "\\u00" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16)
                default: out.unicodeScalars.append(UnicodeScalar(byte))
                }
            }
            return out + "\""
        }
        var long = JSONTextWriter(capacity: 1)
        long.openArray()
        var expected: [JSONValue] = []
        for length in 0...300 {
            var text = String(repeating: "x", count: length)
            if length > 2 {
                let bytes = Array(text.utf8)
                var changed = bytes
                changed[0] = 0x01
                changed[length / 2] = 0x22
                changed[length - 1] = 0x5C
                text = String(decoding: changed, as: UTF8.self)
            }
            var alone = JSONTextWriter(capacity: 1)
            alone.string(text)
            #expect(alone.text == escaped(text), "length \(length)")
            long.string(text)
            long.openObject()
            long.rawKey("n")
            long.int(Int64(length) * -1_000_003)
            long.key(text)
            long.double(Double(length) + 0.25)
            long.closeObject()
            expected += [.string(text), ["n": .int(Int64(length) * -1_000_003), text: .double(Double(length) + 0.25)]]
        }
        long.closeArray()
        #expect(try parse(long.text) == .array(expected))
        #expect(long.bytes == Array(long.text.utf8))
    }

    /// A value that cannot be written leaves nothing of itself behind, however much of it was written (here
    /// more than the writer's memory held before it) and however much came before it.
    @Test func aValueThatCannotBeWrittenLeavesOnlyItsNull() throws {
        let big = String(repeating: "b", count: 500)
        var writer = JSONTextWriter(capacity: 1)
        writer.openArray()
        writer.string("before")
        writer.value([.string(big), ["k": .string(big), "bad": .double(.nan)]])
        writer.value([.string(big)])
        writer.closeArray()
        #expect(try parse(writer.text) == [.string("before"), .null, [.string(big)]])
    }
}
