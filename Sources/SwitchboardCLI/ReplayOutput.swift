import Foundation
import JSONCore
import KazooEvents
import RuleEngine

/// What `switchboard replay` prints: every event's outcomes, or the differences between two rule sets, and a
/// summary.
struct ReplayOutput {
    var json: Bool
    var summaryOnly: Bool

    /// One way a rule treated an event differently in the two sets.
    struct Difference {
        var rule: String
        var what: String
        var base: String
        var against: String
        /// For forward bodies: a line diff.
        var diff: [String] = []

        var json: JSONValue {
            var o = JSONObject()
            o["rule"] = .string(rule)
            o["what"] = .string(what)
            o["base"] = .string(base)
            o["against"] = .string(against)
            if !diff.isEmpty { o["diff"] = .array(diff.map(JSONValue.string)) }
            return .object(o)
        }
    }

    var comparing = false
    var undecodable = 0
    var events = 0
    var counts: [String: [String: Int]] = [:]
    var differing = 0
    var perRule: [String: Int] = [:]

    init(json: Bool, summaryOnly: Bool, comparing: Bool) {
        self.json = json
        self.summaryOnly = summaryOnly
        self.comparing = comparing
    }

    /// Counts a chunk's outcomes and prints its events (or, comparing, their differences).
    mutating func add(_ items: [ReplayEvent], base: [EventReport], against: [EventReport]?) {
        events += items.count
        for report in base {
            for outcome in report.rules where outcome.stage != "on" {
                counts[outcome.rule, default: [:]][outcome.outcome.rawValue, default: 0] += 1
            }
        }
        for index in items.indices {
            if let against {
                let differences = Self.compare(base[index], against[index])
                guard !differences.isEmpty else { continue }
                differing += 1
                for rule in Set(differences.map(\.rule)) { perRule[rule, default: 0] += 1 }
                if !summaryOnly { emit(Self.describe(items[index], differences)) }
            } else if !summaryOnly {
                emit(Self.describe(items[index], base[index]))
            }
        }
    }

    /// Prints the summary; returns how many events differ (0 when not comparing).
    func finish() -> Int {
        func object(_ counts: [String: Int]) -> JSONValue {
            .object(
                JSONObject(counts.sorted { $0.key < $1.key }.map { .init(key: $0.key, value: .int(Int64($0.value))) }))
        }
        var summary = JSONObject()
        summary["events"] = .int(Int64(events))
        summary["undecodable"] = .int(Int64(undecodable))
        summary["outcomes"] = .object(
            JSONObject(counts.sorted { $0.key < $1.key }.map { .init(key: $0.key, value: object($0.value)) }))
        if comparing {
            summary["differing_events"] = .int(Int64(differing))
            summary["differing_by_rule"] = object(perRule)
        }
        if json {
            Swift.print(DecodeReport.lossyJSON(["summary": .object(summary)]))
        } else {
            var lines = [
                "",
                "replayed \(events) event\(events == 1 ? "" : "s")"
                    + (undecodable > 0 ? " (\(undecodable) no longer decode, left out)" : ""),
            ]
            for rule in counts.keys.sorted() {
                let parts = counts[rule]!.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                lines.append("  \(rule): \(parts.joined(separator: ", "))")
            }
            if comparing {
                lines.append(
                    differing == 0
                        ? "no differences"
                        : "\(differing) event\(differing == 1 ? "" : "s") differ: "
                            + perRule.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                )
            }
            Swift.print(lines.joined(separator: "\n"))
        }
        return comparing ? differing : 0
    }

    func emit(_ value: (text: String, json: JSONValue)) {
        Swift.print(json ? DecodeReport.lossyJSON(value.json) : value.text)
    }

