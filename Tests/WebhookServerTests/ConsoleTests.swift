import AsyncHTTPClient
import Delivery
import EventStore
import Foundation
import GRDB
import JSONCore
import KazooEvents
import Logging
import NIOCore
import NIOHTTP1
import RuleEngine
import Synchronization
import TestSupport
import Testing
import WebhookServer

/// The console's API on a real server with a real journal: what each event's rules did is kept with it,
/// the live stream carries events as they finish, Try it is a dry run, calls join their legs, actions need
/// the admin credentials. (The pages themselves are driven in Chromium by `Tests/Browser/console_test.py`.)
@Suite struct ConsoleTests {
    static func rules(sink: String) -> [String: String] {
        [
            "hello.lua": """
            return { name = "hello", on = "channel_create",
              forward = "\(sink)/echo",
              run = function(event)
                log.info("hello from " .. event.call_id, { caller = event.caller_id_number })
                local answer = http.get("\(sink)/customer?api_key=k3y&phone=1", { timeout = 60 })
              end }
            """,
            "broken.lua": """
            return { name = "broken", on = "channel_create",
              run = function(event)
                local contact = nil
                return contact.name
              end }
            """,
            "quiet.lua": """
            return { name = "quiet", on = "channel_destroy", run = function() end }
            """,
        ]
    }

    static func json(_ text: String) throws -> JSONValue { try JSONReader.parse(Array(text.utf8)) }

    /// The header the console page sends with every action.
    static let action = ("X-Switchboard-Console", "1")

