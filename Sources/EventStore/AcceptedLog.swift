import Foundation
package import RuleEngine
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Accepted events written to plain files before their 200, ahead of the journal's SQLite transaction; and,
/// once there, where those events' bodies stay.
///
/// An event's record is one `write` to a file of the data directory, `accepted-<n>.log`, made on the thread
/// that read the request. Once the `write` returns, the event is as durable as a commit without
/// `--journal-fsync` (it has reached the operating system, and survives the process being killed), so the 200
/// goes at once; the journal's writer puts the events into SQLite after, in batches. At the next start, the
/// records left in the files go into SQLite first (`recoverable`; an event already there stays as it is), so
/// none is lost between the two. Before this log each request waited for the transaction holding it, and under
/// `wrk -t1 -c32` that wait, not the CPU, held the rate (BENCHMARKS.md).
///
/// SQLite then holds each such event without its body: the event's row says where its record is
/// (`location(file:offset:)`), and readers take the body from there (`RecordReader`). Bodies written twice,
/// and deleted again row by row by retention, were most of what a journal at its size cap cost (BENCHMARKS.md,
/// the forty-third and fifty-second sessions). A file therefore stays until retention has deleted every event
/// whose body it holds. The journal keeps its books in SQLite (`log_files`): how many events each file holds,
/// whether all its records are in SQLite (`complete`: the next start does not read it again, so an event
/// retention deleted never comes back from it), and whether it is free (`gone`). A freed file is kept as a
/// spare (up to `laneCount`), renamed to the next number and written over from its start, or deleted.
///
/// Records go to `laneCount` files side by side (each writer takes the first lane free), and a lane moves to
/// another file once its own holds `fileLimit` bytes.
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
/// running server, a second `EventJournal` in a test) gets no log, commits before it answers (bodies and all),
/// and reads bodies from the files without changing them.
package final class AcceptedLog: Sendable {
    let directory: String
    private let lockDescriptor: Int32
    /// Each with a file of its own; a record goes to the first lane free, so that the event loops do not wait
    /// for one another's `write` (`Mutex.withLockIfAvailable`).
    private let lanes: [LaneLock]
    private let files: Mutex<Files>
    /// The next file's number. Numbers only grow while the process runs (a file reused gets a new one,
    /// `openNext`), and start above every number on the disk and in the journal's books (`adopt`).
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
        /// The lanes' files: written to still, so not complete however many of their records are in SQLite.
        var open: Set<Int> = []
        /// Freed files (`free`) kept to be written over: a `write` into a page the file already has costs about
        /// half one that extends it, which makes the kernel allocate and zero a block (`zero_user_segments` was
        /// 6% of the server's samples under load, `perf`).
        var spares: [Int] = []
        /// Files `closeFiles` closed before all their records were in SQLite.
        var doomed: Set<Int> = []
        /// When each file not yet complete was opened (Unix seconds): an event done before the oldest is in none
        /// of them (`oldestIncomplete`).
        var openedAt: [Int: Double] = [:]
        /// The bytes of each file kept (written to, or holding bodies): what the journal's size counts.
        var sizes: [Int: Int] = [:]
        /// Books for the journal's next transaction (`takeBooks`): files just complete, and freed files gone
        /// from the disk or renamed, whose rows can go.
        var books = Books()
        /// Complete files whose pages may still be in the page cache, with when they became complete
        /// (`releaseCache`).
        var cached: [Int: Double] = [:]
        /// Files whose pages were released: deleted when freed rather than kept as spares, since writing over a
        /// page no longer cached reads it back from the disk first, on the event loop.
        var released: Set<Int> = []
        /// Files written to since the last `syncFiles`.
        var unsynced: Set<Int> = []
        /// Freed files deleted or renamed since the last `syncFiles`: their rows go (`Books.forgotten`) once the
        /// directory is synced, so that after a power loss no such file can come back under its number with no
        /// row to say it was freed.
        var unlinked: [Int] = []
        /// A file was created, renamed or deleted since the last `syncFiles`.
        var directoryChanged = false
    }

    /// What the journal's books (`log_files`) are to learn in its next transaction.
    package struct Books: Sendable {
        /// Files no lane writes to any more whose records are all in SQLite.
        package var complete: [Int] = []
        /// Freed files no longer on the disk under their numbers (deleted, or renamed as a spare was).
        package var forgotten: [Int] = []

        package var isEmpty: Bool { complete.isEmpty && forgotten.isEmpty }
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

    /// Where a record is, as the journal's rows keep it: its file's number in the high 32 bits, its offset in
    /// the file in the low 32 (a file takes no more records past `fileLimit`, 4 MB).
    package static func location(file: Int, offset: Int) -> Int64 { Int64(file) << 32 | Int64(offset) }

    /// Writes the entry's record; returns where it is (`location(file:offset:)`; the file's number is also
    /// what `committed` takes).
    /// - Throws: `JournalError` saying what to fix (a full disk, say); the entry is then not in the log.
    package func write(_ entry: AcceptedEvent) throws -> (file: Int, location: Int64) {
        var record = Self.record(entry)
        for lane in lanes {
            if let written = try lane.mutex.withLockIfAvailable({ try write(&record, in: &$0) }) { return written }
        }
        return try lanes[0].mutex.withLock { try write(&record, in: &$0) }
    }

    private func write(_ record: inout [UInt8], in lane: inout Lane) throws -> (file: Int, location: Int64) {
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
        let location = Self.location(file: lane.number, offset: lane.size)
        lane.size += record.count
        files.withLock {
            $0.uncommitted[lane.number, default: 0] += 1
            $0.sizes[lane.number] = lane.size
            $0.unsynced.insert(lane.number)
        }
        return (lane.number, location)
    }

    /// The records of `numbers` (a file's number for each event) are in SQLite: a file no longer written to
    /// with none left is complete.
    func committed(_ numbers: some Sequence<Int>) {
        files.withLock { files in
            for number in numbers {
                let left = (files.uncommitted[number] ?? 1) - 1
                files.uncommitted[number] = left
                if left == 0, !files.open.contains(number) { retire(number, &files) }
            }
        }
    }

    /// Closes the lanes' files (the next records go to new ones), which are complete once their records are in
    /// SQLite (`closedFilesRemain`): before retention by age, so that the events it is to delete are in complete
    /// files however slowly the lanes fill, and at shutdown.
    func closeFiles() {
        for lane in lanes {
            lane.mutex.withLock { lane in
                guard lane.descriptor >= 0 else { return }
                close(lane.descriptor)
                lane.descriptor = -1
                files.withLock { closed(lane.number, &$0, doomed: true) }
            }
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

    /// File `number` holds nothing that is not in SQLite, and takes no more: complete, for the books.
    private func retire(_ number: Int, _ files: inout Files) {
        files.uncommitted[number] = nil
        files.doomed.remove(number)
        files.openedAt[number] = nil
        files.books.complete.append(number)
        files.cached[number] = Date().timeIntervalSince1970
    }

    /// When the oldest file not yet complete was opened (Unix seconds), or nil when all are. An event done
    /// before it has its record in a complete file, or none: retention deletes such events without checking
    /// the books (`EventJournal.PruneBound`), since the next start reads the files that are not complete again.
    var oldestIncomplete: Double? { files.withLock { $0.openedAt.values.min() } }

    /// What the books are to learn (`Books`), taken for a transaction; given back with `restore` if it fails.
    package func takeBooks() -> Books {
        files.withLock { files in
            defer { files.books = Books() }
            return files.books
        }
    }

    /// Books taken for a transaction that failed: the next one takes them again.
    package func restore(_ books: Books) {
        files.withLock { files in
            files.books.complete += books.complete
            files.books.forgotten += books.forgotten
        }
    }

    /// The books now say no event's body is in these files, and that they are free (`gone`): each becomes a
    /// spare, or is deleted.
    package func free(_ numbers: [Int]) {
        let deleting = files.withLock { files -> [Int] in
            var deleting: [Int] = []
            for number in numbers {
                files.sizes[number] = nil
                files.cached[number] = nil
                if files.released.remove(number) == nil, files.spares.count < lanes.count,
                    !files.spares.contains(number)
                {
                    files.spares.append(number)
                } else {
                    deleting.append(number)
                }
            }
            return deleting
        }
        // Outside the lock, which every `write` takes; a file's row goes only once it is no longer on the disk
        // (a file a failed `unlink` left keeps its row, and the next start deletes it).
        forget(deleting.filter { Self.delete(path($0)) })
    }

    /// `unlink`: true once the file is not there.
    static func delete(_ path: String) -> Bool { unlink(path) == 0 || errno == ENOENT }

    /// Freed files no longer on the disk under their numbers: their rows can go (`Books.forgotten`) once the
    /// directory is synced (`syncFiles`).
    private func forget(_ numbers: [Int]) {
        if !numbers.isEmpty {
            files.withLock {
                $0.unlinked += numbers
                $0.directoryChanged = true
            }
        }
    }

    /// `fsync` of the directory: the files created, renamed and deleted in it are so on the disk.
    func syncDirectory() {
        let descriptor = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        close(descriptor)
    }

    /// Files kept from an earlier run (complete, holding bodies), for their bytes (`bytesHeld`); and no new file
    /// takes a number the books already know (`highest`).
    package func adopt(_ numbers: some Sequence<Int>, highest: Int) {
        var sizes: [Int: Int] = [:]
        for number in numbers {
            var info = stat()
            if stat(path(number), &info) == 0 { sizes[number] = Int(info.st_size) }
        }
        let now = Date().timeIntervalSince1970
        files.withLock { files in
            files.sizes.merge(sizes) { $1 }
            for number in sizes.keys { files.cached[number] = now }
        }
        while true {
            let next = nextNumber.load(ordering: .relaxed)
            guard next <= highest else { break }
            if nextNumber.compareExchange(expected: next, desired: highest + 1, ordering: .relaxed).exchanged { break }
        }
    }

    /// Lets the kernel drop the pages of files complete for `age` seconds or more from the page cache
    /// (`POSIX_FADV_DONTNEED`), as the journal does for its own file's (`LogCopier.releaseWrittenPages`): a body
    /// is read again rarely (the console, `switchboard replay`), and a quiet server's files would otherwise hold
    /// the page cache for as long as retention keeps them. By then the kernel has written them to the disk (it
    /// writes dirty pages back within 30 s; `syncFiles` sooner), and only pages on the disk are dropped. Under
    /// a load that fills the cap within that time files are freed first, and their pages are written over as
    /// spares. Runs after the journal's copies of its write-ahead log, on that thread: on a server gone quiet,
    /// at the next copy (every 2,000 events).
    package func releaseCache(olderThan age: Double = 35) {
        let now = Date().timeIntervalSince1970
        let due = files.withLock { files -> [Int] in
            let due = files.cached.filter { now - $0.value >= age }.map(\.key)
            for number in due {
                files.cached[number] = nil
                files.released.insert(number)
            }
            return due
        }
        for number in due {
            let descriptor = Glibc.open(path(number), O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { continue }
            _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
            close(descriptor)
        }
    }

    /// Makes the records written so far reach the disk (`fdatasync` of each file written to since the last
    /// time, then of the directory when files came and went), before the journal's copy of its write-ahead log
    /// syncs the rows that point at them: a row on the disk then mostly has its body there too, after a power
    /// loss as after a crash. Not always: rows committed while this runs (a few milliseconds), those the
    /// writer's own checkpoint syncs (every 16 MB of write-ahead log), and write-ahead log pages the kernel
    /// writes back on its own, in no order against the log's files. The kernel would write the records within
    /// 30 s anyway; this is sooner, on the copier's thread. Freed files' rows go only after the directory's
    /// sync (`forget`).
    package func syncFiles() {
        let (due, changed) = files.withLock { files in
            defer {
                files.unsynced.removeAll(keepingCapacity: true)
                files.directoryChanged = false
            }
            return (files.unsynced, files.directoryChanged)
        }
        for number in due {
            let descriptor = Glibc.open(path(number), O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { continue }
            _ = fdatasync(descriptor)
            close(descriptor)
        }
        guard changed else { return }
        let unlinked = files.withLock { files in
            defer { files.unlinked.removeAll() }
            return files.unlinked
        }
        syncDirectory()
        files.withLock { $0.books.forgotten += unlinked }
    }

    /// The bytes of the files kept (written to, or holding bodies; not the spares): counted in the journal's
    /// size, which retention caps.
    package var bytesHeld: Int { files.withLock { $0.sizes.values.reduce(0, +) } }

    /// The lane's next file: a spare renamed to its new number (its old records no longer pass the check, which
    /// takes the file's number in), or a new one.
    private func openNext(_ lane: inout Lane) throws {
        if lane.descriptor >= 0 {
            close(lane.descriptor)
            lane.descriptor = -1
            files.withLock { closed(lane.number, &$0) }
        }
        let number = nextNumber.add(1, ordering: .relaxed).oldValue
        let openedAt = Date().timeIntervalSince1970
        let spare = files.withLock { files -> Int? in
            files.open.insert(number)
            files.openedAt[number] = openedAt
            return files.spares.popLast()
        }
        var descriptor: Int32 = -1
        if let spare {
            // Once renamed (or deleted) it is no longer on the disk under its number, and its row can go; not
            // before, or a crash in between would leave its old records for the next start to read.
            if rename(path(spare), path(number)) == 0 {
                forget([spare])
                descriptor = Glibc.open(path(number), O_WRONLY | O_CLOEXEC)
            } else if Self.delete(path(spare)) {
                forget([spare])
            }
        }
        if descriptor < 0 {
            descriptor = Glibc.open(path(number), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            files.withLock { $0.directoryChanged = true }
        }
        guard descriptor >= 0 else {
            let code = errno
            files.withLock {
                _ = $0.open.remove(number)
                $0.openedAt[number] = nil
            }
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

    /// Every whole record in the log's files but those `skipping` names (complete ones, and freed ones, whose
    /// events the journal has or deleted), oldest first, each with where it is; and the files read. A damaged or
    /// cut record ends its file: it was never acknowledged. A file that cannot be read is left out, and alone.
    func recoverable(skipping known: Set<Int>) -> (entries: [(AcceptedEvent, Int64)], read: [Int]) {
        var entries: [(AcceptedEvent, Int64)] = []
        var read: [Int] = []
        for file in Self.files(in: directory) where !known.contains(file.number) {
            guard let data = FileManager.default.contents(atPath: file.path) else { continue }
            let found = Self.records(in: [UInt8](data), file: file.number)
            for (entry, offset) in zip(found.entries, found.offsets) {
                entries.append((entry, Self.location(file: file.number, offset: offset)))
            }
            read.append(file.number)
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

    /// The whole records at the start of `bytes`, where each starts, and whether they were all there is (no
    /// damaged or cut tail).
    package static func records(in bytes: [UInt8], file: Int) -> (entries: [AcceptedEvent], offsets: [Int], whole: Bool)
    {
        var reader = Reader(bytes: bytes, file: file)
        var entries: [AcceptedEvent] = []
        var offsets: [Int] = []
        while reader.offset < bytes.count {
            let offset = reader.offset
            guard let entry = reader.record() else { return (entries, offsets, false) }
            entries.append(entry)
            offsets.append(offset)
        }
        return (entries, offsets, true)
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

/// Reads records back by where the journal's rows say they are (`AcceptedLog.location(file:offset:)`), for
/// their bodies: each file is opened once for the reader's life (a page of `switchboard replay`, say), and
/// closed with it. Any process may read, owner of the log or not.
package final class RecordReader {
    let directory: String
    private var descriptors: [Int: Int32] = [:]

    package init(directory: String) { self.directory = directory }

    deinit { for descriptor in descriptors.values { close(descriptor) } }

    /// The record of event `id` at `location`; nil when it is not there: its file is gone, or was freed and
    /// written over since the row was read (the check, which takes the file's number in, fails then), or the
    /// record there is another event's.
    package func entry(at location: Int64, id: String) -> AcceptedEvent? {
        let file = Int(location >> 32)
        let offset = off_t(location & 0xFFFF_FFFF)
        let descriptor: Int32
        if let open = descriptors[file] {
            descriptor = open
        } else {
            // A failure is not kept: out of descriptors, say, the next row tries again.
            descriptor = Glibc.open(AcceptedLog.path(file, in: directory), O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { return nil }
            descriptors[file] = descriptor
        }
        var header = [UInt8](repeating: 0, count: 12)
        guard Self.read(descriptor, into: &header, at: offset) else { return nil }
        let length = header.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        if length > 1 << 20 {
            // Past a megabyte, a length read from a record written over is not trusted with memory: the file must
            // hold that much.
            var info = stat()
            guard fstat(descriptor, &info) == 0, Int(offset) + 12 + length <= Int(info.st_size) else { return nil }
        }
        var record = [UInt8](repeating: 0, count: 12 + length)
        guard Self.read(descriptor, into: &record, at: offset),
            let entry = AcceptedLog.records(in: record, file: file).entries.first, entry.id == id
        else { return nil }
        return entry
    }

    /// Fills `buffer` from `offset`; false when the file ends first or cannot be read.
    private static func read(_ descriptor: Int32, into buffer: inout [UInt8], at offset: off_t) -> Bool {
        let count = buffer.count
        var done = 0
        return buffer.withUnsafeMutableBytes { bytes in
            while done < count {
                let n = pread(descriptor, bytes.baseAddress! + done, count - done, offset + off_t(done))
                if n < 0, errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
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
