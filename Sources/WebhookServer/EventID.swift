import Glibc
import Synchronization

/// Random version-4 UUIDs in lowercase text, the `event.meta.id` of every accepted event.
///
/// Foundation's `UUID()` opens, reads and closes `/dev/urandom` on each call here (three system calls per
/// request; `perf` put it at 3% of the server's CPU under load). This takes 4 KiB from the kernel's generator
/// at a time (glibc's `arc4random_buf`, one `getrandom` call) and cuts 256 identifiers from it.
enum EventID {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
    }

    private static let pool = Mutex(Pool())
    private static let hex = Array("0123456789abcdef".utf8)

    static func make() -> String {
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
        return format(raw)
    }

    /// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` with the version and variant bits of RFC 9562.
    static func format(_ raw: (UInt64, UInt64)) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: raw) { source in for i in 0..<16 { bytes[i] = source[i] } }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return String(unsafeUninitializedCapacity: 36) { out in
            var at = 0
            for (i, byte) in bytes.enumerated() {
                if i == 4 || i == 6 || i == 8 || i == 10 {
                    out[at] = UInt8(ascii: "-")
                    at += 1
                }
                out[at] = hex[Int(byte >> 4)]
                out[at + 1] = hex[Int(byte & 0x0F)]
                at += 2
            }
            return at
        }
    }
}
