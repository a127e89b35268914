import KVStore
import ReplicaRuntime
import UnaryGRPC

/// Put, the call a write-heavy client makes most, decoded and answered with the hand-written
/// protobuf reader and writer (`ProtobufWire.swift`) instead of the generated messages: no
/// `Data` per field, no message storage, no copy into the store's byte arrays. Field numbers
/// are etcd 3.4's (api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto); the bytes are the ones
/// the generated code writes (tested against it).
extension EtcdFrontEnd {
    static let putPath = "/etcdserverpb.KV/Put"

    var putMethod: UnaryMethod {
        { [self] call in
            guard let request = Self.decoded(call, "etcdserverpb.PutRequest", { try Self.decodePutRequest($0) }) else { return }
            do {
                try write(.put(request), call: call) { outcome in
                    call.responder.respond {
                        do {
                            let (result, position) = try Self.unwrap(outcome)
                            guard case .put(let response) = result else { throw Self.unexpected(result) }
                            return .success(self.encodePutResponse(response, position: position))
                        } catch {
                            return .failure(Self.grpcStatus(error))
                        }
                    }
                }
            } catch {
                call.responder.fail(Self.grpcStatus(error))
            }
        }
    }

    /// etcdserverpb.PutRequest: key 1, value 2, lease 3, prev_kv 4, ignore_value 5,
    /// ignore_lease 6. Unknown fields (and a known number with another wire type) are
    /// skipped; a repeated field's last value wins, as in any proto3 parser.
    static func decodePutRequest(_ payload: [UInt8]) throws(ProtobufWireError) -> PutRequest {
        var reader = ProtobufReader(payload)
        var request = PutRequest(key: [], value: [])
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch (field, wireType) {
            case (1, 2): request.key = try reader.readLengthDelimited()
            case (2, 2): request.value = try reader.readLengthDelimited()
            case (3, 0): request.lease = Int64(bitPattern: try reader.readVarint())
            case (4, 0): request.prevKV = try reader.readVarint() != 0
            case (5, 0): request.ignoreValue = try reader.readVarint() != 0
            case (6, 0): request.ignoreLease = try reader.readVarint() != 0
            default: try reader.skip(wireType: wireType)
            }
        }
        return request
    }

    /// etcdserverpb.PutResponse: header 1, prev_kv 2.
    func encodePutResponse(_ response: PutResponse, position: ReplicaPosition) -> [UInt8] {
        Self.encodePutResponse(response, clusterID: clusterID, memberID: UInt64(configuration.replicaID), position: position)
    }

    static func encodePutResponse(
        _ response: PutResponse, clusterID: UInt64, memberID: UInt64, position: ReplicaPosition
    ) -> [UInt8] {
        var writer = ProtobufWriter(capacity: 48 + (response.prevKV.map { $0.key.count + $0.value.count } ?? 0))
        writeHeader(clusterID: clusterID, memberID: memberID, position: position, into: &writer)
        if let previous = response.prevKV {
            var keyValue = ProtobufWriter(capacity: 40 + previous.key.count + previous.value.count)
            writeKeyValue(previous, into: &keyValue)
            writer.writeBytes(2, keyValue.bytes, always: true)
        }
        return writer.bytes
    }

    /// etcdserverpb.ResponseHeader (cluster_id 1, member_id 2, revision 3, raft_term 4) as
    /// field 1 of the enclosing message: the fields `header(_:)` sets.
    static func writeHeader(
        clusterID: UInt64, memberID: UInt64, position: ReplicaPosition, into writer: inout ProtobufWriter
    ) {
        var header = ProtobufWriter(capacity: 40)
        header.writeUInt(1, clusterID)
        header.writeUInt(2, memberID)
        header.writeInt(3, position.revision)
        header.writeUInt(4, position.ballotRound)
        writer.writeBytes(1, header.bytes, always: true)
    }

    /// mvccpb.KeyValue: key 1, create_revision 2, mod_revision 3, version 4, value 5, lease 6.
    static func writeKeyValue(_ keyValue: KeyValue, into writer: inout ProtobufWriter) {
        writer.writeBytes(1, keyValue.key)
        writer.writeInt(2, keyValue.createRevision)
        writer.writeInt(3, keyValue.modRevision)
        writer.writeInt(4, keyValue.version)
        writer.writeBytes(5, keyValue.value)
        writer.writeInt(6, keyValue.lease)
    }
}
