import Synchronization

/// Runs work with a time limit without waiting for it past the limit: work that does not notice cancellation
/// (a query to an unreachable PostgreSQL server, getaddrinfo with an unanswering DNS server) is left to end on
/// its own, and its result is dropped.
package enum Deadline {
    package struct Expired: Error, CustomStringConvertible {
        package init() {}
        package var description: String { "no answer in time" }
    }

    /// Resumes the waiting caller once: with the work's result, the deadline's error or whatever else ends the
    /// wait first (`PostgresJournal.renewPool`). An end that comes before the caller waits is kept for it.
    package final class Outcome<T: Sendable>: Sendable {
        enum State {
            case idle
            case waiting(CheckedContinuation<T, any Error>)
            case ended(Result<T, any Error>)
            case resumed
        }
        let state = Mutex(State.idle)

        package init() {}

        package func finish(_ result: Result<T, any Error>) {
            state.withLock { state in
                switch state {
                case .idle: state = .ended(result)
                case .waiting(let continuation):
                    continuation.resume(with: result)
                    state = .resumed
                case .ended, .resumed: break
                }
            }
        }

        /// The wait has ended: the caller has its answer, or will have it as soon as it waits.
        var isOver: Bool {
            state.withLock { state in
                switch state {
                case .idle, .waiting: false
                case .ended, .resumed: true
                }
            }
        }

        /// Waits with `continuation`; false when the wait had already ended (it is resumed at once).
        fileprivate func wait(_ continuation: CheckedContinuation<T, any Error>) -> Bool {
            state.withLock { state in
                guard case .ended(let result) = state else {
                    state = .waiting(continuation)
                    return true
                }
                continuation.resume(with: result)
                state = .resumed
                return false
            }
        }
    }

    /// `work`'s result, or `expired()`'s error (default `Expired`) once `limit` has passed, whichever is first.
    ///
    /// `cancelling`: when the limit passes, or the caller is cancelled (which then ends the wait at once with
    /// `CancellationError`), the work is cancelled too: work that notices (a job still queued for a thread)
    /// stops, the rest still ends on its own. Off, as PostgreSQL's bounded waits run it, the work runs on
    /// untouched and a cancelled caller waits as before.
    package static func run<T: Sendable>(
        _ limit: Duration, outcome: Outcome<T> = Outcome(), cancelling: Bool = false,
        expired: @escaping @Sendable () -> any Error = { Expired() }, _ work: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let started = Mutex<Task<Void, Never>?>(nil)
        let stop: @Sendable () -> Void = { if cancelling { started.withLock { $0 }?.cancel() } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                // Ended already (its pool was replaced, the caller cancelled): the work is not started.
                guard outcome.wait(continuation) else { return }
                let timer = Task {
                    try? await Task.sleep(for: limit)
                    if !Task.isCancelled {
                        outcome.finish(.failure(expired()))
                        stop()
                    }
                }
                let task = Task {
                    do { outcome.finish(.success(try await work())) } catch { outcome.finish(.failure(error)) }
                    timer.cancel()
                }
                started.withLock { $0 = task }
                // (The limit may have passed, or the caller been cancelled, before the task was kept for `stop`.)
                if outcome.isOver { stop() }
            }
        } onCancel: {
            guard cancelling else { return }
            outcome.finish(.failure(CancellationError()))
            stop()
        }
    }
}
