import Foundation
public import Logging
import RuleEngine
public import ServiceLifecycle
import UnixSignals

/// Reloads the rules when their files change (inotify, debounced) and on SIGHUP.
public struct RuleReloader: Service {
    let directory: String
    let dispatcher: EventDispatcher
    let logger: Logger
    let watch: Bool

    /// - Parameter watch: follow file changes (off: only SIGHUP and `POST /admin/reload`).
    public init(directory: String, dispatcher: EventDispatcher, logger: Logger, watch: Bool = true) {
        self.directory = directory
        self.dispatcher = dispatcher
        self.logger = logger
        self.watch = watch
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            if watch {
                group.addTask {
                    let watcher = RuleWatcher(directory: directory)
                    for await _ in watcher.changes().cancelOnGracefulShutdown() {
                        await dispatcher.reload(directory: directory, reason: "files changed")
                    }
                }
            }
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
                    await dispatcher.reload(directory: directory, reason: "SIGHUP")
                }
            }
        }
    }
}
