import ByteCodec
import Paxos

/// The fixed 64-byte header of a snapshot file, followed by `bodyBytes` bytes of the
/// state machine's snapshot.
///
/// ```
///  0  magic "SYNODSNP"       8 bytes
///  8  version u32            = 1
/// 12  flags u32              = 0
/// 16  through u64            the last slot the state machine applied
/// 24  promised.round u64     the acceptor's promised ballot when the snapshot was saved
/// 32  promised.replica u32
/// 36  reserved u32           = 0
/// 40  chosenThrough u64      the chosen prefix when the snapshot was saved (>= through)
/// 48  bodyBytes u64
/// 56  bodyCRC u32            CRC32C of the body
/// 60  headerCRC u32          CRC32C of bytes 0..<60
/// ```
///
/// Why `promised` and `chosenThrough` are here: compaction removes whole WAL segments,
/// and a `promised` record carries no slot, so a removed segment may hold the latest
/// promise (Paxos safety: an acceptor must never forget a promise). The header carries
/// the promise and the chosen prefix as of the moment the snapshot is saved — which is
/// at least every value in any removed segment, since only segments written before the
/// snapshot are removed — and recovery starts from them before replaying the log.
/// A snapshot received from a peer gets *this* replica's promise and chosen prefix
/// written into its header when it is installed; a peer's promise is never adopted.
public struct SnapshotHeader: Hashable, Sendable {
    public static let magic: [UInt8] = Array("SYNODSNP".utf8)
    public static let version: UInt32 = 1
    public static let headerBytes = 64
    /// The largest snapshot body accepted (a bound on what a peer may make us store).
    public static let bodyBytesMax: UInt64 = 64 * 1024 * 1024 * 1024

    public var through: Slot
    public var promised: Ballot
    public var chosenThrough: Slot
    public var bodyBytes: UInt64
    public var bodyCRC: UInt32

    public init(through: Slot, promised: Ballot, chosenThrough: Slot, bodyBytes: UInt64, bodyCRC: UInt32) {
        self.through = through
        self.promised = promised
        self.chosenThrough = chosenThrough
        self.bodyBytes = bodyBytes
        self.bodyCRC = bodyCRC
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(reservingCapacity: Self.headerBytes)
        writer.writeBytes(Self.magic)
        writer.writeUInt32(Self.version)
        writer.writeUInt32(0)
        writer.writeUInt64(through)
        writer.writeUInt64(promised.round)
        writer.writeUInt32(promised.replica)
        writer.writeUInt32(0)
        writer.writeUInt64(chosenThrough)
        writer.writeUInt64(bodyBytes)
        writer.writeUInt32(bodyCRC)
        writer.writeUInt32(CRC32C.checksum(writer.bytes))
        precondition(writer.count == Self.headerBytes, "snapshot header is \(writer.count) bytes")
        return writer.bytes
    }

    /// Parses and checks the header; `file` names the file in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws -> SnapshotHeader {
        guard bytes.count >= headerBytes else {
            throw StorageError.corruptSnapshot(
                file: file, reason: "\(bytes.count) bytes, shorter than its header", expectedCRC: 0, actualCRC: 0)
        }
        var reader = ByteReader(bytes, range: 0..<headerBytes)
        do {
            let magic = try reader.readBytes(count: 8)
            let version = try reader.readUInt32()
            _ = try reader.readUInt32()
            let through = try reader.readUInt64()
            let round = try reader.readUInt64()
            let replica = try reader.readUInt32()
            _ = try reader.readUInt32()
            let chosenThrough = try reader.readUInt64()
            let bodyBytes = try reader.readUInt64()
            let bodyCRC = try reader.readUInt32()
            let expected = try reader.readUInt32()
            let actual = CRC32C.checksum(bytes[0..<60])
            guard expected == actual else {
                throw StorageError.corruptSnapshot(
                    file: file, reason: "header checksum mismatch", expectedCRC: expected, actualCRC: actual)
            }
            guard magic == Self.magic, version == Self.version else {
                throw StorageError.corruptSnapshot(
                    file: file, reason: "bad magic or version \(version)", expectedCRC: expected, actualCRC: actual)
            }
            guard bodyBytes <= bodyBytesMax, chosenThrough >= through else {
                throw StorageError.corruptSnapshot(
                    file: file, reason: "implausible header (body \(bodyBytes) bytes, through \(through))",
                    expectedCRC: expected, actualCRC: actual)
            }
            return SnapshotHeader(
                through: through, promised: Ballot(round: round, replica: replica), chosenThrough: chosenThrough,
                bodyBytes: bodyBytes, bodyCRC: bodyCRC)
        } catch let error as DecodeError {
            preconditionFailure("fixed header read past its checked length: \(error)")
        }
    }

    /// Checks a whole snapshot file (header + body) and returns the header and the body.
    public static func verify(_ bytes: [UInt8], file: String) throws -> (SnapshotHeader, [UInt8]) {
        let header = try decode(bytes, file: file)
        let available = UInt64(bytes.count - headerBytes)
        guard available == header.bodyBytes else {
            throw StorageError.corruptSnapshot(
                file: file, reason: "body is \(available) bytes, header says \(header.bodyBytes)",
                expectedCRC: header.bodyCRC, actualCRC: 0)
        }
        let body = Array(bytes[headerBytes...])
        let actual = CRC32C.checksum(body)
        guard actual == header.bodyCRC else {
            throw StorageError.corruptSnapshot(
                file: file, reason: "body checksum mismatch", expectedCRC: header.bodyCRC, actualCRC: actual)
        }
        return (header, body)
    }
}

