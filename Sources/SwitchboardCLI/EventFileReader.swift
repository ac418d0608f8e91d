import Foundation
public import KazooEvents

/// Reads and decodes an event file the way the server decodes a request: the format from the option, else
/// the file's extension (.json, .form, .query), else the content.
public struct EventFileReader: Sendable {
    public var format: FormatOption
    public var hook: String?
    public var decoder: EventDecoder

    public init(format: FormatOption = .auto, hook: String? = nil, decoder: EventDecoder = EventDecoder()) {
        self.format = format
        self.hook = hook
        self.decoder = decoder
    }

    /// Why a file gave no event, in words for the person running the command.
    public struct Failure: Error, Sendable {
        public var message: String
        public init(message: String) { self.message = message }
    }

    public func wireFormat(file: String, body: [UInt8]) -> WireFormat {
        switch format {
        case .json: return .json
        case .form: return .form
        case .query: return .query
        case .auto: break
        }
        let ext = (file as NSString).pathExtension.lowercased()
        if let f = WireFormat(rawValue: ext) { return f }
        return WireFormat.detect(contentType: nil, body: body)
    }

    public func read(_ file: String) -> Result<(WebhookEvent, WireFormat), Failure> {
        guard let data = FileManager.default.contents(atPath: file) else {
            return .failure(Failure(message: "cannot read the file (does it exist?)"))
        }
        let body = [UInt8](data)
        let wire = wireFormat(file: file, body: body)
        do {
            return .success((try decoder.decode(body, format: wire, hook: hook), wire))
        } catch {
            return .failure(Failure(message: "\(wire) body: \(error)"))
        }
    }
}
