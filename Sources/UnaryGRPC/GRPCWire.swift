import NIOCore
import NIOHPACK
import NIOHTTP2

/// The parts of gRPC's HTTP/2 wire format a unary call needs ("gRPC over HTTP2",
/// grpc/grpc doc/PROTOCOL-HTTP2.md): one length-prefixed message each way, status in the
/// trailers.
public enum GRPCWire {
    public static let contentType = "application/grpc"
    /// Compressed flag (1 byte) + message length (4 bytes, big endian).
    static let prefixBytes = 5

    /// `payload` as one length-prefixed, uncompressed gRPC message.
    public static func frame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: prefixBytes + payload.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
        return buffer
    }

    /// The one message of a unary body, or why the body is not one.
    static func unframe(_ body: ByteBuffer) -> Result<[UInt8], GRPCStatus> {
        var body = body
        guard body.readableBytes >= prefixBytes,
            let compressed = body.readInteger(as: UInt8.self),
            let length = body.readInteger(as: UInt32.self)
        else {
            return .failure(
                GRPCStatus(
                    code: GRPCStatus.internalError,
                    message: "malformed gRPC message: \(body.readableBytes) bytes, less than the 5-byte prefix"))
        }
        guard compressed == 0 else {
            return .failure(
                GRPCStatus(code: GRPCStatus.unimplemented, message: "compressed gRPC messages are not supported"))
        }
        guard Int(length) == body.readableBytes else {
            return .failure(
                GRPCStatus(
                    code: GRPCStatus.internalError,
                    message:
                        "malformed gRPC message: prefix says \(length) bytes, body holds \(body.readableBytes) (one message per unary call)"
                ))
        }
        return .success(body.readBytes(length: Int(length)) ?? [])
    }

    /// Takes the next whole message off the front of a stream's `buffer`: nil while its last
    /// byte has not arrived. A message whose prefix announces more than `messageBytesMax`
    /// bytes fails at once, before its bytes are buffered.
    static func nextMessage(_ buffer: inout ByteBuffer, messageBytesMax: Int) -> Result<[UInt8]?, GRPCStatus> {
        guard let compressed = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self)
        else { return .success(nil) }
        guard compressed == 0 else {
            return .failure(
                GRPCStatus(code: GRPCStatus.unimplemented, message: "compressed gRPC messages are not supported"))
        }
        guard Int(length) <= messageBytesMax else {
            return .failure(
                GRPCStatus(
                    code: GRPCStatus.resourceExhausted,
                    message: "request message of \(length) bytes is larger than the server's limit of \(messageBytesMax) bytes"))
        }
        guard buffer.readableBytes >= prefixBytes + Int(length) else { return .success(nil) }
        buffer.moveReaderIndex(forwardBy: prefixBytes)
        return .success(buffer.readBytes(length: Int(length)))
    }

    /// The `grpc-timeout` header ("100m", "5S"; at most 8 digits and a unit), or nil when
    /// absent or malformed (then the server's own request timeout applies).
    static func timeout(_ text: String) -> Duration? {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
        var value: Int64 = 0
        for byte in utf8.dropLast() {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        switch unit {
        case UInt8(ascii: "H"): return .seconds(value * 3600)
        case UInt8(ascii: "M"): return .seconds(value * 60)
        case UInt8(ascii: "S"): return .seconds(value)
        case UInt8(ascii: "m"): return .milliseconds(value)
        case UInt8(ascii: "u"): return .microseconds(value)
        case UInt8(ascii: "n"): return .nanoseconds(value)
        default: return nil
        }
    }

    /// `duration` as a `grpc-timeout` value in milliseconds (at least 1).
    static func timeoutHeader(_ duration: Duration) -> String {
        let milliseconds = max(1, min(99_999_999, duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000))
        return "\(milliseconds)m"
    }
}

