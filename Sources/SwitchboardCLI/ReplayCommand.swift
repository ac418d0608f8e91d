public import ArgumentParser
import EventStore
import Foundation
public import JSONCore
public import KazooEvents
public import RuleEngine
import RuleTesting
import Synchronization

/// `switchboard replay`: events the server accepted, run again through a rule set as a dry run.
public struct ReplayCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Run accepted events through rules as a dry run; with --against, show what a change changes.",
        discussion: """
            Reads the events the server accepted from DATA_DIR/switchboard.sqlite (done or not, oldest \
            first) and runs them through the rules in --rules as a dry run: nothing is sent; http.* is \
            answered by the mocks in --mocks FILE or refused ("dry run: not sent"); forwards are shown, not \
            sent. Each rule set gets its own empty store (events of one call run in order, so call.* state \
            builds up as it did), thrown away at the end.

            With --against DIR the same events also run through the rules in DIR and only the differences \
            are printed, per event and rule: outcome and stage, errors, forwards (bodies as a line diff) and \
            log lines; then a summary. Without it every event's outcomes are printed as `switchboard run` \
            prints them (--summary: only the counts).

            TIME is an ISO 8601 time (2026-11-30T09:00:00Z), a date (2026-11-30, UTC), Unix seconds, or a \
            duration meaning that long ago (90m, 24h, 7d).

            --mocks FILE is a JSON array of mocks, as http.mock takes them in tests: \
            [{"method": "GET", "url": "https://crm.example.com/*", "json": {"name": "Acme"}}].

            Exit status: 0, or 1 when --against found differences (so scripts can gate a change on it).

            Examples:
              switchboard replay --since 24h --rules rules --summary
              switchboard replay --since 2026-11-30 --rules rules --against rules-next
              switchboard replay --name channel_destroy --call 1783265409_83651247@203.0.113.45 --json
            """
    )

    @OptionGroup var options: RulesOptions
    @OptionGroup var data: DataOptions

    @Option(name: .long, help: ArgumentHelp("Only events accepted at or after TIME.", valueName: "time"))
    var since: String?

    @Option(name: .long, help: ArgumentHelp("Only events accepted before TIME.", valueName: "time"))
    var until: String?

    @Option(
        name: .long,
        help: ArgumentHelp("Only these events (an on name: channel_destroy, notifications.*).", valueName: "event"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("Only this call's events (its call_id).", valueName: "id"))
    var call: String?

    @Option(name: .long, help: ArgumentHelp("At most N events (the oldest that match).", valueName: "n"))
    var limit: Int?

    @Option(name: .long, help: ArgumentHelp("A second rules directory to compare with.", valueName: "dir"))
    var against: String?

    @Option(name: .long, help: ArgumentHelp("HTTP mocks for the rules' http.* calls (JSON).", valueName: "file"))
    var mocks: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Lua workers to run on (default 1: every event in acceptance order, so state shared across calls builds up the same way on every replay; more is faster, but events of different calls then interleave differently).",
            valueName: "n"))
    var workers: Int = 1

    @Flag(name: .long, help: "Print only the summary.")
    var summary = false

    @Flag(name: .long, help: "Print JSON lines: one object per event (or difference), then the summary.")
    var json = false

    public init() {}

    public func validate() throws {
        if let name, EventPattern(name) == nil {
            let hint = EventPattern.suggestion(for: name).map { " (did you mean \($0)?)" } ?? ""
            throw ValidationError("--name: unknown event \"\(name)\"\(hint)")
        }
        if let limit, limit <= 0 { throw ValidationError("--limit must be at least 1") }
        if workers <= 0 { throw ValidationError("--workers must be at least 1") }
        for (flag, value) in [("--since", since), ("--until", until)] {
            if let value, Self.time(value, now: 0) == nil {
                throw ValidationError(
                    "\(flag): \"\(value)\" is not a time: give 2026-11-30T09:00:00Z, 2026-11-30, Unix seconds or 24h (ago)"
                )
            }
        }
    }

    public func run() async throws {
        let now = Date().timeIntervalSince1970
        let journal = try data.openJournal()
        let client = try Self.client(mocks: mocks)
        let base = try await ReplaySet(
            source: try Self.read(options.rules), configuration: options.configuration, client: client, workers: workers
        )
        var other: ReplaySet? = nil
        if let against {
            other = try await ReplaySet(
                source: try Self.read(against), configuration: options.configuration, client: client, workers: workers)
        }
        let filter = Filter(
            since: since.flatMap { Self.time($0, now: now) } ?? 0,
            until: until.flatMap { Self.time($0, now: now) } ?? .greatestFiniteMagnitude,
            pattern: name.flatMap(EventPattern.init), call: call, limit: limit)
        let progress = Progress(show: !json && isatty(2) == 1)
        var output = ReplayOutput(json: json, summaryOnly: summary, comparing: other != nil)
        // Chunks stream through: the next is read and decoded while the rules run on this one.
        let reader = ChunkReader(journal: journal, filter: filter)
        var next = Task { try reader.next() }
        while true {
            let chunk = try await next.value
            guard !chunk.events.isEmpty || !chunk.finished else {
                output.undecodable += chunk.undecodable
                break
            }
            next = Task { try reader.next() }
            let reports = await base.run(chunk.events)
            var compared: [EventReport]? = nil
            if let other { compared = await other.run(chunk.events) }
            output.undecodable += chunk.undecodable
            output.add(chunk.events, base: reports, against: compared)
            progress.add(chunk.events.count)
        }
        progress.finish()
        if output.finish() > 0 { throw ExitCode(1) }
    }

    static func read(_ directory: String) throws -> RuleSource {
        do { return try RuleSource.read(directory: directory) } catch { throw ValidationError("\(error)") }
    }

    static func client(mocks path: String?) throws -> any OutboundHTTPClient {
        guard let path else { return DryRunHTTPClient() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--mocks: cannot read \(path)")
        }
        let parsed: JSONValue
        do { parsed = try JSONReader.parse([UInt8](data)) } catch {
            throw ValidationError("--mocks: \(path) is not JSON: \(error)")
        }
        guard case .array(let items) = parsed else {
            throw ValidationError(
                "--mocks: \(path) must hold a JSON array of mocks, such as [{\"url\": \"https://crm.example.com/*\", \"json\": {}}]"
            )
        }
        let client = MockHTTPClient()
        for (index, item) in items.enumerated() {
            guard case .object(let o) = item else {
                throw ValidationError("--mocks: item \(index + 1) is not an object")
            }
            do { client.add(try MockHTTPClient.mock(from: o)) } catch {
                throw ValidationError("--mocks: item \(index + 1): \(error)")
            }
        }
        return client
    }

    /// Which accepted events to replay.
    struct Filter {
        var since: Double
        var until: Double
        var pattern: EventPattern?
        var call: String?
        var limit: Int?
    }

    /// Every accepted event that passes the filter, decoded, and how many no longer decode.
    static func events(_ journal: EventJournal, _ filter: Filter) throws -> ([ReplayEvent], Int) {
        let reader = ChunkReader(journal: journal, filter: filter)
        var events: [ReplayEvent] = []
        var undecodable = 0
        while true {
            let chunk = try reader.next()
            events += chunk.events
            undecodable += chunk.undecodable
            if chunk.finished { return (events, undecodable) }
        }
    }

    /// A TIME argument as Unix seconds; nil when it is none of the accepted forms.
    static func time(_ text: String, now: Double) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let unix = Double(trimmed) { return unix }
        if let last = trimmed.last, last.isLetter, !trimmed.contains("-"), let ago = Durations.parse(trimmed) {
            return now - ago
        }
        let iso = ISO8601DateFormatter()
        if let date = iso.date(from: trimmed) { return date.timeIntervalSince1970 }
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = iso.date(from: trimmed) { return date.timeIntervalSince1970 }
        iso.formatOptions = [.withFullDate]
        if let date = iso.date(from: trimmed) { return date.timeIntervalSince1970 }
        return nil
    }
}

