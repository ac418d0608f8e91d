public import ArgumentParser
import EventStore
import Foundation
import JSONCore

/// A command could not do its job (not a usage mistake): printed as `Error: …` without the usage text.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Where `serve` keeps its journal and rejected bodies, for the commands that read them.
public struct DataOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The server's data directory (env: SWITCHBOARD_DATA_DIR). Default var.", valueName: "dir"))
    public var dataDir: String?

    public init() {}

    var directory: String { dataDir ?? ProcessInfo.processInfo.environment["SWITCHBOARD_DATA_DIR"] ?? "var" }

    /// The journal `serve` wrote; an error that says what to do when there is none.
    func openJournal() throws -> EventJournal {
        let path = EventJournal.file(in: directory)
        guard FileManager.default.fileExists(atPath: path) else {
            throw CommandFailure(
                "no journal at \(path): start `switchboard serve` (journal on) first, or point --data-dir at the server's data directory"
            )
        }
        do { return try EventJournal(directory: directory) } catch { throw CommandFailure("\(error)") }
    }
}

/// `switchboard deliveries`: the outbox — forwards waiting, failing, delivered or dead.
public struct DeliveriesCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "deliveries",
        abstract: "List the forwards in the outbox, with every attempt.",
        discussion: """
            Every forward a rule asks for is kept in DATA_DIR/switchboard.sqlite and delivered by the \
            server: retried with backoff until a 2xx, then kept as a dead letter after the last attempt. \
            Pass IDs to see their attempt log (time, status, latency, start of the response).

            Examples:
              switchboard deliveries --failed
              switchboard deliveries --dead --json | jq '.[].url'
              switchboard deliveries 42
              switchboard redeliver --dead
            """
    )

    @OptionGroup var data: DataOptions
    @Flag(
        help:
            "Only these: --pending (not delivered yet), --failed (pending, failed at least once), --dead (attempts ran out), --delivered. Default: all."
    )
    var state: DeliveryStateFlag?
    @Flag(name: .long, help: "Print JSON (the same as GET /admin/deliveries).")
    var json = false
    @Option(name: .long, help: ArgumentHelp("Show at most this many, newest first.", valueName: "n"))
    var limit = 100
    @Argument(help: ArgumentHelp("Show these deliveries with their attempt log.", valueName: "id"))
    var ids: [Int64] = []

    public init() {}

    public func run() throws {
        let journal = try data.openJournal()
        var listed: [Delivery] = []
        if ids.isEmpty {
            listed = try journal.deliveries(state?.filter ?? .all, limit: max(limit, 1))
        } else {
            for id in ids {
                guard let delivery = try journal.delivery(id) else { throw CommandFailure("no delivery \(id)") }
                listed.append(delivery)
            }
        }
        if json {
            let value = JSONValue.array(try listed.map { try $0.json(attempts: journal.attempts($0.id)) })
            print(try JSONWriter.string(value))
            return
        }
        if listed.isEmpty {
            print("no \(state.map { "\($0.filter.rawValue) " } ?? "")deliveries")
            return
        }
        let now = Date().timeIntervalSince1970
        for delivery in listed {
            var line =
                "\(delivery.id)  \(delivery.state.rawValue)  \(delivery.method) \(delivery.url)  rule \(delivery.rule)"
            line += "  attempts \(delivery.attempts)"
            if let status = delivery.lastStatus {
                line += "  last HTTP \(status)"
            } else if let error = delivery.lastError {
                line += "  last: \(error)"
            }
            if delivery.state == .pending {
                let wait = delivery.nextAttemptAt - now
                line += wait > 0 ? "  next in \(Self.duration(wait))" : "  due now"
            }
            print(line)
            if !ids.isEmpty {
                for attempt in try journal.attempts(delivery.id) {
                    let when = Date(timeIntervalSince1970: attempt.at).formatted(.iso8601)
                    let result = attempt.status.map { "HTTP \($0)" } ?? attempt.error ?? "?"
                    var row =
                        "    #\(attempt.number) \(when)  \(result)  \(String(format: "%.0f", attempt.latencyMs)) ms"
                    if let excerpt = attempt.excerpt, !excerpt.isEmpty {
                        row += "  \(excerpt.prefix(120).replacingOccurrences(of: "\n", with: " "))"
                    }
                    print(row)
                }
            }
        }
        let counts = try journal.deliveryCounts()
        print(
            "\(counts[.pending] ?? 0) pending, \(counts[.delivered] ?? 0) delivered, \(counts[.dead] ?? 0) dead in \(journal.path)"
        )
    }

    static func duration(_ seconds: Double) -> String {
        if seconds < 60 { return String(format: "%.0fs", seconds.rounded(.up)) }
        if seconds < 3600 { return String(format: "%.0fm", (seconds / 60).rounded(.up)) }
        return String(format: "%.1fh", seconds / 3600)
    }
}

