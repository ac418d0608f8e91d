/// Writes compact JSON text piece by piece, for data that lives in structs rather than in a `JSONValue`, and
/// whole `JSONValue`s (`JSONWriter` writes with it): raw UTF-8, `/` not escaped, members in the order written.
/// Commas go in by themselves; keys and values must alternate inside objects, which the caller's code shape
/// ensures (nothing here checks it).
///
/// Why piece by piece: the console's record of an event's rules was built as a tree of `JSONValue`s (an object
/// per rule, an array and an object per forward, HTTP call and log line), written, then dropped, for every
/// event: 18,900 instructions a request with the anchor rule (callgrind, journal on), most of it making and
/// freeing the tree.
///
/// The text goes into memory of its own, not an `Array`: each `append` to an array checks that the array is
/// not shared and has room, and with that a constant key cost about 180 instructions and a short string about
/// 340. Here a piece checks the room once and copies its bytes. Not copyable: the memory is freed once, when
/// the writer goes.
public struct JSONTextWriter: ~Copyable {
    private var base: UnsafeMutablePointer<UInt8>
    /// The bytes written so far.
    public private(set) var count = 0
    private var capacity: Int
    /// Nothing written yet in the current array or object, or a key was just written: no comma before the next.
    private var first = true

    public init(capacity: Int = 256) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// The text written so far, as bytes.
    public var bytes: [UInt8] { Array(written) }

    /// The text written so far.
    public var text: String { String(decoding: written, as: UTF8.self) }

