/// An error from Lua code or from the runtime around it: which kind, what it said, where, and the traceback.
public struct LuaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable category: what a caller switches on to decide what to do (retry, rebuild the state, report).
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case syntax, runtime, memory, timeout, instructions, conversion, setup
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The chunk did not compile.
        public static let syntax = Kind(.syntax)
        /// The script raised an error (`error(...)`, a bad index, a failed host call…).
        public static let runtime = Kind(.runtime)
        /// The state's memory cap was reached; the call was killed.
        public static let memory = Kind(.memory)
        /// The call ran past its wall-clock deadline; it was killed.
        public static let timeout = Kind(.timeout)
        /// The call ran more VM instructions than its budget; it was killed.
        public static let instructions = Kind(.instructions)
        /// A value could not cross between Lua and Swift (a function, a cycle, too deep…).
        public static let conversion = Kind(.conversion)
        /// The runtime itself could not be set up (out of memory creating a state).
        public static let setup = Kind(.setup)
        public var description: String { base.rawValue }
    }

    public var kind: Kind
    /// What the script or runtime said, without the traceback.
    public var message: String
    /// Lua's `stack traceback:` lines, when the error came from running code.
    public var traceback: String?
    /// The chunk (rule file) the error points at, when known.
    public var chunk: String?
    /// The line in `chunk`, when known.
    public var line: Int?

    public init(
        _ kind: Kind, _ message: String, traceback: String? = nil, chunk: String? = nil, line: Int? = nil
    ) {
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.chunk = chunk
        self.line = line
    }

    /// Whether the runtime stopped the script (budget, deadline, memory) rather than the script failing.
    public var isKill: Bool { kind == .memory || kind == .timeout || kind == .instructions }

    public var description: String {
        var text = message
        if let traceback { text += "\n" + traceback }
        return text
    }

    /// Splits Lua's "chunk:line: message\nstack traceback:\n…" into its parts.
    static func parse(kind: Kind, raw: String) -> LuaError {
        var message = raw
        var traceback: String? = nil
        if let range = raw.firstRange(of: "\nstack traceback:\n") {
            message = String(raw[..<range.lowerBound])
            traceback = "stack traceback:\n" + raw[range.upperBound...]
        }
        var error = LuaError(kind, message, traceback: traceback)
        (error.chunk, error.line) = location(in: message)
        return error
    }

    /// Finds the leading "chunk:line:" Lua puts in front of a message.
    static func location(in message: String) -> (String?, Int?) {
        let utf8 = Array(message.utf8.prefix(400))
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: ":") {
                var j = i + 1
                while j < utf8.count, utf8[j] >= UInt8(ascii: "0"), utf8[j] <= UInt8(ascii: "9") { j += 1 }
                if j > i + 1, j < utf8.count, utf8[j] == UInt8(ascii: ":"), i > 0 {
                    let chunk = String(decoding: utf8[0..<i], as: UTF8.self)
                    let line = Int(String(decoding: utf8[(i + 1)..<j], as: UTF8.self))
                    return (chunk, line)
                }
            }
            if utf8[i] == UInt8(ascii: "\n") { break }
            i += 1
        }
        return (nil, nil)
    }
}
