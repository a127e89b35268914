import Testing

@testable import KVStore

/// UTF-8 bytes of a string literal, for readable tests.
func b(_ text: String) -> [UInt8] { Array(text.utf8) }

/// SplitMix64: a tiny seeded PRNG of our own, so every random test replays from its seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
}

/// Seeds of the randomized tests. Every failure message names its seed; to replay one, run
/// the test with only that seed here.
let testSeeds: [UInt64] = [1, 2, 3, 42, 0xDEAD_BEEF, 20_240_601]

extension KVStore {
    @discardableResult
    mutating func put(
        _ key: String,
        _ value: String,
        prevKV: Bool = false,
        id: RequestID = .none
    ) -> WriteResult {
        apply(WriteCommand(requestID: id, operation: .put(PutRequest(key: b(key), value: b(value), prevKV: prevKV))))
    }

    @discardableResult
    mutating func delete(_ key: String, end: [UInt8] = [], prevKV: Bool = false, id: RequestID = .none) -> WriteResult {
        apply(
            WriteCommand(
                requestID: id,
                operation: .deleteRange(DeleteRangeRequest(key: b(key), rangeEnd: end, prevKV: prevKV))
            )
        )
    }

    @discardableResult
    mutating func txn(_ txn: TxnRequest, id: RequestID = .none) -> WriteResult {
        apply(WriteCommand(requestID: id, operation: .txn(txn)))
    }

    func value(_ key: String) -> String? {
        get(b(key)).map { String(decoding: $0.value, as: UTF8.self) }
    }

    func keys(_ request: RangeRequest) throws -> [String] {
        try range(request).kvs.map { String(decoding: $0.key, as: UTF8.self) }
    }

    /// Checks the index structure and that the incremental digest equals a recomputed one.
    func checkConsistency() -> String? {
        if let problem = index.checkInvariants() { return problem }
        var copy = self
        copy.recomputeDigests()
        if copy.keysDigest != keysDigest { return "keys digest drifted" }
        if copy.sessionsDigest != sessionsDigest { return "sessions digest drifted" }
        if copy.historyDigest != historyDigest { return "history digest drifted" }
        copy.recomputeApproximateBytes()
        if copy.approximateBytes != approximateBytes { return "approximate bytes drifted" }
        return checkHistoryInvariants()
    }

    /// The history's invariants: chains well formed and ending in the live state, the change
    /// log consecutive up to the store revision and matching the chains.
    func checkHistoryInvariants() -> String? {
        if let problem = history.checkInvariants() { return "history: \(problem)" }
        if compactedRevision > revision { return "compacted \(compactedRevision) beyond revision \(revision)" }
        var liveFromHistory: [KeyValue] = []
        var versionsAfterCompaction = 0
        for chain in history.entries {
            if chain.versions.isEmpty { return "empty chain for \(KVBytes.describe(chain.key))" }
            for (position, version) in chain.versions.enumerated() {
                if position > 0 && chain.versions[position - 1].modRevision > version.modRevision {
                    return "chain of \(KVBytes.describe(chain.key)) goes back"
                }
                if version.modRevision <= compactedRevision {
                    if position != 0 || version.isTombstone {
                        return "compacted version kept for \(KVBytes.describe(chain.key))"
                    }
                } else {
                    versionsAfterCompaction += 1
                }
            }
            if let live = chain.keyValue(at: revision) { liveFromHistory.append(live) }
        }
        // History versions carry no lease (only live keys do): compare without it.
        if !liveFromHistory.elementsEqual(index.entries.map(\.withoutLease)) {
            return "history's latest versions are not the live keys"
        }
        // The compacted revision keeps its record (unless a format-1 snapshot brought none).
        let first = firstWatchableRevision <= 1 ? 2 : firstWatchableRevision
        if Int64(changeLog.records.count) != revision - first + 1 {
            return "change log has \(changeLog.records.count) records"
        }
        var events = 0
        for (offset, record) in changeLog.records.enumerated() {
            if record.revision != first + Int64(offset) { return "record \(record.revision) out of place" }
            if record.events.isEmpty { return "record \(record.revision) is empty" }
            for event in record.events where event.revision != record.revision { return "event off its record" }
            if record.revision > compactedRevision { events += record.events.count }
        }
        if events != versionsAfterCompaction { return "\(events) events but \(versionsAfterCompaction) versions" }
        return nil
    }
}

extension WriteResult {
    var putResponse: PutResponse? {
        if case .put(let response) = self { return response }
        return nil
    }

    var deleteResponse: DeleteRangeResponse? {
        if case .deleteRange(let response) = self { return response }
        return nil
    }

    var txnResponse: TxnResponse? {
        if case .txn(let response) = self { return response }
        return nil
    }
}

extension KVStore {
    @discardableResult
    mutating func compact(_ revision: Int64, id: RequestID = .none) -> WriteResult {
        apply(WriteCommand(requestID: id, operation: .compact(CompactionRequest(revision: revision))))
    }

