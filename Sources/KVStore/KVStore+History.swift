import ByteCodec

/// The multi-version history: recording changes, reading the store at an older revision,
/// replaying events for watches, compaction, HashKV and the space estimate.
extension KVStore {
    // MARK: - Recording

    /// Records one change made at `revision + 1` (the caller advances `revision`): appends
    /// the version to the key's chain and the event to the change log. A hash lookup of the
    /// chain (plus O(log keys) the first time a key enters the history) and two amortized
    /// O(1) appends; no copy of either structure.
    /// `kvDigest` is `keyDigest(event.kv)` when the caller has it already.
    mutating func recordChange(_ recorded: WatchEvent, kvDigest: UInt64? = nil) {
        // Leases live on the live keys only (`KVStore+Leases.swift`): the history a snapshot
        // replays has none, so the change log keeps none either.
        let event = recorded.withoutLeases
        let proposedAt = applyingProposedAtMilliseconds
        let (ordinal, version, isNewKey) = appendToHistory(event, proposedAtMilliseconds: proposedAt)
        if ordinal == 0 { approximateBytes += Self.recordOverheadBytes }
        if isNewKey { approximateBytes += Self.keyBytes(event.kv.key) }
        approximateBytes += Self.versionBytes(version)
        let digest = kvDigest ?? Self.keyDigest(event.kv)
        historyDigest &+= Self.versionDigest(kvDigest: digest, proposedAtMilliseconds: proposedAt)
        historyDigest &+= Self.eventOrderDigest(event, ordinal: ordinal, kvDigest: digest)
        lastAppliedWriteRevision = event.revision
    }

    /// The structural part of recording a change (the digest and the byte count are the
    /// caller's): returns the event's ordinal in its record, the version appended and whether
    /// the key is new to the history.
    mutating func appendToHistory(
        _ event: WatchEvent,
        proposedAtMilliseconds: Int64,
        orderingKeys: Bool = true
    ) -> (ordinal: Int, version: KeyVersion, isNewKey: Bool) {
        precondition(event.revision == revision + 1, "a change is recorded at the next revision")
        precondition(event.revision > compactedRevision, "a change below the compacted revision")
        let ordinal = changeLog.append(event, proposedAtMilliseconds: proposedAtMilliseconds)
        let version = KeyVersion(event, proposedAtMilliseconds: proposedAtMilliseconds)
        let isNewKey = history.append(version, key: event.kv.key, ordering: orderingKeys)
        return (ordinal, version, isNewKey)
    }

    // MARK: - Events

    /// The changes the last `apply` made, in the order it made them: what the server pushes
    /// to watchers right after the apply. Empty when it wrote nothing (a failure, a repeated
    /// request, a read-only txn, a delete of nothing, a compaction). O(1).
    public var lastAppliedEvents: [WatchEvent] {
        guard lastAppliedWriteRevision > 0 else { return [] }
        return changeLog.record(of: lastAppliedWriteRevision)?.events ?? []
    }

    /// The changes to keys in `key`/`rangeEnd` (etcd's range convention) at revisions
    /// `>= start`, in revision order and, within a revision, in the order the request made
    /// them. Whole revisions only: it stops before a revision that would take the result past
    /// `limit` events (`<= 0`: no limit), but always returns at least the first revision that
    /// has a matching event. So a watcher resumes from `last.revision + 1` when `count >= limit`, and is in
    /// sync up to the current revision otherwise.
    ///
    /// Throws `.compacted(revision: compactedRevision)` when `start < firstWatchableRevision`
    /// (the events of those revisions are gone; etcd's watch reports `compact_revision`, and
    /// etcd clients then watch again from it, which works). A start after the current revision
    /// gives no events; a start `<= 1` means from the beginning (a server maps etcd's
    /// `start_revision` 0, "from now", to `revision + 1` itself). O(revisions scanned × events).
    public func events(
        from start: Int64,
        key: [UInt8],
        rangeEnd: [UInt8] = [],
        limit: Int = Int.max
    ) throws(KVError) -> [WatchEvent] {
        if Swift.max(start, 1) < firstWatchableRevision { throw .compacted(revision: compactedRevision) }
        guard start <= revision else { return [] }
        let range = KeyRange(key: key, rangeEnd: rangeEnd)
        let eventsMax = limit > 0 ? limit : Int.max
        var result: [WatchEvent] = []
        // Revision 1 is the empty store: it has no record. Records are consecutive from there.
        var position =
            changeLog.position(of: Swift.max(start, changeLog.firstRevision ?? start)) ?? changeLog.records.count
        while position < changeLog.records.count {
            let record = changeLog.records[position]
            precondition(record.revision >= start, "events before the start")
            let countBefore = result.count
            for event in record.events where range.contains(event.kv.key) { result.append(event) }
            if result.count > eventsMax && countBefore > 0 {
                result.removeSubrange(countBefore...)
                break
            }
            if result.count >= eventsMax { break }
            position += 1
        }
        return result
    }

