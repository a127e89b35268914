/// The multi-version history: the public event and history-entry types, one key's chain of
/// versions, and the revision-ordered change log.

/// etcd's `mvccpb.Event.EventType`.
public enum WatchEventType: UInt8, Sendable, Hashable, CaseIterable {
    case put = 0
    case delete = 1
}

/// etcd's `mvccpb.Event`: one change of one key at one revision.
///
/// For a put, `kv` is the pair after the put. For a delete, `kv` is etcd's tombstone: the key
/// with `modRevision` = the deleting revision and every other field empty or 0. `prevKV` is
/// the pair just before the change (nil for a put that created the key); it is always kept,
/// so a server strips it for watchers that did not ask for it.
public struct WatchEvent: Sendable, Hashable, CustomStringConvertible {
    public var type: WatchEventType
    public var kv: KeyValue
    public var prevKV: KeyValue?

    public init(type: WatchEventType, kv: KeyValue, prevKV: KeyValue? = nil) {
        self.type = type
        self.kv = kv
        self.prevKV = prevKV
    }

    /// The revision of the change (etcd: `kv.mod_revision`).
    public var revision: Int64 { kv.modRevision }

    public var description: String {
        switch type {
        case .put: return "r=\(revision) put \(kv)"
        case .delete: return "r=\(revision) del \(KVBytes.describe(kv.key))"
        }
    }
}

/// One retained version of a key, as `KVStore.history(key:rangeEnd:limit:)` lists them.
public struct HistoryEntry: Sendable, Hashable {
    public var key: [UInt8]
    /// The revision that wrote this version.
    public var revision: Int64
    /// The leader's wall-clock time when it proposed the command (ms since 1970; 0 = unknown).
    public var proposedAtMilliseconds: Int64
    public var type: WatchEventType
    /// The value after a put; empty for a delete.
    public var value: [UInt8]
    /// etcd's create revision and version after a put; 0 for a delete.
    public var createRevision: Int64
    public var version: Int64

    public init(
        key: [UInt8],
        revision: Int64,
        proposedAtMilliseconds: Int64,
        type: WatchEventType,
        value: [UInt8],
        createRevision: Int64,
        version: Int64
    ) {
        self.key = key
        self.revision = revision
        self.proposedAtMilliseconds = proposedAtMilliseconds
        self.type = type
        self.value = value
        self.createRevision = createRevision
        self.version = version
    }
}

/// One version in a key's chain: a put (`version >= 1`) or a tombstone (`version == 0`).
struct KeyVersion: Sendable, Equatable {
    var value: [UInt8]
    /// 0 for a tombstone.
    var createRevision: Int64
    var modRevision: Int64
    /// 0 for a tombstone.
    var version: Int64
    var proposedAtMilliseconds: Int64

    var isTombstone: Bool { version == 0 }

    init(_ event: WatchEvent, proposedAtMilliseconds: Int64) {
        value = event.kv.value
        createRevision = event.kv.createRevision
        modRevision = event.kv.modRevision
        version = event.kv.version
        self.proposedAtMilliseconds = proposedAtMilliseconds
        precondition(isTombstone == (event.type == .delete), "a tombstone is exactly a delete")
    }

    init(_ keyValue: KeyValue, proposedAtMilliseconds: Int64) {
        precondition(keyValue.version >= 1, "a put version is at least 1")
        value = keyValue.value
        createRevision = keyValue.createRevision
        modRevision = keyValue.modRevision
        version = keyValue.version
        self.proposedAtMilliseconds = proposedAtMilliseconds
    }
}

/// Every retained version of one key, oldest first.
///
/// Invariants: `versions` is not empty; `modRevision` never decreases along it (two changes
/// of one key in one txn share a revision: the later is the state at that revision); after a
/// compaction at `c`, at most the first version has `modRevision <= c`, and it is a put.
struct KeyHistory: IndexEntry {
    let key: [UInt8]
    var versions: [KeyVersion]

