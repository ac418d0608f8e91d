import NIOCore

/// The connections of one event loop whose peer may keep the server waiting, looked at every `interval` by
/// one timer: a connection that has waited on its peer longer than its limit (`--read-timeout` mid-request,
/// `--idle-timeout` between requests, see `HooksHandler.pauseLimit`) is timed out.
///
/// One timer a loop rather than one a connection: NIO cancels a scheduled task or callback by searching its
/// loop's whole queue of them, so a timer per connection would cost each closing connection a pass over every
/// other open one. Here a connection costs an append when it opens and a swap with the last when it closes;
/// a timeout is noticed up to `interval` late.
///
/// Used only on its event loop.
final class PauseWatch: @unchecked Sendable {
    let eventLoop: any EventLoop
    let interval: TimeAmount
    private var watched: [HooksHandler] = []
    private var sweeping = false

    init(eventLoop: any EventLoop, interval: TimeAmount) {
        self.eventLoop = eventLoop
        self.interval = interval
    }

    /// One watch for each loop of `group`, by the loop's identity. The interval: a second, or a quarter of the
    /// shorter timeout when that is under four seconds (tests use short ones).
    static func perLoop(of group: any EventLoopGroup, timeouts: [TimeAmount]) -> [ObjectIdentifier: PauseWatch] {
        let shortest = timeouts.filter { $0 > .zero }.min() ?? .seconds(4)
        let interval = TimeAmount.nanoseconds(min(1_000_000_000, max(10_000_000, shortest.nanoseconds / 4)))
        var watches: [ObjectIdentifier: PauseWatch] = [:]
        for loop in group.makeIterator() {
            watches[ObjectIdentifier(loop)] = PauseWatch(eventLoop: loop, interval: interval)
        }
        return watches
    }

    func add(_ connection: HooksHandler) {
        eventLoop.assertInEventLoop()
        connection.watchIndex = watched.count
        watched.append(connection)
        if !sweeping {
            sweeping = true
            scheduleSweep()
        }
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

    private func scheduleSweep() {
        eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in sweep() }
    }

    /// Looks at every connection once (one closed meanwhile is in the copy iterated, and does nothing), then
    /// looks again an interval later while any is open.
    private func sweep() {
        guard !watched.isEmpty else {
            sweeping = false
            return
        }
        let now = NIODeadline.now()
        for connection in watched {
            connection.checkPause(now: now)
        }
        scheduleSweep()
    }
}
