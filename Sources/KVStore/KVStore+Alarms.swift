/// etcd's alarms (`AlarmRequest`, `AlarmMember`): replicated state, changed only by `alarm`
/// commands in the log, so every replica holds the same alarms at the same point of its
/// command sequence.
///
/// NOSPACE is the one alarm Synod raises (a replica whose store would grow over its space
/// quota proposes it; see `ReplicaRuntime`). While it is active the store refuses, as etcd's
/// `applierV3Capped` does, every put and every txn that contains a put (in either branch, at
/// any nesting level) with `KVError.noSpace`; ranges, deletes, txns without puts, compactions
/// and alarm commands still apply. Refusing in `apply` (not only in the server) makes the
/// refusal deterministic: a put proposed before the alarm but applied after it fails on every
/// replica alike.

/// etcd's `AlarmType`.
public enum AlarmType: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case none = 0
    case nospace = 1
    case corrupt = 2

    /// etcd's enum name, as `etcdctl alarm list` and `Status.errors` print it.
    public var description: String {
        switch self {
        case .none: return "NONE"
        case .nospace: return "NOSPACE"
        case .corrupt: return "CORRUPT"
        }
    }
}

/// etcd's `AlarmRequest.AlarmAction`.
public enum AlarmAction: UInt8, Sendable, Hashable, CaseIterable {
    case get = 0
    case activate = 1
    case deactivate = 2
}

/// etcd's `AlarmMember`: which member raised which alarm.
public struct AlarmMember: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var memberID: UInt64
    public var alarm: AlarmType

    public init(memberID: UInt64, alarm: AlarmType) {
        self.memberID = memberID
        self.alarm = alarm
    }

    public static func < (lhs: AlarmMember, rhs: AlarmMember) -> Bool {
        (lhs.memberID, lhs.alarm.rawValue) < (rhs.memberID, rhs.alarm.rawValue)
    }

    /// etcd's text form of the message (what `etcdctl endpoint status` shows in its errors).
    public var description: String { "memberID:\(memberID) alarm:\(alarm) " }
}

/// etcd's `AlarmRequest`. GET goes through the log too (as in etcd), so it is linearizable.
public struct AlarmRequest: Sendable, Hashable {
    public var action: AlarmAction
    /// 0 with GET: every member.
    public var memberID: UInt64
    /// `none` with GET: every alarm.
    public var alarm: AlarmType

    public init(action: AlarmAction, memberID: UInt64 = 0, alarm: AlarmType = .none) {
        self.action = action
        self.memberID = memberID
        self.alarm = alarm
    }
}

/// etcd's `AlarmResponse`: for GET the matching alarms, for ACTIVATE/DEACTIVATE the alarm
/// changed (empty when nothing changed).
public struct AlarmResponse: Sendable, Hashable {
    public var revision: Int64
    public var alarms: [AlarmMember]

    public init(revision: Int64, alarms: [AlarmMember]) {
        self.revision = revision
        self.alarms = alarms
    }
}

extension KVStore {
    /// Active alarms in (memberID, alarm) order.
    public var activeAlarms: [AlarmMember] { alarms }

    /// NOSPACE is active (raised by any member): puts are refused.
    public var isOutOfSpace: Bool { alarms.contains { $0.alarm == .nospace } }

    /// Applies an alarm command; it takes no revision.
    mutating func applyAlarm(_ request: AlarmRequest) -> WriteResult {
        let member = AlarmMember(memberID: request.memberID, alarm: request.alarm)
        switch request.action {
        case .get:
            let matching = alarms.filter { request.alarm == .none || $0.alarm == request.alarm }
            return .alarm(AlarmResponse(revision: revision, alarms: matching))
        case .activate:
            // etcd refuses to activate NONE; activating an active alarm changes nothing but
            // still reports it.
            guard request.alarm != .none else { return .alarm(AlarmResponse(revision: revision, alarms: [])) }
            if !alarms.contains(member) {
                alarms.append(member)
                alarms.sort()
            }
            return .alarm(AlarmResponse(revision: revision, alarms: [member]))
        case .deactivate:
            guard let position = alarms.firstIndex(of: member) else {
                return .alarm(AlarmResponse(revision: revision, alarms: []))
            }
            alarms.remove(at: position)
            return .alarm(AlarmResponse(revision: revision, alarms: [member]))
        }
    }

    /// etcd's `applierV3Capped`: what NOSPACE refuses (any operation that would store a
    /// value: a put, or a txn with a put anywhere in it).
    static func addsData(_ operation: WriteOperation) -> Bool {
        switch operation {
        case .put: return true
        case .txn(let txn): return addsData(txn)
        case .auth(.authorized(_, let inner)): return addsData(inner)
        // etcd refuses LeaseGrant under NOSPACE too (it adds a lease to the backend).
        case .lease(.grant): return true
        case .deleteRange, .compact, .alarm, .auth, .lease: return false
        }
    }

    static func addsData(_ txn: TxnRequest) -> Bool {
        for op in txn.success + txn.failure {
            switch op {
            case .put: return true
            case .txn(let nested): if addsData(nested) { return true }
            case .range, .deleteRange: continue
            }
        }
        return false
    }

    /// etcd's quota cost of a request (`costPut`/`costTxn`): 256 bytes of metadata plus key
    /// and value per put; for a txn the costlier branch. 0 for what does not add data.
    public static func quotaCostBytes(_ operation: WriteOperation) -> Int {
        switch operation {
        case .put(let put): return quotaCostBytes(put)
        case .txn(let txn): return quotaCostBytes(txn)
        case .auth(.authorized(_, let inner)): return quotaCostBytes(inner)
        case .deleteRange, .compact, .alarm, .auth, .lease: return 0
        }
    }

    /// etcd's `kvOverhead`: the estimated metadata cost of storing one key.
    public static let quotaKeyOverheadBytes = 256

    static func quotaCostBytes(_ put: PutRequest) -> Int {
        quotaKeyOverheadBytes + put.key.count + put.value.count
    }

    static func quotaCostBytes(_ txn: TxnRequest) -> Int {
        func branch(_ ops: [RequestOp]) -> Int {
            ops.reduce(0) { total, op in
                switch op {
                case .put(let put): return total + quotaCostBytes(put)
                case .txn(let nested): return total + quotaCostBytes(nested)
                case .range, .deleteRange: return total
                }
            }
        }
        return Swift.max(branch(txn.success), branch(txn.failure))
    }

    /// The alarms' part of `stateDigest()` (0 when none is active, so stores without alarms
    /// digest as before alarms existed).
    var alarmsDigest: UInt64 {
        guard !alarms.isEmpty else { return 0 }
        var hasher = FNV1a()
        hasher.combine(UInt64(alarms.count))
        for member in alarms {
            hasher.combine(member.memberID)
            hasher.combine(UInt64(member.alarm.rawValue))
        }
        return hasher.finalized
    }
}
