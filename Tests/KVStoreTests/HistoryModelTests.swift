import Testing

@testable import KVStore

/// The history checked against a naive model that keeps a full copy of the map per revision
/// (STYLE §12: optimized code against a naive version, every failure names its seed).
@Suite struct HistoryModelTests {
    /// Every revision's whole map, every revision's events and proposal time.
    struct NaiveHistory {
        var states: [[[UInt8]: KeyValue]] = [[:], [:]]  // index = revision; revision 0 unused
        var events: [[WatchEvent]] = [[], []]
        var times: [Int64] = [0, 0]
        var compacted: Int64 = 0

        var revision: Int64 { Int64(states.count - 1) }
        var current: [[UInt8]: KeyValue] { states[states.count - 1] }

        /// Applies puts (`value != nil`) and deletes of single keys as one revision; nothing
        /// when no change happens.
        mutating func write(_ changes: [(key: [UInt8], value: [UInt8]?)], time: Int64) {
            var map = current
            var made: [WatchEvent] = []
            let next = revision + 1
            for change in changes {
                let previous = map[change.key]
                if let value = change.value {
                    let kv = KeyValue(
                        key: change.key,
                        value: value,
                        createRevision: previous?.createRevision ?? next,
                        modRevision: next,
                        version: (previous?.version ?? 0) + 1
                    )
                    map[change.key] = kv
                    made.append(WatchEvent(type: .put, kv: kv, prevKV: previous))
                } else if let previous {
                    map[change.key] = nil
                    let tombstone = KeyValue(
                        key: change.key, value: [], createRevision: 0, modRevision: next, version: 0)
                    made.append(WatchEvent(type: .delete, kv: tombstone, prevKV: previous))
                }
            }
            guard !made.isEmpty else { return }
            states.append(map)
            events.append(made)
            times.append(time)
        }

        /// Every retained version, as `history(key: [0], rangeEnd: [0])` lists them.
        func history() -> [HistoryEntry] {
            var byKey: [[UInt8]: [HistoryEntry]] = [:]
            for (key, kv) in states[Int(compacted)] {
                byKey[key] = [entry(kv, type: .put, time: times[Int(kv.modRevision)])]
            }
            for revision in Int(compacted + 1)..<states.count {
                for event in events[revision] {
                    byKey[event.kv.key, default: []].append(entry(event.kv, type: event.type, time: times[revision]))
                }
            }
            return byKey.keys.sorted { $0.lexicographicallyPrecedes($1) }.flatMap { byKey[$0]! }
        }

        func entry(_ kv: KeyValue, type: WatchEventType, time: Int64) -> HistoryEntry {
            HistoryEntry(
                key: kv.key,
                revision: kv.modRevision,
                proposedAtMilliseconds: time,
                type: type,
                value: kv.value,
                createRevision: kv.createRevision,
                version: kv.version
            )
        }
    }

    static let alphabet: [UInt8] = [0x00, 0x61, 0x62, 0xFF]

    func key(_ random: inout RandomRequests) -> [UInt8] {
        [0x6B] + random.bytes(maxCount: 2, alphabet: Self.alphabet)
    }

    func rangeEnd(_ random: inout RandomRequests) -> [UInt8] {
        switch random.int(0...4) {
        case 0: return []
        case 1: return [0]
        default: return key(&random)
        }
    }

