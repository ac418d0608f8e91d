public import JSONCore
public import KazooEvents
import LuaRuntime

/// What one rule did with one event.
public struct RuleOutcome: Sendable, Hashable {
    public enum Outcome: String, Sendable, Hashable {
        /// The rule did not apply: `on`, `match` or `filter` said no (see `stage`).
        case skipped
        /// `transform` returned nil.
        case dropped
        case ok
        /// The rule raised an error or was killed (see `error` and `stage`).
        case error

        /// Every outcome, in `index` order.
        static let all: [Outcome] = [.skipped, .dropped, .ok, .error]
        /// The outcome's place in `all`.
        var index: Int {
            switch self {
            case .skipped: 0
            case .dropped: 1
            case .ok: 2
            case .error: 3
            }
        }
    }

    public var rule: String
    public var file: String
    public var outcome: Outcome
    /// For skipped: `on`, `match` or `filter`; for dropped: `transform`; for errors: the stage that failed
    /// (`filter`, `transform`, `forward`, `run`).
    public var stage: String?
    public var forwards: [ForwardRecord] = []
    public var http: [HTTPRecord] = []
    public var logs: [LogRecord] = []
    public var error: RuleErrorInfo?
    /// Wall time of the run (HTTP waits included); 0 when `on` or `match` declined the event.
    public var seconds: Double = 0
}

extension RuleOutcome {
    // Initializers here, in an extension, so that the struct keeps the memberwise initializer Swift makes for it
    // (`ended` uses it). An initializer of its own, setting each property, built the outcome twice over on
    // the stack, made one copy from the other (a retain of each of its strings and arrays) and destroyed the
    // other (a release of each), for every run (Swift 6.3, -O; the memberwise one does not).

    public init(rule: String, file: String, outcome: Outcome, stage: String? = nil) {
        self.init(rule: rule, file: file, outcome: outcome, stage: stage, forwards: [], http: [], logs: [])
    }

    /// An ended run's outcome, with the run's records moved into it (swapped, not copied: the run is not read
    /// after this). Made once, when the run ends: an outcome kept in a variable across the run's awaits was
    /// copied into and out of the task's frame, each copy a retain of every string and array in it.
    /// - Parameter ended: when the run ended (`LuaState.clock()` seconds): the last resume's reading when the
    ///   caller has it, else the clock is read now.
    static func ended(
        _ run: RuleRun, gate: RuleGate, _ kind: Outcome, stage: String? = nil, error: RuleErrorInfo? = nil,
        at ended: Double = LuaState.clock()
    ) -> RuleOutcome {
        var forwards: [ForwardRecord] = []
        var http: [HTTPRecord] = []
        var logs: [LogRecord] = []
        swap(&forwards, &run.forwards)
        swap(&http, &run.http)
        swap(&logs, &run.logs)
        return RuleOutcome(
            rule: gate.name, file: gate.file, outcome: kind, stage: stage, forwards: forwards, http: http,
            logs: logs, error: error, seconds: max(ended - run.started, 0))
    }
}

/// A request a rule forwards (the `forward` field or `forward()`): what would be or was sent.
public struct ForwardRecord: Sendable, Hashable {
    public var method: String
    public var url: String
    public var headers: JSONObject
    /// The payload: the value itself for JSON forwards, the encoded string for form forwards.
    public var body: JSONValue
    public var format: String
    /// The bytes sent as the request body (`body` encoded for the target's format).
    public var payload: [UInt8] = []
    /// Set when the forward was sent (`--live`, or the server with the journal off).
    public var status: Int?
    public var error: String?
}

/// An HTTP call a rule made with `http.*`. Two records are equal when they are the same call with the same
/// result, whatever each took (`seconds` is a measurement, not part of what the rule did).
public struct HTTPRecord: Sendable, Hashable {
    public var method: String
    public var url: String
    public var status: Int?
    public var error: String?
    /// How long the call took, answer or failure.
    public var seconds: Double

    public init(method: String, url: String, status: Int? = nil, error: String? = nil, seconds: Double = 0) {
        self.method = method
        self.url = url
        self.status = status
        self.error = error
        self.seconds = seconds
    }

