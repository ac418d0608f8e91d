import Foundation
import JSONCore
import KazooEvents
import Testing

/// The repository's samples/ directory.
let samplesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../samples").standardizedFileURL

func sampleFiles() -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: samplesDirectory.path)) ?? [])
        .filter { !$0.hasPrefix(".") && ["json", "form", "query"].contains(($0 as NSString).pathExtension) }
        .sorted()
}

func sampleBytes(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: samplesDirectory.appendingPathComponent(name)))
}

func decodeSample(_ name: String, hook: String? = nil) throws -> WebhookEvent {
    let format = WireFormat(rawValue: (name as NSString).pathExtension)!
    return try EventDecoder().decode(try sampleBytes(name), format: format, hook: hook)
}

/// Removes empty objects and lists, which form encoding cannot carry (they become `&&`).
func withoutEmptyContainers(_ value: JSONValue) -> JSONValue? {
    switch value {
    case .object(let o):
        let members = o.members.compactMap { m in
            withoutEmptyContainers(m.value).map { JSONObject.Member(key: m.key, value: $0) }
        }
        return members.isEmpty ? nil : .object(JSONObject(members))
    case .array(let a):
        let elements = a.compactMap(withoutEmptyContainers)
        return elements.isEmpty ? nil : .array(elements)
    case .null: return nil
    default: return value
    }
}

@Suite struct SampleTests {
    @Test func thereIsASampleForEveryEventType() {
        let files = sampleFiles()
        #expect(files.count >= 58)
        for spec in EventCatalog.all where spec.name != "webhook" || spec.kind == .webhook {
            let found = try? files.first { file in
                guard file.hasSuffix(".json") else { return false }
                let event = try decodeSample(file)
                return event.kind == spec.kind && event.name == spec.name
            }
            #expect(found != nil, "no JSON sample decodes to \(spec.qualifiedName)")
        }
    }

    @Test(arguments: sampleFiles())
    func everySampleDecodesToTheKindItsNameSays(file: String) throws {
        let event = try decodeSample(file)
        let hook = String(file.split(separator: "_", maxSplits: 1)[0])
        switch hook {
        case "channel":
            #expect(event.kind == .channel)
            #expect(file.hasPrefix(event.name))
        case "notifications": #expect(event.kind == .notification)
        case "object": #expect(event.kind == .object)
        case "parking": #expect(event.kind == .parking)
        case "sms": #expect(event.kind == .sms)
        case "mms": #expect(event.kind == .mms)
        case "webhook": #expect(event.kind == .webhook)
        case "unknown": #expect(event.kind == .unknown)
        default: Issue.record("sample \(file) does not start with a hook name")
        }
        #expect(event.accountID != nil)
    }

    @Test(arguments: sampleFiles().filter { !$0.hasSuffix(".json") })
    func formAndQueryVariantsDecodeToTheSameEventAsJSON(file: String) throws {
        let stem = (file as NSString).deletingPathExtension
        let jsonFile = stem + ".json"
        guard FileManager.default.fileExists(atPath: samplesDirectory.appendingPathComponent(jsonFile).path) else {
            return  // a form-only edge case; covered by its own test
        }
        let fromJSON = try decodeSample(jsonFile)
        let other = try decodeSample(file)
        Self.expectSameEvent(fromJSON: fromJSON, fromForm: other, file: file)
    }

    /// Form encoding keeps every value as text and loses empty containers; decoding must bring back every
    /// field the schema types exactly as JSON has it.
    static func expectSameEvent(fromJSON: WebhookEvent, fromForm: WebhookEvent, file: String) {
        #expect(fromForm.kind == fromJSON.kind && fromForm.name == fromJSON.name, "\(file)")
        let json = withoutEmptyContainers(.object(fromJSON.fields)) ?? .null
        let form = withoutEmptyContainers(.object(fromForm.fields)) ?? .null
        #expect(formEquivalent(json, form), "\(file): form decoding lost or changed a value")
        guard let spec = fromJSON.spec else { return }
        for field in spec.fields where field.type != .string {
            let fromForm = withoutEmptyContainers(form[field.name] ?? .null)
            let fromJSON = withoutEmptyContainers(json[field.name] ?? .null)
            switch field.type {
            case .object, .array:  // typed where the schema knows the members, text elsewhere
                #expect(formEquivalent(fromJSON ?? .null, fromForm ?? .null), "\(file): \(field.name)")
            default:
                #expect(fromForm == fromJSON, "\(file): \(field.name)")
            }
        }
    }

    /// True when `form` is what `json` becomes through form encoding: equal, or (for fields the schema does not
    /// type) the scalar's text as a string.
    static func formEquivalent(_ json: JSONValue, _ form: JSONValue) -> Bool {
        switch (json, form) {
        case (.object(let j), .object(let f)):
            return j.count == f.count && j.allSatisfy { m in f[m.key].map { formEquivalent(m.value, $0) } ?? false }
        case (.array(let j), .array(let f)):
            return j.count == f.count && zip(j, f).allSatisfy { formEquivalent($0, $1) }
        case (.int(let i), .string(let s)): return String(i) == s
        case (.double(let d), .string(let s)): return JSONWriter.formatDouble(d) == s
        case (.bool(let b), .string(let s)): return (b ? "true" : "false") == s
        default: return json == form
        }
    }

    @Test(arguments: sampleFiles().filter { $0.hasSuffix(".json") })
    func swiftFormEncoderRoundTripsEverySample(file: String) throws {
        let fromJSON = try decodeSample(file)
        let body = FormEncoder.encode(try JSONReader.parse(try sampleBytes(file)).objectValue!)
        let fromForm = try EventDecoder().decode(Array(body.utf8), format: .form)
        let fromQuery = try EventDecoder().decode(Array("/hooks/all?\(body)".utf8), format: .query)
        #expect(fromQuery == fromForm)
        Self.expectSameEvent(fromJSON: fromJSON, fromForm: fromForm, file: file)
    }
}
