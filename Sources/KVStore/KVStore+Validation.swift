/// Stateless validation of requests, in etcd's order (`checkPutRequest`, `checkTxnRequest`,
/// `checkIntervals`, then the request-size check), plus Synod's own bounds. A request that
/// fails here changes nothing. The server may call `validate` before proposing, so that a
/// bad request never enters the log; the store checks again when applying.
extension KVStore {
    public static func validate(_ operation: WriteOperation) throws(KVError) {
        switch operation {
        case .put(let put):
            try validatePut(put)
        case .deleteRange(let delete):
            try validateDeleteRange(delete)
        case .txn(let txn):
            try validateTxn(txn, operationsMax: KVLimits.txnOperationsMax, depth: 1)
            let total = operationCount(txn)
            if total > KVLimits.txnOperationsTotalMax { throw .txnTooManyOperationsTotal(count: total) }
            _ = try checkIntervals(txn.success)
            _ = try checkIntervals(txn.failure)
        case .compact, .alarm:
            // Whether the revision can be compacted depends on the store's state: checked when applied.
            return
        case .auth(let change):
            try validate(change)
        case .lease(let lease):
            try validateLease(lease)
            return
        }
        let payload = payloadBytes(operation)
        if payload > KVLimits.requestPayloadBytesMax { throw .requestTooLarge(sizeBytes: payload) }
    }

    public static func validateRange(_ range: RangeRequest) throws(KVError) {
        if range.key.isEmpty { throw .emptyKey }
        try validateKeySize(range.key)
        try validateKeySize(range.rangeEnd)
    }

    static func validatePut(_ put: PutRequest) throws(KVError) {
        if put.key.isEmpty { throw .emptyKey }
        if put.ignoreValue && !put.value.isEmpty { throw .valueProvided }
        if put.ignoreLease && put.lease != 0 { throw .lease(.leaseProvided) }
        try validateKeySize(put.key)
        if put.value.count > KVLimits.valueSizeBytesMax { throw .requestTooLarge(sizeBytes: put.value.count) }
    }

    static func validateDeleteRange(_ delete: DeleteRangeRequest) throws(KVError) {
        if delete.key.isEmpty { throw .emptyKey }
        try validateKeySize(delete.key)
        try validateKeySize(delete.rangeEnd)
    }

    private static func validateKeySize(_ key: [UInt8]) throws(KVError) {
        if key.count > KVLimits.keySizeBytesMax { throw .keyTooLarge(sizeBytes: key.count) }
    }

    /// etcd's `checkTxnRequest`: at most `operationsMax` compares and ops per branch; a nested
    /// txn gets what this level left (`operationsMax - opc`).
    private static func validateTxn(_ txn: TxnRequest, operationsMax: Int, depth: Int) throws(KVError) {
        if depth > KVLimits.txnNestingDepthMax { throw .txnNestingTooDeep(depth: depth) }
        let operationCount = Swift.max(txn.compare.count, txn.success.count, txn.failure.count)
        if operationCount > operationsMax { throw .tooManyOperations }
        for compare in txn.compare where compare.key.isEmpty { throw .emptyKey }
        for compare in txn.compare {
            try validateKeySize(compare.key)
            try validateKeySize(compare.rangeEnd)
            if case .value(let value) = compare.target, value.count > KVLimits.valueSizeBytesMax {
                throw .requestTooLarge(sizeBytes: value.count)
            }
        }
        for op in txn.success {
            try validateRequestOp(op, operationsMax: operationsMax - operationCount, depth: depth)
        }
        for op in txn.failure {
            try validateRequestOp(op, operationsMax: operationsMax - operationCount, depth: depth)
        }
    }

    private static func validateRequestOp(_ op: RequestOp, operationsMax: Int, depth: Int) throws(KVError) {
        switch op {
        case .range(let range): try validateRange(range)
        case .put(let put): try validatePut(put)
        case .deleteRange(let delete): try validateDeleteRange(delete)
        case .txn(let txn): try validateTxn(txn, operationsMax: operationsMax, depth: depth + 1)
        }
    }

    /// Compares plus ops over all levels and both branches.
    static func operationCount(_ txn: TxnRequest) -> Int {
        var total = txn.compare.count + txn.success.count + txn.failure.count
        for op in txn.success + txn.failure {
            if case .txn(let nested) = op { total += operationCount(nested) }
        }
        return total
    }

    /// Key, range-end and value bytes of the whole request.
    static func payloadBytes(_ operation: WriteOperation) -> Int {
        switch operation {
        case .put(let put): return put.key.count + put.value.count
        case .deleteRange(let delete): return delete.key.count + delete.rangeEnd.count
        case .txn(let txn): return payloadBytes(txn)
        case .compact, .alarm, .lease: return 0
        case .auth(let change): return payloadBytes(change)
        }
    }

    private static func payloadBytes(_ txn: TxnRequest) -> Int {
        var total = 0
        for compare in txn.compare {
            total += compare.key.count + compare.rangeEnd.count
            if case .value(let value) = compare.target { total += value.count }
        }
        for op in txn.success + txn.failure {
            switch op {
            case .range(let range): total += range.key.count + range.rangeEnd.count
            case .put(let put): total += put.key.count + put.value.count
            case .deleteRange(let delete): total += delete.key.count + delete.rangeEnd.count
            case .txn(let nested): total += payloadBytes(nested)
            }
        }
        return total
    }

    /// etcd's `checkIntervals`: within one branch (nested txns included) no key may be put twice
    /// nor put and deleted. The `then` and `else` branches of one nested txn may put the same
    /// key, since only one of them runs. Returns the branch's puts and deletes for the parent.
    ///
    /// Divergence: etcd builds the delete interval `[key, "\x00")` for a `rangeEnd` of `[0]`, an
    /// empty interval, so it misses such conflicts; Synod treats `[0]` as "to the end" here too.
    static func checkIntervals(_ ops: [RequestOp]) throws(KVError) -> (puts: Set<[UInt8]>, deletes: [KeyRange]) {
        var deletes: [KeyRange] = []
        for op in ops {
            if case .deleteRange(let delete) = op {
                deletes.append(KeyRange(key: delete.key, rangeEnd: delete.rangeEnd))
            }
        }
        func deleted(_ key: [UInt8]) -> Bool {
            deletes.contains { $0.contains(key) }
        }
        var puts: Set<[UInt8]> = []
        for op in ops {
            guard case .txn(let nested) = op else { continue }
            let thenBranch = try checkIntervals(nested.success)
            let elseBranch = try checkIntervals(nested.failure)
            for key in thenBranch.puts {
                if puts.contains(key) || deleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            for key in elseBranch.puts {
                if puts.contains(key) && !thenBranch.puts.contains(key) { throw .duplicateKey }
                if deleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            deletes.append(contentsOf: thenBranch.deletes)
            deletes.append(contentsOf: elseBranch.deletes)
        }
        for op in ops {
            guard case .put(let put) = op else { continue }
            if puts.contains(put.key) || deleted(put.key) { throw .duplicateKey }
            puts.insert(put.key)
        }
        return (puts, deletes)
    }
}
