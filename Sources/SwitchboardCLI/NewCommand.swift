public import ArgumentParser
import Foundation
import JSONCore
import KazooEvents
import RuleEngine

/// `switchboard new`: a rule and its test, ready to run.
public struct NewCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Write a new rule and its test for one event.",
        discussion: """
            Writes DIR/NAME.lua (the rule, with its event's class annotated for editor completion) and \
            DIR/NAME_test.lua (a test running it on that event's sample from samples/). Both pass at once: \
            `switchboard test NAME` runs the test; change the rule, then the test, from there. Dashes in \
            NAME become underscores in the file names. Existing files are never overwritten.

            With --forward URL the rule transforms the event into a payload and forwards it there; without, \
            it logs the event in run.

            Examples:
              switchboard new crm-popup --on channel_create --forward https://crm.example.com/pop
              switchboard new balance-alert --on notifications.low_balance
            """
    )

    @Argument(help: ArgumentHelp("The rule's name: letters, digits, - and _.", valueName: "name"))
    var name: String

    @Option(name: .long, help: ArgumentHelp("The event it handles (see switchboard events).", valueName: "event"))
    var on: String

    @Option(name: .long, help: ArgumentHelp("Forward a payload to this http(s) URL.", valueName: "url"))
    var forward: String?

    @Option(name: .long, help: ArgumentHelp("The rules directory.", valueName: "dir"))
    var rules: String = "rules"

    @Option(name: .long, help: ArgumentHelp("Where the samples are.", valueName: "dir"))
    var samples: String = "samples"

    public init() {}

    public func validate() throws {
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw ValidationError("the name \"\(name)\" may only have letters, digits, - and _ (such as crm-popup)")
        }
        guard let pattern = EventPattern(on) else {
            let hint = EventPattern.suggestion(for: on).map { " (did you mean \($0)?)" } ?? ""
            throw ValidationError("unknown event \"\(on)\"\(hint); switchboard events lists every name")
        }
        guard !pattern.text.contains("*") else {
            throw ValidationError("give one event, such as --on channel_create (add more to on afterwards)")
        }
        if let forward, !(forward.hasPrefix("http://") || forward.hasPrefix("https://")) {
            throw ValidationError("--forward: \"\(forward)\" is not an http:// or https:// URL")
        }
    }

    public func run() throws {
        guard let spec = EventCatalog.all.first(where: { $0.qualifiedName == on }) else {
            throw ValidationError("unknown event \"\(on)\"")
        }
        let (sampleName, event, needsHook) = try Self.sample(for: spec, in: samples)
        let file = name.replacingOccurrences(of: "-", with: "_")
        let rulePath = (rules as NSString).appendingPathComponent(file + ".lua")
        let testPath = (rules as NSString).appendingPathComponent(file + "_test.lua")
        for path in [rulePath, testPath] where FileManager.default.fileExists(atPath: path) {
            throw CommandFailure("\(path) exists already; choose another name or remove it")
        }
        try FileManager.default.createDirectory(atPath: rules, withIntermediateDirectories: true)
        let fields = Self.exampleFields(spec, event: event)
        try Data(Self.rule(name: name, spec: spec, fields: fields.map(\.0), forward: forward).utf8).write(
            to: URL(fileURLWithPath: rulePath))
        try Data(
            Self.test(
                name: name, spec: spec, sample: sampleName, hook: needsHook ? spec.hook : nil, fields: fields,
                forward: forward
            ).utf8
        ).write(
            to: URL(fileURLWithPath: testPath))
        print("wrote \(rulePath)")
        print("wrote \(testPath)")
        print(
            "next: switchboard test --rules \(rules)" + (samples == "samples" ? "" : " --samples \(samples)")
                + " \(name)")
    }

    /// The first sample (JSON first) that decodes to this event: its name for `sample(...)` and the event.
    /// The third value: whether the sample decodes to this event only when told its hook.
    static func sample(for spec: EventSpec, in directory: String) throws -> (String, WebhookEvent, Bool) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        // JSON first, then the plainest name: channel_create__inbound before channel_create__docs_string_timestamp.
        let ordered = names.sorted { a, b in
            (a.hasSuffix(".json") ? 0 : 1, a.count, a) < (b.hasSuffix(".json") ? 0 : 1, b.count, b)
        }
        let decoder = EventDecoder()
        for file in ordered {
            guard let format = WireFormat(rawValue: (file as NSString).pathExtension),
                let data = FileManager.default.contents(atPath: (directory as NSString).appendingPathComponent(file)),
                let event = try? decoder.decode([UInt8](data), format: format, hook: spec.hook),
                event.qualifiedName == spec.qualifiedName
            else { continue }
            let alone = try? decoder.decode([UInt8](data), format: format, hook: nil)
            return (file, event, alone?.qualifiedName != spec.qualifiedName)
        }
        throw ValidationError(
            "no sample of \(spec.qualifiedName) in \(directory)/ to test the rule with (add one, or give --samples DIR)"
        )
    }

    /// Up to three string fields the sample has, to start the payload and the test with.
    static func exampleFields(_ spec: EventSpec, event: WebhookEvent) -> [(String, String)] {
        let skip: Set<String> = ["hook_event", "event_name", "event_category", "app_name", "app_version", "node"]
        var out: [(String, String)] = []
        for field in spec.fields where field.type == .string && !skip.contains(field.name) {
            guard case .string(let value)? = event.fields[field.name], !value.isEmpty else { continue }
            out.append((field.name, value))
            if out.count == 3 { break }
        }
        return out
    }

    static func rule(name: String, spec: EventSpec, fields: [String], forward: String?) -> String {
        let className = LuaStubs.className(spec)
        var lines = [
            "-- \(name): what it does with \(spec.qualifiedName) (\(spec.summary)).",
            "-- Written by `switchboard new`; its test is beside it. Fields: `switchboard events`; editor",
            "-- completion: `switchboard stubs`.",
            "---@type Rule",
            "local rule = {",
            "  name = \(lua(name)),",
            "  on = { \(lua(spec.qualifiedName)) },",
            "  -- match = { field = \"value\" },  -- checked before any Lua runs",
            "",
        ]
        if let forward {
            lines += [
                "  ---@param event \(className)",
                "  transform = function(event)",
                "    return {",
                "      event = event.name,",
            ]
            lines += fields.map { "      \($0) = event.\($0)," }
            lines += [
                "    }",
                "  end,",
                "",
                "  forward = \(lua(forward)),",
            ]
        } else {
            let detail = fields.first.map { ", { \($0) = event.\($0) }" } ?? ""
            lines += [
                "  ---@param event \(className)",
                "  run = function(event)",
                "    log.info(\(lua(name + " saw ")) .. event.name\(detail))",
                "  end,",
            ]
        }
        lines += ["}", "", "return rule"]
        return lines.joined(separator: "\n") + "\n"
    }

    static func test(
        name: String, spec: EventSpec, sample: String, hook: String?, fields: [(String, String)], forward: String?
    ) -> String {
        let sampleName = (sample as NSString).deletingPathExtension
        let sampleCall = "sample(\(lua(sampleName))" + (hook.map { ", \(lua($0))" } ?? "") + ")"
        var lines = [
            "test(\(lua(name + " handles " + spec.qualifiedName)), function()",
            "  local out = run(\(lua(name)), \(sampleCall))",
            "  expect(out.outcome).to_be(\"ok\")",
        ]
        if let forward {
            lines.append("  expect(out.forwards[1].url).to_be(\(lua(forward)))")
            for (field, value) in fields {
                lines.append("  expect(out.forwards[1].body.\(field)).to_be(\(lua(value)))")
            }
        } else {
            lines.append("  expect(out.logs[1].message).to_be(\(lua(name + " saw " + spec.name)))")
        }
        lines.append("end)")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A Lua string literal.
    static func lua(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += "\\\(scalar.value)" } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}
