import HTTPTypes
import Hummingbird
import Logging
import RuleEngine

/// Counts every non-200 answer on the hooks routes per Kazoo hook (`X-Hook-ID`) and warns before Kazoo would
/// disable the hook (6 failures in 60 s). The outermost middleware of the hooks group, so answers from
/// authentication and thrown errors count too.
struct KazooAnswers: RouterMiddleware {
    typealias Context = SwitchboardRequestContext
    let failures: HookFailureTracker
    let metrics: Metrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let hookID = request.headers[HTTPField.Name("X-Hook-ID")!]
        do {
            let response = try await next(request, context)
            record(response.status, hookID: hookID)
            return response
        } catch let error as any HTTPResponseError {
            record(error.status, hookID: hookID)
            throw error
        } catch {
            record(.internalServerError, hookID: hookID)
            throw error
        }
    }

    func record(_ status: HTTPResponse.Status, hookID: String?) {
        guard status != .ok, let hookID else { return }
        metrics.increment("switchboard_non200_responses_total", [("hook_id", hookID)])
        if let count = failures.record(hookID: hookID) {
            logger.warning(
                "Kazoo hook \(hookID) got \(count) non-200 answers in the last 60 s; Kazoo disables a hook after \(HookFailureTracker.kazooDisableAt)",
                metadata: ["hook.id": "\(hookID)"])
        }
    }
}
