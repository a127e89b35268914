import EtcdAPI
import Foundation
import Paxos
import SwiftProtobuf
import UnaryGRPC

/// `Maintenance.MoveLeader` (`etcdctl move-leader TARGET`), by hand: the generated code
/// predates it, and its messages are one field each. Request: `target_id` (field 1,
/// varint). Response: `header` (field 1, a `ResponseHeader`). As in etcd, only the leader
/// takes it ("etcdserver: not leader" otherwise), and a target that is not an up-to-date,
/// reachable member is refused ("etcdserver: bad leader transferee").
extension EtcdFrontEnd {
    static let moveLeaderPath = "/etcdserverpb.Maintenance/MoveLeader"

    var moveLeaderMethod: UnaryMethod {
        { [self] call in
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
                let headerBytes: [UInt8] = (try? header.serializedBytes()) ?? []
                var response: [UInt8] = [0x0A]
                Self.appendVarint(UInt64(headerBytes.count), to: &response)
                response += headerBytes
                let body = response
                call.responder.respond { .success(body) }
            }
        }
    }

    /// `target_id` of a MoveLeaderRequest; nil if the bytes are not one.
    static func decodeMoveLeaderTarget(_ bytes: [UInt8]) -> UInt64? {
        var index = 0
        var target: UInt64 = 0
        while index < bytes.count {
            guard let key = readVarint(bytes, &index) else { return nil }
            switch (key >> 3, key & 7) {
            case (1, 0):
                guard let value = readVarint(bytes, &index) else { return nil }
                target = value
            case (_, 0):
                guard readVarint(bytes, &index) != nil else { return nil }
            case (_, 2):
                guard let length = readVarint(bytes, &index), length <= UInt64(bytes.count - index) else { return nil }
                index += Int(length)
            default:
                return nil
            }
        }
        return target
    }

    static func readVarint(_ bytes: [UInt8], _ index: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.count && shift < 64 {
            let byte = bytes[index]
            index += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
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
            status { status in
                let headerBytes: [UInt8] = (try? self.header(status).serializedBytes()) ?? []
                var response: [UInt8] = [0x0A]
                Self.appendVarint(UInt64(headerBytes.count), to: &response)
                let body = response + headerBytes
                call.responder.respond { .success(body) }
            }
        }
    }
}
