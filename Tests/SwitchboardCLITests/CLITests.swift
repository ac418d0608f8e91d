import ArgumentParser
import Foundation
import JSONCore
import KazooEvents
import SwitchboardCLI
import Testing

let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../samples").standardizedFileURL.path

@Suite struct DecodeCommandTests {
    @Test func jsonOutputHasExactlyTheDocumentedKeys() throws {
        let report = DecodeReport(json: true)
        let (line, ok) = report.describe(file: "\(samples)/channel_create__inbound.form")
        #expect(ok)
        let object = try JSONReader.parse(Array(line.utf8)).objectValue!
        #expect(Set(object.keys) == ["file", "ok", "kind", "name", "fields"])
        #expect(object["kind"] == "channel")
        #expect(object["name"] == "channel_create")
        #expect(object["fields"]?["timestamp"] == .int(63_882_919_387))
        #expect(object["fields"]?["is_internal_leg"] == .bool(false))
    }

    @Test func errorsNameTheFileAndSayWhatIsWrong() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("bad.json").path
        try Data(#"{"call_id": "x",}"#.utf8).write(to: URL(fileURLWithPath: bad))

        let (text, ok) = DecodeReport().describe(file: bad)
        #expect(!ok)
        #expect(text == "\(bad): error: json body: invalid JSON: expected a string key, found '}' (at byte 16)")

        let (line, _) = DecodeReport(json: true).describe(file: bad)
        let object = try JSONReader.parse(Array(line.utf8)).objectValue!
        #expect(Set(object.keys) == ["file", "ok", "error"])
        #expect(object["ok"] == .bool(false))

        let (missing, found) = DecodeReport().describe(file: dir.appendingPathComponent("nope.json").path)
        #expect(!found)
        #expect(missing.contains("cannot read the file"))
    }

    @Test func humanOutputShowsKindNameAndTypedFields() {
        let (text, ok) = DecodeReport().describe(file: "\(samples)/channel_destroy__strings_no_ccvs.form")
        #expect(ok)
        #expect(
            text.hasPrefix(
                "\(samples)/channel_destroy__strings_no_ccvs.form: channel channel_destroy (form, 22 fields)"))
        #expect(text.contains("  billing_seconds   9"))
        #expect(text.contains("unix_time"))
        #expect(text.contains("(2024-05-14T15:23:40Z)"))
    }

    @Test func formatAndHookOptionsApply() throws {
        let report = DecodeReport(format: .json, hook: "channel_answer", json: false)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("body.txt").path
        try Data(#"{"call_id":"abc"}"#.utf8).write(to: URL(fileURLWithPath: file))
        let (text, ok) = report.describe(file: file)
        #expect(ok)
        #expect(text.contains("channel channel_answer (json"))
    }

    @Test func parsingValidatesArguments() throws {
        #expect(throws: (any Error).self) { try DecodeCommand.parse([]) }
        #expect(throws: (any Error).self) { try DecodeCommand.parse(["--format", "xml", "a.json"]) }
        _ = try DecodeCommand.parse(["--format", "query", "--hook", "parking", "--json", "a.query"])
    }

    @Test func everySampleDecodesThroughTheCLI() {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: samples)) ?? []
        let bodies = files.filter { [".json", ".form", ".query"].contains(where: $0.hasSuffix) }
        #expect(bodies.count >= 80)
        for file in bodies {
            let (text, ok) = DecodeReport().describe(file: "\(samples)/\(file)")
            #expect(ok, "\(text)")
        }
    }
}

@Suite struct EventsCommandTests {
    @Test func schemaListsEveryKindAndTheNotificationTypes() throws {
        let document = try JSONReader.parse(Array(EventSchemaReport.json().utf8))
        let events = document["events"]?.arrayValue ?? []
        #expect(events.filter { $0["kind"] == "notification" }.count == 39)
        #expect(
            Set(events.compactMap { $0["kind"]?.stringValue }) == [
                "channel", "notification", "object", "parking", "sms", "mms", "webhook",
            ])
        let destroy = events.first { $0["name"] == "channel_destroy" }
        let fields = destroy?["fields"]?.arrayValue ?? []
        #expect(fields.contains { $0["name"] == "duration_seconds" && $0["type"] == "integer" })
        #expect(fields.contains { $0["name"] == "timestamp" && $0["type"] == "gregorian" })
        #expect(events.contains { $0["on"] == "notifications.low_balance" })
    }

    @Test func textListsQualifiedNames() {
        let text = EventSchemaReport.text()
        #expect(text.contains("notifications.voicemail_new — a new voicemail was left"))
        #expect(text.contains("parking.PARK_PARKED"))
        #expect(text.contains("object.doc_edited"))
    }
}
