import Foundation
import GRDB
import Synchronization

/// Copies the journal's write-ahead log into the database on a connection and a thread of its own, while the
/// writer goes on committing.
///
/// SQLite copies the log back when a commit leaves it at `EventJournal.checkpointPages` pages (a checkpoint),
/// on the connection that committed: the journal's writer, with every request waiting on it. Such a checkpoint
/// copies 16 MB and syncs the log and the database; `perf trace` counted 92 syncs in 5 s of `wrk -t1 -c32`,
/// 3.9 ms each in the median and up to 17 ms, and in those pauses no request was answered. A checkpoint that
/// does not wait for anyone (`PASSIVE`) can run beside the writer, so this one runs every `everyEvents`
/// appended events: when the writer's own checkpoint comes, most of the log is already in the database and
/// synced, and it copies and syncs only the rest. The writer's checkpoint stays: only one that finds nothing
/// left to copy lets the next commit start the log over, so without it the log would grow without end.
///
/// After each copy it also lets the page cache drop what the database grew by while this journal was open,
/// once that lies `cachedTail` behind the file's end (`releaseWrittenPages`). Around each copy it has the
/// accepted-event log's files synced first (`AcceptedLog.syncFiles`: the records reach the disk before the rows
/// that point at them do) and let go of the page cache after (`AcceptedLog.releaseCache`).
package final class LogCopier: Sendable {
    /// Appended events between two copies in the background (about 250 log pages at 1.2 pages per event).
    /// The writer's own checkpoint copies and syncs what the last copy left, with every request waiting, so a
    /// shorter interval shortens those pauses: under `wrk -t1 -c32` (`compare_ingest.sh`, three runs) 800 answered
    /// 1% of requests after 11.1, 10.2 and 8.3 ms, and 200 after 6.4, 6.6 and 7.0 ms (100: 5.2). Requests a second,
    /// bytes written and CPU a request were the same within the noise.
    package static let everyEvents = 200
    /// The same when requests do not wait for the writer (the accepted-event log, `AcceptedLog`): the pauses of
    /// the writer's own checkpoint hold up no answer, and fewer, larger copies cost less. Under `wrk -t1 -c32`
    /// (`scripts/thread_cpu.sh`, two runs each, alternated) the journal's threads took 16.6–18.0 µs a request
    /// against 19.2–22.1 µs at 200.
    package static let everyEventsLogged = 2_000
    /// How much of the database's end stays in the page cache after a copy: the pages that appends, done
    /// records and the call index's merges are still writing and reading. At 2 KB an event that is the last
    /// 32,000 events (the last five minutes at 100 events a second).
    package static let cachedTail = 64 << 20

    /// Appended events between two copies.
    private let interval: Int

    private let path: String
    /// `cachedTail`, or a test's.
    private let cachedTail: Int
    /// The accepted-event log, when the journal owns it: synced before each copy and released from the page
    /// cache after, on the copier's thread.
    private let logFiles: AcceptedLog?
    private let queue = DispatchQueue(label: "switchboard.journal.log-copier", qos: .utility)
    private let state = Mutex(State())

    private struct State {
        /// Opened at the first copy: a journal only read (the CLI's commands) never opens it.
        var connection: DatabaseQueue?
        var appended = 0
        var queued = false
        var closed = false
        /// The database file read-only, for `posix_fadvise` (opened at the first copy; -1: not yet, or failed).
        var file: Int32 = -1
        /// The file's pages before this offset have been released (or were there when the journal opened).
        var releasedUpTo = 0
    }

    /// Set on `queue`: `close` called from a block running there (the journal's last reference let go by a
    /// `read`'s callback) must not `sync` onto it, which traps.
    private static let onQueue = DispatchSpecificKey<Bool>()

    init(
        path: String, everyEvents: Int = everyEvents, cachedTail: Int = cachedTail,
        logFiles: AcceptedLog? = nil
    ) {
        self.path = path
        interval = everyEvents
        self.cachedTail = cachedTail
        self.logFiles = logFiles
        // What the file held at open may be read now (recovery, the call index's migration), and what a
        // journal at its cap reuses lies anywhere in it: only the growth is released.
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        state.withLock { $0.releasedUpTo = size }
        queue.setSpecific(key: Self.onQueue, value: true)
    }

    /// Where the released part of the database file ends (tests).
    package var releasedUpTo: Int { state.withLock { $0.releasedUpTo } }

    /// Called by the writer after a commit of `events` appends; starts a copy once enough have gathered
    /// (one at a time: appends that come while one runs count towards the next).
    func appended(_ events: Int) {
        let start = state.withLock { state -> Bool in
            state.appended += events
            guard !state.queued, !state.closed, state.appended >= interval else { return false }
            state.appended = 0
            state.queued = true
            return true
        }
        if start { queue.async { [self] in copy() } }
    }

    /// Stops copying and closes the connection (after a copy under way).
    func close() {
        let finish = {
            self.state.withLock { state in
                state.closed = true
                state.connection = nil
                if state.file >= 0 { Glibc.close(state.file) }
                state.file = -1
            }
        }
        if DispatchQueue.getSpecific(key: Self.onQueue) == true { finish() } else { queue.sync(execute: finish) }
    }

    /// Runs `body` in a read transaction on the copier's thread and connection (after a copy under way), then
    /// `done` with its result (nil: closed, or the read failed). The call index's merges read their legs here
    /// (`CallIndex.swift`): off the writer, on a connection and a thread the journal has anyway. On a reader of
    /// the pool they brought three more threads, each with its allocator's heap: resident memory after a
    /// million events 56.8 MB (peak 62.1), against 52.3 (peak 55.4) here and 46.7 (48.8) when the writer sorted
    /// them itself (BENCHMARKS.md, "The journal's call index").
    func read<T: Sendable>(
        _ body: @escaping @Sendable (Database) throws -> T, then done: @escaping @Sendable (T?) -> Void
    ) {
        queue.async { [self] in
            done(connection().flatMap { try? $0.read(body) })
        }
    }

    private func copy() {
        defer { state.withLock { $0.queued = false } }
        guard let connection = connection() else { return }
        logFiles?.syncFiles()
        // Busy (the writer's own checkpoint holds the log) or failing: the next turn tries again, and the
        // writer's checkpoint copies whatever is left either way.
        _ = try? connection.writeWithoutTransaction { try $0.checkpoint(.passive) }
        releaseWrittenPages()
        logFiles?.releaseCache()
    }

    /// Tells the kernel that the database file's pages from where the last release ended to `cachedTail`
    /// before the file's end will not be needed soon, so that it drops them from the page cache
    /// (`POSIX_FADV_DONTNEED`). Each part of the file is released once, as the file grows past it.
    ///
    /// An event's row is written once and read again rarely (the console's older pages, retention). Kept cached,
    /// a journal of 1 GB held 1 GB of the machine's memory (counted against a container's memory limit), and
    /// that memory came new for every page the file grew by: on a virtual machine that hands freed memory
    /// back to its host, as this one does, that cost 18–31 µs of CPU a page. Released pages return to the
    /// kernel's free lists, where the next pages written take them (BENCHMARKS.md). A page the writer
    /// needs again (an index page in the released part) is read back and then stays: its part is not released
    /// twice. The kernel drops only pages already on the disk: a checkpoint that copies the whole log syncs
    /// the database, and the writer's own does at least every `EventJournal.checkpointPages` pages (16 MB),
    /// well within `cachedTail`. A page still dirty stays cached.
    ///
    /// Runs on `queue`, as `close` does, so the file stays open meanwhile; the system calls run outside the
    /// lock, which the writer takes after every commit (`appended`).
    private func releaseWrittenPages() {
        var (file, start) = state.withLock { ($0.file, $0.releasedUpTo) }
        if file < 0 {
            file = open(path, O_RDONLY | O_CLOEXEC)
            guard file >= 0 else { return }
            state.withLock { $0.file = file }
        }
        var status = stat()
        guard fstat(file, &status) == 0 else { return }
        // Whole megabytes: a release every megabyte of growth, not at every copy.
        let end = (Int(status.st_size) - cachedTail) & ~(1 << 20 - 1)
        guard end > start else { return }
        _ = posix_fadvise(file, off_t(start), off_t(end - start), POSIX_FADV_DONTNEED)
        state.withLock { $0.releasedUpTo = end }
    }

    private func connection() -> DatabaseQueue? {
        state.withLock { state in
            guard !state.closed else { return nil }
            if state.connection == nil {
                var configuration = Configuration()
                configuration.label = "switchboard.journal.log-copier"
                state.connection = try? DatabaseQueue(path: path, configuration: configuration)
            }
            return state.connection
        }
    }
}
