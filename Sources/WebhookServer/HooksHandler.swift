import Delivery
import HTTPTypes
import JSONCore
import KazooEvents
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// The hooks routes on the connection's own event loop, in front of Hummingbird's router: a request for
/// `/hooks…` is read, answered and written here, with no task and no hop between threads when the journal is
/// off and the engine has room (and one hop back from the journal's writer when it is on). Every other request
/// goes on to the router unchanged, and so does any connection error (the router answers 400 and closes).
///
/// Answers leave in the order their requests came: a request that arrives while an earlier one is still being
/// answered (here, or by the router) waits in `held`, and the connection is not read further until it is taken.
///
/// A body over `maxBodyBytes` is read to its end and dropped, then answered 413 and the connection closed; one
/// still arriving past `lingerBytes` or `lingerTime` (like nginx's lingering close) is answered at once and
/// cut off a second later. Most HTTP clients send the whole body before they read any answer, so a server
/// that stopped reading would leave them blocked until their own timeout instead of reading the 413.
///
/// A hooks answer is written as the bytes it is, at NIO's response encoder's place in the pipeline (`wire`):
/// it does not pass the HTTPTypes conversion and the encoder, which cost about 28,000 instructions a request
/// (callgrind, `scripts/count_request_instructions.sh`: 212,747 → 184,272) for a status line, four headers and
/// a short JSON body. So that this works, the pipeline is:
/// NIO's encoder and request decoder, unpaired; this handler, which reads NIO's HTTP/1 request parts (the
/// router's are passed on as they came); then, once the router's side is open, the HTTPTypes codec, which
/// converts those for the router (about 10,000 instructions a request that the hooks routes no longer pay),
/// Hummingbird's connection state handler, and the router. So:
/// - The router's side of the connection (the codec, the state handler, a `NIOAsyncChannel` and its task, see
///   `Listener`) exists only once this handler has passed it something: `openRouter` makes it, just before the
///   first request or error for the router.
/// - The state handler sees only the router's requests. A graceful shutdown's `ChannelShouldQuiesceEvent`
///   (on which it closes an idle connection at once) is held here while a hooks request is open or held, and
///   passed on once the hooks answers are written (`quiesce`). Until the router's side is open, this handler
///   closes the connection on it instead.
/// - Until then, this handler also does what the router's side would do when the peer stops sending
///   (`ChannelEvent.inputClosed`, which is also how a peer's full close arrives): it closes the connection,
///   once the hooks answers owed on it are written.
/// - The encoder no longer hears of request methods from the decoder (NIO pairs them to leave the body out of
///   answers to HEAD and CONNECT), so this handler leaves those bodies out of the router's answers itself.
///
/// A peer that keeps the connection waiting is timed out (`pauseLimit`, looked at by the loop's `PauseWatch`):
/// one that pauses mid-request for `--read-timeout` (a hooks request is answered 408, the router's side is
/// closed), leaves an answer unread or an ending connection open for as long, or sends no new request for
/// `--idle-timeout`. While the server is the one that owes something (an answer, or room for requests held),
/// no limit runs.
final class HooksHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    static let lingerTime = TimeAmount.seconds(30)

    private enum State {
        /// Between requests.
        case idle
        /// Reading a hooks request's body (a GET's event is its query: its body is not kept).
        case reading(HookIntake.Head, body: [UInt8])
        /// Reading to the end of a request that is refused whatever its body: `read` bytes of it so far, until
        /// `lingerUntil` (as a body over the limit: past `lingerBytes` or that time, it is answered at once and
        /// cut off).
        case refused(HookIntake.Head, HookIntake.Answer, read: Int, lingerUntil: NIODeadline)
        /// Dropping the rest of a body over the limit: `read` bytes so far, until `lingerUntil`.
        case overLimit(HookIntake.Head, read: Int, lingerUntil: NIODeadline)
        /// Waiting for the answer (journal, engine); what arrives meanwhile is held.
        case answering
        /// Answered, and closing: whatever still arrives is dropped.
        case closing
        /// Passing a request's parts on to the router.
        case routing

        var isClosing: Bool {
            if case .closing = self { true } else { false }
        }
    }

    /// An answer the router owes, and what this handler changes in it on its way out.
    private struct OwedAnswer {
        /// HEAD or CONNECT: the answer keeps its head and loses its body.
        var bodiless = false
        /// An HTTP/1.0 request that asked to keep the connection open (`Connection: keep-alive`): the answer
        /// says it is kept, without which such a client takes the connection to be closing.
        var saysKeepAlive = false
    }

    /// A part or an error that arrived while an earlier request was being answered.
    private enum Held {
        case part(HTTPServerRequestPart)
        case error(any Error)
    }

    private let intake: HookIntake
    private let dates: HTTPDate
    /// `Server: …\r\n`, its value sanitized by HTTPTypes; empty without a server name.
    private let serverLine: [UInt8]
    /// NIO's response encoder's context: bytes written there go straight to the socket.
    private var wire: ChannelHandlerContext?
    /// `--max-body-bytes`.
    private let limit: Int
    private let lingerBytes: Int
    private var state = State.idle
    private var held = CircularBuffer<Held>()
    /// The answers owed by the router, in order.
    private var routerAnswers = CircularBuffer<OwedAnswer>()
    /// A `read` the pipeline asked for while requests were held: passed on once they are all taken.
    private var readHeld = false
    /// A graceful shutdown's quiesce event, held until the hooks request open or held is answered.
    private var quiesceHeld = false
    /// The end of the peer's input, held until the hooks request open or held is answered.
    private var inputClosedHeld = false
    /// Opens the router's side of the connection; `nil` once it is open.
    private var openRouter: ((any Channel) -> Void)?
    /// The peer's address as text, once read.
    private var peerAddress: String?? = .none
    /// `--read-timeout` and `--idle-timeout` (nil: never).
    private let readTimeout: TimeAmount
    private let idleTimeout: TimeAmount?
    /// Where the connection is watched for pauses, and its place in the watch's list.
    private let watch: PauseWatch?
    var watchIndex: Int?
    /// Since when the connection has waited on its peer: its last bytes, the last answer written, or the last
    /// read asked for after the router's side had stopped asking.
    private var waitingSince = NIODeadline.now()
    /// This handler's context while it is in the pipeline (for a timeout).
    private var context: ChannelHandlerContext?
    /// A read was asked for and has not completed: while none is, it is this side that is not reading (the
    /// router's side is full, or requests are held), and the peer's pause does not count.
    private var readAsked = false
    /// A part was read in the read under way.
    private var partInRead = false
    /// A request's head is on its way: the connection is new, or bytes that made no part arrived between
    /// requests. (Part of a head read together with the end of the request before it cannot be seen here:
    /// NIO's decoder keeps it. That connection counts as idle.)
    private var headArriving = true
    /// The request being passed to the router ends its connection: Hummingbird's request loop answers it,
    /// closes its sending side and waits for the peer to close.
    private var routingCloses = false
    /// The router's answers handed to the socket whose writing has not finished.
    private var answersUnwritten = 0
    /// The peer has closed its sending side.
    private var inputEnded = false

    /// `wire` is the context of the pipeline's `HTTPResponseEncoder`; `openRouter` adds the router's side at the
    /// end of the pipeline (synchronously, on the event loop).
    init(
        intake: HookIntake, dates: HTTPDate, serverName: String?, wire: ChannelHandlerContext, watch: PauseWatch?,
        openRouter: @escaping (any Channel) -> Void
    ) {
        self.intake = intake
        self.watch = watch
        readTimeout = intake.readTimeout
        idleTimeout = intake.idleTimeout
        self.dates = dates
        self.wire = wire
        self.openRouter = openRouter
        serverLine = serverName.map { Array("Server: \(HTTPField(name: .server, value: $0).value)\r\n".utf8) } ?? []
        limit = intake.configuration.decoding.maxBodyBytes
        let (eightTimes, overflow) = limit.multipliedReportingOverflow(by: 8)
        lingerBytes = max(64 << 20, overflow ? Int.max / 2 : eightTimes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        partInRead = true
        if case .head = part { headArriving = false }
        if held.isEmpty, canTake(part) {
            take(part, context: context)
        } else {
            held.append(.part(part))
        }
    }

    /// The peer sent something: a pause is measured from now. Bytes between requests that made no part are
    /// the start of a request's head (or blank lines).
    func channelReadComplete(context: ChannelHandlerContext) {
        // While the peer owes the reading of an answer, what it sends does not make up for it.
        if answersUnwritten == 0, !state.isClosing { waitingSince = .now() }
        readAsked = false
        if !partInRead {
            switch state {
            case .idle, .answering: headArriving = true
            default: break
            }
        }
        partInRead = false
        context.fireChannelReadComplete()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        watch?.add(self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The contexts would otherwise hold each other past the connection's end.
        wire = nil
        self.context = nil
        openRouter = nil
        watch?.remove(self)
    }

    /// What the connection waits for from its peer when it is timed out (a label of
    /// `switchboard_connections_timed_out_total`).
    enum Pause: String {
        /// The rest of a request (its head or body).
        case request
        /// A new request.
        case idle
        /// That it reads an answer written, or closes a connection that is ending.
        case answer
    }

    /// How long the peer may keep the connection waiting now:
    /// - `readTimeout` while it has not read an answer written, while the connection is ending (closing after
    ///   an answer, or its input ended) and nothing more is owed, and while a request is being read (or its head
    ///   is arriving);
    /// - `idleTimeout` between requests;
    /// - nil while this side owes something (an answer, the router's included) or is not reading (requests
    ///   held, the router's side full).
    private var pauseLimit: (limit: TimeAmount, pause: Pause)? {
        if answersUnwritten > 0 { return (readTimeout, .answer) }
        if state.isClosing || inputEnded {
            return hooksRequestOpen || !routerAnswers.isEmpty ? nil : (readTimeout, .answer)
        }
        guard readAsked else { return nil }
        switch state {
        case .reading, .refused, .overLimit, .routing: return (readTimeout, .request)
        case .answering, .closing: return nil
        case .idle:
            guard held.isEmpty, routerAnswers.isEmpty else { return nil }
            if headArriving { return (readTimeout, .request) }
            return idleTimeout.map { ($0, .idle) }
        }
    }

    /// Called by the loop's `PauseWatch`: times the connection out if its peer has kept it waiting past the
    /// limit by `now`, the loop's last turn at its sockets (what had arrived by then has been read). A hooks
    /// request is answered (408, or the refusal or 413 it was already getting) and the connection closed once
    /// that is written; what arrived of its body is kept with the rejected ones. The router's side cannot be
    /// answered from here (its request is under way), and a connection between requests owes no answer: those
    /// are closed.
    func checkPause(now: NIODeadline) {
        guard let context, let (limit, pause) = pauseLimit, now - waitingSince >= limit else { return }
        intake.timingOut(pause.rawValue, peer: peer(context))
        switch pause == .request ? state : .closing {
        case .reading(let head, let body):
            state = .answering
            respond(intake.timedOut(head, body: body), to: head, context: context)
        case .refused(let head, let answer, _, _):
            state = .answering
            respond(answer.closingConnection, to: head, context: context)
        case .overLimit(let head, _, _):
            state = .answering
            respond(intake.tooLarge(head), to: head, context: context)
        default:
            state = .closing
            held.removeAll()
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .inputClosed { inputEnded = true }
        if event is ChannelShouldQuiesceEvent {
            if hooksRequestOpen { quiesceHeld = true } else { quiesce(context: context) }
        } else if event as? ChannelEvent == .inputClosed, hooksRequestOpen {
            inputClosedHeld = true
        } else if event as? ChannelEvent == .inputClosed, openRouter != nil {
            // Nothing more can arrive, and nothing is owed: no router side waits for parts or writes answers.
            onceWritten(context: context) { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// A graceful shutdown's quiesce, with no hooks request open: once the hooks answers written have left
    /// (closing at once would drop one still waiting in the socket's buffer), the connection closes, or the
    /// router's side, when open, decides (its state handler closes an idle connection, and one busy with a
    /// request once its answer is written). A request read in the meantime is answered first.
    private func quiesce(context: ChannelHandlerContext) {
        onceWritten(context: context) { [self] in
            if hooksRequestOpen {
                quiesceHeld = true
            } else if openRouter != nil {
                context.close(promise: nil)
            } else {
                context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
        }
    }

    /// Passes the router a part or an error, opening its side of the connection first if need be.
    private func routerSide(_ context: ChannelHandlerContext) -> ChannelHandlerContext {
        if let open = openRouter {
            openRouter = nil
            open(context.channel)
        }
        return context
    }

    /// Runs `then` once what was written before has left (or failed to).
    private func onceWritten(context: ChannelHandlerContext, then: @escaping () -> Void) {
        guard let wire else { return then() }
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { _ in then() }
        wire.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: written)
    }

    /// The connection's peer address (`127.0.0.1`), the same for every request on it.
    private func peer(_ context: ChannelHandlerContext) -> String? {
        if let known = peerAddress { return known }
        let address = context.channel.remoteAddress.flatMap(Self.numericHost)
        peerAddress = .some(address)
        return address
    }

    /// An accepted connection's address as text: the `host` NIO wrote with `inet_ntop` when it accepted it
    /// (`SocketAddress.init(sockaddr_in)`), not `ipAddress`, which runs `inet_ntop` again (about 3,200
    /// instructions a connection, callgrind). An address whose `host` is not its family's numeric text (a host
    /// name, or nothing) is formatted.
    static func numericHost(_ address: SocketAddress) -> String? {
        switch address {
        case .v4(let v4): CIDR.parseAddress(v4.host)?.count == 4 ? v4.host : address.ipAddress
        case .v6(let v6):
            CIDR.parseAddress(v6.host)?.count == 16 && !v6.host.hasPrefix("[") ? v6.host : address.ipAddress
        case .unixDomainSocket: nil
        }
    }

    /// Whether a hooks request is being read or answered, or a request waits behind an answer.
    private var hooksRequestOpen: Bool {
        switch state {
        case .idle, .routing, .closing: !held.isEmpty
        case .reading, .refused, .overLimit, .answering: true
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if held.isEmpty, canTakeError {
            takeError(error, context: context)
        } else {
            held.append(.error(error))
        }
    }

    /// The router's answers pass here on their way out: once one is written, what waited behind it goes on.
    /// An answer to HEAD or CONNECT keeps its head (its `Content-Length` says what a GET would get) and loses
    /// its body, as NIO's paired encoder would do; its end is written as nothing, past the encoder, which
    /// would otherwise end a chunked body there. An answer to an HTTP/1.0 keep-alive request says so.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let owed = routerAnswers.first ?? OwedAnswer()
        let bodiless = owed.bodiless
        switch unwrapOutboundIn(data) {
        case .head(var head):
            // Unless the router's answer says otherwise itself (its 400 to a malformed request closes).
            if owed.saysKeepAlive, !head.headers.contains(name: "connection") {
                head.headers.add(name: "connection", value: "keep-alive")
                context.write(wrapOutboundOut(.head(head)), promise: tracking(promise, context))
            } else {
                context.write(data, promise: tracking(promise, context))
            }
        case .body:
            if bodiless { promise?.succeed() } else { context.write(data, promise: tracking(promise, context)) }
        case .end:
            if bodiless, let wire {
                wire.write(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: tracking(promise, context))
            } else {
                context.write(data, promise: tracking(promise, context))
            }
            guard !routerAnswers.isEmpty else { return }
            routerAnswers.removeFirst()
            guard routerAnswers.isEmpty else { return }
            if routingCloses, case .routing = state {
                // The router answered a request that ends the connection before its body ended: it reads no
                // more of it.
                close(afterRouter: context)
            }
            takeHeld(context: context)
        }
    }

    /// A promise for a write of the router's answer, which `pauseLimit` counts until the write is done: the
    /// peer's reading of the answer is then measured from each write's end (a slow reader of a long answer
    /// that keeps reading is not cut off, one that stops is).
    private func tracking(_ promise: EventLoopPromise<Void>?, _ context: ChannelHandlerContext)
        -> EventLoopPromise<Void>
    {
        let written = context.eventLoop.makePromise(of: Void.self)
        answersUnwritten += 1
        written.futureResult.assumeIsolated().whenComplete { [self] _ in
            answersUnwritten -= 1
            waitingSince = .now()
        }
        if let promise { written.futureResult.cascade(to: promise) }
        if answersUnwritten == 1 { waitingSince = .now() }
        return written
    }

    /// The router's side ends the connection (it has answered a request that closes it, or a malformed one):
    /// what arrives from now on is dropped, and the peer has `--read-timeout` to close.
    private func close(afterRouter context: ChannelHandlerContext) {
        state = .closing
        held.removeAll()
        waitingSince = .now()
    }

    /// Reading goes on while an answer is awaited, until something arrives behind it: a client that waits for
    /// its answer (nearly all do) sends nothing meanwhile, and stopping would cost two `epoll_ctl` calls per
    /// request (NIO drops its interest in the socket at the end of a read nobody asked to continue, and takes
    /// it again at the next `read`). A client that pipelines gets one read held, then no more until it is
    /// taken.
    func read(context: ChannelHandlerContext) {
        if held.isEmpty {
            askRead(context)
        } else {
            readHeld = true
        }
    }

    /// Asks for a read. Once the router's side is open it may have stopped asking for a while (its buffer
    /// full), and the peer's wait starts again from here; a hooks-only connection asks again as soon as a
    /// read completes, so that costs it no clock reading.
    private func askRead(_ context: ChannelHandlerContext) {
        if !readAsked {
            readAsked = true
            if openRouter == nil { waitingSince = .now() }
        }
        context.read()
    }

    /// Whether `part` can be taken now, or must wait for the answers before it.
    private func canTake(_ part: HTTPServerRequestPart) -> Bool {
        switch state {
        case .answering: return false
        case .idle:
            // A hooks request answered here must not overtake the router's answer to an earlier one.
            guard case .head(let request) = part, !routerAnswers.isEmpty else { return true }
            return HookIntake.route(request.method, target: HookIntake.path(ofTarget: request.uri)) == nil
        default: return true
        }
    }

    /// An error is the router's to answer (400, then it closes): not before the answers owed ahead of it.
    private var canTakeError: Bool {
        switch state {
        case .answering: false
        default: true
        }
    }

    private func take(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let request)):
            let target = HookIntake.path(ofTarget: request.uri)
            guard let route = HookIntake.route(request.method, target: target) else {
                routerAnswers.append(
                    OwedAnswer(
                        bodiless: request.method == .HEAD || request.method == .CONNECT,
                        saysKeepAlive: request.keepAliveMustBeSaid))
                state = .routing
                routingCloses = !request.isKeepAlive
                guard !request.isKeepAlive else { return routerSide(context).fireChannelRead(wrapInboundOut(part)) }
                // Hummingbird's request loop ends a connection only on exactly `Connection: close` (and it
                // does not see the request's version): an HTTP/1.0 request without keep-alive, or one that
                // spells it `Close` or lists it with other options, is passed on as that.
                var closing = request
                closing.headers.replaceOrAdd(name: "connection", value: "close")
                routerSide(context).fireChannelRead(wrapInboundOut(.head(closing)))
                return
            }
            let head = HookIntake.Head(request: request, route: route, target: target, peer: peer(context))
            let expectsContinue = request.headers.first(name: "expect")?.lowercased() == "100-continue"
            if let refusal = intake.refusal(head) {
                guard expectsContinue else {
                    return state = .refused(head, refusal, read: 0, lingerUntil: .now() + Self.lingerTime)
                }
                // The client waits for a 100 before it sends its body: it gets the refusal instead (RFC 9110
                // §10.1.1), and the connection closes a second later, as after a body over the limit.
                cutOff(refusal, to: head, context: context)
            } else {
                state = .reading(head, body: [])
                // curl sends `Expect: 100-continue` with a body over 1 KB and waits a second for this.
                if expectsContinue, let wire {
                    let line = context.channel.allocator.buffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")
                    wire.writeAndFlush(NIOAny(line), promise: nil)
                }
            }
        case (.routing, _):
            context.fireChannelRead(wrapInboundOut(part))
            guard case .end = part else { return }
            // After a request that ends the connection, what follows is not read by the router: it is dropped.
            if routingCloses { close(afterRouter: context) } else { state = .idle }
        case (.reading(let head, var body), .body(let chunk)):
            guard head.request.method != .GET else { return }
            state = .answering  // so that `body` is the array's only reference and grows in place
            let total = body.count + chunk.readableBytes
            if total > limit {
                state = .overLimit(head, read: total, lingerUntil: .now() + Self.lingerTime)
            } else {
                chunk.withUnsafeReadableBytes { body.append(contentsOf: $0) }
                state = .reading(head, body: body)
            }
        case (.reading(let head, let body), .end):
            state = .answering
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            intake.accept(head, body: body) { answer in
                if loop.inEventLoop {
                    bound.value.0.respond(answer, to: head, context: bound.value.1)
                } else {
                    loop.execute { bound.value.0.respond(answer, to: head, context: bound.value.1) }
                }
            }
        case (.refused(let head, let answer, let read, let lingerUntil), .body(let chunk)):
            let total = read + chunk.readableBytes
            if lingeredPast(dropped: total, until: lingerUntil) {
                cutOff(answer, to: head, context: context)
            } else {
                state = .refused(head, answer, read: total, lingerUntil: lingerUntil)
            }
        case (.refused(let head, let answer, _, _), .end):
            state = .answering
            respond(answer, to: head, context: context)
        case (.overLimit(let head, let read, let lingerUntil), .body(let chunk)):
            let total = read + chunk.readableBytes
            if lingeredPast(dropped: total - limit, until: lingerUntil) {
                cutOff(intake.tooLarge(head), to: head, context: context)
            } else {
                state = .overLimit(head, read: total, lingerUntil: lingerUntil)
            }
        case (.overLimit(let head, _, _), .end):
            state = .answering
            respond(intake.tooLarge(head), to: head, context: context)
        default:
            break  // a GET's body, or anything after the answer that closes
        }
    }

    /// Whether a body nobody reads has gone on past the linger cap: `dropped` bytes over `lingerBytes`, or
    /// past `until`.
    private func lingeredPast(dropped: Int, until: NIODeadline) -> Bool {
        dropped > lingerBytes || NIODeadline.now() > until
    }

    /// Answers a request whose body is not read (or not waited for) at once, with `Connection: close`, and
    /// hangs up a second later: what arrives meanwhile is dropped, and closing at once could reset the
    /// connection under the answer before the client has read it.
    private func cutOff(_ answer: HookIntake.Answer, to head: HookIntake.Head, context: ChannelHandlerContext) {
        state = .answering
        respond(answer.closingConnection, to: head, context: context, closeAfter: .seconds(1))
    }

    private func takeError(_ error: any Error, context: ChannelHandlerContext) {
        if openRouter != nil, !(error is HTTPParserError) {
            // The connection failed (reset, say): the router would only close it, so it is not opened for that.
            return context.close(promise: nil)
        }
        switch state {
        case .closing: return
        case .reading, .refused, .overLimit:
            // The hooks request ends unanswered here: the router answers the error, so it owes that answer.
            routerAnswers.append(OwedAnswer())
            state = .routing
        case .idle where error is HTTPParserError:
            // Between requests, the router answers a malformed one 400 after the answers it owes already. Until
            // it has, the connection waits on the router, not on its peer. (Were the wait the peer's, a router
            // task slower than `--read-timeout`, on a busy machine, would see its connection closed unanswered.)
            routerAnswers.append(OwedAnswer())
        default: break
        }
        routerSide(context).fireErrorCaught(error)
        // The router answers 400, closes its sending side and waits for the peer to close.
        if error is HTTPParserError { close(afterRouter: context) }
    }

    /// Writes the answer, then takes what waited behind it. It says `Connection: close` when the connection
    /// closes after it (the client asked, or the answer does), and `Connection: keep-alive` to an HTTP/1.0
    /// client that asked to keep it (HTTP/1.0 closes by default).
    private func respond(
        _ answer: HookIntake.Answer, to head: HookIntake.Head, context: ChannelHandlerContext,
        closeAfter delay: TimeAmount? = nil
    ) {
        if answer.status != .ok { intake.answered(answer.status, hookID: head.hookID) }
        let said = answer.headers[.connection]
        let closes = head.closes || said?.lowercased() == "close"
        let connection: StaticString? =
            said != nil ? nil : closes ? "close" : head.request.keepAliveMustBeSaid ? "keep-alive" : nil
        let bytes = encode(answer, connection: connection, allocator: context.channel.allocator)
        waitingSince = .now()
        guard closes else {
            wire?.writeAndFlush(NIOAny(bytes), promise: nil)
            state = .idle
            takeHeld(context: context)
            return
        }
        state = .closing
        held.removeAll()
        guard let written = wire?.writeAndFlush(NIOAny(bytes)) else { return context.close(promise: nil) }
        let loop = context.eventLoop.assumeIsolated()
        if let delay {
            loop.scheduleTask(in: delay) { context.close(promise: nil) }
        } else {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// The answer as HTTP/1.1: the status line, `Content-Type`, `Content-Length`, `Date`, `Server`,
    /// `Connection` when given, the answer's own headers, and its body as JSON.
    private func encode(_ answer: HookIntake.Answer, connection: StaticString?, allocator: ByteBufferAllocator)
        -> ByteBuffer
    {
        let body = answer.body
        // NIO's reason phrase, as in the router's answers ("Payload Too Large", where HTTPTypes says "Content").
        let reason = HTTPResponseStatus(statusCode: answer.status.code).reasonPhrase
        var buffer = allocator.buffer(capacity: 160 + reason.utf8.count + serverLine.count + body.count)
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(answer.status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(reason)
        buffer.writeStaticString("\r\nContent-Type: application/json\r\nContent-Length: ")
        buffer.writeString(String(body.count))
        buffer.writeStaticString("\r\nDate: ")
        buffer.writeString(dates.now)
        buffer.writeStaticString("\r\n")
        buffer.writeBytes(serverLine)
        if let connection {
            buffer.writeStaticString("Connection: ")
            buffer.writeStaticString(connection)
            buffer.writeStaticString("\r\n")
        }
        for field in answer.headers {
            buffer.writeString(field.name.rawName)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        buffer.writeBytes(body)
        return buffer
    }

    /// Takes what was held, in order, until one must wait again; then reads on if that was asked for, and
    /// passes on a quiesce event or the input's end that waited for the hooks requests to be answered.
    private func takeHeld(context: ChannelHandlerContext) {
        defer {
            if quiesceHeld, !hooksRequestOpen {
                quiesceHeld = false
                quiesce(context: context)
            }
            if inputClosedHeld, !hooksRequestOpen {
                // Once the answers written have left: the router's side, when open, closes the connection on
                // it, which would drop an answer still waiting to be written.
                inputClosedHeld = false
                onceWritten(context: context) { [self] in
                    userInboundEventTriggered(context: context, event: ChannelEvent.inputClosed)
                }
            }
        }
        guard !held.isEmpty else { return readOn(context: context) }
        // Parts passed on from here arrive outside a read: the router's side (NIOAsyncChannel) hands what it
        // was given to its reader at the end of a read, so that end is passed on too.
        defer { context.fireChannelReadComplete() }
        while let first = held.first {
            switch first {
            case .part(let part):
                guard canTake(part) else { return }
                held.removeFirst()
                take(part, context: context)
            case .error(let error):
                guard canTakeError else { return }
                held.removeFirst()
                takeError(error, context: context)
            }
        }
        readOn(context: context)
    }

    private func readOn(context: ChannelHandlerContext) {
        if readHeld, held.isEmpty {
            readHeld = false
            askRead(context)
        }
    }
}

extension HTTPRequestHead {
    /// An HTTP/1.0 request that asked to keep its connection (`Connection: keep-alive`): its answer must say
    /// so too, or the client takes the connection to be closing (HTTP/1.0 closes by default).
    var keepAliveMustBeSaid: Bool { version == .http1_0 && isKeepAlive }
}
