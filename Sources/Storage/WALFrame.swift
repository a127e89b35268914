#if canImport(Glibc)
import ByteCodec
import Glibc
#endif
import Paxos

/// The framing of one write-ahead log record:
///
/// ```
/// [length u32 LE][crc u32 LE][type u8][payload]
///  length = 1 + payload.count      crc = CRC32C(type + payload)
/// ```
///
/// The payload of a `record` frame is `Record.encoded()`. Segments are preallocated and
/// therefore zero-filled past the last record: a zero length word is the end of the log.
public enum WALFrame {
    static let headerBytes = 8
    /// The only frame type so far; the byte leaves room for others (e.g. a checkpoint).
    static let typeRecord: UInt8 = 1

    /// The framed bytes of one record, as the log writes them.
    public static func encode(_ record: Record) -> [UInt8] {
        // One buffer, reserved at once: the header's length and checksum are filled in
        // after the body is encoded behind them.
        var frame = ByteWriter(reservingCapacity: headerBytes + 1 + record.approximateBytes)
        frame.writeUInt32(0)
        frame.writeUInt32(0)
        frame.writeUInt8(typeRecord)
        record.encode(into: &frame)
        frame.overwriteUInt32(UInt32(frame.count - headerBytes), at: 0)
        frame.overwriteUInt32(CRC32C.checksum(frame.bytes[headerBytes...]), at: 4)
        return frame.bytes
    }

    /// What lies at one offset of a segment.
    enum Check {
        /// A whole frame with a good checksum and a decodable record; the next frame
        /// starts at `next`.
        case valid(Record, next: Int)
        /// A zero length word (or fewer than 4 bytes, all zero): the log ends here, if
        /// every byte after is zero too (the caller checks).
        case end
        /// Anything else: a short or oversized frame, a wrong checksum, an unknown type, a
        /// payload that does not decode. `expectedCRC` is the stored checksum (0 when the
        /// header is incomplete), `actualCRC` the checksum of the bytes found.
        case damaged(expectedCRC: UInt32, actualCRC: UInt32)
    }

    static func readUInt32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8
            | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    static func check(_ bytes: [UInt8], at offset: Int, frameBytesMax: Int) -> Check {
        let remaining = bytes.count - offset
        precondition(remaining >= 0, "offset beyond the segment")
        if remaining < 4 {
            return bytes[offset...].allSatisfy { $0 == 0 } ? .end : .damaged(expectedCRC: 0, actualCRC: 0)
        }
        let length = Int(readUInt32(bytes, offset))
        if length == 0 { return .end }
        guard remaining >= headerBytes else { return .damaged(expectedCRC: 0, actualCRC: 0) }
        let expected = readUInt32(bytes, offset + 4)
        guard length <= frameBytesMax, length <= remaining - headerBytes else {
            return .damaged(expectedCRC: expected, actualCRC: 0)
        }
        let body = offset + headerBytes..<offset + headerBytes + length
        let actual = CRC32C.checksum(bytes[body])
        guard actual == expected, bytes[body.lowerBound] == typeRecord else {
            return .damaged(expectedCRC: expected, actualCRC: actual)
        }
        var reader = ByteReader(bytes, range: body.lowerBound + 1..<body.upperBound)
        guard let record = try? Record.decode(from: &reader), reader.isAtEnd else {
            return .damaged(expectedCRC: expected, actualCRC: actual)
        }
        return .valid(record, next: body.upperBound)
    }

    /// Whether any offset after `offset` holds a valid frame. Cheap filters first (a
    /// plausible length and the record type byte) so a zero-filled tail costs one read per
    /// byte and a checksum is computed only for candidates.
    static func validFrameExists(in bytes: [UInt8], after offset: Int, frameBytesMax: Int) -> Bool {
        var candidate = offset + 1
        while candidate + headerBytes < bytes.count {
            defer { candidate += 1 }
            let length = Int(readUInt32(bytes, candidate))
            guard length > 1, length <= frameBytesMax, length <= bytes.count - candidate - headerBytes,
                bytes[candidate + headerBytes] == typeRecord
            else { continue }
            if case .valid = check(bytes, at: candidate, frameBytesMax: frameBytesMax) { return true }
        }
        return false
    }
}

