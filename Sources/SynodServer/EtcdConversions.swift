import EtcdAPI
import Foundation
import GRPCCore
import KVStore

/// Conversions between etcd's wire messages and the state machine's own types. The
/// state machine never sees protobuf; the wire never sees our codec.
enum EtcdConversions {
    static func bytes(_ data: Data) -> [UInt8] { [UInt8](data) }

    static func range(_ request: Etcdserverpb_RangeRequest) -> RangeRequest {
        RangeRequest(
            key: bytes(request.key), rangeEnd: bytes(request.rangeEnd), limit: request.limit,
            revision: request.revision, sortOrder: sortOrder(request.sortOrder),
            sortTarget: sortTarget(request.sortTarget), serializable: request.serializable,
            keysOnly: request.keysOnly, countOnly: request.countOnly, minModRevision: request.minModRevision,
            maxModRevision: request.maxModRevision, minCreateRevision: request.minCreateRevision,
            maxCreateRevision: request.maxCreateRevision)
    }

    static func sortOrder(_ order: Etcdserverpb_RangeRequest.SortOrder) -> KVSortOrder {
        switch order {
        case .ascend: return .ascend
        case .descend: return .descend
        default: return .none
        }
    }

    static func sortTarget(_ target: Etcdserverpb_RangeRequest.SortTarget) -> KVSortTarget {
        switch target {
        case .version: return .version
        case .create: return .create
        case .mod: return .mod
        case .value: return .value
        default: return .key
        }
    }

    static func put(_ request: Etcdserverpb_PutRequest) throws -> PutRequest {
        PutRequest(
            key: bytes(request.key), value: bytes(request.value), prevKV: request.prevKv,
            ignoreValue: request.ignoreValue, lease: request.lease, ignoreLease: request.ignoreLease)
    }

    static func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest) -> DeleteRangeRequest {
        DeleteRangeRequest(key: bytes(request.key), rangeEnd: bytes(request.rangeEnd), prevKV: request.prevKv)
    }

    static func txn(_ request: Etcdserverpb_TxnRequest) throws -> TxnRequest {
        TxnRequest(
            compare: try request.compare.map(compare), success: try request.success.map(requestOp),
            failure: try request.failure.map(requestOp))
    }

    static func compare(_ compare: Etcdserverpb_Compare) throws -> Compare {
        let result: CompareResult
        switch compare.result {
        case .equal: result = .equal
        case .greater: result = .greater
        case .less: result = .less
        case .notEqual: result = .notEqual
        default: throw RPCError(code: .invalidArgument, message: "etcdserver: unknown compare result")
        }
        let target: CompareTarget
        switch compare.target {
        case .version: target = .version(compare.version)
        case .create: target = .createRevision(compare.createRevision)
        case .mod: target = .modRevision(compare.modRevision)
        case .value: target = .value(bytes(compare.value))
        case .lease: target = .lease(compare.lease)
        default: throw RPCError(code: .invalidArgument, message: "etcdserver: unknown compare target")
        }
        return Compare(key: bytes(compare.key), rangeEnd: bytes(compare.rangeEnd), result: result, target: target)
    }

    static func requestOp(_ op: Etcdserverpb_RequestOp) throws -> RequestOp {
        switch op.request {
        case .requestRange(let range): return .range(Self.range(range))
        case .requestPut(let put): return .put(try Self.put(put))
        case .requestDeleteRange(let delete): return .deleteRange(deleteRange(delete))
        case .requestTxn(let txn): return .txn(try Self.txn(txn))
        case .none: throw RPCError(code: .invalidArgument, message: "etcdserver: a txn operation is empty")
        }
    }

    // MARK: - Responses

    static func keyValue(_ kv: KeyValue) -> Etcdserverpb_KeyValue {
        var out = Etcdserverpb_KeyValue()
        out.key = Data(kv.key)
        out.value = Data(kv.value)
        out.createRevision = kv.createRevision
        out.modRevision = kv.modRevision
        out.version = kv.version
        out.lease = kv.lease
        return out
    }

    static func rangeResponse(_ response: RangeResponse, header: Etcdserverpb_ResponseHeader)
        -> Etcdserverpb_RangeResponse
    {
        var out = Etcdserverpb_RangeResponse()
        out.header = header
        out.kvs = response.kvs.map(keyValue)
        out.more = response.more
        out.count = response.count
        return out
    }

    static func putResponse(_ response: PutResponse, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_PutResponse {
        var out = Etcdserverpb_PutResponse()
        out.header = header
        if let prev = response.prevKV { out.prevKv = keyValue(prev) }
        return out
    }

    static func deleteResponse(_ response: DeleteRangeResponse, header: Etcdserverpb_ResponseHeader)
        -> Etcdserverpb_DeleteRangeResponse
    {
        var out = Etcdserverpb_DeleteRangeResponse()
        out.header = header
        out.deleted = response.deleted
        out.prevKvs = response.prevKVs.map(keyValue)
        return out
    }

    static func txnResponse(_ response: TxnResponse, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_TxnResponse {
        var out = Etcdserverpb_TxnResponse()
        out.header = header
        out.succeeded = response.succeeded
        out.responses = response.responses.map { responseOp($0, header: header) }
        return out
    }

    static func responseOp(_ op: ResponseOp, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_ResponseOp {
        var out = Etcdserverpb_ResponseOp()
        switch op {
        case .range(let range): out.response = .responseRange(rangeResponse(range, header: header))
        case .put(let put): out.response = .responsePut(putResponse(put, header: header))
        case .deleteRange(let delete): out.response = .responseDeleteRange(deleteResponse(delete, header: header))
        case .txn(let txn): out.response = .responseTxn(txnResponse(txn, header: header))
        }
        return out
    }

    /// etcd's gRPC status code for each state-machine error, so clients retry (or not)
    /// exactly as they do with etcd.
    static func rpcError(_ error: KVError) -> RPCError {
        switch error {
        case .compacted, .futureRevision:
            return RPCError(code: .outOfRange, message: error.message)
        case .keyNotFound:
            return RPCError(code: .invalidArgument, message: error.message)
        case .staleRequest:
            return RPCError(code: .failedPrecondition, message: error.message)
        case .lease(let leaseError):
            // etcd's codes (rpctypes), which clientv3 maps back to its typed errors.
            switch leaseError {
            case .notFound: return RPCError(code: .notFound, message: error.message)
            case .alreadyExists: return RPCError(code: .failedPrecondition, message: error.message)
            case .ttlTooLarge: return RPCError(code: .outOfRange, message: error.message)
            case .leaseProvided: return RPCError(code: .invalidArgument, message: error.message)
            case .tooManyLeases: return RPCError(code: .resourceExhausted, message: error.message)
            }
        default:
            return RPCError(code: .invalidArgument, message: error.message)
        }
    }
}
