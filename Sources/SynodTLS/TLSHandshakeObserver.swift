import NIOCore
import NIOSSL
import NIOTLS

/// A TLS handshake that did not complete, in words (`TLSFailure.describe`).
public struct TLSRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Sits right behind a `NIOSSLHandler` and tells once how the handshake went: `handshake`
/// succeeds with the peer's verified certificate (nil when it sent none) or fails with a
/// `TLSRefusal`. Every event passes through, and it stays in the pipeline: a refusal that
/// arrives after the handshake (a TLS 1.3 client finishes before the server has checked its
/// certificate) goes to `onLaterRefusal`.
public final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let onRefusal: (String) -> Void
    private let onLaterRefusal: (String) -> Void
    private var promise: EventLoopPromise<NIOSSLCertificate?>?
    private var completed = false
    private var succeeded = false
    private var laterRefusalReported = false

    /// - Parameters:
    ///   - onRefusal: the handshake failed (on the event loop).
    ///   - onLaterRefusal: the other side refused the connection after the handshake completed.
    public init(onRefusal: @escaping (String) -> Void = { _ in }, onLaterRefusal: @escaping (String) -> Void = { _ in }) {
        self.onRefusal = onRefusal
        self.onLaterRefusal = onLaterRefusal
    }

    /// The handshake's outcome; valid once the handler is in a pipeline.
    public var handshake: EventLoopFuture<NIOSSLCertificate?> {
        guard let promise else { preconditionFailure("TLSHandshakeObserver.handshake read before the handler was added") }
        return promise.futureResult
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        promise = context.eventLoop.makePromise()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(TLSRefusal("the connection closed during the TLS handshake")))
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate()
            finish(.success(certificate))
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if TLSFailure.isRefusal(error) {
            let reason = TLSFailure.describe(error)
            if !completed {
                onRefusal(reason)
                finish(.failure(TLSRefusal(reason)))
            } else if succeeded && !laterRefusalReported {
                laterRefusalReported = true
                onLaterRefusal(reason)
            }
        }
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(TLSRefusal("the connection closed during the TLS handshake")))
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<NIOSSLCertificate?, any Error>) {
        guard !completed, let promise else { return }
        completed = true
        if case .success = result { succeeded = true }
        promise.completeWith(result)
    }
}

extension TLSHandshakeObserver {
    /// The handshake's outcome on `channel`, whose pipeline holds an observer; from any thread.
    public static func handshake(of channel: Channel) -> EventLoopFuture<NIOSSLCertificate?> {
        channel.eventLoop.flatSubmit {
            do {
                return try channel.pipeline.syncOperations.handler(type: TLSHandshakeObserver.self).handshake
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
    }
}
