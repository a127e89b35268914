import Testing

@testable import KVStore

/// Revisions and versions as etcd documents them (etcd.io "Data model" and the API guide's
/// "Revisions"): the store starts at revision 1, so the first write gets revision 2.
@Suite struct RevisionTests {
    @Test func emptyStoreIsAtRevisionOne() throws {
        let store = KVStore()
        #expect(store.revision == 1)
        #expect(store.count == 0)
        let response = try store.range(RangeRequest(key: b("foo")))
        #expect(response.revision == 1)
        #expect(response.kvs.isEmpty)
        #expect(response.count == 0)
    }

    @Test func putCreatesThenBumpsVersion() throws {
        var store = KVStore()
        #expect(store.put("foo", "bar").revision == 2)
        #expect(
            store.get(b("foo"))
                == KeyValue(key: b("foo"), value: b("bar"), createRevision: 2, modRevision: 2, version: 1)
        )
        #expect(store.put("foo", "baz").revision == 3)
        #expect(
            store.get(b("foo"))
                == KeyValue(key: b("foo"), value: b("baz"), createRevision: 2, modRevision: 3, version: 2)
        )
        #expect(store.put("other", "x").revision == 4)
        #expect(store.get(b("other"))?.createRevision == 4)
        #expect(store.get(b("foo"))?.modRevision == 3)
        #expect(store.revision == 4)
        #expect(store.get(b("foo"))?.lease == 0)
    }

    @Test func putWithSameValueStillTakesARevision() {
        var store = KVStore()
        store.put("a", "1")
        #expect(store.put("a", "1").revision == 3)
        #expect(store.get(b("a"))?.version == 2)
    }

    @Test func deleteRemovesAndRecreateStartsOver() throws {
        var store = KVStore()
        store.put("foo", "1")  // rev 2
        store.put("foo", "2")  // rev 3
        let deleted = try #require(store.delete("foo").deleteResponse)
        #expect(deleted == DeleteRangeResponse(revision: 4, deleted: 1))
        #expect(store.get(b("foo")) == nil)
        // Deleting nothing takes no revision (etcd).
        let none = try #require(store.delete("foo").deleteResponse)
        #expect(none == DeleteRangeResponse(revision: 4, deleted: 0))
        #expect(store.revision == 4)
        store.put("foo", "3")
        #expect(
            store.get(b("foo")) == KeyValue(key: b("foo"), value: b("3"), createRevision: 5, modRevision: 5, version: 1)
        )
    }

    @Test func putPrevKVReturnsTheOldPair() throws {
        var store = KVStore()
        let first = try #require(store.put("k", "v1", prevKV: true).putResponse)
        #expect(first == PutResponse(revision: 2, prevKV: nil))
        let second = try #require(store.put("k", "v2", prevKV: true).putResponse)
        #expect(second.prevKV == KeyValue(key: b("k"), value: b("v1"), createRevision: 2, modRevision: 2, version: 1))
        let third = try #require(store.put("k", "v3").putResponse)
        #expect(third.prevKV == nil)
    }

    @Test func ignoreValueKeepsTheValueAndBumpsVersion() throws {
        var store = KVStore()
        store.put("k", "v1")
        let result = store.apply(
            WriteCommand(requestID: .none, operation: .put(PutRequest(key: b("k"), value: [], ignoreValue: true)))
        )
        #expect(result.revision == 3)
        #expect(
            store.get(b("k")) == KeyValue(key: b("k"), value: b("v1"), createRevision: 2, modRevision: 3, version: 2)
        )
        let missing = store.apply(
            WriteCommand(requestID: .none, operation: .put(PutRequest(key: b("nope"), value: [], ignoreValue: true)))
        )
        #expect(missing == .failure(.keyNotFound, revision: 3))
        #expect(missing.error?.message == "etcdserver: key not found")
    }

    @Test func readsAtOtherRevisions() throws {
        var store = KVStore()
        store.put("a", "1")
        store.put("a", "2")  // rev 3
        #expect(try store.range(RangeRequest(key: b("a"), revision: 3)).kvs.count == 1)
        #expect(try store.range(RangeRequest(key: b("a"), revision: -1)).kvs.count == 1)
        #expect(try store.range(RangeRequest(key: b("a"), revision: 2)).kvs.first?.value == b("1"))
        #expect(try store.range(RangeRequest(key: b("a"), revision: 1)).kvs.isEmpty)
        #expect(
            store.apply(WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: 3)))).error
                == nil)
        #expect(throws: KVError.compacted(revision: 3)) { try store.range(RangeRequest(key: b("a"), revision: 2)) }
        #expect(throws: KVError.futureRevision(revision: 4)) { try store.range(RangeRequest(key: b("a"), revision: 4)) }
        #expect(KVError.compacted(revision: 2).message == "etcdserver: mvcc: required revision has been compacted")
        #expect(
            KVError.futureRevision(revision: 4).message == "etcdserver: mvcc: required revision is a future revision"
        )
    }
}

@Suite struct DescriptionTests {
    @Test func oneLineTraces() {
        let command = WriteCommand(
            requestID: RequestID(clientID: 7, sequence: 3),
            operation: .put(PutRequest(key: b("k"), value: b("v")))
        )
        #expect(command.description == "7#3 put k=v")
        let txn = WriteOperation.txn(
            TxnRequest(
                compare: [Compare(key: b("a"), rangeEnd: [0], result: .greater, target: .modRevision(4))],
                success: [.deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: b("c")))],
                failure: [.range(RangeRequest(key: [0xFF], limit: 1))]
            )
        )
        #expect(txn.description == "txn if [[a, ∞) mod > 4] then [del [a, c)] else [range 0xff limit=1]")
        #expect(WriteResult.failure(.emptyKey, revision: 3).description == "error r=3 etcdserver: key is not provided")
        #expect(WriteResult.put(PutResponse(revision: 5)).description == "put r=5")
    }
}
