/// A read-only string-keyed table for hot lookups (field types, event specs): FNV-1a over the key's UTF-8
/// and open addressing, so a lookup costs one short hash and usually one comparison.
public struct KeyTable<Value: Sendable>: Sendable {
    @usableFromInline
    struct Entry: Sendable {
        @usableFromInline let hash: UInt64
        @usableFromInline let key: String
        @usableFromInline var value: Value
    }

    @usableFromInline var slots: [Int32]
    @usableFromInline var entries: [Entry] = []
    @usableFromInline let mask: Int

    public init(_ pairs: [(String, Value)]) {
        var capacity = 8
        while capacity < pairs.count * 2 { capacity *= 2 }
        mask = capacity - 1
        slots = [Int32](repeating: -1, count: capacity)
        for (key, value) in pairs {
            let h = KeyTable.hash(key)
            var i = Int(truncatingIfNeeded: h) & mask
            while slots[i] >= 0 {
                if entries[Int(slots[i])].key == key { break }
                i = (i + 1) & mask
            }
            if slots[i] >= 0 {
                entries[Int(slots[i])].value = value  // a repeated key: the later value wins
            } else {
                slots[i] = Int32(entries.count)
                entries.append(Entry(hash: h, key: key, value: value))
            }
        }
    }

    @inlinable
    public subscript(key: String) -> Value? {
        let h = KeyTable.hash(key)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = Int(slots[i])
            if slot < 0 { return nil }
            if entries[slot].hash == h && entries[slot].key == key { return entries[slot].value }
            i = (i + 1) & mask
        }
    }

    public var count: Int { entries.count }

    /// FNV-1a, 64-bit, over the string's UTF-8 bytes.
    @inlinable
    public static func hash(_ key: String) -> UInt64 {
        let seed: UInt64 = 0xcbf2_9ce4_8422_2325
        if let h = key.utf8.withContiguousStorageIfAvailable({ bytes -> UInt64 in
            var h = seed
            for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
            return h
        }) {
            return h
        }
        var h = seed
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }
}
