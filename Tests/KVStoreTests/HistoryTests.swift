import Testing

@testable import KVStore

/// Multi-version history: reads at older revisions, compaction, events, audit times, HashKV.
@Suite struct HistoryTests {
    /// r2 a=1, r3 a=2, r4 del a, r5 a=3 (re-created), r6 b=x, r7 ab=y.
    func recreatedStore() -> KVStore {
        var store = KVStore()
        store.put("a", "1")
        store.put("a", "2")
        store.delete("a")
        store.put("a", "3")
        store.put("b", "x")
        store.put("ab", "y")
        return store
    }

    @Test func readsSeeEachRevisionExactly() throws {
        let store = recreatedStore()
        #expect(store.revision == 7)
        #expect(try store.pairs("a", at: 1) == [])
        #expect(try store.pairs("a", at: 2) == ["a=1"])
        #expect(try store.pairs("a", at: 3) == ["a=2"])
        #expect(try store.pairs("a", at: 4) == [])
        #expect(try store.pairs("a", at: 5) == ["a=3"])
        #expect(try store.pairs("a", at: 0) == ["a=3"])
        let atThree = try #require(try store.range(RangeRequest(key: b("a"), revision: 3)).kvs.first)
        #expect(atThree == KeyValue(key: b("a"), value: b("2"), createRevision: 2, modRevision: 3, version: 2))
        let atFive = try #require(try store.range(RangeRequest(key: b("a"), revision: 5)).kvs.first)
        // A re-created key starts over: new create revision, version 1.
        #expect(atFive == KeyValue(key: b("a"), value: b("3"), createRevision: 5, modRevision: 5, version: 1))
        // The header carries the current revision, as etcd's.
        #expect(try store.range(RangeRequest(key: b("a"), revision: 3)).revision == 7)
    }

    @Test func rangesPrefixesLimitsAndSortsAtOldRevisions() throws {
        let store = recreatedStore()
        let all: [UInt8] = [0]
        #expect(try store.pairs("a", end: all, at: 6) == ["a=3", "b=x"])
        #expect(try store.pairs("a", end: all, at: 7) == ["a=3", "ab=y", "b=x"])
        #expect(try store.pairs("a", end: KVBytes.prefixRangeEnd(b("a")), at: 6) == ["a=3"])
        #expect(try store.pairs("a", end: all, at: 4) == [])
        let limited = try store.range(RangeRequest(key: b("a"), rangeEnd: all, limit: 1, revision: 6))
        #expect(limited.kvs.map(\.key) == [b("a")])
        #expect(limited.more)
        #expect(limited.count == 2)
        let descending = try store.range(
            RangeRequest(key: b("a"), rangeEnd: all, revision: 6, sortOrder: .descend, sortTarget: .key)
        )
        #expect(descending.kvs.map(\.key) == [b("b"), b("a")])
        let byMod = try store.range(
            RangeRequest(key: b("a"), rangeEnd: all, revision: 7, sortOrder: .descend, sortTarget: .mod)
        )
        #expect(byMod.kvs.map(\.key) == [b("ab"), b("b"), b("a")])
        let counted = try store.range(RangeRequest(key: b("a"), rangeEnd: all, revision: 6, countOnly: true))
        #expect(counted.count == 2 && counted.kvs.isEmpty)
        let filtered = try store.range(RangeRequest(key: b("a"), rangeEnd: all, revision: 7, minModRevision: 6))
        #expect(filtered.kvs.map(\.key) == [b("ab"), b("b")])
        #expect(filtered.count == 3)
    }

    @Test func futureAndCompactedRevisionsFailWithEtcdMessages() {
        var store = recreatedStore()
        #expect(throws: KVError.futureRevision(revision: 8)) { try store.range(RangeRequest(key: b("a"), revision: 8)) }
        #expect(store.compact(4).error == nil)
        #expect(throws: KVError.compacted(revision: 4)) { try store.range(RangeRequest(key: b("a"), revision: 3)) }
        #expect(KVError.compacted(revision: 4).message == "etcdserver: mvcc: required revision has been compacted")
        // Reading at the compacted revision itself is allowed (etcd).
        #expect((try? store.pairs("a", at: 4)) == [])
    }

