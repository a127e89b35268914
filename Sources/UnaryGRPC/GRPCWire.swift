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

/// Inbound stream credit of a frame-level HTTP/2 endpoint: `HTTP2Codec` gives the
/// connection's credit back itself; a stream's is the handler's, which knows when it has
/// consumed a body (unary bodies are consumed as they arrive; the caller bounds their size).
/// Streams get credit back once half their window was used, for bodies larger than that.
enum InboundCredit {
    /// Connection window we keep open: far above a single small request, so a client with
    /// hundreds of puts in flight never waits for credit.
    static let connectionWindowBytes = 1 << 20
    /// Advertised as SETTINGS_INITIAL_WINDOW_SIZE.
    static let streamWindowBytes = 1 << 20

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
