/// What a replica must make durable. The write-ahead log stores these in order; replaying
/// them (after the newest snapshot) rebuilds `DurableState`.
public enum Record: Hashable, Sendable {
    /// The acceptor promised `ballot` (Phase 1b) — it must never accept below it again.
    case promised(Ballot)
    /// The acceptor accepted `entry` in `slot` (Phase 2b), or the learner learned it as
    /// chosen from a peer. A later record for the same slot replaces an earlier one.
    case accepted(slot: Slot, entry: LogEntry)
    /// Every slot through this one is chosen and its value is in the log.
    case chosenThrough(Slot)
}

/// The state that survives a crash, rebuilt from the newest snapshot plus the records
/// after it. Invariant: `chosenThrough >= snapshotThrough`; every slot in
/// `snapshotThrough+1 ... chosenThrough` has an entry.
public struct DurableState: Hashable, Sendable {
    /// The highest ballot this acceptor promised.
    public var promised: Ballot
    /// Accepted or learned entries above `snapshotThrough`, by slot.
    public var entries: [Slot: LogEntry]
    /// The chosen prefix known when the records were written.
    public var chosenThrough: Slot
    /// The slot the state machine's snapshot covers (0: no snapshot).
    public var snapshotThrough: Slot

    public init(
        promised: Ballot = .zero,
        entries: [Slot: LogEntry] = [:],
        chosenThrough: Slot = 0,
        snapshotThrough: Slot = 0
    ) {
        self.promised = promised
        self.entries = entries
        self.chosenThrough = chosenThrough
        self.snapshotThrough = snapshotThrough
    }

    /// Applies one record in log order; recovery is a fold of this over the log.
    public mutating func apply(_ record: Record) {
        switch record {
        case .promised(let ballot):
            promised = max(promised, ballot)
        case .accepted(let slot, let entry):
            guard slot > snapshotThrough else { return }
            entries[slot] = entry
        case .chosenThrough(let slot):
            chosenThrough = max(chosenThrough, slot)
        }
    }

    /// Drops everything a snapshot through `slot` covers.
    public mutating func compact(through slot: Slot) {
        guard slot > snapshotThrough else { return }
        snapshotThrough = slot
        chosenThrough = max(chosenThrough, slot)
        entries = entries.filter { $0.key > slot }
    }
}

/// Everything one `step` asks of the runtime.
///
/// **Contract — in this order:**
/// 1. append `records` to the write-ahead log and **fsync** them (unless
///    `recordsNeedSync` is false: then appending suffices, a later fsync covers them);
/// 2. only then send `messages` (a promise or an accepted reply that left before its
///    record was durable could be forgotten by a crash, and Paxos would be unsafe) —
///    except those with `Envelope.mayLeaveBeforePersist`, which may go before step 1;
/// 3. apply `committed` to the state machine in slot order;
/// 4. then serve `readsReleased` from the state machine and answer `readsFailed` with a
///    retryable error, and act on `snapshotsNeeded` and `proposalsDropped`.
///
/// An empty output asks for nothing. Outputs of consecutive steps may be merged with
/// `append(_:)` and handled as one batch (group commit) as long as the order above holds
/// for the merged batch.
public struct Output: Sendable {
    public var records: [Record] = []
    public var messages: [Envelope] = []
    /// Chosen values to apply, contiguous and in slot order.
    public var committed: [SlotEntry] = []
    /// Linearizable reads that may now be served from the state machine.
    public var readsReleased: [ReadID] = []
    /// Reads that cannot be confirmed here (leadership lost, no leader); the client retries.
    public var readsFailed: [ReadID] = []
    /// Peers that need a snapshot because the log they lack has been compacted away.
    public var snapshotsNeeded: [ReplicaID] = []
    /// Commands that could not be queued (no known leader, or a queue at its bound);
    /// the client retries, with the same request id, possibly elsewhere.
    public var proposalsDropped: [Command] = []

    public init() {}

    /// Whether `records` must be fsynced before `messages` leave. Only `promised` and
    /// `accepted` records carry an acceptor's vote (or a learned value). A `chosenThrough`
    /// record only caches a fact a majority has already made durable: a replica that loses
    /// it in a crash still has the entries, and learns again from its peers that they were
    /// chosen. So an output with nothing else to persist costs no fsync on the commit path,
    /// and its records reach the disk with the next fsync.
    public var recordsNeedSync: Bool {
        records.contains { record in
            if case .chosenThrough = record { return false }
            return true
        }
    }

    public var isEmpty: Bool {
        records.isEmpty && messages.isEmpty && committed.isEmpty && readsReleased.isEmpty
            && readsFailed.isEmpty && snapshotsNeeded.isEmpty && proposalsDropped.isEmpty
    }

    /// Merges a later output into this one, keeping each list's order.
    public mutating func append(_ other: Output) {
        records.append(contentsOf: other.records)
        messages.append(contentsOf: other.messages)
        committed.append(contentsOf: other.committed)
        readsReleased.append(contentsOf: other.readsReleased)
        readsFailed.append(contentsOf: other.readsFailed)
        snapshotsNeeded.append(contentsOf: other.snapshotsNeeded)
        proposalsDropped.append(contentsOf: other.proposalsDropped)
    }
}

extension Envelope {
    /// A leader's Phase 2a `accept` may leave before the output's records are durable, so
    /// the acceptors' fsyncs overlap the leader's own (as in etcd-raft, where the leader
    /// appends to its log in parallel with replicating). Why this is safe:
    /// - it asks for a vote and carries none: the leader's own vote is a record of the
    ///   same output, and it counts toward a quorum only when the acceptors' `accepted`
    ///   replies are stepped — in a later turn, after this output's fsync (a runtime must
    ///   not step a reply before the fsync of the output that caused it);
    /// - its ballot was promised durably before the `prepare`s of that ballot left, and a
    ///   restarted replica never leads again with a ballot it had before (it campaigns above
    ///   its durable promise), so no slot ever gets two values under one ballot even if the
    ///   leader crashes before its own `accepted` record is durable;
    /// - its `chosenThrough` is a fact a majority has already made durable.
    /// Everything else waits: promises, accepted replies, rejects and acks speak for the
    /// acceptor's durable state, and a `prepare`'s ballot must be durable before anyone sees it.
    public var mayLeaveBeforePersist: Bool {
        if case .accept = message { return true }
        return false
    }
}

/// What drives a replica.
public enum Event: Sendable {
    /// A message from a peer.
    case receive(Envelope)
    /// Client commands to be decided (any replica accepts them).
    case propose([Command])
    /// A linearizable read; answered through `Output.readsReleased` or `readsFailed`.
    case read(ReadID)
    /// Several linearizable reads that share one confirmation round (what a runtime that
    /// batches by loop turn sends).
    case reads([ReadID])
    /// One unit of logical time passed.
    case tick
    /// The state machine's snapshot through `slot` is durable; the log at or below it
    /// may be dropped.
    case compacted(through: Slot)
    /// A snapshot through `slot` received from a peer was installed and made durable;
    /// the learner continues after it.
    case snapshotInstalled(through: Slot)
    /// A planned leader change: if this replica leads, it hands leadership to `target` (or,
    /// if nil, to the peer that has learned the most and was heard from recently).
    case transferLeadership(to: ReplicaID?)
}
