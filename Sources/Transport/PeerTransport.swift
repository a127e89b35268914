import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Paxos
import Storage
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The TCP transport between replicas: length-prefixed binary frames (see `FrameFormat`)
/// on plain SwiftNIO channel handlers, no async/await per message.
///
/// Each replica listens on its peer address for inbound connections, which only receive.
/// For sending it keeps one outbound connection per peer, dialled lazily on the first
/// frame and redialled with exponential backoff (`Configuration.backoffInitial` →
/// `backoffMax`, jittered). Frames to a peer keep their order on that connection.
///
/// **Delivery is best effort.** Frames to a peer that is not connected wait in a small
/// bounded queue (`pendingFramesMax`, oldest dropped first) while a connection is being
/// established, and are dropped when the socket buffer is full, over `frameBytesMax`, or
/// after `shutdown()`. That is safe because Paxos retransmits: every message is idempotent
/// and is sent again on the next tick or heartbeat; a snapshot receiver restarts on a gap.
///
/// **Threads.** All methods may be called from any thread. Per-peer state lives on one
/// event loop per peer; `send` encodes on the caller's thread and hops to that loop once
/// per destination per call. The callbacks run on NIO event-loop threads — several at
/// once, one per inbound connection — so they must be thread-safe and must hand their
/// work to the server's own loop quickly: a slow callback stalls that connection's reads.
public final class PeerTransport: Sendable {
    /// This replica.
    public let localID: ReplicaID
    public let configuration: Configuration
    private let listenHost: String
    private let listenPort: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let links: [ReplicaID: PeerLink]
    private let inboundContext: InboundContext
    private let counters: TransportCounters
    private let state = Mutex(LifecycleState())

    private enum Phase {
        case created
        case listening(Channel)
        case shutdown
    }

    /// The listener and the open inbound channels, guarded by `state`'s lock.
    private struct LifecycleState {
        var phase: Phase = .created
        var inbound: [ObjectIdentifier: Channel] = [:]
    }

    /// - Parameters:
    ///   - localID: this replica's id.
    ///   - listenHost, listenPort: the peer address to listen on; port 0 picks a free
    ///     port, readable from `localPort` after `start()`.
    ///   - peers: every other replica's peer address; only these may connect. An entry for
    ///     `localID` is ignored, so the whole membership may be passed; id 0 makes
    ///     `start()` throw.
    ///   - group: the event loops for the listener, inbound and outbound connections.
    ///   - configuration: limits and timings; validated by `start()`.
    ///   - tls: TLS on every peer connection (`PeerTransport.TLS`); nil: plaintext.
    ///   - onMessage: each envelope received, with `to == localID` and `from` the
    ///     authenticated sender. Called on an event loop thread (see the type's doc).
    ///   - onSnapshotChunk: each snapshot chunk received and its sender; same threading.
    public init(
        localID: ReplicaID,
        listenHost: String,
        listenPort: Int,
        peers: [ReplicaID: (host: String, port: Int)],
        group: any EventLoopGroup,
        logger: Logger,
        configuration: Configuration = Configuration(),
        tls: TLS? = nil,
        onMessage: @escaping @Sendable (Envelope) -> Void,
        onSnapshotChunk: @escaping @Sendable (ReplicaID, SnapshotChunk) -> Void
    ) {
        let counters = TransportCounters()
        self.localID = localID
        self.configuration = configuration
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.group = group
        self.logger = logger
        self.counters = counters
        var links: [ReplicaID: PeerLink] = [:]
        // Sorted, so which loop serves which peer does not depend on hash seeds.
        for id in peers.keys.sorted() where id != localID {
            let address = peers[id]!
            links[id] = PeerLink(
                localID: localID, peerID: id, host: address.host, port: address.port, eventLoop: group.next(),
                configuration: configuration, tlsContext: tls?.dialingContext, logger: logger, counters: counters)
        }
        self.links = links
        self.inboundContext = InboundContext(
            localID: localID, knownPeers: Set(peers.keys.filter { $0 != localID }),
            clusterID: configuration.clusterID, helloTimeout: configuration.helloTimeout,
            verifiesPeerCertificates: tls?.verifiesInboundPeers ?? false,
            peerHosts: peers.filter { $0.key != localID }.mapValues { $0.host }, logger: logger,
            counters: counters, onMessage: onMessage, onSnapshotChunk: onSnapshotChunk)
        self.tls = tls
        self.invalidPeers = peers.keys.filter { $0 == 0 }.sorted()
    }