/// The result of reading one segment.
struct SegmentScan {
    var records: [Record] = []
    /// The end of the last valid record: where the next append goes.
    var validEnd = 0
    /// Set when something other than a clean end follows `validEnd`.
    var damage: Damage?

    struct Damage {
        var offset: Int
        var expectedCRC: UInt32
        var actualCRC: UInt32
        /// Whether a valid frame lies anywhere after the damage in this segment.
        var validFrameAfter: Bool
        /// One past the last non-zero byte of the segment: the extent of the garbage.
        var garbageEnd: Int
    }

    /// Reads frames from the start until the first non-valid one.
    static func scan(_ bytes: [UInt8], frameBytesMax: Int) -> SegmentScan {
        var scan = SegmentScan()
        var offset = 0
        while offset < bytes.count {
            switch WALFrame.check(bytes, at: offset, frameBytesMax: frameBytesMax) {
            case .valid(let record, let next):
                scan.records.append(record)
                offset = next
                scan.validEnd = next
            case .end:
                let garbageEnd = lastNonZero(bytes) + 1
                if garbageEnd > offset {
                    // A zero length word with data after it: not a clean end.
                    scan.damage = Damage(
                        offset: offset, expectedCRC: 0, actualCRC: 0,
                        validFrameAfter: WALFrame.validFrameExists(in: bytes, after: offset, frameBytesMax: frameBytesMax),
                        garbageEnd: garbageEnd)
                }
                return scan
            case .damaged(let expectedCRC, let actualCRC):
                scan.damage = Damage(
                    offset: offset, expectedCRC: expectedCRC, actualCRC: actualCRC,
                    validFrameAfter: WALFrame.validFrameExists(in: bytes, after: offset, frameBytesMax: frameBytesMax),
                    garbageEnd: max(lastNonZero(bytes) + 1, offset + 1))
                return scan
            }
        }
        return scan
    }

    /// The index of the last non-zero byte, -1 if all are zero. A preallocated segment is
    /// mostly zeros: they are skipped a 64 KiB block at a time with `memcmp` against a zero
    /// block (a byte loop over 16 MiB took seconds in a debug build, on every recovery).
    static func lastNonZero(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { raw -> Int in
            var end = raw.count
            let block = ZeroBlock.bytes.count
            while end >= block {
                let isZero = ZeroBlock.bytes.withUnsafeBytes { zero in
                    memcmp(raw.baseAddress! + (end - block), zero.baseAddress!, block) == 0
                }
                if !isZero { break }
                end -= block
            }
            var index = end - 1
            while index >= 0 && raw[index] == 0 { index -= 1 }
            return index
        }
    }
}

/// What recovery does with a damaged frame — the decision table.
///
/// Writes reach a segment in order and `WriteAheadLog` fdatasyncs a segment before it
/// creates the next one, so a crash can damage only the unsynced tail of the *last*
/// segment, and only at its end: a crash never leaves a valid record after a damaged one.
///
/// | damaged frame in  | valid frame after it in the segment | verdict                          |
/// |-------------------|-------------------------------------|----------------------------------|
/// | a non-last segment| either                              | corrupt: throw, change nothing   |
/// | the last segment  | yes                                 | corrupt: throw, change nothing   |
/// | the last segment  | no                                  | torn tail: truncate at the frame |
///
/// "Damaged" is any frame that is not valid: short header, length beyond the segment or
/// the bound, wrong CRC32C, unknown type, undecodable payload, or a zero length word
/// followed by non-zero bytes. A zero length word followed only by zeros is a clean end.
enum DamageVerdict: Equatable {
    case tornTail
    case corrupt

    static func decide(isLastSegment: Bool, validFrameAfter: Bool) -> DamageVerdict {
        switch (isLastSegment, validFrameAfter) {
        case (false, _): return .corrupt
        case (true, true): return .corrupt
        case (true, false): return .tornTail
        }
    }
}

/// 64 KiB of zeros to compare blocks of a segment against.
enum ZeroBlock {
    static let bytes = [UInt8](repeating: 0, count: 64 * 1024)
}