    @Test func anotherSiteCanNeitherActNorReadThroughARebindingName() async throws {
        try await withServer(rules: ["record.lua": recordingRule], journal: true) { server in
            // A form or script on another site cannot add the header without a preflight: refused.
            let forged = try await server.send(.POST, "/console/api/deliveries/redeliver-dead")
            #expect(forged.status == 403)
            #expect(forged.body.contains("X-Switchboard-Console"))
            #expect(try await server.send(.POST, "/console/api/reload").status == 403)
            #expect(!server.logs.contains(.notice, "console:"))
            // A name re-pointed at 127.0.0.1 reaches the loopback-only console with its own Host: refused.
            let rebound = try await server.send(.GET, "/console/api/events", headers: [("Host", "evil.example:8080")])
            #expect(rebound.status == 403)
            #expect(rebound.body.contains("127.0.0.1"))
            for host in ["localhost:1", "127.0.0.1", "[::1]:8080", "127.1.2.3:80"] {
                #expect(
                    try await server.send(.GET, "/console/api/rules", headers: [("Host", host)]).status == 200,
                    "\(host)")
            }
            let acted = try await server.send(.POST, "/console/api/deliveries/redeliver-dead", headers: [Self.action])
            #expect(acted.status == 200)
        }
        // With a token the page may be reached under any name (a real host name behind a proxy).
        try await withServer(rules: ["record.lua": recordingRule], configure: { $0.token = "t" }) { server in
            let named = try await server.send(
                .GET, "/console/api/rules?token=t", headers: [("Host", "switchboard.example")])
            #expect(named.status == 200)
        }
    }

    @Test func eachEventKeepsWhatItsRulesDidAndTheEventPageShowsIt() async throws {
        let sink = try await LoopbackServer()
        try await withServer(
            rules: Self.rules(sink: "http://127.0.0.1:\(sink.port)"), journal: true,
            configure: { $0.allowHTTPTo = [CIDR("127.0.0.1/32")!] }
        ) { server in
            let posted = try await server.send(
                .POST, "/hooks/channel_create", body: try sampleBody("channel_create__inbound.json", callID: "c-1"),
                headers: [("X-Hook-ID", "hook-9")])
            #expect(posted.status == 200)
            #expect(
                await eventuallyAsync {
                    let listed = try? await Self.get(server, "/console/api/events")
                    return listed?["events"]?[0]?["state"]?.stringValue == "done"
                })
            let summary = try #require(try await Self.get(server, "/console/api/events")["events"]?[0])
            #expect(summary["kind"]?.stringValue == "channel")
            #expect(summary["name"]?.stringValue == "channel_create")
            #expect(summary["call_id"]?.stringValue == "c-1")
            #expect(summary["hook_id"]?.stringValue == "hook-9")
            // `quiet` does not match channel_create: it is not listed.
            #expect(
                summary["rules"]?.arrayValue?.compactMap { $0["rule"]?.stringValue }.sorted() == ["broken", "hello"])

            let id = try #require(summary["id"]?.stringValue)
            let page = try Self.json(try await server.send(.GET, "/console/api/events/\(id)").body)
            let rules = try #require(page["rules"]?.arrayValue)
            let hello = try #require(rules.first { $0["rule"]?.stringValue == "hello" })
            #expect(hello["outcome"]?.stringValue == "ok")
            #expect(hello["logs"]?[0]?["message"]?.stringValue == "hello from c-1")
            // The key in the URL is kept in the journal but shown redacted.
            #expect(
                hello["http"]?[0]?["url"]?.stringValue
                    == "http://127.0.0.1:\(sink.port)/customer?api_key=REDACTED&phone=1")
            #expect(hello["http"]?[0]?["status"]?.intValue == 200)
            #expect((hello["http"]?[0]?["seconds"]?.doubleValue ?? -1) > 0)
            #expect(hello["file"]?.stringValue == "rules/hello.lua")
            let broken = try #require(rules.first { $0["rule"]?.stringValue == "broken" })
            #expect(broken["outcome"]?.stringValue == "error")
            #expect(broken["error"]?["line"]?.intValue == 4)
            #expect(broken["error"]?["message"]?.stringValue?.contains("attempt to index a nil value") == true)
            #expect(broken["error"]?["traceback"]?.stringValue?.contains("stack traceback") == true)
            // Typed fields as rules see them, the raw body, the forward and its attempts.
            #expect(page["fields"]?["caller_id_number"]?.stringValue == "+14155550123")
            #expect(page["body"]?.stringValue?.contains("\"call_id\":\"c-1\"") == true)
            #expect(
                await eventuallyAsync {
                    let page = try? await Self.get(server, "/console/api/events/\(id)")
                    return page?["deliveries"]?[0]?["state"]?.stringValue == "delivered"
                })
            // An unknown id is a 404 that says why.
            let missing = try await server.send(.GET, "/console/api/events/nope")
            #expect(missing.status == 404)
            #expect(missing.body.contains("retention"))
        }
        try await sink.stop()
    }

    @Test func theLiveStreamCarriesEventsAsTheyFinishAndEndsAtShutdown() async throws {
        let received = Received()
        try await withServer(rules: ["record.lua": recordingRule]) { server in
            let (base, http) = (server.base, server.http)
            let stream = Task {
                var request = HTTPClientRequest(url: base + "/console/api/stream")
                request.headers.add(name: "Accept", value: "text/event-stream")
                let response = try await http.execute(request, timeout: .seconds(60))
                for try await chunk in response.body {
                    received.withLock { $0 += String(buffer: chunk) }
                }
            }
            #expect(await server.eventually { received.withLock { $0.contains("retry: 1000") } })
            for n in 0..<3 {
                let body = try sampleBody("channel_create__inbound.json", callID: "live-\(n)")
                #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            }
            #expect(
                await server.eventually {
                    received.withLock { text in (0..<3).allSatisfy { text.contains("\"call_id\":\"live-\($0)\"") } }
                })
            #expect(received.withLock { $0.contains("\"rule\":\"record\",\"outcome\":\"ok\"") })
            // The stream's own id lets a reconnecting browser resume after what it saw.
            let resumed = try Self.json(try await server.send(.GET, "/console/api/live?after=2").body)
            #expect(resumed["events"]?.arrayValue?.count == 1)
            #expect(resumed["latest"]?.intValue == 3)
            // Any integer a client sends is an answer: below 0 (down to Int.min) is the start of the tail.
            let fromStart = try await server.send(.GET, "/console/api/live?after=-9223372036854775808")
            #expect(fromStart.status == 200)
            #expect(try Self.json(fromStart.body)["events"]?.arrayValue?.count == 3)
            // A browser reconnecting after a restart sends an id from the old process: it gets the new tail.
            let reconnected = Received()
            let again = Task {
                var request = HTTPClientRequest(url: base + "/console/api/stream")
                request.headers.add(name: "Last-Event-ID", value: "oldboot.5000")
                let response = try await http.execute(request, timeout: .seconds(60))
                for try await chunk in response.body { reconnected.withLock { $0 += String(buffer: chunk) } }
            }
            #expect(await server.eventually { reconnected.withLock { $0.contains("\"call_id\":\"live-0\"") } })
            #expect(reconnected.withLock { $0.contains("id: ") && $0.contains(".3\n") })
            _ = (stream, again)  // left open: the server's shutdown below must end them
        }
        // withServer returned: the graceful shutdown finished although a stream was open.
    }

    @Test func tryItRunsThePastedBodyAsADryRun() async throws {
        let sink = try await LoopbackServer()
        try await withServer(
            rules: Self.rules(sink: "http://127.0.0.1:\(sink.port)"), journal: true,
            configure: { $0.allowHTTPTo = [CIDR("127.0.0.1/32")!] }
        ) { server in
            let body = String(decoding: try sampleBody("channel_create__inbound.json", callID: "try-1"), as: UTF8.self)
            let request: JSONValue = ["body": .string(body), "format": "auto", "hook": "channel_create"]
            let answer = try await server.send(
                .POST, "/console/api/try", body: try JSONWriter.encode(request),
                headers: [("Content-Type", "application/json"), Self.action])
            #expect(answer.status == 200)
            let report = try Self.json(answer.body)
            #expect(report["name"]?.stringValue == "channel_create")
            let hello = try #require(report["rules"]?.arrayValue?.first { $0["rule"]?.stringValue == "hello" })
            #expect(hello["http"]?[0]?["error"]?.stringValue?.contains("dry run") == true)
            #expect(hello["forwards"]?[0]?["url"]?.stringValue == "http://127.0.0.1:\(sink.port)/echo")
            #expect(report["not_matching"]?.intValue == 1)
            // Nothing reached the sink, nothing was journaled.
            #expect(sink.requests.isEmpty)
            #expect(try server.journal?.counts().done == 0)
            #expect(try server.journal?.counts().pending == 0)

            let bad = try await server.send(
                .POST, "/console/api/try", body: try JSONWriter.encode(["body": "{oops", "format": "json"]),
                headers: [Self.action])
            #expect(bad.status == 400)
            #expect(bad.body.contains("json body"))
            let empty = try await server.send(
                .POST, "/console/api/try", body: try JSONWriter.encode(["body": ""]), headers: [Self.action])
            #expect(empty.status == 400)
            #expect(empty.body.contains("paste a body"))
            let huge = try await server.send(
                .POST, "/console/api/try", body: Array(repeating: UInt8(ascii: "x"), count: 3 << 20),
                headers: [Self.action])
            #expect(huge.status == 413)
            #expect(huge.body.contains("--max-body-bytes"))
        }
        try await sink.stop()
    }

    @Test func theCallPageJoinsBothLegs() async throws {
        try await withServer(rules: ["record.lua": recordingRule], journal: true) { server in
            // Kazoo's call ids hold '@': the page asks for them percent-encoded.
            let aLeg = try sampleBody("channel_create__inbound.json", callID: "leg-a@198.51.100.7")
            var bLeg = try JSONReader.parse(try sampleBody("channel_create__inbound.json", callID: "leg-b"))
                .objectValue!
            bLeg["other_leg_call_id"] = "leg-a@198.51.100.7"
            let other = try sampleBody("channel_create__inbound.json", callID: "someone-else")
            for body in [aLeg, try JSONWriter.encode(.object(bLeg)), other] {
                #expect(try await server.send(.POST, "/hooks/channel_create", body: body).status == 200)
            }
            #expect(await server.eventually { (try? server.journal?.counts().done) == 3 })
            // Both legs, from either side, and nothing else.
            for start in ["leg-a%40198.51.100.7", "leg-b"] {
                let call = try Self.json(try await server.send(.GET, "/console/api/calls/\(start)").body)
                let ids = call["events"]?.arrayValue?.compactMap { $0["call_id"]?.stringValue }.sorted()
                #expect(ids == ["leg-a@198.51.100.7", "leg-b"], "from \(start)")
            }
            let filtered = try Self.json(try await server.send(.GET, "/console/api/events?call_id=someone-else").body)
            #expect(filtered["events"]?.arrayValue?.count == 1)
            let byName = try Self.json(try await server.send(.GET, "/console/api/events?name=channel_create").body)
            #expect(byName["events"]?.arrayValue?.count == 3)
            let none = try Self.json(try await server.send(.GET, "/console/api/events?name=channel_destroy").body)
            #expect(none["events"]?.arrayValue?.count == 0)
        }
    }

    @Test func theConsoleNeedsTheAdminCredentialsAndLogsItsActions() async throws {
        try await withServer(rules: ["record.lua": recordingRule], journal: true, configure: { $0.token = "s3cret" }) {
            server in
            for path in ["/console", "/console/api/rules", "/console/api/stream", "/console/api/events"] {
                #expect(try await server.send(.GET, path).status == 401, "\(path)")
            }
            #expect(try await server.send(.POST, "/console/api/reload", headers: [Self.action]).status == 401)
            let page = try await server.send(.GET, "/console?token=s3cret")
            #expect(page.status == 200)
            #expect(page.body.contains("<title>Switchboard console</title>"))
            let rules = try Self.json(try await server.send(.GET, "/console/api/rules?token=s3cret").body)
            #expect(rules["rules"]?[0]?["name"]?.stringValue == "record")
            #expect(rules["rules"]?[0]?["on"]?[0]?.stringValue == "*")
            let reload = try await server.send(.POST, "/console/api/reload?token=s3cret", headers: [Self.action])
            #expect(reload.status == 200)
            #expect(server.logs.contains(.notice, "console: reload asked"))
            let redeliver = try await server.send(
                .POST, "/console/api/deliveries/77/redeliver?token=s3cret", headers: [Self.action])
            #expect(redeliver.status == 404)
        }
    }

    @Test func rejectedBodiesAreShownWithSecretsRedacted() async throws {
        try await withServer(rules: ["record.lua": recordingRule]) { server in
            let answer = try await server.send(
                .POST, "/hooks/channel_create",
                body: Array("password=hunter2&access-token=zq7&x-api-key=zq8&oauth2_token=zq9&call_id=x&oops[=1".utf8),
                headers: [("Content-Type", "application/json"), ("Authorization", "Bearer abc")])
            #expect(answer.status == 400)
            let listed = try Self.json(try await server.send(.GET, "/console/api/rejected").body)
            let first = try #require(listed["rejected"]?[0])
            #expect(first["code"]?.stringValue != nil)
            let shown = try #require(first["body"]?.stringValue)
            for secret in ["hunter2", "zq7", "zq8", "zq9"] { #expect(!shown.contains(secret)) }
            #expect(shown.contains("password=REDACTED"))
            #expect(shown.contains("call_id=x"))
            #expect(first["headers"]?["authorization"]?.stringValue == "REDACTED")
        }
    }

    final class Received: Sendable {
        let text = Mutex("")
        func withLock<T>(_ body: (inout String) -> T) -> T { text.withLock { body(&$0) } }
    }

    static func get(_ server: ServerFixture, _ path: String) async throws -> JSONValue {
        try json(try await server.send(.GET, path).body)
    }
}

