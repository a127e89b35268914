import NIOCore
import NIOHPACK
import NIOHTTP2

/// One streaming call's event-loop side.
final class StreamingCallState {
    let responder: StreamingResponder
    let observer: StreamingObserver
    /// The response HEADERS went out (before the first message).
    var headersSent = false
    /// The server wrote its trailers or reset the stream, or the call was cancelled: no
    /// callback runs again. Set on the event loop only.
    var finished = false

    init(responder: StreamingResponder, observer: StreamingObserver) {
        self.responder = responder
        self.observer = observer
    }
}

/// Streaming calls: messages in as they complete, messages out from a bounded queue, with
/// at most `StreamingLimits.inFlightBytesMax` handed to HTTP2Codec at a time (it queues
/// DATA beyond the peer's window without bound; we count a message as queued until its
/// write promise completes, i.e. the socket took it).
extension UnaryServerHandler {
    func startStreaming(
        _ streamID: HTTP2StreamID, path: String, headers: HPACKHeaders, method: StreamingMethod,
        context: ChannelHandlerContext
    ) {
        let responder = StreamingResponder(
            eventLoop: context.eventLoop, outbox: outbox, streamID: streamID, limits: streamingLimits)
        let timeout = headers.first(name: "grpc-timeout").flatMap(GRPCWire.timeout)
        let observer = method(
            StreamingCall(
                path: path, metadata: headers, timeout: timeout, responder: responder,
                clientCertificateCommonName: clientCertificateCommonName))
        streams[streamID]?.streaming = StreamingCallState(responder: responder, observer: observer)
    }

    /// DATA on a streaming call: delivers every message it completes.
    func readStreaming(_ streamID: HTTP2StreamID, _ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard let call = streams[streamID]?.streaming, !call.finished, !streams[streamID]!.ended else { return }
        guard bufferedBytes + bytes.readableBytes <= connectionBufferedBytesMax else {
            return abortStreaming(streamID, tooMuchAtOnce, context: context)
        }
        // Moved out of the dictionary so the buffer is uniquely referenced and grows in place.
        var body = streams[streamID]!.body
        streams[streamID]!.body = ByteBuffer()
        let bufferedBefore = body.readableBytes
        body.writeImmutableBuffer(bytes)
        var failure: GRPCStatus?
        messages: while !call.finished {
            switch GRPCWire.nextMessage(&body, messageBytesMax: requestBytesMax) {
            case .success(let message?): call.observer.onMessage(message)
            case .success(nil): break messages
            case .failure(let status):
                failure = status
                break messages
            }
        }
        if body.readableBytes == 0 {
            // A long-lived call (a watch) must not keep the capacity of its largest message.
            if body.capacity > Self.discardReadBytesAbove { body = ByteBuffer() } else { body.clear() }
        } else if body.readerIndex >= Self.discardReadBytesAbove {
            body.discardReadBytes()
        }
        bufferedBytes += body.readableBytes - bufferedBefore
        streams[streamID]!.body = body
        if let failure { abortStreaming(streamID, failure, context: context) }
    }

    /// Read bytes a stream's buffer keeps before compacting, and the capacity an empty one
    /// keeps.
    static var discardReadBytesAbove: Int { 64 << 10 }

    /// END_STREAM on a streaming call.
    func halfClosedStreaming(_ streamID: HTTP2StreamID) {
        guard let call = streams[streamID]?.streaming else { return }
        streams[streamID]!.ended = true
        guard !call.finished else { return }
        if streams[streamID]!.body.readableBytes > 0, let context {
            abortStreaming(
                streamID,
                GRPCStatus(code: GRPCStatus.internalError, message: "client half-closed inside a message"),
                context: context)
        } else {
            call.observer.onHalfClose()
        }
    }

    /// The client broke the protocol (or a bound): the status goes to the client, then to
    /// the method through `onCancel`.
    func abortStreaming(_ streamID: HTTP2StreamID, _ status: GRPCStatus, context: ChannelHandlerContext) {
        guard let call = streams[streamID]?.streaming, !call.finished else { return }
        dropBody(streamID)
        call.responder.close(dropQueued: true)
        writeTrailers(streamID, call: call, status: status, context: context)
        call.observer.onCancel(status)
    }

    /// The stream is gone (reset by the client, closed with the connection).
    func cancelStreaming(_ call: StreamingCallState, _ status: GRPCStatus) {
        guard !call.finished else { return }
        call.finished = true
        call.responder.close(dropQueued: true)
        call.observer.onCancel(status)
    }

    func cancelAllStreaming(_ status: GRPCStatus) {
        let open = streams.filter { $0.value.streaming.map { !$0.finished } ?? false }.keys.sorted()
        for streamID in open { removeStream(streamID, status: status) }
    }

    private func removeStream(_ streamID: HTTP2StreamID, status: GRPCStatus) {
        dropBody(streamID)
        if let call = streams.removeValue(forKey: streamID)?.streaming { cancelStreaming(call, status) }
    }

