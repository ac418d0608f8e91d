public import ArgumentParser
import Foundation
public import RuleEngine

/// `switchboard check`: compile and validate every rule.
public struct CheckCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Compile and validate every rule file.",
        discussion: """
            Reports syntax errors, errors raised while a file loads, a missing or misspelt `on` name \
            (with the nearest known one), unknown keys in the rule table, a rule with no action, and \
            (as a warning) a `match` on a field the events in `on` never carry. Every message has file:line.

            Exit status: 0 when every rule loaded, 1 when any has an error.
            """
    )

    @OptionGroup var options: RulesOptions

    public init() {}

    public func run() async throws {
        let (text, ok) = try await CheckReport.run(directory: options.rules, configuration: options.configuration)
        print(text)
        if !ok { throw ExitCode(1) }
    }
}

/// The text `check` prints, and whether the rules are usable.
public enum CheckReport {
    public static func run(directory: String, configuration: RuleConfiguration) async throws -> (String, Bool) {
        let source: RuleSource
        do { source = try RuleSource.read(directory: directory) } catch {
            return ("error: \(error)", false)
        }
        let worker = try RuleWorker(source: source, configuration: configuration)
        let diagnostics = await worker.diagnostics
        let rules = await worker.rules
        var lines = diagnostics.map(\.description)
        let errors = diagnostics.filter { $0.severity == .error }.count
        let warnings = diagnostics.count - errors
        if source.rules.isEmpty {
            lines.append("no rule files in \(directory) (a rule is a .lua file returning { on = ..., run = ... })")
        }
        let loaded = rules.map { "\($0.name) (\($0.file.displayPath))" }
        if !loaded.isEmpty { lines.append("loaded: " + loaded.joined(separator: ", ")) }
        let now = Date().timeIntervalSince1970
        for rule in rules {
            guard let schedule = rule.schedule else { continue }
            let next = schedule.next(after: now).map {
                ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: $0))
            }
            lines.append("timer: \(rule.name) ticks \(schedule)\(next.map { ", next at \($0)" } ?? "")")
        }
        lines.append(
            "check: \(rules.count) of \(source.rules.count) rule\(source.rules.count == 1 ? "" : "s") OK, "
                + "\(errors) error\(errors == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s")")
        return (lines.joined(separator: "\n"), errors == 0)
    }
}
