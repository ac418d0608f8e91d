import Foundation
package import RuleEngine
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Accepted events written to plain files before their 200, ahead of the journal's SQLite transaction.
///
/// An event's record is one `write` to the current file, `accepted-<n>.log` in the data directory, made on the
/// thread that read the request. Once the `write` returns, the event is as durable as a commit without
/// `--journal-fsync` (it has reached the operating system, and survives the process being killed), so the
/// 200 goes at once; the journal's writer puts the events into SQLite after, in batches, and a file is deleted
/// once every event written to it is there. At the next start, events still in a file are put into SQLite
/// first (`recover`; an event already there is left as it is), so none is lost between the two. Before this
/// log, each request waited for the transaction holding it: under `wrk -t1 -c32` that wait, not the CPU, was
/// what held the rate (README, Benchmark).
///
/// A record: its payload's length (4 bytes, little-endian) and check (`RecordCheck`, 8 bytes), then the payload: `receivedAt`'s
/// 8 bytes, then `id`, `hook`, `format`, `meta` and `body`, each as its length (4 bytes; `0xFFFFFFFF` for no
/// hook) and its bytes. A record cut short or damaged (a `write` that failed, the machine losing power) ends
/// its file's reading: nothing after it was acknowledged, because a failed `write` is answered 503 and
/// the next record goes to a new file.
///
/// One process owns the files at a time: the one holding `accepted.lock` (`flock`, released when the process
/// ends however it ends). Another opening the same journal meanwhile (a `switchboard` command beside a
/// running server, a second `EventJournal` in a test) gets no log, and commits before it answers.
package final class AcceptedLog: Sendable {
    let directory: String
    private let lockDescriptor: Int32
    private let state: Mutex<State>

    /// A file is closed for new records once it holds this many bytes.
    static let fileLimit = 8 << 20

    private struct State {
        /// The file records go to; -1 until the next record opens one.
        var descriptor: Int32 = -1
        var number: Int
        var size = 0
        /// Records written to each file that are not yet in SQLite. A file not current is deleted at 0.
        var uncommitted: [Int: Int] = [:]
    }

    /// Takes the log of `directory` when no other process or journal has it; nil otherwise.
    init?(directory: String) {
        let lockPath = (directory as NSString).appendingPathComponent("accepted.lock")
        let descriptor = Glibc.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return nil }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            return nil
        }
        self.directory = directory
        lockDescriptor = descriptor
        state = Mutex(State(number: (Self.files(in: directory).last?.number ?? 0) + 1))
    }

    deinit {
        state.withLock { if $0.descriptor >= 0 { close($0.descriptor) } }
        close(lockDescriptor)
    }

    /// Writes the entry's record; returns the number of the file that holds it (for `committed`).
    /// - Throws: `JournalError` saying what to fix (a full disk, say); the entry is then not in the log.
    func write(_ entry: AcceptedEvent) throws -> Int {
        let record = Self.record(entry)
        return try state.withLock { state in
            if state.descriptor < 0 || state.size >= Self.fileLimit { try openNext(&state) }
            let written = record.withUnsafeBytes { Self.writeAll(state.descriptor, $0) }
            guard written == 0 else {
                // Whatever part of it reached the file ends the file's reading at the next start; later records
                // go to a new file.
                _ = ftruncate(state.descriptor, off_t(state.size))
                close(state.descriptor)
                state.descriptor = -1
                if (state.uncommitted[state.number] ?? 0) == 0 {
                    state.uncommitted[state.number] = nil
                    unlink(path(state.number))
                }
                throw JournalError(
                    "the journal's log \(path(state.number)) could not be written: \(Self.reason(written))")
            }
            state.size += record.count
            state.uncommitted[state.number, default: 0] += 1
            return state.number
        }
    }

    /// The records of `files` (one number for each event) are in SQLite: a file no longer current with none
    /// left is deleted.
    func committed(_ files: some Sequence<Int>) {
        let done = state.withLock { state -> [Int] in
            var done: [Int] = []
            for number in files {
                let left = (state.uncommitted[number] ?? 1) - 1
                state.uncommitted[number] = left
                if left == 0, number != state.number || state.descriptor < 0 { done.append(number) }
            }
            for number in done { state.uncommitted[number] = nil }
            return done
        }
        for number in done { unlink(path(number)) }
    }

    /// Closes the current file and deletes it when all it holds is in SQLite (before retention deletes
    /// events, which must not come back from a file at the next start; at shutdown).
    func closeCurrent() {
        let deleted = state.withLock { state -> Int? in
            guard state.descriptor >= 0 else { return nil }
            close(state.descriptor)
            state.descriptor = -1
            guard (state.uncommitted[state.number] ?? 0) == 0 else { return nil }
            state.uncommitted[state.number] = nil
            return state.number
        }
        if let deleted { unlink(path(deleted)) }
    }

    /// Records written and not yet in SQLite.
    var uncommittedCount: Int { state.withLock { $0.uncommitted.values.reduce(0, +) } }

    private func openNext(_ state: inout State) throws {
        if state.descriptor >= 0 {
            close(state.descriptor)
            if (state.uncommitted[state.number] ?? 0) == 0 {
                state.uncommitted[state.number] = nil
                unlink(path(state.number))
            }
        }
        state.number += 1
        let descriptor = Glibc.open(path(state.number), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            let code = errno
            throw JournalError("the journal's log \(path(state.number)) could not be created: \(Self.reason(code))")
        }
        state.descriptor = descriptor
        state.size = 0
    }

    func path(_ number: Int) -> String { Self.path(number, in: directory) }

    static func path(_ number: Int, in directory: String) -> String {
        (directory as NSString).appendingPathComponent("accepted-\(number).log")
    }

    /// The log's files in `directory`, oldest first.
    package static func files(in directory: String) -> [(number: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("accepted-"), name.hasSuffix(".log"),
                let number = Int(name.dropFirst("accepted-".count).dropLast(".log".count))
            else { return nil }
            return (number, path(number, in: directory))
        }
        .sorted { $0.0 < $1.0 }
    }

    /// Every whole record in the log's files, oldest first (a damaged or cut record ends its file: it was
    /// never acknowledged).
    func recoverable() -> [AcceptedEvent] {
        Self.files(in: directory).flatMap { file in
            FileManager.default.contents(atPath: file.path).map { Self.records(in: [UInt8]($0)).entries } ?? []
        }
    }

    /// Deletes every file of the log but the current one (their records are in SQLite: after `recoverable`).
    func deleteRecovered() {
        let current = state.withLock { $0.number }
        for file in Self.files(in: directory) where file.number < current { unlink(file.path) }
    }

    /// 0 when all of it was written, or the `errno` that stopped it.
    private static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 { return ENOSPC }
            offset += n
        }
        return 0
    }

    private static func reason(_ code: Int32) -> String {
        switch code {
        case ENOSPC, EDQUOT: "the disk is full (free space, or move --data-dir)"
        case EACCES, EPERM, EROFS: "it is not writable (check the owner and permissions of --data-dir)"
        default: String(cString: strerror(code))
        }
    }

    // MARK: Records

    package static func record(_ entry: AcceptedEvent) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(
            8 + 8 + 20 + entry.id.utf8.count + (entry.hook?.utf8.count ?? 0) + entry.format.utf8.count
                + entry.meta.utf8.count + entry.body.count)
        bytes.append(contentsOf: repeatElement(0, count: 12))
        append(entry.receivedAt.bitPattern, to: &bytes)
        append(entry.id, to: &bytes)
        if let hook = entry.hook { append(hook, to: &bytes) } else { append(UInt32.max, to: &bytes) }
        append(entry.format, to: &bytes)
        append(entry.meta, to: &bytes)
        append(UInt32(entry.body.count), to: &bytes)
        bytes.append(contentsOf: entry.body)
        let length = UInt32(bytes.count - 12)
        let check = bytes.withUnsafeBytes { RecordCheck.of(UnsafeRawBufferPointer(rebasing: $0[12...])) }
        bytes.withUnsafeMutableBytes { header in
            header.storeBytes(of: length.littleEndian, toByteOffset: 0, as: UInt32.self)
            header.storeBytes(of: check.littleEndian, toByteOffset: 4, as: UInt64.self)
        }
        return bytes
    }

    private static func append(_ value: some FixedWidthInteger, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        append(UInt32(text.utf8.count), to: &bytes)
        bytes.append(contentsOf: text.utf8)
    }

    /// The whole records at the start of `bytes`, and whether they were all there is (no damaged or cut tail).
    package static func records(in bytes: [UInt8]) -> (entries: [AcceptedEvent], whole: Bool) {
        var reader = Reader(bytes: bytes)
        var entries: [AcceptedEvent] = []
        while reader.offset < bytes.count {
            guard let entry = reader.record() else { return (entries, false) }
            entries.append(entry)
        }
        return (entries, true)
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func record() -> AcceptedEvent? {
            let start = offset
            guard let length = integer(UInt32.self), let check = integer(UInt64.self),
                bytes.count - offset >= Int(length)
            else { return nil }
            let end = offset + Int(length)
            let sum = bytes.withUnsafeBytes { RecordCheck.of(UnsafeRawBufferPointer(rebasing: $0[offset..<end])) }
            guard sum == check, let bits = integer(UInt64.self), let id = text(), let hook = optionalText(),
                let format = text(), let meta = text(), let body = field(), offset == end
            else {
                offset = start
                return nil
            }
            return AcceptedEvent(
                id: id, receivedAt: Double(bitPattern: bits), hook: hook, format: format, body: Array(body),
                meta: meta)
        }

        mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
            let size = MemoryLayout<T>.size
            guard bytes.count - offset >= size else { return nil }
            var value: T = 0
            for i in 0..<size { value |= T(bytes[offset + i]) << (8 * i) }
            offset += size
            return value
        }

        mutating func field() -> ArraySlice<UInt8>? {
            guard let length = integer(UInt32.self), bytes.count - offset >= Int(length) else { return nil }
            defer { offset += Int(length) }
            return bytes[offset..<offset + Int(length)]
        }

        mutating func text() -> String? { field().map { String(decoding: $0, as: UTF8.self) } }

        /// `.some(nil)` for the length `0xFFFFFFFF`.
        mutating func optionalText() -> String?? {
            guard bytes.count - offset >= 4 else { return nil }
            if bytes[offset..<offset + 4].allSatisfy({ $0 == 0xFF }) {
                offset += 4
                return .some(nil)
            }
            return text().map { .some($0) }
        }
    }
}

/// A 64-bit check of a record's payload, eight bytes at a time (a byte-at-a-time CRC-32 was 4% of the server's
/// samples under load, `perf`). It tells a whole record from one cut short or overwritten; it is no defence
/// against anyone writing the file on purpose (who could as well write a valid record).
enum RecordCheck {
    static func of(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(bytes.count)
        var offset = 0
        while offset + 8 <= bytes.count {
            hash = mix(hash, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset += 8
        }
        var last: UInt64 = 0
        for i in offset..<bytes.count { last |= UInt64(bytes[i]) << (8 * UInt64(i - offset)) }
        hash = mix(hash, last)
        // A final avalanche (MurmurHash3's), so that every input bit reaches every output bit.
        hash ^= hash >> 33
        hash &*= 0xFF51_AFD7_ED55_8CCD
        hash ^= hash >> 33
        hash &*= 0xC4CE_B9FE_1A85_EC53
        return hash ^ (hash >> 33)
    }

    private static func mix(_ hash: UInt64, _ word: UInt64) -> UInt64 {
        ((hash ^ word) &* 0x9E37_79B9_7F4A_7C15).rotatedLeft(by: 29)
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(by n: UInt64) -> UInt64 { (self << n) | (self >> (64 - n)) }
}
