import Synchronization

/// One key looked up in many objects, trying first the position it was found at last time. Kazoo sends the
/// fields of each kind of event in the same order, so for a well-known field (`timestamp`, `call_id`,
/// `hook_event`) or a rule's `match` condition the guess is nearly always right, and a lookup is one key
/// comparison instead of a scan: `timestamp`, 23rd of the benchmark event's 25 fields, cost 465 instructions
/// to find by scanning.
///
/// Any object may be asked: a wrong guess (another kind of event, a hand-built object, a changed object)
/// costs one comparison more and then the ordinary scan, whose answer becomes the next guess. The guess is
/// shared by every thread that uses the hint (a relaxed atomic): it is only ever a starting point, checked
/// against the object each time.
public final class KeyHint: Sendable {
    public let key: String
    private let last = Atomic<Int>(0)

    public init(_ key: String) { self.key = key }

    /// Where `key` is in `members`, or nil when it is not there.
    func position(in members: [JSONObject.Member]) -> Int? {
        let guess = last.load(ordering: .relaxed)
        if guess < members.count, members[guess].key == key { return guess }
        guard let found = members.position(of: key) else { return nil }
        last.store(found, ordering: .relaxed)
        return found
    }
}

extension JSONObject {
    /// The value of `hint`'s key, as `self[hint.key]` gives it.
    public subscript(hint: KeyHint) -> JSONValue? {
        hint.position(in: members).map { members[$0].value }
    }
}
