public import ArgumentParser
import Foundation
import JSONCore
public import KazooEvents

/// `switchboard decode`: show what Switchboard makes of webhook bodies.
public struct DecodeCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode webhook bodies (JSON, form or query) into typed events.",
        discussion: """
            Each FILE holds one request body as Kazoo sends it: a JSON body, a form-encoded body \
            (a[b]=v&k[]=v), or a GET query string (a bare query, ?query, or a whole URL). The format comes \
            from --format, else the file's extension (.json, .form, .query), else the content.

            Exit status: 0 when every file decoded, 1 otherwise.

            Examples:
              switchboard decode samples/channel_create__inbound.json
              switchboard decode --hook notifications samples/*.form
              switchboard decode --json samples/* | jq .name
            """
    )

    @Option(name: .long, help: "Wire format: auto, json, form or query.")
    var format: FormatOption = .auto

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The Kazoo hook the body was sent for, as a decoding hint.",
            discussion:
                "One of: \(EventCatalog.hooks.joined(separator: ", ")). Needed only when the payload does not say (the callflow webhook action).",
            valueName: "hook"))
    var hook: String?

    @Flag(name: .long, help: "Print one JSON object per file: {file, ok, kind, name, fields} or {file, ok, error}.")
    var json = false

    @Argument(help: "Files holding one webhook body each.")
    var files: [String]

    public init() {}

    public func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one FILE to decode (for example samples/*)") }
    }

    public func run() throws {
        let report = DecodeReport(format: format, hook: hook, json: json)
        var ok = true
        for file in files {
            let (text, decoded) = report.describe(file: file)
            print(text)
            ok = ok && decoded
        }
        if !ok { throw ExitCode(1) }
    }
}

/// `--format` values.
public enum FormatOption: String, ExpressibleByArgument, CaseIterable, Sendable {
    case auto, json, form, query
}

/// Decodes files and renders the result, for people or for tools.
public struct DecodeReport: Sendable {
    public var format: FormatOption
    public var hook: String?
    public var json: Bool
    public var decoder = EventDecoder()

    public init(format: FormatOption = .auto, hook: String? = nil, json: Bool = false) {
        self.format = format
        self.hook = hook
        self.json = json
    }

    /// Decodes one file: the text to print and whether it decoded.
    public func describe(file: String) -> (String, Bool) {
        switch EventFileReader(format: format, hook: hook, decoder: decoder).read(file) {
        case .success(let (event, wire)): return (render(file: file, event: event, format: wire), true)
        case .failure(let error): return (render(file: file, error: error.message), false)
        }
    }

    func render(file: String, error: String) -> String {
        if json {
            let object: JSONValue = ["file": .string(file), "ok": false, "error": .string(error)]
            return (try? JSONWriter.string(object)) ?? "{}"
        }
        return "\(file): error: \(error)"
    }

    func render(file: String, event: WebhookEvent, format: WireFormat) -> String {
        if json {
            let object: JSONValue = [
                "file": .string(file), "ok": true, "kind": .string(event.kind.rawValue), "name": .string(event.name),
                "fields": .object(event.fields),
            ]
            return (try? JSONWriter.string(object)) ?? Self.lossyJSON(object)
        }
        var lines = ["\(file): \(event.kind) \(event.name) (\(format), \(event.fields.count) fields)"]
        let typed = event.typedFields
        let width = max(typed.keys.map(\.count).max() ?? 0, 10)
        for member in typed {
            var text = Self.display(member.value)
            if member.key == "unix_time", case .int(let t) = member.value {
                text += "  (\(Self.iso8601(t)))"
            }
            lines.append("  \(member.key.padding(toLength: width, withPad: " ", startingAt: 0))  \(text)")
        }
        let others = event.fields.keys.filter { typed[$0] == nil }
        if !others.isEmpty {
            lines.append("  other fields: \(others.joined(separator: ", "))")
        }
        return lines.joined(separator: "\n")
    }

    static func display(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): s
        default: (try? JSONWriter.string(value)) ?? lossyJSON(value)
        }
    }

    /// JSON for values that hold non-UTF-8 bytes: those bytes are replaced, everything else kept.
    static func lossyJSON(_ value: JSONValue) -> String {
        func clean(_ v: JSONValue) -> JSONValue {
            switch v {
            case .bytes(let b): .string(String(decoding: b, as: UTF8.self))
            case .double(let d) where !d.isFinite: .string(String(d))
            case .array(let a): .array(a.map(clean))
            case .object(let o):
                .object(
                    JSONObject(uniqueMembersUnchecked: o.members.map { .init(key: $0.key, value: clean($0.value)) }))
            default: v
            }
        }
        return (try? JSONWriter.string(clean(value))) ?? "null"
    }

    static func iso8601(_ unix: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(unix)))
    }
}
