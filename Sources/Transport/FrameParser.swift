import NIOCore
import Paxos

/// Why the bytes on a connection are not a frame this replica accepts. Each case carries
/// the evidence, and its description is the line logged before the connection closes.
public enum FrameError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The length field cannot even hold the 6-byte header.
    case lengthBelowHeader(length: UInt32)
    /// The length field exceeds the configured bound.
    case lengthExceedsMax(length: UInt32, frameBytesMax: Int)
    case unknownVersion(UInt8)
    case unknownKind(UInt8)
    /// The first frame of a connection was not a hello.
    case expectedHello(kind: FrameKind)
    /// A hello whose length is not exactly `FrameFormat.helloLength`.
    case helloLength(length: UInt32)

    public var description: String {
        switch self {
        case .lengthBelowHeader(let length):
            return "frame length \(length) is shorter than the \(FrameFormat.headerBytesAfterLength)-byte header"
        case .lengthExceedsMax(let length, let frameBytesMax):
            return "frame length \(length) exceeds frameBytesMax \(frameBytesMax)"
        case .unknownVersion(let version):
            return "frame version \(version), this replica speaks \(FrameFormat.version)"
        case .unknownKind(let kind):
            return "unknown frame kind \(kind)"
        case .expectedHello(let kind):
            return "first frame is a \(kind) frame, expected hello"
        case .helloLength(let length):
            return "hello frame length \(length), expected \(FrameFormat.helloLength)"
        }
    }
}

/// Cuts frames out of a byte stream. Pure (no channel), so it can be fed split and
/// random bytes directly in tests; `FrameDecoder` wraps it for a NIO pipeline.
///
/// Every check that can be made from the header is made as soon as the header bytes are
/// there, before the payload is waited for, so a hostile peer can make this replica buffer
/// at most one `frameBytesMax` frame — and, before its hello, at most a hello's 18 bytes.
public struct FrameParser: Sendable {
    /// The bound on the length field.
    public let frameBytesMax: Int
    /// While true, the next frame must be a hello of exactly `FrameFormat.helloLength`.
    public private(set) var expectsHello: Bool

    public init(frameBytesMax: Int, expectsHello: Bool) {
        precondition(frameBytesMax >= FrameFormat.helloLength, "frameBytesMax \(frameBytesMax) below a hello")
        precondition(frameBytesMax <= Int(UInt32.max), "frameBytesMax \(frameBytesMax) exceeds the u32 length field")
        self.frameBytesMax = frameBytesMax
        self.expectsHello = expectsHello
    }

    /// The next complete frame, or nil when more bytes are needed (nothing is consumed
    /// then). Throws on the first byte that cannot start a valid frame.
    public mutating func next(from buffer: inout ByteBuffer) throws(FrameError) -> Frame? {
        let start = buffer.readerIndex
        guard let length = buffer.getInteger(at: start, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard length >= FrameFormat.headerBytesAfterLength else {
            throw .lengthBelowHeader(length: length)
        }
        guard UInt64(length) <= UInt64(frameBytesMax) else {
            throw .lengthExceedsMax(length: length, frameBytesMax: frameBytesMax)
        }
        guard let version = buffer.getInteger(at: start + 4, as: UInt8.self) else { return nil }
        guard version == FrameFormat.version else { throw .unknownVersion(version) }
        guard let kindByte = buffer.getInteger(at: start + 5, as: UInt8.self) else { return nil }
        guard let kind = FrameKind(rawValue: kindByte) else { throw .unknownKind(kindByte) }
        if expectsHello {
            guard kind == .hello else { throw .expectedHello(kind: kind) }
            guard length == FrameFormat.helloLength else { throw .helloLength(length: length) }
        }
        let frameBytes = FrameFormat.lengthFieldBytes + Int(length)
        guard buffer.readableBytes >= frameBytes else { return nil }

        buffer.moveReaderIndex(forwardBy: 6)
        let sender = buffer.readInteger(endianness: .big, as: UInt32.self)!
        let payload = buffer.readSlice(length: Int(length) - FrameFormat.headerBytesAfterLength)!
        // Check after reading: exactly one frame was consumed.
        precondition(buffer.readerIndex == start + frameBytes, "frame parser consumed the wrong byte count")
        expectsHello = false
        return Frame(kind: kind, sender: sender, payload: payload)
    }
}

/// `FrameParser` as a NIO `ByteToMessageDecoder`: emits one `Frame` per complete frame.
/// A thrown `FrameError` reaches the next handler's `errorCaught`, which closes the
/// connection; the decoder decodes nothing after an error.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = Frame

    private var parser: FrameParser

    init(frameBytesMax: Int, expectsHello: Bool) {
        parser = FrameParser(frameBytesMax: frameBytesMax, expectsHello: expectsHello)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try parser.next(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    /// At end of stream a partial frame is simply discarded: the peer went away mid-frame
    /// (a crash or restart), which is not an error worth a log line.
    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while let frame = try parser.next(from: &buffer) {
            context.fireChannelRead(wrapInboundOut(frame))
        }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}
