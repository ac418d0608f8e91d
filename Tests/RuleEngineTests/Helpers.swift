import Foundation
import JSONCore
import KazooEvents
import LuaRuntime
import RuleEngine
import Testing

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../..").standardizedFileURL

/// Decodes a file from samples/ as the server would.
func sample(_ name: String, hook: String? = nil) throws -> WebhookEvent {
    let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("samples/\(name)"))
    return try EventDecoder().decode(
        [UInt8](data), format: WireFormat(rawValue: (name as NSString).pathExtension)!, hook: hook)
}

/// A worker over in-memory rule files (paths relative to a `rules/` directory).
func makeWorker(
    _ files: [String: String], client: any OutboundHTTPClient = DryRunHTTPClient(),
    environment: [String: String] = [:], allowedEnvironment: Set<String> = [], limits: LuaLimits = .default
) throws -> RuleWorker {
    let configuration = RuleConfiguration(
        limits: limits, allowedEnvironment: allowedEnvironment, environment: environment)
    return try RuleWorker(
        source: RuleSource(directory: "rules", files: files), configuration: configuration, client: client)
}

extension EventReport {
    func outcome(_ rule: String, sourceLocation: SourceLocation = #_sourceLocation) -> RuleOutcome? {
        let found = rules.first { $0.rule == rule }
        if found == nil { Issue.record("no outcome for rule \(rule)", sourceLocation: sourceLocation) }
        return found
    }
}

/// A rule file that runs `body` (Lua statements, with `event` in scope) on channel_create.
func runRule(_ body: String, name: String = "t") -> String {
    """
    return {
      name = "\(name)",
      on = { "channel_create" },
      run = function(event)
    \(body)
      end,
    }
    """
}
