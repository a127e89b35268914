import EtcdAPI
import Foundation
import KVStore

// The one place where etcd's wire messages (EtcdAPI, generated from rpc.proto) and the state
// machine's vocabulary (KVStore) meet, in both directions: the server reads requests and
// writes responses, the Swift client writes requests and reads responses, and both use these.
// The state machine never sees protobuf; the wire never sees Synod's own codec.

/// A wire message with no KVStore counterpart: an enum value or an empty `oneof` etcd
/// refuses too. The server answers it as etcd does (INVALID_ARGUMENT with this message).
public struct EtcdConversionError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - Requests

extension RangeRequest {
    public init(_ message: Etcdserverpb_RangeRequest) {
        self.init(
            key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), limit: message.limit,
            revision: message.revision, sortOrder: KVSortOrder(message.sortOrder),
            sortTarget: KVSortTarget(message.sortTarget), serializable: message.serializable,
            keysOnly: message.keysOnly, countOnly: message.countOnly, minModRevision: message.minModRevision,
            maxModRevision: message.maxModRevision, minCreateRevision: message.minCreateRevision,
            maxCreateRevision: message.maxCreateRevision)
    }
}

extension Etcdserverpb_RangeRequest {
    public init(_ request: RangeRequest) {
        self.init()
        key = Data(request.key)
        rangeEnd = Data(request.rangeEnd)
        limit = request.limit
        revision = request.revision
        sortOrder = request.sortOrder.etcd
        sortTarget = request.sortTarget.etcd
        serializable = request.serializable
        keysOnly = request.keysOnly
        countOnly = request.countOnly
        minModRevision = request.minModRevision
        maxModRevision = request.maxModRevision
        minCreateRevision = request.minCreateRevision
        maxCreateRevision = request.maxCreateRevision
    }
}

extension KVSortOrder {
    /// An order this build does not know sorts nothing (etcd's default, `NONE`).
    public init(_ order: Etcdserverpb_RangeRequest.SortOrder) {
        switch order {
        case .ascend: self = .ascend
        case .descend: self = .descend
        default: self = .none
        }
    }

    /// etcd's value for this order.
    public var etcd: Etcdserverpb_RangeRequest.SortOrder {
        switch self {
        case .none: return .none
        case .ascend: return .ascend
        case .descend: return .descend
        }
    }
}

extension KVSortTarget {
    /// A target this build does not know sorts by key (etcd's default, `KEY`).
    public init(_ target: Etcdserverpb_RangeRequest.SortTarget) {
        switch target {
        case .version: self = .version
        case .create: self = .create
        case .mod: self = .mod
        case .value: self = .value
        default: self = .key
        }
    }

    /// etcd's value for this target.
    public var etcd: Etcdserverpb_RangeRequest.SortTarget {
        switch self {
        case .key: return .key
        case .version: return .version
        case .create: return .create
        case .mod: return .mod
        case .value: return .value
        }
    }
}

extension PutRequest {
    public init(_ message: Etcdserverpb_PutRequest) {
        self.init(
            key: [UInt8](message.key), value: [UInt8](message.value), prevKV: message.prevKv,
            ignoreValue: message.ignoreValue, lease: message.lease, ignoreLease: message.ignoreLease)
    }
}

extension Etcdserverpb_PutRequest {
    public init(_ request: PutRequest) {
        self.init()
        key = Data(request.key)
        value = Data(request.value)
        prevKv = request.prevKV
        ignoreValue = request.ignoreValue
        lease = request.lease
        ignoreLease = request.ignoreLease
    }
}

extension DeleteRangeRequest {
    public init(_ message: Etcdserverpb_DeleteRangeRequest) {
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), prevKV: message.prevKv)
    }
}

extension Etcdserverpb_DeleteRangeRequest {
    public init(_ request: DeleteRangeRequest) {
        self.init()
        key = Data(request.key)
        rangeEnd = Data(request.rangeEnd)
        prevKv = request.prevKV
    }
}

extension Compare {
    public init(_ message: Etcdserverpb_Compare) throws(EtcdConversionError) {
        let result: CompareResult
        switch message.result {
        case .equal: result = .equal
        case .greater: result = .greater
        case .less: result = .less
        case .notEqual: result = .notEqual
        default: throw EtcdConversionError("etcdserver: unknown compare result")
        }
        let target: CompareTarget
        switch message.target {
        case .version: target = .version(message.version)
        case .create: target = .createRevision(message.createRevision)
        case .mod: target = .modRevision(message.modRevision)
        case .value: target = .value([UInt8](message.value))
        case .lease: target = .lease(message.lease)
        default: throw EtcdConversionError("etcdserver: unknown compare target")
        }
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), result: result, target: target)
    }
}

extension Etcdserverpb_Compare {
    public init(_ compare: Compare) {
        self.init()
        key = Data(compare.key)
        rangeEnd = Data(compare.rangeEnd)
        switch compare.result {
        case .equal: result = .equal
        case .greater: result = .greater
        case .less: result = .less
        case .notEqual: result = .notEqual
        }
        switch compare.target {
        case .version(let version):
            target = .version
            targetUnion = .version(version)
        case .createRevision(let revision):
            target = .create
            targetUnion = .createRevision(revision)
        case .modRevision(let revision):
            target = .mod
            targetUnion = .modRevision(revision)
        case .value(let value):
            target = .value
            targetUnion = .value(Data(value))
        case .lease(let lease):
            target = .lease
            targetUnion = .lease(lease)
        }
    }
}

