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
}
