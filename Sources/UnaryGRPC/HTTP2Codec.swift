import NIOCore
import NIOHPACK
import NIOHTTP2

/// HTTP/2 (RFC 9113) as gRPC uses it, between the socket and `UnaryServerHandler` (role
/// `.server`) or `UnaryClientHandler` (`.client`): bytes in, `HTTP2Frame`s out to the
/// handler, and back.
///
/// It replaces swift-nio-http2's `NIOHTTP2Handler` because that was the largest item in a
/// replica's profile: 26 % of its CPU at 256 puts in flight (stream and connection state
/// machines, header validation, a buffer for every outbound frame), and most of the load
/// generator's. gRPC needs a small part of HTTP/2 — no push, no priorities, streams opened
/// by the client only, no dynamic-table indexing of what is sent — so this does that part:
///
/// - Frames are parsed straight from the read buffer and written into one output buffer per
///   flush; a unary answer (HEADERS, DATA, trailers) is three frame headers and ~40 bytes
///   of header block, with no allocation of its own.
/// - Header blocks are decoded with swift-nio-http2's `HPACKDecoder` (it keeps the dynamic
///   table), bounded by `Limits.headerListBytesMax`. Header blocks sent are literals that
///   are never indexed, so the client's table size never matters.
/// - Flow control as RFC 9113 §5.2 has it. Outbound: DATA respects the connection's and the
///   stream's send windows and the client's SETTINGS_MAX_FRAME_SIZE; what does not fit
///   waits per stream, in order with the stream's trailers, until WINDOW_UPDATE. Inbound:
///   the connection window is enforced (FLOW_CONTROL_ERROR) and given back as it is used;
///   stream windows are the handler's (`InboundCredit.received`), which bounds each body
///   and the connection's buffered bytes itself.
/// - Protocol errors end the connection with GOAWAY, its debug data saying what was wrong,
///   and `onProtocolError` told the same; errors of one stream reset that stream only.
///   Floods of control frames or resets (RFC 9113 §10.5; the "rapid reset" attack) end it
///   with ENHANCE_YOUR_CALM; so does a header block that never ends.
///
/// Contract with the handler: inbound `.headers` (a new stream on the server; response
/// headers on the client; trailers), `.data` (whose `paddingBytes` counts the pad-length
/// byte too, so data plus padding is the frame's flow-controlled length), `.rstStream` and
/// `.goAway`; a `StreamClosedEvent` after a stream closed both ways. Outbound `.headers` (on
/// the client, HEADERS on a new odd stream id opens it), `.data` (byte buffers),
/// `.rstStream`, `.windowUpdate` and `.goAway`; a write's promise completes once its last
/// byte went to the socket, which is what streaming back-pressure waits on. An
/// RST_STREAM(NO_ERROR) for a stream with queued output goes out after that output
/// (grpc-go's way of ending a call whose client is still sending). A client's stream over
/// the server's SETTINGS_MAX_CONCURRENT_STREAMS is not opened: the handler gets
/// `.rstStream(.refusedStream)` for it at once.
final class HTTP2Codec: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = ByteBuffer

    enum Role: Sendable {
        case server, client
    }

    struct Limits: Sendable {
        /// Server: streams a client may open at once (advertised as
        /// SETTINGS_MAX_CONCURRENT_STREAMS); the next one is refused with
        /// RST_STREAM(REFUSED_STREAM). Unused by the client, which opens what the server allows.
        var concurrentStreamsMax: Int
        /// A decoded header list's size as RFC 7541 counts it (SETTINGS_MAX_HEADER_LIST_SIZE).
        var headerListBytesMax = HPACKDecoder.defaultMaxHeaderListSize
        /// Inbound PING, SETTINGS and PRIORITY frames per `rateWindow`. grpc-go sends a
        /// BDP-estimation PING about once per round trip while data flows, so this sits far
        /// above what a well-behaved client sends at full speed, still bounded.
        var controlFramesMax = 200_000
        /// Inbound RST_STREAM frames per `rateWindow` (clients cancel calls on timeouts).
        var resetsMax = 50_000
        var rateWindow = TimeAmount.seconds(10)
        /// Replies to control frames (SETTINGS and PING acknowledgements) queued while the
        /// client does not read; more ends the connection.
        var unreadControlRepliesMax = 10_000
    }

    /// RFC 9113 §6 frame types and flags.
    enum FrameType: UInt8 {
        case data = 0, headers, priority, rstStream, settings, pushPromise, ping, goAway, windowUpdate, continuation
    }
    static let endStreamFlag: UInt8 = 0x1
    static let ackFlag: UInt8 = 0x1
    static let endHeadersFlag: UInt8 = 0x4
    static let paddedFlag: UInt8 = 0x8
    static let priorityFlag: UInt8 = 0x20

    static let frameHeaderBytes = 9
    /// The largest frame we accept: the protocol's default SETTINGS_MAX_FRAME_SIZE, which we
    /// do not raise.
    static let receivedFrameBytesMax = 16_384
    static let windowMax = Int(Int32.max)
    /// The protocol's initial window, before any SETTINGS or WINDOW_UPDATE.
    static let initialWindowBytes = 65_535
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// A stream's sending side. A class: every frame looks its stream up, and a struct
    /// would be copied out of the dictionary and back.
    final class Stream {
        var sendWindow: Int
        /// The peer sent END_STREAM.
        var remoteClosed = false
        /// The peer sent HEADERS on it (on the server, the ones that opened it).
        var headersReceived = false
        /// END_STREAM or RST_STREAM was written or queued.
        var localClosed = false
        /// Output that waits for send window, in order.
        var queued: [Queued] = []
        var inBlockedList = false

        init(sendWindow: Int) {
            self.sendWindow = sendWindow
        }
    }

    enum Queued {
        case data(ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?)
        case headers(ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?)
        case reset(HTTP2ErrorCode, promise: EventLoopPromise<Void>?)
    }

    /// A count of events over a fixed window, for flood limits.
    struct RateWindow {
        var start = NIODeadline.uptimeNanoseconds(0)
        var count = 0

        mutating func admit(max: Int, window: TimeAmount) -> Bool {
            let now = NIODeadline.now()
            if now - start > window {
                start = now
                count = 0
            }
            count += 1
            return count <= max
        }
    }

    /// The stream a write named is gone (closed or reset).
    struct StreamClosed: Error {}
    /// The connection closed before the write went out.
    struct ConnectionClosed: Error {}
    /// A frame type the handler should never write.
    struct UnsupportedFrame: Error {}

    let role: Role
    let limits: Limits
    let onProtocolError: @Sendable (String) -> Void

    private var decoder: HPACKDecoder
    private var input: ByteBuffer?
    private var prefaceReceived = false
    private var settingsReceived = false
    /// A HEADERS frame without END_HEADERS: the block so far, until its last CONTINUATION.
    private var headerBlock: (streamID: HTTP2StreamID, endStream: Bool, block: ByteBuffer)?

    private var streams: [HTTP2StreamID: Stream] = [:]
    /// The highest stream id opened (by the client, whichever side this is): frames on
    /// unknown ids up to it are for closed streams, above it for idle ones.
    private var lastClientStreamID = HTTP2StreamID.rootStream
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, on the client.
    private var peerConcurrentStreamsMax = Int.max
    /// Streams with queued DATA, in the order they blocked.
    private var blocked: [HTTP2StreamID] = []
    private var closedStreams: [HTTP2StreamID] = []

    private var connectionSendWindow = HTTP2Codec.initialWindowBytes
    private var peerInitialWindow = HTTP2Codec.initialWindowBytes
    private var peerMaxFrameBytes = 16_384
    /// What the client may still send on the connection, and what it sent since we last
    /// gave credit back.
    private var receiveWindow = HTTP2Codec.initialWindowBytes
    private var receivedUnacknowledged = 0

    private var controlFrames = RateWindow()
    private var resets = RateWindow()
    private var unreadControlReplies = 0

    private var output = ByteBuffer()
    private var outputPromises: [EventLoopPromise<Void>] = []
    private var closing = false
    private var prefaceSent = false

    init(role: Role = .server, limits: Limits, onProtocolError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.role = role
        self.limits = limits
        // The server reads the client's preface; the client has none to read.
        self.prefaceReceived = role == .client
        self.onProtocolError = onProtocolError
        self.decoder = HPACKDecoder(
            allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
            maxHeaderListSize: limits.headerListBytesMax)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        output = context.channel.allocator.buffer(capacity: 1024)
        if context.channel.isActive { sendPreface(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendPreface(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        failQueued()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failQueued()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { unreadControlReplies = 0 }
        context.fireChannelWritabilityChanged()
    }

    /// The client's magic first; then SETTINGS (the server's stream limit or the client's
    /// "no push", a 1 MiB initial stream window, the header-list bound), then the connection
    /// window opened to `InboundCredit.connectionWindowBytes`.
    private func sendPreface(context: ChannelHandlerContext) {
        guard !prefaceSent else { return }
        prefaceSent = true
        if role == .client { output.writeBytes(Self.preface) }
        let settings: [(UInt16, Int)] = [
            role == .server ? (0x3, limits.concurrentStreamsMax) : (0x2, 0),
            (0x4, InboundCredit.streamWindowBytes),
            (0x6, limits.headerListBytesMax),
        ]
        writeFrameHeader(length: 6 * settings.count, type: .settings, flags: 0, streamID: .rootStream)
        for (identifier, value) in settings {
            output.writeInteger(identifier)
            output.writeInteger(UInt32(value))
        }
        let increment = InboundCredit.connectionWindowBytes - Self.initialWindowBytes
        writeWindowUpdate(streamID: .rootStream, increment: increment)
        receiveWindow += increment
        flushOutput(context: context)
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var bytes = unwrapInboundIn(data)
        if var held = input {
            input = nil
            held.writeBuffer(&bytes)
            bytes = held
        }
        if !prefaceReceived {
            guard bytes.readableBytes >= Self.preface.count else {
                input = bytes
                return
            }
            guard bytes.readBytes(length: Self.preface.count) == Self.preface else {
                return connectionError(.protocolError, "the connection did not start with the HTTP/2 client preface", context: context)
            }
            prefaceReceived = true
        }
        while bytes.readableBytes >= Self.frameHeaderBytes {
            let start = bytes.readerIndex
            let length = Int(bytes.getInteger(at: start, as: UInt8.self)!) << 16
                | Int(bytes.getInteger(at: start + 1, as: UInt16.self)!)
            guard length <= Self.receivedFrameBytesMax else {
                return connectionError(
                    .frameSizeError,
                    "a frame of \(length) bytes is over the \(Self.receivedFrameBytesMax)-byte frame size", context: context)
            }
            guard bytes.readableBytes >= Self.frameHeaderBytes + length else { break }
            let type = bytes.getInteger(at: start + 3, as: UInt8.self)!
            let flags = bytes.getInteger(at: start + 4, as: UInt8.self)!
            let rawStreamID = bytes.getInteger(at: start + 5, as: UInt32.self)! & 0x7FFF_FFFF
            bytes.moveReaderIndex(forwardBy: Self.frameHeaderBytes)
            let payload = bytes.readSlice(length: length)!
            process(
                type: type, flags: flags, streamID: HTTP2StreamID(Int32(rawStreamID)), payload: payload, context: context)
            if closing { return }
        }
        if bytes.readableBytes > 0 { input = bytes }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if output.readableBytes > 0 || !closedStreams.isEmpty { flushOutput(context: context) }
    }

    private func process(
        type rawType: UInt8, flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext
    ) {
        let type = FrameType(rawValue: rawType)
        if let pending = headerBlock, type != .continuation || streamID != pending.streamID {
            return connectionError(
                .protocolError, "a header block of stream \(Int(pending.streamID)) was interrupted by another frame",
                context: context)
        }
        guard settingsReceived || type == .settings else {
            return connectionError(.protocolError, "the connection preface was not followed by SETTINGS", context: context)
        }
        switch type {
        case .data: receiveData(flags: flags, streamID: streamID, payload: payload, context: context)
        case .headers: receiveHeaders(flags: flags, streamID: streamID, payload: payload, context: context)
        case .continuation: receiveContinuation(flags: flags, streamID: streamID, payload: payload, context: context)
        case .priority:
            guard streamID != .rootStream else {
                return connectionError(.protocolError, "PRIORITY on stream 0", context: context)
            }
            guard payload.readableBytes == 5 else {
                return connectionError(.frameSizeError, "a PRIORITY frame of \(payload.readableBytes) bytes", context: context)
            }
            _ = admitControlFrame(context: context)
        case .rstStream: receiveReset(streamID: streamID, payload: payload, context: context)
        case .settings: receiveSettings(flags: flags, streamID: streamID, payload: payload, context: context)
        case .pushPromise: connectionError(.protocolError, "PUSH_PROMISE, which gRPC does not use", context: context)
        case .ping: receivePing(flags: flags, streamID: streamID, payload: payload, context: context)
        case .goAway:
            receiveGoAway(streamID: streamID, payload: payload, context: context)
        case .windowUpdate: receiveWindowUpdate(streamID: streamID, payload: payload, context: context)
        case nil: break  // RFC 9113 §4.1: unknown frame types are ignored.
        }
    }

    private func receiveData(flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID != .rootStream else {
            return connectionError(.protocolError, "DATA on stream 0", context: context)
        }
        let flowControlled = payload.readableBytes
        receiveWindow -= flowControlled
        guard receiveWindow >= 0 else {
            return connectionError(
                .flowControlError, "the client sent more DATA than the connection's window allowed", context: context)
        }
        receivedUnacknowledged += flowControlled
        if receivedUnacknowledged >= InboundCredit.connectionWindowBytes / 2 {
            writeWindowUpdate(streamID: .rootStream, increment: receivedUnacknowledged)
            receiveWindow += receivedUnacknowledged
            receivedUnacknowledged = 0
        }
        var data = payload
        var paddingBytes: Int?
        if flags & Self.paddedFlag != 0 {
            guard let padding = data.readInteger(as: UInt8.self), Int(padding) <= data.readableBytes else {
                return connectionError(.protocolError, "DATA padding longer than its frame", context: context)
            }
            data = data.readSlice(length: data.readableBytes - Int(padding))!
            paddingBytes = Int(padding) + 1
        }
        guard let stream = streams[streamID] else {
            if streamID > lastClientStreamID {
                return connectionError(.protocolError, "DATA on stream \(Int(streamID)), which was never opened", context: context)
            }
            return  // a stream that was reset or refused: its data is dropped
        }
        if stream.remoteClosed { return streamError(streamID, .streamClosed, context: context) }
        let endStream = flags & Self.endStreamFlag != 0
        if endStream { stream.remoteClosed = true }
        context.fireChannelRead(
            wrapInboundOut(
                HTTP2Frame(
                    streamID: streamID,
                    payload: .data(.init(data: .byteBuffer(data), endStream: endStream, paddingBytes: paddingBytes)))))
        if endStream, let stream = streams[streamID] { closeIfDone(streamID, stream) }
    }

    private func receiveHeaders(flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID != .rootStream, Int32(streamID) % 2 == 1 else {
            return connectionError(.protocolError, "HEADERS on stream \(Int(streamID)), which a client cannot open", context: context)
        }
        var block = payload
        var padding = 0
        if flags & Self.paddedFlag != 0 {
            guard let padLength = block.readInteger(as: UInt8.self) else {
                return connectionError(.frameSizeError, "an empty padded HEADERS frame", context: context)
            }
            padding = Int(padLength)
        }
        if flags & Self.priorityFlag != 0 {
            guard block.readableBytes >= 5 else {
                return connectionError(.frameSizeError, "a HEADERS frame too short for its priority", context: context)
            }
            block.moveReaderIndex(forwardBy: 5)
        }
        guard padding <= block.readableBytes else {
            return connectionError(.protocolError, "HEADERS padding longer than its frame", context: context)
        }
        block = block.readSlice(length: block.readableBytes - padding)!
        let endStream = flags & Self.endStreamFlag != 0
        if flags & Self.endHeadersFlag == 0 {
            headerBlock = (streamID, endStream, block)
            return
        }
        receiveHeaderBlock(block, streamID: streamID, endStream: endStream, context: context)
    }

    private func receiveContinuation(flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard var pending = headerBlock else {
            return connectionError(.protocolError, "CONTINUATION without HEADERS on stream \(Int(streamID))", context: context)
        }
        headerBlock = nil
        var bytes = payload
        pending.block.writeBuffer(&bytes)
        // A block may be as large as the list it decodes to plus HPACK's per-field overhead;
        // beyond twice that it is a client that never ends it (CVE-2024-27316's flood).
        guard pending.block.readableBytes <= 2 * limits.headerListBytesMax else {
            return connectionError(
                .enhanceYourCalm, "a header block over \(2 * limits.headerListBytesMax) bytes", context: context)
        }
        if flags & Self.endHeadersFlag == 0 {
            headerBlock = pending
            return
        }
        receiveHeaderBlock(pending.block, streamID: streamID, endStream: pending.endStream, context: context)
    }

    /// A complete header block: decoded whatever its stream's state (the decoder's table
    /// must follow every block the client encoded), then a new stream, the client's
    /// trailers, or nothing for a stream already gone.
    private func receiveHeaderBlock(
        _ block: ByteBuffer, streamID: HTTP2StreamID, endStream: Bool, context: ChannelHandlerContext
    ) {
        var block = block
        let headers: HPACKHeaders
        do {
            headers = try decoder.decodeHeaders(from: &block)
        } catch {
            return connectionError(
                .compressionError, "the header block of stream \(Int(streamID)) does not decode: \(error)", context: context)
        }
        if let stream = streams[streamID] {
            if stream.remoteClosed { return streamError(streamID, .streamClosed, context: context) }
            guard endStream || !stream.headersReceived else {
                return connectionError(
                    .protocolError, "a second HEADERS on stream \(Int(streamID)) without END_STREAM", context: context)
            }
            stream.headersReceived = true
            if endStream { stream.remoteClosed = true }
            context.fireChannelRead(
                wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers, endStream: endStream)))))
            if endStream, let stream = streams[streamID] { closeIfDone(streamID, stream) }
            return
        }
        guard streamID > lastClientStreamID else { return }  // reset or refused before
        guard role == .server else {
            return connectionError(
                .protocolError, "HEADERS on stream \(Int(streamID)), which this client never opened", context: context)
        }
        lastClientStreamID = streamID
        guard streams.count < limits.concurrentStreamsMax else {
            writeReset(streamID: streamID, code: .refusedStream)
            return
        }
        let stream = Stream(sendWindow: peerInitialWindow)
        stream.remoteClosed = endStream
        stream.headersReceived = true
        streams[streamID] = stream
        context.fireChannelRead(
            wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers, endStream: endStream)))))
    }

    private func receiveReset(streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID != .rootStream else {
            return connectionError(.protocolError, "RST_STREAM on stream 0", context: context)
        }
        guard payload.readableBytes == 4, let code = payload.getInteger(at: payload.readerIndex, as: UInt32.self) else {
            return connectionError(.frameSizeError, "an RST_STREAM frame of \(payload.readableBytes) bytes", context: context)
        }
        guard resets.admit(max: limits.resetsMax, window: limits.rateWindow) else {
            return connectionError(
                .enhanceYourCalm, "more than \(limits.resetsMax) RST_STREAM frames in \(limits.rateWindow.wholeSeconds) s",
                context: context)
        }
        guard let stream = streams.removeValue(forKey: streamID) else {
            if streamID > lastClientStreamID {
                return connectionError(.protocolError, "RST_STREAM on stream \(Int(streamID)), which was never opened", context: context)
            }
            return
        }
        fail(stream)
        context.fireChannelRead(
            wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(HTTP2ErrorCode(networkCode: Int(code))))))
    }

    /// The peer stops: a server takes no more streams above `lastStreamID`; the handler
    /// decides what that means for its calls.
    private func receiveGoAway(streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID == .rootStream else {
            return connectionError(.protocolError, "GOAWAY on stream \(Int(streamID))", context: context)
        }
        var fields = payload
        guard let last = fields.readInteger(as: UInt32.self), let code = fields.readInteger(as: UInt32.self) else {
            return connectionError(.frameSizeError, "a GOAWAY frame of \(payload.readableBytes) bytes", context: context)
        }
        context.fireChannelRead(
            wrapInboundOut(
                HTTP2Frame(
                    streamID: .rootStream,
                    payload: .goAway(
                        lastStreamID: HTTP2StreamID(Int32(last & 0x7FFF_FFFF)), errorCode: HTTP2ErrorCode(networkCode: Int(code)),
                        opaqueData: fields.readableBytes > 0 ? fields : nil))))
    }

    private func receiveSettings(flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID == .rootStream else {
            return connectionError(.protocolError, "SETTINGS on stream \(Int(streamID))", context: context)
        }
        if flags & Self.ackFlag != 0 {
            guard payload.readableBytes == 0 else {
                return connectionError(.frameSizeError, "a SETTINGS acknowledgement with a payload", context: context)
            }
            return
        }
        guard payload.readableBytes % 6 == 0 else {
            return connectionError(.frameSizeError, "a SETTINGS frame of \(payload.readableBytes) bytes", context: context)
        }
        guard admitControlFrame(context: context) else { return }
        settingsReceived = true
        var settings = payload
        var windowGrew = false
        while let identifier = settings.readInteger(as: UInt16.self), let rawValue = settings.readInteger(as: UInt32.self) {
            let value = Int(rawValue)
            switch identifier {
            case 0x3:  // MAX_CONCURRENT_STREAMS: what a client may open.
                peerConcurrentStreamsMax = value
            case 0x2:  // ENABLE_PUSH: nobody pushes, but the value must be valid.
                guard value <= 1 else {
                    return connectionError(.protocolError, "SETTINGS_ENABLE_PUSH of \(value)", context: context)
                }
            case 0x4:  // INITIAL_WINDOW_SIZE: changes every open stream's window by the difference.
                guard value <= Self.windowMax else {
                    return connectionError(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE of \(value)", context: context)
                }
                let delta = value - peerInitialWindow
                peerInitialWindow = value
                for stream in streams.values {
                    stream.sendWindow += delta
                    guard stream.sendWindow <= Self.windowMax else {
                        return connectionError(.flowControlError, "a stream window over 2^31-1 bytes", context: context)
                    }
                }
                if delta > 0 { windowGrew = true }
            case 0x5:  // MAX_FRAME_SIZE
                guard value >= 16_384 && value <= 16_777_215 else {
                    return connectionError(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(value)", context: context)
                }
                peerMaxFrameBytes = value
            default:
                break  // HEADER_TABLE_SIZE (we never index), others.
            }
        }
        writeControlReply(context: context) {
            $0.writeFrameHeader(length: 0, type: .settings, flags: Self.ackFlag, streamID: .rootStream)
        }
        if windowGrew { sendBlocked() }
    }

    private func receivePing(flags: UInt8, streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard streamID == .rootStream else {
            return connectionError(.protocolError, "PING on stream \(Int(streamID))", context: context)
        }
        guard payload.readableBytes == 8 else {
            return connectionError(.frameSizeError, "a PING frame of \(payload.readableBytes) bytes", context: context)
        }
        guard flags & Self.ackFlag == 0 else { return }  // we send no PINGs of our own
        guard admitControlFrame(context: context) else { return }
        writeControlReply(context: context) { codec in
            var opaque = payload
            codec.writeFrameHeader(length: 8, type: .ping, flags: Self.ackFlag, streamID: .rootStream)
            codec.output.writeBuffer(&opaque)
        }
    }

    private func receiveWindowUpdate(streamID: HTTP2StreamID, payload: ByteBuffer, context: ChannelHandlerContext) {
        guard payload.readableBytes == 4, let raw = payload.getInteger(at: payload.readerIndex, as: UInt32.self) else {
            return connectionError(.frameSizeError, "a WINDOW_UPDATE frame of \(payload.readableBytes) bytes", context: context)
        }
        let increment = Int(raw & 0x7FFF_FFFF)
        if streamID == .rootStream {
            guard increment > 0 else {
                return connectionError(.protocolError, "a WINDOW_UPDATE of 0 for the connection", context: context)
            }
            connectionSendWindow += increment
            guard connectionSendWindow <= Self.windowMax else {
                return connectionError(.flowControlError, "the connection's send window went over 2^31-1 bytes", context: context)
            }
            sendBlocked()
            return
        }
        guard let stream = streams[streamID] else {
            if streamID > lastClientStreamID {
                return connectionError(
                    .protocolError, "WINDOW_UPDATE on stream \(Int(streamID)), which was never opened", context: context)
            }
            return
        }
        guard increment > 0 else { return streamError(streamID, .protocolError, context: context) }
        stream.sendWindow += increment
        guard stream.sendWindow <= Self.windowMax else { return streamError(streamID, .flowControlError, context: context) }
        sendQueued(streamID, stream)
    }

    private func admitControlFrame(context: ChannelHandlerContext) -> Bool {
        guard controlFrames.admit(max: limits.controlFramesMax, window: limits.rateWindow) else {
            connectionError(
                .enhanceYourCalm, "more than \(limits.controlFramesMax) control frames in \(limits.rateWindow.wholeSeconds) s",
                context: context)
            return false
        }
        return true
    }

    /// A reply the protocol owes (an acknowledgement), bounded while the client does not read.
    private func writeControlReply(context: ChannelHandlerContext, _ write: (HTTP2Codec) -> Void) {
        if !context.channel.isWritable {
            unreadControlReplies += 1
            guard unreadControlReplies <= limits.unreadControlRepliesMax else {
                return connectionError(
                    .enhanceYourCalm,
                    "\(limits.unreadControlRepliesMax) acknowledgements queued for a client that does not read",
                    context: context)
            }
        }
        write(self)
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing else {
            promise?.fail(ConnectionClosed())
            return
        }
        let frame = unwrapOutboundIn(data)
        let streamID = frame.streamID
        switch frame.payload {
        case .headers(let headers):
            if role == .client && streams[streamID] == nil && streamID > lastClientStreamID {
                guard open(streamID, context: context) else {
                    promise?.fail(StreamClosed())
                    return
                }
            }
            guard let stream = openForSending(streamID, promise) else { return }
            if headers.endStream { stream.localClosed = true }
            if stream.queued.isEmpty {
                writeHeaders(headers.headers, streamID: streamID, endStream: headers.endStream)
                complete(promise)
                closeIfDone(streamID, stream)
            } else {
                var block = context.channel.allocator.buffer(capacity: 64)
                Self.encode(headers.headers, into: &block)
                stream.queued.append(.headers(block, endStream: headers.endStream, promise: promise))
            }
        case .data(let data):
            guard case .byteBuffer(var buffer) = data.data else {
                promise?.fail(UnsupportedFrame())
                return
            }
            guard let stream = openForSending(streamID, promise) else { return }
            if data.endStream { stream.localClosed = true }
            if stream.queued.isEmpty && writeData(&buffer, streamID: streamID, stream: stream, endStream: data.endStream) {
                complete(promise)
                closeIfDone(streamID, stream)
            } else {
                stream.queued.append(.data(buffer, endStream: data.endStream, promise: promise))
                block(streamID, stream)
            }
        case .rstStream(let code):
            guard let stream = streams[streamID] else {
                promise?.succeed()
                return
            }
            if code == .noError && !stream.queued.isEmpty {
                stream.localClosed = true
                stream.queued.append(.reset(code, promise: promise))
                return
            }
            streams.removeValue(forKey: streamID)
            fail(stream)
            writeReset(streamID: streamID, code: code)
            complete(promise)
        case .windowUpdate(let increment):
            if streamID == .rootStream { receiveWindow += increment }
            writeWindowUpdate(streamID: streamID, increment: increment)
            complete(promise)
        case .goAway(let lastStreamID, let code, let opaqueData):
            writeGoAway(lastStreamID: lastStreamID, code: code, debug: opaqueData)
            complete(promise)
        default:
            promise?.fail(UnsupportedFrame())
        }
    }

    /// The stream a HEADERS or DATA write is for, if it may still send; else the write fails.
    private func openForSending(_ streamID: HTTP2StreamID, _ promise: EventLoopPromise<Void>?) -> Stream? {
        guard let stream = streams[streamID], !stream.localClosed else {
            promise?.fail(StreamClosed())
            return nil
        }
        return stream
    }

    /// A client's new stream, within the server's stream limit; else the handler hears at
    /// once that it was refused.
    private func open(_ streamID: HTTP2StreamID, context: ChannelHandlerContext) -> Bool {
        guard Int32(streamID) % 2 == 1 else { return false }
        lastClientStreamID = streamID
        guard streams.count < peerConcurrentStreamsMax else {
            context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(.refusedStream))))
            return false
        }
        streams[streamID] = Stream(sendWindow: peerInitialWindow)
        return true
    }

    func flush(context: ChannelHandlerContext) {
        flushOutput(context: context)
    }

    private func flushOutput(context: ChannelHandlerContext) {
        if output.readableBytes > 0 {
            var promise: EventLoopPromise<Void>?
            if !outputPromises.isEmpty {
                let waiting = outputPromises
                outputPromises.removeAll(keepingCapacity: true)
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { result in
                    for waiter in waiting { waiter.completeWith(result) }
                }
                promise = written
            }
            let capacity = output.readableBytes
            context.write(wrapOutboundOut(output), promise: promise)
            output = context.channel.allocator.buffer(capacity: Swift.max(1024, Swift.min(capacity, 1 << 16)))
        }
        context.flush()
        if !closedStreams.isEmpty {
            let closed = closedStreams
            closedStreams.removeAll()
            for streamID in closed {
                context.fireUserInboundEventTriggered(StreamClosedEvent(streamID: streamID, reason: nil))
            }
        }
    }

    private func complete(_ promise: EventLoopPromise<Void>?) {
        if let promise { outputPromises.append(promise) }
    }

    /// DATA frames for as much of `buffer` as the windows allow; true when all of it (and
    /// END_STREAM if asked) went out, else `buffer` holds the rest.
    private func writeData(_ buffer: inout ByteBuffer, streamID: HTTP2StreamID, stream: Stream, endStream: Bool) -> Bool {
        repeat {
            let allowed = Swift.min(stream.sendWindow, connectionSendWindow, peerMaxFrameBytes)
            let size = Swift.min(buffer.readableBytes, Swift.max(allowed, 0))
            if size == 0 && buffer.readableBytes > 0 { return false }
            var chunk = buffer.readSlice(length: size)!
            let last = buffer.readableBytes == 0
            writeFrameHeader(length: size, type: .data, flags: last && endStream ? Self.endStreamFlag : 0, streamID: streamID)
            output.writeBuffer(&chunk)
            stream.sendWindow -= size
            connectionSendWindow -= size
        } while buffer.readableBytes > 0
        return true
    }

    /// Writes a stream's queued output as far as its windows allow.
    private func sendQueued(_ streamID: HTTP2StreamID, _ stream: Stream) {
        while let first = stream.queued.first {
            switch first {
            case .data(var buffer, let endStream, let promise):
                guard writeData(&buffer, streamID: streamID, stream: stream, endStream: endStream) else {
                    stream.queued[0] = .data(buffer, endStream: endStream, promise: promise)
                    return block(streamID, stream)
                }
                stream.queued.removeFirst()
                complete(promise)
            case .headers(let block, let endStream, let promise):
                stream.queued.removeFirst()
                writeHeaderBlock(block, streamID: streamID, endStream: endStream)
                complete(promise)
            case .reset(let code, let promise):
                stream.queued.removeFirst()
                streams.removeValue(forKey: streamID)
                fail(stream)
                writeReset(streamID: streamID, code: code)
                complete(promise)
                return
            }
        }
        closeIfDone(streamID, stream)
    }

    private func block(_ streamID: HTTP2StreamID, _ stream: Stream) {
        guard !stream.inBlockedList else { return }
        stream.inBlockedList = true
        blocked.append(streamID)
    }

    /// After the connection window (or every stream's) grew: the blocked streams, in order.
    private func sendBlocked() {
        let waiting = blocked
        blocked.removeAll()
        for streamID in waiting {
            guard let stream = streams[streamID] else { continue }
            stream.inBlockedList = false
            sendQueued(streamID, stream)
        }
    }

    private func closeIfDone(_ streamID: HTTP2StreamID, _ stream: Stream) {
        guard stream.localClosed && stream.remoteClosed && stream.queued.isEmpty else { return }
        streams.removeValue(forKey: streamID)
        closedStreams.append(streamID)
    }

    private func fail(_ stream: Stream) {
        for queued in stream.queued {
            switch queued {
            case .data(_, _, let promise), .headers(_, _, let promise), .reset(_, let promise):
                promise?.fail(StreamClosed())
            }
        }
        stream.queued.removeAll()
    }

    private func failQueued() {
        for stream in streams.values { fail(stream) }
        streams.removeAll()
        let waiting = outputPromises
        outputPromises.removeAll()
        for promise in waiting { promise.fail(ConnectionClosed()) }
    }

    // MARK: - Errors

    /// RFC 9113 §5.4.2: this stream only.
    private func streamError(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        writeReset(streamID: streamID, code: code)
        if let stream = streams.removeValue(forKey: streamID) {
            fail(stream)
            context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(code))))
        }
    }

    /// RFC 9113 §5.4.1: GOAWAY saying why, then close.
    private func connectionError(_ code: HTTP2ErrorCode, _ message: String, context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        headerBlock = nil
        input = nil
        onProtocolError(message)
        var debug = context.channel.allocator.buffer(capacity: message.utf8.count)
        debug.writeString(message)
        writeGoAway(lastStreamID: lastClientStreamID, code: code, debug: debug)
        flushOutput(context: context)
        failQueued()
        context.close(promise: nil)
    }

    // MARK: - Encoding

    private func writeFrameHeader(length: Int, type: FrameType, flags: UInt8, streamID: HTTP2StreamID) {
        output.writeInteger(UInt32(length) << 8 | UInt32(type.rawValue))
        output.writeInteger(flags)
        output.writeInteger(UInt32(Int32(streamID)))
    }

    private func writeReset(streamID: HTTP2StreamID, code: HTTP2ErrorCode) {
        writeFrameHeader(length: 4, type: .rstStream, flags: 0, streamID: streamID)
        output.writeInteger(UInt32(code.networkCode))
    }

    private func writeWindowUpdate(streamID: HTTP2StreamID, increment: Int) {
        writeFrameHeader(length: 4, type: .windowUpdate, flags: 0, streamID: streamID)
        output.writeInteger(UInt32(increment))
    }

    private func writeGoAway(lastStreamID: HTTP2StreamID, code: HTTP2ErrorCode, debug: ByteBuffer?) {
        var debug = debug ?? ByteBuffer()
        // Debug data is for people; a frame's worth of it is plenty.
        let debugBytes = Swift.min(debug.readableBytes, peerMaxFrameBytes - 8)
        writeFrameHeader(length: 8 + debugBytes, type: .goAway, flags: 0, streamID: .rootStream)
        output.writeInteger(UInt32(Int32(lastStreamID)))
        output.writeInteger(UInt32(code.networkCode))
        var shown = debug.readSlice(length: debugBytes)!
        output.writeBuffer(&shown)
    }

    /// HEADERS (and CONTINUATION when the block is larger than a frame), encoded in place.
    private func writeHeaders(_ headers: HPACKHeaders, streamID: HTTP2StreamID, endStream: Bool) {
        let frameStart = output.writerIndex
        writeFrameHeader(length: 0, type: .headers, flags: 0, streamID: streamID)
        Self.encode(headers, into: &output)
        let length = output.writerIndex - frameStart - Self.frameHeaderBytes
        if length <= peerMaxFrameBytes {
            output.setInteger(UInt32(length) << 8 | UInt32(FrameType.headers.rawValue), at: frameStart)
            output.setInteger(Self.endHeadersFlag | (endStream ? Self.endStreamFlag : 0), at: frameStart + 4)
            return
        }
        let block = output.getSlice(at: frameStart + Self.frameHeaderBytes, length: length)!
        output.moveWriterIndex(to: frameStart)
        writeHeaderBlock(block, streamID: streamID, endStream: endStream)
    }

    private func writeHeaderBlock(_ block: ByteBuffer, streamID: HTTP2StreamID, endStream: Bool) {
        var rest = block
        var type = FrameType.headers
        repeat {
            var chunk = rest.readSlice(length: Swift.min(rest.readableBytes, peerMaxFrameBytes))!
            var flags: UInt8 = rest.readableBytes == 0 ? Self.endHeadersFlag : 0
            if type == .headers && endStream { flags |= Self.endStreamFlag }
            writeFrameHeader(length: chunk.readableBytes, type: type, flags: flags, streamID: streamID)
            output.writeBuffer(&chunk)
            type = .continuation
        } while rest.readableBytes > 0
    }

    /// RFC 7541 §6.2.2 literals that are never indexed, lengths in §5.1's integers, no
    /// Huffman coding; `:status: 200` as static-table entry 8.
    static func encode(_ headers: HPACKHeaders, into buffer: inout ByteBuffer) {
        for (name, value, _) in headers {
            if name == ":status" && value == "200" {
                buffer.writeInteger(UInt8(0x88))
                continue
            }
            buffer.writeInteger(UInt8(0x10))
            writeString(name, into: &buffer)
            writeString(value, into: &buffer)
        }
    }

    static func writeString(_ string: String, into buffer: inout ByteBuffer) {
        writeInteger(string.utf8.count, prefixBits: 7, into: &buffer)
        buffer.writeString(string)
    }

    static func writeInteger(_ value: Int, prefixBits: Int, into buffer: inout ByteBuffer) {
        let prefixMax = (1 << prefixBits) - 1
        guard value >= prefixMax else {
            buffer.writeInteger(UInt8(value))
            return
        }
        buffer.writeInteger(UInt8(prefixMax))
        var rest = value - prefixMax
        while rest >= 128 {
            buffer.writeInteger(UInt8(rest % 128 + 128))
            rest /= 128
        }
        buffer.writeInteger(UInt8(rest))
    }
}

extension TimeAmount {
    fileprivate var wholeSeconds: Int64 { nanoseconds / 1_000_000_000 }
}
