import Delivery
import Foundation
import JSONCore
import NIOHTTP1
import RuleEngine
import TestSupport
import Testing
import WebhookServer

/// Standard Webhooks signatures, checked by an independent implementation: Python's hmac.
@Suite struct SignedForwardTests {
    /// Verifies one request as a receiver would, in Python; returns what Python printed ("ok" or why not).
    static func verifyInPython(id: String, timestamp: String, body: String, signature: String, secret: String)
        async throws -> String
    {
        let script = """
            import base64, hashlib, hmac, sys
            msg_id, ts, body, header, secret = sys.argv[1:6]
            key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
            expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
            given = [part.split(",", 1)[1] for part in header.split(" ") if part.startswith("v1,")]
            print("ok" if any(hmac.compare_digest(expected, g) for g in given) else f"mismatch: {expected} not in {given}")
            """
        let python = try await runToEnd(
            "/usr/bin/env", ["python3", "-c", script, id, timestamp, body, signature, secret])
        return python.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func signedForwardsVerifyAndKeepTheirIdAcrossRetries() async throws {
        let sink = try await LoopbackServer()
        defer { Task { try? await sink.stop() } }
        let variable = "SWITCHBOARD_SIGN_TEST_\(UInt32.random(in: 0...UInt32.max))"
        let secret = "whsec_" + Data((0..<24).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        setenv(variable, secret, 1)
        let rule = """
            return { name = "signed", on = "channel_create",
              transform = function(event) return { call_id = event.call_id } end,
              forward = { url = "\(sink.url("/switch"))", sign = "\(variable)" } }
            """
        sink.failing = true
        try await withServer(
            rules: ["signed.lua": rule], journal: true,
            configure: {
                $0.allowHTTPTo = [CIDR("127.0.0.1/32")!]
                $0.rules.environment = [variable: secret]
                $0.outbox.initialBackoff = 0.05
            }
        ) { server in
            let body = try sampleBody("channel_create__inbound.json", callID: "signed-1")
            #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            // Until the first attempt's 503 is back (the sink records a request before it reads `failing`, so
            // waiting for the request alone let the first attempt be answered 200 now and then).
            #expect(
                await server.eventually { server.metrics.value("switchboard_forwards_total", [("status", "503")]) >= 1 }
            )
            sink.failing = false
            #expect(
                await server.eventually {
                    server.metrics.value("switchboard_deliveries_total", [("result", "delivered")]) == 1
                })
        }
        let attempts = sink.requests.filter { $0.uri == "/switch" }
        #expect(attempts.count >= 2)
        var ids: Set<String> = []
        for request in attempts {
            let headers = Dictionary(request.headers.map { ($0.0.lowercased(), $0.1) }, uniquingKeysWith: { a, _ in a })
            #expect(headers["switchboard-sign-with"] == nil, "the secret's variable name leaked")
            let id = try #require(headers["webhook-id"])
            ids.insert(id)
            let verdict = try await Self.verifyInPython(
                id: id, timestamp: try #require(headers["webhook-timestamp"]), body: request.body,
                signature: try #require(headers["webhook-signature"]), secret: secret)
            #expect(verdict == "ok")
            // A tampered body does not verify.
            let tampered = try await Self.verifyInPython(
                id: id, timestamp: headers["webhook-timestamp"]!, body: request.body + " ",
                signature: headers["webhook-signature"]!, secret: secret)
            #expect(tampered != "ok")
        }
        #expect(ids.count == 1, "webhook-id changed between retries: \(ids)")
        #expect(ids.first?.hasPrefix("msg_") == true && ids.first?.hasSuffix("_signed_1") == true)
    }

    @Test func aPlainSecretAndAMissingOne() async throws {
        let request = OutboundRequest(
            method: "POST", url: "https://x.example.com/",
            headers: [
                .init(name: "webhook-id", value: "msg_1"), .init(name: "switchboard-sign-with", value: "SWITCHBOARD_K"),
            ], body: Array(#"{"a":1}"#.utf8), timeout: .seconds(1))
        let signed = try WebhookSignature.sign(request, now: 1_800_000_000) { _ in "plain secret" }
        let headers = Dictionary(signed.headers.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(headers["switchboard-sign-with"] == nil)
        #expect(headers["webhook-timestamp"] == "1800000000")
        let verdict = try await Self.verifyInPython(
            id: "msg_1", timestamp: "1800000000", body: #"{"a":1}"#, signature: headers["webhook-signature"]!,
            secret: "plain secret")
        #expect(verdict == "ok")
        #expect(throws: OutboundHTTPError.self) { try WebhookSignature.sign(request, now: 0) { _ in nil } }
    }
}
