import Testing

@testable import KVStore

/// Optimized code checked against naive versions (STYLE §12).
@Suite struct ModelTests {
    /// The naive store: a dictionary and a revision, puts and deletes only.
    struct NaiveStore {
        var pairs: [[UInt8]: KeyValue] = [:]
        var revision: Int64 = 1

        func inRange(_ key: [UInt8], start: [UInt8], end: [UInt8]) -> Bool {
            if end.isEmpty { return key == start }
            let afterStart = !key.lexicographicallyPrecedes(start)
            if end == [0] { return afterStart }
            return afterStart && key.lexicographicallyPrecedes(end)
        }

        mutating func put(_ key: [UInt8], _ value: [UInt8]) {
            revision += 1
            let old = pairs[key]
            pairs[key] = KeyValue(
                key: key,
                value: value,
                createRevision: old?.createRevision ?? revision,
                modRevision: revision,
                version: (old?.version ?? 0) + 1
            )
        }

        mutating func delete(_ start: [UInt8], _ end: [UInt8]) -> [KeyValue] {
            let doomed = pairs.values.filter { inRange($0.key, start: start, end: end) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }
            for pair in doomed { pairs[pair.key] = nil }
            if !doomed.isEmpty { revision += 1 }
            return doomed
        }

        /// etcd's executeRange, spelled out the slow way.
        func range(_ request: RangeRequest) -> RangeResponse {
            var matches = pairs.values.filter { inRange($0.key, start: request.key, end: request.rangeEnd) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }
            let count = Int64(matches.count)
            if request.countOnly { return RangeResponse(revision: revision, kvs: [], more: false, count: count) }
            matches = matches.filter { pair in
                (request.maxModRevision == 0 || pair.modRevision <= request.maxModRevision)
                    && (request.minModRevision == 0 || pair.modRevision >= request.minModRevision)
                    && (request.maxCreateRevision == 0 || pair.createRevision <= request.maxCreateRevision)
                    && (request.minCreateRevision == 0 || pair.createRevision >= request.minCreateRevision)
            }
            let order = request.sortOrder == .none && request.sortTarget != .key ? .ascend : request.sortOrder
            if order != .none {
                func field(_ pair: KeyValue) -> [UInt8] {
                    func bigEndian(_ value: Int64) -> [UInt8] {
                        let biased = UInt64(bitPattern: value) ^ (1 << 63)
                        return (0..<8).reversed().map { UInt8(truncatingIfNeeded: biased >> UInt64($0 * 8)) }
                    }
                    switch request.sortTarget {
                    case .key: return pair.key
                    case .version: return bigEndian(pair.version)
                    case .create: return bigEndian(pair.createRevision)
                    case .mod: return bigEndian(pair.modRevision)
                    case .value: return pair.value
                    }
                }
                // Primary field, then key, compared as (field, key) tuples of byte strings.
                matches.sort { lhs, rhs in
                    let (l, r) = order == .ascend ? (lhs, rhs) : (rhs, lhs)
                    if field(l) != field(r) { return field(l).lexicographicallyPrecedes(field(r)) }
                    return l.key.lexicographicallyPrecedes(r.key)
                }
            }
            var more = false
            if request.limit > 0 && matches.count > Int(request.limit) {
                matches = Array(matches.prefix(Int(request.limit)))
                more = true
            }
            if request.keysOnly {
                matches = matches.map {
                    var pair = $0
                    pair.value = []
                    return pair
                }
            }
            return RangeResponse(revision: revision, kvs: matches, more: more, count: count)
        }
    }

    static let alphabet: [UInt8] = [0x00, 0x01, 0x61, 0x62, 0x63, 0xFE, 0xFF]

