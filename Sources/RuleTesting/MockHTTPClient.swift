public import JSONCore
import LuaRuntime
public import RuleEngine
import Synchronization

/// The HTTP client rule tests use: answers from `http.mock{…}` declarations, and a record of every request
/// nothing mocked (which fails the test).
public final class MockHTTPClient: OutboundHTTPClient {
    /// One `http.mock{…}`.
    public struct Mock: Sendable {
        /// nil matches any method.
        public var method: String?
        /// The URL, where `*` matches any run of characters.
        public var url: String
        public var status: Int
        public var headers: [OutboundRequest.Header]
        public var body: [UInt8]
        /// Fail the request with this message instead of answering.
        public var error: String?
        /// Fail the request as a timeout.
        public var timeout: Bool
    }

    private struct State {
        var mocks: [Mock] = []
        var unmocked: [String] = []
    }
    private let state = Mutex(State())

    public init() {}

    public func add(_ mock: Mock) { state.withLock { $0.mocks.append(mock) } }

    /// Requests no mock answered, as "METHOD URL".
    public var unmocked: [String] { state.withLock { $0.unmocked } }

    public func execute(_ request: OutboundRequest) async throws -> OutboundResponse {
        let mock = state.withLock { state -> Mock? in
            if let found = state.mocks.first(where: {
                ($0.method == nil || $0.method == request.method) && Self.glob($0.url, matches: request.url)
            }) {
                return found
            }
            state.unmocked.append("\(request.method) \(request.url)")
            return nil
        }
        guard let mock else {
            throw OutboundHTTPError("unmocked request: \(request.method) \(request.url)")
        }
        if mock.timeout { throw OutboundHTTPError("timed out after \(request.timeout) (mocked)") }
        if let error = mock.error { throw OutboundHTTPError(error) }
        return OutboundResponse(status: mock.status, headers: mock.headers, body: mock.body)
    }

    /// Whether `text` matches `pattern`, where `*` matches any run of characters and all else is literal.
    static func glob(_ pattern: String, matches text: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        guard parts.count > 1 else { return pattern == text }
        guard text.hasPrefix(parts[0]) else { return false }
        var rest = text.dropFirst(parts[0].count)
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let range = rest.firstRange(of: part) else { return false }
            rest = rest[range.upperBound...]
        }
        return rest.hasSuffix(parts.last!) && rest.count >= parts.last!.count
    }

    /// Reads `http.mock{ method, url, status, headers, body, json, error, timeout }`.
    public static func mock(from o: JSONObject) throws -> Mock {
        let allowed = ["method", "url", "status", "headers", "body", "json", "error", "timeout"]
        for key in o.keys where !allowed.contains(key) {
            let hint = Suggestions.closest(to: key, in: allowed).map { " (did you mean \($0)?)" } ?? ""
            throw HostFunctionError("http.mock: unknown key '\(key)'\(hint)")
        }
        guard let url = o["url"]?.stringValue else { throw HostFunctionError("http.mock: url is required") }
        var headers: [OutboundRequest.Header] = []
        for m in o["headers"]?.objectValue ?? JSONObject() {
            headers.append(.init(name: m.key, value: m.value.stringValue ?? ""))
        }
        var body: [UInt8] = []
        if let text = o["body"]?.stringValue { body = Array(text.utf8) }
        if let json = o["json"], json != .null {
            do { body = try JSONWriter.encode(json) } catch {
                throw HostFunctionError("http.mock: json: \(error.message)")
            }
            if !headers.contains(where: { $0.name.lowercased() == "content-type" }) {
                headers.append(.init(name: "Content-Type", value: "application/json"))
            }
        }
        return Mock(
            method: o["method"]?.stringValue?.uppercased(), url: url, status: Int(o["status"]?.intValue ?? 200),
            headers: headers, body: body, error: o["error"]?.stringValue, timeout: o["timeout"]?.boolValue ?? false)
    }
}
