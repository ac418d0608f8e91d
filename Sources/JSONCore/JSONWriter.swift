/// Writes a `JSONValue` as compact JSON text: raw UTF-8, `/` not escaped, members in their order.
public enum JSONWriter {
    /// Encodes `value`.
    /// - Throws: `JSONError.Kind.notEncodable` for a non-UTF-8 string (`bytes`) or a NaN/infinite float.
    public static func encode(_ value: JSONValue) throws(JSONError) -> [UInt8] {
        var writer = JSONTextWriter()
        try write(value, with: &writer)
        return writer.bytes
    }

    /// Encodes `value` as a String.
    public static func string(_ value: JSONValue) throws(JSONError) -> String {
        var writer = JSONTextWriter()
        try write(value, with: &writer)
        return writer.text
    }

    /// The size in bytes of `value`'s text, for a limit on it: `encode(value).count` without copying the text
    /// into an array.
    public static func byteCount(_ value: JSONValue) throws(JSONError) -> Int {
        var writer = JSONTextWriter()
        try write(value, with: &writer)
        return writer.count
    }

    private static func write(_ value: JSONValue, with writer: inout JSONTextWriter) throws(JSONError) {
        do { try writer.write(value) } catch {
            let path = "$" + error.path.reversed().joined()
            throw JSONError(.notEncodable, "\(path): \(error.reason)")
        }
    }

    /// A value that cannot be written, and the path to it, innermost component first. The path is built only
    /// on the way out of a failure: building it for every member on the way in ("$.payload.call_id") was most
    /// of the cost of encoding a small object.
    struct Unencodable: Error {
        var reason: String
        var path: [String] = []
    }

    /// Shortest text that reads back as the same float, always with a '.' or exponent (`20.0`, `1e-07`);
    /// `inf`, `-inf` or `nan` (whatever a NaN's sign bit) for the floats JSON has no text for.
    public static func formatDouble(_ d: Double) -> String {
        guard d.isFinite else { return d.description }
        var writer = JSONTextWriter(capacity: 32)
        writer.double(d)
        return writer.text
    }
}