    /// Writes what `responder` queued, as far as `inFlightBytesMax` allows, then its
    /// trailers once the queue drained.
    func pump(_ responder: StreamingResponder, context: ChannelHandlerContext) {
        let streamID = responder.streamID
        guard let call = streams[streamID]?.streaming, call.responder === responder, !call.finished else {
            return responder.connectionClosed()
        }
        let batch = responder.takeBatch()
        if batch.reset {
            call.finished = true
            write(HTTP2Frame(streamID: streamID, payload: .rstStream(.cancel)), context: context)
            dropBody(streamID)
            streams.removeValue(forKey: streamID)
            return
        }
        if !batch.messages.isEmpty {
            if !call.headersSent {
                call.headersSent = true
                write(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: Self.responseHeaders))), context: context)
            }
            var buffer = context.channel.allocator.buffer(
                capacity: batch.bytes + GRPCWire.prefixBytes * batch.messages.count)
            for message in batch.messages {
                buffer.writeInteger(UInt8(0))
                buffer.writeInteger(UInt32(message.count))
                buffer.writeBytes(message)
            }
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(.init(data: .byteBuffer(buffer))))), promise: promise)
            flushPending = true
            let observer = call.observer
            let (bytes, count) = (batch.bytes, batch.messages.count)
            promise.futureResult.whenComplete { _ in
                if responder.written(bytes: bytes, messages: count) { observer.onWritable() }
            }
        }
        if let status = batch.finish {
            writeTrailers(streamID, call: call, status: status, context: context)
        }
    }

    /// The call's last frame. If the client is still sending, the stream is then reset with
    /// NO_ERROR (as grpc-go does) — only after the trailers left: a reset drops whatever
    /// HTTP2Codec still queues for the stream.
    private func writeTrailers(_ streamID: HTTP2StreamID, call: StreamingCallState, status: GRPCStatus, context: ChannelHandlerContext) {
        call.finished = true
        let trailers: HPACKHeaders
        if call.headersSent {
            trailers = status.code == GRPCStatus.ok && status.message.isEmpty
                ? Self.okTrailers
                : ["grpc-status": String(status.code), "grpc-message": GRPCMessageEncoding.encode(status.message)]
        } else {
            trailers = Self.trailersOnly(status)
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: trailers, endStream: true)))),
            promise: promise)
        flushPending = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess {
            let handler = handler.value
            guard let context = handler.context, let stream = handler.streams[streamID], !stream.ended else { return }
            handler.dropBody(streamID)
            handler.streams.removeValue(forKey: streamID)
            context.writeAndFlush(handler.wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(.noError))), promise: nil)
            handler.closeIfDrained(context: context)
        }
    }
}

extension StreamingResponder {
    struct Batch {
        var messages: [[UInt8]] = []
        var bytes = 0
        var finish: GRPCStatus?
        var reset = false
    }

    /// On the event loop: the messages to hand to HTTP2Codec now, and the trailers if
    /// the queue is empty after them.
    func takeBatch() -> Batch {
        state.withLockedValue { state in
            state.scheduled = false
            var batch = Batch()
            if state.resetRequested {
                state.resetRequested = false
                batch.reset = true
                Self.dropQueue(&state)
                return batch
            }
            while let next = state.queue.first, state.inFlightBytes + batch.bytes < limits.inFlightBytesMax {
                batch.messages.append(next)
                batch.bytes += next.count
                state.queue.removeFirst()
            }
            state.inFlightBytes += batch.bytes
            if state.queue.isEmpty, let finish = state.finish, !state.closed {
                state.closed = true
                batch.finish = finish
            }
            return batch
        }
    }

    /// On the event loop: the socket took (or the stream dropped) a batch. Returns whether
    /// `onWritable` is due; asks for another pass if more is queued.
    func written(bytes: Int, messages: Int) -> Bool {
        let (writable, schedule) = state.withLockedValue { state -> (Bool, Bool) in
            state.inFlightBytes -= bytes
            state.queuedBytes -= bytes
            state.queuedMessages -= messages
            precondition(state.inFlightBytes >= 0, "streaming in-flight bytes went negative")
            precondition(state.queuedBytes >= state.inFlightBytes, "streaming queue smaller than what is in flight")
            var writable = false
            if state.refused && !state.closed && state.finish == nil
                && state.queuedBytes <= limits.queuedBytesMax / 2 && state.queuedMessages <= limits.queuedMessagesMax / 2
            {
                state.refused = false
                writable = true
            }
            let more = !state.queue.isEmpty || (state.finish != nil && !state.closed)
            guard more && !state.scheduled else { return (writable, false) }
            state.scheduled = true
            return (writable, true)
        }
        if schedule { outbox.post(self) }
        return writable
    }

    /// The call is over: refuse sends; with `dropQueued`, forget what never reached
    /// HTTP2Codec (what did is released by its write promises).
    func close(dropQueued: Bool) {
        state.withLockedValue { state in
            state.closed = true
            if dropQueued { Self.dropQueue(&state) }
        }
    }

    /// The connection (or the stream) is gone before the responder's pass.
    func connectionClosed() {
        close(dropQueued: true)
        state.withLockedValue { $0.scheduled = false }
    }

    private static func dropQueue(_ state: inout State) {
        for message in state.queue {
            state.queuedBytes -= message.count
            state.queuedMessages -= 1
        }
        state.queue.removeAll()
    }
}
