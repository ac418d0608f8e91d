import Foundation
public import Logging
public import ServiceLifecycle
import UnixSignals

/// Reloads the rules when their files change (inotify, debounced) and on SIGHUP.
public struct RuleReloader: Service {
    let directory: String
    let engine: Engine
    let logger: Logger
    let watch: Bool

    /// - Parameter watch: follow file changes (off: only SIGHUP and `POST /admin/reload`).
    public init(directory: String, engine: Engine, logger: Logger, watch: Bool = true) {
        self.directory = directory
        self.engine = engine
        self.logger = logger
        self.watch = watch
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            if watch {
                group.addTask {
                    let watcher = RuleWatcher(directory: directory)
                    for await _ in watcher.changes().cancelOnGracefulShutdown() {
                        await engine.reload(directory: directory, reason: "files changed")
                    }
                }
            }
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
                    await engine.reload(directory: directory, reason: "SIGHUP")
                }
            }
        }
    }
}
