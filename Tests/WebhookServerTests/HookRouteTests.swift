import NIOCore
import NIOHTTP1
import Testing

@testable import WebhookServer

/// Which requests `HooksHandler` answers itself and which it passes to the router: `HookIntake.route` reads the
/// request target's path as bytes.
@Suite struct HookRouteTests {
    typealias Route = HookIntake.Route

    @Test(arguments: [
        ("/hooks", Route(hook: nil, token: nil)),
        ("/hooks/channel_create", Route(hook: "channel_create", token: nil)),
        ("/hooks/all/s3cret", Route(hook: "all", token: "s3cret")),
        ("/hooks/channel_create?token=abc&x=1", Route(hook: "channel_create", token: nil)),
        ("/hooks/notifications/tok?a=/b/c/d", Route(hook: "notifications", token: "tok")),
        // Empty segments are skipped, as Hummingbird's router skips them.
        ("//hooks//sms/", Route(hook: "sms", token: nil)),
        ("/hooks/a/b//", Route(hook: "a", token: "b")),
        // Not ASCII: the segment is kept as it was sent (the decoder then says what is wrong with the name).
        ("/hooks/caf\u{E9}", Route(hook: "caf\u{E9}", token: nil)),
    ])
    func hooksPathsAreRoutedHere(target: String, route: Route) {
        #expect(HookIntake.route(.POST, target: target) == route)
        #expect(HookIntake.route(.GET, target: target) == route)
        #expect(HookIntake.route(.PUT, target: target) == route)
    }

    @Test(arguments: ["/", "/healthz", "/hook", "/hooksx", "/x/hooks", "/hooks/a/b/c", "?/hooks", "/Hooks/a"])
    func otherPathsGoToTheRouter(target: String) {
        #expect(HookIntake.route(.POST, target: target) == nil)
    }

    /// The absolute form (`http://host/path`), which an HTTP/1.1 server must accept, names the same route.
    @Test(arguments: [
        ("http://127.0.0.1:8080/hooks/channel_create", "/hooks/channel_create"),
        ("https://h/hooks/all/tok?token=x", "/hooks/all/tok?token=x"),
        ("http://h", "/"),
        ("/hooks/a?b", "/hooks/a?b"),
        ("*", "*"),
    ])
    func aTargetsPathIsItsOwnOrTheAbsoluteFormsPath(target: String, path: String) {
        #expect(HookIntake.path(ofTarget: target) == path)
    }

    /// A connection's peer is the text NIO made of its address when it accepted it; an address that carries a
    /// host name instead is formatted from its bytes.
    @Test func aPeersAddressIsItsNumericText() throws {
        // Made from bare addresses, as an accepted connection's are (NIO writes their text with `inet_ntop`).
        guard case .v4(let v4) = try SocketAddress(ipAddress: "10.0.0.9", port: 1),
            case .v6(let v6) = try SocketAddress(ipAddress: "fe80::1", port: 1)
        else { Issue.record("not the address families asked for"); return }
        #expect(HooksHandler.numericHost(SocketAddress(v4.address)) == "10.0.0.9")
        #expect(HooksHandler.numericHost(SocketAddress(v6.address)) == "fe80::1")
        // With a host name, or none (`init(ipAddress:port:)` leaves it empty): formatted from the bytes.
        #expect(HooksHandler.numericHost(SocketAddress(v4.address, host: "example.com")) == "10.0.0.9")
        #expect(HooksHandler.numericHost(SocketAddress(v6.address, host: "cafe.example")) == "fe80::1")
        #expect(HooksHandler.numericHost(SocketAddress(v6.address, host: "bad.cafe")) == "fe80::1")
        guard case .v6(let mapped) = try SocketAddress(ipAddress: "::ffff:10.0.0.9", port: 1) else {
            Issue.record("not an IPv6 address")
            return
        }
        #expect(HooksHandler.numericHost(SocketAddress(mapped.address)) == "::ffff:10.0.0.9")
        #expect(HooksHandler.numericHost(try SocketAddress(ipAddress: "::1", port: 1)) == "::1")
        #expect(HooksHandler.numericHost(try SocketAddress(unixDomainSocketPath: "/tmp/s")) == nil)
    }

    @Test func otherMethodsGoToTheRouter() {
        for method in [HTTPMethod.DELETE, .HEAD, .OPTIONS, .PATCH] {
            #expect(HookIntake.route(method, target: "/hooks/channel_create") == nil)
        }
    }
}
