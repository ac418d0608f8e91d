public import Logging

/// swift-log's `StreamLogHandler` lines on standard error (`--log-format text`), with the logger's metadata
/// formatted when a line is written instead of each time a key is set. Hummingbird sets `hb.request.id` on a
/// copy of the logger for every request, and `StreamLogHandler` sorts and joins its metadata into a string on
/// every set: 3% of the server's CPU under load (`perf`), for lines that are almost never written.
public struct TextLogHandler: LogHandler {
    var stream: StreamLogHandler
    public var metadata: Logger.Metadata = [:]

    public init(label: String) { stream = .standardError(label: label) }

    public var logLevel: Logger.Level {
        get { stream.logLevel }
        set { stream.logLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        if !metadata.isEmpty {
            event.metadata = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, explicit in explicit })
        }
        stream.log(event: event)
    }
}
