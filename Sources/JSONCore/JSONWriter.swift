/// Writes a `JSONValue` as compact JSON text: raw UTF-8, `/` not escaped, members in their order.
public enum JSONWriter {
    /// Encodes `value`.
    /// - Throws: `JSONError.Kind.notEncodable` for a non-UTF-8 string (`bytes`) or a NaN/infinite float.
    public static func encode(_ value: JSONValue) throws(JSONError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        do { try write(value, into: &out) } catch {
            let path = "$" + error.path.reversed().joined()
            throw JSONError(.notEncodable, "\(path): \(error.reason)")
        }
        return out
    }

    /// Encodes `value` as a String.
    public static func string(_ value: JSONValue) throws(JSONError) -> String {
        String(decoding: try encode(value), as: UTF8.self)
    }

    /// A value that cannot be written, and the path to it, innermost component first. The path is built only
    /// on the way out of a failure: building it for every member on the way in ("$.payload.call_id") was most
    /// of the cost of encoding a small object.
    struct Unencodable: Error {
        var reason: String
        var path: [String] = []
    }

    static func write(_ value: JSONValue, into out: inout [UInt8]) throws(Unencodable) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): writeInteger(i, into: &out)
        case .double(let d):
            guard d.isFinite else {
                throw Unencodable(reason: "\(d) cannot be written as JSON (NaN and infinities are not JSON)")
            }
            writeDouble(d, into: &out)
        case .string(let s): writeString(s, into: &out)
        case .bytes:
            throw Unencodable(reason: "a string that is not valid UTF-8 cannot be written as JSON")
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for i in elements.indices {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                do { try write(elements[i], into: &out) } catch {
                    var failure = error
                    failure.path.append("[\(i + 1)]")
                    throw failure
                }
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            for i in object.members.indices {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(object.members[i].key, into: &out)
                out.append(UInt8(ascii: ":"))
                do { try write(object.members[i].value, into: &out) } catch {
                    var failure = error
                    failure.path.append(".\(object.members[i].key)")
                    throw failure
                }
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Shortest text that reads back as the same float, always with a '.' or exponent (`20.0`, `1e-07`).
    public static func formatDouble(_ d: Double) -> String {
        var out: [UInt8] = []
        writeDouble(d, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `formatDouble` straight into `out`. The text's bytes are searched for the '.' or exponent: searching its
    /// Characters (grapheme breaking) and appending ".0" to a String made this 5,100 instructions a float, the
    /// most expensive part of writing a request's `meta` (callgrind).
    static func writeDouble(_ d: Double, into out: inout [UInt8]) {
        var text = d.description
        let integral = text.withUTF8 { bytes in
            out.append(contentsOf: bytes)
            return !bytes.contains { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }
        }
        if integral { out.append(contentsOf: ".0".utf8) }
    }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Decimal digits straight into `out` (`String(i)` made and freed a String per number).
    static func writeInteger(_ i: Int64, into out: inout [UInt8]) {
        if i < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = i.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = 20
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            out.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }

    /// A quoted string: plain runs copied whole (found eight bytes at a time), the rest escaped.
    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { bytes in
            var runStart = 0
            while true {
                let stop = JSONText.plainEnd(in: bytes, from: runStart)
                if runStart < stop { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<stop])) }
                guard stop < bytes.count else { break }
                switch bytes[stop] {
                case 0x22: out.append(contentsOf: [0x5C, 0x22])
                case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case let b:
                    out.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                    out.append(hex[Int(b >> 4)])
                    out.append(hex[Int(b & 0xF)])
                }
                runStart = stop + 1
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
