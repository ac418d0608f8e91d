import Foundation
import Glibc
import Synchronization

/// Time-ordered UUIDs (version 7, RFC 9562) in lowercase text: the `event.meta.id` of every accepted event.
///
/// The first 48 bits are the Unix time in milliseconds, the other 74 (beside version and variant) random.
/// The journal's primary key is this id: random (version 4) ids put each new row in a random leaf of that
/// index, so a commit of k events rewrote about k index pages and read cold ones back (`strace`: one WAL
/// `pwrite` and a fifth of a `pread` per event); ids in time order land in the index's last page, as the rows
/// do. Foundation's `UUID()` also opened, read and closed `/dev/urandom` on each call (3% of the server's CPU
/// in `perf`); the random bits here come from 4 KiB taken from the kernel at a time (glibc's `arc4random_buf`,
/// one `getrandom` call), 256 identifiers' worth.
enum EventID {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
    }

    private static let pool = Mutex(Pool())

    /// - Parameter time: Unix seconds (the event's `received_at`).
    static func make(at time: Double = Date().timeIntervalSince1970) -> String {
        var raw: (UInt64, UInt64) = (0, 0)
        pool.withLock { pool in
            if pool.next + 16 > pool.bytes.count {
                pool.bytes.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, $0.count) }
                pool.next = 0
            }
            pool.bytes.withUnsafeBytes { buffer in
                raw.0 = buffer.loadUnaligned(fromByteOffset: pool.next, as: UInt64.self)
                raw.1 = buffer.loadUnaligned(fromByteOffset: pool.next + 8, as: UInt64.self)
            }
            // Used bytes are not left behind for anyone reading the pool's memory later.
            for i in pool.next..<(pool.next + 16) { pool.bytes[i] = 0 }
            pool.next += 16
        }
        let milliseconds = UInt64(max(0, time * 1000))
        return format(milliseconds: milliseconds, random: raw)
    }

    /// `tttttttt-tttt-7xxx-yxxx-xxxxxxxxxxxx`: 48 bits of milliseconds (big-endian), then the random bits with
    /// the version and variant of RFC 9562.
    static func format(milliseconds: UInt64, random raw: (UInt64, UInt64)) -> String {
        // On the stack, digits by arithmetic: a heap array and a table lookup per digit cost about 2,100
        // instructions per event (callgrind); this takes a few hundred.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { bytes in
            withUnsafeBytes(of: raw) { source in for i in 0..<16 { bytes[i] = source[i] } }
            for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - i))) }
            bytes[6] = (bytes[6] & 0x0F) | 0x70
            bytes[8] = (bytes[8] & 0x3F) | 0x80
            func digit(_ nibble: UInt8) -> UInt8 {
                nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
            }
            return String(unsafeUninitializedCapacity: 36) { out in
                var at = 0
                for i in 0..<16 {
                    if i == 4 || i == 6 || i == 8 || i == 10 {
                        out[at] = UInt8(ascii: "-")
                        at += 1
                    }
                    out[at] = digit(bytes[i] >> 4)
                    out[at + 1] = digit(bytes[i] & 0x0F)
                    at += 2
                }
                return at
            }
        }
    }
}
