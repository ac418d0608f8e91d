import Foundation
public import HTTPTypes
public import Hummingbird
import JSONCore
import NIOCore

/// A request Switchboard does not take: its status, a stable code and the reason, answered as
/// `{"error": reason, "code": code}` so Kazoo's attempt log and a person both read why.
public struct APIError: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    /// Stable and short (`syntax`, `limit`, `unauthorized`, `journal`…): what scripts and metrics key on.
    public var code: String
    /// What happened and, where it helps, what to do about it.
    public var message: String
    /// Headers to send with the answer (`WWW-Authenticate`, `Connection: close`).
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = Response.json(status, ["error": .string(message), "code": .string(code)])
        for field in headers { response.headers[field.name] = field.value }
        return response
    }
}

extension Response {
    /// A JSON answer.
    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        let text = (try? JSONWriter.string(value)) ?? "{}"
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
