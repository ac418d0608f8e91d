public import ArgumentParser
import Delivery
import EventStore
import Foundation
import JSONCore
import KazooEvents
import Logging
public import RuleEngine

/// `switchboard run`: the rules against event files, showing what each rule did.
public struct RunCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the rules on event files and show what each rule did.",
        discussion: """
            For each EVENT file (any wire format, as for decode) and each rule: skipped (and by which \
            stage: on, match or filter), dropped by transform, the forwards it would make, the HTTP calls it \
            made, its log lines, and errors with file:line and traceback.

            Dry run by default: nothing leaves the machine. http.* returns nil, "dry run: not sent" and the \
            request is shown; forwards are shown, not sent. --live sends both for real.

            The rules share one store for the whole run (so a file's channel_create can leave state for its \
            channel_destroy): empty, in memory and thrown away at the end, unless --data-dir starts it from \
            what a server committed there (read only: nothing is written back).

            --tick RULE runs that rule's tick once, now, as the timer would (and then the EVENT files, if any).

            Exit status: 0 when no rule errored, 1 otherwise (or when a file did not decode). With --watch it \
            runs again every time a rule file is saved, until Ctrl-C.

            Examples:
              switchboard run samples/channel_create__inbound.json
              switchboard run --rules my-rules --json samples/*.json
              SWITCHBOARD_CRM_TOKEN=secret switchboard run --live samples/x.json
              switchboard run --tick low_balance_digest --data-dir /var/lib/switchboard
            """
    )

    @OptionGroup var options: RulesOptions

    @Option(name: .long, help: "Wire format of the EVENT files: auto, json, form or query.")
    var format: FormatOption = .auto

    @Option(
        name: .long, help: ArgumentHelp("The Kazoo hook the events were sent for (a decoding hint).", valueName: "hook")
    )
    var hook: String?

    @Flag(name: .long, help: "Send HTTP calls and forwards for real.")
    var live = false

    @Flag(name: .long, help: "Print one JSON object per event: {file, event: {kind, name}, rules: [...]}.")
    var json = false

    @Flag(name: .long, help: "Run again every time a rule file is saved (Ctrl-C to stop).")
    var watch = false

    @Option(
        name: .long, help: ArgumentHelp("Run this rule's tick once, now (before any EVENT files).", valueName: "rule"))
    var tick: String?

    @Option(
        name: .customLong("data-dir"),
        help: ArgumentHelp(
            "Start the store from what the server in this directory committed (read only).", valueName: "dir"))
    var dataDir: String?

    @Argument(help: "Event files (JSON, form or query bodies).")
    var events: [String] = []

    public init() {}

    public func validate() throws {
        if events.isEmpty, tick == nil {
            throw ValidationError(
                "give at least one EVENT file (for example samples/channel_create__inbound.json), or --tick RULE")
        }
    }

    public func run() async throws {
        let ok = try await runOnce()
        guard watch else {
            if !ok { throw ExitCode(1) }
            return
        }
        var last = try? RuleSource.read(directory: options.rules)
        printError("watching \(options.rules) for changes (Ctrl-C to stop)")
        for await _ in RuleWatcher(directory: options.rules).changes() {
            let now = try? RuleSource.read(directory: options.rules)
            guard now != last else { continue }
            last = now
            let time = ISO8601DateFormatter().string(from: Date())
            print("\n--- rules changed at \(time): running again ---")
            _ = try? await runOnce()
        }
    }

    /// Loads the rules and runs every event once. Returns false when a rule errored or a file did not decode.
    func runOnce() async throws -> Bool {
        let source: RuleSource
        do { source = try RuleSource.read(directory: options.rules) } catch {
            throw ValidationError("\(error)")
        }
        let client: any OutboundHTTPClient = live ? GuardedHTTPClient.unrestricted() : DryRunHTTPClient()
        let worker = try RuleWorker(source: source, configuration: options.configuration, client: client)
        var ok = true
        let diagnostics = await worker.diagnostics
        for d in diagnostics { printError(d.description) }
        if diagnostics.contains(where: { $0.severity == .error }) { ok = false }
        let store = try readStore()
        if let tick {
            let session = store.begin()
            let outcome = await worker.tick(tick, now: store.clock(), session: session)
            store.finish(session, mark: nil) { _ in }
            guard var outcome else {
                let timed = await worker.rules.filter { $0.schedule != nil }.map(\.name)
                throw ValidationError(
                    "no rule named \"\(tick)\" has a schedule and a tick; rules with one: "
                        + (timed.isEmpty ? "none" : timed.joined(separator: ", ")))
            }
            var outcomes = [outcome]
            if live { await Self.sendForwards(of: &outcomes, client: client) }
            outcome = outcomes[0]
            if outcome.outcome == .error { ok = false }
            print(json ? RunReport.json(tick: tick, outcome: outcome) : RunReport.text(tick: tick, outcome: outcome))
        }
        let reader = EventFileReader(format: format, hook: hook)
        for file in events {
            switch reader.read(file) {
            case .failure(let failure):
                ok = false
                print(json ? RunReport.json(file: file, error: failure.message) : "\(file): error: \(failure.message)")
            case .success(let (event, _)):
                let session = store.begin()
                var report = await worker.process(event, session: session)
                session.eventFinished(event, callStateKeep: options.configuration.callStateKeep)
                store.finish(session, mark: nil) { _ in }
                if live { await Self.sendForwards(of: &report.rules, client: client) }
                if report.hasErrors { ok = false }
                print(json ? RunReport.json(file: file, report: report) : RunReport.text(file: file, report: report))
            }
        }
        if let live = client as? GuardedHTTPClient { try? await live.shutdown() }
        fflush(nil)  // flushes stdout too: in --watch mode the output must appear now, not at exit
        return ok
    }
}