/// One accepted event to replay.
public struct ReplayEvent: Sendable {
    public var id: String
    public var receivedAt: Double
    public var event: WebhookEvent
    public var meta: JSONValue?

    public init(id: String, receivedAt: Double, event: WebhookEvent, meta: JSONValue?) {
        self.id = id
        self.receivedAt = receivedAt
        self.event = event
        self.meta = meta
    }
}

/// Reads accepted events a page at a time, decodes them and keeps those that pass the filter.
final class ChunkReader: Sendable {
    struct Chunk: Sendable {
        var events: [ReplayEvent]
        var undecodable: Int
        /// Nothing more to read.
        var finished: Bool
    }

    struct Position {
        var cursor: Int64 = 0
        var kept = 0
        var done = false
    }

    let journal: EventJournal
    let filter: ReplayCommand.Filter
    let position = Mutex(Position())
    let decoder = EventDecoder()
    static let page = 4_096

    init(journal: EventJournal, filter: ReplayCommand.Filter) {
        self.journal = journal
        self.filter = filter
    }

    /// The next page's events that pass the filter (possibly none, when none of the page did).
    func next() throws -> Chunk {
        let start = position.withLock { $0 }
        if start.done { return Chunk(events: [], undecodable: 0, finished: true) }
        let (entries, cursor) = try journal.accepted(
            after: start.cursor, since: filter.since, until: filter.until, limit: Self.page)
        var events: [ReplayEvent] = []
        var undecodable = 0
        var kept = start.kept
        var finished = entries.count < Self.page
        for entry in entries {
            guard
                let event = try? decoder.decode(
                    entry.body, format: WireFormat(rawValue: entry.format) ?? .json, hook: entry.hook)
            else {
                undecodable += 1
                continue
            }
            if let pattern = filter.pattern, !pattern.matches(event, qualifiedName: event.qualifiedName) { continue }
            if let call = filter.call, event.callID != call { continue }
            events.append(
                ReplayEvent(
                    id: entry.id, receivedAt: entry.receivedAt, event: event,
                    meta: try? JSONReader.parse(Array(entry.meta.utf8))))
            kept += 1
            if let limit = filter.limit, kept >= limit {
                finished = true
                break
            }
        }
        position.withLock { $0 = Position(cursor: cursor, kept: kept, done: finished) }
        return Chunk(events: events, undecodable: undecodable, finished: finished)
    }
}