    /// Position of the newest version with `modRevision <= revision`: O(log versions).
    func newestPosition(atOrBefore revision: Int64) -> Int? {
        var low = 0
        var high = versions.count
        while low < high {
            let middle = (low + high) / 2
            if versions[middle].modRevision <= revision {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low == 0 ? nil : low - 1
    }

    /// The live pair at `revision`, nil when absent (not yet created, or deleted).
    func keyValue(at revision: Int64) -> KeyValue? {
        guard let position = newestPosition(atOrBefore: revision) else { return nil }
        let stored = versions[position]
        if stored.isTombstone { return nil }
        return KeyValue(
            key: key,
            value: stored.value,
            createRevision: stored.createRevision,
            modRevision: stored.modRevision,
            version: stored.version
        )
    }
}

/// The changes of one revision, in the order the request made them.
struct RevisionRecord: Sendable, Equatable {
    let revision: Int64
    let proposedAtMilliseconds: Int64
    /// Invariant: not empty; every event's `revision` is `revision`.
    var events: [WatchEvent]
}

/// The revision-ordered change log: one record per revision after the compacted one.
///
/// Invariant: records have consecutive revisions, so the record of revision `r` sits at
/// `r - firstRevision`: finding where a watch resumes is O(1).
struct ChangeLog: Sendable, Equatable {
    private(set) var records = ChunkedArray<RevisionRecord>()

    var firstRevision: Int64? { records.first?.revision }
    var lastRevision: Int64? { records.last?.revision }

    func position(of revision: Int64) -> Int? {
        guard let first = records.first?.revision, revision >= first else { return nil }
        let offset = revision - first
        return offset < Int64(records.count) ? Int(offset) : nil
    }

    func record(of revision: Int64) -> RevisionRecord? {
        position(of: revision).map { records[$0] }
    }

    /// Appends `event` to its revision's record, opening the record on the revision's first
    /// event. Returns the event's ordinal inside its record. Amortized O(1).
    mutating func append(_ event: WatchEvent, proposedAtMilliseconds: Int64) -> Int {
        let revision = event.revision
        if let last = records.last, last.revision == revision {
            return records.modifyLast { record in
                record.events.append(event)
                return record.events.count - 1
            }
        }
        if let last = records.last {
            precondition(last.revision + 1 == revision, "change log revisions must be consecutive")
        }
        records.append(
            RevisionRecord(revision: revision, proposedAtMilliseconds: proposedAtMilliseconds, events: [event]))
        return 0
    }

    /// Starts an empty log with a whole record (snapshot restore of the compacted revision's).
    mutating func restoreFirstRecord(_ record: RevisionRecord) {
        precondition(records.isEmpty, "a first record after others")
        records.append(record)
    }

    /// Drops every record with `revision <= through`: O(records kept).
    mutating func dropRecords(through revision: Int64) {
        guard let first = records.first?.revision, first <= revision else { return }
        let dropped = Swift.min(Int(revision - first + 1), records.count)
        records.removeFirst(dropped)
    }
}

/// A key of `VersionIndex`'s ordered key set.
struct HistoryKey: IndexEntry {
    let key: [UInt8]
}

/// Every retained key's chain of versions: the chains in a hash map, so that a write finds
/// its key's chain in O(key bytes) however large the store, and the keys in an
/// `OrderedIndex`, touched only when a key enters or leaves the history, for scans in key
/// order. The map is only ever looked up, never iterated, so its per-process hash order
/// reaches no output (STYLE §3).
///
/// Invariant: `keys` holds exactly the map's keys; no chain is empty; every key whose
/// chain has two or more versions is in `compactionCandidates`.
struct VersionIndex: Sendable {
    private(set) var keys = OrderedIndex<HistoryKey>()
    private var chains = ShardedBytesMap<[KeyVersion]>()

    /// Keys that may hold versions a compaction drops (a chain of one put never does), in
    /// the order they were written, possibly repeated: compaction visits only these, so it
    /// costs O(writes since the last compaction), not O(keys). Derived; not part of `==`.
    private(set) var compactionCandidates = ChunkedArray<[UInt8]>()

    init() {}

    /// Builds the index from chains already in strictly ascending key order.
    init(sortedChains: [KeyHistory]) {
        keys = OrderedIndex(sortedEntries: sortedChains.map { HistoryKey(key: $0.key) })
        chains.reserveCapacity(sortedChains.count)
        for chain in sortedChains {
            chains[chain.key] = chain.versions
            if chain.versions.count >= 2 { compactionCandidates.append(chain.key) }
        }
    }

    var count: Int { keys.count }

    func chain(_ key: [UInt8]) -> KeyHistory? {
        chains[key].map { KeyHistory(key: key, versions: $0) }
    }

    /// Appends `version` to `key`'s chain, in place; returns whether the key is new to the
    /// history. Amortized O(key bytes), plus O(log keys + chunk) for a new key. A bulk load
    /// passes `ordering: false` and calls `rebuildOrderedKeys()` once at the end.
    @discardableResult
    mutating func append(_ version: KeyVersion, key: [UInt8], ordering: Bool = true) -> Bool {
        var chainCount = 0
        modifyChain(key) { versions in
            if let last = versions.last {
                precondition(last.modRevision <= version.modRevision, "a key's versions go forward")
            }
            versions.append(version)
            chainCount = versions.count
        }
        guard chainCount == 1 else {
            compactionCandidates.append(key)
            return false
        }
        if ordering { keys.upsert(HistoryKey(key: key)) }
        return true
    }

    /// Drops, for every key, the versions older than its newest one at or before
    /// `compactRevision`, and that one too when it is a tombstone; a key left with no version
    /// leaves the index. Reports each dropped version and each removed key. Visits only the
    /// compaction candidates: O(candidates + versions dropped × chain length + removed keys
    /// × chunk).
    mutating func compact(
        through compactRevision: Int64,
        dropped: ([UInt8], KeyVersion) -> Void,
        removed: ([UInt8]) -> Void
    ) {
        var visited: Set<[UInt8]> = []  // membership only: never iterated
        var remaining: [[UInt8]] = []
        for key in compactionCandidates where visited.insert(key).inserted {
            // A candidate whose key already left the history (an earlier compaction) is stale.
            guard let versions = chains[key] else { continue }
            let chain = KeyHistory(key: key, versions: versions)
            guard let newest = chain.newestPosition(atOrBefore: compactRevision) else {
                if versions.count >= 2 { remaining.append(key) }
                continue
            }
            let dropCount = versions[newest].isTombstone ? newest + 1 : newest
            for version in versions[0..<dropCount] { dropped(key, version) }
            if dropCount == versions.count {
                chains[key] = nil
                let gone = keys.removeAll(in: KeyRange(key: key, rangeEnd: []))
                precondition(gone.count == 1, "a history key missing from the ordered keys")
                removed(key)
                continue
            }
            if dropCount > 0 { chains.modify(key, default: []) { $0.removeFirst(dropCount) } }
            if versions.count - dropCount >= 2 { remaining.append(key) }
        }
        compactionCandidates = ChunkedArray(remaining)
    }

    /// Rebuilds the ordered key set from the chains (sorted, so hash order never shows).
    mutating func rebuildOrderedKeys() {
        let sorted = chains.keys.sorted { KVBytes.compare($0, $1) < 0 }
        keys = OrderedIndex(sortedEntries: sorted.map { HistoryKey(key: $0) })
    }

    private mutating func modifyChain(_ key: [UInt8], _ body: (inout [KeyVersion]) -> Void) {
        chains.modify(key, default: []) { body(&$0) }
    }

    /// Visits the chains of `range` in key order until `body` returns false.
    func forEach(in range: KeyRange, _ body: (KeyHistory) -> Bool) {
        let (lower, upper) = keys.positions(of: range)
        keys.forEach(from: lower, to: upper) { entry in
            guard let versions = chains[entry.key] else { preconditionFailure("history key without a chain") }
            return body(KeyHistory(key: entry.key, versions: versions))
        }
    }

    /// Every chain in key order.
    var entries: LazyMapSequence<FlattenSequence<LazyMapSequence<[OrderedIndex<HistoryKey>.Chunk], [HistoryKey]>>, KeyHistory> {
        keys.entries.lazy.map { entry in
            guard let versions = chains[entry.key] else { preconditionFailure("history key without a chain") }
            return KeyHistory(key: entry.key, versions: versions)
        }
    }

    func checkInvariants() -> String? {
        if let problem = keys.checkInvariants() { return problem }
        if keys.count != chains.count { return "\(keys.count) ordered keys but \(chains.count) chains" }
        let candidates = Set(compactionCandidates)
        for entry in keys.entries {
            guard let versions = chains[entry.key] else { return "no chain for \(KVBytes.describe(entry.key))" }
            if versions.isEmpty { return "empty chain for \(KVBytes.describe(entry.key))" }
            if versions.count >= 2 && !candidates.contains(entry.key) {
                return "\(KVBytes.describe(entry.key)) has \(versions.count) versions but is no compaction candidate"
            }
        }
        return nil
    }

    static func sameEntries(_ lhs: VersionIndex, _ rhs: VersionIndex) -> Bool {
        OrderedIndex.sameEntries(lhs.keys, rhs.keys) && lhs.chains == rhs.chains
    }
}
