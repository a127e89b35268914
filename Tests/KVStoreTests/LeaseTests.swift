import ByteCodec
import Testing

@testable import KVStore

extension KVStore {
    @discardableResult
    mutating func lease(_ operation: LeaseOperation, id: RequestID = .none) -> WriteResult {
        apply(WriteCommand(requestID: id, operation: .lease(operation)))
    }

    @discardableResult
    mutating func put(_ key: String, _ value: String, lease: Int64, ignoreLease: Bool = false) -> WriteResult {
        apply(
            WriteCommand(
                requestID: .none,
                operation: .put(PutRequest(key: b(key), value: b(value), lease: lease, ignoreLease: ignoreLease))))
    }

    /// Both directions of the attachment invariant, and the lease digest against a recount.
    func checkLeaseInvariants() -> String? {
        for entry in index.entries where entry.lease != 0 {
            guard leases[entry.lease]?.keys.contains(entry.key) == true else {
                return "\(KVBytes.describe(entry.key)) claims lease \(entry.lease) that does not hold it"
            }
        }
        for (id, lease) in leases {
            for key in lease.keys where index.find(key)?.lease != id {
                return "lease \(id) holds \(KVBytes.describe(key)), which is not live on it"
            }
        }
        var copy = self
        copy.recomputeLeasesDigest()
        if copy.leasesDigest != leasesDigest { return "lease digest drifted" }
        return nil
    }
}

@Suite struct LeaseTests {
    func granted(_ result: WriteResult) -> LeaseResponse? {
        if case .lease(let response) = result { return response }
        return nil
    }

    @Test func grantWithAndWithoutID() throws {
        var store = KVStore()
        let explicit = try #require(granted(store.lease(.grant(id: 7, ttlSeconds: 10))))
        #expect(explicit.id == 7 && explicit.ttlSeconds == 10 && explicit.revision == 1)
        #expect(store.lease(.grant(id: 7, ttlSeconds: 5)).error == .lease(.alreadyExists))
        let picked = try #require(granted(store.lease(.grant(id: 0, ttlSeconds: 3))))
        #expect(picked.id > 0 && picked.id != 7)
        // Every replica picks the same id.
        var other = KVStore()
        other.lease(.grant(id: 7, ttlSeconds: 10))
        #expect(granted(other.lease(.grant(id: 0, ttlSeconds: 3)))?.id == picked.id)
        // A grant takes no revision; a TTL below 1 becomes 1.
        #expect(store.revision == 1)
        #expect(granted(store.lease(.grant(id: 9, ttlSeconds: 0)))?.ttlSeconds == 1)
        #expect(store.leaseIDs() == [7, 9, picked.id].sorted())
    }

    @Test func ttlBounds() {
        var store = KVStore()
        let tooLarge = LeaseOperation.grant(id: 1, ttlSeconds: KVLimits.leaseTTLSecondsMax + 1)
        #expect(throws: KVError.lease(.ttlTooLarge)) { try KVStore.validate(.lease(tooLarge)) }
        #expect(store.lease(tooLarge).error == .lease(.ttlTooLarge))
        #expect(store.lease(.grant(id: 1, ttlSeconds: KVLimits.leaseTTLSecondsMax)).error == nil)
        #expect(KVError.lease(.ttlTooLarge).message == "etcdserver: too large lease TTL")
        #expect(KVError.lease(.notFound).message == "etcdserver: requested lease not found")
        #expect(KVError.lease(.alreadyExists).message == "etcdserver: lease already exists")
    }

    @Test func putAttachesAndRevokeDeletesAtOneRevision() throws {
        var store = KVStore()
        #expect(store.put("a", "1", lease: 5).error == .lease(.notFound))
        #expect(store.revision == 1 && store.count == 0)
        store.lease(.grant(id: 5, ttlSeconds: 10))
        store.put("b", "2", lease: 5)
        store.put("a", "1", lease: 5)
        store.put("c", "3")
        #expect(store.get(b("a"))?.lease == 5)
        #expect(try store.range(RangeRequest(key: b("a"), rangeEnd: b("z"))).kvs.map(\.lease) == [5, 5, 0])
        #expect(store.leaseInfo(5)?.keys == [b("a"), b("b")])
        let before = store.revision
        let revoked = try #require(granted(store.lease(.revoke(id: 5))))
        #expect(revoked.keysDeleted == 2 && revoked.revision == before + 1 && store.revision == before + 1)
        let events = store.lastAppliedEvents
        #expect(events.map(\.type) == [.delete, .delete])
        #expect(events.map(\.kv.key) == [b("a"), b("b")])
        #expect(events.allSatisfy { $0.revision == before + 1 })
        #expect(store.count == 1 && store.leaseCount == 0)
        #expect(store.lease(.revoke(id: 5)).error == .lease(.notFound))
        #expect(store.checkLeaseInvariants() == nil)
        #expect(store.checkConsistency() == nil)
    }