/// Inbound flow control of a frame-level HTTP/2 endpoint: without swift-nio-http2's stream
/// multiplexer nobody returns credit, so this does. Unary bodies are consumed as they
/// arrive (the caller bounds their size). The server's stream windows use `received`; its
/// connection window is `HTTP2ServerCodec`'s own.
///
/// On the client (swift-nio-http2), the connection window follows the window swift-nio-http2 itself tracks (its
/// `NIOHTTP2WindowUpdatedEvent` for the root stream), not our own count of DATA frames: frames
/// on streams it already closed or reset still use connection credit but never reach this
/// handler, and counting only what we see would leak credit until the connection stalls.
/// Streams get credit back once half their window was used, for bodies larger than that.
enum InboundCredit {
    /// Connection window we keep open: far above a single small request, so a client with
    /// hundreds of puts in flight never waits for credit.
    static let connectionWindowBytes = 1 << 20
    /// Advertised as SETTINGS_INITIAL_WINDOW_SIZE.
    static let streamWindowBytes = 1 << 20
    /// The protocol's initial connection window, before our first WINDOW_UPDATE.
    static let initialConnectionWindowBytes = 65_535

    /// The WINDOW_UPDATE that opens the connection window to `connectionWindowBytes`.
    static var openingUpdate: HTTP2Frame {
        HTTP2Frame(
            streamID: .rootStream,
            payload: .windowUpdate(windowSizeIncrement: connectionWindowBytes - initialConnectionWindowBytes))
    }

    /// The WINDOW_UPDATE to send after swift-nio-http2 reported the connection's inbound
    /// window, if it fell to half of `connectionWindowBytes` or below.
    static func connectionUpdate(_ event: NIOHTTP2WindowUpdatedEvent) -> HTTP2Frame? {
        guard event.streamID == .rootStream, let window = event.inboundWindowSize,
            window <= connectionWindowBytes / 2
        else { return nil }
        return HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionWindowBytes - window))
    }

    /// Accounts a received DATA frame on a stream this endpoint is reading; returns the
    /// stream's WINDOW_UPDATE if one is due.
    static func received(
        _ flowControlledBytes: Int, on streamID: HTTP2StreamID, streamUnacknowledged: inout Int, streamOpen: Bool
    ) -> HTTP2Frame? {
        streamUnacknowledged += flowControlledBytes
        guard streamOpen && streamUnacknowledged >= streamWindowBytes / 2 else { return nil }
        defer { streamUnacknowledged = 0 }
        return HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: streamUnacknowledged))
    }
}

extension NIOHTTP2Handler {
    /// The frame-level HTTP/2 handler of `UnaryClient` (the server has `HTTP2ServerCodec`). grpc-go peers (etcd, etcdctl, every Go
    /// client) send a BDP-estimation PING about once per round trip while data flows, and
    /// cancel calls with RST_STREAM on timeouts: swift-nio-http2's default of 200 such frames
    /// per 30 s would tear a busy connection down, so the flood limits sit far above what a
    /// well-behaved peer sends at full speed, still bounded.
    static func unaryGRPC(mode: ParserMode, concurrentStreamsMax: Int) -> NIOHTTP2Handler {
        var connection = ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: concurrentStreamsMax),
            HTTP2Setting(parameter: .initialWindowSize, value: InboundCredit.streamWindowBytes),
            HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
        ]
        connection.controlFrameRateLimit.maximumCount = controlFramesPerSecondMax * 10
        connection.controlFrameRateLimit.windowLength = .seconds(10)
        var stream = StreamConfiguration()
        stream.streamResetFrameRateLimit.maximumCount = resetFramesPerSecondMax * 10
        stream.streamResetFrameRateLimit.windowLength = .seconds(10)
        stream.streamErrorRateLimit.maximumCount = resetFramesPerSecondMax * 10
        stream.streamErrorRateLimit.windowLength = .seconds(10)
        return NIOHTTP2Handler(mode: mode, connectionConfiguration: connection, streamConfiguration: stream)
    }

    /// Inbound PING/SETTINGS/PRIORITY frames per second a connection may average.
    static let controlFramesPerSecondMax = 20_000
    /// Inbound RST_STREAM frames (and stream errors) per second a connection may average.
    static let resetFramesPerSecondMax = 5_000
}

