import Foundation
import JSONCore
import Logging
import NIOHTTP1
import RuleEngine
import ServiceLifecycle

/// `serve --kazoo-keep-enabled`: every `every` seconds, the hooks `switchboard kazoo sync` created that Kazoo
/// disabled after repeated failures ("too many failed attempts") are enabled again, with a warning in the log
/// and `switchboard_kazoo_hooks_reenabled_total{hook}` in /metrics. Hooks disabled by hand (no reason) and hooks
/// Switchboard did not create are left alone. Events Kazoo fired while a hook was disabled are lost (Kazoo
/// does not queue them): the warning says so.
final class KazooKeeper: Service {
    let crossbar: Crossbar
    let every: Double
    let metrics: Metrics
    let logger: Logger

    init(crossbar: Crossbar, every: Double, metrics: Metrics, logger: Logger) {
        self.crossbar = crossbar
        self.every = every
        self.metrics = metrics
        self.logger = logger
    }

    func run() async throws {
        // Both the check and the wait end at shutdown: a Kazoo that does not answer must not hold it up.
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await cancelWhenGracefulShutdown {
                await self.check()
                try await Task.sleep(for: .seconds(self.every))
            }
        }
        await crossbar.shutdown()
    }

    /// One round: re-enable what needs it; a failure is logged and counted, and the next round tries again.
    func check() async {
        let path = "/v2/accounts/\(crossbar.account)/webhooks"
        do {
            for hook in try await crossbar.list(path) {
                guard let name = hook["name"]?.stringValue, name.hasPrefix(KazooHooks.marker),
                    hook["enabled"]?.boolValue == false, let reason = hook["disable_reason"]?.stringValue,
                    let id = hook["id"]?.stringValue
                else { continue }
                do { try await crossbar.request(.PATCH, "\(path)/\(id)", data: ["enabled": true]) } catch {
                    // The others are still tried; this one is tried again next round.
                    metrics.increment("switchboard_kazoo_check_failures_total")
                    logger.warning("could not enable Kazoo hook \"\(name)\" again: \(error)")
                    continue
                }
                metrics.increment("switchboard_kazoo_hooks_reenabled_total", [("hook", name)])
                logger.warning(
                    "Kazoo had disabled hook \"\(name)\" (\(reason)); enabled it again. Events Kazoo fired while it was disabled were not sent.",
                    metadata: ["kazoo.hook_id": "\(id)"])
            }
        } catch {
            metrics.increment("switchboard_kazoo_check_failures_total")
            logger.warning("could not check Kazoo's hooks: \(error)")
        }
    }
}
