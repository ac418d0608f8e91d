/// A read-only string-keyed table for hot lookups (field types, event specs): a word-at-a-time hash of the
/// key's UTF-8 and open addressing, so a lookup costs one short hash and usually one comparison.
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

    /// A 64-bit hash of the string's UTF-8 bytes (see `hash(bytes:)`).
    @inlinable
    public static func hash(_ key: String) -> UInt64 {
        if let h = key.utf8.withContiguousStorageIfAvailable({ hash(bytes: UnsafeRawBufferPointer($0)) }) {
            return h
        }
        return Array(key.utf8).withUnsafeBytes { hash(bytes: $0) }
    }

    /// A 64-bit hash of raw bytes, eight at a time: each word is folded in with one multiply and a shift (the
    /// byte-at-a-time FNV-1a it replaces was 9% of decoding in `perf`, a multiply per byte in one chain). It is
    /// not keyed, so colliding keys are easy to make: use it only where a collision costs a bounded amount (fixed
    /// tables such as the field types, or `KeyIndex`'s first 64 keys), never to index what a request adds.
    @inlinable
    public static func hash(bytes: UnsafeRawBufferPointer) -> UInt64 {
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var h = UInt64(truncatingIfNeeded: bytes.count) &* k
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            h = (h ^ UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))) &* k
            h ^= h >> 29
            i += 8
        }
        if i < n {
            // The last 1…7 bytes as a little-endian word: one overlapping load when the key has 8 bytes or more.
            var tail: UInt64 = 0
            if n >= 8 {
                tail = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self))
                tail >>= UInt64(8 - (n - i)) * 8
            } else {
                var shift: UInt64 = 0
                while i < n {
                    tail |= UInt64(bytes[i]) << shift
                    shift += 8
                    i += 1
                }
            }
            h = (h ^ tail) &* k
            h ^= h >> 29
        }
        h = h &* 0xBF58_476D_1CE4_E5B9
        return h ^ (h >> 32)
    }
}
