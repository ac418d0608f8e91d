import NIOCore

/// The connections of one event loop whose peer may keep the server waiting, looked at every `interval`: a
/// connection that has waited on its peer longer than its limit (`--read-timeout` mid-request,
/// `--idle-timeout` between requests, see `HooksHandler.pauseLimit`) is timed out.
///
/// Not a timer per connection: NIO cancels a scheduled task or callback by searching its loop's whole queue of
/// them, so each closing connection would pay a pass over every other open one. Nor a timer on the loop: while
/// any task is scheduled on it, each turn of the loop looks at the queue's first task and reads the clock,
/// about 1,300 instructions a request on a new connection (callgrind, `CONNECTIONS=close
/// scripts/count_request_instructions.sh`, with a repeating task on each loop). One task (`sweep(_:every:)`)
/// sleeps instead, and once an interval hands each loop its sweep. A connection costs an append when it opens
/// and a swap with the last when it closes; a timeout is noticed up to `interval` late.
///
/// Used only on its event loop, but `sweep(_:every:)`.
final class PauseWatch: @unchecked Sendable {
    let eventLoop: any EventLoop
    private var watched: [HooksHandler] = []

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// One watch for each loop of `group`, by the loop's identity.
    static func perLoop(of group: any EventLoopGroup) -> [ObjectIdentifier: PauseWatch] {
        var watches: [ObjectIdentifier: PauseWatch] = [:]
        for loop in group.makeIterator() {
            watches[ObjectIdentifier(loop)] = PauseWatch(eventLoop: loop)
        }
        return watches
    }

    /// How often to look: a second, or a quarter of the shorter timeout when that is under four seconds (tests
    /// use short ones).
    static func interval(timeouts: [TimeAmount]) -> TimeAmount {
        let shortest = timeouts.filter { $0 > .zero }.min() ?? .seconds(4)
        return .nanoseconds(min(1_000_000_000, max(10_000_000, shortest.nanoseconds / 4)))
    }

    /// Hands every watch its sweep on its loop, once an interval, until the task is cancelled.
    static func sweep(_ watches: [PauseWatch], every interval: TimeAmount) async {
        while (try? await Task.sleep(nanoseconds: UInt64(interval.nanoseconds))) != nil {
            for watch in watches {
                watch.eventLoop.execute { watch.sweep() }
            }
        }
    }

    func add(_ connection: HooksHandler) {
        eventLoop.assertInEventLoop()
        connection.watchIndex = watched.count
        watched.append(connection)
    }

    func remove(_ connection: HooksHandler) {
        eventLoop.assertInEventLoop()
        guard let index = connection.watchIndex, index < watched.count, watched[index] === connection else { return }
        connection.watchIndex = nil
        let last = watched.removeLast()
        if index < watched.count {
            watched[index] = last
            last.watchIndex = index
        }
    }

    /// Looks at every connection once (one closed meanwhile is in the copy iterated, and does nothing).
    private func sweep() {
        guard !watched.isEmpty else { return }
        let now = NIODeadline.now()
        for connection in watched {
            connection.checkPause(now: now)
        }
    }
}
