import Synchronization

/// Lets one task sleep until another has news, or a timeout passes. A signal with nobody waiting is kept
/// for the next wait, so none is missed. Hand-made: an `AsyncStream` (buffering the newest) keeps the
/// signal, but waiting on it *or* a deadline needs this same task-group race around it, so it adds nothing.
package final class WakeSignal: Sendable {
    private struct State {
        var signalled = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    package init() {}

    package func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.signalled = true
            return nil
        }
        waiter?.resume()
    }

    package func wait(upTo seconds: Double) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal() }
            group.addTask {
                if (try? await Task.sleep(for: .seconds(seconds))) != nil { self.signal() }
            }
            await group.next()
            // Whichever finished first, the other must end too: the sleep by cancellation, the waiter by
            // being resumed here (or, not parked yet, by seeing the cancellation when it gets there).
            group.cancelAll()
            let parked = state.withLock { s -> CheckedContinuation<Void, Never>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            parked?.resume()
            await group.next()
        }
    }

    private func waitForSignal() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.signalled || Task.isCancelled {
                    s.signalled = false
                    return true
                }
                s.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }
}
