import Synchronization

/// One task at a time works through a queue: `schedule` starts it unless it is running, and it takes turns
/// while there is work. PostgreSQL's journal writer uses it, so its batches commit one after another, in order
/// (SQLite's runs its turns on the database's own writer queue instead: `EventJournal.scheduleFlush`).
package final class SerialTask: Sendable {
    private let running = Mutex(false)

    package init() {}

    /// True while the task runs (a turn in progress or about to start).
    package var isRunning: Bool { running.withLock { $0 } }

    /// - Parameters:
    ///   - hasWork: whether anything is queued (checked again under the flag before the task stops, so work
    ///     queued while it was finishing is never left behind).
    ///   - turn: takes what is queued and writes it.
    package func schedule(hasWork: @escaping @Sendable () -> Bool, turn: @escaping @Sendable () async -> Void) {
        let start = running.withLock { busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }
        guard start else { return }
        Task.detached { [self] in
            while true {
                if !hasWork() {
                    let more = running.withLock { busy -> Bool in
                        let more = hasWork()
                        if !more { busy = false }
                        return more
                    }
                    if !more { return }
                }
                await turn()
            }
        }
    }
}