/// The live tail and the hour's figures, without a server.
@Suite struct ConsoleFeedTests {
    static func report(_ callID: String, outcomes: [(String, RuleOutcome.Outcome, Double)]) -> EventReport {
        var fields = JSONObject()
        fields["call_id"] = .string(callID)
        let event = WebhookEvent(kind: .channel, name: "channel_create", hook: "channel_create", fields: fields)
        return EventReport(
            event: event,
            rules: outcomes.map { name, outcome, seconds in
                var o = RuleOutcome(rule: name, file: "rules/\(name).lua", outcome: outcome)
                o.seconds = seconds
                if outcome == .error { o.stage = "run" }
                return o
            } + [RuleOutcome(rule: "elsewhere", file: "rules/elsewhere.lua", outcome: .skipped, stage: "on")])
    }

    @Test func theTailKeepsTheNewestAndSaysWhatItSkipped() {
        let feed = ConsoleFeed(capacity: 10)
        for n in 1...30 {
            feed.record(Self.report("c\(n)", outcomes: [("a", .ok, 0.001)]), meta: ["id": .string("e\(n)")])
        }
        let all = feed.live(after: 0, limit: 200)
        #expect(all.latest == 30)
        #expect(all.events.count >= 10)
        #expect(all.events.last?.callID == "c30")
        #expect(all.missed == 30 - all.events.count)
        let limited = feed.live(after: 25, limit: 3)
        #expect(limited.events.map(\.seq) == [28, 29, 30])
        #expect(limited.missed == 2)
        // Rules whose `on` declined the event get no badge.
        #expect(limited.events[0].badges.map(\.rule) == ["a"])
        #expect(feed.live(after: 30, limit: 10).events.isEmpty)
    }

