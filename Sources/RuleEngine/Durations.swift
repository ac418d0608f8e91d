import Foundation

/// Durations as settings and rules write them: `90` or `90s`, `500ms`, `15m`, `24h`, `7d`.
public enum Durations {
    public static func parse(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            guard let n = Double(trimmed.dropLast(suffix.count)), n >= 0, (n * scale).isFinite else { return nil }
            return n * scale
        }
        guard let n = Double(trimmed), n >= 0, n.isFinite else { return nil }
        return n
    }

    /// The longest duration a setting or a rule may give: 100 years (365-day ones). Past it, timers and
    /// deadlines would overflow the integer clocks they are converted to.
    public static let longest: Double = 100 * 365 * 86_400

    public static func format(_ seconds: Double) -> String {
        // Whole units only below Int's range; anything larger (a check of a rule that asks for it) as a number.
        guard seconds.isFinite, abs(seconds) < 1e15 else { return "\(seconds)s" }
        for (suffix, scale) in [("d", 86_400.0), ("h", 3600), ("m", 60), ("s", 1)]
        where seconds >= scale && seconds.truncatingRemainder(dividingBy: scale) == 0 {
            return "\(Int(seconds / scale))\(suffix)"
        }
        return seconds == 0 ? "0" : "\(Int((seconds * 1000).rounded()))ms"
    }
}

extension Duration {
    /// The duration as seconds in a Double (for metrics, reports and the console).
    package var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
