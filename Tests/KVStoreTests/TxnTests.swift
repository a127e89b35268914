import Testing

@testable import KVStore

@Suite struct TxnTests {
    /// a: create 2, mod 4, version 2, value "2"; b: create 3, mod 3, version 1, value "x". Revision 4.
    func sampleStore() -> KVStore {
        var store = KVStore()
        store.put("a", "1")
        store.put("b", "x")
        store.put("a", "2")
        return store
    }

    func holds(_ compare: Compare, in store: KVStore) -> Bool {
        var copy = store
        let response = copy.txn(TxnRequest(compare: [compare]))
        return response.txnResponse?.succeeded ?? false
    }

    @Test func everyTargetAndResultOnAnExistingKey() {
        let store = sampleStore()
        let cases: [(CompareTarget, [CompareResult: Bool])] = [
            (.version(2), [.equal: true, .notEqual: false, .greater: false, .less: false]),
            (.version(1), [.equal: false, .notEqual: true, .greater: true, .less: false]),
            (.createRevision(3), [.equal: false, .notEqual: true, .greater: false, .less: true]),
            (.createRevision(2), [.equal: true, .notEqual: false, .greater: false, .less: false]),
            (.modRevision(4), [.equal: true, .notEqual: false, .greater: false, .less: false]),
            (.modRevision(3), [.equal: false, .notEqual: true, .greater: true, .less: false]),
            (.value(b("2")), [.equal: true, .notEqual: false, .greater: false, .less: false]),
            (.value(b("10")), [.equal: false, .notEqual: true, .greater: true, .less: false]),
            (.value(b("3")), [.equal: false, .notEqual: true, .greater: false, .less: true]),
            (.lease(0), [.equal: true, .notEqual: false, .greater: false, .less: false]),
        ]
        for (target, expectations) in cases {
            for (result, expected) in expectations {
                let compare = Compare(key: b("a"), result: result, target: target)
                #expect(holds(compare, in: store) == expected, "\(target) \(result)")
            }
        }
    }

    @Test func missingKeyComparesAsZeroAndValueFails() {
        let store = sampleStore()
        for target: CompareTarget in [.version(0), .createRevision(0), .modRevision(0), .lease(0)] {
            #expect(holds(Compare(key: b("zz"), result: .equal, target: target), in: store), "\(target)")
            #expect(!holds(Compare(key: b("zz"), result: .greater, target: target), in: store), "\(target)")
        }
        #expect(holds(Compare(key: b("zz"), result: .less, target: .version(1)), in: store))
        // etcd: "always fail if comparing a value on a key that doesn't exist".
        for result in CompareResult.allCases {
            #expect(!holds(Compare(key: b("zz"), result: result, target: .value([])), in: store), "\(result)")
            #expect(!holds(Compare(key: b("zz"), result: result, target: .value(b("x"))), in: store), "\(result)")
        }
    }

    @Test func rangeCompareHoldsOnlyIfItHoldsForEveryKey() {
        let store = sampleStore()
        let all: [UInt8] = [0]
        #expect(holds(Compare(key: b("a"), rangeEnd: all, result: .greater, target: .version(0)), in: store))
        #expect(!holds(Compare(key: b("a"), rangeEnd: all, result: .equal, target: .version(2)), in: store))
        #expect(holds(Compare(key: b("a"), rangeEnd: b("c"), result: .less, target: .modRevision(5)), in: store))
        #expect(!holds(Compare(key: b("a"), rangeEnd: b("c"), result: .less, target: .modRevision(4)), in: store))
        #expect(holds(Compare(key: b("b"), rangeEnd: b("c"), result: .equal, target: .value(b("x"))), in: store))
        // An empty range behaves like a missing key.
        #expect(holds(Compare(key: b("c"), rangeEnd: b("d"), result: .equal, target: .createRevision(0)), in: store))
        #expect(!holds(Compare(key: b("c"), rangeEnd: b("d"), result: .equal, target: .value([])), in: store))
    }

    @Test func allComparesMustHold() {
        let store = sampleStore()
        let yes = Compare(key: b("a"), result: .equal, target: .version(2))
        let no = Compare(key: b("b"), result: .equal, target: .version(2))
        var copy = store
        #expect(copy.txn(TxnRequest(compare: [yes, yes])).txnResponse?.succeeded == true)
        #expect(copy.txn(TxnRequest(compare: [yes, no])).txnResponse?.succeeded == false)
        #expect(copy.txn(TxnRequest(compare: [])).txnResponse?.succeeded == true)
    }