    @Test func txnRangesReadHistoryAndComparesTheCurrentState() throws {
        var store = recreatedStore()
        let result = store.txn(
            TxnRequest(
                compare: [Compare(key: b("a"), result: .equal, target: .version(1))],
                success: [
                    .put(PutRequest(key: b("a"), value: b("4"))),
                    .range(RangeRequest(key: b("a"), revision: 3)),
                    .range(RangeRequest(key: b("a"), revision: 7)),
                    .range(RangeRequest(key: b("a"))),
                ]
            )
        )
        let response = try #require(result.txnResponse)
        #expect(response.succeeded)
        #expect(response.responses[1].rangeResponse?.kvs.map(\.value) == [b("2")])
        #expect(response.responses[2].rangeResponse?.kvs.map(\.value) == [b("3")])
        #expect(response.responses[3].rangeResponse?.kvs.map(\.value) == [b("4")])
        #expect(store.compact(5).error == nil)
        let refused = store.txn(TxnRequest(success: [.range(RangeRequest(key: b("a"), revision: 4))]))
        #expect(refused == .failure(.compacted(revision: 5), revision: 8))
    }

    // MARK: - Compaction

    @Test func compactionErrors() {
        var store = recreatedStore()
        #expect(store.compact(8) == .failure(.futureRevision(revision: 8), revision: 7))
        #expect(store.compact(0) == .failure(.compacted(revision: 0), revision: 7))
        #expect(store.compact(3) == .compact(CompactionResponse(revision: 7)))
        #expect(store.compact(3) == .failure(.compacted(revision: 3), revision: 7))
        #expect(store.compact(2) == .failure(.compacted(revision: 3), revision: 7))
        #expect(store.compact(3).error?.message == "etcdserver: mvcc: required revision has been compacted")
        #expect(store.compact(9).error?.message == "etcdserver: mvcc: required revision is a future revision")
        #expect(store.compactedRevision == 3)
        #expect(store.revision == 7, "compaction takes no revision")
        #expect(store.lastAppliedEvents.isEmpty)
    }

    @Test func compactionKeepsEveryReadAtOrAfterItAndDropsTheRest() throws {
        var store = recreatedStore()
        let all: [UInt8] = [0]
        var before: [Int64: [String]] = [:]
        for revision in Int64(1)...7 { before[revision] = try store.pairs("a", end: all, at: revision) }
        let bytesBefore = store.approximateBytes
        let versionsBefore = store.history(key: b("a"), rangeEnd: all).count
        #expect(versionsBefore == 6)
        #expect(store.compact(5).error == nil)
        for revision in Int64(5)...7 {
            #expect(try store.pairs("a", end: all, at: revision) == before[revision], "revision \(revision)")
        }
        for revision in Int64(1)...4 {
            #expect(throws: KVError.compacted(revision: 5)) { try store.pairs("a", at: revision) }
        }
        // a's versions at r2, r3 and the r4 tombstone are gone; its r5 version stays.
        let kept = store.history(key: b("a"), rangeEnd: all).map {
            "\(String(decoding: $0.key, as: UTF8.self))@\($0.revision)"
        }
        #expect(kept == ["a@5", "ab@7", "b@6"])
        #expect(store.approximateBytes < bytesBefore)
        #expect(store.checkConsistency() == nil)
        // Compacting away a key that ends deleted forgets it completely.
        store.delete("b")  // r8
        #expect(store.compact(8).error == nil)
        #expect(store.history(key: b("b")).isEmpty)
        #expect(store.checkConsistency() == nil)
    }

    // MARK: - Events

