public import Foundation
import Synchronization

/// Keeps every request answered 4xx for an operator to inspect: the body as received and a JSON file with
/// the reason, method, path, headers (secrets removed) and time, in `<data dir>/rejected/`. Keeps the newest
/// `maxFiles` requests, at most `maxBytes` of bodies. With several nodes (`shared`), a copy also goes to the
/// shared database, so any node's console and `/admin/rejected` list every node's.
public final class RejectedStore: Sendable {
    public let directory: URL
    let maxFiles: Int
    let maxBytes: Int
    let shared: (any Journal)?
    private let counter = Mutex(0)

    /// Where a data directory keeps them: `<data dir>/rejected`.
    public static func directory(inDataDirectory dataDirectory: String) -> URL {
        URL(fileURLWithPath: dataDirectory).appendingPathComponent("rejected")
    }

    public init(directory: URL, maxFiles: Int = 1000, maxBytes: Int = 100 << 20, shared: (any Journal)? = nil) {
        self.directory = directory
        self.maxFiles = maxFiles
        self.maxBytes = maxBytes
        self.shared = shared
    }

    /// Writes the request; failures to write are returned as a message for the log (never thrown: the
    /// client still gets its 4xx).
    @discardableResult
    public func keep(
        body: [UInt8], reason: String, code: String, method: String, path: String, headers: [(String, String)],
        peer: String?
    ) -> String? {
        let n = counter.withLock { c -> Int in
            c += 1
            return c
        }
        let stamp = String(format: "%.6f", Date().timeIntervalSince1970).replacingOccurrences(of: ".", with: "")
        let base = "\(stamp)-\(n)"
        var meta: [String: Any] = [
            "reason": reason, "code": code, "method": method, "path": Self.redact(path),
            "received_at": Date().timeIntervalSince1970,
            "headers": Dictionary(
                headers.map { ($0.0.lowercased(), Self.redactHeader($0.0, $0.1)) }, uniquingKeysWith: { a, _ in a }),
            "body_file": "\(base).body", "body_bytes": body.count,
        ]
        if let peer { meta["peer"] = peer }
        let json = (try? JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])) ?? Data("{}".utf8)
        shared?.shareRejected(meta: String(decoding: json, as: UTF8.self), body: body)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(body).write(to: directory.appendingPathComponent("\(base).body"))
            try json.write(to: directory.appendingPathComponent("\(base).json"))
            if n % 100 == 0 { prune() }
            return nil
        } catch {
            return "could not keep the rejected body in \(directory.path): \(error.localizedDescription)"
        }
    }

    /// The kept requests, newest first, as their metadata.
    public func list(limit: Int = 100) -> [[String: Any]] {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(".json") }.sorted(by: >).prefix(limit)
        return files.compactMap { name in
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) else {
                return nil
            }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
    }

    /// The kept requests, newest first, each description with its body: every node's from the shared database
    /// when there is one and it answers, else this node's files.
    public func listWithBodies(limit: Int = 100) async -> [(meta: [String: Any], body: Data?)] {
        if let shared, let rows = try? await shared.sharedRejected(limit: limit) {
            return rows.compactMap { row in
                guard let meta = try? JSONSerialization.jsonObject(with: Data(row.meta.utf8)) as? [String: Any] else {
                    return nil
                }
                return (meta, Data(row.body))
            }
        }
        return list(limit: limit).map { meta in
            (
                meta,
                (meta["body_file"] as? String).flatMap {
                    FileManager.default.contents(atPath: directory.appendingPathComponent($0).path)
                }
            )
        }
    }

    /// Deletes the oldest kept requests beyond `maxFiles` or `maxBytes`, and any older than `maxAge`
    /// seconds. Returns how many went.
    @discardableResult
    public func prune(maxAge: Double? = nil) -> Int {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter {
            $0.hasSuffix(".json")
        }
        .sorted(by: >)  // newest first: the names start with the time
        let cutoff = maxAge.map { Date().timeIntervalSince1970 - $0 }
        var kept = 0
        var bytes = 0
        var removed = 0
        for name in names {
            let stem = String(name.dropLast(5))
            let body = directory.appendingPathComponent(stem + ".body")
            let attributes = try? FileManager.default.attributesOfItem(atPath: body.path)
            let size = (attributes?[.size] as? Int) ?? 0
            let time = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            if kept < maxFiles, bytes + size <= maxBytes, cutoff.map({ time >= $0 }) ?? true {
                kept += 1
                bytes += size
                continue
            }
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
            try? FileManager.default.removeItem(at: body)
            removed += 1
        }
        return removed
    }

    /// Every query pair whose name says it holds a secret (`token=`, `api_key=`, `password=`…: `Secrets`) has
    /// its value replaced, so it never reaches the disk; the path and the other pairs stay as they were.
    package static func redact(_ target: String) -> String {
        QueryPieces.split(target).map { piece, separator in
            guard let equals = piece.firstIndex(of: "="), Secrets.isSecret(name: piece[..<equals]) else {
                return piece + separator
            }
            return piece[...equals] + "REDACTED" + separator
        }.joined()
    }

    /// Credentials (`Authorization`, `Proxy-Authorization`, `Cookie`) and any header whose name says it holds
    /// a secret (`X-Auth-Token`, `X-Api-Key`…) are kept as "REDACTED".
    static func redactHeader(_ name: String, _ value: String) -> String {
        Secrets.isCredentialHeader(name) ? "REDACTED" : value
    }
}

/// The words that mark a name (a query pair's, a header's, a JSON key's) as holding a secret, for what is
/// kept or shown to be redacted: the rejected requests on disk and the console's views.
package enum Secrets {
    package static let nameParts = ["token", "password", "secret", "api_key", "apikey"]

    /// Whether `name` contains one of `nameParts`, ignoring case, with `-` read as `_` (`X-Api-Key`).
    package static func isSecret(name: some StringProtocol) -> Bool {
        let name = name.lowercased().replacingOccurrences(of: "-", with: "_")
        return nameParts.contains { name.contains($0) }
    }

    /// A header that carries credentials: `Authorization`, `Proxy-Authorization`, `Cookie`, or one named for a
    /// secret (`isSecret`). Kept redacted with a rejected request; dropped from a redirect to another origin.
    package static func isCredentialHeader(_ name: String) -> Bool {
        ["authorization", "proxy-authorization", "cookie"].contains(name.lowercased()) || isSecret(name: name)
    }
}

/// A request target or query cut into pieces at each `&` and `?`: the path, then each pair (Kazoo may follow
/// a query with a literal `?`, so a `?` separates pairs too).
package enum QueryPieces {
    /// Each piece with the separator after it ("" after the last).
    package static func split(_ text: String) -> [(piece: Substring, separator: Substring)] {
        var out: [(Substring, Substring)] = []
        var rest = Substring(text)
        while true {
            let end = rest.firstIndex(where: { $0 == "&" || $0 == "?" }) ?? rest.endIndex
            guard end < rest.endIndex else {
                out.append((rest, ""))
                return out
            }
            out.append((rest[..<end], rest[end...end]))
            rest = rest[rest.index(after: end)...]
        }
    }
}
