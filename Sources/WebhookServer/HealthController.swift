import EventStore
import Foundation
import Hummingbird
import JSONCore
import NIOCore
import RuleEngine

/// `GET /healthz` (the process answers), `GET /readyz` (rules are loaded; the body lists them, their load
/// errors and the last reload; with several nodes, each node's heartbeat), `GET /metrics` (Prometheus text).
/// `/healthz` and `/readyz` answer HEAD too (the status and headers without the body), as load balancers'
/// health checks often ask.
struct HealthController: Sendable {
    let engine: Engine
    let metrics: Metrics
    let journal: (any Journal)?

    func addRoutes(to router: Router<SwitchboardRequestContext>) {
        router.get("healthz") { _, _ in Response.json(.ok, ["status": "ok"]) }
        router.head("healthz") { _, _ in Response.json(.ok, ["status": "ok"]) }
        router.get("readyz") { _, _ in await readiness() }
        router.head("readyz") { _, _ in await readiness() }
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.prometheus())))
        }
    }

    func readiness() async -> Response {
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
        if let journal, !journal.runsEventsOnAccept {
            // Several nodes: who is live, which one runs events, and whether their rules agree. A database
            // that does not answer is reported, not a reason to refuse traffic: this node still accepts.
            do {
                let nodes = try await journal.nodes()
                body["nodes"] = .array(nodes.map(\.json))
                if Set(nodes.filter(\.live).map(\.rulesHash)).count > 1 {
                    body["warning"] = "the live nodes run different rules (see rules_hash)"
                }
            } catch {
                body["nodes_error"] = .string("\(error)")
            }
        }
        return .json(ready ? .ok : .serviceUnavailable, .object(body))
    }
}
