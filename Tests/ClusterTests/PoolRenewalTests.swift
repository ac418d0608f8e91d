import Foundation
import RuleEngine
import Synchronization
import TestSupport
import Testing

@testable import ClusterStore

/// Replacing the connection pool (after an outage, or when it looks stuck) ends every wait on the old one at
/// once, so that its callers try again on the new pool instead of at their time limit, and such an end is not
/// taken for a stall of the new pool.
@Suite struct PoolRenewalTests {
    @Test func replacingThePoolEndsTheWaitsOnTheOldOne() async throws {
        let url = try await TestPostgres.freshDatabase()
        let journal = try await PostgresJournal.open(
            url: url, node: "a", spoolDirectory: nil, logger: TestPostgres.logger)
        defer { journal.close() }
        // Work that would hold its caller for its whole limit (a query left on a pool whose server went away).
        let stuck = Task {
            try await journal.bounded(600) {
                try await Task.sleep(for: .seconds(600))
                return 1
            }
        }
        let waiting = await eventually(30) { journal.boundedWaits.withLock { $0.count } == 1 }
        #expect(waiting)
        journal.renewPool()
        let result = await stuck.result
        #expect(throws: PostgresJournal.PoolReplaced.self) { try result.get() }
        #expect(!journal.poolStalled)
        #expect(journal.boundedWaits.withLock { $0.count } == 0)
        // The new pool answers.
        #expect(try await journal.counts().pending == 0)
    }

    @Test func anEndThatComesBeforeTheWaitIsKeptForItAndTheWorkNeverStarts() async throws {
        let outcome = Deadline.Outcome<Int>()
        outcome.finish(.failure(PostgresJournal.PoolReplaced()))
        let started = Atomic(false)
        await #expect(throws: PostgresJournal.PoolReplaced.self) {
            try await Deadline.run(.seconds(600), outcome: outcome) {
                started.store(true, ordering: .relaxed)
                return 1
            }
        }
        let workStarted = started.load(ordering: .relaxed)
        #expect(!workStarted)
        // The usual way: the work's result.
        #expect(try await Deadline.run(.seconds(600)) { 7 } == 7)
    }
}
