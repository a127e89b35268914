import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2

/// One streaming call (client-, server- or bidirectional streaming, e.g. etcd's `Watch` and
/// `LeaseKeepAlive`) as the server accepted it, on its HEADERS frame.
public struct StreamingCall: Sendable {
    /// `/package.Service/Method`.
    public let path: String
    /// The request headers (custom metadata included).
    public let metadata: HPACKHeaders
    /// The client's `grpc-timeout`, if it sent a well-formed one. The server does not enforce
    /// it on streams; the method may.
    public let timeout: Duration?
    /// Sends messages and finishes the call, from any thread.
    public let responder: StreamingResponder
    /// The common name of the client's verified TLS certificate, when the connection has one.
    public let clientCertificateCommonName: String?
}

/// What a streaming method wants to hear about its call. Every callback runs on the
/// connection's event loop (`StreamingResponder.eventLoop`), one at a time, in order, and
/// must not block it: hand real work to another thread.
///
/// After the server wrote the method's `finish` trailers, or after `onCancel`, no callback
/// runs again.
public struct StreamingObserver: Sendable {
    /// One inbound message, still encoded, as soon as its last byte arrived (messages may
    /// span DATA frames and several may share one).
    public var onMessage: @Sendable ([UInt8]) -> Void
    /// The client half-closed: no more messages will come; the call stays open for the
    /// server's messages until the method finishes it.
    public var onHalfClose: @Sendable () -> Void
    /// The call ended without the method's `finish`: the client reset the stream
    /// (`cancelled`), the connection closed (`unavailable`), or the client broke the
    /// protocol and the server answered with the status given (e.g. `resourceExhausted` for
    /// a message above `requestBytesMax`). Release whatever the call holds (watchers).
    /// It may still come after the method called `finish` from another thread, before the
    /// event loop wrote it.
    public var onCancel: @Sendable (GRPCStatus) -> Void
    /// `send` refused a message since the last call, and the queue has since drained to
    /// half its bounds: sending may resume.
    public var onWritable: @Sendable () -> Void

    public init(
        onMessage: @escaping @Sendable ([UInt8]) -> Void,
        onHalfClose: @escaping @Sendable () -> Void = {},
        onCancel: @escaping @Sendable (GRPCStatus) -> Void = { _ in },
        onWritable: @escaping @Sendable () -> Void = {}
    ) {
        self.onMessage = onMessage
        self.onHalfClose = onHalfClose
        self.onCancel = onCancel
        self.onWritable = onWritable
    }
}

/// A streaming method: called on the event loop when the call's HEADERS arrive (before any
/// message), returns how it wants to be told about the call. It may send at once.
///
/// For example etcd's `Watch` (`WatchSession` being the application's own type):
///
///     let watch: StreamingMethod = { call in
///         let session = WatchSession(responder: call.responder)
///         return StreamingObserver(
///             onMessage: { bytes in session.handle(bytes) },  // create/cancel/progress requests
///             onHalfClose: {},                                 // etcd keeps the watchers running
///             onCancel: { _ in session.cancelAll() },          // client gone: drop the watchers
///             onWritable: { session.resume() })                // send what was held back
///     }
///     // On the store's thread, for each event batch:
///     //     if !responder.send(encoded) { hold the batch back; resume in onWritable }
public typealias StreamingMethod = @Sendable (StreamingCall) -> StreamingObserver

/// Bounds of one streaming call's outbound queue.
public struct StreamingLimits: Sendable {
    /// Messages accepted by `send` and not yet taken by the socket.
    public var queuedMessagesMax = 1024
    /// Their encoded bytes (gRPC's 5-byte prefix excluded). One message larger than this is
    /// still accepted into an empty queue, so a large message cannot wedge a call.
    public var queuedBytesMax = 4 << 20
    /// Bytes handed to the HTTP/2 layer and not yet written to the socket. It holds DATA
    /// beyond the peer's flow-control window in an unbounded queue; handing it at
    /// most this much keeps the rest in our bounded queue, where `send` can refuse it.
    public var inFlightBytesMax = 64 << 10

