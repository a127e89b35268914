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
}