    @Test func expireIsRevoke() throws {
        var revoked = KVStore()
        var expired = KVStore()
        for index in [0, 1] {
            var store = index == 0 ? revoked : expired
            store.lease(.grant(id: 3, ttlSeconds: 2))
            store.put("k", "v", lease: 3)
            store.lease(index == 0 ? .revoke(id: 3) : .expire(id: 3, epoch: nil))
            if index == 0 { revoked = store } else { expired = store }
        }
        #expect(revoked == expired)
        #expect(revoked.stateDigest() == expired.stateDigest())
        #expect(expired.get(b("k")) == nil)
        // A lease without keys takes no revision when it goes.
        var store = KVStore()
        store.lease(.grant(id: 4, ttlSeconds: 2))
        #expect(granted(store.lease(.expire(id: 4, epoch: nil)))?.revision == 1)
    }

    /// The race a replicated epoch closes: leader A proposes an expiry that only its own
    /// acceptor accepts, leader B logs its epoch and renews the lease, then A leads again and
    /// Phase 1 makes it re-propose its old expiry (and, possibly, its old epoch).
    @Test func expiryFromAnEarlierEpochChangesNothing() throws {
        let first = LeaseEpoch(round: 1, leader: 1)
        let second = LeaseEpoch(round: 2, leader: 2)
        #expect(first < second && LeaseEpoch.none < first)
        var store = KVStore()
        store.lease(.grant(id: 3, ttlSeconds: 2))
        store.put("k", "v", lease: 3)
        #expect(granted(store.lease(.epoch(first))) != nil)
        #expect(store.leaseEpoch == first)
        #expect(granted(store.lease(.epoch(second))) != nil)
        let before = store
        // A's expiry, chosen after B's epoch: no keys deleted, no revision taken.
        #expect(store.lease(.expire(id: 3, epoch: first)).error == .lease(.notFound))
        // A's epoch, chosen late too: the store keeps B's.
        store.lease(.epoch(first))
        #expect(store.leaseEpoch == second)
        #expect(store == before && store.stateDigest() == before.stateDigest())
        #expect(store.get(b("k")) != nil && store.leaseInfo(3) != nil)
        // An expiry of an epoch not yet applied changes nothing either.
        #expect(store.lease(.expire(id: 3, epoch: LeaseEpoch(round: 3, leader: 1))).error == .lease(.notFound))
        #expect(store == before)
        // B's own expiry deletes the lease and its key at the next revision.
        let revision = store.revision
        let expired = try #require(granted(store.lease(.expire(id: 3, epoch: second))))
        #expect(expired.keysDeleted == 1 && expired.revision == revision + 1)
        #expect(store.get(b("k")) == nil && store.leaseInfo(3) == nil)
    }

    @Test func epochSurvivesSnapshotsAndCounts() throws {
        var store = KVStore()
        store.put("a", "1")
        let plain = store.snapshot()
        // An epoch alone writes the lease section, and it comes back.
        store.lease(.epoch(LeaseEpoch(round: 7, leader: 3)))
        let restored = try KVStore(snapshot: store.snapshot())
        #expect(store.snapshot().count > plain.count)
        #expect(restored.leaseEpoch == LeaseEpoch(round: 7, leader: 3))
        #expect(restored == store && restored.stateDigest() == store.stateDigest())
        // Replicas at different epochs differ (the simulator's digests compare them).
        var other = store
        other.lease(.epoch(LeaseEpoch(round: 8, leader: 1)))
        #expect(other != store && other.stateDigest() != store.stateDigest())
    }

    @Test func leaseSectionVersion1IsStillRead() throws {
        var store = KVStore()
        store.lease(.grant(id: 1, ttlSeconds: 5))
        store.put("k", "v", lease: 1)
        let bytes = store.snapshot()
        // 'L' 2 idsPicked=0 round=0 leader=0 count=1 id=1 ttl=5 keys=1 len=1 'k', then the CRC.
        let start = bytes.count - 4 - 11
        #expect(Array(bytes[start..<(start + 5)]) == [UInt8(ascii: "L"), 2, 0, 0, 0])
        var old = Array(bytes[..<start])
        old += [UInt8(ascii: "L"), 1, 0] + Array(bytes[(start + 5)..<(bytes.count - 4)])
        var writer = ByteWriter()
        writer.writeBytes(old)
        writer.writeUInt32(CRC32C.checksum(old))
        let restored = try KVStore(snapshot: writer.bytes)
        #expect(restored == store && restored.leaseEpoch == .none)
    }

