/// Responses mirroring etcd's `rpc.proto`. `revision` is etcd's `header.revision`: the store
/// revision after the request (for ops inside a txn, the revision the txn had reached there).

/// etcd's `RangeResponse`.
public struct RangeResponse: Sendable, Hashable {
    public var revision: Int64
    public var kvs: [KeyValue]
    /// More keys matched than `limit` let through.
    public var more: Bool
    /// Keys in the range, before `limit` and before the min/max revision filters (etcd).
    public var count: Int64

    public init(revision: Int64, kvs: [KeyValue], more: Bool, count: Int64) {
        self.revision = revision
        self.kvs = kvs
        self.more = more
        self.count = count
    }
}

/// etcd's `PutResponse`.
public struct PutResponse: Sendable, Hashable {
    public var revision: Int64
    /// The pair before the put, when requested and the key existed.
    public var prevKV: KeyValue?

    public init(revision: Int64, prevKV: KeyValue? = nil) {
        self.revision = revision
        self.prevKV = prevKV
    }
}

/// etcd's `DeleteRangeResponse`.
public struct DeleteRangeResponse: Sendable, Hashable {
    public var revision: Int64
    public var deleted: Int64
    /// The deleted pairs in key order, when requested.
    public var prevKVs: [KeyValue]

    public init(revision: Int64, deleted: Int64, prevKVs: [KeyValue] = []) {
        self.revision = revision
        self.deleted = deleted
        self.prevKVs = prevKVs
    }
}

/// etcd's `ResponseOp`.
public enum ResponseOp: Sendable, Hashable {
    case range(RangeResponse)
    case put(PutResponse)
    case deleteRange(DeleteRangeResponse)
    case txn(TxnResponse)
}

/// etcd's `TxnResponse`.
public struct TxnResponse: Sendable, Hashable {
    public var revision: Int64
    public var succeeded: Bool
    public var responses: [ResponseOp]

    public init(revision: Int64, succeeded: Bool, responses: [ResponseOp]) {
        self.revision = revision
        self.succeeded = succeeded
        self.responses = responses
    }
}

/// etcd's `CompactionResponse`: just the header revision (compaction takes none).
public struct CompactionResponse: Sendable, Hashable {
    public var revision: Int64

    public init(revision: Int64) {
        self.revision = revision
    }
}

/// The outcome of applying one `WriteCommand`: the response, or the error with the store
/// revision at the time. Identical on every replica for the same command sequence.
public enum WriteResult: Sendable, Hashable {
    case put(PutResponse)
    case deleteRange(DeleteRangeResponse)
    case txn(TxnResponse)
    case failure(KVError, revision: Int64)
    case compact(CompactionResponse)
    case auth(AuthResponse)
    case alarm(AlarmResponse)
    case lease(LeaseResponse)

    /// etcd's `header.revision`.
    public var revision: Int64 {
        switch self {
        case .put(let response): return response.revision
        case .deleteRange(let response): return response.revision
        case .txn(let response): return response.revision
        case .failure(_, let revision): return revision
        case .compact(let response): return response.revision
        case .auth(let response): return response.revision
        case .alarm(let response): return response.revision
        case .lease(let response): return response.revision
        }
    }

    /// The error, if the command failed.
    public var error: KVError? {
        if case .failure(let error, _) = self { return error }
        return nil
    }
}