    @Test func eventsReplayInRevisionOrderWithPrevKV() throws {
        let store = recreatedStore()
        let events = try store.events(from: 2, key: b("a"))
        #expect(events.map(\.type) == [.put, .put, .delete, .put])
        #expect(events.map(\.revision) == [2, 3, 4, 5])
        #expect(events[0].prevKV == nil)
        #expect(events[1].prevKV?.value == b("1"))
        #expect(events[2].prevKV?.value == b("2"))
        #expect(events[2].kv == KeyValue(key: b("a"), value: [], createRevision: 0, modRevision: 4, version: 0))
        #expect(events[3].prevKV == nil)
        #expect(try store.events(from: 4, key: b("a"), rangeEnd: [0]).map(\.revision) == [4, 5, 6, 7])
        #expect(try store.events(from: 1, key: b("b")).map(\.revision) == [6])
        #expect(try store.events(from: 8, key: b("a"), rangeEnd: [0]).isEmpty)
        #expect(try store.events(from: 100, key: b("a"), rangeEnd: [0]).isEmpty)
    }

    @Test func aTxnsChangesShareOneRevisionAndAreNeverSplit() throws {
        var store = KVStore()
        store.put("x", "0")  // r2
        store.txn(
            TxnRequest(success: [
                .put(PutRequest(key: b("k1"), value: b("1"))),
                .deleteRange(DeleteRangeRequest(key: b("x"))),
                .put(PutRequest(key: b("k0"), value: b("0"))),
            ])
        )  // r3
        store.put("k2", "2")  // r4
        let fromApply = store.lastAppliedEvents
        #expect(fromApply.map(\.revision) == [4])
        let all = try store.events(from: 2, key: [0], rangeEnd: [0])
        #expect(all.map(\.revision) == [2, 3, 3, 3, 4])
        // In the order the txn made them, not key order.
        #expect(all[1...3].map(\.kv.key) == [b("k1"), b("x"), b("k0")])
        // A limit stops at a revision boundary: 2 events would split r3, so only r2 comes.
        #expect(try store.events(from: 2, key: [0], rangeEnd: [0], limit: 2).map(\.revision) == [2])
        #expect(try store.events(from: 2, key: [0], rangeEnd: [0], limit: 4).map(\.revision) == [2, 3, 3, 3])
        // The first revision comes whole even when it alone exceeds the limit.
        #expect(try store.events(from: 3, key: [0], rangeEnd: [0], limit: 1).count == 3)
    }

    @Test func lastAppliedEventsAreWhatTheApplyWrote() {
        var store = KVStore()
        store.put("a", "1", id: RequestID(clientID: 1, sequence: 1))
        #expect(store.lastAppliedEvents.map(\.kv.value) == [b("1")])
        store.put("a", "1", id: RequestID(clientID: 1, sequence: 1))  // a repeat applies nothing
        #expect(store.lastAppliedEvents.isEmpty)
        store.delete("nothing")
        #expect(store.lastAppliedEvents.isEmpty)
        store.delete("a", end: [0])
        #expect(store.lastAppliedEvents.map(\.type) == [.delete])
        _ = store.apply(encoded: [0xFF])
        #expect(store.lastAppliedEvents.isEmpty)
    }

    @Test func eventsBelowTheCompactionFailWithTheCompactedRevision() throws {
        var store = recreatedStore()
        #expect(store.compact(5).error == nil)
        #expect(store.firstWatchableRevision == 5)
        #expect(throws: KVError.compacted(revision: 5)) { try store.events(from: 4, key: b("a")) }
        #expect(throws: KVError.compacted(revision: 5)) { try store.events(from: 2, key: b("a")) }
        #expect(throws: KVError.compacted(revision: 5)) { try store.events(from: 0, key: b("a")) }
        #expect(try store.events(from: 6, key: [0], rangeEnd: [0]).map(\.revision) == [6, 7])
    }

