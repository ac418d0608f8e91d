import Foundation
import Hummingbird
import JSONCore
import NIOCore
import RuleEngine

/// `GET /healthz` (the process answers), `GET /readyz` (rules are loaded; the body lists them, their load
/// errors and the last reload), `GET /metrics` (Prometheus text).
struct HealthController: Sendable {
    let engine: Engine
    let metrics: Metrics

    func addRoutes(to router: Router<SwitchboardRequestContext>) {
        router.get("healthz") { _, _ in Response.json(.ok, ["status": "ok"]) }
        router.get("readyz") { _, _ in readiness() }
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.prometheus())))
        }
    }

    func readiness() -> Response {
        let generation = engine.generation
        let errors = generation.diagnostics.filter { $0.severity == .error }.map { JSONValue.string($0.description) }
        let ready = !generation.ruleNames.isEmpty
        var body = JSONObject()
        body["ready"] = .bool(ready)
        body["version"] = .int(Int64(generation.version))
        body["rules"] = .array(generation.ruleNames.map(JSONValue.string))
        body["errors"] = .array(errors)
        if let last = engine.lastReloadResult {
            body["last_reload"] = [
                "ok": .bool(last.ok), "at": .double(last.at.timeIntervalSince1970),
                "errors": .array(last.errors.map(JSONValue.string)),
            ]
        }
        return .json(ready ? .ok : .serviceUnavailable, .object(body))
    }
}