    private var written: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }

    public mutating func openObject() {
        separate()
        put(UInt8(ascii: "{"))
        first = true
    }

    public mutating func closeObject() {
        put(UInt8(ascii: "}"))
        first = false
    }

    public mutating func openArray() {
        separate()
        put(UInt8(ascii: "["))
        first = true
    }

    public mutating func closeArray() {
        put(UInt8(ascii: "]"))
        first = false
    }

    /// A member's key; its value is whatever is written next.
    public mutating func key(_ key: String) {
        separate()
        quoted(key)
        put(UInt8(ascii: ":"))
        first = true
    }

    /// A member's key written as it is, quoted: for keys spelled in the source that need no escaping (no `"`,
    /// `\` or control characters; checked in debug builds). Escaping a constant key on every write was half
    /// of the cost of writing a rule's record.
    public mutating func rawKey(_ key: StaticString) {
        let length = key.utf8CodeUnitCount
        assert(
            !UnsafeBufferPointer(start: key.utf8Start, count: length).contains { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 }
        )
        reserve(length + 4)
        if !first { putReserved(UInt8(ascii: ",")) }
        putReserved(UInt8(ascii: "\""))
        putReserved(key)
        putReserved(UInt8(ascii: "\""))
        putReserved(UInt8(ascii: ":"))
        first = true
    }

    public mutating func string(_ value: String) {
        separate()
        quoted(value)
        first = false
    }

    /// The string, or `null` for nil.
    public mutating func string(_ value: String?) {
        guard let value else { return null() }
        string(value)
    }

    public mutating func int(_ value: Int64) {
        separate()
        integer(value)
        first = false
    }

    /// A finite double as `JSONWriter` writes it (`20.0`, `1e-07`); NaN and infinities, which JSON has no
    /// text for, as `null`.
    public mutating func double(_ value: Double) {
        guard value.isFinite else { return null() }
        separate()
        finite(value)
        first = false
    }

    public mutating func null() {
        separate()
        put("null")
        first = false
    }

    /// Any value, as `JSONWriter` writes it; one it cannot write (a NaN, a string that is not UTF-8) is written
    /// as `null` rather than failing the whole text.
    public mutating func value(_ value: JSONValue) {
        separate()
        let start = count
        do { try write(value) } catch {
            count = start
            put("null")
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

    /// `value` in full, or the first part of it that cannot be written (with the path to it). What was written
    /// of it before the failure stays: the caller cuts it off or drops the writer.
    mutating func write(_ value: JSONValue) throws(JSONWriter.Unencodable) {
        switch value {
        case .null: put("null")
        case .bool(let b): put(b ? "true" : "false")
        case .int(let i): integer(i)
        case .double(let d):
            guard d.isFinite else {
                throw .init(reason: "\(d) cannot be written as JSON (NaN and infinities are not JSON)")
            }
            finite(d)
        case .string(let s): quoted(s)
        case .bytes:
            throw .init(reason: "a string that is not valid UTF-8 cannot be written as JSON")
        case .array(let elements):
            put(UInt8(ascii: "["))
            for i in elements.indices {
                if i > 0 { put(UInt8(ascii: ",")) }
                do { try write(elements[i]) } catch {
                    var failure = error
                    failure.path.append("[\(i + 1)]")
                    throw failure
                }
            }
            put(UInt8(ascii: "]"))
        case .object(let object):
            put(UInt8(ascii: "{"))
            for i in object.members.indices {
                if i > 0 { put(UInt8(ascii: ",")) }
                quoted(object.members[i].key)
                put(UInt8(ascii: ":"))
                do { try write(object.members[i].value) } catch {
                    var failure = error
                    failure.path.append(".\(object.members[i].key)")
                    throw failure
                }
            }
            put(UInt8(ascii: "}"))
        }
    }

    /// A quoted string: plain runs copied whole (found eight bytes at a time), the rest escaped.
    mutating func quoted(_ s: String) {
        // In place when the string's bytes are at hand (native strings, small ones too); `withUTF8` needs a
        // mutable copy.
        let written: Void? = s.utf8.withContiguousStorageIfAvailable { quoted(bytes: $0) }
        if written == nil {
            var s = s
            s.withUTF8 { quoted(bytes: $0) }
        }
    }

    private mutating func quoted(bytes: UnsafeBufferPointer<UInt8>) {
        // Room for the whole string and its quotes when nothing needs escaping (the usual case).
        reserve(bytes.count + 2)
        putReserved(UInt8(ascii: "\""))
        var runStart = 0
        while true {
            let stop = JSONText.plainEnd(in: bytes, from: runStart)
            if runStart < stop { put(UnsafeBufferPointer(rebasing: bytes[runStart..<stop])) }
            guard stop < bytes.count else { break }
            reserve(6)
            putReserved(0x5C)
            switch bytes[stop] {
            case 0x22: putReserved(0x22)
            case 0x5C: putReserved(0x5C)
            case 0x0A: putReserved(UInt8(ascii: "n"))
            case 0x0D: putReserved(UInt8(ascii: "r"))
            case 0x09: putReserved(UInt8(ascii: "t"))
            case let b:
                let hex: StaticString = "0123456789abcdef"
                putReserved(UInt8(ascii: "u"))
                putReserved(UInt8(ascii: "0"))
                putReserved(UInt8(ascii: "0"))
                putReserved(hex.utf8Start[Int(b >> 4)])
                putReserved(hex.utf8Start[Int(b & 0xF)])
            }
            runStart = stop + 1
        }
        put(UInt8(ascii: "\""))
    }

    /// Decimal digits (`String(i)` made and freed a String per number).
    private mutating func integer(_ i: Int64) {
        reserve(20)
        if i < 0 { putReserved(UInt8(ascii: "-")) }
        var magnitude = i.magnitude
        var digits = 0
        var probe = magnitude
        repeat {
            digits += 1
            probe /= 10
        } while probe > 0
        var at = count + digits
        count = at
        repeat {
            at -= 1
            base[at] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
    }

    /// The shortest text that reads back as the same finite float, always with a '.' or exponent (`20.0`,
    /// `1e-07`). Its bytes are searched for the '.' or exponent: searching its Characters (grapheme breaking) and
    /// appending ".0" to a String made this 5,100 instructions a float (callgrind).
    private mutating func finite(_ d: Double) {
        var text = d.description
        let integral = text.withUTF8 { bytes in
            put(bytes)
            return !bytes.contains { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }
        }
        if integral { put(".0") }
    }

    private mutating func separate() {
        if !first { put(UInt8(ascii: ",")) }
    }

    /// Makes room for `more` bytes after the text.
    @inline(__always)
    private mutating func reserve(_ more: Int) {
        if capacity - count < more { grow(to: count + more) }
    }

    private mutating func grow(to needed: Int) {
        let larger = max(needed, 2 * capacity)
        let moved = UnsafeMutablePointer<UInt8>.allocate(capacity: larger)
        moved.moveInitialize(from: base, count: count)
        base.deallocate()
        base = moved
        capacity = larger
    }

    /// One byte, its room made already.
    @inline(__always)
    private mutating func putReserved(_ byte: UInt8) {
        base[count] = byte
        count += 1
    }

    @inline(__always)
    private mutating func put(_ byte: UInt8) {
        reserve(1)
        putReserved(byte)
    }

    private mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let start = bytes.baseAddress else { return }
        reserve(bytes.count)
        (base + count).initialize(from: start, count: bytes.count)
        count += bytes.count
    }

    private mutating func put(_ text: StaticString) {
        reserve(text.utf8CodeUnitCount)
        putReserved(text)
    }

    /// A literal's bytes, their room made already.
    @inline(__always)
    private mutating func putReserved(_ text: StaticString) {
        (base + count).initialize(from: text.utf8Start, count: text.utf8CodeUnitCount)
        count += text.utf8CodeUnitCount
    }
}
