import ByteCodec

/// `stateDigest()`: a cheap fingerprint of the logical state for the simulator to compare
/// replicas, maintained incrementally as wrapping sums of per-key and per-session hashes
/// (order independent, so no iteration order is involved) and combined in O(1).
extension KVStore {
    /// Equal for equal states (the same revision, keys with metadata, retained history with
    /// proposal times and compacted revision, sessions and session clock); different states
    /// collide with probability about 2^-64.
    public func stateDigest() -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(UInt64(bitPattern: revision))
        hasher.combine(UInt64(bitPattern: compactedRevision))
        hasher.combine(UInt64(history.count))
        hasher.combine(UInt64(changeLog.records.count))
        hasher.combine(historyDigest)
        hasher.combine(sessionClock)
        hasher.combine(UInt64(index.count))
        hasher.combine(keysDigest)
        hasher.combine(UInt64(sessions.count))
        hasher.combine(sessionsDigest)
        if !auth.isPristine { hasher.combine(auth.digest()) }
        if !alarms.isEmpty { hasher.combine(alarmsDigest) }
        // Stores that never saw a lease keep the digest they had before leases existed.
        if !leases.isEmpty || leaseIDsPicked != 0 || leaseEpoch != .none {
            hasher.combine(UInt64(leases.count))
            hasher.combine(leaseIDsPicked)
            hasher.combine(leasesDigest)
            hasher.combine(leaseEpoch.round)
            hasher.combine(leaseEpoch.leader)
        }
        return hasher.finalized
    }

    static func keyDigest(_ keyValue: KeyValue) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(keyValue.key)
        hasher.combine(keyValue.value)
        hasher.combine(UInt64(bitPattern: keyValue.createRevision))
        hasher.combine(UInt64(bitPattern: keyValue.modRevision))
        hasher.combine(UInt64(bitPattern: keyValue.version))
        return hasher.finalized
    }

    static func resultDigest(_ result: WriteResult) -> UInt64 {
        var writer = ByteWriter()
        return resultDigest(result, scratch: &writer)
    }

    /// The same digest, encoding into `scratch` (emptied first): the apply path reuses one
    /// writer instead of allocating one per command. A writer grown past
    /// `digestScratchBytesMax` by a large result (a txn's ranges, many deleted pairs) is
    /// dropped rather than kept for the store's lifetime.
    static func resultDigest(_ result: WriteResult, scratch: inout ByteWriter) -> UInt64 {
        scratch.removeAll()
        scratch.writeResult(result)
        var hasher = FNV1a()
        hasher.combine(scratch.bytes)
        if scratch.bytes.capacity > digestScratchBytesMax { scratch = ByteWriter() }
        return hasher.finalized
    }

    static let digestScratchBytesMax = 64 << 10

    /// Recomputes every sum from scratch (restore; tests compare it with the incremental one).
    mutating func recomputeDigests() {
        recomputeHistoryDigest()
        var keys: UInt64 = 0
        for entry in index.entries { keys &+= Self.keyDigest(entry) }
        var sessionSum: UInt64 = 0
        for (clientID, session) in sessions { sessionSum &+= session.digest(clientID: clientID) }
        keysDigest = keys
        sessionsDigest = sessionSum
        recomputeLeasesDigest()
    }
}
