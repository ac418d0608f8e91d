import Foundation
package import RuleEngine
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Accepted events written to plain files before their 200, ahead of the journal's SQLite transaction.
///
/// An event's record is one `write` to a file of the data directory, `accepted-<n>.log`, made on the thread
/// that read the request. Once the `write` returns, the event is as durable as a commit without
/// `--journal-fsync` (it has reached the operating system, and survives the process being killed), so the 200
/// goes at once; the journal's writer puts the events into SQLite after, in batches. At the next start, the
/// records left in the files go into SQLite first (`recoverable`; an event already there stays as it is), so
/// none is lost between the two. Before this log each request waited for the transaction holding it, and under
/// `wrk -t1 -c32` that wait, not the CPU, held the rate (BENCHMARKS.md).
///
/// Records go to `laneCount` files side by side (each writer takes the first lane free), and a lane moves to
/// another file once its own holds `fileLimit` bytes. A file whose records are all in SQLite and that no lane
/// writes to is kept as a spare (up to `laneCount`), renamed to the next number and written over from its
/// start; more are deleted, and so are all of them before retention deletes events and at shutdown.
///
/// A record: its payload's length (4 bytes, little-endian) and check (`RecordCheck`, 8 bytes, which takes the
/// file's number in), then the payload: `receivedAt`'s 8 bytes, then `id`, `hook`, `format`, `meta` and `body`,
/// each as its length (4 bytes; `0xFFFFFFFF` for no hook) and its bytes. A record cut short or damaged, or left
/// from the file's earlier use, ends the file's reading. A `write` that fails is answered 503, cut off the file,
/// and the lane moves to another file, so nothing acknowledged follows it; after the machine lost power, what
/// had not reached the disk is lost, as a commit without `--journal-fsync` would be.
///
/// One process owns the files at a time: the one holding `accepted.lock` (`flock`, released when the process
/// ends however it ends). Another opening the same journal meanwhile (a `switchboard` command beside a
/// running server, a second `EventJournal` in a test) gets no log, and commits before it answers.
package final class AcceptedLog: Sendable {
    let directory: String
    private let lockDescriptor: Int32
    /// Each with a file of its own; a record goes to the first lane free, so that the event loops do not wait
    /// for one another's `write` (`Mutex.withLockIfAvailable`).
    private let lanes: [LaneLock]
    private let files: Mutex<Files>
    /// The next file's number. Numbers only grow: a file reused gets a new one (`openNext`).
    private let nextNumber: Atomic<Int>
    /// A lane's file takes no more records once it holds this many bytes.
    let fileLimit: Int

    static let laneCount = 4
    package static let defaultFileLimit = 4 << 20

    private final class LaneLock: Sendable {
        let mutex = Mutex(Lane())
    }

    private struct Lane {
        /// The file records go to; -1 until the next record opens one.
        var descriptor: Int32 = -1
        var number = 0
        var size = 0
    }

    private struct Files {
        /// Records written to each file that are not yet in SQLite.
        var uncommitted: [Int: Int] = [:]
        /// The lanes' files: written to still, so neither reused nor deleted when all they hold is in SQLite.
        var open: Set<Int> = []
        /// Files whose records are all in SQLite, kept to be written over: a `write` into a page the file already
        /// has costs about half one that extends it, which makes the kernel allocate and zero a block
        /// (`zero_user_segments` was 6% of the server's samples under load, `perf`).
        var spares: [Int] = []
        /// Files `closeFiles` closed before all their records were in SQLite: deleted, not kept, once they are.
        var doomed: Set<Int> = []
    }

    /// Takes the log of `directory` when no other process or journal has it; nil otherwise.
    package init?(directory: String, fileLimit: Int = defaultFileLimit) {
        let lockPath = (directory as NSString).appendingPathComponent("accepted.lock")
        // Read-only is enough for `flock`, and opens a lock file another user created.
        let descriptor = Glibc.open(lockPath, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return nil }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            return nil
        }
        self.directory = directory
        self.fileLimit = fileLimit
        lockDescriptor = descriptor
        lanes = (0..<Self.laneCount).map { _ in LaneLock() }
        files = Mutex(Files())
        nextNumber = Atomic((Self.files(in: directory).last?.number ?? 0) + 1)
    }

    deinit {
        for lane in lanes { lane.mutex.withLock { if $0.descriptor >= 0 { close($0.descriptor) } } }
        close(lockDescriptor)
    }

    /// Writes the entry's record; returns the number of the file that holds it (for `committed`).
    /// - Throws: `JournalError` saying what to fix (a full disk, say); the entry is then not in the log.
    package func write(_ entry: AcceptedEvent) throws -> Int {
        var record = Self.record(entry)
        for lane in lanes {
            if let number = try lane.mutex.withLockIfAvailable({ try write(&record, in: &$0) }) { return number }
        }
        return try lanes[0].mutex.withLock { try write(&record, in: &$0) }
    }

    private func write(_ record: inout [UInt8], in lane: inout Lane) throws -> Int {
        if lane.descriptor < 0 || lane.size >= fileLimit { try openNext(&lane) }
        Self.seal(&record, file: lane.number)
        let written = record.withUnsafeBytes { Self.writeAll(lane.descriptor, $0) }
        guard written == 0 else {
            // What reached the file of it is cut off, or else ends the file's reading at the next start; later
            // records go to another file.
            _ = ftruncate(lane.descriptor, off_t(lane.size))
            close(lane.descriptor)
            lane.descriptor = -1
            files.withLock { closed(lane.number, &$0) }
            throw JournalError("the journal's log \(path(lane.number)) could not be written: \(Self.reason(written))")
        }
        lane.size += record.count
        files.withLock { $0.uncommitted[lane.number, default: 0] += 1 }
        return lane.number
    }

    /// The records of `numbers` (a file's number for each event) are in SQLite: a file no longer written to
    /// with none left becomes a spare.
    func committed(_ numbers: some Sequence<Int>) {
        files.withLock { files in
            for number in numbers {
                let left = (files.uncommitted[number] ?? 1) - 1
                files.uncommitted[number] = left
                if left == 0, !files.open.contains(number) { retire(number, &files) }
            }
        }
    }

    /// Closes the lanes' files and deletes every file whose records are all in SQLite, spares too, and the rest
    /// once theirs are (`closedFilesRemain`): before retention deletes events (which must not come back from a
    /// file at the next start), and at shutdown.
    func closeFiles() {
        for lane in lanes {
            lane.mutex.withLock { lane in
                guard lane.descriptor >= 0 else { return }
                close(lane.descriptor)
                lane.descriptor = -1
                files.withLock { closed(lane.number, &$0, doomed: true) }
            }
        }
        files.withLock { files in
            for number in files.spares { unlink(path(number)) }
            files.spares.removeAll()
        }
    }

    /// Files `closeFiles` closed are still waiting for records to reach SQLite.
    var closedFilesRemain: Bool { files.withLock { !$0.doomed.isEmpty } }

    /// A lane stopped writing to file `number`.
    private func closed(_ number: Int, _ files: inout Files, doomed: Bool = false) {
        files.open.remove(number)
        if (files.uncommitted[number] ?? 0) == 0 {
            retire(number, &files)
        } else if doomed {
            files.doomed.insert(number)
        }
    }

    /// File `number` holds nothing that is not in SQLite: a spare, or deleted when there are enough or
    /// `closeFiles` closed it.
    private func retire(_ number: Int, _ files: inout Files) {
        files.uncommitted[number] = nil
        if files.doomed.remove(number) == nil, files.spares.count < lanes.count {
            files.spares.append(number)
        } else {
            unlink(path(number))
        }
    }

    /// The lane's next file: a spare renamed to its new number (its old records no longer pass the check, which
    /// takes the file's number in), or a new one.
    private func openNext(_ lane: inout Lane) throws {
        if lane.descriptor >= 0 {
            close(lane.descriptor)
            lane.descriptor = -1
            files.withLock { closed(lane.number, &$0) }
        }
        let number = nextNumber.add(1, ordering: .relaxed).oldValue
        let spare = files.withLock { files -> Int? in
            files.open.insert(number)
            return files.spares.popLast()
        }
        var descriptor: Int32 = -1
        if let spare {
            if rename(path(spare), path(number)) == 0 {
                descriptor = Glibc.open(path(number), O_WRONLY | O_CLOEXEC)
            } else {
                unlink(path(spare))
            }
        }
        if descriptor < 0 { descriptor = Glibc.open(path(number), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard descriptor >= 0 else {
            let code = errno
            files.withLock { _ = $0.open.remove(number) }
            throw JournalError("the journal's log \(path(number)) could not be created: \(Self.reason(code))")
        }
        lane.descriptor = descriptor
        lane.number = number
        lane.size = 0
    }

    func path(_ number: Int) -> String { Self.path(number, in: directory) }

    package static func path(_ number: Int, in directory: String) -> String {
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
    /// never acknowledged), and the files read. A file that cannot be read is left out, and left alone.
    func recoverable() -> (entries: [AcceptedEvent], read: [String]) {
        var entries: [AcceptedEvent] = []
        var read: [String] = []
        for file in Self.files(in: directory) {
            guard let data = FileManager.default.contents(atPath: file.path) else { continue }
            entries += Self.records(in: [UInt8](data), file: file.number).entries
            read.append(file.path)
        }
        return (entries, read)
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
        case ENOSPC, EDQUOT: EventJournal.diskFull
        case EACCES, EPERM, EROFS: EventJournal.notWritable
        default: String(cString: strerror(code))
        }
    }

    // MARK: Records

    /// The entry's record, its check not yet sealed with a file's number (`seal`).
    ///
    /// Written in place into an array of its exact size: appended piece by piece (each `append` checking that the
    /// array is not shared and has room), the record cost about 2,500 instructions besides its check (callgrind).
    package static func record(_ entry: AcceptedEvent) -> [UInt8] {
        var id = entry.id
        var hook = entry.hook
        var format = entry.format
        var meta = entry.meta
        let size =
            12 + 8 + 20 + id.utf8.count + (hook?.utf8.count ?? 0) + format.utf8.count + meta.utf8.count
            + entry.body.count
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            let out = UnsafeMutableRawBufferPointer(buffer)
            var at = 12
            func put(_ value: some FixedWidthInteger) {
                out.storeBytes(of: value.littleEndian, toByteOffset: at, as: type(of: value))
                at += MemoryLayout.size(ofValue: value)
            }
            func put(_ bytes: UnsafeBufferPointer<UInt8>) {
                put(UInt32(bytes.count))
                if let start = bytes.baseAddress {
                    (out.baseAddress! + at).copyMemory(from: start, byteCount: bytes.count)
                }
                at += bytes.count
            }
            put(entry.receivedAt.bitPattern)
            id.withUTF8 { put($0) }
            if hook != nil { hook!.withUTF8 { put($0) } } else { put(UInt32.max) }
            format.withUTF8 { put($0) }
            meta.withUTF8 { put($0) }
            entry.body.withUnsafeBufferPointer { put($0) }
            precondition(at == size, "the record's size was miscounted")
            let check = RecordCheck.payload(UnsafeRawBufferPointer(rebasing: out[12..<size]))
            out.storeBytes(of: UInt32(size - 12).littleEndian, toByteOffset: 0, as: UInt32.self)
            out.storeBytes(of: check.littleEndian, toByteOffset: 4, as: UInt64.self)
            count = size
        }
    }

    /// Makes `record`'s check its file's: a record read from another file (one written over, say) fails it.
    package static func seal(_ record: inout [UInt8], file: Int) {
        record.withUnsafeMutableBytes { bytes in
            let payload = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt64.self))
            bytes.storeBytes(of: RecordCheck.sealed(payload, file: file).littleEndian, toByteOffset: 4, as: UInt64.self)
        }
    }

    /// The whole records at the start of `bytes`, and whether they were all there is (no damaged or cut tail).
    package static func records(in bytes: [UInt8], file: Int) -> (entries: [AcceptedEvent], whole: Bool) {
        var reader = Reader(bytes: bytes, file: file)
        var entries: [AcceptedEvent] = []
        while reader.offset < bytes.count {
            guard let entry = reader.record() else { return (entries, false) }
            entries.append(entry)
        }
        return (entries, true)
    }

    private struct Reader {
        let bytes: [UInt8]
        let file: Int
        var offset = 0

        mutating func record() -> AcceptedEvent? {
            let start = offset
            guard let length = integer(UInt32.self), let check = integer(UInt64.self),
                bytes.count - offset >= Int(length)
            else { return nil }
            let end = offset + Int(length)
            let sum = bytes.withUnsafeBytes { RecordCheck.payload(UnsafeRawBufferPointer(rebasing: $0[offset..<end])) }
            guard RecordCheck.sealed(sum, file: file) == check, let bits = integer(UInt64.self), let id = text(),
                let hook = optionalText(),
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

/// A 64-bit check of a record: its payload's bytes, eight at a time (a byte-at-a-time CRC-32 was 4% of the
/// server's samples under load, `perf`), and its file's number. It tells a whole record from one cut short,
/// damaged, or left from the file's earlier use; it is no defence against anyone writing the file on purpose
/// (who could as well write a valid record).
package enum RecordCheck {
    package static func payload(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(bytes.count)
        var offset = 0
        while offset + 8 <= bytes.count {
            hash = mix(hash, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset += 8
        }
        var last: UInt64 = 0
        for i in offset..<bytes.count { last |= UInt64(bytes[i]) << (8 * UInt64(i - offset)) }
        return mix(hash, last)
    }

    /// The payload's check with the file's number in, through a final avalanche (MurmurHash3's), so that
    /// every input bit reaches every output bit.
    static func sealed(_ payload: UInt64, file: Int) -> UInt64 {
        var hash = mix(payload, UInt64(truncatingIfNeeded: file))
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
