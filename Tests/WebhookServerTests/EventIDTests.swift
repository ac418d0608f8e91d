import Foundation
import Testing

@testable import WebhookServer

@Suite struct EventIDTests {
    /// `event.meta.id` is a UUID in lowercase text, version 7: milliseconds first, so ids sort by time (the
    /// journal's index stays append-mostly), then random bits; ids taken across several refills of the pool and
    /// from several threads at once never repeat.
    @Test func idsAreDistinctTimeOrderedLowercaseUUIDs() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<1_000).map { _ in EventID.make() } } }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(ids).count == 4_000)
        for id in ids.prefix(300) {
            #expect(id.count == 36 && id == id.lowercased())
            let uuid = UUID(uuidString: id)
            #expect(uuid?.uuidString.lowercased() == id)
            #expect(uuid.map { $0.uuid.6 >> 4 } == 7, "version nibble of \(id)")
            #expect(uuid.map { $0.uuid.8 >> 6 } == 2, "variant bits of \(id)")
        }
        #expect(
            EventID.format(milliseconds: 0x0123_4567_89AB, random: (0, 0)) == "01234567-89ab-7000-8000-000000000000")
        #expect(
            EventID.format(milliseconds: 0xFEDC_BA98_7654, random: (.max, 0x0123_4567_89AB_CDEF))
                == "fedcba98-7654-7fff-afcd-ab8967452301")
        let earlier = EventID.make(at: 1_780_000_000.25)
        let later = EventID.make(at: 1_780_000_000.5)
        #expect(earlier < later && earlier.hasPrefix("019e"))
    }
}
