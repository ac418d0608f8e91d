import AsyncHTTPClient
import Crypto
import Foundation
import JSONCore
import NIOCore
import NIOHTTP1
import Synchronization

/// A client for Kazoo's crossbar API, as much of it as hook management needs (../shared/kazoo/crossbar-webhooks.md):
/// authentication (API key or user), the `{"data": …}` envelope, errors with what Kazoo said, paging by
/// `next_start_key`, and one new token when a request comes back 401 (tokens expire after an hour).
final class Crossbar: Sendable {
    enum Credentials: Sendable {
        case apiKey(String)
        /// user_auth: `credentials` = md5 hex of "user:password" (the user name lowercased).
        case user(name: String, password: String, accountName: String)
    }

    let base: String
    let account: String
    let credentials: Credentials
    /// Redirects are not followed: AsyncHTTPClient would carry `X-Auth-Token` to another origin (it drops only
    /// `Authorization`, `Cookie` and the like), and re-send a login's body with its credentials on a 307 or
    /// 308, or on a 301 or 302 to anything but a POST (the login is a PUT).
    let http = HTTPClient(
        eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
    let tokenBox = Mutex<String?>(nil)
    var token: String? {
        get { tokenBox.withLock { $0 } }
        set { tokenBox.withLock { $0 = newValue } }
    }

    init(api: String, account: String, credentials: Credentials) {
        base = api.hasSuffix("/") ? String(api.dropLast()) : api
        self.account = account
        self.credentials = credentials
    }

    func shutdown() async { try? await http.shutdown() }

    /// A client with an API key, else a user's credentials; nil when neither is complete (the caller says which
    /// options it takes).
    static func make(
        api: String, account: String, apiKey: String?, user: String?, password: String?, accountName: String?
    ) -> Crossbar? {
        if let apiKey { return Crossbar(api: api, account: account, credentials: .apiKey(apiKey)) }
        guard let user, !user.isEmpty, let password, let accountName, !accountName.isEmpty else { return nil }
        return Crossbar(
            api: api, account: account, credentials: .user(name: user, password: password, accountName: accountName))
    }

    /// Runs `body`, then shuts the HTTP client down whether it threw or not (AsyncHTTPClient requires it).
    func using<T>(_ body: (Crossbar) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await shutdown()
            return result
        } catch {
            await shutdown()
            throw error
        }
    }

    /// One crossbar request: the parsed envelope of a 2xx answer, else an error saying what Kazoo said.
    @discardableResult
    func request(_ method: HTTPMethod, _ path: String, data: JSONValue? = nil, authenticated: Bool = true) async throws
        -> JSONValue
    {
        var fresh = false
        if authenticated, token == nil {
            try await authenticate()
            fresh = true
        }
        let (status, body) = try await send(method, path, data: data, authenticated: authenticated)
        if status == 401, authenticated, !fresh {
            // Expired (or revoked): one new token, one more try.
            try await authenticate()
            let (again, body) = try await send(method, path, data: data, authenticated: true)
            return try Self.check(again, body, method, path)
        }
        return try Self.check(status, body, method, path)
    }

    func send(_ method: HTTPMethod, _ path: String, data: JSONValue?, authenticated: Bool) async throws -> (
        Int, JSONValue
    ) {
        let (status, bytes) = try await exchange(method, path, data: data, authenticated: authenticated)
        return (status, (try? JSONReader.parse(Array(buffer: bytes))) ?? .null)
    }

    /// A plain request's text body (tests read /metrics with it).
    func sendText(_ method: HTTPMethod, _ path: String) async throws -> (Int, String) {
        let (status, bytes) = try await exchange(method, path, data: nil, authenticated: false)
        return (status, String(buffer: bytes))
    }