    public init() {}
}

/// The sending half of one streaming call. Safe from any thread: messages are queued under
/// a lock and written on the connection's event loop, those posted together in one flush.
///
/// Backpressure: the queue is bounded by `StreamingLimits`; `send` returns false (and drops
/// the message) when it is full or the call is over. After a refusal, the observer's
/// `onWritable` says when to resume. `queuedBytes` tells how far behind the client is.
public final class StreamingResponder: Sendable {
    public let eventLoop: EventLoop
    let outbox: ConnectionOutbox
    let streamID: HTTP2StreamID
    let limits: StreamingLimits
    let state: NIOLockedValueBox<State>

    struct State {
        /// Accepted, not yet handed to the HTTP/2 layer.
        var queue = CircularBuffer<[UInt8]>()
        /// Accepted and not yet written to the socket (queue and in flight).
        /// Invariant: queuedBytes ≥ inFlightBytes.
        var queuedBytes = 0
        var queuedMessages = 0
        var inFlightBytes = 0
        /// The method's final status, written once the queue drained.
        var finish: GRPCStatus?
        /// The method asked to reset the stream, dropping what is queued.
        var resetRequested = false
        /// No more sends are accepted: finished, reset or cancelled.
        var closed = false
        /// `send` refused a message; `onWritable` is due when the queue drains.
        var refused = false
        /// Listed in the outbox's next pass already.
        var scheduled = false
    }

    init(eventLoop: EventLoop, outbox: ConnectionOutbox, streamID: HTTP2StreamID, limits: StreamingLimits) {
        self.eventLoop = eventLoop
        self.outbox = outbox
        self.streamID = streamID
        self.limits = limits
        self.state = NIOLockedValueBox(State())
    }

    /// Queues `message` (encoded, without gRPC's prefix). Returns false, dropping it, when the
    /// queue is at its bounds or the call is over.
    @discardableResult
    public func send(_ message: [UInt8]) -> Bool {
        let (accepted, schedule) = state.withLockedValue { state -> (Bool, Bool) in
            guard !state.closed && state.finish == nil else { return (false, false) }
            let full =
                state.queuedMessages >= limits.queuedMessagesMax
                || (state.queuedMessages > 0 && state.queuedBytes + message.count > limits.queuedBytesMax)
            if full {
                state.refused = true
                return (false, false)
            }
            state.queue.append(message)
            state.queuedBytes += message.count
            state.queuedMessages += 1
            defer { state.scheduled = true }
            return (true, !state.scheduled)
        }
        if schedule { outbox.post(self) }
        return accepted
    }

    /// Ends the call with `status` in the trailers, after the messages already queued.
    /// Later calls of `finish` and `send` are ignored.
    public func finish(_ status: GRPCStatus = GRPCStatus(code: GRPCStatus.ok, message: "")) {
        let schedule = state.withLockedValue { state -> Bool in
            guard !state.closed && state.finish == nil else { return false }
            state.finish = status
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule { outbox.post(self) }
    }

    /// Resets the stream (RST_STREAM CANCEL) at once, dropping what is queued: for a client
    /// too far behind to catch up. No callback follows.
    public func reset() {
        let schedule = state.withLockedValue { state -> Bool in
            guard !state.closed else { return false }
            state.resetRequested = true
            state.closed = true
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule { outbox.post(self) }
    }

    /// Bytes accepted by `send` that the socket has not taken yet.
    public var queuedBytes: Int { state.withLockedValue { $0.queuedBytes } }

    /// Messages accepted by `send` that the socket has not taken yet.
    public var queuedMessages: Int { state.withLockedValue { $0.queuedMessages } }

    /// Whether `send` would accept a small message now.
    public var isWritable: Bool {
        state.withLockedValue {
            !$0.closed && $0.finish == nil && $0.queuedMessages < limits.queuedMessagesMax
                && $0.queuedBytes < limits.queuedBytesMax
        }
    }
}
