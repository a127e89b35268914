import EtcdAPI
import Foundation
import Paxos
import SwiftProtobuf
import UnaryGRPC

/// `Maintenance.MoveLeader` (`etcdctl move-leader TARGET`), on `ProtobufWire`: the
/// generated code predates it, and its messages are one field each. Request: `target_id` (field 1,
/// varint). Response: `header` (field 1, a `ResponseHeader`). As in etcd, only the leader
/// takes it ("etcdserver: not leader" otherwise), and a target that is not an up-to-date,
/// reachable member is refused ("etcdserver: bad leader transferee").
extension EtcdFrontEnd {
    static let moveLeaderPath = "/etcdserverpb.Maintenance/MoveLeader"

    var moveLeaderMethod: UnaryMethod {
        { [self] call in
            if let refusal = adminRefusal(call.metadata, certificateCommonName: call.clientCertificateCommonName) { return call.responder.fail(refusal) }  // auth
            guard let target = Self.decodeMoveLeaderTarget(call.payload) else {
                return call.responder.fail(
                    GRPCStatus(code: GRPCStatus.internalError, message: "grpc: error unmarshalling request: MoveLeaderRequest"))
            }
            // Handing over waits for the new leader (up to a second): off the connection's thread.
            Thread.detachNewThread { [self] in
                let status = loop.ask { reply in .status(reply) } ?? .unreachable
                guard status.isLeader else {
                    return call.responder.fail(GRPCStatus(code: 9, message: "etcdserver: not leader"))
                }
                guard target <= UInt64(UInt32.max), target != UInt64(configuration.replicaID),
                    loop.handOverLeadership(to: ReplicaID(target))
                else {
                    return call.responder.fail(GRPCStatus(code: 9, message: "etcdserver: bad leader transferee"))
                }
                let after = loop.ask { reply in .status(reply) } ?? .unreachable
                var header = self.header(after)
                header.memberID = UInt64(configuration.replicaID)
                let body = Self.headerOnlyResponse(header)
                call.responder.respond { .success(body) }
            }
        }
    }

    /// `target_id` of a MoveLeaderRequest; nil if the bytes are not one.
    static func decodeMoveLeaderTarget(_ bytes: [UInt8]) -> UInt64? {
        var reader = ProtobufReader(bytes)
        var target: UInt64 = 0
        do {
            while !reader.isAtEnd {
                let (field, wireType) = try reader.readTag()
                if field == 1 && wireType == 0 {
                    target = try reader.readVarint()
                } else {
                    try reader.skip(wireType: wireType)
                }
            }
        } catch {
            return nil
        }
        return target
    }

    /// A response whose only field is `header` (field 1): MoveLeader's and Defragment's.
    static func headerOnlyResponse(_ header: Etcdserverpb_ResponseHeader) -> [UInt8] {
        var writer = ProtobufWriter()
        writer.writeBytes(1, (try? header.serializedBytes()) ?? [], always: true)
        return writer.bytes
    }
}

/// `Maintenance.Defragment` (`etcdctl defrag`): etcd rewrites its bolt database to return
/// freed pages to the file system. Synod has nothing to defragment — snapshots and log
/// compaction already drop what is no longer needed, and log segments are deleted whole — so
/// it answers at once with its header, as etcd answers when the database is compact.
extension EtcdFrontEnd {
    static let defragmentPath = "/etcdserverpb.Maintenance/Defragment"

    var defragmentMethod: UnaryMethod {
        { [self] call in
            if let refusal = adminRefusal(call.metadata, certificateCommonName: call.clientCertificateCommonName) { return call.responder.fail(refusal) }  // auth
            status { status in
                let body = Self.headerOnlyResponse(self.header(status))
                call.responder.respond { .success(body) }
            }
        }
    }
}
