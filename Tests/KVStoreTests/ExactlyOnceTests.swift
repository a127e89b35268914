import ByteCodec
import Testing

@testable import KVStore

@Suite struct ExactlyOnceTests {
    @Test func duplicateReturnsTheFirstResultWithoutApplying() {
        var store = KVStore()
        let id = RequestID(clientID: 7, sequence: 1)
        let first = store.put("k", "v", prevKV: true, id: id)
        #expect(first == .put(PutResponse(revision: 2)))
        store.put("k", "other")  // someone else writes in between
        let again = store.put("k", "v", prevKV: true, id: id)
        #expect(again == first)
        #expect(store.revision == 3)
        #expect(store.value("k") == "other")
        #expect(store.get(b("k"))?.version == 2)
    }

    @Test func staleSequenceIsRejectedAndNeverApplied() {
        var store = KVStore()
        store.put("k", "1", id: RequestID(clientID: 7, sequence: 5))
        let stale = store.put("k", "old", id: RequestID(clientID: 7, sequence: 4))
        #expect(stale == .failure(.staleRequest(RequestID(clientID: 7, sequence: 4), lastSequence: 5), revision: 2))
        #expect(stale.error?.message.contains("stale request") == true)
        #expect(store.value("k") == "1")
        #expect(store.lastSequence(clientID: 7) == 5)
        // A higher sequence (gaps allowed) is applied and remembered.
        #expect(store.put("k", "2", id: RequestID(clientID: 7, sequence: 9)).revision == 3)
        #expect(store.lastSequence(clientID: 7) == 9)
        #expect(store.value("k") == "2")
    }

    @Test("a session's result digest through the store's reused writer is the one a restore computes; a large result leaves no large writer")
    func sessionDigestThroughTheReusedWriter() throws {
        var store = KVStore()
        let value = String(repeating: "v", count: 8 << 10)
        for index in 0..<16 {
            store.put("k\(index)", value, id: RequestID(clientID: 7, sequence: UInt64(index) + 1))
        }
        // Every pair back in the result: 128 KiB, over the writer's cap.
        let deleted = store.delete("k", end: b("l"), prevKV: true, id: RequestID(clientID: 8, sequence: 1))
        guard case .deleteRange(let response) = deleted else { Issue.record("not a delete: \(deleted)"); return }
        #expect(response.prevKVs.count == 16)
        #expect(store.digestScratch.bytes.capacity <= KVStore.digestScratchBytesMax)
        var scratch = ByteWriter()
        #expect(KVStore.resultDigest(deleted, scratch: &scratch) == KVStore.resultDigest(deleted))
        store.put("k0", "small", id: RequestID(clientID: 7, sequence: 17))
        let restored = try KVStore(snapshot: store.snapshot())
        #expect(restored.stateDigest() == store.stateDigest())
    }

    @Test func clientZeroHasNoSession() {
        var store = KVStore()
        store.put("k", "1", id: RequestID(clientID: 0, sequence: 1))
        store.put("k", "1", id: RequestID(clientID: 0, sequence: 1))
        #expect(store.revision == 3)
        #expect(store.sessionCount == 0)
    }

    @Test func failedRequestsAreRememberedToo() {
        var store = KVStore()
        let id = RequestID(clientID: 3, sequence: 1)
        let first = store.apply(WriteCommand(requestID: id, operation: .put(PutRequest(key: [], value: []))))
        #expect(first == .failure(.emptyKey, revision: 1))
        store.put("k", "v")
        let again = store.apply(WriteCommand(requestID: id, operation: .put(PutRequest(key: [], value: []))))
        #expect(again == first)
    }

    @Test func sessionsAreIndependentPerClient() {
        var store = KVStore()
        store.put("a", "1", id: RequestID(clientID: 1, sequence: 10))
        store.put("b", "1", id: RequestID(clientID: 2, sequence: 1))
        #expect(store.revision == 3)
        #expect(store.lastSequence(clientID: 1) == 10)
        #expect(store.lastSequence(clientID: 2) == 1)
    }

    /// Fills the table, keeps client 1 alive by a duplicate, adds one more client: client 2,
    /// the least recently used, is evicted. Two replicas (one restored from a snapshot) agree.
    @Test func evictionIsLeastRecentlyUsedAndDeterministic() throws {
        var store = KVStore()
        for client in 1...UInt64(KVLimits.sessionsMax) {
            store.put("k", "\(client)", id: RequestID(clientID: client, sequence: 1))
        }
        #expect(store.sessionCount == KVLimits.sessionsMax)
        store.put("k", "1", id: RequestID(clientID: 1, sequence: 1))  // duplicate: a use
        var restored = try KVStore(snapshot: store.snapshot())
        #expect(restored == store)

        let newcomer = RequestID(clientID: 1_000_000, sequence: 1)
        store.put("n", "1", id: newcomer)
        restored.put("n", "1", id: newcomer)
        #expect(store.sessionCount == KVLimits.sessionsMax)
        #expect(store.lastSequence(clientID: 2) == nil)
        #expect(store.lastSequence(clientID: 1) == 1)
        #expect(store.lastSequence(clientID: 3) == 1)
        #expect(store.snapshot() == restored.snapshot())
        #expect(store.stateDigest() == restored.stateDigest())
        #expect(store.checkConsistency() == nil)

        // Client 2 was forgotten, so its retry is applied again (the documented limit).
        let revision = store.revision
        store.put("k", "2", id: RequestID(clientID: 2, sequence: 1))
        #expect(store.revision == revision + 1)
        // …which evicted the next least recently used, client 3.
        #expect(store.lastSequence(clientID: 3) == nil)
        #expect(store.lastSequence(clientID: 4) == 1)
    }

    @Test func recencyQueueStaysBounded() {
        var store = KVStore()
        for round in 1...5000 {
            store.put("k", "v", id: RequestID(clientID: 1 + UInt64(round % 3), sequence: UInt64(round)))
        }
        #expect(store.sessionRecency.count - store.sessionRecencyHead <= 2 * store.sessionCount + 65)
        #expect(store.sessionCount == 3)
    }
}
