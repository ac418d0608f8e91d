import Foundation
import JSONCore
public import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One JSON object per log line on standard error: time, level, message, label, and metadata by key.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object = JSONObject()
        object["time"] = .string(UTCTime.iso8601(time(nil)))
        object["level"] = .string(event.level.rawValue)
        object["message"] = .string("\(event.message)")
        object["label"] = .string(label)
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, new in new }).sorted(by: {
            $0.key < $1.key
        }) {
            object[key] = .string("\(value)")
        }
        let line = ((try? JSONWriter.string(.object(object))) ?? "{}") + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