/// File naming and the atomic write of snapshot files.
enum SnapshotFiles {
    static let prefix = "snapshot-"
    static let suffix = ".snap"
    /// Temporary files end in this; recovery removes any it finds.
    static let temporarySuffix = ".tmp"

    static func name(through slot: Slot) -> String {
        prefix + hex16(slot) + suffix
    }

    static func parse(_ name: String) -> Slot? {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix),
            name.count == prefix.count + 16 + suffix.count
        else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        return UInt64(digits, radix: 16)
    }

    /// Bytes written between two fsyncs of a snapshot file. One fsync of a whole large
    /// snapshot (80 MB) held the disk long enough that the write-ahead log's fdatasyncs —
    /// and with them the replica's heartbeats — waited past the election timeout; in pieces,
    /// the log's syncs slip in between.
    static let syncEveryBytes = 4 << 20

    /// Writes `bytes` to a temporary file (fsynced every `syncEveryBytes`), fsyncs it,
    /// renames it to `name`, fsyncs the directory: after this returns the file is durable
    /// under its name; a crash before leaves at most a temporary file, which recovery removes.
    static func writeAtomically(
        _ bytes: [UInt8], name: String, directory: String, fileSystem: FileSystem
    ) throws {
        let temporary = joinPath(directory, name + temporarySuffix)
        if fileSystem.fileExists(temporary) { try fileSystem.removeFile(temporary) }
        let file = try fileSystem.openFile(temporary, create: true)
        var offset = 0
        repeat {
            let end = min(bytes.count, offset + syncEveryBytes)
            try file.write(Array(bytes[offset..<end]), at: UInt64(offset))
            offset = end
            if offset < bytes.count { try file.dataSync() }
        } while offset < bytes.count
        try file.sync()
        try file.close()
        try fileSystem.rename(temporary, to: joinPath(directory, name))
        try fileSystem.syncDirectory(directory)
    }
}

/// Reads the newest snapshot in chunks, to send it to a lagging peer. The chunks are the
/// snapshot *file* (header and body), so the receiver can verify both checksums.
///
/// If a newer snapshot replaces this one while it is being sent, the next read throws
/// `notFound`; the sender then starts over with a new reader.
public final class SnapshotReader {
    /// The largest chunk one read returns.
    public static let chunkBytesMax = 1024 * 1024

    public let through: Slot
    /// The size of the whole file: header and body.
    public let totalBytes: UInt64
    let path: String
    private let fileSystem: FileSystem

    init(through: Slot, totalBytes: UInt64, path: String, fileSystem: FileSystem) {
        self.through = through
        self.totalBytes = totalBytes
        self.path = path
        self.fileSystem = fileSystem
    }

    /// Up to `maxBytes` (at most `chunkBytesMax`) bytes from `offset`; empty at the end.
    public func readChunk(at offset: UInt64, maxBytes: Int = SnapshotReader.chunkBytesMax) throws -> [UInt8] {
        precondition(maxBytes > 0, "a chunk of \(maxBytes) bytes")
        guard offset <= totalBytes else {
            throw StorageError.snapshotTransferInvalid("offset \(offset) beyond \(totalBytes) bytes")
        }
        let count = Int(min(UInt64(min(maxBytes, Self.chunkBytesMax)), totalBytes - offset))
        let chunk = try fileSystem.readFile(path, offset: offset, count: count)
        guard chunk.count == count else {
            throw StorageError.snapshotTransferInvalid("\(path) shrank while being read")
        }
        return chunk
    }

    /// `readChunk(at:maxBytes:)` under the name the server uses.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try readChunk(at: offset, maxBytes: count)
    }
}
