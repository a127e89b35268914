import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import SynodTLS

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
    /// The common name of the client's verified TLS certificate, when the connection has one.
    public let clientCertificateCommonName: String?
}

/// A method: decodes `payload`, does the work, answers through the responder.
public typealias UnaryMethod = @Sendable (UnaryCall) -> Void

/// Answers one call. The response closure runs on the connection's event loop, so building
/// and encoding the response message costs the caller's thread (e.g. the replica loop)
/// nothing; responses that arrive together leave in one flush.
public struct UnaryResponder: Sendable {
    let outbox: ConnectionOutbox
    let streamID: HTTP2StreamID
    /// Told every answer when it is built, on the connection's event loop
    /// (`UnaryCall.observingAnswer`, for metrics); nil on the hot path.
    var observer: (@Sendable (Result<[UInt8], GRPCStatus>) -> Void)? = nil

    public func respond(_ response: @escaping @Sendable () -> Result<[UInt8], GRPCStatus>) {
        guard let observer else { return outbox.post(streamID, response) }
        outbox.post(streamID) {
            let result = response()
            observer(result)
            return result
        }
    }

    public func fail(_ status: GRPCStatus) {
        respond { .failure(status) }
    }
}

/// A gRPC server straight on swift-nio-http2's frame layer: no per-stream child channels,
/// no async sequences, no task per call. It speaks the same wire format as any gRPC server
/// (etcdctl and grpc-go clients use it unchanged) at a fraction of the CPU per call
/// (docs/BENCHMARKS.md). Unary methods are the fast path; streaming methods (`StreamingCall`)
/// get each message as it arrives and a bounded outbound queue. A call to an unknown path
/// is answered UNIMPLEMENTED as soon as its headers arrive.
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
        /// Open client connections at most; a connection beyond it is closed at once (each
        /// may buffer `connectionBufferedBytesMax`, so this bounds the server's memory too).
        public var connectionsMax = 1024
        /// Bound on a graceful shutdown's wait for calls in flight.
        public var drainTimeout: Duration = .seconds(5)
        /// Bounds of each streaming call's outbound queue.
        public var streamingLimits = StreamingLimits()
        /// Bounds of the HTTP/1.1 side.
        public var httpLimits = HTTPLimits()
        /// TLS on every connection; nil: plaintext.
        public var tls: TLS?
        /// Told (on the event loop) of each connection ended for breaking HTTP/2: the remote
        /// address and what was wrong (the client gets the same words in GOAWAY's debug data).
        public var onProtocolError: @Sendable (_ remote: String, _ reason: String) -> Void = { _, _ in }

        public init() {}
    }

    /// TLS for the server's connections. gRPC and HTTP/1.1 are still told apart by the first
    /// bytes after the handshake; offer `h2` by ALPN (`ServerTLSFiles.serverContext`), which
    /// gRPC clients require. With client-certificate auth, the verified certificate's common
    /// name reaches every call (`UnaryCall.clientCertificateCommonName`).
    public struct TLS: Sendable {
        public var context: NIOSSLContext
        /// Told (on the event loop) of each connection refused at the handshake: the remote
        /// address and why, e.g. a client without a certificate signed by the trusted CA.
        public var onRefusal: @Sendable (_ remote: String, _ reason: String) -> Void

        public init(context: NIOSSLContext, onRefusal: @escaping @Sendable (String, String) -> Void = { _, _ in }) {
            self.context = context
            self.onRefusal = onRefusal
        }
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

    /// Binds and starts serving `methods` and `streamingMethods` (keyed by path; a path
    /// should be in one of them only, unary wins) over HTTP/2, and `http` for HTTP/1.1
    /// requests on the same port (told apart by the HTTP/2 client preface); without `http`,
    /// HTTP/1.1 requests get 404.
    public static func bind(
        host: String, port: Int, group: EventLoopGroup, methods: [String: UnaryMethod],
        streamingMethods: [String: StreamingMethod] = [:], http: HTTPHandler? = nil, options: Options = Options()
    ) async throws -> UnaryServer {
        let connections = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
        let concurrentStreamsMax = options.concurrentStreamsMax
        let connectionsMax = max(1, options.connectionsMax)
        let streamingLimits = options.streamingLimits
        precondition(streamingLimits.queuedMessagesMax > 0, "streamingLimits.queuedMessagesMax must be positive")
        precondition(streamingLimits.queuedBytesMax > 0, "streamingLimits.queuedBytesMax must be positive")
        precondition(streamingLimits.inFlightBytesMax > 0, "streamingLimits.inFlightBytesMax must be positive")
        precondition(options.httpLimits.streamQueuedBytesMax > 0, "httpLimits.streamQueuedBytesMax must be positive")
        let httpLimits = options.httpLimits
        let requestBytesMax = options.requestBytesMax
        let connectionBufferedBytesMax = max(options.connectionBufferedBytesMax, options.requestBytesMax)
        let tls = options.tls
        let onProtocolError = options.onProtocolError
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let admitted = connections.withLockedValue { open -> Bool in
                    guard open.count < connectionsMax else { return false }
                    open[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard admitted else {
                    // Over the bound: refuse the connection rather than risk the replica.
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in
                    _ = connections.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try Self.addTLS(tls, to: channel) }
                    let detector = ProtocolDetector(
                        http2: { sync in
                            try sync.addHandler(
                                HTTP2Codec(
                                    limits: HTTP2Codec.Limits(concurrentStreamsMax: concurrentStreamsMax),
                                    onProtocolError: { reason in onProtocolError(Self.remoteDescription(channel), reason) }))
                            try sync.addHandler(
                                UnaryServerHandler(
                                    methods: methods, streamingMethods: streamingMethods, streamingLimits: streamingLimits,
                                    requestBytesMax: requestBytesMax, connectionBufferedBytesMax: connectionBufferedBytesMax,
                                    outbox: ConnectionOutbox(eventLoop: channel.eventLoop),
                                    clientCertificateCommonName: Self.clientCommonName(sync)))
                        },
                        http1: { sync in
                            try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                            try sync.addHandler(HTTP1ServerHandler(application: http, limits: httpLimits))
                        })
                    try channel.pipeline.syncOperations.addHandler(detector)
                }
            }
            .bind(host: host, port: port).get()
        return UnaryServer(listener: listener, connections: connections, options: options)
    }

    /// The TLS handler and its observer, ahead of everything else on the connection.
    private static func addTLS(_ tls: TLS, to channel: Channel) throws {
        let remote = remoteDescription(channel)
        let onRefusal = tls.onRefusal
        try channel.pipeline.syncOperations.addHandlers(
            NIOSSLServerHandler(context: tls.context),
            TLSHandshakeObserver(onRefusal: { reason in onRefusal(remote, reason) }))
    }

    /// "address:port" of the connection's client, for log lines.
    static func remoteDescription(_ channel: Channel) -> String {
        channel.remoteAddress.flatMap { address in address.ipAddress.map { "\($0):\(address.port ?? 0)" } }
            ?? "unknown address"
    }

    /// The common name of the client's certificate: only a verified one reaches the pipeline
    /// (the server asks for a certificate only with client-certificate auth, and then the
    /// handshake fails without a valid one). Called when the first bytes after the handshake
    /// arrived; nil on plaintext connections.
    static func clientCommonName(_ sync: ChannelPipeline.SynchronousOperations) -> String? {
        guard let certificate = (try? sync.nioSSL_peerCertificate()) ?? nil else { return nil }
        return CertificateNames(certificate)?.commonName
    }

    /// Waits until `beginGracefulShutdown` finished (or the listener failed).
    public func run() async throws {
        listener.closeFuture.whenFailure { self.stopped.fail($0) }
        try await stopped.futureResult.get()
    }

    /// Stops accepting connections, sends GOAWAY on every connection, lets the calls in
    /// flight finish (up to `drainTimeout`), then closes what is left. Streaming calls are
    /// not told: the application should finish them (etcd ends its watches); those still
    /// open at the timeout get `onCancel` (UNAVAILABLE) when their connection closes.
    public func beginGracefulShutdown() {
        let eventLoop = listener.eventLoop
        listener.close(promise: nil)
        let open = connections.withLockedValue { Array($0.values) }
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(UnaryServerHandler.Drain()) }
        let closed = EventLoopFuture.andAllComplete(open.map(\.closeFuture), on: eventLoop)
        let (seconds, attoseconds) = options.drainTimeout.components
        let timeout = eventLoop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
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
    /// Streaming calls with something to write (each listed once: `StreamingResponder.State.scheduled`).
    private var pendingStreams: [StreamingResponder] = []
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

    /// Asks for a pass over `responder`'s queue (the caller set its `scheduled` flag).
    func post(_ responder: StreamingResponder) {
        let schedule = lock.withLock {
            pendingStreams.append(responder)
            defer { drainScheduled = true }
            return !drainScheduled
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let (responses, streams) = lock.withLock {
            defer {
                pending.removeAll(keepingCapacity: true)
                if !pendingStreams.isEmpty { pendingStreams.removeAll(keepingCapacity: true) }
                drainScheduled = false
            }
            return (pending, pendingStreams)
        }
        if let handler {
            handler.write(responses, streams)
        } else {
            for responder in streams { responder.connectionClosed() }
        }
    }
}