    /// The oldest revision `events(from:)` replays: the compacted revision itself (its
    /// record is kept), or the one after it when a format-1 snapshot brought no record.
    public var firstWatchableRevision: Int64 {
        if compactedRevision <= 1 { return 1 }
        return changeLog.firstRevision == compactedRevision ? compactedRevision : compactedRevision + 1
    }

    // MARK: - History

    /// Every retained version of the keys in `key`/`rangeEnd`: keys in byte order, each key's
    /// versions oldest first, with the revision, the leader's proposal time, put or delete and
    /// the value. At most `limit` entries when `limit > 0`. O(log keys + entries).
    public func history(key: [UInt8], rangeEnd: [UInt8] = [], limit: Int = 0) -> [HistoryEntry] {
        var result: [HistoryEntry] = []
        history.forEach(in: KeyRange(key: key, rangeEnd: rangeEnd)) { chain in
            for version in chain.versions {
                if limit > 0 && result.count >= limit { return false }
                result.append(
                    HistoryEntry(
                        key: chain.key,
                        revision: version.modRevision,
                        proposedAtMilliseconds: version.proposedAtMilliseconds,
                        type: version.isTombstone ? .delete : .put,
                        value: version.value,
                        createRevision: version.createRevision,
                        version: version.version
                    )
                )
            }
            return true
        }
        return result
    }

    // MARK: - Reads at a revision

    /// etcd's `rangeKeys` revision rule for a read at `requested` (`<= 0` = current).
    func checkReadable(_ requested: Int64) throws(KVError) {
        if requested > revision { throw .futureRevision(revision: requested) }
        if requested > 0 && requested < compactedRevision { throw .compacted(revision: compactedRevision) }
    }

    /// The live keys of `range` as they were at `atRevision`, as an index to run a range on.
    /// O(log keys + keys of the range ever retained × log versions).
    func index(at atRevision: Int64, of range: KeyRange) -> KeyIndex {
        precondition(atRevision >= compactedRevision && atRevision <= revision, "read at an unreadable revision")
        var entries: [KeyValue] = []
        history.forEach(in: range) { chain in
            if let keyValue = chain.keyValue(at: atRevision) { entries.append(keyValue) }
            return true
        }
        return KeyIndex(sortedEntries: entries)
    }

    // MARK: - Compaction

    mutating func applyCompaction(_ request: CompactionRequest) -> WriteResult {
        if request.revision <= compactedRevision {
            return .failure(.compacted(revision: compactedRevision), revision: revision)
        }
        if request.revision > revision {
            return .failure(.futureRevision(revision: request.revision), revision: revision)
        }
        compact(through: request.revision)
        return .compact(CompactionResponse(revision: revision))
    }

    /// Forgets what reads at revisions `>= through` do not need: per key, every version
    /// older than the newest one at or before `through`, and that one too when it is a
    /// tombstone; and the change log before `through` (its own record stays, so a watch can
    /// start at the compacted revision, as etcd allows). Digest and byte estimate follow
    /// incrementally. O(writes since the last compaction + versions dropped + records kept):
    /// never quadratic, and independent of how many keys were left alone.
    mutating func compact(through compactRevision: Int64) {
        precondition(compactRevision > compactedRevision && compactRevision <= revision, "compaction out of range")
        var digestDropped: UInt64 = 0
        var bytesDropped = 0
        history.compact(
            through: compactRevision,
            dropped: { key, version in
                digestDropped &+= Self.versionDigest(key: key, version)
                bytesDropped += Self.versionBytes(version)
            },
            removed: { key in bytesDropped += Self.keyBytes(key) }
        )
        for record in changeLog.records {
            if record.revision >= compactRevision { break }
            bytesDropped += Self.recordOverheadBytes
            for (ordinal, event) in record.events.enumerated() {
                digestDropped &+= Self.eventOrderDigest(event, ordinal: ordinal, kvDigest: Self.keyDigest(event.kv))
            }
        }
        changeLog.dropRecords(through: compactRevision - 1)
        compactedRevision = compactRevision
        historyDigest &-= digestDropped
        approximateBytes -= bytesDropped
        precondition(approximateBytes >= 0, "the byte estimate went negative")
    }

