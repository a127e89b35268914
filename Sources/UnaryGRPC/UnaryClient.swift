import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import SynodTLS

/// A unary-only gRPC client connection on `HTTP2Codec`'s frames, for load generation: a
/// call is a HEADERS and a DATA frame out and a completion callback in, on the connection's
/// event loop, with no task, stream channel or async sequence per call.
/// Speaks standard gRPC (it drives etcd as well as Synod).
public final class UnaryClientConnection: Sendable {
    public typealias Completion = @Sendable (Result<[UInt8], GRPCStatus>) -> Void

    public let eventLoop: EventLoop
    let channel: Channel
    let authority: String
    let handler: NIOLoopBound<UnaryClientHandler>

    private init(channel: Channel, authority: String, handler: NIOLoopBound<UnaryClientHandler>) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.authority = authority
        self.handler = handler
    }

    /// Connects: HTTP/2 with prior knowledge in plaintext, or over TLS with `tls` (a client
    /// context offering `h2`, e.g. `ClientTLSFiles.context()`), in which case it returns once
    /// the handshake completed and throws a `TLSRefusal` saying why when it did not. The server's
    /// certificate must name `host` (its IP address, or its DNS name, sent as SNI).
    public static func connect(
        host: String, port: Int, group: EventLoopGroup, tls: NIOSSLContext? = nil
    ) async throws -> UnaryClientConnection {
        let serverHostname = (try? SocketAddress(ipAddress: host, port: port)) == nil ? host : nil
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                        try sync.addHandler(TLSHandshakeObserver())
                    }
                    try sync.addHandler(HTTP2Codec(role: .client, limits: HTTP2Codec.Limits(concurrentStreamsMax: 0)))
                    try sync.addHandler(UnaryClientHandler(scheme: tls == nil ? "http" : "https"))
                }
            }
            .connect(host: host, port: port).get()
        if tls != nil {
            do {
                _ = try await TLSHandshakeObserver.handshake(of: channel).get()
            } catch {
                try? await channel.close()
                throw error
            }
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: UnaryClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return UnaryClientConnection(channel: channel, authority: "\(host):\(port)", handler: handler)
    }

    /// Starts a call. `completion` runs on `eventLoop`, exactly once. From the event loop
    /// itself (e.g. inside a completion) the call is written at once and flushed with the
    /// rest of the read burst.
    public func call(
        path: String, message: [UInt8], metadata: [(String, String)] = [], timeout: Duration,
        completion: @escaping Completion
    ) {
        let request = UnaryClientHandler.Request(
            path: path, authority: authority, message: message, metadata: metadata, timeout: timeout,
            completion: completion)
        if eventLoop.inEventLoop {
            send(request)
        } else {
            eventLoop.execute { self.send(request) }
        }
    }

    private func send(_ request: UnaryClientHandler.Request) {
        handler.value.start(request)
    }

    /// The call as async/await, for the few calls outside the measured loop.
    public func call(path: String, message: [UInt8], metadata: [(String, String)] = [], timeout: Duration) async throws -> [UInt8] {
        let result = await withCheckedContinuation { continuation in
            call(path: path, message: message, metadata: metadata, timeout: timeout) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    public func close() async {
        try? await channel.close()
    }
}

final class UnaryClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    struct Request: Sendable {
        var path: String
        var authority: String
        var message: [UInt8]
        var metadata: [(String, String)]
        var timeout: Duration
        var completion: UnaryClientConnection.Completion
    }

    struct Call {
        var completion: UnaryClientConnection.Completion
        var deadline: NIODeadline
        var body = ByteBuffer()
        var unacknowledgedBytes = 0
        var status: GRPCStatus?
        var httpStatus: String?
    }

    /// `:scheme`: `https` over TLS.
    private let scheme: String
    private var calls: [HTTP2StreamID: Call] = [:]
    private var nextStreamID = HTTP2StreamID(1)
    private var context: ChannelHandlerContext?
    private var reading = false
    private var flushPending = false
    private var closedStatus: GRPCStatus?
    private var sweep: RepeatedTask?
    /// Deadlines are checked this often, instead of one timer per call.
    static let sweepInterval = TimeAmount.milliseconds(50)

    init(scheme: String = "http") {
        self.scheme = scheme
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { activate(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context: context)
        context.fireChannelActive()
    }

    private func activate(context: ChannelHandlerContext) {
        guard sweep == nil else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweep = context.eventLoop.scheduleRepeatedTask(initialDelay: Self.sweepInterval, delay: Self.sweepInterval) { _ in
            loopBound.value.expire()
        }
    }

    func start(_ request: Request) {
        guard let context, closedStatus == nil else {
            return request.completion(
                .failure(closedStatus ?? GRPCStatus(code: GRPCStatus.unavailable, message: "connection closed")))
        }
        guard nextStreamID < HTTP2StreamID.maxID else {
            return request.completion(
                .failure(GRPCStatus(code: GRPCStatus.unavailable, message: "connection ran out of stream ids")))
        }
        let streamID = nextStreamID
        nextStreamID = HTTP2StreamID(Int32(nextStreamID) + 2)
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": scheme, ":path": request.path, ":authority": request.authority,
            "content-type": GRPCWire.contentType, "te": "trailers",
            "grpc-timeout": GRPCWire.timeoutHeader(request.timeout),
        ]
        for (name, value) in request.metadata { headers.add(name: name, value: value) }
        calls[streamID] = Call(completion: request.completion, deadline: .now() + .nanoseconds(Int64(request.timeout.components.seconds * 1_000_000_000 + request.timeout.components.attoseconds / 1_000_000_000)))
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers)))), promise: nil)
        let message = GRPCWire.frame(request.message, allocator: context.channel.allocator)
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(.init(data: .byteBuffer(message), endStream: true)))),
            promise: nil)
        if reading {
            flushPending = true
        } else {
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        let frame = unwrapInboundIn(data)
        let streamID = frame.streamID
        switch frame.payload {
        case .headers(let headers):
            guard calls[streamID] != nil else { return }
            if calls[streamID]!.httpStatus == nil, let status = headers.headers.first(name: ":status") {
                calls[streamID]!.httpStatus = status
            }
            if let code = headers.headers.first(name: "grpc-status") {
                let message = headers.headers.first(name: "grpc-message").map(GRPCMessageEncoding.decode) ?? ""
                calls[streamID]!.status = GRPCStatus(code: Int(code).flatMap { (0...16).contains($0) ? $0 : nil } ?? GRPCStatus.unknown, message: message)
            }
            if headers.endStream { finish(streamID) }
        case .data(let data):
            var bytes = ByteBuffer()
            if case .byteBuffer(let buffer) = data.data { bytes = buffer }
            if calls[streamID] != nil {
                var streamUnacknowledged = calls[streamID]!.unacknowledgedBytes
                calls[streamID]!.body.writeImmutableBuffer(bytes)
                let update = InboundCredit.received(
                    bytes.readableBytes + (data.paddingBytes ?? 0), on: streamID,
                    streamUnacknowledged: &streamUnacknowledged, streamOpen: !data.endStream)
                calls[streamID]!.unacknowledgedBytes = streamUnacknowledged
                if let update {
                    context.write(wrapOutboundOut(update), promise: nil)
                    flushPending = true
                }
            }
            if data.endStream { finish(streamID) }
        case .rstStream(let code):
            if let call = calls.removeValue(forKey: streamID) {
                call.completion(.failure(GRPCStatus(code: GRPCStatus.unavailable, message: "stream reset by the server (\(code))")))
            }
        case .goAway(let lastStreamID, let code, _):
            closedStatus = GRPCStatus(code: GRPCStatus.unavailable, message: "server is going away (\(code))")
            for streamID in calls.keys where streamID > lastStreamID {
                calls.removeValue(forKey: streamID)?.completion(.failure(closedStatus!))
            }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    private func finish(_ streamID: HTTP2StreamID) {
        guard let call = calls.removeValue(forKey: streamID) else { return }
        if call.httpStatus != "200" {
            return call.completion(
                .failure(GRPCStatus(code: GRPCStatus.unknown, message: "HTTP status \(call.httpStatus ?? "missing")")))
        }
        guard let status = call.status else {
            return call.completion(.failure(GRPCStatus(code: GRPCStatus.internalError, message: "response without grpc-status")))
        }
        guard status.code == GRPCStatus.ok else { return call.completion(.failure(status)) }
        call.completion(GRPCWire.unframe(call.body))
    }

    private func expire() {
        guard let context else { return }
        let now = NIODeadline.now()
        var expired: [HTTP2StreamID] = []
        for (streamID, call) in calls where call.deadline <= now { expired.append(streamID) }
        for streamID in expired {
            guard let call = calls.removeValue(forKey: streamID) else { continue }
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(.cancel))), promise: nil)
            call.completion(.failure(GRPCStatus(code: GRPCStatus.deadlineExceeded, message: "deadline exceeded")))
        }
        if !expired.isEmpty { context.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(GRPCStatus(code: GRPCStatus.unavailable, message: "connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(GRPCStatus(code: GRPCStatus.unavailable, message: "connection error: \(error)"))
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(GRPCStatus(code: GRPCStatus.unavailable, message: "connection closed"))
        self.context = nil
    }

    private func failAll(_ status: GRPCStatus) {
        sweep?.cancel()
        if closedStatus == nil { closedStatus = status }
        let pending = calls
        calls.removeAll()
        for (_, call) in pending { call.completion(.failure(status)) }
    }
}
