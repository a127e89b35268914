import EtcdAPI
import GRPCCore
import KVStore
import ReplicaRuntime
import UnaryGRPC

/// etcd's `Maintenance/Alarm` (`etcdctl alarm list`, `etcdctl alarm disarm`): every action,
/// GET included, goes through the log as an `alarm` command, as in etcd (`raftRequestOnce`),
/// so a GET is linearizable and ACTIVATE/DEACTIVATE change every replica's alarms at the
/// same point. The space quota that raises NOSPACE: `ReplicaRuntime+Quota.swift`.
extension EtcdFrontEnd {
    static let alarmPath = "/etcdserverpb.Maintenance/Alarm"

    var alarmMethod: UnaryMethod {
        Self.method(Etcdserverpb_AlarmRequest.self) { [self] request, call, respond in
            try write(.alarm(try Self.alarmRequest(request)), call: call) { outcome in
                respond {
                    let (result, position) = try Self.unwrap(outcome)
                    guard case .alarm(let response) = result else { throw Self.unexpected(result) }
                    var out = Etcdserverpb_AlarmResponse()
                    out.header = self.header(position)
                    out.alarms = response.alarms.map(Self.alarmMember)
                    return out
                }
            }
        }
    }

    static func alarmRequest(_ request: Etcdserverpb_AlarmRequest) throws -> AlarmRequest {
        let actionValue = request.action.rawValue
        guard (0...Int(UInt8.max)).contains(actionValue), let action = AlarmAction(rawValue: UInt8(actionValue)) else {
            throw RPCError(code: .invalidArgument, message: "synod: unknown alarm action \(actionValue)")
        }
        let alarmValue = request.alarm.rawValue
        guard (0...Int(UInt8.max)).contains(alarmValue), let alarm = AlarmType(rawValue: UInt8(alarmValue)) else {
            throw RPCError(code: .invalidArgument, message: "synod: unknown alarm type \(alarmValue)")
        }
        return AlarmRequest(action: action, memberID: request.memberID, alarm: alarm)
    }

    static func alarmMember(_ member: AlarmMember) -> Etcdserverpb_AlarmMember {
        var out = Etcdserverpb_AlarmMember()
        out.memberID = member.memberID
        out.alarm = Etcdserverpb_AlarmType(rawValue: Int(member.alarm.rawValue)) ?? .none
        return out
    }
}
