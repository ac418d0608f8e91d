public import Foundation

/// When a rule's `tick` runs: `every = seconds` (or "5m") or `cron = "0 9 * * 1-5"` in a time zone.
public enum TickSchedule: Sendable, Hashable, CustomStringConvertible {
    case every(Double)
    case cron(CronExpression, TimeZone)

    /// The first time strictly after `time` (Unix seconds) the tick is due; nil when a cron expression never
    /// matches again (such as "0 0 30 2 *").
    public func next(after time: Double) -> Double? {
        switch self {
        case .every(let seconds): time + seconds
        case .cron(let expression, let zone): expression.next(after: time, in: zone)
        }
    }

    public var description: String {
        switch self {
        case .every(let seconds): "every \(Durations.format(seconds))"
        case .cron(let expression, let zone):
            "cron \"\(expression.text)\"" + (zone.identifier == "UTC" ? " (UTC)" : " (\(zone.identifier))")
        }
    }

    /// The shortest `every` a rule may ask for.
    public static let minimumInterval: Double = 1
}

/// A five-field cron expression — minute, hour, day of month, month, day of week — as crontab(5) has it:
/// `*`, `a-b`, lists `a,b`, steps `*/n` and `a-b/n`, month and day names (`jan`, `mon`), 0 or 7 for Sunday,
/// and the shorthands `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. When both day fields are
/// restricted, a day matching either runs (as in Vixie cron).
public struct CronExpression: Sendable, Hashable {
    public let text: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let days: Set<Int>
    let months: Set<Int>
    /// 0 = Sunday … 6 = Saturday.
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    static let shorthands = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses an expression; the error says which field is wrong and why.
    public init(_ text: String) throws(ScheduleError) {
        self.text = text
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let expanded = Self.shorthands[trimmed] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ScheduleError(
                "cron \"\(text)\" has \(fields.count) field(s); it needs 5: minute hour day-of-month month day-of-week (such as \"0 9 * * 1-5\")"
            )
        }
        minutes = try Self.field(fields[0], name: "minute", range: 0...59)
        hours = try Self.field(fields[1], name: "hour", range: 0...23)
        days = try Self.field(fields[2], name: "day of month", range: 1...31)
        months = try Self.field(fields[3], name: "month", range: 1...12, names: Self.monthNames, firstName: 1)
        let weekdays = try Self.field(fields[4], name: "day of week", range: 0...7, names: Self.dayNames, firstName: 0)
        self.weekdays = Set(weekdays.map { $0 % 7 })
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
    }

    static func field(
        _ text: String, name: String, range: ClosedRange<Int>, names: [String] = [], firstName: Int = 0
    ) throws(ScheduleError) -> Set<Int> {
        func number(_ part: Substring) throws(ScheduleError) -> Int {
            if let n = Int(part) {
                guard range.contains(n) else {
                    throw ScheduleError("cron \(name) \(n) is out of range \(range.lowerBound)-\(range.upperBound)")
                }
                return n
            }
            if let index = names.firstIndex(of: String(part)) { return index + firstName }
            throw ScheduleError("cron \(name) field: \"\(part)\" is not a number\(names.isEmpty ? "" : " or a name")")
        }
        var values = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            var body = item
            var step = 1
            if let slash = item.firstIndex(of: "/") {
                guard let n = Int(item[item.index(after: slash)...]), n > 0 else {
                    throw ScheduleError("cron \(name) field: the step in \"\(item)\" must be a positive number")
                }
                step = n
                body = item[..<slash]
            }
            var low = range.lowerBound
            var high = range.upperBound
            if body == "*" {
                // every value
            } else if let dash = body.firstIndex(of: "-") {
                low = try number(body[..<dash])
                high = try number(body[body.index(after: dash)...])
                guard low <= high else {
                    throw ScheduleError(
                        "cron \(name) field: \"\(body)\" runs backwards (write the smaller value first)")
                }
            } else if body.isEmpty {
                throw ScheduleError("cron \(name) field \"\(text)\" has an empty item")
            } else {
                low = try number(body)
                // "5/15" means from 5 to the end, every 15.
                if step == 1 { high = low }
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// The first whole minute strictly after `time` whose local time in `zone` matches. Local times a clock
    /// change skips do not exist, so they never match that day; a repeated hour matches at its first occurrence
    /// only.
    public func next(after time: Double, in zone: TimeZone) -> Double? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        var date = Date(timeIntervalSince1970: ((time / 60).rounded(.down) + 1) * 60)
        // Skipping by month, then day, then hour, then minute: even "0 0 29 2 *" is a few thousand steps.
        for _ in 0..<200_000 {
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: date)
            guard let month = c.month, let day = c.day, let hour = c.hour, let minute = c.minute,
                let weekday = c.weekday
            else { return nil }
            if !months.contains(month) {
                guard let first = calendar.date(from: DateComponents(year: c.year, month: month, day: 1)),
                    let next = calendar.date(byAdding: .month, value: 1, to: first)
                else { return nil }
                date = next
                continue
            }
            if !dayMatches(day: day, weekday: weekday - 1) {
                guard let next = calendar.date(byAdding: .day, value: 1, to: calendar.startOfDay(for: date))
                else { return nil }
                date = next
                continue
            }
            if !hours.contains(hour) {
                date = Date(timeIntervalSince1970: date.timeIntervalSince1970 - Double(minute * 60) + 3600)
                continue
            }
            if !minutes.contains(minute) {
                date = date.addingTimeInterval(60)
                continue
            }
            // A job at a fixed hour runs once when the autumn clock change repeats that hour, at its first
            // occurrence, as cron does: skip the second (the same wall time existed `earlier - offset` seconds
            // before, at the earlier offset). Jobs for every hour run through both passes.
            let offset = zone.secondsFromGMT(for: date)
            let earlier = zone.secondsFromGMT(for: date.addingTimeInterval(-7200))
            if earlier > offset, hours.count < 24,
                zone.secondsFromGMT(for: date.addingTimeInterval(-Double(earlier - offset))) == earlier
            {
                date = date.addingTimeInterval(60)
                continue
            }
            return date.timeIntervalSince1970
        }
        return nil
    }

    func dayMatches(day: Int, weekday: Int) -> Bool {
        let byDay = days.contains(day)
        let byWeekday = weekdays.contains(weekday)
        if daysRestricted && weekdaysRestricted { return byDay || byWeekday }
        return byDay && byWeekday
    }
}

/// A schedule that cannot be used; the message says what to write instead.
public struct ScheduleError: Error, Sendable, CustomStringConvertible {
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
