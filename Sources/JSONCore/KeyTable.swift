/// A read-only string-keyed table for hot lookups (field types, event specs): a word-at-a-time hash of the
/// key's UTF-8 and open addressing, so a lookup costs one short hash and usually one comparison.
public struct KeyTable<Value: Sendable>: Sendable {
    @usableFromInline
    struct Entry: Sendable {
        @usableFromInline let hash: UInt64
        @usableFromInline let key: String
        @usableFromInline var value: Value
    }

    @usableFromInline var entries: [Entry] = []
    @usableFromInline let slots: HashSlots
    /// The interner whose shared Strings this table recognizes (see `recognizing(_:)`), and for each of the
    /// interner's positions, the entry with that key or -1.
    @usableFromInline var interner: KeyInterner? = nil
    @usableFromInline var byShared: [Int16] = []

    public init(_ pairs: [(String, Value)]) {
        var positions: [String: Int] = [:]
        for (key, value) in pairs {
            if let at = positions[key] {
                entries[at].value = value  // a repeated key: the later value wins
            } else {
                positions[key] = entries.count
                entries.append(Entry(hash: KeyTable.hash(key), key: key, value: value))
            }
        }
        slots = HashSlots(entries.map(\.hash))
    }

    /// This table, also indexed by the Strings `interner` shares for its keys, so a lookup with a key the JSON
    /// reader took from `interner` finds its entry from the String's two words, without hashing its bytes.
    /// (Coercion looks up every member of every event: hashing each key again was 5% of decoding in callgrind.)
    /// A key the interner holds but this table does not is told absent at once. The index is an `Int16` per
    /// interner key and table (Kazoo's 52 event specs over some 250 keys: 26 KB).
    public func recognizing(_ interner: KeyInterner) -> KeyTable {
        guard entries.count < Int(Int16.max) else { return self }
        var table = self
        var byShared = [Int16](repeating: -1, count: interner.count)
        for (position, entry) in entries.enumerated() {
            if let shared = interner.position(of: entry.key) { byShared[shared] = Int16(position) }
        }
        table.interner = interner
        table.byShared = byShared
        return table
    }

    @inlinable
    public subscript(key: String) -> Value? {
        guard let found = position(of: key) else { return nil }
        return entries[found].value
    }

    /// Where `key` is among the pairs the table was made from, counting a repeated key once at its first
    /// position; nil when it is not a key.
    @inlinable
    public func position(of key: String) -> Int? {
        if let interner, let shared = interner.position(ofShared: key), shared < byShared.count {
            let found = Int(byShared[shared])
            return found >= 0 ? found : nil
        }
        let h = KeyTable.hash(key)
        return slots.position(of: h, where: { entries[$0].hash == h && entries[$0].key == key })
    }

    /// The values, in the order of their positions.
    public var values: [Value] { entries.map(\.value) }

    /// The value at a position `position(of:)` gave.
    @inlinable
    public func value(at position: Int) -> Value { entries[position].value }

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

/// Open addressing over the positions of distinct keys, by their `KeyTable.hash`: the index `KeyTable` (looked up
/// by String) and `KeyInterner` (looked up by raw bytes) share. Twice as many slots as keys, at least 8.
@usableFromInline
struct HashSlots: Sendable {
    /// A key's position, or -1 for an empty slot.
    @usableFromInline let slots: [Int32]
    @usableFromInline let mask: Int

    /// Slots for keys whose hashes are `hashes`, in position order.
    init(_ hashes: [UInt64]) {
        var capacity = 8
        while capacity < hashes.count * 2 { capacity *= 2 }
        var slots = [Int32](repeating: -1, count: capacity)
        for (position, hash) in hashes.enumerated() {
            var i = Int(truncatingIfNeeded: hash) & (capacity - 1)
            while slots[i] >= 0 { i = (i + 1) & (capacity - 1) }
            slots[i] = Int32(position)
        }
        self.slots = slots
        self.mask = capacity - 1
    }

    /// The position of the key with `hash` for which `isKey` holds (it compares the key itself), or nil.
    @inlinable @inline(__always)
    func position(of hash: UInt64, where isKey: (Int) -> Bool) -> Int? {
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let position = Int(slots[i])
            if position < 0 { return nil }
            if isKey(position) { return position }
            i = (i + 1) & mask
        }
    }
}
