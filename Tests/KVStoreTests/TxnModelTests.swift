import Testing

@testable import KVStore

/// Random valid txns on the store and on a naive interpreter of etcd's txn rules.
@Suite struct TxnModelTests {
    /// etcd's txn semantics spelled out over a dictionary.
    struct NaiveTxnStore {
        var store = ModelTests.NaiveStore()

        func holds(_ compare: Compare, in pairs: [[UInt8]: KeyValue]) -> Bool {
            let matching = pairs.values.filter { store.inRange($0.key, start: compare.key, end: compare.rangeEnd) }
            if matching.isEmpty {
                if case .value = compare.target { return false }
                return KVStore.holds(
                    compare,
                    for: KeyValue(key: [], value: [], createRevision: 0, modRevision: 0, version: 0)
                )
            }
            return matching.allSatisfy { KVStore.holds(compare, for: $0) }
        }

        mutating func apply(_ txn: TxnRequest) -> TxnResponse {
            let before = store.pairs
            let beginRevision = store.revision
            var changed = false
            let response = execute(txn, before: before, beginRevision: beginRevision, changed: &changed)
            store.revision = changed ? beginRevision + 1 : beginRevision
            return TxnResponse(revision: store.revision, succeeded: response.succeeded, responses: response.responses)
        }

        private mutating func execute(
            _ txn: TxnRequest,
            before: [[UInt8]: KeyValue],
            beginRevision: Int64,
            changed: inout Bool
        ) -> TxnResponse {
            let succeeded = txn.compare.allSatisfy { holds($0, in: before) }
            var responses: [ResponseOp] = []
            let current = { (changed: Bool) in changed ? beginRevision + 1 : beginRevision }
            for op in succeeded ? txn.success : txn.failure {
                switch op {
                case .range(let range):
                    var view = store
                    view.revision = current(changed)
                    responses.append(.range(view.range(range)))
                case .put(let put):
                    let old = store.pairs[put.key]
                    store.pairs[put.key] = KeyValue(
                        key: put.key,
                        value: put.value,
                        createRevision: old?.createRevision ?? beginRevision + 1,
                        modRevision: beginRevision + 1,
                        version: (old?.version ?? 0) + 1
                    )
                    changed = true
                    responses.append(.put(PutResponse(revision: beginRevision + 1, prevKV: put.prevKV ? old : nil)))
                case .deleteRange(let delete):
                    let doomed = store.pairs.values.filter {
                        store.inRange($0.key, start: delete.key, end: delete.rangeEnd)
                    }
                    .sorted { $0.key.lexicographicallyPrecedes($1.key) }
                    for pair in doomed { store.pairs[pair.key] = nil }
                    if !doomed.isEmpty { changed = true }
                    responses.append(
                        .deleteRange(
                            DeleteRangeResponse(
                                revision: current(changed),
                                deleted: Int64(doomed.count),
                                prevKVs: delete.prevKV ? doomed : []
                            )
                        )
                    )
                case .txn(let nested):
                    responses.append(
                        .txn(execute(nested, before: before, beginRevision: beginRevision, changed: &changed))
                    )
                }
            }
            return TxnResponse(revision: current(changed), succeeded: succeeded, responses: responses)
        }
    }

    static let keys: [[UInt8]] = ["a", "b", "c", "d", "e"].map { Array($0.utf8) }

    struct Generator {
        var random: RandomRequests
        var revision: Int64 = 1

        mutating func key() -> [UInt8] { TxnModelTests.keys[random.int(0...4)] }

        mutating func rangeEnd() -> [UInt8] {
            switch random.int(0...3) {
            case 0: return [0]
            case 1: return key()
            default: return []
            }
        }

        mutating func compare() -> Compare {
            let number = Int64(random.int(0...Int(revision) + 1))
            let target: CompareTarget
            switch random.int(0...4) {
            case 0: target = .version(Int64(random.int(0...3)))
            case 1: target = .createRevision(number)
            case 2: target = .modRevision(number)
            case 3: target = .value(random.bytes(maxCount: 1, alphabet: [0x30, 0x31]))
            default: target = .lease(0)
            }
            return Compare(
                key: key(),
                rangeEnd: rangeEnd(),
                result: CompareResult.allCases[random.int(0...3)],
                target: target
            )
        }

        mutating func ops(depth: Int) -> [RequestOp] {
            (0..<random.int(0...4)).map { _ in
                switch random.int(0...(depth < 3 ? 4 : 3)) {
                case 0: return .range(RangeRequest(key: key(), rangeEnd: rangeEnd(), limit: Int64(random.int(0...2))))
                case 1, 2:
                    return .put(
                        PutRequest(
                            key: key(),
                            value: random.bytes(maxCount: 1, alphabet: [0x30, 0x31]),
                            prevKV: random.bool()
                        )
                    )
                case 3: return .deleteRange(DeleteRangeRequest(key: key(), rangeEnd: rangeEnd(), prevKV: random.bool()))
                default: return .txn(txn(depth: depth + 1))
                }
            }
        }

        mutating func txn(depth: Int = 1) -> TxnRequest {
            TxnRequest(
                compare: (0..<random.int(0...2)).map { _ in compare() },
                success: ops(depth: depth),
                failure: ops(depth: depth)
            )
        }
    }

    @Test func storeMatchesNaiveInterpreter() {
        for seed in testSeeds {
            var generator = Generator(random: RandomRequests(seed: seed))
            var store = KVStore()
            var naive = NaiveTxnStore()
            var applied = 0
            var attempts = 0
            while applied < 400 && attempts < 20_000 {
                attempts += 1
                let txn = generator.txn()
                guard (try? KVStore.validate(.txn(txn))) != nil else { continue }
                applied += 1
                let result = store.txn(txn)
                let expected = naive.apply(txn)
                #expect(result == .txn(expected), "seed \(seed) txn \(applied): \(txn)")
                if result != .txn(expected) { return }
                generator.revision = store.revision
            }
            #expect(applied == 400, "seed \(seed): too few valid txns")
            #expect(store.checkConsistency() == nil, "seed \(seed)")
            let naiveEntries = naive.store.pairs.values.sorted { $0.key.lexicographicallyPrecedes($1.key) }
            #expect((try? store.range(RangeRequest(key: [0], rangeEnd: [0])).kvs) == naiveEntries, "seed \(seed)")
        }
    }
}
