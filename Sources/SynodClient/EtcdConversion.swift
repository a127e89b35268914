import EtcdAPI
import Foundation
import KVStore

// Conversions between KVStore's request/response vocabulary and the generated etcd messages.
// Leases do not exist in Synod; etcd's lease fields are left 0.

extension Etcdserverpb_RangeRequest {
    init(_ request: RangeRequest) {
        self.init()
        key = Data(request.key)
        rangeEnd = Data(request.rangeEnd)
        limit = request.limit
        revision = request.revision
        sortOrder = Etcdserverpb_RangeRequest.SortOrder(rawValue: Int(request.sortOrder.rawValue)) ?? .none
        sortTarget = Etcdserverpb_RangeRequest.SortTarget(rawValue: Int(request.sortTarget.rawValue)) ?? .key
        serializable = request.serializable
        keysOnly = request.keysOnly
        countOnly = request.countOnly
        minModRevision = request.minModRevision
        maxModRevision = request.maxModRevision
        minCreateRevision = request.minCreateRevision
        maxCreateRevision = request.maxCreateRevision
    }
}

extension Etcdserverpb_PutRequest {
    init(_ request: PutRequest) {
        self.init()
        key = Data(request.key)
        value = Data(request.value)
        prevKv = request.prevKV
        ignoreValue = request.ignoreValue
        lease = request.lease
        ignoreLease = request.ignoreLease
    }
}

extension Etcdserverpb_DeleteRangeRequest {
    init(_ request: DeleteRangeRequest) {
        self.init()
        key = Data(request.key)
        rangeEnd = Data(request.rangeEnd)
        prevKv = request.prevKV
    }
}

extension Etcdserverpb_Compare {
    init(_ compare: Compare) {
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

extension Etcdserverpb_RequestOp {
    init(_ operation: RequestOp) {
        self.init()
        switch operation {
        case .range(let range): request = .requestRange(Etcdserverpb_RangeRequest(range))
        case .put(let put): request = .requestPut(Etcdserverpb_PutRequest(put))
        case .deleteRange(let delete): request = .requestDeleteRange(Etcdserverpb_DeleteRangeRequest(delete))
        case .txn(let txn): request = .requestTxn(Etcdserverpb_TxnRequest(txn))
        }
    }
}

extension Etcdserverpb_TxnRequest {
    init(_ txn: TxnRequest) {
        self.init()
        compare = txn.compare.map(Etcdserverpb_Compare.init)
        success = txn.success.map(Etcdserverpb_RequestOp.init)
        failure = txn.failure.map(Etcdserverpb_RequestOp.init)
    }
}

extension SynodResponseHeader {
    init(_ header: Etcdserverpb_ResponseHeader) {
        self.init(
            clusterID: header.clusterID,
            memberID: header.memberID,
            revision: header.revision,
            raftTerm: header.raftTerm
        )
    }
}

extension KeyValue {
    init(_ keyValue: Etcdserverpb_KeyValue) {
        self.init(
            key: Array(keyValue.key),
            value: Array(keyValue.value),
            createRevision: keyValue.createRevision,
            modRevision: keyValue.modRevision,
            version: keyValue.version,
            lease: keyValue.lease
        )
    }
}

extension RangeResponse {
    init(_ response: Etcdserverpb_RangeResponse) {
        self.init(
            revision: response.header.revision,
            kvs: response.kvs.map(KeyValue.init),
            more: response.more,
            count: response.count
        )
    }
}

extension PutResponse {
    init(_ response: Etcdserverpb_PutResponse) {
        self.init(
            revision: response.header.revision,
            prevKV: response.hasPrevKv ? KeyValue(response.prevKv) : nil
        )
    }
}

extension DeleteRangeResponse {
    init(_ response: Etcdserverpb_DeleteRangeResponse) {
        self.init(
            revision: response.header.revision,
            deleted: response.deleted,
            prevKVs: response.prevKvs.map(KeyValue.init)
        )
    }
}

extension TxnResponse {
    init(_ response: Etcdserverpb_TxnResponse) throws(SynodClientError) {
        var responses: [ResponseOp] = []
        responses.reserveCapacity(response.responses.count)
        for operation in response.responses {
            switch operation.response {
            case .responseRange(let range): responses.append(.range(RangeResponse(range)))
            case .responsePut(let put): responses.append(.put(PutResponse(put)))
            case .responseDeleteRange(let delete): responses.append(.deleteRange(DeleteRangeResponse(delete)))
            case .responseTxn(let txn): responses.append(.txn(try TxnResponse(txn)))
            case nil: throw .unexpectedResponse("txn response operation without a response")
            }
        }
        self.init(revision: response.header.revision, succeeded: response.succeeded, responses: responses)
    }
}
