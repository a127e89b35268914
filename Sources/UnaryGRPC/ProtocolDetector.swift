import NIOCore

/// Chooses a connection's protocol from its first bytes, as etcd serves gRPC and plain
/// HTTP (`/metrics`, `/health`) on one port: HTTP/2 with prior knowledge starts with the
/// client preface (RFC 9113 §3.4), anything else is taken as HTTP/1.1. Then it installs
/// that protocol's handlers behind itself, replays the bytes it held and leaves the
/// pipeline, so it costs nothing after the first read.
final class ProtocolDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias Configure = (ChannelPipeline.SynchronousOperations) throws -> Void

    static let http2Preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let configureHTTP2: Configure
    private let configureHTTP1: Configure
    /// What arrived before the decision (at most one read past the preface's length).
    private var buffered: ByteBuffer?

    init(http2: @escaping Configure, http1: @escaping Configure) {
        self.configureHTTP2 = http2
        self.configureHTTP1 = http1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        let received = buffered!.readableBytesView
        let compared = min(received.count, Self.http2Preface.count)
        if !received.prefix(compared).elementsEqual(Self.http2Preface.prefix(compared)) {
            decide(context: context, configureHTTP1)
        } else if compared == Self.http2Preface.count {
            decide(context: context, configureHTTP2)
        }
    }

    private func decide(context: ChannelHandlerContext, _ configure: Configure) {
        do {
            try configure(context.pipeline.syncOperations)
        } catch {
            context.close(promise: nil)
            return
        }
        let bytes = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // A graceful shutdown before the client said anything: nothing to finish.
        if event is UnaryServerHandler.Drain {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
