import NIOCore
import Paxos

/// One bounded piece of a state-machine snapshot that a replica sends to a peer whose
/// log it has compacted past (the learner asked for slots the leader no longer has).
///
/// Chunks of one snapshot share `through` and `totalBytes` and are sent in offset order
/// on one connection; the receiver checks `offset` against what it has assembled and
/// starts over on a gap (a dropped chunk: the transport, like Paxos, may drop frames).
///
/// Payload encoding (big-endian, like the frame header):
/// `[u64 through][u64 offset][u64 totalBytes][u8 isLast][bytes…]` — the bytes run to the
/// end of the frame, so no second length is needed.
public struct SnapshotChunk: Hashable, Sendable {
    /// The snapshot holds the state machine after applying every slot up to this one.
    public var through: Slot
    /// Where `bytes` start in the whole snapshot.
    public var offset: UInt64
    /// The size of the whole snapshot.
    public var totalBytes: UInt64
    public var bytes: [UInt8]
    /// Invariant: `isLast == (offset + bytes.count == totalBytes)`.
    public var isLast: Bool

    public init(through: Slot, offset: UInt64, totalBytes: UInt64, bytes: [UInt8], isLast: Bool) {
        self.through = through
        self.offset = offset
        self.totalBytes = totalBytes
        self.bytes = bytes
        self.isLast = isLast
    }

    /// The fixed part of the payload before `bytes`.
    public static let headerBytes = 8 + 8 + 8 + 1

    /// The most snapshot bytes one chunk may carry under a given `frameBytesMax`.
    public static func bytesMax(frameBytesMax: Int) -> Int {
        frameBytesMax - FrameFormat.headerBytesAfterLength - headerBytes
    }

    /// The payload size of this chunk.
    public var encodedBytes: Int { Self.headerBytes + bytes.count }

    /// Why a chunk is inconsistent, or nil when it is well formed.
    public var inconsistency: String? {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
        if overflow || end > totalBytes {
            return "chunk at offset \(offset) with \(bytes.count) bytes runs past the snapshot's \(totalBytes) bytes"
        }
        if isLast != (end == totalBytes) {
            return "chunk ending at \(end) of \(totalBytes) bytes has isLast=\(isLast)"
        }
        return nil
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