    public static func == (a: HTTPRecord, b: HTTPRecord) -> Bool {
        (a.method, a.url, a.status, a.error) == (b.method, b.url, b.status, b.error)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(method)
        hasher.combine(url)
        hasher.combine(status)
        hasher.combine(error)
    }
}

/// A `log.*` line.
public struct LogRecord: Sendable, Hashable {
    public var level: String
    public var message: String
    public var fields: JSONValue
}

/// Where and why a rule failed.
public struct RuleErrorInfo: Sendable, Hashable {
    public var message: String
    public var file: String?
    public var line: Int?
    public var traceback: String?
}

/// Every rule's outcome for one event.
public struct EventReport: Sendable, Hashable {
    public var event: WebhookEvent
    public var rules: [RuleOutcome]

    public init(event: WebhookEvent, rules: [RuleOutcome]) {
        self.event = event
        self.rules = rules
    }

    public var hasErrors: Bool { rules.contains { $0.outcome == .error } }
}

extension RuleOutcome {
    /// The outcome as `switchboard run --json` prints it (every key always present).
    public var json: JSONValue {
        .object(
            JSONObject(
                uniqueMembersUnchecked: members(
                    forwards: .array(forwards.map(\.json)), http: .array(http.map(\.json)))))
    }

    /// `json`'s members in their order, with the given `forwards` and `http`. Built once with distinct keys: a
    /// dictionary literal checks every key against those before it.
    private func members(forwards: JSONValue, http: JSONValue) -> [JSONObject.Member] {
        var errorValue: JSONValue = .null
        if let error {
            errorValue = [
                "message": .string(error.message), "file": error.file.map(JSONValue.string) ?? .null,
                "line": error.line.map { .int(Int64($0)) } ?? .null,
                "traceback": error.traceback.map(JSONValue.string) ?? .null,
            ]
        }
        var members: [JSONObject.Member] = []
        members.reserveCapacity(7)
        members.append(.init(key: "rule", value: .string(rule)))
        members.append(.init(key: "outcome", value: .string(outcome.rawValue)))
        members.append(.init(key: "stage", value: stage.map(JSONValue.string) ?? .null))
        members.append(.init(key: "forwards", value: forwards))
        members.append(.init(key: "http", value: http))
        members.append(
            .init(
                key: "logs",
                value: .array(
                    logs.map { ["level": .string($0.level), "message": .string($0.message), "fields": $0.fields] })))
        members.append(.init(key: "error", value: errorValue))
        return members
    }
}

extension ForwardRecord {
    /// The headers as sent (Content-Type included).
    public var requestHeaders: [OutboundRequest.Header] {
        headers.map { OutboundRequest.Header(name: $0.key, value: $0.value.stringValue ?? "") }
    }

    public var json: JSONValue {
        ["method": .string(method), "url": .string(url), "headers": .object(headers), "body": body]
    }
}

extension HTTPRecord {
    public var json: JSONValue {
        [
            "method": .string(method), "url": .string(url), "status": status.map { .int(Int64($0)) } ?? .null,
            "error": error.map(JSONValue.string) ?? .null,
        ]
    }
}

/// What is kept with an accepted event once its rules finish, for the console: the fields it is found by
/// and the outcome of every rule that matched it (rules whose `on` or `match` declined it are left out).
public struct EventRecord: Sendable, Hashable {
    /// `kind.name`: `channel.channel_create`, `notification.voicemail_new`.
    public var name: String
    public var callID: String?
    /// `other_leg_call_id`: the call page shows both legs.
    public var otherLeg: String?
    public var accountID: String?
    /// `outcomes` as JSON text: an array of `RuleOutcome.record`.
    public var outcomes: String

    public init(name: String, callID: String?, otherLeg: String?, accountID: String?, outcomes: String) {
        self.name = name
        self.callID = callID
        self.otherLeg = otherLeg
        self.accountID = accountID
        self.outcomes = outcomes
    }

