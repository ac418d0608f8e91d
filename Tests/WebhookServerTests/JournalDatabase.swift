import EventStore
import GRDB

/// The journal's file in `directory` on a connection of the test's own, which waits for SQLite's locks (up to
/// 5 s, as the journal's own connections do) instead of failing at once. The journal's writer may hold the lock
/// at that moment; and a journal let go closes a moment later on a queue of its own (its done marks' wake-up, or
/// a writer turn, may hold the last reference), the last connection to close holding the file's exclusive lock
/// while it checks the write-ahead log back in.
/// - Parameter unsafeTransactions: allow a transaction the test opens and ends by hand (`BEGIN IMMEDIATE`).
func journalDatabase(in directory: String, unsafeTransactions: Bool = false) throws -> DatabaseQueue {
    var configuration = Configuration()
    configuration.busyMode = .timeout(5)
    configuration.allowsUnsafeTransactions = unsafeTransactions
    return try DatabaseQueue(path: EventJournal.file(in: directory), configuration: configuration)
}