    /// etcd clients answer a compacted watch by watching again from the compact revision:
    /// that must work, with the compacted revision's own events, deletes and prevKVs included.
    @Test func aWatchFromTheCompactedRevisionItselfReplaysIt() throws {
        var store = KVStore()
        store.put("a", "1")  // r2
        store.txn(
            TxnRequest(success: [
                .put(PutRequest(key: b("b"), value: b("2"))), .deleteRange(DeleteRangeRequest(key: b("a"))),
            ])
        )  // r3
        store.put("c", "3")  // r4
        let before = try store.events(from: 3, key: [0], rangeEnd: [0])
        #expect(store.compact(3).error == nil)
        let after = try store.events(from: 3, key: [0], rangeEnd: [0])
        #expect(after == before)
        #expect(after.map(\.type) == [.put, .delete, .put])
        #expect(after[1].prevKV?.value == b("1"))
        // Also after a snapshot round trip, and dropped by the next compaction.
        var restored = try KVStore(snapshot: store.snapshot())
        #expect(restored == store)
        #expect(try restored.events(from: 3, key: [0], rangeEnd: [0]) == before)
        #expect(restored.compact(4).error == nil)
        #expect(throws: KVError.compacted(revision: 4)) { try restored.events(from: 3, key: [0], rangeEnd: [0]) }
        #expect(try restored.events(from: 4, key: [0], rangeEnd: [0]).map(\.kv.key) == [b("c")])
        #expect(restored.checkConsistency() == nil)
    }

    // MARK: - Audit time and history

    @Test func historyListsVersionsWithProposalTimes() {
        var store = KVStore()
        _ = store.apply(
            WriteCommand(
                requestID: .none, operation: .put(PutRequest(key: b("a"), value: b("1"))), proposedAtMilliseconds: 1000)
        )
        _ = store.apply(
            WriteCommand(
                requestID: .none, operation: .deleteRange(DeleteRangeRequest(key: b("a"))), proposedAtMilliseconds: 2000
            ))
        _ = store.apply(WriteCommand(requestID: .none, operation: .put(PutRequest(key: b("a"), value: b("2")))))
        let entries = store.history(key: b("a"))
        #expect(entries.map(\.revision) == [2, 3, 4])
        #expect(entries.map(\.proposedAtMilliseconds) == [1000, 2000, 0])
        #expect(entries.map(\.type) == [.put, .delete, .put])
        #expect(entries.map(\.value) == [b("1"), [], b("2")])
        #expect(entries.map(\.version) == [1, 0, 1])
        #expect(store.history(key: b("a"), limit: 2).count == 2)
        #expect(store.history(key: b("b")).isEmpty)
    }

    // MARK: - HashKV, digest, equality

    @Test func hashKVAgreesAcrossReplicasAndCoversHistory() throws {
        var first = recreatedStore()
        var second = recreatedStore()
        #expect(try first.hashKV() == second.hashKV())
        let atFour = try first.hashKV(revision: 4)
        #expect(atFour.revision == 4 && atFour.compactRevision == 0)
        first.put("c", "1")
        // Later writes do not change the hash of an older revision.
        #expect(try first.hashKV(revision: 4).hash == atFour.hash)
        #expect(try first.hashKV().hash != second.hashKV().hash)
        second.put("c", "1")
        #expect(try first.hashKV().hash == second.hashKV().hash)
        // A different history reaching the same live state hashes differently.
        var third = KVStore()
        third.put("x", "1")
        third.delete("x")
        var fourth = KVStore()
        fourth.put("y", "1")
        fourth.delete("y")
        #expect(try third.hashKV().hash != fourth.hashKV().hash)
        #expect(throws: KVError.futureRevision(revision: 99)) { try first.hashKV(revision: 99) }
        #expect(first.compact(5).error == nil)
        #expect(throws: KVError.compacted(revision: 5)) { try first.hashKV(revision: 4) }
        #expect(try first.hashKV().compactRevision == 5)
    }