    /// Peer ids `start()` refuses: 0 (replica ids start at 1).
    private let invalidPeers: [ReplicaID]
    private let tls: TLS?

    /// Validates the configuration and binds the listener. Blocks until bound; call it
    /// off the event loops. Throws `TransportError` (e.g. `addressInUse`) with one clear line.
    public func start() throws {
        try configuration.validate()
        if let id = invalidPeers.first {
            throw TransportError.invalidPeer(id, reason: "replica ids start at 1")
        }
        guard (0...65535).contains(listenPort) else {
            throw TransportError.cannotListen(host: listenHost, port: listenPort, reason: "port out of range")
        }
        state.withLock { state in
            guard case .created = state.phase else {
                preconditionFailure("PeerTransport.start() called twice or after shutdown")
            }
        }
        let inboundContext = self.inboundContext
        let frameBytesMax = configuration.frameBytesMax
        let serverContext = tls?.serverContext
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard self.admit(channel) else {
                    return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                }
                return channel.eventLoop.makeCompletedFuture {
                    // A failed handshake reaches InboundConnectionHandler.errorCaught, which logs why.
                    if let serverContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverContext))
                    }
                    try channel.pipeline.syncOperations.addHandlers(
                        ByteToMessageHandler(FrameDecoder(frameBytesMax: frameBytesMax, expectsHello: true)),
                        InboundConnectionHandler(shared: inboundContext))
                }
            }
        let channel: Channel
        do {
            channel = try bootstrap.bind(host: listenHost, port: listenPort).wait()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw TransportError.addressInUse(host: listenHost, port: listenPort)
        } catch {
            throw TransportError.cannotListen(host: listenHost, port: listenPort, reason: "\(error)")
        }
        let raced = state.withLock { state -> Bool in
            guard case .created = state.phase else { return true }
            state.phase = .listening(channel)
            return false
        }
        if raced {
            // shutdown() ran while binding.
            try? channel.close().wait()
            return
        }
        let security = tls == nil ? "" : tls!.verifiesInboundPeers ? " (TLS, peer certificates required)" : " (TLS)"
        logger.info("listening for peers on \(listenHost):\(localPort ?? listenPort)\(security)")
    }

    /// The port the listener is bound to, once started: the real one when `listenPort` was 0.
    public var localPort: Int? {
        state.withLock { state in
            guard case .listening(let channel) = state.phase else { return nil }
            return channel.localAddress?.port
        }
    }

    /// The most snapshot bytes one `SnapshotChunk` may carry under this configuration.
    public var snapshotChunkBytesMax: Int {
        SnapshotChunk.bytesMax(frameBytesMax: configuration.frameBytesMax)
    }

    /// A snapshot of the counters.
    public var statistics: Statistics { counters.snapshot() }

    /// Sends `envelopes`, grouped by destination; each destination gets its frames in
    /// order followed by one flush. Best effort (see the type's doc): frames to an unknown
    /// destination or over `frameBytesMax` are dropped, counted and logged.
    /// Precondition: every envelope is `from` this replica.
    public func send(_ envelopes: [Envelope]) {
        guard !envelopes.isEmpty else { return }
        let allocator = ByteBufferAllocator()
        // Few destinations: a small array keeps first-seen order without hashing.
        var batches: [(link: PeerLink, frames: [ByteBuffer])] = []
        // The core emits a message for each peer in a row (an accept, a heartbeat): encode it
        // once. Equal messages usually share their command arrays, which `==` sees at once.
        var last: (message: Message, bytes: [UInt8])?
        for envelope in envelopes {
            precondition(envelope.from == localID, "sending an envelope from r\(envelope.from) as r\(localID)")
            guard let link = links[envelope.to] else {
                counters.framesDropped.add(1)
                logger.error("dropping \(envelope): r\(envelope.to) is not a peer")
                continue
            }
            let messageBytes: [UInt8]
            if let last, last.message == envelope.message {
                messageBytes = last.bytes
            } else {
                messageBytes = FrameEncoder.encoded(envelope.message)
                last = (envelope.message, messageBytes)
            }
            let frame = FrameEncoder.message(
                from: envelope.from, to: envelope.to, messageBytes: messageBytes, allocator: allocator)
            guard fits(frame) else {
                counters.framesDropped.add(1)
                let limit = configuration.frameBytesMax
                let size = frame.readableBytes
                logger.error("dropping \(envelope): frame of \(size) bytes exceeds frameBytesMax \(limit)")
                continue
            }
            if let index = batches.firstIndex(where: { $0.link === link }) {
                batches[index].frames.append(frame)
            } else {
                batches.append((link, [frame]))
            }
        }
        for batch in batches {
            batch.link.submit(batch.frames)
        }
    }

    /// Sends one snapshot chunk to `peer` (best effort, like every frame).
    /// Precondition: `chunk.bytes.count <= snapshotChunkBytesMax`, and the chunk is consistent.
    public func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID) {
        precondition(
            chunk.bytes.count <= snapshotChunkBytesMax,
            "snapshot chunk of \(chunk.bytes.count) bytes exceeds snapshotChunkBytesMax \(snapshotChunkBytesMax)")
        guard let link = links[peer] else {
            counters.framesDropped.add(1)
            logger.error("dropping snapshot chunk: r\(peer) is not a peer")
            return
        }
        link.submit([FrameEncoder.snapshotChunk(chunk, sender: localID)])
    }

    /// Closes the listener, every inbound and outbound connection, and cancels redials.
    /// Idempotent. Off the event loops it blocks until everything is closed (so the port
    /// can be bound again at once); on an event loop it only starts the closing.
    public func shutdown() {
        let (listener, inbound, wasShutdown) = state.withLock { state in
            let previous = state.phase
            state.phase = .shutdown
            let inbound = Array(state.inbound.values)
            state.inbound.removeAll()
            switch previous {
            case .listening(let channel): return (Optional(channel), inbound, false)
            case .created: return (nil, inbound, false)
            case .shutdown: return (nil, inbound, true)
            }
        }
        guard !wasShutdown else { return }
        var closed: [EventLoopFuture<Void>] = []
        if let listener {
            closed.append(listener.close().recover { _ in })
        }
        for channel in inbound {
            closed.append(channel.close().recover { _ in })
        }
        for id in links.keys.sorted() {
            closed.append(links[id]!.shutdown())
        }
        logger.info("peer transport of r\(localID) shut down")
        guard MultiThreadedEventLoopGroup.currentEventLoop == nil else { return }
        try? EventLoopFuture.andAllComplete(closed, on: group.any()).wait()
    }

    // MARK: - Helpers

    private func fits(_ frame: ByteBuffer) -> Bool {
        frame.readableBytes - FrameFormat.lengthFieldBytes <= configuration.frameBytesMax
    }

    /// Registers a new inbound channel, or refuses it when shut down or over
    /// `inboundConnectionsMax`.
    private func admit(_ channel: Channel) -> Bool {
        let refusal = state.withLock { state -> String? in
            guard case .listening = state.phase else { return "shutting down" }
            guard state.inbound.count < configuration.inboundConnectionsMax else {
                return "\(state.inbound.count) inbound connections already open (inboundConnectionsMax)"
            }
            state.inbound[ObjectIdentifier(channel)] = channel
            return nil
        }
        let remote = channel.remoteAddress.map(InboundConnectionHandler.describe) ?? "unknown address"
        if let refusal {
            counters.connectionsRejected.add(1)
            logger.warning("peer connection from \(remote) rejected: \(refusal)")
            return false
        }
        counters.connectionsAccepted.add(1)
        let key = ObjectIdentifier(channel)
        channel.closeFuture.whenComplete { _ in
            self.state.withLock { _ = $0.inbound.removeValue(forKey: key) }
        }
        return true
    }
}
