import Logging
import NIOCore
import NIOSSL
import Paxos
import Storage
import SynodTLS

/// What every inbound connection handler needs from its transport; immutable and shared.
struct InboundContext: Sendable {
    let localID: ReplicaID
    /// The replicas allowed to call: the peer table's ids.
    let knownPeers: Set<ReplicaID>
    let clusterID: UInt32
    let helloTimeout: TimeAmount
    /// `--peer-client-cert-auth`: the hello's sender must be the replica its certificate names.
    let verifiesPeerCertificates: Bool
    /// Every peer's host in the peer table, which its certificate must be valid for.
    let peerHosts: [ReplicaID: String]
    let logger: Logger
    let counters: TransportCounters
    let onMessage: @Sendable (Envelope) -> Void
    let onSnapshotChunk: @Sendable (ReplicaID, SnapshotChunk) -> Void
}

/// Receives frames on one inbound connection (after `FrameDecoder`): checks the hello,
/// then decodes messages and snapshot chunks and hands them to the callbacks, on this
/// channel's event loop.
///
/// Any violation — a `FrameError` from the decoder, a hello from an unknown replica or
/// another cluster, a frame whose sender differs from the hello's, a payload that does
/// not decode — logs one line naming the remote address and closes this connection only.
final class InboundConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    private let shared: InboundContext
    /// The replica that said hello; nil until then. Invariant: set at most once.
    private var sender: ReplicaID?
    /// Set on the first violation: nothing more is read, logged or delivered.
    private var rejected = false
    private var remote = "unknown address"
    private var helloTimer: Scheduled<Void>?

    init(shared: InboundContext) {
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let address = context.channel.remoteAddress {
            remote = Self.describe(address)
        }
        let timeout = shared.helloTimeout
        helloTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            if self.sender == nil {
                self.reject(context: context, "no hello within \(timeout)")
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        helloTimer?.cancel()
        helloTimer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !rejected else { return }
        var frame = unwrapInboundIn(data)
        shared.counters.framesReceived.add(1)
        shared.counters.bytesReceived.add(frame.wireBytes)
        guard let sender else {
            receiveHello(context: context, frame: &frame)
            return
        }
        guard frame.sender == sender else {
            reject(context: context, "\(frame.kind) frame from r\(frame.sender) on the connection of r\(sender)")
            return
        }
        switch frame.kind {
        case .hello:
            reject(context: context, "second hello from r\(sender)")
        case .message:
            receiveMessage(context: context, frame: frame, sender: sender)
        case .snapshotChunk:
            do {
                let chunk = try SnapshotChunk.decode(from: &frame.payload)
                shared.onSnapshotChunk(sender, chunk)
            } catch {
                reject(context: context, "snapshot chunk from r\(sender) does not decode: \(error)")
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let frameError = error as? FrameError {
            reject(context: context, frameError.description)
        } else if TLSFailure.isRefusal(error) {
            reject(context: context, "TLS handshake failed: \(TLSFailure.describe(error))")
        } else if rejected {
            return
        } else {
            // A socket error (reset by peer and the like): the connection is gone anyway.
            shared.logger.debug("peer connection from \(remote) failed: \(error)")
            context.close(promise: nil)
        }
    }

    // MARK: - Frames

    private func receiveHello(context: ChannelHandlerContext, frame: inout Frame) {
        // The decoder only lets a hello through as the first frame.
        precondition(frame.kind == .hello, "first frame \(frame.kind) passed the decoder")
        let hello: Hello
        do {
            hello = try Hello.decode(from: &frame.payload)
        } catch {
            reject(context: context, "hello does not decode: \(error)")
            return
        }
        guard shared.knownPeers.contains(frame.sender) else {
            reject(context: context, "hello from unknown replica r\(frame.sender)")
            return
        }
        guard hello.clusterID == shared.clusterID else {
            reject(
                context: context,
                "hello from r\(frame.sender) of cluster \(hello.clusterID), this is cluster \(shared.clusterID)")
            return
        }
        guard hello.receiver == shared.localID else {
            reject(
                context: context,
                "hello from r\(frame.sender) meant for r\(hello.receiver), this is r\(shared.localID)")
            return
        }
        if shared.verifiesPeerCertificates {
            let certificate = (try? context.pipeline.syncOperations.nioSSL_peerCertificate()) ?? nil
            if let mismatch = PeerIdentity.mismatch(certificate, replica: frame.sender, host: shared.peerHosts[frame.sender]) {
                reject(context: context, "hello from r\(frame.sender): \(mismatch)")
                return
            }
        }
        sender = frame.sender
        helloTimer?.cancel()
        helloTimer = nil
        shared.logger.debug("peer r\(frame.sender) connected from \(remote)")
    }

    private func receiveMessage(context: ChannelHandlerContext, frame: Frame, sender: ReplicaID) {
        let envelope: Envelope
        do {
            envelope = try Envelope(decoding: Array(frame.payload.readableBytesView))
        } catch {
            reject(context: context, "message from r\(sender) does not decode: \(error)")
            return
        }
        guard envelope.from == sender else {
            reject(context: context, "envelope from r\(envelope.from) on the connection of r\(sender)")
            return
        }
        guard envelope.to == shared.localID else {
            reject(context: context, "envelope for r\(envelope.to) arrived at r\(shared.localID)")
            return
        }
        shared.onMessage(envelope)
    }

    /// Logs the one line for this connection and closes it.
    private func reject(context: ChannelHandlerContext, _ reason: String) {
        guard !rejected else { return }
        rejected = true
        shared.counters.connectionsRejected.add(1)
        shared.logger.warning("peer connection from \(remote) rejected: \(reason)")
        context.close(promise: nil)
    }

    static func describe(_ address: SocketAddress) -> String {
        if let ip = address.ipAddress, let port = address.port {
            return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        }
        return "\(address)"
    }
}