    public init(_ report: EventReport, meta: JSONValue?) {
        name = report.event.kind.rawValue + "." + report.event.name
        callID = report.event.callID
        otherLeg = report.event.otherLegCallID
        accountID = report.event.accountID ?? meta?["account_id"]?.stringValue
        // By index: `filter` copied every kept outcome (a retain of each of its strings and arrays).
        var writer = JSONTextWriter(capacity: 512)
        writer.openArray()
        let rules = report.rules
        for i in rules.indices where RuleOutcome.matched(rules[i].outcome, stage: rules[i].stage) {
            RuleOutcome.writeRecord(of: rules, at: i, into: &writer)
        }
        writer.closeArray()
        outcomes = writer.text
    }
}

extension RuleOutcome {
    /// False when the rule's `on` or `match` declined the event (the rule never ran for it).
    public var matched: Bool { Self.matched(outcome, stage: stage) }

    /// `matched`, from the two properties it reads. For loops over an array of outcomes: a computed property,
    /// or a method, called on an element (through the array or a buffer pointer) copied the whole outcome out
    /// first (a retain and a release of each of its strings and arrays); its stored properties are read in place.
    public static func matched(_ outcome: Outcome, stage: String?) -> Bool {
        !(outcome == .skipped && (stage == "on" || stage == "match"))
    }

    /// The console's record of `outcomes[index]` as JSON text, written straight from the outcome
    /// (`EventRecord`, once per event, without building a `JSONValue` first): `json`'s members with the
    /// forwards' bodies and headers left out, the HTTP calls' durations added, then the file and the run's
    /// duration. Log fields JSON cannot hold (a NaN) are `null`. Static, reading the element's stored
    /// properties in place (see `matched(_:stage:)`).
    static func writeRecord(of outcomes: [RuleOutcome], at index: Int, into writer: inout JSONTextWriter) {
        writer.openObject()
        writer.member("rule", outcomes[index].rule)
        writer.member("outcome", outcomes[index].outcome.rawValue)
        writer.member("stage", outcomes[index].stage)
        writer.rawKey("forwards")
        writer.openArray()
        for i in outcomes[index].forwards.indices {
            writer.openObject()
            writer.member("method", outcomes[index].forwards[i].method)
            writer.member("url", outcomes[index].forwards[i].url)
            writer.member("format", outcomes[index].forwards[i].format)
            writer.closeObject()
        }
        writer.closeArray()
        writer.rawKey("http")
        writer.openArray()
        for i in outcomes[index].http.indices {
            writer.openObject()
            writer.member("method", outcomes[index].http[i].method)
            writer.member("url", outcomes[index].http[i].url)
            writer.member("status", int: outcomes[index].http[i].status)
            writer.member("error", outcomes[index].http[i].error)
            writer.member("seconds", double: outcomes[index].http[i].seconds)
            writer.closeObject()
        }
        writer.closeArray()
        writer.rawKey("logs")
        writer.openArray()
        for i in outcomes[index].logs.indices {
            writer.openObject()
            writer.member("level", outcomes[index].logs[i].level)
            writer.member("message", outcomes[index].logs[i].message)
            writer.member("fields", value: outcomes[index].logs[i].fields)
            writer.closeObject()
        }
        writer.closeArray()
        writer.rawKey("error")
        if let error = outcomes[index].error {
            writer.openObject()
            writer.member("message", error.message)
            writer.member("file", error.file)
            writer.member("line", int: error.line)
            writer.member("traceback", error.traceback)
            writer.closeObject()
        } else {
            writer.null()
        }
        writer.member("file", outcomes[index].file)
        writer.member("seconds", double: outcomes[index].seconds)
        writer.closeObject()
    }

    /// Everything the console shows of one run: `json` plus the file, durations and the error's place. Read
    /// back from `writeRecord`'s text, the one place the record's shape is written down: the console reads
    /// that same text back from the journal for every event, and this (Try it) shows what it would keep.
    public var record: JSONValue {
        var writer = JSONTextWriter()
        Self.writeRecord(of: [self], at: 0, into: &writer)
        return (try? JSONReader.parse(writer.bytes)) ?? .null
    }
}
