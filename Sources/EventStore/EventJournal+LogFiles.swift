import Foundation
import GRDB
import RuleEngine

/// The books of the accepted-event log's files (`AcceptedLog`), in the journal's own file: which files hold
/// bodies of events SQLite has (`body_at` on the event's row), which are complete, and which are free.
///
/// - `events`: how many rows name the file. The writer adds its commits' events, and a start those it recovers;
///   retention takes away those it deletes. A file at 0 that is complete holds nothing anyone reads.
/// - `complete`: every record in the file is in SQLite and no lane writes to it. The next start does not read
///   it again: an event retention deleted must not come back from it. Retention deletes only events whose
///   files are complete (`EventJournal.PruneBound`), and marks them so in the transaction that deletes.
/// - `gone`: free, and to be deleted or written over as a spare. The row stays until the file is no longer on
///   the disk under its number (`AcceptedLog.Books.forgotten`), so that a file a crash left behind is deleted at
///   the next start and never read.
extension EventJournal {
    static let logFilesSchema = """
        CREATE TABLE IF NOT EXISTS log_files (
          number INTEGER PRIMARY KEY,
          events INTEGER NOT NULL DEFAULT 0,
          complete INTEGER NOT NULL DEFAULT 0,
          gone INTEGER NOT NULL DEFAULT 0
        );
        """

    /// A journal written before bodies stayed in the log's files gets the column that says where they are.
    static func migrateBodyLocations(_ db: Database) throws {
        if try !columns(of: "events", in: db).contains("body_at") {
            try db.execute(sql: "ALTER TABLE events ADD COLUMN body_at INTEGER")
        }
    }

