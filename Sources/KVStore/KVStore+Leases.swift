import ByteCodec

/// Leases in the state machine: grant, revoke and expiry commands, key attachment by puts,
/// and the snapshot section that keeps both.
///
/// Where the lease of a key lives: on the live key (`KeyValue.lease` in the index) and in
/// the lease's key set, both updated by every put and delete. History versions, change-log
/// events and remembered session results carry no lease (a snapshot rebuilds the history by
/// replaying keys and values, so a lease kept there would not survive it); a read at an older
/// revision and a watch event therefore report lease 0, where etcd reports the lease.
extension KVStore {
    // MARK: - Reading

    /// Number of live leases.
    public var leaseCount: Int { leases.count }

    /// The lease with its keys in byte order, if it exists.
    public func leaseInfo(_ id: Int64) -> LeaseInfo? {
        guard let lease = leases[id] else { return nil }
        return LeaseInfo(id: id, ttlSeconds: lease.ttlSeconds, keys: Self.sortedKeys(lease.keys))
    }

    /// Every lease id, in increasing order.
    public func leaseIDs() -> [Int64] {
        leases.keys.sorted()
    }

    /// Every lease with its granted time to live, in increasing id order.
    public func leaseTTLs() -> [(id: Int64, ttlSeconds: Int64)] {
        leases.map { (id: $0.key, ttlSeconds: $0.value.ttlSeconds) }.sorted { $0.id < $1.id }
    }

    static func sortedKeys(_ keys: Set<[UInt8]>) -> [[UInt8]] {
        keys.sorted { KVBytes.compare($0, $1) < 0 }
    }

    // MARK: - Validation

    static func validateLease(_ operation: LeaseOperation) throws(KVError) {
        if case .grant(_, let ttlSeconds) = operation, ttlSeconds > KVLimits.leaseTTLSecondsMax {
            throw .lease(.ttlTooLarge)
        }
    }

    /// etcd's `checkRequestPut` against the current state: `ignoreValue`/`ignoreLease` need
    /// the key, a lease must exist.
    func checkPutAgainstState(_ put: PutRequest) throws(KVError) {
        if (put.ignoreValue || put.ignoreLease) && index.find(put.key) == nil { throw .keyNotFound }
        if put.lease != 0 && leases[put.lease] == nil { throw .lease(.notFound) }
    }

    // MARK: - Applying

    mutating func applyLease(_ operation: LeaseOperation) -> WriteResult {
        switch operation {
        case .grant(let requested, let ttlSeconds):
            return grantLease(requested: requested, ttlSeconds: ttlSeconds)
        case .revoke(let id), .expire(let id, nil):
            return revokeLease(id)
        case .expire(let id, let epoch?):
            // Proposed by a leader whose term for leases ended before it was chosen: a later
            // leader may have renewed the lease since (see `LeaseEpoch`).
            guard epoch == leaseEpoch else { return .failure(.lease(.notFound), revision: revision) }
            return revokeLease(id)
        case .epoch(let epoch):
            if epoch > leaseEpoch { leaseEpoch = epoch }
            return .lease(LeaseResponse(revision: revision, id: 0, ttlSeconds: 0))
        }
    }

    private mutating func grantLease(requested: Int64, ttlSeconds: Int64) -> WriteResult {
        if ttlSeconds > KVLimits.leaseTTLSecondsMax { return .failure(.lease(.ttlTooLarge), revision: revision) }
        if requested != 0 && leases[requested] != nil { return .failure(.lease(.alreadyExists), revision: revision) }
        if leases.count >= KVLimits.leasesMax { return .failure(.lease(.tooManyLeases), revision: revision) }
        let id = requested != 0 ? requested : pickLeaseID()
        // The server raises a TTL to its minimum before proposing; the store only keeps it positive.
        let granted = Swift.max(ttlSeconds, 1)
        leases[id] = StoredLease(ttlSeconds: granted, keys: [])
        leasesDigest &+= Self.leaseDigest(id: id, ttlSeconds: granted)
        leaseGeneration &+= 1
        precondition(leases.count <= KVLimits.leasesMax, "lease table over its bound")
        return .lease(LeaseResponse(revision: revision, id: id, ttlSeconds: granted))
    }

