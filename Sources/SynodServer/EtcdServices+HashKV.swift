import EtcdAPI
import KVStore
import ReplicaRuntime
import UnaryGRPC

/// etcd's `Maintenance/HashKV`, answered on the loop thread from the local store (so the
/// hash and the header revision describe one state). `EtcdAPI` has no generated
/// HashKVRequest/HashKVResponse, so they are coded by hand (`ProtobufWire.swift`):
///
///     HashKVRequest  { int64 revision = 1; }
///     HashKVResponse { ResponseHeader header = 1; uint32 hash = 2; int64 compact_revision = 3; }
extension EtcdFrontEnd {
    static let hashKVPath = "/etcdserverpb.Maintenance/HashKV"

    var hashKVMethod: UnaryMethod {
        { [self] call in
            if let refusal = adminRefusal(call.metadata, certificateCommonName: call.clientCertificateCommonName) { return call.responder.fail(refusal) }  // auth
            guard let revision = Self.decoded(call, "etcdserverpb.HashKVRequest", { try Self.decodeHashKVRequest($0) }) else { return }
            let submitted = loop.perform { [self] runtime in
                let status = runtime.status
                let outcome: Result<(hash: UInt32, compactRevision: Int64, revision: Int64), KVError>
                do throws(KVError) {
                    outcome = .success(try runtime.kv.hashKV(revision: revision))
                } catch {
                    outcome = .failure(error)
                }
                call.responder.respond {
                    switch outcome {
                    case .success(let hashed):
                        return .success(self.encodeHashKVResponse(hashed, status: status))
                    case .failure(let error):
                        return .failure(Self.grpcStatus(EtcdConversions.rpcError(error)))
                    }
                }
            }
            if !submitted { call.responder.fail(Self.grpcStatus(Self.rpcError(.tooManyRequests))) }
        }
    }

    static func decodeHashKVRequest(_ payload: [UInt8]) throws(ProtobufWireError) -> Int64 {
        var reader = ProtobufReader(payload)
        var revision: Int64 = 0
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            if field == 1 && wireType == 0 {
                revision = Int64(bitPattern: try reader.readVarint())
            } else {
                try reader.skip(wireType: wireType)
            }
        }
        return revision
    }

    func encodeHashKVResponse(
        _ hashed: (hash: UInt32, compactRevision: Int64, revision: Int64), status: ReplicaStatus
    ) -> [UInt8] {
        var writer = ProtobufWriter()
        // The header carries the store's revision, as etcd's does (the hash covers
        // `hashed.revision`, the same unless the request named an older one).
        let headerBytes: [UInt8] = (try? header(status).serializedBytes()) ?? []
        writer.writeBytes(1, headerBytes, always: true)
        writer.writeUInt(2, UInt64(hashed.hash))
        writer.writeInt(3, hashed.compactRevision)
        return writer.bytes
    }
}
