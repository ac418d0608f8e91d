import Foundation
import JSONCore
package import KazooEvents
import Synchronization

/// Recognises Kazoo sending the same event again within a window (delivery.md §5: resends, the same event
/// reaching a hook twice). Only channel events and notifications have a key; everything else always passes.
///
/// Kept in memory: after a restart the window starts empty.
package final class Deduplicator: Sendable {
    private struct State {
        var expiry: [String: Double] = [:]
        var order: [(key: String, expires: Double)] = []
        var head = 0
    }
    let window: Double
    let capacity: Int
    private let state = Mutex(State())

    package init(window: Double, capacity: Int = 200_000) {
        self.window = window
        self.capacity = capacity
    }

    /// hook id + call_id + hook_event + timestamp for channel events; hook id + msg_id for notifications.
    package static func key(for event: WebhookEvent, hookID: String?) -> String? {
        let hook = hookID ?? event.hook ?? "-"
        if event.kind == .channel {
            guard let call = event.callID else { return nil }
            let name = event.fields["hook_event"]?.stringValue ?? event.name
            let time = event.fields["timestamp"]?.intValue.map(String.init) ?? "-"
            return "\(hook)|\(call)|\(name)|\(time)"
        }
        if event.kind == .notification { return event.messageID.map { "\(hook)|\($0)" } }
        return nil
    }

    /// True the first time a key is seen within the window (and remembers it); false for a repeat.
    package func firstSighting(_ key: String, now: Double = Date().timeIntervalSince1970) -> Bool {
        state.withLock { s in
            while s.head < s.order.count, s.order[s.head].expires <= now || s.order.count - s.head > capacity {
                let old = s.order[s.head]
                if s.expiry[old.key] == old.expires { s.expiry[old.key] = nil }
                s.head += 1
            }
            if s.head > 4096, s.head * 2 > s.order.count {
                s.order.removeFirst(s.head)
                s.head = 0
            }
            if let expires = s.expiry[key], expires > now { return false }
            s.expiry[key] = now + window
            s.order.append((key, now + window))
            return true
        }
    }

    /// Forgets a key, when the event it let through could not be accepted after all.
    package func forget(_ key: String) {
        _ = state.withLock { $0.expiry.removeValue(forKey: key) }
    }
}
