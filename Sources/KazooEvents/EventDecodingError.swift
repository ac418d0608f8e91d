import JSONCore

/// Why a request body is not an acceptable event, in words that say what to fix. Each maps to a 4xx.
public struct EventDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case emptyBody = "empty_body"
            case syntax
            case invalidUTF8 = "invalid_utf8"
            case limit
            case notAnObject = "not_an_object"
            case wrongType = "wrong_type"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// No bytes (or only white space).
        public static let emptyBody = Kind(.emptyBody)
        /// Not JSON / not form-encoded as expected (with the byte offset).
        public static let syntax = Kind(.syntax)
        /// Bytes that are not UTF-8 (with the byte offset).
        public static let invalidUTF8 = Kind(.invalidUTF8)
        /// Body size, depth, key count or string length over the configured limit.
        public static let limit = Kind(.limit)
        /// JSON whose top level is an array or a scalar: Kazoo always sends an object.
        public static let notAnObject = Kind(.notAnObject)
        /// A known field whose value cannot be its type (with the field path).
        public static let wrongType = Kind(.wrongType)
        /// A short machine-readable code: `empty_body`, `syntax`, `invalid_utf8`, `limit`, `not_an_object`,
        /// `wrong_type`.
        public var code: String { base.rawValue }
        public var description: String { base.rawValue }
    }

    public var kind: Kind
    public var message: String
    /// Byte offset in the body, for syntax and UTF-8 errors.
    public var offset: Int?
    /// Dotted path of the offending field, for type errors (`notify.duration_seconds`).
    public var path: String?

    public init(_ kind: Kind, _ message: String, offset: Int? = nil, path: String? = nil) {
        self.kind = kind
        self.message = message
        self.offset = offset
        self.path = path
    }

    public var description: String {
        var text = message
        if let offset { text += " (at byte \(offset))" }
        return text
    }

    static func syntax(_ message: String, offset: Int?) -> Self { Self(.syntax, message, offset: offset) }
    static func invalidUTF8(_ message: String, offset: Int?) -> Self { Self(.invalidUTF8, message, offset: offset) }
    static func limit(_ message: String) -> Self { Self(.limit, message) }

    /// Wraps a JSON reader error.
    init(json error: JSONError) {
        let kind: Kind
        switch error.kind {
        case .invalidUTF8: kind = .invalidUTF8
        case .limit: kind = .limit
        default: kind = .syntax
        }
        self.init(kind, "invalid JSON: \(error.message)", offset: error.offset)
    }
}
