import Foundation

/// Durations as settings and rules write them: `90` or `90s`, `500ms`, `15m`, `24h`, `7d`.
public enum Durations {
    public static func parse(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            guard let n = Double(trimmed.dropLast(suffix.count)), n >= 0, n.isFinite else { return nil }
            return n * scale
        }
        guard let n = Double(trimmed), n >= 0, n.isFinite else { return nil }
        return n
    }

    public static func format(_ seconds: Double) -> String {
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
