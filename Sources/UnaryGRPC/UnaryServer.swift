import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// One unary call as the server received it. The method answers exactly once through
/// `responder`, from any thread.
public struct UnaryCall: Sendable {
    /// `/package.Service/Method`.
    public let path: String
    /// The request headers (custom metadata included, e.g. `synod-request-id`).
    public let metadata: HPACKHeaders
    /// The request message, still encoded.
    public let payload: [UInt8]
    /// The client's `grpc-timeout`, if it sent a well-formed one.
    public let timeout: Duration?
    public let responder: UnaryResponder
}

/// A method: decodes `payload`, does the work, answers through the responder.
public typealias UnaryMethod = @Sendable (UnaryCall) -> Void

/// Answers one call. The response closure runs on the connection's event loop, so building
/// and encoding the response message costs the caller's thread (e.g. the replica loop)
/// nothing; responses that arrive together leave in one flush.
public struct UnaryResponder: Sendable {
    let outbox: ConnectionOutbox
    let streamID: HTTP2StreamID

    public func respond(_ response: @escaping @Sendable () -> Result<[UInt8], GRPCStatus>) {
        outbox.post(streamID, response)
    }

    public func fail(_ status: GRPCStatus) {
        respond { .failure(status) }
    }
}

/// A unary-only gRPC server straight on swift-nio-http2's frame layer: no per-stream child
/// channels, no async sequences, no task per call. It speaks the same wire format as any
/// gRPC server (etcdctl and grpc-go clients use it unchanged) at a fraction of the CPU per
/// call (docs/BENCHMARKS.md). Streaming methods are not supported: a call to an unknown
/// path is answered with UNIMPLEMENTED.
public final class UnaryServer: Sendable {
    public struct Options: Sendable {
        /// Largest request message; larger ones get RESOURCE_EXHAUSTED and the stream is reset.
        public var requestBytesMax = 8 << 20
        /// Bound on the request bytes one connection may hold while bodies are still
        /// arriving. A stream whose data would exceed it is answered RESOURCE_EXHAUSTED at
        /// once (never by withholding flow-control credit, which could deadlock streams
        /// that all wait for more), so a client cannot make the server buffer
        /// `concurrentStreamsMax × requestBytesMax`.
        public var connectionBufferedBytesMax = 64 << 20
        /// SETTINGS_MAX_CONCURRENT_STREAMS: etcd clients multiplex every call on one connection.
        public var concurrentStreamsMax = 4096
        /// Bound on a graceful shutdown's wait for calls in flight.
        public var drainTimeout: Duration = .seconds(5)

        public init() {}
    }

    let listener: Channel
    let connections: NIOLockedValueBox<[ObjectIdentifier: Channel]>
    let options: Options
    let stopped: EventLoopPromise<Void>

    /// The bound address (useful with port 0).
    public var localAddress: SocketAddress? { listener.localAddress }

    private init(listener: Channel, connections: NIOLockedValueBox<[ObjectIdentifier: Channel]>, options: Options) {
        self.listener = listener
        self.connections = connections
        self.options = options
        self.stopped = listener.eventLoop.makePromise()
    }

    /// Binds and starts serving `methods` (keyed by path).
    public static func bind(
        host: String, port: Int, group: EventLoopGroup, methods: [String: UnaryMethod], options: Options = Options()
    ) async throws -> UnaryServer {
        let connections = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
        let concurrentStreamsMax = options.concurrentStreamsMax
        let requestBytesMax = options.requestBytesMax
        let connectionBufferedBytesMax = max(options.connectionBufferedBytesMax, options.requestBytesMax)
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                connections.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
                channel.closeFuture.whenComplete { _ in
                    _ = connections.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOHTTP2Handler.unaryGRPC(mode: .server, concurrentStreamsMax: concurrentStreamsMax))
                    try sync.addHandler(
                        UnaryServerHandler(
                            methods: methods, requestBytesMax: requestBytesMax,
                            connectionBufferedBytesMax: connectionBufferedBytesMax,
                            outbox: ConnectionOutbox(eventLoop: channel.eventLoop)))
                }
            }
            .bind(host: host, port: port).get()
        return UnaryServer(listener: listener, connections: connections, options: options)
    }

    /// Waits until `beginGracefulShutdown` finished (or the listener failed).
    public func run() async throws {
        listener.closeFuture.whenFailure { self.stopped.fail($0) }
        try await stopped.futureResult.get()
    }

    /// Stops accepting connections, sends GOAWAY on every connection, lets the calls in
    /// flight finish (up to `drainTimeout`), then closes what is left.
    public func beginGracefulShutdown() {
        let eventLoop = listener.eventLoop
        listener.close(promise: nil)
        let open = connections.withLockedValue { Array($0.values) }
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(UnaryServerHandler.Drain()) }
        let closed = EventLoopFuture.andAllComplete(open.map(\.closeFuture), on: eventLoop)
        let timeout = eventLoop.scheduleTask(in: .nanoseconds(Int64(options.drainTimeout.components.seconds * 1_000_000_000))) {
            for channel in open { channel.close(promise: nil) }
        }
        closed.whenComplete { _ in
            timeout.cancel()
            self.stopped.succeed(())
        }
    }

    /// Closes at once, failing nothing gracefully (tests).
    public func close() async {
        listener.close(promise: nil)
        for channel in connections.withLockedValue({ Array($0.values) }) { try? await channel.close() }
        stopped.succeed(())
    }
}

