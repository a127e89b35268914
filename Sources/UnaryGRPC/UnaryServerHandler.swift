import NIOCore
import NIOHPACK
import NIOHTTP2

/// The connection's gRPC layer on HTTP/2 frames: collects each stream's headers and body,
/// dispatches the call, writes the response. Streaming calls are in
/// `UnaryServerHandler+Streaming.swift`.
final class UnaryServerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Asks the connection to finish its calls and close (graceful shutdown).
    struct Drain: Sendable {}

    /// A class, not a struct: every frame looks its stream up in `streams`, and a struct's
    /// lookup copied the whole state (headers, body, path) with its retains and releases —
    /// 3 % of a replica's CPU at 256 calls in flight. The loop owns it; nothing else holds it.
    final class Stream {
        var headers: HPACKHeaders
        var body: ByteBuffer
        /// `:path`, once the headers were accepted.
        var path = ""
        /// Where the unary method sits in `methods`, found when the headers arrived; nil for
        /// streaming calls and for calls answered at once. An index, not the closure: a
        /// closure taken out of the dictionary and stored gets a heap-allocated
        /// reabstraction thunk, one more allocation per call (measured); called at once it
        /// does not.
        var methodIndex: [String: UnaryMethod].Index?
        /// Set for streaming calls.
        var streaming: StreamingCallState?
        var unacknowledgedBytes = 0
        /// The client sent END_STREAM.
        var ended = false
        /// Already answered (an error before the body ended); the rest of the body is dropped.
        var answered = false

        init(headers: HPACKHeaders, body: ByteBuffer) {
            self.headers = headers
            self.body = body
        }
    }

    let methods: [String: UnaryMethod]
    let streamingMethods: [String: StreamingMethod]
    let streamingLimits: StreamingLimits
    let requestBytesMax: Int
    let connectionBufferedBytesMax: Int
    /// Sum of the bodies in `streams`. Invariant: ≤ connectionBufferedBytesMax.
    var bufferedBytes = 0
    let outbox: ConnectionOutbox
    /// The verified client certificate's common name, for every call on this connection.
    let clientCertificateCommonName: String?
    var streams: [HTTP2StreamID: Stream] = [:]
    var context: ChannelHandlerContext?
    /// Frames were written since the last flush (flushed at the end of the read burst).
    var flushPending = false
    private var draining = false
    private var closeScheduled = false
    private var lastStreamID: HTTP2StreamID = .rootStream

    init(
        methods: [String: UnaryMethod], streamingMethods: [String: StreamingMethod], streamingLimits: StreamingLimits,
        requestBytesMax: Int, connectionBufferedBytesMax: Int, outbox: ConnectionOutbox,
        clientCertificateCommonName: String? = nil
    ) {
        self.methods = methods
        self.streamingMethods = streamingMethods
        self.streamingLimits = streamingLimits
        self.requestBytesMax = requestBytesMax
        self.connectionBufferedBytesMax = connectionBufferedBytesMax
        self.outbox = outbox
        self.clientCertificateCommonName = clientCertificateCommonName
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbox.handler = self
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelAllStreaming(GRPCStatus(code: GRPCStatus.unavailable, message: "connection closed"))
        self.context = nil
        outbox.handler = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelAllStreaming(GRPCStatus(code: GRPCStatus.unavailable, message: "connection closed"))
        context.fireChannelInactive()
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
                if streamID > lastStreamID { lastStreamID = streamID }
                accept(streamID, headers: headers.headers, context: context)
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
                if streams[streamID]!.streaming != nil {
                    readStreaming(streamID, bytes, context: context)
                } else if !streams[streamID]!.answered {
                    if streams[streamID]!.body.readableBytes + bytes.readableBytes > requestBytesMax + GRPCWire.prefixBytes {
                        dropBody(streamID)
                        answerEarly(streamID, tooLarge)
                    } else if bufferedBytes + bytes.readableBytes > connectionBufferedBytesMax {
                        dropBody(streamID)
                        answerEarly(streamID, tooMuchAtOnce)
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
            // GOAWAY: the client opens no more streams; those open finish as usual.
            // SETTINGS, PING, WINDOW_UPDATE, PRIORITY and the connection's flow-control
            // credit are HTTP2Codec's own and never reach this handler.
            break
        }
    }

    var tooLarge: GRPCStatus {
        GRPCStatus(
            code: GRPCStatus.resourceExhausted,
            message: "request message larger than the server's limit of \(requestBytesMax) bytes")
    }

    var tooMuchAtOnce: GRPCStatus {
        GRPCStatus(
            code: GRPCStatus.resourceExhausted,
            message: "this connection is sending more than \(connectionBufferedBytesMax) bytes of requests at once; retry")
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
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
        // HTTP2Codec answers protocol errors itself (GOAWAY or RST_STREAM); an error
        // that reaches here (the socket, TLS) leaves nothing worth keeping.
        context.close(promise: nil)
    }

    /// A new stream's headers: finds its method. Anything the server cannot serve (not a
    /// gRPC request, an unknown path) is answered at once, without waiting for a body the
    /// client may never end (a streaming client half-closes only when it is done).
    private func accept(_ streamID: HTTP2StreamID, headers: HPACKHeaders, context: ChannelHandlerContext) {
        let stream = Stream(headers: headers, body: ByteBuffer())
        guard headers.first(name: ":method") == "POST" else {
            streams[streamID] = stream
            return answerEarly(streamID, GRPCStatus(code: GRPCStatus.unimplemented, message: "gRPC requires POST"))
        }
        guard let contentType = headers.first(name: "content-type"), contentType.hasPrefix(GRPCWire.contentType) else {
            streams[streamID] = stream
            return answerEarly(
                streamID, GRPCStatus(code: GRPCStatus.invalidArgument, message: "content-type is not application/grpc"))
        }
        let path = headers.first(name: ":path") ?? ""
        stream.path = path
        if let index = methods.index(forKey: path) {
            stream.methodIndex = index
            streams[streamID] = stream
        } else if let method = streamingMethods[path] {
            streams[streamID] = stream
            startStreaming(streamID, path: path, headers: headers, method: method, context: context)
        } else {
            streams[streamID] = stream
            answerEarly(streamID, GRPCStatus(code: GRPCStatus.unimplemented, message: "unknown method \(path)"))
        }
    }

    /// The client finished the request: for a unary call, check the body and hand it to its
    /// method; for a streaming call, tell the method.
    private func end(_ streamID: HTTP2StreamID) {
        guard let stream = streams[streamID], !stream.ended else { return }
        if stream.streaming != nil { return halfClosedStreaming(streamID) }
        let body = stream.body
        dropBody(streamID)
        streams[streamID]!.ended = true
        guard !stream.answered, let methodIndex = stream.methodIndex else { return }
        let responder = UnaryResponder(outbox: outbox, streamID: streamID)
        switch GRPCWire.unframe(body) {
        case .failure(let status):
            responder.fail(status)
        case .success(let payload):
            let headers = stream.headers
            let timeout = headers.first(name: "grpc-timeout").flatMap(GRPCWire.timeout)
            methods[methodIndex].value(
                UnaryCall(
                    path: stream.path, metadata: headers, payload: payload, timeout: timeout, responder: responder,
                    clientCertificateCommonName: clientCertificateCommonName))
        }
    }

    func dropBody(_ streamID: HTTP2StreamID) {
        guard let bytes = streams[streamID]?.body.readableBytes else { return }
        bufferedBytes -= bytes
        streams[streamID]!.body = ByteBuffer()
        assert(bufferedBytes >= 0, "buffered request bytes went negative")
    }

    func removeStream(_ streamID: HTTP2StreamID) {
        dropBody(streamID)
        if let stream = streams.removeValue(forKey: streamID), let call = stream.streaming {
            cancelStreaming(call, GRPCStatus(code: GRPCStatus.cancelled, message: "stream reset by the client"))
        }
    }

    /// Answers before the body ended (e.g. too large): the answer goes out and the stream is
    /// reset, so the client stops sending.
    private func answerEarly(_ streamID: HTTP2StreamID, _ status: GRPCStatus) {
        streams[streamID]?.answered = true
        UnaryResponder(outbox: outbox, streamID: streamID).fail(status)
    }

    /// Writes responses and streaming messages posted by `ConnectionOutbox`, then flushes once.
    func write(_ responses: [(HTTP2StreamID, ConnectionOutbox.Response)], _ streamingResponders: [StreamingResponder]) {
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
                write(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: Self.trailersOnly(status), endStream: true))), context: context)
            }
            if !stream.ended {
                write(HTTP2Frame(streamID: streamID, payload: .rstStream(.noError)), context: context)
            }
            removeStream(streamID)
        }
        for responder in streamingResponders { pump(responder, context: context) }
        flushPending = false
        context.flush()
        closeIfDrained(context: context)
    }

    func write(_ frame: HTTP2Frame, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(frame), promise: nil)
        flushPending = true
    }

    /// Closes a draining connection once its last call was answered — on the next
    /// event-loop pass: this can run inside HTTP2Codec's flush (a stream-closed event),
    /// before the answer's frames reached the socket, and closing then would drop them.
    func closeIfDrained(context: ChannelHandlerContext) {
        guard draining && streams.isEmpty && !closeScheduled else { return }
        closeScheduled = true
        let channel = context.channel
        context.eventLoop.execute { channel.close(promise: nil) }
    }

    static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": GRPCWire.contentType]
    static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

    /// A response that is only trailers (no message): HTTP status, content type and gRPC status.
    static func trailersOnly(_ status: GRPCStatus) -> HPACKHeaders {
        var headers = responseHeaders
        headers.add(name: "grpc-status", value: String(status.code))
        headers.add(name: "grpc-message", value: GRPCMessageEncoding.encode(status.message))
        return headers
    }
}