extension RequestOp {
    public init(_ message: Etcdserverpb_RequestOp) throws(EtcdConversionError) {
        switch message.request {
        case .requestRange(let range): self = .range(RangeRequest(range))
        case .requestPut(let put): self = .put(PutRequest(put))
        case .requestDeleteRange(let delete): self = .deleteRange(DeleteRangeRequest(delete))
        case .requestTxn(let txn): self = .txn(try TxnRequest(txn))
        case .none: throw EtcdConversionError("etcdserver: a txn operation is empty")
        }
    }
}

extension Etcdserverpb_RequestOp {
    public init(_ operation: RequestOp) {
        self.init()
        switch operation {
        case .range(let range): request = .requestRange(Etcdserverpb_RangeRequest(range))
        case .put(let put): request = .requestPut(Etcdserverpb_PutRequest(put))
        case .deleteRange(let delete): request = .requestDeleteRange(Etcdserverpb_DeleteRangeRequest(delete))
        case .txn(let txn): request = .requestTxn(Etcdserverpb_TxnRequest(txn))
        }
    }
}

extension TxnRequest {
    public init(_ message: Etcdserverpb_TxnRequest) throws(EtcdConversionError) {
        var compares: [Compare] = []
        compares.reserveCapacity(message.compare.count)
        for compare in message.compare { compares.append(try Compare(compare)) }
        self.init(compare: compares, success: try Self.operations(message.success), failure: try Self.operations(message.failure))
    }

    private static func operations(_ messages: [Etcdserverpb_RequestOp]) throws(EtcdConversionError) -> [RequestOp] {
        var operations: [RequestOp] = []
        operations.reserveCapacity(messages.count)
        for message in messages { operations.append(try RequestOp(message)) }
        return operations
    }
}

extension Etcdserverpb_TxnRequest {
    public init(_ txn: TxnRequest) {
        self.init()
        compare = txn.compare.map(Etcdserverpb_Compare.init)
        success = txn.success.map(Etcdserverpb_RequestOp.init)
        failure = txn.failure.map(Etcdserverpb_RequestOp.init)
    }
}

// MARK: - Responses

extension KeyValue {
    public init(_ message: Etcdserverpb_KeyValue) {
        self.init(
            key: [UInt8](message.key), value: [UInt8](message.value), createRevision: message.createRevision,
            modRevision: message.modRevision, version: message.version, lease: message.lease)
    }
}

extension Etcdserverpb_KeyValue {
    public init(_ kv: KeyValue) {
        self.init()
        key = Data(kv.key)
        value = Data(kv.value)
        createRevision = kv.createRevision
        modRevision = kv.modRevision
        version = kv.version
        lease = kv.lease
    }
}

// A response's revision travels in its header; the other header fields (cluster, member,
// term) are the server's to fill and the client's to read.

extension RangeResponse {
    public init(_ message: Etcdserverpb_RangeResponse) {
        self.init(
            revision: message.header.revision, kvs: message.kvs.map(KeyValue.init), more: message.more,
            count: message.count)
    }
}

extension Etcdserverpb_RangeResponse {
    public init(_ response: RangeResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        kvs = response.kvs.map(Etcdserverpb_KeyValue.init)
        more = response.more
        count = response.count
    }
}

extension PutResponse {
    public init(_ message: Etcdserverpb_PutResponse) {
        self.init(revision: message.header.revision, prevKV: message.hasPrevKv ? KeyValue(message.prevKv) : nil)
    }
}

extension Etcdserverpb_PutResponse {
    public init(_ response: PutResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        if let previous = response.prevKV { prevKv = Etcdserverpb_KeyValue(previous) }
    }
}

extension DeleteRangeResponse {
    public init(_ message: Etcdserverpb_DeleteRangeResponse) {
        self.init(revision: message.header.revision, deleted: message.deleted, prevKVs: message.prevKvs.map(KeyValue.init))
    }
}

extension Etcdserverpb_DeleteRangeResponse {
    public init(_ response: DeleteRangeResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        deleted = response.deleted
        prevKvs = response.prevKVs.map(Etcdserverpb_KeyValue.init)
    }
}

extension ResponseOp {
    public init(_ message: Etcdserverpb_ResponseOp) throws(EtcdConversionError) {
        switch message.response {
        case .responseRange(let range): self = .range(RangeResponse(range))
        case .responsePut(let put): self = .put(PutResponse(put))
        case .responseDeleteRange(let delete): self = .deleteRange(DeleteRangeResponse(delete))
        case .responseTxn(let txn): self = .txn(try TxnResponse(txn))
        case nil: throw EtcdConversionError("txn response operation without a response")
        }
    }
}

extension Etcdserverpb_ResponseOp {
    /// Nested responses carry the same header as the txn's, as etcd's do.
    public init(_ operation: ResponseOp, header: Etcdserverpb_ResponseHeader) {
        self.init()
        switch operation {
        case .range(let range): response = .responseRange(Etcdserverpb_RangeResponse(range, header: header))
        case .put(let put): response = .responsePut(Etcdserverpb_PutResponse(put, header: header))
        case .deleteRange(let delete):
            response = .responseDeleteRange(Etcdserverpb_DeleteRangeResponse(delete, header: header))
        case .txn(let txn): response = .responseTxn(Etcdserverpb_TxnResponse(txn, header: header))
        }
    }
}

extension TxnResponse {
    public init(_ message: Etcdserverpb_TxnResponse) throws(EtcdConversionError) {
        var responses: [ResponseOp] = []
        responses.reserveCapacity(message.responses.count)
        for operation in message.responses { responses.append(try ResponseOp(operation)) }
        self.init(revision: message.header.revision, succeeded: message.succeeded, responses: responses)
    }
}

extension Etcdserverpb_TxnResponse {
    public init(_ response: TxnResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        succeeded = response.succeeded
        responses = response.responses.map { Etcdserverpb_ResponseOp($0, header: header) }
    }
}