/// Responses posted from other threads for one connection; drained on its event loop in
/// one pass and one flush.
final class ConnectionOutbox: @unchecked Sendable {
    typealias Response = @Sendable () -> Result<[UInt8], GRPCStatus>
    let eventLoop: EventLoop
    private let lock = NIOLock()
    // Guarded by `lock`.
    private var pending: [(HTTP2StreamID, Response)] = []
    private var drainScheduled = false
    /// Set and read on `eventLoop` only.
    nonisolated(unsafe) weak var handler: UnaryServerHandler?

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    func post(_ streamID: HTTP2StreamID, _ response: @escaping Response) {
        let schedule = lock.withLock {
            pending.append((streamID, response))
            defer { drainScheduled = true }
            return !drainScheduled
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let responses = lock.withLock {
            defer {
                pending.removeAll(keepingCapacity: true)
                drainScheduled = false
            }
            return pending
        }
        handler?.write(responses)
    }
}

/// The connection's gRPC layer on HTTP/2 frames: collects each stream's headers and body,
/// dispatches the call, writes the response.
final class UnaryServerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Asks the connection to finish its calls and close (graceful shutdown).
    struct Drain: Sendable {}

    struct Stream {
        var headers: HPACKHeaders
        var body: ByteBuffer
        var unacknowledgedBytes = 0
        /// The client sent END_STREAM.
        var ended = false
        /// Already answered (an error before the body ended); the rest of the body is dropped.
        var answered = false
    }

    let methods: [String: UnaryMethod]
    let requestBytesMax: Int
    let connectionBufferedBytesMax: Int
    /// Sum of the bodies in `streams`. Invariant: ≤ connectionBufferedBytesMax.
    private var bufferedBytes = 0
    let outbox: ConnectionOutbox
    private var streams: [HTTP2StreamID: Stream] = [:]
    private var context: ChannelHandlerContext?
    private var flushPending = false
    private var draining = false
    private var closeScheduled = false
    private var lastStreamID: HTTP2StreamID = .rootStream

