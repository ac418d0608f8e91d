import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A fixed set of object keys that `JSONReader` hands out as shared Strings instead of building a new one for
/// each occurrence. A Kazoo event repeats the same few dozen keys in every request; building each (checking its
/// UTF-8, allocating the longer ones, freeing them again) was a fifth of parsing. A key is looked up by the hash
/// the reader computes anyway and compared byte for byte, so a key not in the set costs one probe.
///
/// The set also remembers which of its keys came next in the last document read, per place: the first key of
/// the document, of an object that is a given key's value, and the key after a given key in such an object
/// (`View.prediction(_:)`). Webhooks of one kind send their keys in the same order every time, so the reader
/// first compares the input with the predicted key's bytes, and only when they differ finds its end, hashes it
/// and looks it up. Copies of an interner share what they remember.
public struct KeyInterner: Sendable {
    /// One reference, so a reader holding the interner retains one object, not each of its arrays.
    @usableFromInline let table: Table

    public init(_ keys: some Sequence<String>) {
        table = Table(keys)
    }

    public var count: Int { table.entries.count }

    /// A key read by a reader outside this module (`FormDecoder`), recognised as `JSONReader` recognises keys: the
    /// key `slot` predicts when `key` has its bytes, else looked up by its hash (computed only then), and then
    /// remembered in `slot` (-1: none). Returns the key's hash, and the shared String and its position, or nil
    /// for a key not in the set. The slots are those `JSONReader` uses (`View.slot(inside:)`,
    /// `slot(after:within:)`): a reader giving the same slots for the same places shares its predictions.
    package func recognize(_ key: UnsafeRawBufferPointer, slot: Int) -> (
        hash: UInt64, shared: (string: String, position: Int)?
    ) {
        let view = table.view
        let predicted = slot >= 0 ? view.prediction(slot) : -1
        if predicted >= 0, view.entries[predicted].count == key.count,
            view.equal(view.entries[predicted].offset, key.baseAddress, key.count)
        {
            return (view.entries[predicted].hash, (view.entries[predicted].string, predicted))
        }
        let hash = KeyTable<Int>.hash(bytes: key)
        guard let found = view.position(for: key, hash: hash) else { return (hash, nil) }
        // Only a key JSON writes without escapes, as `remember` requires: `JSONReader` compares a remembered
        // key's bytes with its input's raw text.
        if slot >= 0, JSONText.plainEnd(in: key.assumingMemoryBound(to: UInt8.self), from: 0) == key.count {
            view.remember(found, in: slot)
        }
        return (hash, (view.entries[found].string, found))
    }

    /// `View.slot(inside:)` and `View.slot(after:within:)`, for `recognize`.
    package func slot(inside position: Int) -> Int { table.view.slot(inside: position) }
    package func slot(after position: Int, within object: Int) -> Int {
        table.view.slot(after: position, within: object)
    }
    /// The position standing for the whole document in `slot(inside:)`.
    package static var document: Int { View.top }

    /// The shared String for `key` (raw UTF-8 whose `KeyTable.hash` is `hash`), or nil when it is not in the set.
    public func string(for key: UnsafeRawBufferPointer, hash: UInt64) -> String? {
        table.view.position(for: key, hash: hash).map { table.entries[$0].string }
    }

    /// The position of the key with the contents of `key`, or nil when it is not in the set.
    public func position(of key: String) -> Int? {
        var key = key
        return key.withUTF8 {
            table.view.position(
                for: UnsafeRawBufferPointer($0), hash: KeyTable<Int>.hash(bytes: UnsafeRawBufferPointer($0)))
        }
    }

    /// The position of `key` when it is one of the Strings this interner hands out (by its two words, without
    /// reading its bytes); nil for any other String, even one with the same contents.
    @inlinable
    public func position(ofShared key: String) -> Int? { table.identity.position(of: key) }

    /// The keys, their index, and what the interner remembers between documents: one key position per slot, -1
    /// for none. A slot is picked by hashing where the key is (`slot(inside:)`, `slot(after:within:)`), so the
    /// same key can be followed by different keys at the top level and inside a nested object (Kazoo's
    /// `custom_channel_vars` repeats `account_id` and `owner_id`); two places sharing a slot only cost misses.
    /// Readers on several threads share the slots; each load and store is atomic, and a reader checks every
    /// prediction against its input, so a stale or overwritten one only costs the ordinary lookup.
    @usableFromInline
    final class Table: @unchecked Sendable {
        let slots: HashSlots
        /// The keys by their Strings' identity (`position(ofShared:)`); `entries` keeps the Strings.
        @usableFromInline let identity: SharedKeys
        /// Read on every key: a buffer, not an array, so reading it retains nothing.
        let entries: UnsafeMutableBufferPointer<Entry>
        /// Every key's UTF-8, back to back (`Entry.offset`).
        let bytes: UnsafeMutableRawBufferPointer
        private let predictions: UnsafeMutablePointer<Atomic<Int32>>
        private let predictionCount: Int
        private let predictionMask: Int

        struct Entry: Sendable {
            let hash: UInt64
            let offset: Int
            let count: Int
            let string: String
        }

        init(_ keys: some Sequence<String>) {
            var entries: [Entry] = []
            var bytes: [UInt8] = []
            var seen: Set<String> = []
            for key in keys where seen.insert(key).inserted {
                entries.append(
                    Entry(hash: KeyTable<Int>.hash(key), offset: bytes.count, count: key.utf8.count, string: key))
                bytes.append(contentsOf: key.utf8)
            }
            self.slots = HashSlots(entries.map(\.hash))
            self.identity = SharedKeys(entries.map(\.string))
            self.entries = .allocate(capacity: entries.count)
            _ = self.entries.initialize(from: entries)
            self.bytes = .allocate(byteCount: max(bytes.count, 1), alignment: 8)
            self.bytes.copyBytes(from: bytes)
            var capacity = 64
            while capacity < 8 * entries.count { capacity *= 2 }
            predictionCount = capacity
            predictionMask = capacity - 1
            predictions = .allocate(capacity: predictionCount)
            for i in 0..<predictionCount { (predictions + i).initialize(to: Atomic(-1)) }
        }

