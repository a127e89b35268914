import Testing

@testable import KVStore

@Suite struct RangeTests {
    /// Keys a, ab, abc, b, c, d (revisions 2...7) plus a key starting with 0xFF.
    func sampleStore() -> KVStore {
        var store = KVStore()
        for key in ["a", "ab", "abc", "b", "c", "d"] { store.put(key, "v-" + key) }
        return store
    }

    @Test func rangeEndVariants() throws {
        let store = sampleStore()
        #expect(try store.keys(RangeRequest(key: b("ab"))) == ["ab"])
        #expect(try store.keys(RangeRequest(key: b("zz"))) == [])
        #expect(try store.keys(RangeRequest(key: b("ab"), rangeEnd: b("c"))) == ["ab", "abc", "b"])
        #expect(try store.keys(RangeRequest(key: b("b"), rangeEnd: [0])) == ["b", "c", "d"])
        #expect(try store.keys(RangeRequest(key: [0], rangeEnd: [0])) == ["a", "ab", "abc", "b", "c", "d"])
        #expect(
            try store.keys(RangeRequest(key: b("a"), rangeEnd: KVBytes.prefixRangeEnd(b("a")))) == ["a", "ab", "abc"]
        )
        // rangeEnd <= key is an empty range.
        #expect(try store.keys(RangeRequest(key: b("c"), rangeEnd: b("b"))) == [])
        #expect(try store.keys(RangeRequest(key: b("c"), rangeEnd: b("c"))) == [])
    }

    @Test func prefixRangeEnd() {
        #expect(KVBytes.prefixRangeEnd(b("a")) == b("b"))
        #expect(KVBytes.prefixRangeEnd([0x61, 0xFF]) == [0x62])
        #expect(KVBytes.prefixRangeEnd([0xFF, 0xFF]) == [0])
    }

    @Test func bytewiseOrder() throws {
        var store = KVStore()
        for key: [UInt8] in [[0xFF], [0x01], [0x01, 0x00], [0x7F], [0x80]] {
            _ = store.apply(WriteCommand(requestID: .none, operation: .put(PutRequest(key: key, value: []))))
        }
        let keys = try store.range(RangeRequest(key: [0], rangeEnd: [0])).kvs.map(\.key)
        #expect(keys == [[0x01], [0x01, 0x00], [0x7F], [0x80], [0xFF]])
    }

    @Test func limitMoreAndCount() throws {
        let store = sampleStore()
        let limited = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], limit: 2))
        #expect(limited.kvs.map(\.key) == [b("a"), b("ab")])
        #expect(limited.more)
        #expect(limited.count == 6)
        #expect(limited.revision == 7)
        let exact = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], limit: 6))
        #expect(exact.kvs.count == 6)
        #expect(!exact.more)
        let unlimited = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], limit: 0))
        #expect(unlimited.kvs.count == 6)
        #expect(!unlimited.more)
    }

    @Test func sortOrders() throws {
        var store = KVStore()
        store.put("a", "3")  // 2
        store.put("b", "1")  // 3
        store.put("c", "2")  // 4
        store.put("a", "0")  // 5: a version 2, mod 5
        let all = RangeRequest(key: [0], rangeEnd: [0])
        func sorted(_ order: SortOrder, _ target: SortTarget, limit: Int64 = 0) throws -> [String] {
            var request = all
            request.sortOrder = order
            request.sortTarget = target
            request.limit = limit
            return try store.keys(request)
        }
        #expect(try sorted(.descend, .key) == ["c", "b", "a"])
        #expect(try sorted(.descend, .key, limit: 2) == ["c", "b"])
        #expect(try sorted(.ascend, .value) == ["a", "b", "c"])
        #expect(try sorted(.descend, .value) == ["c", "b", "a"])
        #expect(try sorted(.none, .value) == ["a", "b", "c"])  // etcd: non-key target defaults to ascend
        #expect(try sorted(.ascend, .mod) == ["b", "c", "a"])
        #expect(try sorted(.descend, .mod, limit: 1) == ["a"])
        #expect(try sorted(.ascend, .create) == ["a", "b", "c"])
        #expect(try sorted(.descend, .version) == ["a", "c", "b"])  // ties (version 1) by key, descending
        #expect(try sorted(.ascend, .version) == ["b", "c", "a"])
        var descendLimited = all
        descendLimited.sortOrder = .descend
        descendLimited.limit = 2
        let response = try store.range(descendLimited)
        #expect(response.more)
        #expect(response.count == 3)
    }

    @Test func keysOnlyAndCountOnly() throws {
        let store = sampleStore()
        let keysOnly = try store.range(RangeRequest(key: b("a"), rangeEnd: b("b"), keysOnly: true))
        #expect(keysOnly.kvs.map(\.key) == [b("a"), b("ab"), b("abc")])
        #expect(keysOnly.kvs.allSatisfy { $0.value.isEmpty && $0.version == 1 })
        let countOnly = try store.range(RangeRequest(key: b("a"), rangeEnd: b("b"), limit: 1, countOnly: true))
        #expect(countOnly.kvs.isEmpty)
        #expect(countOnly.count == 3)
        #expect(!countOnly.more)
    }

    @Test func revisionFiltersDoNotChangeCount() throws {
        let store = sampleStore()  // a=2 ab=3 abc=4 b=5 c=6 d=7
        var request = RangeRequest(key: [0], rangeEnd: [0], minModRevision: 3, maxModRevision: 5)
        var response = try store.range(request)
        #expect(response.kvs.map(\.key) == [b("ab"), b("abc"), b("b")])
        #expect(response.count == 6)  // etcd counts before the filters
        request = RangeRequest(key: [0], rangeEnd: [0], limit: 1, minCreateRevision: 6)
        response = try store.range(request)
        #expect(response.kvs.map(\.key) == [b("c")])
        #expect(response.more)
        request = RangeRequest(key: [0], rangeEnd: [0], maxCreateRevision: 2)
        #expect(try store.keys(request) == ["a"])
    }

    @Test func rangeValidation() {
        let store = sampleStore()
        #expect(throws: KVError.emptyKey) { try store.range(RangeRequest(key: [])) }
        let bigKey = [UInt8](repeating: 1, count: KVLimits.keySizeBytesMax + 1)
        #expect(throws: KVError.keyTooLarge(sizeBytes: bigKey.count)) { try store.range(RangeRequest(key: bigKey)) }
    }

    @Test func deletePrefixWithPrevKV() throws {
        var store = sampleStore()
        let response = try #require(store.delete("a", end: KVBytes.prefixRangeEnd(b("a")), prevKV: true).deleteResponse)
        #expect(response.deleted == 3)
        #expect(response.revision == 8)
        #expect(response.prevKVs.map(\.key) == [b("a"), b("ab"), b("abc")])
        #expect(response.prevKVs.map(\.modRevision) == [2, 3, 4])
        #expect(response.prevKVs[1].value == b("v-ab"))
        #expect(try store.keys(RangeRequest(key: [0], rangeEnd: [0])) == ["b", "c", "d"])
        let withoutPrev = try #require(store.delete("b", end: [0]).deleteResponse)
        #expect(withoutPrev == DeleteRangeResponse(revision: 9, deleted: 3, prevKVs: []))
        #expect(store.count == 0)
    }

    @Test func deleteAllKeys() throws {
        var store = sampleStore()
        let response = try #require(
            store.apply(
                WriteCommand(requestID: .none, operation: .deleteRange(DeleteRangeRequest(key: [0], rangeEnd: [0])))
            ).deleteResponse
        )
        #expect(response.deleted == 6)
        #expect(store.count == 0)
        #expect(store.revision == 8)
    }
}