extension RunCommand {
    /// The run's store: empty, or what the journal in --data-dir holds.
    func readStore() throws -> RuleStore {
        guard let dataDir else { return RuleStore() }
        let path = EventJournal.file(in: dataDir)
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no journal at \(path): point --data-dir at a server's data directory")
        }
        return RuleStore(records: try EventJournal(directory: dataDir).storeRecords())
    }

    /// `--live`: the forwards of the rules that finished ok go through the outbox's retry engine (one
    /// attempt each, as a person trying a rule wants to see at once), and each one's result is shown.
    public static func sendForwards(of outcomes: inout [RuleOutcome], client: any OutboundHTTPClient) async {
        var policy = Outbox.Policy()
        policy.maxAttempts = 1
        let delivered = await Outbox.deliverNow(
            Engine.deliveries(outcomes), client: client, policy: policy, logger: Logger(label: "switchboard-run"))
        var next = delivered.makeIterator()
        for index in outcomes.indices where outcomes[index].outcome == .ok {
            for forward in outcomes[index].forwards.indices {
                guard let delivery = next.next() else { return }
                outcomes[index].forwards[forward].status = delivery.lastStatus
                outcomes[index].forwards[forward].error =
                    delivery.state == .delivered ? nil : (delivery.lastError ?? "not delivered")
            }
        }
    }
}

func printError(_ text: String) {
    var standardError = StandardError()
    print(text, to: &standardError)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandle.standardError.write(Data(string.utf8))
    }
}

/// How `run` shows an event's report.
public enum RunReport {
    public static func json(file: String, report: EventReport) -> String {
        let object: JSONValue = [
            "file": .string(file),
            "event": ["kind": .string(report.event.kind.rawValue), "name": .string(report.event.name)],
            "rules": .array(report.rules.map(\.json)),
        ]
        return DecodeReport.lossyJSON(object)
    }

    public static func json(file: String, error: String) -> String {
        DecodeReport.lossyJSON(["file": .string(file), "event": .null, "rules": .array([]), "error": .string(error)])
    }

    public static func json(tick rule: String, outcome: RuleOutcome) -> String {
        DecodeReport.lossyJSON(["tick": .string(rule), "rules": .array([outcome.json])])
    }

    public static func text(tick rule: String, outcome: RuleOutcome) -> String {
        (["tick \(rule)"] + lines(of: outcome)).joined(separator: "\n")
    }

    public static func text(file: String, report: EventReport) -> String {
        var lines = ["\(file): \(report.event.kind) \(report.event.name)"]
        let notOn = report.rules.filter { $0.outcome == .skipped && $0.stage == "on" }
        for outcome in report.rules where !(outcome.outcome == .skipped && outcome.stage == "on") {
            lines += Self.lines(of: outcome)
        }
        if !notOn.isEmpty {
            lines.append("  skipped  (on) \(notOn.map(\.rule).joined(separator: ", "))")
        }
        if report.rules.isEmpty { lines.append("  no rules loaded") }
        return lines.joined(separator: "\n")
    }

    /// One rule run: its outcome, HTTP calls, forwards, log lines and error.
    static func lines(of outcome: RuleOutcome) -> [String] {
        var lines: [String] = []
        var head = "  \(outcome.outcome.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(outcome.rule)"
        switch outcome.outcome {
        case .skipped: head += " (by \(outcome.stage ?? "?"))"
        case .dropped: head += " (transform returned nil)"
        case .error: head += " (\(outcome.stage ?? "?") failed)"
        case .ok: break
        }
        lines.append(head)
        let indent = "           "
        for call in outcome.http {
            let result = call.status.map { "\($0)" } ?? (call.error ?? "")
            lines.append("\(indent)http \(call.method) \(call.url) -> \(result)")
        }
        for forward in outcome.forwards {
            var line = "\(indent)forward \(forward.method) \(forward.url)"
            if let status = forward.status {
                line += " -> \(status)"
            } else if let error = forward.error {
                line += " -> \(error)"
            }
            lines.append(line)
            let headers = forward.headers.map { "\($0.key): \($0.value.stringValue ?? "")" }.joined(separator: ", ")
            lines.append("\(indent)  headers: \(headers)")
            lines.append("\(indent)  body: \(DecodeReport.display(forward.body))")
        }
        for log in outcome.logs {
            var line = "\(indent)log \(log.level): \(log.message)"
            if log.fields != .null { line += " \(DecodeReport.display(log.fields))" }
            lines.append(line)
        }
        if let error = outcome.error {
            lines.append("\(indent)error: \(error.message)")
            if let traceback = error.traceback {
                lines.append(contentsOf: traceback.split(separator: "\n").map { "\(indent)  \($0)" })
            }
        }
        return lines
    }
}
