import Delivery
import EventStore
import Foundation
import HTTPTypes
import Hummingbird

/// The admin endpoints need the token or Basic credentials; with neither configured, only loopback peers
/// may use them. Runs on the admin route group.
struct AdminAuthentication: RouterMiddleware {
    typealias Context = SwitchboardRequestContext
    let configuration: ServerConfiguration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if configuration.token != nil || configuration.basicAuth != nil {
            try Credentials(configuration).check(
                authorization: request.headers[.authorization],
                query: HookIntake.splitURI(request.uri.description).query,
                peer: context.remoteAddress?.ipAddress, pathToken: nil)
        } else {
            guard Credentials.isLoopback(context.remoteAddress?.ipAddress ?? "") else {
                throw APIError(
                    .forbidden, code: "forbidden",
                    "admin endpoints need --token or --basic-auth to be used from other hosts")
            }
        }
        return try await next(request, context)
    }
}

/// Who may send: the hooks routes' checks (`HookIntake.refusal`), which the admin routes share.
struct Credentials {
    let configuration: ServerConfiguration
    init(_ configuration: ServerConfiguration) { self.configuration = configuration }

    /// Throws the 401/403 to answer, or returns when the request may proceed. `query` is the request's
    /// (`?token=`; read only with `--token` and no path token), `peer` its source address, `pathToken` the
    /// `/hooks/{hook}/{token}` segment.
    /// `authorization` is the request's `Authorization` header.
    func check(
        authorization: @autoclosure () -> String?, query: @autoclosure () -> String?, peer: String?,
        pathToken: String?
    ) throws(APIError) {
        if !configuration.allowedSources.isEmpty {
            let address = peer.flatMap(CIDR.parseAddress)
            guard let address, configuration.allowedSources.contains(where: { $0.contains(address) }) else {
                throw APIError(.forbidden, code: "forbidden", "source address not allowed")
            }
        }
        if let token = configuration.token {
            let given = pathToken ?? Self.token(inQuery: query() ?? "")
            guard let given, Self.constantTimeEqual(given, token) else {
                throw APIError(
                    .unauthorized, code: "unauthorized", "missing or wrong token (?token= or /hooks/{hook}/{token})")
            }
        }
        if let basic = configuration.basicAuth {
            let header = authorization() ?? ""
            let expected = "Basic " + Data(basic.utf8).base64EncodedString()
            guard Self.constantTimeEqual(header, expected) else {
                throw APIError(
                    .unauthorized, code: "unauthorized", "HTTP Basic credentials required",
                    headers: [.wwwAuthenticate: "Basic realm=\"switchboard\""])
            }
        }
    }

    static let loopback = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]

    /// Whether a textual address (`127.0.0.1`, `::1`) is a loopback one.
    static func isLoopback(_ address: String) -> Bool {
        guard let bytes = CIDR.parseAddress(address) else { return false }
        return loopback.contains { $0.contains(bytes) }
    }

    /// The `token=` pair of a query, which Kazoo may follow with a literal '?'.
    static func token(inQuery query: String) -> String? {
        QueryPieces.split(query).first { $0.piece.hasPrefix("token=") }.flatMap {
            String($0.piece.dropFirst(6)).removingPercentEncoding
        }
    }

    /// Compares without stopping at the first difference, so timing does not reveal the secret.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }
}

/// What a browser needs beyond `AdminAuthentication` on the console's routes:
/// - without `--token` or `--basic-auth`, loopback is the only check, so the `Host` must be a loopback name
///   too: a page elsewhere whose name an attacker re-points at 127.0.0.1 (DNS rebinding) cannot read events;
/// - actions (every method but GET) must carry `X-Switchboard-Console`, which the page sends and a form or
///   script on another site cannot without a CORS preflight this server never grants: no cross-site
///   redeliver or reload.
struct ConsoleGuard: RouterMiddleware {
    typealias Context = SwitchboardRequestContext
    static let actionHeader = HTTPField.Name("X-Switchboard-Console")!
    let configuration: ServerConfiguration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if configuration.token == nil, configuration.basicAuth == nil,
            !Self.isLoopbackName(request.head.authority ?? "")
        {
            throw APIError(
                .forbidden, code: "forbidden",
                "without --token or --basic-auth the console answers only to http://127.0.0.1 or http://localhost")
        }
        if request.method != .get, request.method != .head, request.headers[Self.actionHeader] == nil {
            throw APIError(
                .forbidden, code: "forbidden",
                "console actions need the X-Switchboard-Console header (the console page sends it)")
        }
        return try await next(request, context)
    }

    /// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
    static func isLoopbackName(_ authority: String) -> Bool {
        var host = authority.lowercased()
        if host.hasPrefix("[") {
            host = String(host.dropFirst().prefix { $0 != "]" })
        } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        return host == "localhost" || Credentials.isLoopback(host)
    }
}
