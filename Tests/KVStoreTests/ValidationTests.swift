import Testing

@testable import KVStore

@Suite struct ValidationTests {
    func sampleStore() -> KVStore {
        var store = KVStore()
        store.put("a", "1")
        store.put("b", "2")
        return store
    }

    /// Applies `operation` and checks it fails with `error` and changes nothing.
    func expectRejected(_ operation: WriteOperation, _ error: KVError, message: String? = nil) {
        var store = sampleStore()
        let before = store.snapshot()
        let result = store.apply(WriteCommand(requestID: .none, operation: operation))
        #expect(result == .failure(error, revision: 3))
        #expect(store.snapshot() == before)
        #expect(throws: error) { try KVStore.validate(operation) }
        if let message { #expect(error.message == message) }
    }

    @Test func emptyKeys() {
        let message = "etcdserver: key is not provided"
        expectRejected(.put(PutRequest(key: [], value: b("v"))), .emptyKey, message: message)
        expectRejected(.deleteRange(DeleteRangeRequest(key: [])), .emptyKey, message: message)
        expectRejected(.txn(TxnRequest(compare: [Compare(key: [], result: .equal, target: .version(0))])), .emptyKey)
        expectRejected(.txn(TxnRequest(success: [.range(RangeRequest(key: []))])), .emptyKey)
        expectRejected(.txn(TxnRequest(failure: [.put(PutRequest(key: [], value: []))])), .emptyKey)
    }

    @Test func sizes() {
        let bigKey = [UInt8](repeating: 7, count: KVLimits.keySizeBytesMax + 1)
        expectRejected(.put(PutRequest(key: bigKey, value: [])), .keyTooLarge(sizeBytes: bigKey.count))
        expectRejected(
            .deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: bigKey)),
            .keyTooLarge(sizeBytes: bigKey.count)
        )
        let bigValue = [UInt8](repeating: 7, count: KVLimits.valueSizeBytesMax + 1)
        expectRejected(
            .put(PutRequest(key: b("k"), value: bigValue)),
            .requestTooLarge(sizeBytes: bigValue.count),
            message: "etcdserver: request is too large"
        )
        // The largest value is accepted.
        var store = sampleStore()
        let largest = [UInt8](repeating: 7, count: KVLimits.valueSizeBytesMax)
        let maxKey = [UInt8](repeating: 1, count: KVLimits.keySizeBytesMax)
        #expect(
            store.apply(WriteCommand(requestID: .none, operation: .put(PutRequest(key: maxKey, value: largest)))).error
                == nil
        )
        // Two large values in one txn exceed the payload bound.
        let half = [UInt8](repeating: 1, count: KVLimits.requestPayloadBytesMax / 2 + 1)
        let txn = TxnRequest(success: [
            .put(PutRequest(key: b("x"), value: half)), .put(PutRequest(key: b("y"), value: half)),
        ])
        expectRejected(.txn(txn), .requestTooLarge(sizeBytes: 2 * half.count + 2))
    }

    @Test func valueProvidedWithIgnoreValue() {
        expectRejected(
            .put(PutRequest(key: b("a"), value: b("x"), ignoreValue: true)),
            .valueProvided,
            message: "etcdserver: value is provided"
        )
    }

    @Test func tooManyOperations() {
        let message = "etcdserver: too many operations in txn request"
        let ops = (0...KVLimits.txnOperationsMax).map { RequestOp.range(RangeRequest(key: b("k\($0)"))) }
        expectRejected(.txn(TxnRequest(success: ops)), .tooManyOperations, message: message)
        expectRejected(.txn(TxnRequest(failure: ops)), .tooManyOperations)
        let compares = (0...KVLimits.txnOperationsMax).map { _ in
            Compare(key: b("a"), result: .equal, target: .version(1))
        }
        expectRejected(.txn(TxnRequest(compare: compares)), .tooManyOperations)
        // Exactly the maximum is fine.
        var store = sampleStore()
        let maximal = TxnRequest(success: Array(ops.dropLast()))
        #expect(store.txn(maximal).error == nil)
        // A nested txn gets the budget its parent left: 100 at the top leaves 28 below.
        let nested = TxnRequest(success: (0..<29).map { RequestOp.range(RangeRequest(key: b("n\($0)"))) })
        let parent = Array(ops.prefix(99)) + [RequestOp.txn(nested)]
        expectRejected(.txn(TxnRequest(success: parent)), .tooManyOperations)
        let fits = TxnRequest(
            success: Array(ops.prefix(99)) + [.txn(TxnRequest(success: Array(nested.success.prefix(28))))]
        )
        #expect(store.txn(fits).error == nil)
    }

    @Test func nestingAndTotalBounds() {
        var deep = TxnRequest()
        for _ in 0..<KVLimits.txnNestingDepthMax { deep = TxnRequest(success: [.txn(deep)]) }
        expectRejected(.txn(deep), .txnNestingTooDeep(depth: KVLimits.txnNestingDepthMax + 1))
        var store = sampleStore()
        var deepest = TxnRequest()
        for _ in 1..<KVLimits.txnNestingDepthMax { deepest = TxnRequest(success: [.txn(deepest)]) }
        #expect(store.txn(deepest).error == nil)
        // 60 compares, 60 ops each a txn of 60 ops: every level within etcd's budget, 3720 in total.
        let leaf = TxnRequest(success: (0..<60).map { RequestOp.range(RangeRequest(key: b("r\($0)"))) })
        let wide = TxnRequest(
            compare: (0..<60).map { _ in Compare(key: b("a"), result: .equal, target: .version(1)) },
            success: (0..<60).map { _ in RequestOp.txn(leaf) }
        )
        expectRejected(.txn(wide), .txnTooManyOperationsTotal(count: 60 + 60 + 60 * 60))
    }

    @Test func duplicateKeys() {
        let message = "etcdserver: duplicate key given in txn request"
        let putA = RequestOp.put(PutRequest(key: b("a"), value: b("1")))
        let putB = RequestOp.put(PutRequest(key: b("b"), value: b("1")))
        expectRejected(.txn(TxnRequest(success: [putA, putA])), .duplicateKey, message: message)
        expectRejected(.txn(TxnRequest(failure: [putB, putA, putB])), .duplicateKey)
        // Put and delete of the same key.
        expectRejected(.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("a"))), putA])), .duplicateKey)
        expectRejected(
            .txn(TxnRequest(success: [putA, .deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: b("c")))])),
            .duplicateKey
        )
        expectRejected(
            .txn(TxnRequest(success: [putB, .deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: [0]))])),
            .duplicateKey
        )
        // Across nesting.
        expectRejected(.txn(TxnRequest(success: [putA, .txn(TxnRequest(success: [putA]))])), .duplicateKey)
        expectRejected(.txn(TxnRequest(success: [putA, .txn(TxnRequest(failure: [putA]))])), .duplicateKey)
        expectRejected(
            .txn(
                TxnRequest(success: [.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("a")))])), putA])
            ),
            .duplicateKey
        )
        // Allowed: the same key in the two branches of one nested txn, in success and failure,
        // and a delete outside [key, rangeEnd).
        var store = sampleStore()
        #expect(store.txn(TxnRequest(success: [putA], failure: [putA])).error == nil)
        #expect(store.txn(TxnRequest(success: [.txn(TxnRequest(success: [putA], failure: [putA]))])).error == nil)
        #expect(store.txn(TxnRequest(success: [putB, .deleteRange(DeleteRangeRequest(key: b("a")))])).error == nil)
        #expect(store.txn(TxnRequest(success: [putB, .range(RangeRequest(key: b("b")))])).error == nil)
    }

    @Test func malformedEncodedCommandChangesNothing() {
        var store = sampleStore()
        let before = store.snapshot()
        // 15: no operation has that tag (4 compact, 5–8 leases, 9 alarm, 16–31 auth).
        let (id, result) = store.apply(encoded: [WriteCommand.formatVersion, 1, 2, 15])
        #expect(id == nil)
        guard case .failure(.malformedCommand(let error), 3) = result else {
            Issue.record("expected malformedCommand, got \(result)")
            return
        }
        #expect(error.reason == .unknownTag(field: "operation", tag: 15))
        #expect(error.offset == 3)
        #expect(store.snapshot() == before)
    }
}