    static func heading(_ item: ReplayEvent) -> String {
        let time = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: item.receivedAt))
        var text = "\(item.event.qualifiedName) \(item.id) at \(time)"
        if let call = item.event.callID { text += " call \(call)" }
        return text
    }

    static func identity(_ item: ReplayEvent) -> JSONObject {
        var o = JSONObject()
        o["id"] = .string(item.id)
        o["received_at"] = .double(item.receivedAt)
        o["name"] = .string(item.event.qualifiedName)
        o["call_id"] = item.event.callID.map(JSONValue.string) ?? .null
        return o
    }

    static func describe(_ item: ReplayEvent, _ report: EventReport) -> (text: String, json: JSONValue) {
        var o = identity(item)
        o["rules"] = .array(report.rules.filter { $0.stage != "on" }.map(\.json))
        return (RunReport.text(file: heading(item), report: report), .object(o))
    }

    static func describe(_ item: ReplayEvent, _ differences: [Difference]) -> (text: String, json: JSONValue) {
        var lines = [heading(item)]
        for d in differences {
            lines.append(
                d.base.isEmpty && d.against.isEmpty
                    ? "  \(d.rule): \(d.what)" : "  \(d.rule): \(d.what): \(d.base) → \(d.against)")
            lines.append(contentsOf: d.diff.map { "      \($0)" })
        }
        var o = identity(item)
        o["differences"] = .array(differences.map(\.json))
        return (lines.joined(separator: "\n"), .object(o))
    }

    /// How the two sets treated one event differently, rule by rule.
    static func compare(_ base: EventReport, _ against: EventReport) -> [Difference] {
        let left = Dictionary(base.rules.map { ($0.rule, $0) }, uniquingKeysWith: { a, _ in a })
        let right = Dictionary(against.rules.map { ($0.rule, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [Difference] = []
        for rule in Set(left.keys).union(right.keys).sorted() {
            let a = left[rule], b = right[rule]
            let applies = { (o: RuleOutcome?) in o.map { $0.stage != "on" } ?? false }
            guard applies(a) || applies(b) else { continue }
            guard let a, let b else {
                out.append(
                    Difference(
                        rule: rule, what: "rule", base: a == nil ? "absent" : "present",
                        against: b == nil ? "absent" : "present"))
                continue
            }
            if a.outcome != b.outcome || a.stage != b.stage {
                out.append(Difference(rule: rule, what: "outcome", base: summary(a), against: summary(b)))
            } else if a.error?.message != b.error?.message {
                out.append(
                    Difference(
                        rule: rule, what: "error", base: a.error?.message ?? "none", against: b.error?.message ?? "none"
                    ))
            }
            for i in 0..<max(a.forwards.count, b.forwards.count) {
                let x = i < a.forwards.count ? a.forwards[i] : nil
                let y = i < b.forwards.count ? b.forwards[i] : nil
                guard let x, let y else {
                    out.append(
                        Difference(
                            rule: rule, what: "forward \(i + 1)", base: x.map { "\($0.method) \($0.url)" } ?? "none",
                            against: y.map { "\($0.method) \($0.url)" } ?? "none"))
                    continue
                }
                if x.method != y.method || x.url != y.url {
                    out.append(
                        Difference(
                            rule: rule, what: "forward \(i + 1) target", base: "\(x.method) \(x.url)",
                            against: "\(y.method) \(y.url)"))
                }
                if x.body != y.body || x.headers != y.headers {
                    var d = Difference(
                        rule: rule, what: "forward \(i + 1) (\(x.method) \(x.url)): the body differs", base: "",
                        against: "")
                    d.diff = LineDiff.diff(lines(x), lines(y))
                    out.append(d)
                }
            }
            let logs = { (o: RuleOutcome) in
                o.logs.map {
                    "\($0.level): \($0.message)" + ($0.fields == .null ? "" : " " + DecodeReport.display($0.fields))
                }
            }
            if logs(a) != logs(b) {
                var d = Difference(rule: rule, what: "the log lines differ", base: "", against: "")
                d.diff = LineDiff.diff(logs(a), logs(b))
                out.append(d)
            }
        }
        return out
    }

    static func summary(_ o: RuleOutcome) -> String {
        var text = o.outcome.rawValue
        if let stage = o.stage { text += " (\(stage))" }
        if let error = o.error { text += ": \(error.message)" }
        return text
    }

    /// A forward as lines to diff: its body (JSON indented, form fields one per line), then its headers.
    static func lines(_ forward: ForwardRecord) -> [String] {
        var body: [String]
        if forward.format == "form", case .string(let text) = forward.body {
            body = text.split(separator: "&").map { field in
                let decoded = field.replacingOccurrences(of: "+", with: " ")
                return decoded.removingPercentEncoding ?? String(field)
            }
        } else {
            body = pretty(forward.body)
        }
        return body + headerLines(forward.headers)
    }

    static func headerLines(_ headers: JSONObject) -> [String] {
        headers.sorted { $0.key < $1.key }.map { "header \($0.key): \($0.value.stringValue ?? "")" }
    }

    /// A value as indented JSON lines with sorted keys, so a diff shows the changed fields.
    static func pretty(_ value: JSONValue, indent: String = "") -> [String] {
        func scalar(_ v: JSONValue) -> String { (try? JSONWriter.string(v)) ?? "?" }
        switch value {
        case .object(let o) where !o.isEmpty:
            let members = o.sorted { $0.key < $1.key }
            var lines = ["{"]
            for (i, m) in members.enumerated() {
                var inner = pretty(m.value, indent: indent + "  ")
                inner[0] = "\(indent)  \(scalar(.string(m.key))): " + inner[0]
                if i < members.count - 1 { inner[inner.count - 1] += "," }
                lines += inner
            }
            return lines + ["\(indent)}"]
        case .array(let items) where !items.isEmpty:
            var lines = ["["]
            for (i, item) in items.enumerated() {
                var inner = pretty(item, indent: indent + "  ")
                inner[0] = indent + "  " + inner[0]
                if i < items.count - 1 { inner[inner.count - 1] += "," }
                lines += inner
            }
            return lines + ["\(indent)]"]
        default:
            return [scalar(value)]
        }
    }
}

/// A line diff by longest common subsequence: unchanged lines start with two spaces, removed with "- ",
/// added with "+ ". Long runs of unchanged lines are cut to two of context.
enum LineDiff {
    static func diff(_ a: [String], _ b: [String]) -> [String] {
        let n = a.count, m = b.count
        var table = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                table[i][j] = a[i] == b[j] ? table[i + 1][j + 1] + 1 : max(table[i + 1][j], table[i][j + 1])
            }
        }
        var out: [(Character, String)] = []
        var i = 0, j = 0
        while i < n || j < m {
            if i < n, j < m, a[i] == b[j] {
                out.append((" ", a[i]))
                i += 1
                j += 1
            } else if i < n, j == m || table[i + 1][j] >= table[i][j + 1] {
                out.append(("-", a[i]))
                i += 1
            } else {
                out.append(("+", b[j]))
                j += 1
            }
        }
        // Keep changes and two lines of context around each.
        let changed = out.indices.filter { out[$0].0 != " " }
        return out.indices.filter { index in changed.contains { abs($0 - index) <= 2 } }.map {
            "\(out[$0].0 == " " ? " " : String(out[$0].0)) \(out[$0].1)"
        }
    }
}