    /// The names of a table's columns.
    static func columns(of table: String, in db: Database) throws -> Set<String> {
        Set(try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String })
    }

    /// What one transaction changed in the books (`keepBooks`), until it ends (`settleBooks`): what it took from
    /// the log, given back if it fails, and the files it freed, freed on the disk once it commits. Each
    /// transaction has its own: the writer's and retention's run one after the other on the one connection, but
    /// each settles after its own commit, on its own thread.
    struct OpenBooks {
        var taken = AcceptedLog.Books()
        var freed: [Int] = []

        mutating func add(_ other: OpenBooks) {
            taken.complete += other.taken.complete
            taken.forgotten += other.taken.forgotten
            freed += other.freed
        }
    }

    /// In the caller's transaction: the books count `added` and `removed` events (by file), and learn what the
    /// log has to tell them (`AcceptedLog.takeBooks`). A file those leave complete and at 0 is freed once the
    /// transaction commits: the caller settles what this returns after it, either way (`settleBooks`). Only
    /// the log's owner frees files; another process's retention only counts (and deletes only events in files
    /// the books say are complete), and the owner's next start frees what it left at 0.
    func keepBooks(added: [Int: Int] = [:], removed: [Int: Int] = [:], in db: Database) throws -> OpenBooks {
        var books = OpenBooks(taken: bodyFiles?.takeBooks() ?? AcceptedLog.Books())
        guard !added.isEmpty || !removed.isEmpty || !books.taken.isEmpty else { return books }
        do {
            try Self.count(added, in: db)
            try Self.count(removed.mapValues { -$0 }, in: db)
            try Self.markComplete(books.taken.complete, in: db)
            try Self.forget(books.taken.forgotten, in: db)
            if bodyFiles != nil { books.freed = try Self.free(Set(removed.keys).union(books.taken.complete), in: db) }
        } catch {
            settleBooks(books, committed: false)
            throw error
        }
        return books
    }

    /// Runs `transaction`, which notes in its argument what it changed in the books (`keepBooks`), and settles
    /// them after it, whether it committed (it returned) or not (it threw).
    func settlingBooks<T>(_ transaction: (inout OpenBooks) throws -> T) throws -> T {
        var books = OpenBooks()
        do {
            let result = try transaction(&books)
            settleBooks(books, committed: true)
            return result
        } catch {
            settleBooks(books, committed: false)
            throw error
        }
    }

    /// Ends what `keepBooks` began: the freed files go once the transaction committed; otherwise what was taken
    /// from the log goes back to it for the next transaction.
    func settleBooks(_ books: OpenBooks, committed: Bool) {
        if committed {
            if !books.freed.isEmpty { bodyFiles?.free(books.freed) }
        } else if !books.taken.isEmpty {
            bodyFiles?.restore(books.taken)
        }
    }

    /// Adds each file's count of events (negative: takes away).
    static func count(_ events: [Int: Int], in db: Database) throws {
        for (number, count) in events where count != 0 {
            try db.cachedStatement(
                sql: """
                    INSERT INTO log_files (number, events) VALUES (?, ?)
                    ON CONFLICT (number) DO UPDATE SET events = events + excluded.events
                    """
            ).execute(arguments: [number, count])
        }
    }

    static func markComplete(_ numbers: [Int], in db: Database) throws {
        for number in numbers {
            try db.cachedStatement(
                sql: """
                    INSERT INTO log_files (number, complete) VALUES (?, 1)
                    ON CONFLICT (number) DO UPDATE SET complete = 1
                    """
            ).execute(arguments: [number])
        }
    }

    /// The rows of freed files no longer on the disk under their numbers go.
    static func forget(_ numbers: [Int], in db: Database) throws {
        for number in numbers {
            try db.cachedStatement(sql: "DELETE FROM log_files WHERE number = ? AND gone").execute(arguments: [number])
        }
    }

    /// A file complete, at 0 events and not yet freed: one to free.
    static let freeable = "complete AND events <= 0 AND NOT gone"

    /// Of `numbers` (all when nil), the files now free (`freeable`), set `gone`: those to free once this commits.
    static func free(_ numbers: Set<Int>?, in db: Database) throws -> [Int] {
        guard let numbers else {
            return try Int.fetchAll(db, sql: "UPDATE log_files SET gone = 1 WHERE \(freeable) RETURNING number")
        }
        var freed: [Int] = []
        for number in numbers.sorted() {
            freed += try Int.fetchAll(
                db, sql: "UPDATE log_files SET gone = 1 WHERE number = ? AND \(freeable) RETURNING number",
                arguments: [number])
        }
        return freed
    }

    /// At start, before anything reads or writes the journal: freed files are deleted (a spare of the last run,
    /// or one a crash kept from being deleted), the records of files not complete go into SQLite (those there
    /// already stay as they are) with their bodies left where they are, and those files are complete. Files at 0
    /// events are freed.
    static func recover(_ log: AcceptedLog, into pool: DatabasePool, path: String) throws {
        var freed: [Int] = []
        var kept: [Int] = []
        var deleted: [Int] = []
        var highest = 0
        do {
            let books = try pool.read { db in try Row.fetchAll(db, sql: "SELECT number, complete, gone FROM log_files")
            }
            var known = Set<Int>()
            for row in books {
                let number: Int = row["number"]
                highest = max(highest, number)
                if row["gone"] as Bool {
                    // Its row goes once the file is not on the disk: one a failed `unlink` left is tried again.
                    if AcceptedLog.delete(log.path(number)) { deleted.append(number) }
                    known.insert(number)
                } else if row["complete"] as Bool {
                    kept.append(number)
                    known.insert(number)
                }
            }
            // The deletions on the disk before the rows that said the files were freed go.
            if !deleted.isEmpty { log.syncDirectory() }
            let (entries, read) = log.recoverable(skipping: known)
            try pool.write { db in
                try count(try insertEvents(entries, in: db), in: db)
                try markComplete(read, in: db)
                try forget(deleted, in: db)
                freed = try free(nil, in: db)
            }
            kept += read
        } catch {
            throw JournalError(
                "cannot open the journal \(path): the events in its log (\(log.directory)/accepted-*.log) "
                    + "could not be written to it: \(reason(error))")
        }
        let freedSet = Set(freed)
        log.adopt(kept.filter { !freedSet.contains($0) }, highest: highest)
        log.free(freed)
    }
}