enum DeliveryStateFlag: String, EnumerableFlag {
    case pending, failed, dead, delivered

    var filter: DeliveryFilter { DeliveryFilter(rawValue: rawValue) ?? .all }
}

/// `switchboard redeliver`: put dead (or any) deliveries back in the queue.
public struct RedeliverCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "redeliver",
        abstract: "Queue deliveries again with a fresh set of attempts.",
        discussion: """
            A running server picks them up within a second; otherwise the next `switchboard serve` does. \
            Their earlier attempts stay in the log.

            Examples:
              switchboard redeliver 42 43
              switchboard redeliver --dead
            """
    )

    @OptionGroup var data: DataOptions
    @Flag(name: .long, help: "Every dead letter.")
    var dead = false
    @Argument(help: ArgumentHelp("Deliveries to send again (see switchboard deliveries).", valueName: "id"))
    var ids: [Int64] = []

    public init() {}

    public func validate() throws {
        if ids.isEmpty == !dead { throw ValidationError("give delivery IDs or --dead (not both)") }
    }

    public func run() throws {
        let journal = try data.openJournal()
        let queued = dead ? try journal.redeliverDead() : try journal.redeliver(ids)
        let missing = ids.filter { !queued.contains($0) }
        if !queued.isEmpty {
            print(
                "queued \(queued.count) deliver\(queued.count == 1 ? "y" : "ies") again: \(queued.map(String.init).joined(separator: ", "))"
            )
        } else if dead {
            print("no dead letters")
        }
        if !missing.isEmpty {
            throw CommandFailure("no delivery \(missing.map(String.init).joined(separator: ", "))")
        }
    }
}

/// `switchboard rejected`: the requests answered 4xx, kept for inspection.
public struct RejectedCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "rejected",
        abstract: "List the requests the server answered 4xx, with the reason.",
        discussion: """
            Each is kept in DATA_DIR/rejected/ as the body as received (.body) and its details (.json: \
            reason, method, path, headers with secrets removed, peer, time). The same list is served at \
            GET /admin/rejected.

            Examples:
              switchboard rejected
              switchboard rejected --json | jq '.[0].reason'
            """
    )

    @OptionGroup var data: DataOptions
    @Flag(name: .long, help: "Print JSON (the same as GET /admin/rejected).")
    var json = false
    @Option(name: .long, help: ArgumentHelp("Show at most this many, newest first.", valueName: "n"))
    var limit = 100

    public init() {}

    public func run() throws {
        let directory = RejectedStore.directory(inDataDirectory: data.directory)
        let listed = RejectedStore(directory: directory).list(limit: max(limit, 1))
        if json {
            let data = try JSONSerialization.data(withJSONObject: listed, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if listed.isEmpty {
            print("no rejected requests in \(directory.path)")
            return
        }
        for item in listed {
            let time =
                (item["received_at"] as? Double).map { Date(timeIntervalSince1970: $0).formatted(.iso8601) } ?? "?"
            let method = item["method"] as? String ?? "?"
            let path = item["path"] as? String ?? "?"
            let code = item["code"] as? String ?? "?"
            let reason = item["reason"] as? String ?? "?"
            let body = item["body_file"] as? String ?? "?"
            print("\(time)  \(method) \(path)  [\(code)] \(reason)  → \(directory.path)/\(body)")
        }
    }
}
