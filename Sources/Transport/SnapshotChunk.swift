import ByteCodec
import NIOCore
import Paxos
import Storage

/// The wire form of a `SnapshotChunk` (defined in `Storage`, so the replica runtime and the
/// simulator use it without a network).
extension SnapshotChunk {
    /// The most snapshot bytes one chunk may carry under a given `frameBytesMax`.
    public static func bytesMax(frameBytesMax: Int) -> Int {
        frameBytesMax - FrameFormat.headerBytesAfterLength - headerBytes
    }

    public func encode(into buffer: inout ByteBuffer) {
        // Check data before writing it (STYLE 5): the receiver would refuse this chunk.
        precondition(inconsistency == nil, "sending an inconsistent snapshot chunk: \(inconsistency ?? "")")
        buffer.writeInteger(through, endianness: .big)
        buffer.writeInteger(offset, endianness: .big)
        buffer.writeInteger(totalBytes, endianness: .big)
        buffer.writeInteger(isLast ? UInt8(1) : UInt8(0))
        buffer.writeBytes(bytes)
    }

    /// Decodes a whole payload; every failure is a `DecodeError` with its byte offset.
    public static func decode(from buffer: inout ByteBuffer) throws -> SnapshotChunk {
        guard buffer.readableBytes >= headerBytes else {
            throw DecodeError(
                "snapshot chunk of \(buffer.readableBytes) bytes is shorter than its \(headerBytes)-byte header",
                offset: 0)
        }
        let through = buffer.readInteger(endianness: .big, as: UInt64.self)!
        let offset = buffer.readInteger(endianness: .big, as: UInt64.self)!
        let totalBytes = buffer.readInteger(endianness: .big, as: UInt64.self)!
        let lastByte = buffer.readInteger(as: UInt8.self)!
        guard lastByte <= 1 else {
            throw DecodeError("snapshot chunk isLast byte \(lastByte) is neither 0 nor 1", offset: 24)
        }
        let bytes = buffer.readBytes(length: buffer.readableBytes)!
        let chunk = SnapshotChunk(
            through: through, offset: offset, totalBytes: totalBytes, bytes: bytes, isLast: lastByte == 1)
        if let inconsistency = chunk.inconsistency {
            throw DecodeError(inconsistency, offset: 8)
        }
        return chunk
    }
}
