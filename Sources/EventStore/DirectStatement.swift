import GRDB
import GRDBSQLite

/// One of GRDB's cached statements bound and stepped through SQLite's C API, for the journal writer's
/// per-event statements (an event's INSERT, a done record's lookup and INSERT). GRDB's `execute(arguments:)`
/// builds a `StatementArguments` of `DatabaseValueConvertible` existentials per row and copies a blob into a
/// `Data` first; under `wrk -t1 -c32` (`perf record --call-graph dwarf`) that was half the INSERTs' time and a
/// third of the done records'. GRDB never steps these statements itself: each is only ever run here, bound
/// in full every time, and reset after its step. The call index's merges run theirs through C helpers
/// (`run(expecting:_:)`), which step and reset them the same way.
struct DirectStatement {
    private let statement: OpaquePointer
    /// For its SQL in an error only: GRDB trims the text anew on every read of `sql` (with Foundation, about
    /// 40,000 instructions for these statements).
    private let prepared: Statement
    private let db: Database

    init(_ statement: Statement, in db: Database) {
        self.statement = statement.sqliteStatement
        prepared = statement
        self.db = db
    }

    /// SQLite copies what is bound (`SQLITE_TRANSIENT`): nothing has to outlive the call.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    /// Binds parameter `index` (from 1) to `text`, or to NULL.
    func bind(_ index: Int32, _ text: String?) throws {
        guard var text else { return try check(sqlite3_bind_null(statement, index)) }
        try check(
            text.withUTF8 { bytes in
                sqlite3_bind_text(statement, index, bytes.baseAddress, Int32(bytes.count), Self.transient)
            })
    }

    func bind(_ index: Int32, _ value: Double) throws {
        try check(sqlite3_bind_double(statement, index, value))
    }

    func bind(_ index: Int32, _ value: Int) throws {
        try check(sqlite3_bind_int64(statement, index, Int64(value)))
    }

    /// Binds parameter `index` (from 1) to `value`, or to NULL.
    func bind(_ index: Int32, _ value: Int64?) throws {
        guard let value else { return try check(sqlite3_bind_null(statement, index)) }
        try check(sqlite3_bind_int64(statement, index, value))
    }

    func bind(_ index: Int32, blob: [UInt8]) throws {
        try check(
            blob.withUnsafeBytes { bytes in
                // A zero-length blob needs an address: SQLite binds NULL for a NULL pointer.
                sqlite3_bind_blob(
                    statement, index, bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(bytes.count),
                    Self.transient)
            })
    }

    /// A binding SQLite refused (out of memory, say) fails the row rather than leaving the last one's value.
    private func check(_ code: Int32) throws {
        guard code != SQLITE_OK else { return }
        throw failure(code)
    }

    /// SQLite's code and message, as GRDB's own error would carry them (`EventJournal.reason` reads the code).
    private func failure(_ code: Int32) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: db.lastErrorMessage, sql: prepared.sql)
    }

    /// Runs a C helper of `CSQLiteTuning` that steps and resets the statement itself: a merge's read of legs, or
    /// a slice of them, which the helper also binds.
    /// - Throws: `DatabaseError` with SQLite's code and message, unless the helper returned `expected`.
    func run(expecting expected: Int32, _ helper: (UnsafeMutableRawPointer) -> Int32) throws {
        let code = helper(UnsafeMutableRawPointer(statement))
        guard code == expected else { throw failure(code) }
    }

    /// Steps once and resets: true when it gave a row, false when it finished without one.
    /// - Throws: `DatabaseError` with SQLite's code and message (a full disk, say).
    @discardableResult
    func step() throws -> Bool { try step { _ in () } != nil }

    /// Steps once, reads the row it gave with `read` (`text`), and resets; nil when it finished without one.
    /// - Throws: `DatabaseError` with SQLite's code and message.
    func step<Value>(reading read: (DirectStatement) -> Value) throws -> Value? {
        let code = sqlite3_step(statement)
        defer { sqlite3_reset(statement) }
        switch code {
        case SQLITE_ROW: return read(self)
        case SQLITE_DONE: return nil
        default: throw failure(code)
        }
    }

    /// Column `index` (from 0) of the row just stepped to, as an integer.
    func integer(_ index: Int32) -> Int64 { sqlite3_column_int64(statement, index) }

    /// Column `index` (from 0) of the row just stepped to, all its bytes: GRDB reads a text up to its first NUL
    /// byte (and binds one the same way), and a leg is the sender's call id, which JSON lets hold one.
    func text(_ index: Int32) -> String? {
        guard let bytes = sqlite3_column_text(statement, index) else { return nil }
        let count = Int(sqlite3_column_bytes(statement, index))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}