    @Test func detachOnPutDeleteAndIgnoreLease() throws {
        var store = KVStore()
        store.lease(.grant(id: 1, ttlSeconds: 10))
        store.lease(.grant(id: 2, ttlSeconds: 10))
        store.put("k", "v1", lease: 1)
        store.put("k", "v2", lease: 0, ignoreLease: true)
        #expect(store.get(b("k"))?.lease == 1 && store.value("k") == "v2")
        store.put("k", "v3", lease: 2)
        #expect(store.leaseInfo(1)?.keys == [] && store.leaseInfo(2)?.keys == [b("k")])
        store.put("k", "v4")
        #expect(store.get(b("k"))?.lease == 0 && store.leaseInfo(2)?.keys == [])
        store.put("k", "v5", lease: 2)
        store.delete("k")
        #expect(store.leaseInfo(2)?.keys == [])
        let revision = store.revision
        #expect(granted(store.lease(.revoke(id: 2)))?.revision == revision)
        #expect(store.put("missing", "", lease: 0, ignoreLease: true).error == .keyNotFound)
        #expect(throws: KVError.lease(.leaseProvided)) {
            try KVStore.validate(.put(PutRequest(key: b("k"), value: [], lease: 1, ignoreLease: true)))
        }
        #expect(store.checkLeaseInvariants() == nil)
    }

    @Test func txnPutsWithLeasesAndComparesOnThem() throws {
        var store = KVStore()
        store.lease(.grant(id: 8, ttlSeconds: 10))
        let unknown = TxnRequest(success: [.put(PutRequest(key: b("x"), value: b("1"))), .put(PutRequest(key: b("y"), value: [], lease: 99))])
        #expect(store.txn(unknown).error == .lease(.notFound))
        #expect(store.count == 0)
        // etcd's lock recipe: create the key with the session's lease if nobody holds it.
        let lock = TxnRequest(
            compare: [Compare(key: b("lock/a"), result: .equal, target: .createRevision(0))],
            success: [.put(PutRequest(key: b("lock/a"), value: [], lease: 8))])
        guard case .txn(let response) = store.txn(lock) else { Issue.record("txn failed"); return }
        #expect(response.succeeded)
        #expect(store.get(b("lock/a"))?.lease == 8)
        let byLease = TxnRequest(compare: [Compare(key: b("lock/a"), result: .equal, target: .lease(8))])
        guard case .txn(let compared) = store.txn(byLease) else { Issue.record("txn failed"); return }
        #expect(compared.succeeded)
        #expect(store.checkLeaseInvariants() == nil)
    }

    @Test func codecKeepsOldPutsByteForByte() throws {
        // A put without a lease encodes exactly as before leases existed: format 1, tag 1,
        // key, value, flags.
        let put = WriteCommand(requestID: .none, operation: .put(PutRequest(key: [0x6B], value: [0x76], prevKV: true)))
        #expect(put.encode() == [1, 0, 0, 1, 1, 0x6B, 1, 0x76, 1])
        let commands: [WriteOperation] = [
            .put(PutRequest(key: b("k"), value: b("v"), lease: -5)),
            .put(PutRequest(key: b("k"), value: [], ignoreValue: true, ignoreLease: true)),
            .txn(TxnRequest(success: [.put(PutRequest(key: b("k"), value: b("v"), lease: Int64.max))])),
            .lease(.grant(id: 0, ttlSeconds: 60)),
            .lease(.grant(id: Int64.min, ttlSeconds: KVLimits.leaseTTLSecondsMax)),
            .lease(.revoke(id: 12)),
            .lease(.expire(id: -1, epoch: LeaseEpoch(round: 3, leader: 2))),
            .lease(.expire(id: 12, epoch: nil)),
            .lease(.epoch(LeaseEpoch(round: 1 << 40, leader: 5))),
        ]
        for operation in commands {
            let command = WriteCommand(requestID: RequestID(clientID: 3, sequence: 4), operation: operation)
            #expect(try WriteCommand.decode(command.encode()) == command, "\(operation)")
        }
        // An expiry without an epoch is what builds before epochs wrote (tag 7, id 12).
        let legacy = WriteCommand(requestID: .none, operation: .lease(.expire(id: 12, epoch: nil)))
        #expect(legacy.encode() == [1, 0, 0, 7, 24])
        // An undefined put flag bit is still refused.
        #expect(throws: KVCodecError.self) { try WriteCommand.decode([1, 0, 0, 1, 1, 0x6B, 1, 0x76, 0x10]) }
    }

    /// Random leases, puts with and without them, deletes, revokes and expiries.
    func randomLeaseStore(seed: UInt64, commands: Int = 300) -> KVStore {
        var random = RandomRequests(seed: seed)
        var store = KVStore()
        for step in 0..<commands {
            let lease = Int64(random.int(0...4))
            let key = [UInt8(ascii: "k"), UInt8(random.int(0...9))]
            let operation: WriteOperation
            switch random.int(0...9) {
            case 0: operation = .lease(.grant(id: random.bool() ? 0 : lease, ttlSeconds: Int64(random.int(0...30))))
            case 1: operation = .lease(random.bool() ? .revoke(id: lease) : .expire(id: lease, epoch: nil))
            case 2: operation = .deleteRange(DeleteRangeRequest(key: key, rangeEnd: random.bool() ? [] : [0x6C]))
            case 3:
                operation = .txn(
                    TxnRequest(
                        compare: [Compare(key: key, result: .equal, target: .lease(lease))],
                        success: [.put(PutRequest(key: key, value: [1], lease: lease))],
                        failure: [.deleteRange(DeleteRangeRequest(key: key))]))
            case 4: operation = .put(PutRequest(key: key, value: [2], ignoreLease: true))
            default:
                operation = .put(PutRequest(key: key, value: [UInt8(step % 256)], prevKV: random.bool(), lease: lease))
            }
            // Sessions too: their remembered results must survive a snapshot.
            let requestID = RequestID(clientID: UInt64(random.int(0...3)), sequence: UInt64(step + 1))
            _ = store.apply(WriteCommand(requestID: requestID, operation: operation))
            if step % 50 == 49 { _ = store.apply(WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: store.revision - 3)))) }
        }
        return store
    }

    @Test func snapshotsKeepLeasesAndAttachments() throws {
        for seed in testSeeds {
            let store = randomLeaseStore(seed: seed)
            #expect(store.leaseCount > 0 || store.leaseIDsPicked > 0, "seed \(seed)")
            #expect(store.checkLeaseInvariants() == nil, "seed \(seed)")
            #expect(store.checkConsistency() == nil, "seed \(seed)")
            let bytes = store.snapshot()
            var restored = try KVStore(snapshot: bytes)
            #expect(restored == store, "seed \(seed)")
            #expect(restored.snapshot() == bytes, "seed \(seed)")
            #expect(restored.stateDigest() == store.stateDigest(), "seed \(seed)")
            #expect(restored.checkLeaseInvariants() == nil, "seed \(seed)")
            // Both go on identically, picked ids included.
            var original = store
            for id in [Int64(0), 1, 2] {
                let grant = WriteCommand(requestID: .none, operation: .lease(.grant(id: id, ttlSeconds: 5)))
                #expect(original.apply(grant) == restored.apply(grant), "seed \(seed)")
            }
            for id in store.leaseIDs() {
                let revoke = WriteCommand(requestID: .none, operation: .lease(.revoke(id: id)))
                #expect(original.apply(revoke) == restored.apply(revoke), "seed \(seed)")
            }
            #expect(original.stateDigest() == restored.stateDigest(), "seed \(seed)")
        }
    }

    @Test func snapshotWithoutLeasesHasNoLeaseSection() throws {
        var store = KVStore()
        store.put("a", "1")
        let bytes = store.snapshot()
        var withLease = store
        withLease.lease(.grant(id: 1, ttlSeconds: 1))
        withLease.lease(.revoke(id: 1))
        // The lease section appears only once a lease existed (ids picked: 0 here, but the
        // lease table was used): stores without leases write what older builds wrote.
        #expect(withLease.snapshot().count == bytes.count)
        withLease.lease(.grant(id: 0, ttlSeconds: 1))
        #expect(withLease.snapshot().count > bytes.count)
        #expect(try KVStore(snapshot: withLease.snapshot()) == withLease)
    }

    @Test func lyingLeaseSectionIsRefused() throws {
        var store = KVStore()
        store.lease(.grant(id: 1, ttlSeconds: 5))
        store.put("k", "v", lease: 1)
        var bytes = store.snapshot()
        // Point the lease at a key that does not exist ('k' → 'q'), fixing the checksum.
        let content = Array(bytes.dropLast(4))
        guard let position = content.lastIndex(of: UInt8(ascii: "k")) else { Issue.record("no key"); return }
        bytes[position] = UInt8(ascii: "q")
        var writer = ByteWriter()
        writer.writeBytes(Array(bytes.dropLast(4)))
        writer.writeUInt32(CRC32C.checksum(Array(bytes.dropLast(4))))
        #expect(throws: KVSnapshotError.self) { try KVStore(snapshot: writer.bytes) }
    }
}
