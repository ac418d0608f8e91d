public import ArgumentParser
import Foundation
import JSONCore
import KazooEvents

/// `switchboard events`: the schema of every event Switchboard knows.
public struct EventsCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "List every known event kind and name with its typed fields.",
        discussion: """
            This is the schema decoding uses: fields listed here are coerced to their type (form bodies \
            carry only strings); any other field is kept as it came. Types: string, integer, number \
            (integer or float as sent), boolean, gregorian (integer Gregorian seconds; Unix + 62167219200), \
            object, array<T>, string|array.

            Examples:
              switchboard events
              switchboard events --json | jq '.events[].on'
            """
    )

    @Flag(name: .long, help: "Print the schema as one JSON document.")
    var json = false

    public init() {}

    public func run() throws {
        print(json ? EventSchemaReport.json() : EventSchemaReport.text())
    }
}

/// Renders the event catalog.
public enum EventSchemaReport {
    public static func text() -> String {
        var lines: [String] = []
        var lastKind: EventKind? = nil
        for spec in EventCatalog.all {
            if spec.kind != lastKind {
                if lastKind != nil { lines.append("") }
                lines.append("# \(spec.kind) events")
                lastKind = spec.kind
            }
            lines.append("")
            lines.append("\(spec.qualifiedName) — \(spec.summary) (hook: \(spec.hook))")
            for field in spec.fields {
                lines.append(contentsOf: describe(field, indent: "    "))
            }
        }
        lines.append("")
        lines.append("# unknown")
        lines.append("")
        lines.append("Anything else decodes as kind \"unknown\" with its fields as they came; it is never rejected.")
        return lines.joined(separator: "\n")
    }

    static func describe(_ field: FieldSpec, indent: String) -> [String] {
        let name = field.name.padding(toLength: max(field.name.count, 30), withPad: " ", startingAt: 0)
        let type = field.type.description.padding(toLength: 14, withPad: " ", startingAt: 0)
        var lines = ["\(indent)\(name) \(type) \(field.summary)".trimmingTrailingSpaces()]
        if case .object(let members) = field.type {
            for m in members { lines.append(contentsOf: describe(m, indent: indent + "  .")) }
        }
        return lines
    }

    public static func json() -> String {
        func field(_ f: FieldSpec) -> JSONValue {
            var object: JSONValue = [
                "name": .string(f.name), "type": .string(f.type.description), "summary": .string(f.summary),
            ]
            if case .object(let members) = f.type, !members.isEmpty, case .object(var o) = object {
                o["fields"] = .array(members.map(field))
                object = .object(o)
            }
            return object
        }
        let events: [JSONValue] = EventCatalog.all.map { spec in
            [
                "kind": .string(spec.kind.rawValue), "name": .string(spec.name), "hook": .string(spec.hook),
                "on": .string(spec.qualifiedName), "summary": .string(spec.summary),
                "fields": .array(spec.fields.map(field)),
            ]
        }
        let document: JSONValue = [
            "kinds": .array(EventKind.all.map { .string($0.rawValue) }),
            "hooks": .array(EventCatalog.hooks.map { .string($0) }),
            "events": .array(events),
        ]
        return (try? JSONWriter.string(document)) ?? "{}"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
