/// Requests mirroring etcd's `rpc.proto` (etcdserverpb); the lease requests are in
/// `Leases.swift`.
///
/// Range ends follow etcd: an empty `rangeEnd` means just `key`; `rangeEnd == [0]` means every
/// key `>= key` (so `key == [0], rangeEnd == [0]` is every key); otherwise the half-open
/// interval `[key, rangeEnd)`, empty when `rangeEnd <= key`.

/// etcd's `RangeRequest.SortOrder`.
public enum SortOrder: UInt8, Sendable, Hashable, CaseIterable {
    case none = 0
    case ascend = 1
    case descend = 2
}

/// etcd's `RangeRequest.SortTarget`.
public enum SortTarget: UInt8, Sendable, Hashable, CaseIterable {
    case key = 0
    case version = 1
    case create = 2
    case mod = 3
    case value = 4
}

/// etcd's `RangeRequest`.
///
/// `revision` 0 (or negative, as etcd) reads the current state; a positive one reads the
/// store exactly as it was at that revision; below the compacted revision it fails as
/// compacted, above the current one as a future revision.
public struct RangeRequest: Sendable, Hashable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    /// At most this many keys are returned; `<= 0` means no limit.
    public var limit: Int64
    public var revision: Int64
    public var sortOrder: SortOrder
    public var sortTarget: SortTarget
    /// Carried for the server (local read); the store ignores it.
    public var serializable: Bool
    public var keysOnly: Bool
    public var countOnly: Bool
    /// Filters, 0 = unset (etcd). Applied after `count` is taken, as etcd does.
    public var minModRevision: Int64
    public var maxModRevision: Int64
    public var minCreateRevision: Int64
    public var maxCreateRevision: Int64

    public init(
        key: [UInt8],
        rangeEnd: [UInt8] = [],
        limit: Int64 = 0,
        revision: Int64 = 0,
        sortOrder: SortOrder = .none,
        sortTarget: SortTarget = .key,
        serializable: Bool = false,
        keysOnly: Bool = false,
        countOnly: Bool = false,
        minModRevision: Int64 = 0,
        maxModRevision: Int64 = 0,
        minCreateRevision: Int64 = 0,
        maxCreateRevision: Int64 = 0
    ) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.limit = limit
        self.revision = revision
        self.sortOrder = sortOrder
        self.sortTarget = sortTarget
        self.serializable = serializable
        self.keysOnly = keysOnly
        self.countOnly = countOnly
        self.minModRevision = minModRevision
        self.maxModRevision = maxModRevision
        self.minCreateRevision = minCreateRevision
        self.maxCreateRevision = maxCreateRevision
    }
}

/// etcd's `PutRequest`.
public struct PutRequest: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// Return the key-value pair as it was before this put.
    public var prevKV: Bool
    /// Keep the current value (the key must exist; `value` must be empty).
    public var ignoreValue: Bool
    /// Attach the key to this lease (0: detach it from any lease).
    public var lease: Int64
    /// Keep the key's current lease (the key must exist; `lease` must be 0).
    public var ignoreLease: Bool

    public init(
        key: [UInt8], value: [UInt8], prevKV: Bool = false, ignoreValue: Bool = false, lease: Int64 = 0,
        ignoreLease: Bool = false
    ) {
        self.key = key
        self.value = value
        self.prevKV = prevKV
        self.ignoreValue = ignoreValue
        self.lease = lease
        self.ignoreLease = ignoreLease
    }
}

/// etcd's `DeleteRangeRequest`.
public struct DeleteRangeRequest: Sendable, Hashable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    /// Return the deleted key-value pairs.
    public var prevKV: Bool

    public init(key: [UInt8], rangeEnd: [UInt8] = [], prevKV: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.prevKV = prevKV
    }
}

/// etcd's `Compare.CompareResult`.
public enum CompareResult: UInt8, Sendable, Hashable, CaseIterable {
    case equal = 0
    case greater = 1
    case less = 2
    case notEqual = 3
}

/// etcd's `Compare.CompareTarget` together with its `target_union` operand.
public enum CompareTarget: Sendable, Hashable {
    case version(Int64)
    case createRevision(Int64)
    case modRevision(Int64)
    case value([UInt8])
    /// The id of the lease the key is attached to (0: none).
    case lease(Int64)
}

/// etcd's `Compare`. Over a range it holds when it holds for every key in the range; over no
/// key at all, version/create/mod/lease compare against 0 and a value compare fails (etcd).
public struct Compare: Sendable, Hashable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    public var result: CompareResult
    public var target: CompareTarget

    public init(key: [UInt8], rangeEnd: [UInt8] = [], result: CompareResult, target: CompareTarget) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.result = result
        self.target = target
    }
}

/// etcd's `RequestOp`: one operation inside a txn branch.
public enum RequestOp: Sendable, Hashable {
    case range(RangeRequest)
    case put(PutRequest)
    case deleteRange(DeleteRangeRequest)
    case txn(TxnRequest)
}

/// etcd's `TxnRequest`: if every compare holds run `success`, otherwise `failure`.
///
/// All compares of the txn and of its nested txns are evaluated against the state before the
/// txn (etcd's `compareToPath`); the ops then run in order and see each other's writes. All
/// writes of one txn share one new revision.
public struct TxnRequest: Sendable, Hashable {
    public var compare: [Compare]
    public var success: [RequestOp]
    public var failure: [RequestOp]

    public init(compare: [Compare] = [], success: [RequestOp] = [], failure: [RequestOp] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }
}

/// etcd's `CompactionRequest`: forget the history before `revision`.
///
/// After it, reads at any revision `>= revision` still answer exactly as before; reads below
/// it, and watches from `revision` or below, fail as compacted. It takes no new revision.
public struct CompactionRequest: Sendable, Hashable {
    public var revision: Int64
    /// etcd's `physical`: the server answers only once the compaction is durable. Carried for
    /// the server; the store applies a compaction at once either way.
    public var physical: Bool

    public init(revision: Int64, physical: Bool = false) {
        self.revision = revision
        self.physical = physical
    }
}

/// The write half of the API: what goes through the replicated log.
public enum WriteOperation: Sendable, Hashable {
    case put(PutRequest)
    case deleteRange(DeleteRangeRequest)
    case txn(TxnRequest)
    /// Compaction goes through the log so every replica forgets the same history at the same
    /// point of the command sequence.
    case compact(CompactionRequest)
    /// Auth changes and the `authorized` envelope of a client's write (Auth.swift; tags 16–31).
    case auth(AuthOperation)
    /// etcd's alarms (`KVStore+Alarms.swift`): through the log, so every replica holds the same.
    case alarm(AlarmRequest)
    /// Lease grant, revoke and expiry (`Leases.swift`).
    case lease(LeaseOperation)
}

/// One command of the replicated log: a write with its exactly-once identity.
public struct WriteCommand: Sendable, Hashable {
    public var requestID: RequestID
    public var operation: WriteOperation
    /// The leader's wall-clock time when it proposed the command, in milliseconds since
    /// 1970 (0 = unknown). The store never reads a clock: it only records this time with the
    /// revision the command writes, for `history(key:rangeEnd:limit:)`.
    public var proposedAtMilliseconds: Int64

    public init(requestID: RequestID, operation: WriteOperation) {
        self.requestID = requestID
        self.operation = operation
        self.proposedAtMilliseconds = 0
    }

    public init(requestID: RequestID, operation: WriteOperation, proposedAtMilliseconds: Int64) {
        self.requestID = requestID
        self.operation = operation
        self.proposedAtMilliseconds = proposedAtMilliseconds
    }
}