    init(
        methods: [String: UnaryMethod], requestBytesMax: Int, connectionBufferedBytesMax: Int,
        outbox: ConnectionOutbox
    ) {
        self.methods = methods
        self.requestBytesMax = requestBytesMax
        self.connectionBufferedBytesMax = connectionBufferedBytesMax
        self.outbox = outbox
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbox.handler = self
        if context.channel.isActive { openConnectionWindow(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        outbox.handler = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        openConnectionWindow(context: context)
        context.fireChannelActive()
    }

    private func openConnectionWindow(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(InboundCredit.openingUpdate), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let streamID = frame.streamID
        switch frame.payload {
        case .headers(let headers):
            if streams[streamID] == nil {
                guard !draining else {
                    write(HTTP2Frame(streamID: streamID, payload: .rstStream(.refusedStream)), context: context)
                    return
                }
                streams[streamID] = Stream(headers: headers.headers, body: ByteBuffer())
                if streamID > lastStreamID { lastStreamID = streamID }
            }
            if headers.endStream { end(streamID) }
        case .data(let data):
            let bytes: ByteBuffer
            switch data.data {
            case .byteBuffer(let buffer): bytes = buffer
            case .fileRegion: bytes = ByteBuffer()
            }
            let flowControlled = bytes.readableBytes + (data.paddingBytes ?? 0)
            var streamUnacknowledged = 0
            if streams[streamID] != nil {
                if !streams[streamID]!.answered {
                    if streams[streamID]!.body.readableBytes + bytes.readableBytes > requestBytesMax + GRPCWire.prefixBytes {
                        dropBody(streamID)
                        answerEarly(
                            streamID,
                            GRPCStatus(
                                code: GRPCStatus.resourceExhausted,
                                message: "request message larger than the server's limit of \(requestBytesMax) bytes"))
                    } else if bufferedBytes + bytes.readableBytes > connectionBufferedBytesMax {
                        dropBody(streamID)
                        answerEarly(
                            streamID,
                            GRPCStatus(
                                code: GRPCStatus.resourceExhausted,
                                message:
                                    "this connection is sending more than \(connectionBufferedBytesMax) bytes of requests at once; retry"
                            ))
                    } else {
                        streams[streamID]!.body.writeImmutableBuffer(bytes)
                        bufferedBytes += bytes.readableBytes
                    }
                }
                streamUnacknowledged = streams[streamID]?.unacknowledgedBytes ?? 0
            }
            if streams[streamID] != nil {
                let update = InboundCredit.received(
                    flowControlled, on: streamID, streamUnacknowledged: &streamUnacknowledged,
                    streamOpen: !data.endStream)
                streams[streamID]!.unacknowledgedBytes = streamUnacknowledged
                if let update { write(update, context: context) }
            }
            if data.endStream { end(streamID) }
        case .rstStream:
            removeStream(streamID)
            closeIfDrained(context: context)
        default:
            // SETTINGS, PING, GOAWAY, WINDOW_UPDATE, PRIORITY: NIOHTTP2Handler handled them.
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let window = event as? NIOHTTP2WindowUpdatedEvent {
            if let update = InboundCredit.connectionUpdate(window) { write(update, context: context) }
        } else if let closed = event as? StreamClosedEvent {
            removeStream(closed.streamID)
            closeIfDrained(context: context)
        } else if event is Drain {
            draining = true
            context.writeAndFlush(
                wrapOutboundOut(
                    HTTP2Frame(
                        streamID: .rootStream,
                        payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))),
                promise: nil)
            closeIfDrained(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // NIOHTTP2Handler already answered protocol errors (GOAWAY or RST_STREAM); a
        // connection-level error leaves nothing worth keeping.
        if error is NIOHTTP2Errors.StreamClosed || error is NIOHTTP2Errors.NoSuchStream { return }
        context.close(promise: nil)
    }

    /// The client finished the request: check it and hand it to its method.
    private func end(_ streamID: HTTP2StreamID) {
        guard let body = streams[streamID]?.body else { return }
        dropBody(streamID)
        streams[streamID]!.ended = true
        let stream = streams[streamID]!
        guard !stream.answered else { return }
        let responder = UnaryResponder(outbox: outbox, streamID: streamID)
        let headers = stream.headers
        guard headers.first(name: ":method") == "POST" else {
            return responder.fail(GRPCStatus(code: GRPCStatus.unimplemented, message: "gRPC requires POST"))
        }
        guard let contentType = headers.first(name: "content-type"), contentType.hasPrefix(GRPCWire.contentType) else {
            return responder.fail(
                GRPCStatus(code: GRPCStatus.invalidArgument, message: "content-type is not application/grpc"))
        }
        let path = headers.first(name: ":path") ?? ""
        guard let method = methods[path] else {
            return responder.fail(GRPCStatus(code: GRPCStatus.unimplemented, message: "unknown method \(path)"))
        }
        switch GRPCWire.unframe(body) {
        case .failure(let status):
            responder.fail(status)
        case .success(let payload):
            let timeout = headers.first(name: "grpc-timeout").flatMap(GRPCWire.timeout)
            method(UnaryCall(path: path, metadata: headers, payload: payload, timeout: timeout, responder: responder))
        }
    }

    private func dropBody(_ streamID: HTTP2StreamID) {
        guard let bytes = streams[streamID]?.body.readableBytes else { return }
        bufferedBytes -= bytes
        streams[streamID]!.body = ByteBuffer()
        assert(bufferedBytes >= 0, "buffered request bytes went negative")
    }

    private func removeStream(_ streamID: HTTP2StreamID) {
        dropBody(streamID)
        streams.removeValue(forKey: streamID)
    }

    /// Answers before the body ended (e.g. too large): the answer goes out and the stream is
    /// reset, so the client stops sending.
    private func answerEarly(_ streamID: HTTP2StreamID, _ status: GRPCStatus) {
        streams[streamID]?.answered = true
        UnaryResponder(outbox: outbox, streamID: streamID).fail(status)
    }

    /// Writes responses posted by `ConnectionOutbox`, then flushes once.
    func write(_ responses: [(HTTP2StreamID, ConnectionOutbox.Response)]) {
        guard let context else { return }
        for (streamID, response) in responses {
            guard let stream = streams[streamID] else { continue }  // reset or closed meanwhile
            switch response() {
            case .success(let payload):
                write(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: Self.responseHeaders))), context: context)
                let message = GRPCWire.frame(payload, allocator: context.channel.allocator)
                write(HTTP2Frame(streamID: streamID, payload: .data(.init(data: .byteBuffer(message)))), context: context)
                write(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: Self.okTrailers, endStream: true))), context: context)
            case .failure(let status):
                var headers = Self.responseHeaders
                headers.add(name: "grpc-status", value: String(status.code))
                headers.add(name: "grpc-message", value: GRPCMessageEncoding.encode(status.message))
                write(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers, endStream: true))), context: context)
            }
            if !stream.ended {
                write(HTTP2Frame(streamID: streamID, payload: .rstStream(.noError)), context: context)
            }
            removeStream(streamID)
        }
        flushPending = false
        context.flush()
        closeIfDrained(context: context)
    }

    private func write(_ frame: HTTP2Frame, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(frame), promise: nil)
        flushPending = true
    }

    /// Closes a draining connection once its last call was answered — on the next
    /// event-loop pass: this can run inside NIOHTTP2Handler's flush (a stream-closed event),
    /// before the answer's frames reached the socket, and closing then would drop them.
    private func closeIfDrained(context: ChannelHandlerContext) {
        guard draining && streams.isEmpty && !closeScheduled else { return }
        closeScheduled = true
        let channel = context.channel
        context.eventLoop.execute { channel.close(promise: nil) }
    }

    static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": GRPCWire.contentType]
    static let okTrailers: HPACKHeaders = ["grpc-status": "0"]
}
