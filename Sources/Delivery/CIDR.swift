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

    /// Whether an address (4 or 16 bytes) is inside this network. An IPv6 address that carries an IPv4 one
    /// (`embeddedIPv4`) matches the IPv4 networks that one is in.
    public func contains(_ other: [UInt8]) -> Bool {
        var other = other
        if address.count == 4, let carried = Self.embeddedIPv4(other) { other = carried }
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

    /// The IPv4 address an IPv6 address stands for, when it stands for one, and where a connection to it goes:
    /// IPv4-mapped (`::ffff:a.b.c.d`, this machine's own IPv4 stack), NAT64's well-known prefix
    /// (`64:ff9b::a.b.c.d`, RFC 6052: a NAT64 gateway connects to a.b.c.d) and 6to4 (`2002:AABB:CCDD::/48`,
    /// RFC 3056: a relay delivers to AA.BB.CC.DD). Until the thirty-fourth session only the first was read, so
    /// on a network with NAT64 `64:ff9b::a9fe:a9fe` reached the cloud metadata address.
    public static func embeddedIPv4(_ address: [UInt8]) -> [UInt8]? {
        guard address.count == 16 else { return nil }
        if address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xFF, address[11] == 0xFF {
            return Array(address[12...])
        }
        if address[0..<12].elementsEqual([0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]) {
            return Array(address[12...])
        }
        if address[0] == 0x20, address[1] == 0x02 { return Array(address[2..<6]) }
        return nil
    }

    /// Where rule HTTP may not go unless allowed: loopback, private, link-local (cloud metadata included),
    /// carrier-grade NAT, unspecified, multicast, and their IPv6 counterparts; the deprecated IPv4-compatible
    /// addresses (`::a.b.c.d`) and site-local ones (`fec0::/10`), IPv4-translated ones (`::ffff:0:a.b.c.d`,
    /// RFC 2765) and NAT64's local-use prefix (`64:ff9b:1::/48`, RFC 8215, where the IPv4 address may sit
    /// anywhere). An IPv6 address that carries an IPv4 one is checked as that one (`embeddedIPv4`).
    public static let internalNetworks: [CIDR] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/96", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
        "64:ff9b:1::/48", "fec0::/10", "::ffff:0:0:0/96",
    ].compactMap(CIDR.init)
}
