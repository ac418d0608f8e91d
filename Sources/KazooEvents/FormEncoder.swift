public import JSONCore

/// Writes an object the way Kazoo's `kz_http_util:json_to_querystring/1` does (delivery.md §2), so samples
/// and tests can produce real-shaped form and query bodies, and forwards can send `format = "form"`.
///
/// Keys are written as they are (brackets literal); values are percent-encoded with `+` for space and
/// `[A-Za-z0-9._~-]` kept; nested objects become `a[b]=v`, lists `k[]=v`, objects inside lists are
/// JSON-encoded; an empty object or list becomes an empty segment (`&&`), and nulls are left out.
public enum FormEncoder {
    public static func encode(_ object: JSONObject) -> String {
        var segments: [String] = []
        for member in object {
            append(member.value, key: member.key, into: &segments)
        }
        return segments.joined(separator: "&")
    }

    static func append(_ value: JSONValue, key: String, into segments: inout [String]) {
        switch value {
        case .null: return
        case .object(let object):
            if object.isEmpty {
                segments.append("")
                return
            }
            for m in object { append(m.value, key: "\(key)[\(m.key)]", into: &segments) }
        case .array(let elements):
            if elements.isEmpty {
                segments.append("")
                return
            }
            for element in elements { appendElement(element, key: key, into: &segments) }
        default:
            segments.append("\(key)=\(escape(scalarText(value)))")
        }
    }

    static func appendElement(_ element: JSONValue, key: String, into segments: inout [String]) {
        switch element {
        case .object:
            let json = (try? JSONWriter.string(element)) ?? "{}"
            segments.append("\(key)[]=\(escape(json))")
        case .array(let inner):  // Kazoo concatenates nested lists
            for e in inner { appendElement(e, key: key, into: &segments) }
        case .null: return
        default:
            segments.append("\(key)[]=\(escape(scalarText(element)))")
        }
    }

    static func scalarText(_ value: JSONValue) -> String {
        switch value {
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .double(let d): JSONWriter.formatDouble(d)
        case .string(let s): s
        case .bytes(let b): String(decoding: b, as: UTF8.self)
        default: ""
        }
    }

    static let hex = Array("0123456789ABCDEF".utf8)

    /// Kazoo's `urlencode_plus`: space as `+`, unreserved kept, every other byte `%XX` (uppercase).
    public static func escape(_ text: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                UInt8(ascii: "-"):
                out.append(b)
            case UInt8(ascii: " "):
                out.append(UInt8(ascii: "+"))
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