    /// Deletes the lease's keys, in byte order, all at the next revision (none taken when it
    /// has no keys), then the lease.
    private mutating func revokeLease(_ id: Int64) -> WriteResult {
        guard let lease = leases[id] else { return .failure(.lease(.notFound), revision: revision) }
        var deleted: Int64 = 0
        for key in Self.sortedKeys(lease.keys) {
            // Each delete detaches the key from the lease (`writeDeleteRange`).
            deleted += writeDeleteRange(DeleteRangeRequest(key: key)).deleted
        }
        precondition(deleted == Int64(lease.keys.count), "a lease held a key that is not live")
        precondition(leases[id]?.keys.isEmpty == true, "a revoked lease kept a key")
        if deleted > 0 { revision += 1 }
        leasesDigest &-= Self.leaseDigest(id: id, ttlSeconds: lease.ttlSeconds)
        leases[id] = nil
        leaseGeneration &+= 1
        return .lease(LeaseResponse(revision: revision, id: id, ttlSeconds: lease.ttlSeconds, keysDeleted: deleted))
    }

    /// A positive id no lease has, the same on every replica: a mix of the count of ids
    /// picked so far (SplitMix64's finalizer), so ids look like etcd's and never repeat soon.
    private mutating func pickLeaseID() -> Int64 {
        while true {
            leaseIDsPicked += 1
            var mixed = leaseIDsPicked &* 0x9E37_79B9_7F4A_7C15
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            mixed ^= mixed >> 31
            let id = Int64(bitPattern: mixed & 0x7FFF_FFFF_FFFF_FFFF)
            if id != 0 && leases[id] == nil { return id }
        }
    }

    /// Moves `key` from lease `old` to lease `new` (0: none) in the leases' key sets. The
    /// caller has checked that `new` exists; `old` exists by the invariant.
    mutating func moveLeaseAttachment(key: [UInt8], from old: Int64, to new: Int64) {
        guard old != new else { return }
        if old != 0 {
            guard leases[old]?.keys.remove(key) != nil else { preconditionFailure("key not in its lease \(old)") }
            leasesDigest &-= Self.attachmentDigest(id: old, key: key)
        }
        if new != 0 {
            guard leases[new]?.keys.insert(key).inserted == true else {
                preconditionFailure("key attached to missing lease \(new), or twice")
            }
            leasesDigest &+= Self.attachmentDigest(id: new, key: key)
        }
    }

    // MARK: - Digest

