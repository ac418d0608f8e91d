import Foundation
import NIOHTTP1
import Testing

@testable import WebhookServer

@Suite struct HTTPDateTests {
    /// `UTCTime` formats with libc's `gmtime_r` what Foundation's formatters would: RFC 9110's own example, a leap
    /// day, the first second of a year and a time past 2038, each against `ISO8601DateFormatter`.
    @Test func utcTextMatchesTheRFCAndFoundation() {
        #expect(UTCTime.httpDate(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(UTCTime.iso8601(784_111_777) == "1994-11-06T08:49:37Z")
        let foundation = ISO8601DateFormatter()
        for second in [0, 784_111_777, 1_709_164_800, 1_735_689_600, 1_796_083_199, 2_524_608_000] {
            #expect(UTCTime.iso8601(second) == foundation.string(from: Date(timeIntervalSince1970: Double(second))))
        }
        #expect(UTCTime.httpDate(1_709_164_800) == "Thu, 29 Feb 2024 00:00:00 GMT")
    }

    /// Every answer carries a `Date` header for the current second and `Server: switchboard`, as it did when
    /// Hummingbird's application wrote them.
    @Test func answersCarryDateAndServerHeaders() async throws {
        try await withServer(rules: [:]) { server in
            let before = Date().timeIntervalSince1970
            let answer = try await server.send(.GET, "/healthz")
            let after = Date().timeIntervalSince1970
            #expect(answer.status == 200)
            let date = try #require(answer.headers.first { $0.0.lowercased() == "date" }?.1)
            let parser = DateFormatter()
            parser.locale = Locale(identifier: "en_US_POSIX")
            parser.timeZone = TimeZone(identifier: "GMT")
            parser.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            let sent = try #require(parser.date(from: date), "Date header \(date)").timeIntervalSince1970
            #expect(sent >= before.rounded(.down) && sent <= after, "Date header \(date)")
            #expect(answer.headers.contains { $0.0.lowercased() == "server" && $0.1 == "switchboard" })
        }
    }
}
