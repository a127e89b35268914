import EtcdAPI
import KVStore
import ReplicaRuntime
import UnaryGRPC

/// Synod's own unary call `/synodpb.History/History` (not etcd's): every retained version
/// of a key or range from the contacted replica's store — serializable, like a
/// `--consistency=s` read — with the proposal time each write was stamped with. Coded by
/// hand (`ProtobufWire.swift`); `SynodClient.history` is the client:
///
///     HistoryRequest  { bytes key = 1; bytes range_end = 2; int64 limit = 3; }
///     HistoryResponse { etcdserverpb.ResponseHeader header = 1; repeated HistoryEntry entries = 2;
///                       bool more = 3; }
///     HistoryEntry    { bytes key = 1; int64 revision = 2; int64 proposed_at_milliseconds = 3;
///                       int32 type = 4 (0 put, 1 delete); bytes value = 5; int64 create_revision = 6;
///                       int64 version = 7; }
extension EtcdFrontEnd {
    static let historyPath = "/synodpb.History/History"
    /// Entries in one answer, at most (a larger `limit`, or none, is cut to it; `more` says so).
    static let historyEntriesMax = 10_000

    var historyMethod: UnaryMethod {
        { [self] call in
            if let refusal = adminRefusal(call.metadata, certificateCommonName: call.clientCertificateCommonName) { return call.responder.fail(refusal) }  // auth
            guard let request = Self.decoded(call, "synodpb.HistoryRequest", { try Self.decodeHistoryRequest($0) }) else { return }
            guard !request.key.isEmpty else {
                return call.responder.fail(
                    GRPCStatus(code: GRPCStatus.invalidArgument, message: "etcdserver: key is not provided"))
            }
            let limit = request.limit > 0 ? min(request.limit, Self.historyEntriesMax) : Self.historyEntriesMax
            let submitted = loop.perform { [self] runtime in
                // One past the limit tells whether there is more.
                var entries = runtime.kv.history(key: request.key, rangeEnd: request.rangeEnd, limit: limit + 1)
                let more = entries.count > limit
                if more { entries.removeLast() }
                let header = header(
                    ReplicaPosition(revision: runtime.kv.revision, leader: runtime.replica?.leader, ballotRound: runtime.headerRound))
                let answered = entries
                call.responder.respond { .success(Self.encodeHistoryResponse(header: header, entries: answered, more: more)) }
            }
            if !submitted { call.responder.fail(Self.grpcStatus(Self.rpcError(.tooManyRequests))) }
        }
    }

    static func decodeHistoryRequest(_ payload: [UInt8]) throws(ProtobufWireError) -> (
        key: [UInt8], rangeEnd: [UInt8], limit: Int
    ) {
        var reader = ProtobufReader(payload)
        var key: [UInt8] = []
        var rangeEnd: [UInt8] = []
        var limit: Int64 = 0
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch (field, wireType) {
            case (1, 2): key = try reader.readLengthDelimited()
            case (2, 2): rangeEnd = try reader.readLengthDelimited()
            case (3, 0): limit = Int64(bitPattern: try reader.readVarint())
            default: try reader.skip(wireType: wireType)
            }
        }
        return (key, rangeEnd, Int(clamping: max(0, limit)))
    }

    static func encodeHistoryResponse(
        header: Etcdserverpb_ResponseHeader, entries: [HistoryEntry], more: Bool
    ) -> [UInt8] {
        var writer = ProtobufWriter(capacity: 64 + entries.reduce(0) { $0 + 48 + $1.key.count + $1.value.count })
        writer.writeBytes(1, (try? header.serializedBytes() as [UInt8]) ?? [], always: true)
        for entry in entries {
            var encoded = ProtobufWriter(capacity: 48 + entry.key.count + entry.value.count)
            encoded.writeBytes(1, entry.key)
            encoded.writeInt(2, entry.revision)
            encoded.writeInt(3, entry.proposedAtMilliseconds)
            encoded.writeUInt(4, UInt64(entry.type.rawValue))
            encoded.writeBytes(5, entry.value)
            encoded.writeInt(6, entry.createRevision)
            encoded.writeInt(7, entry.version)
            writer.writeBytes(2, encoded.bytes, always: true)
        }
        writer.writeBool(3, more)
        return writer.bytes
    }
}