    /// Random puts and deletes on both stores, with a range compared after every step.
    @Test func optimizedRangeMatchesNaive() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            var store = KVStore()
            var naive = NaiveStore()
            func randomKey(_ random: inout RandomRequests) -> [UInt8] {
                [0x6B] + random.bytes(maxCount: 3, alphabet: Self.alphabet)
            }
            func randomEnd(_ random: inout RandomRequests) -> [UInt8] {
                switch random.int(0...4) {
                case 0: return []
                case 1: return [0]
                case 2: return [0x6B, 0xFF, 0xFF, 0xFF, 0xFF]
                default: return randomKey(&random)
                }
            }
            for step in 0..<1500 {
                if random.int(0...9) < 7 {
                    let key = randomKey(&random)
                    let value = random.bytes(maxCount: 3, alphabet: Self.alphabet)
                    let result = store.apply(
                        WriteCommand(requestID: .none, operation: .put(PutRequest(key: key, value: value)))
                    )
                    naive.put(key, value)
                    #expect(result.revision == naive.revision, "seed \(seed) step \(step)")
                } else {
                    let start = randomKey(&random)
                    let end = random.int(0...5) == 0 ? [0] : randomEnd(&random)
                    let result = store.apply(
                        WriteCommand(
                            requestID: .none,
                            operation: .deleteRange(DeleteRangeRequest(key: start, rangeEnd: end, prevKV: true))
                        )
                    )
                    let doomed = naive.delete(start, end)
                    #expect(result.deleteResponse?.prevKVs == doomed, "seed \(seed) step \(step)")
                    #expect(result.revision == naive.revision, "seed \(seed) step \(step)")
                }
                let request = RangeRequest(
                    key: random.int(0...9) == 0 ? [0] : randomKey(&random),
                    rangeEnd: randomEnd(&random),
                    limit: Int64(random.int(-1...6)),
                    sortOrder: SortOrder.allCases[random.int(0...2)],
                    sortTarget: SortTarget.allCases[random.int(0...4)],
                    keysOnly: random.int(0...4) == 0,
                    countOnly: random.int(0...9) == 0,
                    minModRevision: random.int(0...3) == 0 ? Int64(random.int(0...Int(naive.revision))) : 0,
                    maxModRevision: random.int(0...3) == 0 ? Int64(random.int(0...Int(naive.revision))) : 0,
                    minCreateRevision: random.int(0...3) == 0 ? Int64(random.int(0...Int(naive.revision))) : 0,
                    maxCreateRevision: random.int(0...3) == 0 ? Int64(random.int(0...Int(naive.revision))) : 0
                )
                let expected = naive.range(request)
                let actual = try store.range(request)
                #expect(actual == expected, "seed \(seed) step \(step) request \(request)")
                if actual != expected { return }
            }
            #expect(store.count == naive.pairs.count, "seed \(seed)")
            #expect(store.checkConsistency() == nil, "seed \(seed)")
        }
    }

    /// Enough keys to split many chunks, then deletes that empty them.
    @Test func keyIndexAgainstSortedArray() {
        for seed in testSeeds.prefix(3) {
            var random = RandomRequests(seed: seed)
            var index = KeyIndex()
            var model: [[UInt8]: KeyValue] = [:]
            for step in 0..<12_000 {
                let key = [UInt8(random.int(0...255)), UInt8(random.int(0...255))]
                if random.int(0...9) < 9 {
                    let pair = KeyValue(
                        key: key,
                        value: [UInt8(step & 0xFF)],
                        createRevision: 2,
                        modRevision: 2,
                        version: 1
                    )
                    #expect(index.upsert(pair) == model[key], "seed \(seed) step \(step)")
                    model[key] = pair
                } else {
                    let end = [key[0], key[1] &+ UInt8(random.int(1...4))]
                    let range = KeyRange(key: key, rangeEnd: end.lexicographicallyPrecedes(key) ? [] : end)
                    let removed = index.removeAll(in: range)
                    // All keys are two bytes, so the range holds at most [k0, k1] ... [k0, k1 + 3].
                    let candidates = (0..<4).compactMap { offset -> [UInt8]? in
                        let second = Int(key[1]) + offset
                        return second <= 255 ? [key[0], UInt8(second)] : nil
                    }
                    let expected = candidates.filter { range.contains($0) }.compactMap { model[$0] }
                    #expect(removed == expected, "seed \(seed) step \(step)")
                    for pair in expected { model[pair.key] = nil }
                }
                if step % 997 == 0 {
                    #expect(index.checkInvariants() == nil, "seed \(seed) step \(step)")
                }
            }
            #expect(index.checkInvariants() == nil, "seed \(seed)")
            let sorted = model.values.sorted { $0.key.lexicographicallyPrecedes($1.key) }
            #expect(Array(index.entries) == sorted, "seed \(seed)")
            #expect(index.chunks.count > 10, "seed \(seed): the test should exercise many chunks")
        }
    }

    /// Keys whose 16-byte prefixes collide (long shared prefixes, trailing zero bytes): the
    /// index's prefix comparisons must fall back to the keys, so order, lookups and ranges
    /// still match a sorted array.
    @Test func keyIndexWithCollidingPrefixes() {
        for seed in testSeeds.prefix(3) {
            var random = RandomRequests(seed: seed)
            func randomKey() -> [UInt8] {
                let shared = [0, 7, 8, 15, 16, 17, 24][random.int(0...6)]
                let tail = random.bytes(maxCount: 4, alphabet: [0x00, 0x01, 0x61, 0xFF])
                return Array(repeating: 0x6B, count: shared) + tail
            }
            var index = KeyIndex()
            var model: [[UInt8]: KeyValue] = [:]
            for step in 0..<6_000 {
                let key = randomKey()
                if random.int(0...19) < 19 {
                    guard !key.isEmpty else { continue }
                    let pair = KeyValue(key: key, value: [UInt8(step & 0xFF)], createRevision: 2, modRevision: 2, version: 1)
                    #expect(index.upsert(pair) == model[key], "seed \(seed) step \(step)")
                    model[key] = pair
                } else {
                    // A few keys at a time (a single key, or the keys extending `key` by one
                    // byte), so the index keeps growing past one chunk.
                    let start = key.isEmpty ? [0] : key
                    let range = KeyRange(key: start, rangeEnd: random.int(0...1) == 0 ? [] : start + [0x02])
                    let expected = model.values.filter { range.contains($0.key) }
                        .sorted { KVBytes.compare($0.key, $1.key) < 0 }
                    #expect(index.removeAll(in: range) == expected, "seed \(seed) step \(step)")
                    for pair in expected { model[pair.key] = nil }
                }
                let probe = randomKey()
                let firstAtOrAfter = model.keys.filter { KVBytes.compare($0, probe) >= 0 }
                    .min { KVBytes.compare($0, $1) < 0 }
                let position = index.lowerBound(probe)
                let found = position == index.endPosition ? nil : index[position].key
                #expect(found == firstAtOrAfter, "seed \(seed) step \(step) probe \(probe)")
                #expect(index.find(probe) == model[probe], "seed \(seed) step \(step) probe \(probe)")
                if step % 499 == 0 {
                    #expect(index.checkInvariants() == nil, "seed \(seed) step \(step)")
                }
            }
            #expect(index.checkInvariants() == nil, "seed \(seed)")
            let sorted = model.values.sorted { KVBytes.compare($0.key, $1.key) < 0 }
            #expect(Array(index.entries) == sorted, "seed \(seed)")
            #expect(index.chunks.count > 1, "seed \(seed): the test should exercise several chunks")
        }
    }

    /// Random commands, including txns, on two replicas (one restored midway) agree throughout.
    @Test func replicasAgree() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            var first = KVStore()
            var second = KVStore()
            for step in 0..<600 {
                var command = random.command()
                command.requestID = RequestID(clientID: UInt64(random.int(0...4)), sequence: UInt64(random.int(0...50)))
                let bytes = command.encode()
                let (id, result) = first.apply(encoded: bytes)
                #expect(id == command.requestID)
                #expect(second.apply(command) == result, "seed \(seed) step \(step)")
                if step == 300 { second = try KVStore(snapshot: second.snapshot()) }
            }
            #expect(first.stateDigest() == second.stateDigest(), "seed \(seed)")
            #expect(first.snapshot() == second.snapshot(), "seed \(seed)")
            #expect(first.checkConsistency() == nil, "seed \(seed)")
        }
    }
}