    // MARK: - HashKV

    /// etcd's HashKV: a CRC-32C of every retained version with `modRevision <= revision`
    /// (`revision <= 0` = current), keys in byte order and each key's versions oldest first,
    /// after the compacted revision. Equal on every replica that applied the same commands
    /// (or restored a snapshot of such a store). O(retained versions).
    public func hashKV(revision requested: Int64 = 0) throws(KVError) -> (
        hash: UInt32, compactRevision: Int64, revision: Int64
    ) {
        try checkReadable(requested)
        let upTo = requested > 0 ? requested : revision
        var crc: UInt32 = 0
        var writer = ByteWriter(reservingCapacity: 256)
        writer.writeSigned(compactedRevision)
        crc = CRC32C.update(crc, writer.bytes[...])
        for chain in history.entries {
            for version in chain.versions where version.modRevision <= upTo {
                writer = ByteWriter(reservingCapacity: 64 + chain.key.count + version.value.count)
                writer.writeLengthPrefixed(chain.key)
                writer.writeSigned(version.modRevision)
                writer.writeSigned(version.createRevision)
                writer.writeSigned(version.version)
                writer.writeSigned(version.proposedAtMilliseconds)
                writer.writeLengthPrefixed(version.value)
                crc = CRC32C.update(crc, writer.bytes[...])
            }
        }
        return (crc, compactedRevision, upTo)
    }

    // MARK: - Digest and space accounting

    /// A version's term in `historyDigest`: its pair (as `keyDigest`, etcd's tombstone for a
    /// delete) and its proposal time.
    static func versionDigest(kvDigest: UInt64, proposedAtMilliseconds: Int64) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(kvDigest)
        hasher.combine(UInt64(bitPattern: proposedAtMilliseconds))
        return hasher.finalized
    }

    static func versionDigest(key: [UInt8], _ version: KeyVersion) -> UInt64 {
        let keyValue = KeyValue(
            key: key,
            value: version.value,
            createRevision: version.createRevision,
            modRevision: version.modRevision,
            version: version.version
        )
        return versionDigest(kvDigest: keyDigest(keyValue), proposedAtMilliseconds: version.proposedAtMilliseconds)
    }

    /// An event's term in `historyDigest`: where the change sits in the log (its content is
    /// the version's term), so a different order inside a revision differs too.
    static func eventOrderDigest(_ event: WatchEvent, ordinal: Int, kvDigest: UInt64) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(UInt64(bitPattern: event.revision))
        hasher.combine(UInt64(ordinal))
        hasher.combine(UInt64(event.type.rawValue))
        hasher.combine(kvDigest)
        return hasher.finalized
    }

    mutating func recomputeHistoryDigest() {
        var sum: UInt64 = 0
        for chain in history.entries {
            for version in chain.versions { sum &+= Self.versionDigest(key: chain.key, version) }
        }
        for record in changeLog.records {
            for (ordinal, event) in record.events.enumerated() {
                sum &+= Self.eventOrderDigest(event, ordinal: ordinal, kvDigest: Self.keyDigest(event.kv))
            }
        }
        historyDigest = sum
    }

    /// Estimated bytes per retained key (its bytes, the chain and the live index entry), per
    /// version (its value, the chain entry and its change-log event) and per log record.
    static let keyOverheadBytes = 96
    static let versionOverheadBytes = 128
    static let recordOverheadBytes = 48

    static func keyBytes(_ key: [UInt8]) -> Int { key.count + keyOverheadBytes }
    static func versionBytes(_ version: KeyVersion) -> Int { version.value.count + versionOverheadBytes }

    mutating func recomputeApproximateBytes() {
        var total = changeLog.records.count * Self.recordOverheadBytes
        for chain in history.entries {
            total += Self.keyBytes(chain.key)
            for version in chain.versions { total += Self.versionBytes(version) }
        }
        approximateBytes = total
    }
}