    /// One HTTP exchange: the status and the body (up to 16 MiB).
    func exchange(_ method: HTTPMethod, _ path: String, data: JSONValue?, authenticated: Bool) async throws -> (
        Int, ByteBuffer
    ) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        if authenticated, let token { request.headers.add(name: "X-Auth-Token", value: token) }
        if let data {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONWriter.encode(["data": data])))
        }
        let response: HTTPClientResponse
        do { response = try await http.execute(request, timeout: .seconds(30)) } catch {
            throw CommandFailure("Kazoo's API at \(base) did not answer \(method) \(path): \(error)")
        }
        if (300..<400).contains(response.status.code), let location = response.headers.first(name: "Location") {
            throw CommandFailure(
                "Kazoo's API at \(base) answered \(method) \(path) with \(response.status.code), a redirect to \(location);"
                    + " not followed (it would take the credentials along): give the API's own URL as --api")
        }
        return (Int(response.status.code), try await response.body.collect(upTo: 16 << 20))
    }

    static func check(_ status: Int, _ body: JSONValue, _ method: HTTPMethod, _ path: String) throws -> JSONValue {
        guard !(200..<300).contains(status) else { return body }
        let message = body["message"]?.stringValue ?? "HTTP \(status)"
        var detail = ""
        if message == "validation error", case .object(let fields)? = body["data"] {
            // {"uri": {"error": {"message": "invalid client URL", "value": "…"}}}
            detail = fields.map { field in
                let rules =
                    field.value.objectValue.map { rules in
                        rules.map { rule in
                            (rule.value["message"]?.stringValue ?? rule.key)
                                + (rule.value["value"].map { " (\(HostValueText.text($0)))" } ?? "")
                        }.joined(separator: "; ")
                    } ?? ""
                return "\(field.key): \(rules)"
            }.joined(separator: ", ")
        } else if let text = body["data"]?["message"]?.stringValue, text != message {
            detail = text
        }
        var hint = ""
        if status == 401 { hint = " (check the API key, or the user, password and account name)" }
        if status == 429 { hint = " (Kazoo's rate limit: wait and run it again)" }
        throw CommandFailure(
            "Kazoo refused \(method) \(path): \(status) \(message)\(detail.isEmpty ? "" : ": " + detail)\(hint)")
    }

    /// Gets a token with the configured credentials.
    func authenticate() async throws {
        token = nil
        let path: String
        let data: JSONValue
        switch credentials {
        case .apiKey(let key):
            path = "/v2/api_auth"
            data = ["api_key": .string(key)]
        case .user(let name, let password, let accountName):
            path = "/v2/user_auth"
            let digest = Insecure.MD5.hash(data: Array("\(name.lowercased()):\(password)".utf8))
            data = [
                "credentials": .string(digest.map { String(format: "%02x", $0) }.joined()),
                "account_name": .string(accountName), "method": "md5",
            ]
        }
        let answer = try await request(.PUT, path, data: data, authenticated: false)
        guard let token = answer["auth_token"]?.stringValue else {
            throw CommandFailure("Kazoo's \(path) answered without an auth_token")
        }
        self.token = token
    }

    /// Every item of a list, following `next_start_key` page by page.
    func list(_ path: String) async throws -> [JSONValue] {
        var items: [JSONValue] = []
        var start: String? = nil
        var seen: Set<String> = []
        repeat {
            var query = path
            if let start {
                query +=
                    (path.contains("?") ? "&" : "?") + "start_key="
                    + (start.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? start)
            }
            let page = try await request(.GET, query)
            items += page["data"]?.arrayValue ?? []
            start = page["next_start_key"].flatMap { $0 == .null ? nil : HostValueText.text($0) }
            // A key seen before would loop for ever: stop there.
            if let key = start, !seen.insert(key).inserted { start = nil }
        } while start != nil
        return items
    }
}

/// Short text for a JSON value in a message.
enum HostValueText {
    static func text(_ value: JSONValue) -> String {
        if case .string(let s) = value { return s }
        return (try? JSONWriter.string(value)) ?? "?"
    }
}
