public import Delivery
import EventStore
public import Foundation
public import KazooEvents
public import NIOCore
public import RuleEngine

/// Everything `switchboard serve` can be told, with the defaults a first run needs.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Pending connections the kernel queues (Kazoo opens one connection per event; a burst must not drop
    /// SYNs, which costs a 1 s retransmit). Capped by net.core.somaxconn.
    public var listenBacklog = 4096
    public var rulesDirectory = "rules"
    /// Lua workers (each a Lua state with every rule). Default: one per core.
    public var workers = ProcessInfo.processInfo.activeProcessorCount
    /// A shared secret: requests must carry it as `?token=` or as the last path segment
    /// (`/hooks/channel_create/SECRET`).
    public var token: String?
    /// HTTP Basic credentials, `user:password`.
    public var basicAuth: String?
    /// Only these source networks may send webhooks (empty: any).
    public var allowedSources: [CIDR] = []
    /// Internal networks rule HTTP may reach anyway (by default loopback, private, link-local are refused).
    public var allowHTTPTo: [CIDR] = []
    /// Where the journal (`switchboard.sqlite`) and rejected bodies are kept. Default `var`.
    public var dataDirectory = "var"
    /// Write every accepted event to the journal before answering 200, and run unfinished ones again on
    /// start. Default on.
    public var journal = true
    /// fsync every journal commit (survives power loss; slower). Default off: commits survive the process
    /// being killed, not the machine losing power.
    public var journalFsync = false
    /// `postgres://USER@HOST:PORT/DB`: keep everything durable in PostgreSQL, shared with other nodes. nil
    /// (the default): the SQLite journal in `dataDirectory`, one node.
    public var store: String?
    /// With a PostgreSQL store: seconds after its holder's last renewal before another node takes over the
    /// processing lease (events, forwards, ticks). Default 10.
    public var lease: Double = 10
    /// With a PostgreSQL store: this node's name in `switchboard nodes`. Empty: `hostname:port`.
    public var nodeName = ""
    public var decoding = DecodingLimits()
    public var rules = RuleConfiguration()
    /// Seconds a client may pause while it sends a request (its head or its body): past it a hooks request is
    /// answered 408 (what arrived of its body is kept with the rejected ones) and the connection closed. It
    /// also bounds how long a graceful shutdown waits for a client that stopped mid-request. Default 60, as
    /// nginx's `client_header_timeout` and `client_body_timeout`.
    public var readTimeout: Double = 60
    /// Seconds a kept-alive connection may wait for its next request before it is closed; 0: never. Default
    /// 75, as nginx's `keepalive_timeout`, longer than the 60 s its upstream connections are kept.
    public var idleTimeout: Double = 75
    /// How long in-flight rule runs may take to finish after SIGTERM/SIGINT. Default 10 s.
    public var shutdownGrace: Duration = .seconds(10)
    /// Rule HTTP calls in flight at once, overall and per rule.
    public var maxHTTPInFlight = 2000
    public var maxHTTPInFlightPerRule = 1000
    /// Accepted events whose rules are still running; past it the answer waits for room. Default 10,000.
    public var maxEventsInFlight = 10_000
    /// How forwards are delivered from the outbox (attempts, maximum age, backoff, per-destination limit).
    public var outbox = Outbox.Policy()
    /// Done events, delivered forwards and rejected bodies older than this many seconds are deleted
    /// (checked at start and every 10 minutes). Pending events and dead letters are kept. Default 7 days.
    public var retention: Double = 7 * 86_400
    /// Past this size of data, the oldest done events and delivered forwards are deleted too. Default 1 GiB.
    public var journalMaxBytes = 1 << 30
    /// Repeats of a channel event or notification within this many seconds are answered 200 and not run
    /// again. Default 0: off.
    public var dedupeWindow: Double = 0
    /// The event loops that accept and read the server's connections. Default (nil): NIO's shared loops
    /// (`MultiThreadedEventLoopGroup.singleton`, a thread per core). A test that holds up a server's loops gives
    /// that server loops of its own, so that no other server in the process is held up with them.
    public var eventLoopGroup: (any EventLoopGroup)?

    /// Where requests answered 4xx are kept: `<data dir>/rejected`.
    public var rejectedDirectory: URL {
        RejectedStore.directory(inDataDirectory: dataDirectory)
    }

    public init() {}
}