    @Test func ruleFiguresCoverTheLastHour() {
        let now = Mutex(1_000_000.0)
        let feed = ConsoleFeed(clock: { now.withLock { $0 } })
        for n in 0..<100 {
            feed.record(
                Self.report(
                    "c", outcomes: [("fast", .ok, 0.001), ("slow", n == 99 ? .error : .ok, n < 98 ? 0.01 : 2.0)]),
                meta: ["id": .string("e\(n)")])
        }
        var stats = feed.ruleStats()
        #expect(stats["fast"]?["runs"]?.intValue == 100)
        #expect(stats["slow"]?["errors"]?.intValue == 1)
        let p50 = stats["slow"]?["p50"]?.doubleValue ?? 0
        let p99 = stats["slow"]?["p99"]?.doubleValue ?? 0
        #expect(p50 >= 0.01 && p50 <= 0.0125, "p50 \(p50)")  // within one 25% bucket
        #expect(p99 >= 2.0 && p99 <= 2.5, "p99 \(p99)")
        #expect(feed.recentErrors().first?["rule"]?.stringValue == "slow")
        let series = feed.series().arrayValue ?? []
        #expect(series.count == 60)
        #expect(series.last?["events"]?.intValue == 100)
        #expect(series.last?["errors"]?.intValue == 1)
        // An hour later the figures are gone.
        now.withLock { $0 += 3600 }
        stats = feed.ruleStats()
        #expect(stats["fast"] == nil)
        #expect(feed.series().arrayValue?.allSatisfy { $0["events"]?.intValue == 0 } == true)
    }
}