    /// The pairs of a range at `revision`, as "key=value" strings.
    func pairs(_ key: String, end: [UInt8] = [], at revision: Int64) throws -> [String] {
        try range(RangeRequest(key: b(key), rangeEnd: end, revision: revision)).kvs.map {
            String(decoding: $0.key, as: UTF8.self) + "=" + String(decoding: $0.value, as: UTF8.self)
        }
    }
}

extension ResponseOp {
    var rangeResponse: RangeResponse? {
        if case .range(let response) = self { return response }
        return nil
    }

    var putResponse: PutResponse? {
        if case .put(let response) = self { return response }
        return nil
    }

    var deleteResponse: DeleteRangeResponse? {
        if case .deleteRange(let response) = self { return response }
        return nil
    }

    var txnResponse: TxnResponse? {
        if case .txn(let response) = self { return response }
        return nil
    }
}

/// Random requests for codec and model tests.
struct RandomRequests {
    var generator: SeededGenerator

    init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &generator) }

    mutating func bytes(maxCount: Int, alphabet: [UInt8]? = nil) -> [UInt8] {
        let count = int(0...maxCount)
        return (0..<count).map { _ in
            if let alphabet { return alphabet[int(0...(alphabet.count - 1))] }
            return UInt8.random(in: 0...255, using: &generator)
        }
    }

    mutating func key() -> [UInt8] { [UInt8(ascii: "k")] + bytes(maxCount: 6) }

    mutating func rangeEnd() -> [UInt8] {
        switch int(0...3) {
        case 0: return []
        case 1: return [0]
        default: return key()
        }
    }

    mutating func int64() -> Int64 {
        switch int(0...4) {
        case 0: return 0
        case 1: return Int64.max
        case 2: return Int64.min
        case 3: return Int64(int(-5...5))
        default: return Int64.random(in: Int64.min...Int64.max, using: &generator)
        }
    }

    mutating func bool() -> Bool { Bool.random(using: &generator) }

    mutating func put() -> PutRequest {
        PutRequest(key: key(), value: bytes(maxCount: 20), prevKV: bool(), ignoreValue: bool())
    }

    mutating func deleteRange() -> DeleteRangeRequest {
        DeleteRangeRequest(key: key(), rangeEnd: rangeEnd(), prevKV: bool())
    }

    mutating func range() -> RangeRequest {
        RangeRequest(
            key: key(),
            rangeEnd: rangeEnd(),
            limit: int64(),
            revision: int64(),
            sortOrder: SortOrder.allCases[int(0...2)],
            sortTarget: SortTarget.allCases[int(0...4)],
            serializable: bool(),
            keysOnly: bool(),
            countOnly: bool(),
            minModRevision: int64(),
            maxModRevision: int64(),
            minCreateRevision: int64(),
            maxCreateRevision: int64()
        )
    }

    mutating func compare() -> Compare {
        let target: CompareTarget
        switch int(0...4) {
        case 0: target = .version(int64())
        case 1: target = .createRevision(int64())
        case 2: target = .modRevision(int64())
        case 3: target = .value(bytes(maxCount: 10))
        default: target = .lease(int64())
        }
        return Compare(key: key(), rangeEnd: rangeEnd(), result: CompareResult.allCases[int(0...3)], target: target)
    }

    mutating func txn(depth: Int) -> TxnRequest {
        func ops(_ random: inout RandomRequests) -> [RequestOp] {
            (0..<random.int(0...4)).map { _ in random.requestOp(depth: depth) }
        }
        let compares = (0..<int(0...3)).map { _ in compare() }
        let success = ops(&self)
        let failure = ops(&self)
        return TxnRequest(compare: compares, success: success, failure: failure)
    }

    mutating func requestOp(depth: Int) -> RequestOp {
        let choice = depth >= 3 ? int(0...2) : int(0...3)
        switch choice {
        case 0: return .range(range())
        case 1: return .put(put())
        case 2: return .deleteRange(deleteRange())
        default: return .txn(txn(depth: depth + 1))
        }
    }

    mutating func command() -> WriteCommand {
        let operation: WriteOperation
        switch int(0...9) {
        case 0...2: operation = .put(put())
        case 3...5: operation = .deleteRange(deleteRange())
        case 6...8: operation = .txn(txn(depth: 1))
        default:
            operation = .compact(
                CompactionRequest(revision: int(0...1) == 0 ? int64() : Int64(int(0...30)), physical: bool()))
        }
        let id = RequestID(
            clientID: bool() ? 0 : UInt64.random(in: 0...UInt64.max, using: &generator),
            sequence: UInt64.random(in: 0...UInt64.max, using: &generator)
        )
        return WriteCommand(requestID: id, operation: operation, proposedAtMilliseconds: bool() ? 0 : int64())
    }
}
