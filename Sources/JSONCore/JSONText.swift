/// What reading and writing JSON text share.
enum JSONText {
    /// From `start`, the index of the first byte that ends a plain run of string bytes: a quote, a backslash or
    /// a control character (the bytes a JSON string cannot hold raw); `bytes.count` when there is none. Eight
    /// bytes at a time while all are plain. `ascii` is cleared when a byte of the run is over 0x7F.
    static func plainEnd(in bytes: UnsafeBufferPointer<UInt8>, from start: Int, ascii: inout Bool) -> Int {
        var i = start
        var seen: UInt64 = 0
        defer { if seen & 0x8080_8080_8080_8080 != 0 { ascii = false } }
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            while i + 8 <= bytes.count {
                let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let ones: UInt64 = 0x0101_0101_0101_0101
                let highs: UInt64 = 0x8080_8080_8080_8080
                let quote = word ^ (ones &* 0x22)
                let backslash = word ^ (ones &* 0x5C)
                // A byte is "special" if it is zero in quote/backslash or below 0x20 in word. A borrow can mark
                // bytes above the first special one too, but never one below it: the lowest mark is exact.
                let special =
                    ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((word &- (ones &* 0x20)) & ~word)
                if special & highs != 0 {
                    let plain = (special & highs).trailingZeroBitCount / 8
                    seen |= word & ((1 << UInt64(plain * 8)) &- 1)
                    return i + plain
                }
                seen |= word
                i += 8
            }
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 { return i }
            seen |= UInt64(b)
            i += 1
        }
        return i
    }

    /// `plainEnd(in:from:ascii:)` when whether the run is ASCII does not matter (the writer, a key's end).
    @inline(__always)
    static func plainEnd(in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var ascii = true
        return plainEnd(in: bytes, from: start, ascii: &ascii)
    }
}