/// A rule set loaded for replay: its workers and its own store, kept across chunks. The events of one call go
/// to one worker, in order; the rest are spread evenly. Each worker takes its share of a chunk in one call (no
/// hop per event).
public final class ReplaySet: Sendable {
    let workers: [RuleWorker]
    /// The store's clock follows the events: before each runs it is set to when the server accepted it, so
    /// TTLs, `store.count` windows and call-state expiry see the time the traffic had, not replay's speed.
    /// (With several workers, events of different calls interleave, so it is approximate.)
    let clock = ReplayClock()
    let store: RuleStore
    let keep: Double
    let spread = Mutex(0)

    /// Loads the rules into `workers` Lua states. Throws when they do not load.
    public init(source: RuleSource, configuration: RuleConfiguration, client: any OutboundHTTPClient, workers: Int)
        async throws
    {
        var pool: [RuleWorker] = []
        for _ in 0..<max(workers, 1) {
            pool.append(try RuleWorker(source: source, configuration: configuration, client: client))
        }
        let errors = await pool[0].diagnostics.filter { $0.severity == .error }
        guard errors.isEmpty else {
            throw ValidationError(
                "the rules in \(source.directory) do not load:\n" + errors.map(\.description).joined(separator: "\n"))
        }
        self.workers = pool
        keep = configuration.callStateKeep
        store = RuleStore(clock: { [clock] in clock.now })
    }

    /// One report per event, in the order given.
    public func run(_ events: [ReplayEvent]) async -> [EventReport] {
        let count = workers.count
        let clock = clock
        if count == 1 {
            return await workers[0].processAll(
                events.map { ($0.event, $0.meta) }, store: store, callStateKeep: keep,
                willRun: { index in clock.advance(to: events[index].receivedAt) })
        }
        var shares = [[Int]](repeating: [], count: count)
        for (index, item) in events.enumerated() {
            let slot =
                item.event.callID.map { Engine.slot(of: $0, among: count) }
                ?? spread.withLock { n in
                    n += 1
                    return n % count
                }
            shares[slot].append(index)
        }
        var reports = [EventReport?](repeating: nil, count: events.count)
        let (store, keep) = (store, keep)
        await withTaskGroup(of: ([Int], [EventReport]).self) { group in
            for (slot, share) in shares.enumerated() where !share.isEmpty {
                let batch = share.map { (event: events[$0].event, meta: events[$0].meta) }
                let worker = workers[slot]
                let times = share.map { events[$0].receivedAt }
                group.addTask {
                    let reports = await worker.processAll(
                        batch, store: store, callStateKeep: keep,
                        willRun: { index in clock.advance(to: times[index]) })
                    return (share, reports)
                }
            }
            for await (share, done) in group {
                for (index, report) in zip(share, done) { reports[index] = report }
            }
        }
        return reports.map { $0! }
    }
}

/// Replay's store clock: the latest accepted time among the events run so far.
final class ReplayClock: Sendable {
    let time = Mutex(0.0)
    var now: Double { time.withLock { $0 } }
    func advance(to value: Double) { time.withLock { $0 = max($0, value) } }
}

/// "replayed 12000 events" on standard error while it runs, when that is a terminal.
final class Progress: Sendable {
    let done = Mutex(0)
    let show: Bool

    init(show: Bool) { self.show = show }

    func add(_ count: Int) {
        let total = done.withLock { n -> Int in
            n += count
            return n
        }
        if show { FileHandle.standardError.write(Data("\rreplayed \(total) events".utf8)) }
    }

    func finish() {
        if show { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
