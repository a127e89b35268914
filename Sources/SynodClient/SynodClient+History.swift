import EtcdAPI
import GRPCCore
import KVStore

/// The answer of `SynodClient.history`.
public struct HistoryResponse: Sendable {
    /// Key by key (byte order), each key's versions oldest first.
    public var entries: [HistoryEntry]
    /// The server cut the list at the limit (or at its own bound of 10 000 entries).
    public var more: Bool
}

extension SynodClient {
    /// Every retained version (puts and deletes, with the proposing replica's wall-clock time)
    /// of `key`, or of the range `[key, rangeEnd)`, as the contacted replica's store has them:
    /// a serializable read through Synod's own unary call `/synodpb.History/History`
    /// (etcd has no such call). Versions before the last compaction are gone.
    ///
    /// - Parameter limit: At most this many entries; 0 for the server's bound.
    public func history(
        key: some SynodBytes, rangeEnd: [UInt8] = [], limit: Int64 = 0
    ) async throws(SynodClientError) -> SynodResponse<HistoryResponse> {
        var writer = HistoryWire.Writer()
        writer.bytesField(1, key.synodBytes)
        writer.bytesField(2, rangeEnd)
        writer.intField(3, limit)
        let request = writer.bytes
        return try await perform { connection, metadata, callOptions in
            let bytes = try await connection.rawUnary(
                service: "synodpb.History", method: "History", request: request, metadata: metadata,
                options: callOptions)
            return try HistoryWire.decodeResponse(bytes)
        }
    }

    /// `history` of every key starting with `prefix`.
    public func historyPrefix(
        _ prefix: some SynodBytes, limit: Int64 = 0
    ) async throws(SynodClientError) -> SynodResponse<HistoryResponse> {
        let prefixBytes = prefix.synodBytes
        return try await history(
            key: prefixBytes.isEmpty ? [0] : prefixBytes, rangeEnd: KVBytes.prefixRangeEnd(prefixBytes), limit: limit)
    }
}

/// The hand-coded messages of `/synodpb.History/History` (field numbers in the server's
/// `EtcdServices+History.swift`).
enum HistoryWire {
    struct Writer {
        var bytes: [UInt8] = []

        mutating func varint(_ value: UInt64) {
            var rest = value
            while rest >= 0x80 {
                bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
                rest >>= 7
            }
            bytes.append(UInt8(rest))
        }

        mutating func bytesField(_ field: UInt64, _ value: [UInt8]) {
            guard !value.isEmpty else { return }
            varint(field << 3 | 2)
            varint(UInt64(value.count))
            bytes.append(contentsOf: value)
        }

        mutating func intField(_ field: UInt64, _ value: Int64) {
            guard value != 0 else { return }
            varint(field << 3)
            varint(UInt64(bitPattern: value))
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var position: Int
        let end: Int

        var isAtEnd: Bool { position >= end }

        mutating func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard position < end, shift < 64 else { throw RPCError(code: .internalError, message: "synod: bad varint") }
                let byte = bytes[position]
                position += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
        }

        mutating func lengthDelimited() throws -> Range<Int> {
            let length = try varint()
            guard length <= UInt64(end - position) else { throw RPCError(code: .internalError, message: "synod: truncated") }
            defer { position += Int(length) }
            return position..<(position + Int(length))
        }

        mutating func skip(_ wireType: UInt64) throws {
            switch wireType {
            case 0: _ = try varint()
            case 1: position += 8
            case 2: _ = try lengthDelimited()
            case 5: position += 4
            default: throw RPCError(code: .internalError, message: "synod: bad wire type \(wireType)")
            }
            guard position <= end else { throw RPCError(code: .internalError, message: "synod: truncated") }
        }
    }

    static func decodeResponse(_ bytes: [UInt8]) throws -> (HistoryResponse, SynodResponseHeader) {
        var reader = Reader(bytes: bytes, position: 0, end: bytes.count)
        var header = SynodResponseHeader()
        var response = HistoryResponse(entries: [], more: false)
        while !reader.isAtEnd {
            let tag = try reader.varint()
            switch (tag >> 3, tag & 7) {
            case (1, 2):
                let range = try reader.lengthDelimited()
                header = SynodResponseHeader(try Etcdserverpb_ResponseHeader(serializedBytes: Array(bytes[range])))
            case (2, 2):
                let range = try reader.lengthDelimited()
                response.entries.append(try decodeEntry(Reader(bytes: bytes, position: range.lowerBound, end: range.upperBound)))
            case (3, 0): response.more = try reader.varint() != 0
            default: try reader.skip(tag & 7)
            }
        }
        return (response, header)
    }

    static func decodeEntry(_ embedded: Reader) throws -> HistoryEntry {
        var reader = embedded
        var entry = HistoryEntry(
            key: [], revision: 0, proposedAtMilliseconds: 0, type: .put, value: [], createRevision: 0, version: 0)
        while !reader.isAtEnd {
            let tag = try reader.varint()
            switch (tag >> 3, tag & 7) {
            case (1, 2): entry.key = Array(reader.bytes[try reader.lengthDelimited()])
            case (2, 0): entry.revision = Int64(bitPattern: try reader.varint())
            case (3, 0): entry.proposedAtMilliseconds = Int64(bitPattern: try reader.varint())
            case (4, 0): entry.type = try reader.varint() == 1 ? .delete : .put
            case (5, 2): entry.value = Array(reader.bytes[try reader.lengthDelimited()])
            case (6, 0): entry.createRevision = Int64(bitPattern: try reader.varint())
            case (7, 0): entry.version = Int64(bitPattern: try reader.varint())
            default: try reader.skip(tag & 7)
            }
        }
        return entry
    }
}
