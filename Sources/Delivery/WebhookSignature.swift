import Crypto
import Foundation
public import RuleEngine

/// Standard Webhooks signing (https://www.standardwebhooks.com): each attempt of a signed forward carries
/// `webhook-id` (set when the rule ran: the same on every retry), `webhook-timestamp` (Unix seconds, now) and
/// `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`. The key is the secret from
/// the variable the rule named: a `whsec_`-prefixed secret is base64 after the prefix, as Standard Webhooks
/// writes them; any other secret is used as its UTF-8 bytes.
public enum WebhookSignature {
    /// Signs a request whose headers name a secret (`HostAPI.signWithHeader`), removing that header. Requests
    /// without it are returned as they are.
    /// - Throws: a permanent error when the variable is not set (retrying cannot help).
    public static func sign(
        _ request: OutboundRequest, now: Int, secret lookup: (String) -> String?
    ) throws(OutboundHTTPError) -> OutboundRequest {
        guard let marker = request.headers.first(where: { $0.name.lowercased() == HostAPI.signWithHeader }) else {
            return request
        }
        var signed = request
        signed.headers.removeAll { $0.name.lowercased() == HostAPI.signWithHeader }
        guard let secret = lookup(marker.value) else {
            throw OutboundHTTPError(
                "signing secret \(marker.value) is not set in the server's environment", permanent: true)
        }
        if secret.hasPrefix("whsec_"), Data(base64Encoded: String(secret.dropFirst(6))) == nil {
            throw OutboundHTTPError(
                "signing secret \(marker.value) starts with whsec_ but the rest is not base64", permanent: true)
        }
        let id = request.headers.first { $0.name.lowercased() == "webhook-id" }?.value ?? ""
        signed.headers.removeAll { ["webhook-timestamp", "webhook-signature"].contains($0.name.lowercased()) }
        signed.headers.append(.init(name: "webhook-timestamp", value: String(now)))
        signed.headers.append(
            .init(
                name: "webhook-signature",
                value: "v1," + signature(id: id, timestamp: now, body: request.body ?? [], secret: secret)))
        return signed
    }

    /// The base64 HMAC-SHA256 of `id.timestamp.body`.
    public static func signature(id: String, timestamp: Int, body: [UInt8], secret: String) -> String {
        var content = Array("\(id).\(timestamp).".utf8)
        content += body
        let mac = HMAC<SHA256>.authenticationCode(for: content, using: SymmetricKey(data: key(secret)))
        return Data(mac).base64EncodedString()
    }

    static func key(_ secret: String) -> [UInt8] {
        if secret.hasPrefix("whsec_"), let decoded = Data(base64Encoded: String(secret.dropFirst(6))) {
            return [UInt8](decoded)
        }
        return Array(secret.utf8)
    }
}