        deinit {
            entries.deinitialize()
            entries.deallocate()
            bytes.deallocate()
            predictions.deinitialize(count: predictionCount)
            predictions.deallocate()
        }

        /// The pointers a reader works with: no reference count is touched while reading keys.
        var view: View {
            View(
                entries: UnsafeBufferPointer(entries), bytes: UnsafeRawPointer(bytes.baseAddress!),
                predictions: predictions, predictionMask: predictionMask, table: self)
        }
    }

    /// A reader's access to a `Table` it keeps alive (`JSONReader.parse` holds the interner for the whole parse):
    /// plain pointers, because every key read through a class or an array retained and released it, one pair
    /// per key.
    struct View {
        let entries: UnsafeBufferPointer<Table.Entry>
        let bytes: UnsafeRawPointer
        let predictions: UnsafeMutablePointer<Atomic<Int32>>
        let predictionMask: Int
        unowned(unsafe) let table: Table

        /// The position of `key` (raw UTF-8 whose `KeyTable.hash` is `hash`) in the set, or nil.
        func position(for key: UnsafeRawBufferPointer, hash: UInt64) -> Int? {
            table.slots.position(of: hash) {
                entries[$0].hash == hash && entries[$0].count == key.count
                    && equal(entries[$0].offset, key.baseAddress, key.count)
            }
        }

        func equal(_ offset: Int, _ key: UnsafeRawPointer?, _ count: Int) -> Bool {
            guard let key else { return count == 0 }
            return memcmp(bytes + offset, key, count) == 0
        }

        /// The slot remembering the first key of an object that is the value of the key at `position`: -1 for a
        /// key not in the set, `View.top` for the document itself.
        func slot(inside position: Int) -> Int { slot(-1, position) }
        /// The slot remembering the key that follows the key at `position` in an object whose first key the slot
        /// `object` remembers.
        func slot(after position: Int, within object: Int) -> Int { slot(object, position) }
        /// The position standing for the whole document in `slot(inside:)`.
        static let top = -2

        private func slot(_ a: Int, _ b: Int) -> Int {
            let h = (UInt64(truncatingIfNeeded: a) << 32 ^ UInt64(truncatingIfNeeded: b)) &* 0x9E37_79B9_7F4A_7C15
            return Int(truncatingIfNeeded: h >> 40) & predictionMask
        }

        /// The position of the key `slot` remembers, or -1.
        func prediction(_ slot: Int) -> Int { Int(predictions[slot].load(ordering: .relaxed)) }

        /// Remembers the key at `position` in `slot`. Only keys JSON writes without escapes are remembered (the
        /// reader's found from their raw bytes, `recognize`'s checked), so a remembered key's UTF-8 is its JSON
        /// text too, and `matches` can compare them.
        func remember(_ position: Int, in slot: Int) {
            guard predictions[slot].load(ordering: .relaxed) != position else { return }
            predictions[slot].store(Int32(position), ordering: .relaxed)
        }

        /// Whether the key at `position`, then a closing quote, is what `input` holds from `start`. The key's
        /// length is in `count` on return.
        func matches(_ position: Int, _ input: UnsafeBufferPointer<UInt8>, at start: Int, count: inout Int) -> Bool {
            count = entries[position].count
            guard start + count < input.count, input[start + count] == UInt8(ascii: "\""), let base = input.baseAddress
            else { return false }
            return equal(entries[position].offset, base + start, count)
        }
    }
}

/// Positions of Strings by their identity: the two words of a String's representation. Equal words mean equal
/// contents while the owner keeps the Strings (a small string's words are its bytes; a large one's point to its
/// storage, which a kept String keeps alive, so no other contents can have them), while equal contents may have
/// other words (a copy built elsewhere): then a lookup misses here and the caller compares bytes.
@usableFromInline
struct SharedKeys: Sendable {
    @usableFromInline
    struct Words: Sendable {
        @usableFromInline let low: UInt64
        @usableFromInline let high: UInt64
    }

    /// Each String's words, at its position.
    @usableFromInline let words: [Words]
    @usableFromInline let slots: HashSlots

    /// The owner must keep `strings` alive as long as this (`KeyInterner`'s table does).
    init(_ strings: [String]) {
        words = strings.map { string in
            let (low, high) = SharedKeys.words(string)
            return Words(low: low, high: high)
        }
        slots = HashSlots(words.map { SharedKeys.hash($0.low, $0.high) })
    }

    @inlinable @inline(__always)
    static func words(_ string: String) -> (UInt64, UInt64) {
        unsafeBitCast(string, to: (UInt64, UInt64).self)
    }

    @inlinable @inline(__always)
    static func hash(_ low: UInt64, _ high: UInt64) -> UInt64 {
        let h = (low ^ (high &* 0x9E37_79B9_7F4A_7C15)) &* 0xBF58_476D_1CE4_E5B9
        return h ^ (h >> 31)
    }

    /// The position of `key` when it is one of the Strings, else nil.
    @inlinable @inline(__always)
    func position(of key: String) -> Int? {
        let (low, high) = SharedKeys.words(key)
        return slots.position(of: SharedKeys.hash(low, high)) { words[$0].low == low && words[$0].high == high }
    }
}