    @Test func digestAndEqualityCoverHistory() {
        // Same revision and the same live keys, different histories.
        var first = KVStore()
        first.put("a", "1")
        first.put("a", "2")
        var second = KVStore()
        second.put("a", "0")
        second.put("a", "2")
        #expect(first.get(b("a"))?.value == second.get(b("a"))?.value)
        #expect(first != second)
        #expect(first.stateDigest() != second.stateDigest())
        // Compacting both at the current revision still keeps revision 3's events, whose
        // prevKVs differ; one more equal write and a compaction past r3 make them equal.
        first.compact(3)
        second.compact(3)
        #expect(first != second)
        first.put("a", "3")
        second.put("a", "3")
        first.compact(4)
        second.compact(4)
        #expect(first == second)
        #expect(first.stateDigest() == second.stateDigest())
        // The proposal time is part of the state.
        var timed = KVStore()
        var untimed = KVStore()
        _ = timed.apply(
            WriteCommand(
                requestID: .none, operation: .put(PutRequest(key: b("a"), value: [])), proposedAtMilliseconds: 5))
        untimed.put("a", "")
        #expect(timed != untimed)
        #expect(timed.stateDigest() != untimed.stateDigest())
        // A compaction that changed nothing but the compacted revision still counts.
        var compacted = KVStore()
        compacted.put("a", "")
        var uncompacted = compacted
        compacted.compact(1)
        #expect(compacted != uncompacted)
        #expect(compacted.stateDigest() != uncompacted.stateDigest())
        uncompacted.compact(1)
        #expect(compacted == uncompacted)
    }

    @Test func approximateBytesGrowsWithValuesAndShrinksOnCompaction() {
        var store = KVStore()
        #expect(store.approximateBytes == 0)
        store.put("a", String(repeating: "v", count: 1000))
        let one = store.approximateBytes
        #expect(one >= 1001)
        store.put("a", String(repeating: "w", count: 1000))
        #expect(store.approximateBytes >= one + 1000)
        store.compact(3)
        #expect(store.approximateBytes < one + 1000)
        #expect(store.checkConsistency() == nil)
    }

    @Test func aRepeatedCompactionReturnsItsFirstResult() {
        var store = recreatedStore()
        let id = RequestID(clientID: 9, sequence: 1)
        #expect(store.compact(4, id: id) == .compact(CompactionResponse(revision: 7)))
        // Applied again it would fail as compacted; exactly-once returns the first result.
        #expect(store.compact(4, id: id) == .compact(CompactionResponse(revision: 7)))
        #expect(store.compact(4) == .failure(.compacted(revision: 4), revision: 7))
    }

    @Test func aNonPositiveEventLimitMeansNoLimit() throws {
        let store = recreatedStore()
        #expect(try store.events(from: 2, key: [0], rangeEnd: [0], limit: 0).count == 6)
        #expect(try store.events(from: 2, key: [0], rangeEnd: [0], limit: -1).count == 6)
    }

    @Test func compactionTraces() {
        let command = WriteCommand(
            requestID: RequestID(clientID: 1, sequence: 2),
            operation: .compact(CompactionRequest(revision: 5, physical: true)),
            proposedAtMilliseconds: 7
        )
        #expect(command.description == "1#2 compact 5 physical at=7ms")
        #expect(WriteResult.compact(CompactionResponse(revision: 9)).description == "compact r=9")
    }

    /// A key written many times: appends stay cheap and one compaction trims the whole chain.
    @Test func aHotKeysChainIsTrimmedByOneCompaction() throws {
        var store = KVStore()
        for step in 0..<5_000 { store.put("hot", "\(step)") }
        #expect(store.history(key: b("hot")).count == 5_000)
        #expect(store.compact(store.revision - 10).error == nil)
        #expect(store.history(key: b("hot")).count == 11)
        #expect(try store.pairs("hot", at: store.revision - 10) == ["hot=4989"])
        #expect(store.checkConsistency() == nil)
    }
}
