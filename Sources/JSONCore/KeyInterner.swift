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
public struct KeyInterner: Sendable {
    /// Index into `entries`, or -1 for an empty slot.
    private let slots: [Int32]
    private let mask: Int
    private let entries: [Entry]
    /// Every key's UTF-8, back to back (`Entry.offset`).
    private let bytes: [UInt8]

    private struct Entry: Sendable {
        let hash: UInt64
        let offset: Int
        let count: Int
        let string: String
    }

    public init(_ keys: some Sequence<String>) {
        var entries: [Entry] = []
        var bytes: [UInt8] = []
        var seen: Set<String> = []
        for key in keys where seen.insert(key).inserted {
            entries.append(
                Entry(hash: KeyTable<Int>.hash(key), offset: bytes.count, count: key.utf8.count, string: key))
            bytes.append(contentsOf: key.utf8)
        }
        var capacity = 16
        while capacity < entries.count * 2 { capacity *= 2 }
        var slots = [Int32](repeating: -1, count: capacity)
        for (position, entry) in entries.enumerated() {
            var i = Int(truncatingIfNeeded: entry.hash) & (capacity - 1)
            while slots[i] >= 0 { i = (i + 1) & (capacity - 1) }
            slots[i] = Int32(position)
        }
        self.slots = slots
        self.mask = capacity - 1
        self.entries = entries
        self.bytes = bytes
    }

    public var count: Int { entries.count }

    /// The shared String for `key` (raw UTF-8 whose `KeyTable.hash` is `hash`), or nil when it is not in the set.
    public func string(for key: UnsafeRawBufferPointer, hash: UInt64) -> String? {
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let slot = Int(slots[i])
            if slot < 0 { return nil }
            let entry = entries[slot]
            if entry.hash == hash, entry.count == key.count, equal(entry.offset, key) { return entry.string }
            i = (i + 1) & mask
        }
    }

    private func equal(_ offset: Int, _ key: UnsafeRawBufferPointer) -> Bool {
        bytes.withUnsafeBytes { stored in
            guard let a = stored.baseAddress, let b = key.baseAddress else { return key.isEmpty }
            return memcmp(a + offset, b, key.count) == 0
        }
    }
}
