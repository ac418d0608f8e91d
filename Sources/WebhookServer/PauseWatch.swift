import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The connections of one event loop whose peer may keep the server waiting, looked at every `interval`: a
/// connection that has waited on its peer longer than its limit (`--read-timeout` mid-request,
/// `--idle-timeout` between requests, see `HooksHandler.pauseLimit`) is timed out.
///
/// A pause is measured up to the loop's last turn at its sockets, not up to the moment of the look. The loop
/// runs its tasks after the sockets' turn, and a loop held up longer than a limit (a machine short of CPU)
/// has not read what arrived meanwhile: looked at from a task with the clock's time, a peer that did send in
/// time was answered 408 or closed: with a server's loop held for 1.5 s while a body was sent after its
/// `100 Continue` (`ConnectionTimeoutTests`), the answer was "0 of … bytes of its body, then nothing for 1s",
/// and a kept-alive connection's next request sent meanwhile was closed as idle. So the sweeper does not hand
/// the loop the look: it hands it a byte to write into a pipe whose read end is a channel on the same loop
/// (`open`, `ring`). The loop reads the byte back in its next turn at its sockets, which also reads whatever
/// else was waiting, and the look runs as a task after that turn, with the time the byte was read.
///
/// Not a timer per connection: NIO cancels a scheduled task or callback by searching its loop's whole queue of
/// them, so each closing connection would pay a pass over every other open one. Nor a timer on the loop: while
/// any task is scheduled on it, each turn of the loop looks at the queue's first task and reads the clock,
/// about 1,300 instructions a request on a new connection (callgrind, `CONNECTIONS=close
/// scripts/count_request_instructions.sh`, with a repeating task on each loop). One task (`sweep(_:every:)`)
/// sleeps instead, and once an interval rings each loop's bell. A connection costs an append when it opens
/// and a swap with the last when it closes; a timeout is noticed up to `interval` late.
///
/// Used only on its event loop, but `sweep(_:every:)` and `ring()`.
final class PauseWatch: @unchecked Sendable {
    let eventLoop: any EventLoop
    private var watched: [HooksHandler] = []
    /// The pipe's channel on the loop (`open`); set before the sweeper starts, and closed after it ended.
    private var bell: (any Channel)?

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

    /// Rings every watch's bell, once an interval, until the task is cancelled.
    static func sweep(_ watches: [PauseWatch], every interval: TimeAmount) async {
        while (try? await Task.sleep(nanoseconds: UInt64(interval.nanoseconds))) != nil {
            for watch in watches { watch.ring() }
        }
    }

    /// Opens the bell: a pipe, its read end a channel on the loop that sweeps after the turn that read it, its
    /// write end the same channel's output.
    /// - Throws: `IOError` when `pipe` fails (no descriptors left, say), or what the channel's registration threw.
    func open() async throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            throw IOError(errnoCode: errno, reason: "pipe (for the bell that times connections out)")
        }
        // Close-on-exec: not handed to a process the server starts. (Glibc's module has no `pipe2`.)
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        do {
            bell = try await NIOPipeBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(Bell(watch: self))
                    }
                }
                .takingOwnershipOfDescriptors(input: ends[0], output: ends[1]).get()
        } catch {
            closeDescriptors(ends)
            throw error
        }
    }

    /// Asks for a sweep after the loop's next turn at its sockets. From any thread.
    func ring() {
        bell?.writeAndFlush(ByteBuffer(integer: UInt8(0)), promise: nil)
    }

    /// Closes the bell (its pipe's two ends).
    func close() async {
        try? await bell?.close()
    }

    /// Drops the bell's bytes; once a turn has read them, queues the sweep with the time they were read. The
    /// connections' bytes waiting when the turn began are read in the same turn, before or after these; the
    /// sweep runs after all of them. (Any sweep queued after a turn at the sockets is a right one: so a read
    /// completing without a byte, were NIO to report one, would only sweep once more.)
    private final class Bell: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let watch: PauseWatch

        init(watch: PauseWatch) { self.watch = watch }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

        func channelReadComplete(context: ChannelHandlerContext) {
            let turn = NIODeadline.now()
            let watch = watch
            context.eventLoop.assumeIsolated().execute { watch.sweep(at: turn) }
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

    /// Looks at every connection once (one closed meanwhile is in the copy iterated, and does nothing), its pause
    /// measured up to `turn`, when the loop last read its sockets.
    private func sweep(at turn: NIODeadline) {
        for connection in watched {
            connection.checkPause(now: turn)
        }
    }
}

/// Closes `descriptors` (outside `PauseWatch`, whose `close()` is the bell's).
private func closeDescriptors(_ descriptors: [Int32]) {
    for descriptor in descriptors { _ = close(descriptor) }
}
