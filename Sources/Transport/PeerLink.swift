import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Paxos
import SynodTLS

/// The outbound connection to one peer: dialled lazily on the first frame, redialled with
/// backoff, and the bounded queue of frames that wait for it.
///
/// Thread safety: every mutable property is confined to `eventLoop` — the loop the
/// connection's channel lives on — and each method checks it is running there. Callers on
/// other threads go through `submit`, which hops once per batch (`execute`), never per
/// frame and never through async/await.
///
/// The phases and what moves between them:
///
/// | phase       | frames submitted            | event                   | next phase          |
/// |-------------|-----------------------------|-------------------------|---------------------|
/// | idle        | queued, dial                | —                       | connecting          |
/// | connecting  | queued                      | connected               | connected (flush queue) |
/// | connecting  | queued                      | connect failed          | backingOff          |
/// | backingOff  | queued                      | timer, queue empty      | idle                |
/// | backingOff  | queued                      | timer, queue not empty  | connecting          |
/// | connected   | written, one flush          | connection closed       | backingOff          |
/// | any         | dropped after shutdown      | shutdown                | shutdown            |
final class PeerLink: @unchecked Sendable {
    enum Phase {
        case idle
        case connecting
        case backingOff(Scheduled<Void>)
        case connected(Channel)
        case shutdown
    }

    let peerID: ReplicaID
    let host: String
    let port: Int
    let eventLoop: EventLoop
    private let localID: ReplicaID
    private let configuration: PeerTransport.Configuration
    /// Dials over TLS with this context; nil: plaintext.
    private let tlsContext: NIOSSLContext?
    private let backoff: Backoff
    private let logger: Logger
    private let counters: TransportCounters

    private var phase: Phase = .idle
    /// Frames waiting for a connection. Invariant: count <= pendingFramesMax and
    /// pendingBytes <= pendingBytesMax after every append.
    private var pending = CircularBuffer<ByteBuffer>()
    private var pendingBytes = 0
    /// Failed attempts since the last stable connection; picks the backoff ceiling.
    private var attempt = 0
    /// When the current connection was established.
    private var connectedAt: NIODeadline = .distantPast
    /// Why the last failed attempt failed, as logged; nil after a connection.
    private var lastFailureLogged: String?
    private var generator = SystemRandomNumberGenerator()

    init(
        localID: ReplicaID,
        peerID: ReplicaID,
        host: String,
        port: Int,
        eventLoop: EventLoop,
        configuration: PeerTransport.Configuration,
        tlsContext: NIOSSLContext? = nil,
        logger: Logger,
        counters: TransportCounters
    ) {
        self.localID = localID
        self.peerID = peerID
        self.host = host
        self.port = port
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.tlsContext = tlsContext
        self.backoff = Backoff(initial: configuration.backoffInitial, max: configuration.backoffMax)
        self.logger = logger
        self.counters = counters
    }

    /// Hands a batch of complete frames to the link from any thread, in order.
    func submit(_ frames: [ByteBuffer]) {
        if eventLoop.inEventLoop {
            enqueue(frames)
        } else {
            eventLoop.execute { self.enqueue(frames) }
        }
    }

    /// Closes the connection, cancels any redial and drops the queue; later frames are dropped.
    func shutdown() -> EventLoopFuture<Void> {
        eventLoop.submit { self.shutdownOnLoop() }.flatMap { $0 }
    }

    // MARK: - Events, on the loop

    private func enqueue(_ frames: [ByteBuffer]) {
        eventLoop.preconditionInEventLoop()
        switch phase {
        case .connected(let channel):
            write(frames, to: channel)
            channel.flush()
        case .idle:
            appendPending(frames)
            dial()
        case .connecting, .backingOff:
            appendPending(frames)
        case .shutdown:
            counters.framesDropped.add(frames.count)
        }
    }

