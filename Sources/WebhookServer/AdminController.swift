import EventStore
import Foundation
import Hummingbird
import JSONCore
import NIOCore
import RuleEngine

/// `POST /admin/reload`, `GET /admin/rejected`, `GET /admin/deliveries`, behind `AdminAuthentication`.
struct AdminController: Sendable {
    let configuration: ServerConfiguration
    let engine: Engine
    let journal: (any Journal)?
    let rejected: RejectedStore

    func addRoutes(to group: RouterGroup<SwitchboardRequestContext>) {
        group.post("reload") { _, _ in await reload() }
        group.get("rejected") { _, _ in await rejectedBodies() }
        group.get("deliveries") { request, _ in try await deliveries(request) }
    }

    func reload() async -> Response {
        let result = await engine.reload(directory: configuration.rulesDirectory, reason: "POST /admin/reload")
        return .json(
            result.ok ? .ok : .unprocessableContent,
            [
                "ok": .bool(result.ok), "changed": .bool(result.changed), "version": .int(Int64(result.version)),
                "rules": .array(engine.ruleNames.map(JSONValue.string)),
                "errors": .array(result.errors.map(JSONValue.string)),
            ])
    }

    func rejectedBodies() async -> Response {
        let listed = await rejected.listWithBodies().map(\.meta)
        let data =
            (try? JSONSerialization.data(withJSONObject: listed, options: [.sortedKeys]))
            ?? Data("[]".utf8)
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    func deliveries(_ request: Request) async throws(APIError) -> Response {
        guard let journal else {
            throw APIError(.notFound, code: "no_journal", "the journal is off (--journal off): forwards are not kept")
        }
        let filter = try DeliveryFilter.from(request)
        let limit = request.uri.queryParameters.get("limit").flatMap { Int($0) } ?? 100
        do {
            let listed = try await journal.deliveries(filter, limit: max(1, min(limit, 10_000)))
            return .json(.ok, .array(try await journal.json(listed)))
        } catch {
            throw APIError(.internalServerError, code: "journal", "\(error)")
        }
    }
}

extension DeliveryFilter {
    /// The `?state=` of a listing (default all), or a 400 naming the states there are.
    static func from(_ request: Request) throws(APIError) -> DeliveryFilter {
        let state = request.uri.queryParameters.get("state") ?? "all"
        guard let filter = DeliveryFilter(rawValue: state) else {
            let names = DeliveryFilter.allCases.map(\.rawValue).joined(separator: ", ")
            throw APIError(.badRequest, code: "bad_state", "state must be one of \(names), not \(state)")
        }
        return filter
    }
}
