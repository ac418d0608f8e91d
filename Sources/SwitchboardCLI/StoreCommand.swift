public import ArgumentParser
import EventStore
import Foundation
import JSONCore
import RuleEngine

/// `switchboard store`: look at and fix the rule store by hand.
public struct StoreCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Look at and fix what rules keep with store.* and call.*.",
        discussion: """
            The rule store lives in DATA_DIR/switchboard.sqlite beside the journal. Each rule's keys are its \
            own (--rule NAME); store.shared's are --shared; a call's call.* state is --call CALL_ID; a timed \
            rule's timer is --timer NAME (last_due: when its last committed tick was due). Without one of \
            them, list shows every key.

            What is shown is what is committed: every event marked done, not runs still in flight. A running \
            server keeps the store in memory, so `delete` while it runs only lasts until a rule writes the \
            key again, and the server's copy is read again only at its next start: stop it first.

            Examples:
              switchboard store list --rule missed-calls
              switchboard store get --shared digest:last --json
              switchboard store delete --rule missed-calls user:1001
              switchboard store get --timer low-balance-digest last_due
            """,
        subcommands: [List.self, Get.self, Delete.self]
    )

    public init() {}

    /// Which keys: one rule's, the shared ones, or one call's.
    struct Scope: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("A rule's keys (its name).", valueName: "name"))
        var rule: String?
        @Flag(name: .long, help: "store.shared's keys.")
        var shared = false
        @Option(name: .long, help: ArgumentHelp("One call's call.* keys.", valueName: "call-id"))
        var call: String?
        @Option(
            name: .long,
            help: ArgumentHelp(
                "A timed rule's timer: last_due, the due time of its last committed tick (delete it to skip a catch-up tick at the next start).",
                valueName: "name"))
        var timer: String?

        func validate() throws {
            if [rule != nil, shared, call != nil, timer != nil].filter({ $0 }).count > 1 {
                throw ValidationError("give one of --rule, --shared, --call, --timer")
            }
        }

        /// The one namespace `get` and `delete` work in; an error naming the options when none was given.
        func required() throws -> String {
            guard let namespace else { throw ValidationError("give --rule NAME, --shared, --call ID or --timer NAME") }
            return namespace
        }

        var namespace: String? {
            if let rule { return "rule:" + rule }
            if shared { return "shared" }
            if let call { return "call:" + call }
            if let timer { return "timer:" + timer }
            return nil
        }
    }

    static func show(_ records: [StoreRecord], json: Bool) throws {
        if json {
            let rows: [JSONValue] = records.map { record in
                var row = JSONObject()
                row["namespace"] = .string(record.namespace)
                row["key"] = .string(record.key)
                row["value"] = record.value ?? .null
                row["expires_at"] = record.expiresAt.map(JSONValue.double) ?? .null
                return .object(row)
            }
            print(try JSONWriter.string(.array(rows)))
            return
        }
        for record in records {
            let value = (try? JSONWriter.string(record.value ?? .null)) ?? "?"
            let expiry = record.expiresAt.map { "  expires \(Date(timeIntervalSince1970: $0))" } ?? ""
            print("\(record.namespace)  \(record.key)  \(value)\(expiry)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys and values.")
        @OptionGroup var data: DataOptions
        @OptionGroup var scope: Scope
        @Flag(name: .long, help: "Print JSON: [{namespace, key, value, expires_at}].")
        var json = false

        func run() throws {
            let records = try data.openJournal().storeRecords(namespace: scope.namespace, key: nil)
            try StoreCommand.show(records, json: json)
            if !json && records.isEmpty { print("no keys") }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one key's value (exit 1 when absent).")
        @OptionGroup var data: DataOptions
        @OptionGroup var scope: Scope
        @Flag(name: .long, help: "Print the value as JSON only.")
        var json = false
        @Argument(help: "The key.") var key: String

        func run() throws {
            let namespace = try scope.required()
            let records = try data.openJournal().storeRecords(namespace: namespace, key: key)
            guard let record = records.first else {
                throw CommandFailure("no key \"\(key)\" in \(namespace)")
            }
            if json {
                print(try JSONWriter.string(record.value ?? .null))
            } else {
                try StoreCommand.show(records, json: false)
            }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete keys (stop the server first).")
        @OptionGroup var data: DataOptions
        @OptionGroup var scope: Scope
        @Argument(help: "The keys.") var keys: [String]

        func run() throws {
            let namespace = try scope.required()
            let journal = try data.openJournal()
            for key in keys {
                let existed = try journal.deleteStoreKey(namespace: namespace, key: key)
                print(existed ? "deleted \(namespace) \(key)" : "no key \"\(key)\" in \(namespace)")
            }
        }
    }
}