    private func dial() {
        eventLoop.preconditionInEventLoop()
        phase = .connecting
        let watermark = ChannelOptions.Types.WriteBufferWaterMark(
            low: configuration.outboundBufferBytesMax / 2, high: configuration.outboundBufferBytesMax)
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: watermark)
        let literal = try? SocketAddress(ipAddress: host, port: port)
        if let tlsContext {
            // An IP address is checked against the certificate's IP SANs by NIOSSL itself (it
            // has no SNI); a name is sent as SNI and checked against its DNS SANs.
            let serverHostname = literal == nil ? host : nil
            let (peerID, host, port, logger) = (peerID, host, port, logger)
            bootstrap = bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname),
                        TLSHandshakeObserver(onLaterRefusal: { reason in
                            logger.warning("peer r\(peerID) at \(host):\(port) refused this replica's connection: \(reason)")
                        }))
                }
            }
        }
        var connected: EventLoopFuture<Channel>
        if let literal {
            connected = bootstrap.connect(to: literal)  // no resolver round for literal addresses
        } else {
            connected = bootstrap.connect(host: host, port: port)
        }
        if tlsContext != nil {
            let (peerID, host) = (peerID, host)
            connected = connected.flatMap { channel in
                Self.verifiedHandshake(channel, peerID: peerID, host: host)
            }
        }
        connected.hop(to: eventLoop).whenComplete { result in
            switch result {
            case .success(let channel): self.connectSucceeded(channel)
            case .failure(let error): self.connectFailed(error)
            }
        }
    }

    private func connectSucceeded(_ channel: Channel) {
        eventLoop.preconditionInEventLoop()
        guard case .connecting = phase else {
            // Shut down while dialling.
            channel.close(promise: nil)
            return
        }
        precondition(channel.eventLoop === eventLoop, "peer channel on a foreign event loop")
        phase = .connected(channel)
        connectedAt = .now()
        lastFailureLogged = nil
        counters.connectionsEstablished.add(1)
        logger.info("connected to peer r\(peerID) at \(host):\(port)")
        channel.closeFuture.whenComplete { _ in self.connectionClosed(channel) }

        // The hello goes first, whatever the socket buffer says.
        let hello = FrameEncoder.hello(
            sender: localID, Hello(clusterID: configuration.clusterID, receiver: peerID), allocator: channel.allocator)
        counters.framesSent.add(1)
        counters.bytesSent.add(hello.readableBytes)
        channel.write(hello, promise: nil)
        var frames: [ByteBuffer] = []
        frames.reserveCapacity(pending.count)
        while let frame = pending.popFirst() { frames.append(frame) }
        pendingBytes = 0
        write(frames, to: channel)
        channel.flush()
    }

    /// Waits for the TLS handshake on `channel` and checks that the certificate names
    /// `peerID` (`PeerIdentity`); on failure the channel is closed before anything was
    /// written to it.
    private static func verifiedHandshake(_ channel: Channel, peerID: ReplicaID, host: String) -> EventLoopFuture<Channel> {
        TLSHandshakeObserver.handshake(of: channel).flatMapThrowing { certificate -> Channel in
            if let mismatch = PeerIdentity.mismatch(certificate, replica: peerID, host: host) {
                throw TLSRefusal(mismatch)
            }
            return channel
        }.flatMapErrorThrowing { error in
            channel.close(promise: nil)
            throw error is TLSRefusal ? error : TLSRefusal(TLSFailure.describe(error))
        }
    }

    private func connectFailed(_ error: Error) {
        eventLoop.preconditionInEventLoop()
        guard case .connecting = phase else { return }
        counters.connectFailures.add(1)
        // One line when a peer first becomes unreachable, and again whenever the reason
        // changes (a peer that was down and now refuses our certificate); repeats only at
        // debug. A TLS refusal is a warning: it will not fix itself.
        let reason = error is TLSRefusal ? "TLS: \(error)" : "\(error)"
        let level: Logger.Level = reason == lastFailureLogged ? .debug : (error is TLSRefusal ? .warning : .info)
        lastFailureLogged = reason
        logger.log(level: level, "cannot connect to peer r\(peerID) at \(host):\(port): \(reason); retrying with backoff")
        backOff()
    }

    private func connectionClosed(_ channel: Channel) {
        eventLoop.preconditionInEventLoop()
        guard case .connected(let current) = phase, current === channel else { return }
        if NIODeadline.now() - connectedAt >= configuration.connectionStableAfter {
            attempt = 0
        }
        logger.info("connection to peer r\(peerID) at \(host):\(port) closed")
        backOff()
    }

    private func backOff() {
        eventLoop.preconditionInEventLoop()
        let delay = backoff.delay(attempt: attempt, using: &generator)
        attempt += 1
        let timer = eventLoop.scheduleTask(in: delay) { self.backoffElapsed() }
        phase = .backingOff(timer)
    }

    private func backoffElapsed() {
        eventLoop.preconditionInEventLoop()
        guard case .backingOff = phase else { return }
        if pending.isEmpty {
            phase = .idle  // dial lazily, on the next frame
        } else {
            dial()
        }
    }

    private func shutdownOnLoop() -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let previous = phase
        phase = .shutdown
        counters.framesDropped.add(pending.count)
        pending.removeAll()
        pendingBytes = 0
        switch previous {
        case .connected(let channel):
            return channel.close().recover { _ in }
        case .backingOff(let timer):
            timer.cancel()
            return eventLoop.makeSucceededVoidFuture()
        case .idle, .connecting, .shutdown:
            return eventLoop.makeSucceededVoidFuture()
        }
    }

    // MARK: - Helpers

    /// Writes what the socket buffer takes and drops the rest: Paxos retransmits.
    private func write(_ frames: [ByteBuffer], to channel: Channel) {
        for frame in frames {
            if channel.isWritable {
                counters.framesSent.add(1)
                counters.bytesSent.add(frame.readableBytes)
                channel.write(frame, promise: nil)
            } else {
                counters.framesDropped.add(1)
            }
        }
    }

    private func appendPending(_ frames: [ByteBuffer]) {
        for frame in frames {
            pending.append(frame)
            pendingBytes += frame.readableBytes
        }
        while pending.count > configuration.pendingFramesMax || pendingBytes > configuration.pendingBytesMax {
            let oldest = pending.removeFirst()
            pendingBytes -= oldest.readableBytes
            counters.framesDropped.add(1)
        }
        precondition(pendingBytes >= 0, "pending byte count went negative")
    }
}
