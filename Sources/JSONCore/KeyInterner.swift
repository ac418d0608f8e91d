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
    private let slots: HashSlots
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
        self.slots = HashSlots(entries.map(\.hash))
        self.entries = entries
        self.bytes = bytes
    }

    public var count: Int { entries.count }

    /// The shared String for `key` (raw UTF-8 whose `KeyTable.hash` is `hash`), or nil when it is not in the set.
    public func string(for key: UnsafeRawBufferPointer, hash: UInt64) -> String? {
        let found = slots.position(of: hash) {
            entries[$0].hash == hash && entries[$0].count == key.count && equal(entries[$0].offset, key)
        }
        guard let found else { return nil }
        return entries[found].string
    }

    /// The shared String with the contents of `key`, or nil when it is not in the set.
    public func shared(_ key: String) -> String? {
        var key = key
        return key.withUTF8 {
            string(for: UnsafeRawBufferPointer($0), hash: KeyTable<Int>.hash(bytes: UnsafeRawBufferPointer($0)))
        }
    }

    private func equal(_ offset: Int, _ key: UnsafeRawBufferPointer) -> Bool {
        bytes.withUnsafeBytes { stored in
            guard let a = stored.baseAddress, let b = key.baseAddress else { return key.isEmpty }
            return memcmp(a + offset, b, key.count) == 0
        }
    }
}
