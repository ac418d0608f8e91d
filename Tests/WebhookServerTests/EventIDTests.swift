import Foundation
import Testing

@testable import WebhookServer

@Suite struct EventIDTests {
    /// `event.meta.id` stays a random (version 4) UUID in lowercase, as Foundation's `UUID` gave before, and
    /// ids taken across several refills of the pool and from several threads at once never repeat.
    @Test func idsAreDistinctLowercaseVersion4UUIDs() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<1_000).map { _ in EventID.make() } } }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(ids).count == 4_000)
        for id in ids.prefix(300) {
            #expect(id.count == 36 && id == id.lowercased())
            let uuid = UUID(uuidString: id)
            #expect(uuid?.uuidString.lowercased() == id)
            #expect(uuid.map { $0.uuid.6 >> 4 } == 4, "version nibble of \(id)")
            #expect(uuid.map { $0.uuid.8 >> 6 } == 2, "variant bits of \(id)")
        }
        #expect(EventID.format((0, 0)) == "00000000-0000-4000-8000-000000000000")
    }
}
