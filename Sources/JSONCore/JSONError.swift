/// Why bytes could not be read as JSON (or a value could not be written as JSON), and where.
public struct JSONError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as a stable category tests and callers can switch on.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case syntax, invalidUTF8, limit, numberOutOfRange, notEncodable
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// Not JSON: an unexpected byte, a missing quote, trailing data, NaN/Infinity…
        public static let syntax = Kind(.syntax)
        /// A string's bytes are not valid UTF-8.
        public static let invalidUTF8 = Kind(.invalidUTF8)
        /// A configured limit (depth, keys, string length) was exceeded.
        public static let limit = Kind(.limit)
        /// A number too large for a 64-bit float.
        public static let numberOutOfRange = Kind(.numberOutOfRange)
        /// A value JSON cannot express (a non-UTF-8 string, NaN, Infinity).
        public static let notEncodable = Kind(.notEncodable)
        public var description: String { base.rawValue }
    }

    public var kind: Kind
    /// What happened, in words that say what to fix.
    public var message: String
    /// The byte offset in the input where it happened, when reading.
    public var offset: Int?

    public init(_ kind: Kind, _ message: String, offset: Int? = nil) {
        self.kind = kind
        self.message = message
        self.offset = offset
    }

    public var description: String {
        if let offset { return "\(message) (at byte \(offset))" }
        return message
    }
}

/// Bounds on what a reader accepts, so hostile input costs bounded time and memory.
public struct JSONLimits: Sendable, Hashable {
    /// Deepest nesting of objects and arrays. Default 32.
    public var maxDepth: Int
    /// Most object members plus array elements in one document. Default 10,000.
    public var maxKeys: Int
    /// Longest string (key or value), in bytes after unescaping. Default 65,536.
    public var maxStringBytes: Int

    public init(maxDepth: Int = 32, maxKeys: Int = 10_000, maxStringBytes: Int = 65_536) {
        self.maxDepth = maxDepth
        self.maxKeys = maxKeys
        self.maxStringBytes = maxStringBytes
    }

    public static let `default` = JSONLimits()
}
