public import Foundation

extension Process {
    /// Waits until the process has exited, polling, without holding a thread of Swift's pool.
    /// `waitUntilExit` blocks one, and this machine's pool has two: two waits on children that take their
    /// time (or ignore a SIGTERM whose mask they inherited from the test runner) stall every test in the process.
    /// - Returns: false when it still runs after `limit`.
    public func exited(within limit: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }
}