    @Test func historicalReadsEventsAndHistoryMatchTheNaiveModel() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            var store = KVStore()
            var model = NaiveHistory()
            for step in 0..<500 {
                let revisionBefore = model.revision
                let time = Int64(random.int(0...3) == 0 ? 0 : 1_000 + step)
                let choice = random.int(0...19)
                var command: WriteOperation
                if choice < 9 {
                    let key = key(&random)
                    command = .put(PutRequest(key: key, value: random.bytes(maxCount: 2, alphabet: Self.alphabet)))
                    if case .put(let put) = command { model.write([(key, put.value)], time: time) }
                } else if choice < 12 {
                    let start = key(&random)
                    let end = rangeEnd(&random)
                    let range = KeyRange(key: start, rangeEnd: end)
                    let doomed = model.current.keys.filter { range.contains($0) }.sorted {
                        $0.lexicographicallyPrecedes($1)
                    }
                    command = .deleteRange(DeleteRangeRequest(key: start, rangeEnd: end))
                    model.write(doomed.map { ($0, nil) }, time: time)
                } else if choice < 17 {
                    // Distinct keys, so the txn passes etcd's duplicate-key check.
                    var keys: [[UInt8]] = []
                    for _ in 0..<random.int(1...4) {
                        let candidate = key(&random)
                        if !keys.contains(candidate) { keys.append(candidate) }
                    }
                    var ops: [RequestOp] = []
                    var changes: [(key: [UInt8], value: [UInt8]?)] = []
                    for (position, key) in keys.enumerated() {
                        if position > 0 && random.int(0...3) == 0 {
                            ops.append(.deleteRange(DeleteRangeRequest(key: key)))
                            changes.append((key, nil))
                        } else {
                            let value = random.bytes(maxCount: 2, alphabet: Self.alphabet)
                            ops.append(.put(PutRequest(key: key, value: value)))
                            changes.append((key, value))
                        }
                    }
                    command = .txn(TxnRequest(success: ops))
                    model.write(changes, time: time)
                } else {
                    let target = Int64(random.int(0...Int(model.revision + 1)))
                    command = .compact(CompactionRequest(revision: target))
                    if target > model.compacted && target <= model.revision { model.compacted = target }
                }
                let result = store.apply(
                    WriteCommand(requestID: .none, operation: command, proposedAtMilliseconds: time))
                let context = "seed \(seed) step \(step) \(command)"
                #expect(result.revision == model.revision, "\(context)")
                #expect(store.compactedRevision == model.compacted, "\(context)")
                if case .compact(let compaction) = command, store.compactedRevision != compaction.revision {
                    #expect(result.error != nil, "\(context): a refused compaction must fail")
                }
                let expectedEvents = model.revision > revisionBefore ? model.events[Int(model.revision)] : []
                #expect(store.lastAppliedEvents == expectedEvents, "\(context)")

                try checkRead(store, model, &random, context)
                try checkEvents(store, model, &random, context)
                if step % 50 == 49 {
                    #expect(store.history(key: [0], rangeEnd: [0]) == model.history(), "\(context)")
                    #expect(store.checkConsistency() == nil, "\(context)")
                    let restored = try KVStore(snapshot: store.snapshot())
                    #expect(restored == store, "\(context)")
                    #expect(restored.stateDigest() == store.stateDigest(), "\(context)")
                    #expect(try restored.hashKV() == store.hashKV(), "\(context)")
                    if random.bool() { store = restored }
                }
                if store.compactedRevision != model.compacted { return }
            }
        }
    }

    /// A random range at a random revision, compared with the naive map of that revision.
    func checkRead(_ store: KVStore, _ model: NaiveHistory, _ random: inout RandomRequests, _ context: String) throws {
        let revision = Int64(random.int(0...Int(model.revision + 1)))
        let request = RangeRequest(
            key: random.int(0...9) == 0 ? [0] : key(&random),
            rangeEnd: rangeEnd(&random),
            limit: Int64(random.int(-1...4)),
            revision: revision,
            sortOrder: SortOrder.allCases[random.int(0...2)],
            sortTarget: SortTarget.allCases[random.int(0...4)],
            keysOnly: random.int(0...4) == 0,
            countOnly: random.int(0...9) == 0,
            minModRevision: random.int(0...4) == 0 ? Int64(random.int(0...Int(model.revision))) : 0,
            maxCreateRevision: random.int(0...4) == 0 ? Int64(random.int(0...Int(model.revision))) : 0
        )
        if revision > model.revision {
            #expect(throws: KVError.futureRevision(revision: revision), "\(context)") { try store.range(request) }
            return
        }
        if revision > 0 && revision < model.compacted {
            #expect(throws: KVError.compacted(revision: model.compacted), "\(context)") { try store.range(request) }
            return
        }
        let pairs = model.states[Int(revision == 0 ? model.revision : revision)]
        let expected = ModelTests.NaiveStore(pairs: pairs, revision: model.revision).range(request)
        #expect(try store.range(request) == expected, "\(context) read \(request)")
    }

    /// Events from a random revision over a random range, compared with the model's.
    func checkEvents(_ store: KVStore, _ model: NaiveHistory, _ random: inout RandomRequests, _ context: String) throws
    {
        let start = Int64(random.int(0...Int(model.revision + 1)))
        let key = random.int(0...3) == 0 ? [0] : key(&random)
        let end = rangeEnd(&random)
        if model.compacted > 1 && Swift.max(start, 1) < model.compacted {
            #expect(throws: KVError.compacted(revision: model.compacted), "\(context)") {
                try store.events(from: start, key: key, rangeEnd: end)
            }
            return
        }
        let range = KeyRange(key: key, rangeEnd: end)
        var expected: [WatchEvent] = []
        if start <= model.revision {
            for revision in Int(start)...Int(model.revision) {
                expected += model.events[revision].filter { range.contains($0.kv.key) }
            }
        }
        #expect(try store.events(from: start, key: key, rangeEnd: end) == expected, "\(context) events from \(start)")
    }
}
