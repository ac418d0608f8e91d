public import ArgumentParser
import ClusterStore
import EventStore
import Foundation
import JSONCore
import Logging

/// `switchboard nodes`: the nodes sharing a PostgreSQL store, from their heartbeats.
public struct NodesCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "nodes",
        abstract: "List the nodes of a cluster on PostgreSQL: version, rules, work in flight, the processing node.",
        discussion: """
            Every `switchboard serve --store postgres://…` writes a heartbeat every few seconds. A node is live \
            while its last heartbeat is younger than the lease; one live node is the processing node (it runs \
            every node's accepted events, delivers forwards and runs ticks) and the others take over within the \
            lease when it stops. RULES is a hash of the node's rule files: nodes that differ run different rules.

            Examples:
              switchboard nodes --store postgres://switchboard@db.internal:5432/switchboard
              SWITCHBOARD_STORE=postgres://… switchboard nodes --json
            """
    )

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The cluster's store, as given to serve (env: SWITCHBOARD_STORE).",
            valueName: "postgres://USER@HOST:PORT/DB"
        ))
    var store: String?
    @Option(
        name: .long, help: ArgumentHelp("Seconds without a heartbeat before a node counts as gone.", valueName: "s"))
    var lease: Double = 10
    @Flag(name: .long, help: "Print JSON (the same as /readyz's nodes).")
    var json = false

    public init() {}

    public func run() async throws {
        guard let url = store ?? ProcessInfo.processInfo.environment["SWITCHBOARD_STORE"], !url.isEmpty else {
            throw CommandFailure(
                "switchboard nodes reads the cluster's PostgreSQL: give --store postgres://USER@HOST:PORT/DB (or set SWITCHBOARD_STORE)"
            )
        }
        var logger = Logger(label: "switchboard.nodes")
        logger.logLevel = .critical
        let nodes: [NodeStatus]
        do { nodes = try await PostgresJournal.listNodes(url: url, lease: lease, logger: logger) } catch {
            throw CommandFailure("\(error)")
        }
        if json {
            print(try JSONWriter.string(.array(nodes.map(\.json))))
            return
        }
        guard !nodes.isEmpty else {
            print("no nodes have written a heartbeat to this store yet (start `switchboard serve --store …`)")
            return
        }
        print(Self.table(nodes, now: Date().timeIntervalSince1970))
    }

    static func table(_ nodes: [NodeStatus], now: Double) -> String {
        let hashes = Set(nodes.filter(\.live).map(\.rulesHash))
        var rows = [["NODE", "STATE", "VERSION", "RULES", "IN FLIGHT", "SPOOLED", "LAST HEARTBEAT"]]
        for node in nodes {
            let state = !node.live ? "gone" : node.processing ? "processing" : "accepting"
            let rules = node.rulesHash + (node.live && hashes.count > 1 ? " (differs)" : "")
            rows.append([
                node.name, state, node.version, rules, "\(node.inFlight)", "\(node.spooled)",
                String(format: "%.1f s ago", max(0, now - node.heartbeatAt)),
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}
