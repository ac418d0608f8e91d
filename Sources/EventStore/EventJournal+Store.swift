public import Foundation
import GRDB
import JSONCore
public import RuleEngine

/// The rule store's table: one row per live key, written only in the transactions that mark events done
/// (`DoneMark.writes`), so a key's value always matches the events the journal holds as done.
extension EventJournal {
    static let storeSchema = """
        CREATE TABLE IF NOT EXISTS store (
          namespace TEXT NOT NULL,
          key TEXT NOT NULL,
          value TEXT NOT NULL,
          expires_at REAL,
          seq INTEGER NOT NULL,
          PRIMARY KEY (namespace, key)
        );
        CREATE INDEX IF NOT EXISTS store_expiry ON store(expires_at) WHERE expires_at IS NOT NULL;
        """

    /// Applies one write; a write older (`seq`) than the stored one is ignored.
    static func apply(_ write: StoreRecord, in db: Database) throws {
        if let value = write.value {
            let upsert = try db.cachedStatement(
                sql: """
                    INSERT INTO store (namespace, key, value, expires_at, seq) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (namespace, key) DO UPDATE
                    SET value = excluded.value, expires_at = excluded.expires_at, seq = excluded.seq
                    WHERE excluded.seq > store.seq
                    """)
            try upsert.execute(arguments: [
                write.namespace, write.key, try JSONWriter.string(value), write.expiresAt, write.seq,
            ])
        } else {
            let delete = try db.cachedStatement(sql: "DELETE FROM store WHERE namespace = ? AND key = ? AND seq < ?")
            try delete.execute(arguments: [write.namespace, write.key, write.seq])
        }
    }

    /// Every stored key, expired ones too: `RuleStore` skips those, but continues `seq` past all of them so
    /// its writes are never older than a stored row.
    public func storeRecords() throws -> [StoreRecord] {
        try storeRecords(namespace: nil, key: nil, now: -Double.infinity)
    }

    /// Keys of one namespace (or all), optionally one key, not expired at `now`.
    public func storeRecords(namespace: String?, key: String?, now: Double = Date().timeIntervalSince1970) throws
        -> [StoreRecord]
    {
        try pool.read { db in
            var sql =
                "SELECT namespace, key, value, expires_at, seq FROM store WHERE (expires_at IS NULL OR expires_at > ?)"
            var arguments: [(any DatabaseValueConvertible)?] = [now]
            if let namespace {
                sql += " AND namespace = ?"
                arguments.append(namespace)
            }
            if let key {
                sql += " AND key = ?"
                arguments.append(key)
            }
            sql += " ORDER BY namespace, key"
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).map { row in
                let text: String = row["value"]
                return StoreRecord(
                    namespace: row["namespace"], key: row["key"], value: try? JSONReader.parse(text.utf8),
                    expiresAt: row["expires_at"], seq: row["seq"])
            }
        }
    }

    /// Deletes a key by hand (`switchboard store delete`). A running server keeps its value in memory until
    /// it restarts, so stop it first (the command says so). Returns whether the key existed.
    @discardableResult
    public func deleteStoreKey(namespace: String, key: String) throws -> Bool {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM store WHERE namespace = ? AND key = ?", arguments: [namespace, key])
            return db.changesCount > 0
        }
    }

    /// Removes expired keys; returns how many.
    @discardableResult
    public func pruneExpiredStoreKeys(now: Double = Date().timeIntervalSince1970) throws -> Int {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM store WHERE expires_at IS NOT NULL AND expires_at <= ?", arguments: [now])
            return db.changesCount
        }
    }
}
