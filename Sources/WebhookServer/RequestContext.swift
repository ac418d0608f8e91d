public import Hummingbird
public import NIOCore

/// The request context of every route: Hummingbird's core storage, the peer's address and the connection.
public struct SwitchboardRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The connection, so an over-limit body can be cut off after its 413 (see `HooksController.readBody`).
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }
}
