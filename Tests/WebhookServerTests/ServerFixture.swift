import AsyncHTTPClient
import Delivery
import EventStore
import Foundation
import JSONCore
import Logging
import NIOCore
import NIOHTTP1
import RuleEngine
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing
import WebhookServer

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../..").standardizedFileURL

func sampleBody(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: repositoryRoot.appendingPathComponent("samples/\(name)")))
}

/// A JSON sample with its `call_id` replaced: events of one call run one after another, so tests that need
/// events to run side by side give each its own call.
func sampleBody(_ name: String, callID: String) throws -> [UInt8] {
    var object = try #require(try JSONSerialization.jsonObject(with: Data(sampleBody(name))) as? [String: Any])
    object["call_id"] = callID
    return [UInt8](try JSONSerialization.data(withJSONObject: object))
}

/// Log lines a test can read.
final class CapturedLogs: Sendable {
    let lines = Mutex<[(Logger.Level, String)]>([])
    func contains(_ level: Logger.Level, _ text: String) -> Bool {
        lines.withLock { $0.contains { $0.0 == level && $0.1.contains(text) } }
    }
    /// Every line, for a failed expectation's message.
    var all: String { lines.withLock { $0.map { "\($0.0): \($0.1)" }.joined(separator: "\n") } }
}

struct CapturingLogHandler: LogHandler {
    let logs: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        logs.lines.withLock { $0.append((event.level, "\(event.message) \(event.metadata ?? [:])")) }
    }
}

/// A real switchboard server on an ephemeral port of 127.0.0.1, with the given rule files.
struct ServerFixture {
    let base: String
    let dispatcher: Engine
    let logs: CapturedLogs
    let dataDirectory: URL
    let http: HTTPClient
    let group: ServiceGroup
    /// Set when the server runs with the journal (and the outbox).
    let journal: EventJournal?

    var metrics: Metrics { dispatcher.metrics }

    func send(
        _ method: HTTPMethod = .POST, _ path: String, body: [UInt8] = [], headers: [(String, String)] = []
    ) async throws -> (status: Int, body: String, headers: [(String, String)]) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if !body.isEmpty { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: .seconds(30))
        var buffer = try await response.body.collect(upTo: 1 << 20)
        return (
            Int(response.status.code), buffer.readString(length: buffer.readableBytes) ?? "",
            response.headers.map { ($0.name, $0.value) }
        )
    }

    /// Waits (up to `seconds`) until `condition` holds.
    func eventually(_ seconds: Double = 20, _ condition: () -> Bool) async -> Bool {
        await TestSupport.eventually(seconds, condition)
    }
}

func withServer(
    rules: [String: String] = [:], directory: String? = nil, watch: Bool = true, journal useJournal: Bool = false,
    journalPages: Int? = nil,
    configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (ServerFixture) async throws -> Void
) async throws {
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.workers = 2
    configuration.dataDirectory =
        FileManager.default.temporaryDirectory
        .appendingPathComponent("switchboard-server-\(UUID().uuidString)").path
    configuration.rules = RuleConfiguration(environment: [:])
    if !useJournal { configuration.outbox.maxAttempts = 1 }  // journal off: one attempt per forward
    configure(&configuration)
    let logs = CapturedLogs()
    let logger = Logger(label: "test") { _ in CapturingLogHandler(logs: logs) }
    let client = GuardedHTTPClient(allowed: configuration.allowHTTPTo)
    let source =
        try directory.map { try RuleSource.read(directory: $0) } ?? RuleSource(directory: "rules", files: rules)
    if let directory { configuration.rulesDirectory = directory }
    let journal =
        useJournal ? try EventJournal(directory: configuration.dataDirectory, maxPages: journalPages) : nil
    let dispatcher = try await Engine(
        source: source, configuration: configuration.rules,
        workers: configuration.workers, client: client, metrics: Metrics(), logger: logger,
        grace: configuration.shutdownGrace, maxEventsInFlight: configuration.maxEventsInFlight,
        journal: journal ?? MemoryJournal())
    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    let queue = try #require(dispatcher.journal as? any DeliveryQueue)
    var services: [any Service] = [
        Outbox(
            journal: queue, client: client, policy: configuration.outbox, metrics: dispatcher.metrics, logger: logger),
        dispatcher,
    ]
    if let directory {
        services.append(RuleReloader(directory: directory, engine: dispatcher, logger: logger, watch: watch))
    }
    let app = buildApplication(
        configuration: configuration, engine: dispatcher, journal: journal, metrics: dispatcher.metrics, logger: logger,
        services: services
    ) { channel in
        portContinuation.yield(channel.localAddress?.port ?? 0)
    }
    let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
    let running = Task { try await group.run() }
    var iterator = ports.makeAsyncIterator()
    let port = await iterator.next() ?? 0
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let fixture = ServerFixture(
        base: "http://127.0.0.1:\(port)", dispatcher: dispatcher, logs: logs,
        dataDirectory: URL(fileURLWithPath: configuration.dataDirectory), http: http, group: group, journal: journal)
    do {
        try await body(fixture)
    } catch {
        await group.triggerGracefulShutdown()
        try? await running.value
        try? await http.shutdown()
        try? await client.shutdown()
        throw error
    }
    await group.triggerGracefulShutdown()
    try await running.value
    try await http.shutdown()
    try await client.shutdown()
}

/// A rule that logs every event it sees.
let recordingRule = """
    return { name = "record", on = "*", run = function(event) log.info(event.kind .. " " .. event.name, { hook_id = event.meta.hook_id }) end }
    """
