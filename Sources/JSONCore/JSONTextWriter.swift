/// Writes compact JSON text piece by piece, for data that lives in structs rather than in a `JSONValue`: the
/// same text `JSONWriter` writes of the equivalent value (raw UTF-8, `/` not escaped, members in the order
/// written), without building that value first. Commas go in by themselves; keys and values must alternate
/// inside objects, which the caller's code shape ensures (nothing here checks it).
///
/// Why: the console's record of an event's rules was built as a tree of `JSONValue`s (an object per rule, an
/// array and an object per forward, HTTP call and log line), written, then dropped, for every event: 18,900
/// instructions a request with the anchor rule (callgrind, journal on), most of it making and freeing the tree.
public struct JSONTextWriter {
    public private(set) var bytes: [UInt8] = []
    /// Nothing written yet in the current array or object, or a key was just written: no comma before the next.
    private var first = true

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    /// The text written so far.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func openObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        first = true
    }

    public mutating func closeObject() {
        bytes.append(UInt8(ascii: "}"))
        first = false
    }

    public mutating func openArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        first = true
    }

    public mutating func closeArray() {
        bytes.append(UInt8(ascii: "]"))
        first = false
    }

    /// A member's key; its value is whatever is written next.
    public mutating func key(_ key: String) {
        separate()
        JSONWriter.writeString(key, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        first = true
    }

    /// A member's key written as it is, quoted: for keys spelled in the source that need no escaping (no `"`,
    /// `\` or control characters; checked in debug builds). Escaping a constant key on every write was half
    /// of the cost of writing a rule's record.
    public mutating func rawKey(_ key: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { raw in
            assert(!raw.contains { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 })
            bytes.append(contentsOf: raw)
        }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        first = true
    }

    public mutating func string(_ value: String) {
        separate()
        JSONWriter.writeString(value, into: &bytes)
        first = false
    }

    /// The string, or `null` for nil.
    public mutating func string(_ value: String?) {
        guard let value else { return null() }
        string(value)
    }

    public mutating func int(_ value: Int64) {
        separate()
        JSONWriter.writeInteger(value, into: &bytes)
        first = false
    }

    /// A finite double as `JSONWriter` writes it (`20.0`, `1e-07`); NaN and infinities, which JSON has no
    /// text for, as `null`.
    public mutating func double(_ value: Double) {
        guard value.isFinite else { return null() }
        separate()
        JSONWriter.writeDouble(value, into: &bytes)
        first = false
    }

    public mutating func null() {
        separate()
        bytes.append(contentsOf: "null".utf8)
        first = false
    }

    /// Any value, as `JSONWriter` writes it; one it cannot write (a NaN, a string that is not UTF-8) is written
    /// as `null` rather than failing the whole text.
    public mutating func value(_ value: JSONValue) {
        separate()
        let start = bytes.count
        do { try JSONWriter.write(value, into: &bytes) } catch {
            bytes.removeSubrange(start...)
            bytes.append(contentsOf: "null".utf8)
        }
        first = false
    }

    /// A member whose key needs no escaping (`rawKey`) and its string, or `null` for nil.
    public mutating func member(_ key: StaticString, _ value: String?) {
        rawKey(key)
        string(value)
    }

    /// A member and its integer, or `null` for nil.
    public mutating func member(_ key: StaticString, int value: Int?) {
        rawKey(key)
        if let value { int(Int64(value)) } else { null() }
    }

    /// A member and its double (`double`).
    public mutating func member(_ key: StaticString, double value: Double) {
        rawKey(key)
        double(value)
    }

    /// A member and any value (`value`).
    public mutating func member(_ key: StaticString, value: JSONValue) {
        rawKey(key)
        self.value(value)
    }

    private mutating func separate() {
        if !first { bytes.append(UInt8(ascii: ",")) }
    }
}
