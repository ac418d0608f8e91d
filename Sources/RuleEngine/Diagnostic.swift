/// A problem found in a rule file, with where it is.
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable {
        case error, warning
    }
    public var severity: Severity
    /// The file as the user named it (`rules/crm.lua`).
    public var file: String
    public var line: Int?
    public var message: String
    /// Lua's traceback, for errors raised while the file ran.
    public var traceback: String?

    public init(_ severity: Severity, file: String, line: Int?, _ message: String, traceback: String? = nil) {
        self.severity = severity
        self.file = file
        self.line = line
        self.message = message
        self.traceback = traceback
    }

    /// `rules/crm.lua:3: error: …`
    public var description: String {
        "\(file):\(line.map(String.init) ?? "1"): \(severity.rawValue): \(message)"
    }
}

/// Finds the line of a key or a quoted string in Lua source, so table-level messages can say file:line.
enum SourceLocator {
    /// The first line where `key` is assigned (`key =` or `["key"] =`), else nil.
    static func line(ofKey key: String, in source: String) -> Int? {
        for (number, line) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let code = line.split(separator: "--", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if containsAssignment(of: key, in: code) { return number + 1 }
        }
        return nil
    }

    /// The first line containing `"text"` or `'text'`.
    static func line(ofString text: String, in source: String) -> Int? {
        for (number, line) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where line.contains("\"\(text)\"") || line.contains("'\(text)'") {
            return number + 1
        }
        return nil
    }

    /// The line of the file's last `return`, where a rule table usually starts.
    static func returnLine(in source: String) -> Int? {
        var found: Int? = nil
        for (number, line) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where line.trimmingPrefix(while: { $0 == " " || $0 == "\t" }).hasPrefix("return") {
            found = number + 1
        }
        return found
    }

    private static func containsAssignment(of key: String, in code: Substring) -> Bool {
        let quoted = ["[\"\(key)\"]", "['\(key)']"]
        for candidate in [key] + quoted {
            var search = code[...]
            while let range = search.firstRange(of: candidate) {
                let before = code[..<range.lowerBound].last
                let after = code[range.upperBound...].drop(while: { $0 == " " || $0 == "\t" })
                let boundary = before.map { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") } ?? true
                if boundary, after.first == "=", after.dropFirst().first != "=" { return true }
                search = code[range.upperBound...]
            }
        }
        return false
    }
}
