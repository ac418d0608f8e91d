#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The short string values a thread's reader made lately, handed out again when the same bytes come back.
///
/// Kazoo repeats most of an event's string values from one event to the next: the account and its reseller,
/// the device and its owner, the direction, a call's id across the channel events of the call. Making each
/// one a new String (checking its bytes, allocating, copying, and freeing it again with the event) was about a
/// tenth of decoding an event. Lua keeps one copy of each short string in its state for the same reason.
///
/// Direct-mapped and per thread, so nothing is locked: a value's slot is picked by a hash of its length and
/// its first and last eight bytes. The slot keeps the bytes its String was made from, and hands the String
/// out only for the same bytes, compared in full; a different value that lands on the slot takes it over.
/// Only ASCII values of up to `maxBytes` are kept (the JSON reader's without escapes; the form decoder's after
/// percent-decoding), so what a slot holds is bounded: `slotCount` × (`maxBytes` + a String), about 100 KB for
/// each thread that reads events.
package final class ValueStrings {
    static let slotCount = 512
    static let maxBytes = 64

    /// Each slot's length, -1 while it holds nothing.
    private let lengths: UnsafeMutablePointer<Int>
    /// Each slot's bytes, `maxBytes` apart; a slot's are initialized when it is first filled.
    private let bytes: UnsafeMutablePointer<UInt8>
    private let strings: UnsafeMutablePointer<String>

    private init() {
        lengths = .allocate(capacity: Self.slotCount)
        lengths.initialize(repeating: -1, count: Self.slotCount)
        bytes = .allocate(capacity: Self.slotCount * Self.maxBytes)
        strings = .allocate(capacity: Self.slotCount)
        strings.initialize(repeating: "", count: Self.slotCount)
    }

    deinit {
        strings.deinitialize(count: Self.slotCount)
        strings.deallocate()
        bytes.deallocate()
        lengths.deallocate()
    }

    /// The String of `value`'s bytes, which must be ASCII: the one kept for them when there is one, else a new
    /// one, kept in its slot when it is short enough.
    package func string(_ value: UnsafeBufferPointer<UInt8>) -> String {
        let count = value.count
        guard count <= Self.maxBytes, count > 0, let base = value.baseAddress else {
            return String(decoding: value, as: UTF8.self)
        }
        let slot = Self.slot(base, count)
        let kept = bytes + slot * Self.maxBytes
        if lengths[slot] == count, Self.equal(kept, base, count) { return strings[slot] }
        let made = String(decoding: value, as: UTF8.self)
        lengths[slot] = count
        kept.initialize(from: base, count: count)
        strings[slot] = made
        return made
    }

    /// The slot for `count` (1 to `maxBytes`) bytes at `base`.
    @inline(__always)
    static func slot(_ base: UnsafePointer<UInt8>, _ count: Int) -> Int {
        let raw = UnsafeRawPointer(base)
        var first: UInt64 = 0
        var last: UInt64 = 0
        if count >= 8 {
            first = raw.loadUnaligned(as: UInt64.self)
            last = raw.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        } else {
            for i in 0..<count { first = first << 8 | UInt64(base[i]) }
        }
        let mixed = (first ^ (last >> 32 | last << 32) ^ UInt64(count)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: mixed >> 55)  // 9 bits: `slotCount`
    }

    /// Whether the `count` bytes at `a` and `b` are equal: eight at a time, the last eight read where they end
    /// (a call to `memcmp` cost as much again as the whole comparison).
    @inline(__always)
    private static func equal(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        let a = UnsafeRawPointer(a)
        let b = UnsafeRawPointer(b)
        guard count >= 8 else {
            for i in 0..<count
            where a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) {
                return false
            }
            return true
        }
        var i = 0
        while i + 8 < count {
            guard
                a.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    == b.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            else { return false }
            i += 8
        }
        return a.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
            == b.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
    }

    /// The calling thread's, made on its first use and freed when the thread ends.
    package static var current: ValueStrings {
        if let kept = pthread_getspecific(threadKey) {
            return Unmanaged<ValueStrings>.fromOpaque(kept).takeUnretainedValue()
        }
        let made = ValueStrings()
        // Kept for the thread's later documents; if it cannot be, it goes with this one's reader.
        let kept = Unmanaged.passRetained(made)
        if pthread_setspecific(threadKey, kept.toOpaque()) != 0 { kept.release() }
        return made
    }

    private static let threadKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { kept in
            if let kept { Unmanaged<ValueStrings>.fromOpaque(kept).release() }
        }
        return key
    }()
}