    static func leaseDigest(id: Int64, ttlSeconds: Int64) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(UInt64(bitPattern: id))
        hasher.combine(UInt64(bitPattern: ttlSeconds))
        return hasher.finalized
    }

    static func attachmentDigest(id: Int64, key: [UInt8]) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(key)
        hasher.combine(UInt64(bitPattern: id) ^ 0x5A5A_5A5A_5A5A_5A5A)
        return hasher.finalized
    }

    mutating func recomputeLeasesDigest() {
        var sum: UInt64 = 0
        for (id, lease) in leases {
            sum &+= Self.leaseDigest(id: id, ttlSeconds: lease.ttlSeconds)
            for key in lease.keys { sum &+= Self.attachmentDigest(id: id, key: key) }
        }
        leasesDigest = sum
    }

    // MARK: - Snapshot section

    /// `leaseSection := 'L' version=2 idsPicked epochRound epochLeader count
    /// (id ttlSeconds keyCount key*)*`, leases in id order and keys in byte order (version 1,
    /// still read, has no epoch). Written only when the store ever had a lease or an epoch, so
    /// snapshots of stores without either are byte for byte what builds without leases write.
    static let leaseSectionTag = UInt8(ascii: "L")
    static let leaseSectionVersionWithoutEpoch: UInt8 = 1
    static let leaseSectionVersion: UInt8 = 2

    func writeLeaseSection(_ writer: inout ByteWriter) {
        guard !leases.isEmpty || leaseIDsPicked != 0 || leaseEpoch != .none else { return }
        writer.writeUInt8(Self.leaseSectionTag)
        writer.writeUInt8(Self.leaseSectionVersion)
        writer.writeVarint(leaseIDsPicked)
        writer.writeLeaseEpoch(leaseEpoch)
        writer.writeVarint(UInt64(leases.count))
        for (id, ttlSeconds) in leaseTTLs() {
            guard let lease = leases[id] else { preconditionFailure("lease vanished") }
            writer.writeSigned(id)
            writer.writeSigned(ttlSeconds)
            writer.writeVarint(UInt64(lease.keys.count))
            for key in Self.sortedKeys(lease.keys) { writer.writeLengthPrefixed(key) }
        }
    }

    /// What a snapshot's lease section holds, applied after the keys are restored.
    struct RestoredLeases {
        var idsPicked: UInt64
        var epoch: LeaseEpoch
        var leases: [(id: Int64, ttlSeconds: Int64, keys: [[UInt8]])]
    }

    /// The lease section after its tag (read by `readOptionalSnapshotSections`).
    static func readLeaseSectionBody(_ reader: inout ByteReader) throws(KVCodecError) -> RestoredLeases {
        let versionOffset = reader.offset
        let version = try reader.readUInt8()
        guard version == leaseSectionVersion || version == leaseSectionVersionWithoutEpoch else {
            throw KVCodecError(.unknownTag(field: "snapshot.leases.version", tag: version), offset: versionOffset)
        }
        let idsPicked = try reader.readVarint()
        let epoch = version == leaseSectionVersion ? try reader.readLeaseEpoch() : .none
        // id, ttl and key count: three bytes at least.
        let count = try reader.readCount(max: KVLimits.leasesMax, minimumElementBytes: 3, "snapshot.leases")
        var leases: [(id: Int64, ttlSeconds: Int64, keys: [[UInt8]])] = []
        leases.reserveCapacity(count)
        for _ in 0..<count {
            let id = try reader.readSigned()
            let ttlSeconds = try reader.readSigned()
            let keyCount = try reader.readCount(max: Int.max, minimumElementBytes: 1, "snapshot.lease.keys")
            var keys: [[UInt8]] = []
            keys.reserveCapacity(keyCount)
            for _ in 0..<keyCount { keys.append(try reader.readLengthPrefixed(max: Int.max, "snapshot.lease.key")) }
            leases.append((id, ttlSeconds, keys))
        }
        return RestoredLeases(idsPicked: idsPicked, epoch: epoch, leases: leases)
    }

    /// Installs restored leases and attaches their keys, checking the section against the
    /// restored keys (a snapshot that lies fails as `invalidState`).
    mutating func restoreLeases(_ restored: RestoredLeases) throws(KVSnapshotError) {
        leaseIDsPicked = restored.idsPicked
        leaseEpoch = restored.epoch
        var previousID: Int64?
        for lease in restored.leases {
            if let previousID, previousID >= lease.id { throw .invalidState("leases out of id order at \(lease.id)") }
            previousID = lease.id
            if lease.id == 0 || lease.ttlSeconds < 1 || lease.ttlSeconds > KVLimits.leaseTTLSecondsMax {
                throw .invalidState("lease \(lease.id) with TTL \(lease.ttlSeconds)")
            }
            var keys: Set<[UInt8]> = []
            for key in lease.keys {
                guard let live = index.find(key), live.lease == 0, keys.insert(key).inserted else {
                    throw .invalidState("lease \(lease.id) holds key \(KVBytes.describe(key)) that is missing or taken")
                }
                _ = index.upsert(key: key) { _ in
                    var attached = live
                    attached.lease = lease.id
                    return attached
                }
            }
            leases[lease.id] = StoredLease(ttlSeconds: lease.ttlSeconds, keys: keys)
        }
        leaseGeneration &+= 1
    }
}

extension KeyValue {
    /// The pair with lease 0 (what history and remembered results keep).
    var withoutLease: KeyValue {
        var copy = self
        copy.lease = 0
        return copy
    }
}

extension WatchEvent {
    var withoutLeases: WatchEvent {
        WatchEvent(type: type, kv: kv.withoutLease, prevKV: prevKV?.withoutLease)
    }
}

extension WriteResult {
    /// The result with every pair's lease 0, as the session table remembers it.
    var withoutLeases: WriteResult {
        switch self {
        case .put(var response):
            response.prevKV = response.prevKV?.withoutLease
            return .put(response)
        case .deleteRange(var response):
            response.prevKVs = response.prevKVs.map(\.withoutLease)
            return .deleteRange(response)
        case .txn(let response):
            return .txn(response.withoutLeases)
        case .failure, .compact, .lease, .auth, .alarm:
            return self
        }
    }
}

extension TxnResponse {
    var withoutLeases: TxnResponse {
        var copy = self
        copy.responses = responses.map { op in
            switch op {
            case .range(var range):
                range.kvs = range.kvs.map(\.withoutLease)
                return .range(range)
            case .put(var put):
                put.prevKV = put.prevKV?.withoutLease
                return .put(put)
            case .deleteRange(var delete):
                delete.prevKVs = delete.prevKVs.map(\.withoutLease)
                return .deleteRange(delete)
            case .txn(let nested):
                return .txn(nested.withoutLeases)
            }
        }
        return copy
    }
}