    @Test func writesShareOneRevision() throws {
        var store = sampleStore()
        let txn = TxnRequest(
            compare: [Compare(key: b("a"), result: .equal, target: .value(b("2")))],
            success: [
                .put(PutRequest(key: b("c"), value: b("new"))),
                .put(PutRequest(key: b("a"), value: b("3"), prevKV: true)),
                .deleteRange(DeleteRangeRequest(key: b("b"), prevKV: true)),
                .range(RangeRequest(key: b("a"), rangeEnd: [0])),
            ],
            failure: [.put(PutRequest(key: b("failed"), value: []))]
        )
        let response = try #require(store.txn(txn).txnResponse)
        #expect(response.succeeded)
        #expect(response.revision == 5)
        #expect(store.revision == 5)
        #expect(store.get(b("c"))?.modRevision == 5)
        #expect(
            store.get(b("a")) == KeyValue(key: b("a"), value: b("3"), createRevision: 2, modRevision: 5, version: 3)
        )
        #expect(store.get(b("b")) == nil)
        #expect(store.get(b("failed")) == nil)
        #expect(response.responses.count == 4)
        #expect(response.responses[0].putResponse == PutResponse(revision: 5))
        #expect(response.responses[1].putResponse?.prevKV?.value == b("2"))
        #expect(response.responses[2].deleteResponse?.deleted == 1)
        #expect(response.responses[2].deleteResponse?.prevKVs.first?.key == b("b"))
        // Ops see the writes before them.
        let range = try #require(response.responses[3].rangeResponse)
        #expect(range.kvs.map(\.key) == [b("a"), b("c")])
        #expect(range.revision == 5)
    }

    @Test func failureBranchRuns() throws {
        var store = sampleStore()
        let txn = TxnRequest(
            compare: [Compare(key: b("a"), result: .equal, target: .value(b("nope")))],
            success: [.put(PutRequest(key: b("s"), value: []))],
            failure: [.put(PutRequest(key: b("f"), value: b("1"))), .range(RangeRequest(key: b("b")))]
        )
        let response = try #require(store.txn(txn).txnResponse)
        #expect(!response.succeeded)
        #expect(store.get(b("f"))?.createRevision == 5)
        #expect(store.get(b("s")) == nil)
        #expect(response.responses[1].rangeResponse?.kvs.first?.value == b("x"))
    }

    @Test func readOnlyAndNoOpTxnsTakeNoRevision() throws {
        var store = sampleStore()
        let readOnly = try #require(store.txn(TxnRequest(success: [.range(RangeRequest(key: b("a")))])).txnResponse)
        #expect(readOnly.revision == 4)
        #expect(readOnly.responses[0].rangeResponse?.revision == 4)
        let noDelete = try #require(
            store.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("zz")))])).txnResponse
        )
        #expect(noDelete.revision == 4)
        #expect(noDelete.responses[0].deleteResponse == DeleteRangeResponse(revision: 4, deleted: 0))
        #expect(try #require(store.txn(TxnRequest()).txnResponse).revision == 4)
        #expect(store.revision == 4)
    }

    @Test func nestedTxnComparesSeeThePreTxnState() throws {
        var store = sampleStore()
        // The outer txn deletes b, then a nested txn compares b: it still sees b (etcd's
        // compareToPath evaluates every compare before any op runs).
        let nested = TxnRequest(
            compare: [Compare(key: b("b"), result: .equal, target: .version(1))],
            success: [.put(PutRequest(key: b("saw-b"), value: []))],
            failure: [.put(PutRequest(key: b("missed-b"), value: []))]
        )
        let txn = TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("b"))), .txn(nested)])
        let response = try #require(store.txn(txn).txnResponse)
        #expect(response.revision == 5)
        #expect(store.get(b("saw-b"))?.modRevision == 5)
        #expect(store.get(b("missed-b")) == nil)
        let inner = try #require(response.responses[1].txnResponse)
        #expect(inner.succeeded)
        #expect(inner.responses[0].putResponse == PutResponse(revision: 5))
    }

    @Test func rangeAtThePreTxnRevisionSeesThePreTxnState() throws {
        var store = sampleStore()
        let txn = TxnRequest(success: [
            .put(PutRequest(key: b("a"), value: b("after"))),
            .range(RangeRequest(key: b("a"), revision: 4)),
            .range(RangeRequest(key: b("a"))),
        ])
        let response = try #require(store.txn(txn).txnResponse)
        #expect(response.responses[1].rangeResponse?.kvs.first?.value == b("2"))
        #expect(response.responses[2].rangeResponse?.kvs.first?.value == b("after"))
        // A range at a future or compacted revision fails the whole txn before it writes.
        #expect(
            store.apply(WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: 3)))).error
                == nil)
        let before = store.snapshot()
        let future = store.txn(
            TxnRequest(success: [
                .put(PutRequest(key: b("x"), value: [])), .range(RangeRequest(key: b("a"), revision: 6)),
            ])
        )
        #expect(future == .failure(.futureRevision(revision: 6), revision: 5))
        let compacted = store.txn(
            TxnRequest(success: [
                .put(PutRequest(key: b("x"), value: [])), .range(RangeRequest(key: b("a"), revision: 2)),
            ])
        )
        #expect(compacted == .failure(.compacted(revision: 3), revision: 5))
        #expect(store.snapshot() == before)
    }

    @Test func ignoreValuePutOfMissingKeyFailsTheWholeTxn() {
        var store = sampleStore()
        let before = store.snapshot()
        let result = store.txn(
            TxnRequest(success: [
                .put(PutRequest(key: b("new"), value: [])),
                .put(PutRequest(key: b("missing"), value: [], ignoreValue: true)),
            ])
        )
        #expect(result == .failure(.keyNotFound, revision: 4))
        #expect(store.snapshot() == before)
        // Only the chosen branch is checked.
        let unchosen = store.txn(
            TxnRequest(
                compare: [Compare(key: b("a"), result: .equal, target: .version(2))],
                failure: [.put(PutRequest(key: b("missing"), value: [], ignoreValue: true))]
            )
        )
        #expect(unchosen.txnResponse?.succeeded == true)
    }
}
