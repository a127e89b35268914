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
/// 1. append `records` to the write-ahead log and **fsync** them;
/// 2. only then send `messages` (a promise or an accepted reply that left before its
///    record was durable could be forgotten by a crash, and Paxos would be unsafe);
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
}
