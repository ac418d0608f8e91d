import Foundation
import Synchronization
import TestSupport
import Testing

@testable import RuleEngine

/// The rules directory's watcher: it sleeps until inotify, a debounce deadline or its safety-net check wakes
/// it, and `stop()` (or the consumer going away) wakes it at once.
@Suite struct RuleWatcherTests {
    /// `rules` in a directory of its own: the watcher also watches the directory holding the rules, and the
    /// temporary directory's other traffic would wake it.
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("watcher-\(UUID().uuidString)/rules")
            .path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// With the safety net an hour away, only inotify can report the write, and only the wake-up pipe can end
    /// the watch before the hour is up.
    @Test func aWriteIsReportedAndStopEndsTheWatchAtOnce() async throws {
        let path = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let watcher = RuleWatcher(directory: path, pollEvery: .seconds(3600))
        let changes = Atomic(0)
        let ended = Atomic(false)
        let consumer = Task {
            for await _ in watcher.changes() { changes.add(1, ordering: .relaxed) }
            ended.store(true, ordering: .relaxed)
        }
        // The watch is set up on the watcher's thread: write until one write is seen.
        var written = 0
        while changes.load(ordering: .relaxed) == 0, written < 100 {
            try Data("return {}\n".utf8).write(to: URL(fileURLWithPath: path + "/r\(written).lua"))
            written += 1
            _ = await eventually(0.2) { changes.load(ordering: .relaxed) > 0 }
        }
        #expect(changes.load(ordering: .relaxed) > 0, "no change reported after \(written) writes")
        watcher.stop()
        #expect(await eventually { ended.load(ordering: .relaxed) }, "the watch did not end after stop()")
        #expect(await eventually { !watcher.isWatching }, "the watching thread is still running")
        consumer.cancel()
    }

    @Test func cancellingTheConsumerStopsTheWatcher() async throws {
        let path = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let watcher = RuleWatcher(directory: path, pollEvery: .seconds(3600))
        let consumer = Task { for await _ in watcher.changes() {} }
        #expect(await eventually { watcher.isWatching })
        consumer.cancel()
        await consumer.value
        #expect(await eventually { !watcher.isWatching }, "the watching thread is still running")
    }

    /// The safety net reports a change every `pollEvery` even when inotify says nothing.
    @Test func theSafetyNetReportsWithoutInotify() async throws {
        let path = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let watcher = RuleWatcher(directory: path, pollEvery: .milliseconds(50))
        let changes = Atomic(0)
        let consumer = Task { for await _ in watcher.changes() { changes.add(1, ordering: .relaxed) } }
        #expect(await eventually(20) { changes.load(ordering: .relaxed) >= 3 })
        watcher.stop()
        #expect(await eventually { !watcher.isWatching }, "the watching thread is still running")
        consumer.cancel()
    }
}
