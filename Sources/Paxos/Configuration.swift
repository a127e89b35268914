/// The fixed parameters of one replica, validated at construction (a throwing `init`, as
/// etcd-raft's `Config.validate()`), so a bad flag gives one clear line.
public struct Configuration: Sendable, Hashable {
    /// This replica's id; must be one of `replicas`.
    public var replicaID: ReplicaID
    /// Every replica of the cluster, sorted; an odd count is recommended.
    public var replicas: [ReplicaID]

    /// How often the leader sends heartbeats (and retransmits unanswered accepts).
    public var heartbeatIntervalTicks: Int
    /// A follower that hears nothing from a leader for a random time in
    /// `electionTimeoutTicks ..< 2 * electionTimeoutTicks` starts Phase 1; a leader that
    /// hears from no majority for `electionTimeoutTicks` steps down (check quorum).
    public var electionTimeoutTicks: Int

    /// Pipelining bound: slots proposed but not yet in the chosen prefix.
    public var slotsInFlightMax: Int
    /// Batching bound: commands decided in one slot.
    public var batchCommandsMax: Int
    /// Batching bound: bytes of commands decided in one slot.
    public var batchBytesMax: Int
    /// Commands the leader queues while the window is full; more are dropped (the client
    /// retries).
    public var pendingCommandsMax: Int
    /// Bytes of the commands a leader may queue (the other bound of `pendingCommandsMax`).
    public var pendingBytesMax: Int
    /// Linearizable reads waiting for a read index or for the apply point.
    public var pendingReadsMax: Int
    /// Chosen entries sent in one `learn` message to a lagging learner.
    public var learnEntriesMax: Int
    /// An acceptor does not promise to a candidate more than this many slots behind its
    /// own chosen prefix; it sends the candidate what it lacks instead (bounds the size of
    /// a promise and keeps far-behind replicas from leading).
    public var promiseLagSlotsMax: Int
    /// Ticks before a read forwarded to the leader is failed back to the client.
    public var readTimeoutTicks: Int
    /// Ticks between two snapshot offers to the same lagging peer.
    public var snapshotResendTicks: Int
    /// Chosen entries kept below a compaction point, so that a learner only slightly
    /// behind is sent entries instead of a whole snapshot.
    public var compactionTailSlots: Int
    /// Seed of the replica's private PRNG (only election timeouts use it).
    public var randomSeed: UInt64

    public init(
        replicaID: ReplicaID,
        replicas: [ReplicaID],
        heartbeatIntervalTicks: Int = 1,
        electionTimeoutTicks: Int = 10,
        slotsInFlightMax: Int = 64,
        batchCommandsMax: Int = 512,
        batchBytesMax: Int = 1 << 20,
        pendingCommandsMax: Int = 16_384,
        pendingBytesMax: Int = 64 << 20,
        pendingReadsMax: Int = 16_384,
        learnEntriesMax: Int = 64,
        promiseLagSlotsMax: Int = 1_024,
        readTimeoutTicks: Int? = nil,
        snapshotResendTicks: Int? = nil,
        compactionTailSlots: Int = 1_024,
        randomSeed: UInt64 = 0
    ) throws(ConfigurationError) {
        self.replicaID = replicaID
        self.replicas = replicas.sorted()
        self.heartbeatIntervalTicks = heartbeatIntervalTicks
        self.electionTimeoutTicks = electionTimeoutTicks
        self.slotsInFlightMax = slotsInFlightMax
        self.batchCommandsMax = batchCommandsMax
        self.batchBytesMax = batchBytesMax
        self.pendingCommandsMax = pendingCommandsMax
        self.pendingBytesMax = pendingBytesMax
        self.pendingReadsMax = pendingReadsMax
        self.learnEntriesMax = learnEntriesMax
        self.promiseLagSlotsMax = promiseLagSlotsMax
        self.readTimeoutTicks = readTimeoutTicks ?? 3 * electionTimeoutTicks
        self.snapshotResendTicks = snapshotResendTicks ?? 2 * electionTimeoutTicks
        self.compactionTailSlots = compactionTailSlots
        self.randomSeed = randomSeed
        try validate()
    }

    /// A majority of `replicas`.
    public var quorum: Int { replicas.count / 2 + 1 }

    /// Every replica but this one, sorted.
    public var peers: [ReplicaID] { replicas.filter { $0 != replicaID } }

    func validate() throws(ConfigurationError) {
        guard !replicas.isEmpty else { throw .invalid("the cluster has no replicas") }
        guard Set(replicas).count == replicas.count else {
            throw .invalid("replica ids repeat: \(replicas)")
        }
        guard !replicas.contains(0) else { throw .invalid("replica id 0 is reserved; ids start at 1") }
        guard replicas.contains(replicaID) else {
            throw .invalid("replica id \(replicaID) is not one of the cluster's \(replicas)")
        }
        guard heartbeatIntervalTicks >= 1 else { throw .invalid("heartbeat interval must be at least 1 tick") }
        guard electionTimeoutTicks > 2 * heartbeatIntervalTicks else {
            throw .invalid(
                "election timeout (\(electionTimeoutTicks) ticks) must exceed two heartbeat intervals "
                    + "(\(heartbeatIntervalTicks) ticks each)")
        }
        guard slotsInFlightMax >= 1 else { throw .invalid("slotsInFlightMax must be at least 1") }
        guard batchCommandsMax >= 1 else { throw .invalid("batchCommandsMax must be at least 1") }
        guard batchBytesMax >= 1 else { throw .invalid("batchBytesMax must be at least 1") }
        guard pendingBytesMax >= batchBytesMax else { throw .invalid("pendingBytesMax must be at least batchBytesMax") }
        guard pendingCommandsMax >= batchCommandsMax else {
            throw .invalid("pendingCommandsMax must be at least batchCommandsMax")
        }
        guard pendingReadsMax >= 1 else { throw .invalid("pendingReadsMax must be at least 1") }
        guard learnEntriesMax >= 1 else { throw .invalid("learnEntriesMax must be at least 1") }
        guard promiseLagSlotsMax > slotsInFlightMax else {
            throw .invalid("promiseLagSlotsMax must exceed slotsInFlightMax")
        }
        guard compactionTailSlots >= 0 else { throw .invalid("compactionTailSlots must not be negative") }
        guard readTimeoutTicks >= electionTimeoutTicks else {
            throw .invalid("readTimeoutTicks must be at least the election timeout")
        }
    }
}

public enum ConfigurationError: Error, Hashable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return "invalid Paxos configuration: \(reason)"
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fully determined by its seed,
/// so a simulation seed replays the same election timeouts.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