/// A journal written before the console existed opens with the new columns.
@Suite struct ConsoleJournalTests {
    @Test func anOldJournalGainsTheOutcomeColumns() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("console-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = EventJournal.file(in: directory.path)
        let old = try DatabaseQueue(path: path)
        try old.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE events (id TEXT PRIMARY KEY, received_at REAL NOT NULL, hook TEXT, format TEXT NOT NULL,
                      body BLOB NOT NULL, meta TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, done_at REAL);
                    INSERT INTO events (id, received_at, hook, format, body, meta, done) VALUES ('old', 1, 'x', 'json', x'7b7d', '{}', 1);
                    """)
        }
        try old.close()
        let journal = try EventJournal(directory: directory.path)
        let rows = try journal.recentEvents(limit: 10)
        #expect(rows.map(\.id) == ["old"])
        #expect(rows[0].done && rows[0].doneAt == 1)
        #expect(rows[0].outcomes == nil)
        #expect(try journal.unfinished().isEmpty)
        // Opening it again (a second node or the CLI) is fine too.
        _ = try EventJournal(directory: directory.path)
    }

    /// A journal that kept done state and outcomes in the events' own columns: its finished events keep them,
    /// its unfinished ones stay unfinished, and the old indexes go.
    @Test func doneRecordsMoveToTheirOwnTableOnce() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("console-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = EventJournal.file(in: directory.path)
        let old = try DatabaseQueue(path: path)
        try await old.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE events (id TEXT PRIMARY KEY, received_at REAL NOT NULL, hook TEXT, format TEXT NOT NULL,
                      body BLOB NOT NULL, meta TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, done_at REAL,
                      name TEXT, call_id TEXT, other_leg TEXT, account_id TEXT, outcomes TEXT);
                    CREATE INDEX events_pending ON events(done, received_at);
                    CREATE INDEX events_call ON events(call_id) WHERE call_id IS NOT NULL;
                    INSERT INTO events VALUES ('a', 10, 'h', 'json', x'7b7d', '{}', 1, 11, 'channel.channel_create', 'c1',
                      'c2', 'acct', '[{"rule":"r"}]');
                    INSERT INTO events (id, received_at, hook, format, body, meta) VALUES ('b', 12, 'h', 'json', x'7b7d', '{}');
                    """)
        }
        try old.close()
        let journal = try EventJournal(directory: directory.path)
        let done = try #require(try journal.storedEvent("a"))
        #expect(done.done && done.doneAt == 11 && done.name == "channel.channel_create")
        #expect(done.callID == "c1" && done.otherLeg == "c2" && done.accountID == "acct")
        #expect(done.outcomes == #"[{"rule":"r"}]"#)
        #expect(try journal.callEvents(["c2"]).map(\.id) == ["a"])
        #expect(try journal.unfinished().map(\.id) == ["b"])
        #expect(try journal.counts() == (pending: 1, done: 1))
        let indexes = try await DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
        }
        #expect(!indexes.contains("events_pending") && !indexes.contains("events_call"))
        // Opened again: nothing is copied twice, and a done mark now lands in the new table.
        let again = try EventJournal(directory: directory.path)
        again.markDone([DoneMark(id: "b", forwards: [])])
        await again.drain()
        #expect(try again.unfinished().isEmpty)
        #expect(try again.counts() == (pending: 0, done: 2))
    }
}

extension JSONValue {
    /// The element at `index` of an array (nil otherwise), so tests can write `value["rules"]?[0]`.
    fileprivate subscript(index: Int) -> JSONValue? {
        guard let array = arrayValue, array.indices.contains(index) else { return nil }
        return array[index]
    }
}
