public import Foundation
import NIOCore
import Synchronization

/// Counts non-200 answers per Kazoo hook (X-Hook-ID) over the last 60 s. Kazoo disables a hook after 6
/// failed attempts within 60 s and never re-enables it by itself, so the server warns before that.
public final class HookFailureTracker: Sendable {
    public static let window: TimeInterval = 60
    /// Kazoo's default `attempt_failure_count`.
    public static let kazooDisableAt = 6
    /// Warn at this many failures in the window (one before the hook would be disabled… and earlier).
    public let warnAt: Int
    private let failures = Mutex<[String: [TimeInterval]]>([:])

    public init(warnAt: Int = 3) { self.warnAt = warnAt }

    /// Records a non-200 answer; returns the failures in the window when that is at or over `warnAt`.
    public func record(hookID: String, at time: TimeInterval? = nil) -> Int? {
        let time = time ?? Date().timeIntervalSince1970
        let count = failures.withLock { map -> Int in
            var times = (map[hookID] ?? []).filter { time - $0 < Self.window }
            times.append(time)
            map[hookID] = times
            if map.count > 10_000 {  // forget hooks that have been quiet for a window
                map = map.filter { _, t in t.contains { time - $0 < Self.window } }
            }
            return times.count
        }
        return count >= warnAt ? count : nil
    }

    /// Every hook with non-200 answers in the last 60 s: how many and when the last was, most first.
    public func snapshot(at time: TimeInterval? = nil) -> [(hook: String, count: Int, last: TimeInterval)] {
        let time = time ?? Date().timeIntervalSince1970
        return failures.withLock { map in
            map.compactMap { hook, times in
                let recent = times.filter { time - $0 < Self.window }
                return recent.last.map { (hook, recent.count, $0) }
            }
        }
        .sorted { ($0.count, $0.hook) > ($1.count, $1.hook) }
    }
}
