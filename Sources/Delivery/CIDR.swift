import Foundation

/// An IPv4 or IPv6 network such as `10.0.0.0/8`, `127.0.0.1` (a /32) or `::1/128`.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let address: [UInt8]
    public let prefix: Int
    public let description: String

    /// Parses `a.b.c.d/n`, `a.b.c.d`, `x:y::z/n` or `x:y::z`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let bytes = CIDR.parseAddress(first) else { return nil }
        let maxPrefix = bytes.count * 8
        let prefix = parts.count == 2 ? Int(parts[1]) : maxPrefix
        guard let prefix, (0...maxPrefix).contains(prefix) else { return nil }
        self.address = bytes
        self.prefix = prefix
        self.description = text
    }

    /// Whether an address (4 or 16 bytes) is inside this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    public func contains(_ other: [UInt8]) -> Bool {
        var other = other
        if address.count == 4, other.count == 16, other[0..<10].allSatisfy({ $0 == 0 }), other[10] == 0xFF,
            other[11] == 0xFF
        {
            other = Array(other[12...])
        }
        guard other.count == address.count else { return false }
        var bits = prefix
        for i in 0..<address.count where bits > 0 {
            let take = min(bits, 8)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if address[i] & mask != other[i] & mask { return false }
            bits -= take
        }
        return true
    }

    /// The bytes of a textual IPv4 or IPv6 address, or nil.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        let trimmed = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        if inet_pton(AF_INET6, trimmed, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// Where rule HTTP may not go unless allowed: loopback, private, link-local (cloud metadata included),
    /// carrier-grade NAT, unspecified, multicast, and their IPv6 counterparts.
    public static let internalNetworks: [CIDR] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    ].compactMap(CIDR.init)
}
