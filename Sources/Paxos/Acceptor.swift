/// The acceptor: the memory of Paxos. It promises ballots (Phase 1b) and accepts values
/// (Phase 2b), and everything it promises or accepts is persisted before it answers —
/// the rule that keeps Paxos safe across crashes.
///
/// It also holds the replica's log: values it accepted and chosen values its learner was
/// taught. A taught value is stored under `Ballot.chosen`, which no proposer can outrank
/// (Invariant: an entry under `Ballot.chosen` holds the value chosen in its slot).
public struct Acceptor: Sendable {
    /// The highest ballot promised. Invariant: never decreases while the process lives,
    /// and is durable before any message that depends on it leaves.
    public private(set) var promised: Ballot
    /// Entries above `snapshotThrough`, by slot.
    public private(set) var entries: [Slot: LogEntry]
    /// The slot the state machine's snapshot covers; entries at or below it are gone.
    public private(set) var snapshotThrough: Slot
    /// The highest slot with an entry (or `snapshotThrough`).
    public private(set) var highestSlot: Slot
    /// The lowest slot whose entry is still held. Compaction keeps a tail of chosen
    /// entries below the snapshot point, so that learners only slightly behind get `learn`
    /// messages rather than a whole snapshot. Invariant: every slot from here through the
    /// learner's chosen prefix has an entry.
    public private(set) var firstRetainedSlot: Slot

    init(durable: DurableState) {
        promised = durable.promised
        entries = durable.entries
        snapshotThrough = durable.snapshotThrough
        highestSlot = max(durable.snapshotThrough, durable.entries.keys.max() ?? 0)
        firstRetainedSlot = durable.snapshotThrough + 1
    }

    /// The seed's acceptor failure: the acceptor loses its volatile state — its promise and
    /// every accepted value not known chosen. Chosen values through `chosenThrough` stay:
    /// they are the learner's knowledge, which the replica's learner keeps using.
    mutating func forgetVolatileState(keepingChosenThrough chosenThrough: Slot) {
        promised = .zero
        entries = entries.filter { $0.key <= chosenThrough }
    }

    /// Recovery after an acceptor failure: the state rebuilt from the write-ahead log
    /// (the promise, every accepted or learned entry) replaces what is in memory, merged
    /// with chosen values learned meanwhile (also durable, also in `durable`).
    mutating func restore(from durable: DurableState) {
        promised = max(promised, durable.promised)
        for (slot, entry) in durable.entries where slot > snapshotThrough {
            if let existing = entries[slot], existing.ballot == .chosen { continue }
            entries[slot] = entry
            highestSlot = max(highestSlot, slot)
        }
    }

    /// What a prepare leads to.
    enum PrepareDecision: Equatable {
        /// Promise: persist `.promised(ballot)` (when it rose), then reply with the entries.
        case promise(raised: Bool, entries: [SlotEntry])
        /// Refuse: an equal-or-higher ballot was promised to someone else.
        case reject(promised: Ballot)
    }

    /// Phase 1b. "If an acceptor receives a prepare request with number n greater than
    /// that of any prepare request to which it has already responded, then it responds
    /// with a promise not to accept any more proposals numbered less than n and with the
    /// highest-numbered proposal (if any) that it has accepted." (Paxos Made Simple, 2.2)
    /// A repeated prepare of the promised ballot is answered again (messages duplicate).
    mutating func prepare(ballot: Ballot, fromSlot: Slot) -> PrepareDecision {
        precondition(ballot != .zero, "a prepare never carries the zero ballot")
        guard ballot >= promised else { return .reject(promised: promised) }
        let raised = ballot > promised
        promised = ballot
        let found = entries.keys.filter { $0 >= fromSlot }.sorted().map {
            SlotEntry(slot: $0, entry: entries[$0]!)
        }
        return .promise(raised: raised, entries: found)
    }

    /// Phase 2b. "If an acceptor receives an accept request for a proposal numbered n, it
    /// accepts the proposal unless it has already responded to a prepare request having
    /// a number greater than n." Returns the records to persist before replying, or nil
    /// to reject.
    mutating func accept(ballot: Ballot, slot: Slot, value: Value) -> [Record]? {
        precondition(slot >= 1, "slots start at 1")
        guard ballot >= promised else { return nil }
        var records: [Record] = []
        if ballot > promised {
            promised = ballot
            records.append(.promised(ballot))
        }
        guard slot > snapshotThrough else { return records }  // chosen and compacted long ago
        if let existing = entries[slot], existing.ballot == .chosen {
            // Known chosen: by Paxos safety any proposal for this slot carries that value.
            // (Not asserted here: the simulator's deliberately broken acceptors must reach
            // its agreement checker, which compares every replica's applied values.)
            return records
        }
        if let existing = entries[slot], existing.ballot == ballot, existing.value == value {
            // A proposer sends one value per slot per ballot; a duplicate changes nothing.
            return records
        }
        let entry = LogEntry(ballot: ballot, value: value)
        entries[slot] = entry
        highestSlot = max(highestSlot, slot)
        records.append(.accepted(slot: slot, entry: entry))
        return records
    }

    /// Stores a value a learner was taught is chosen. Returns the record to persist, or
    /// nil when the slot is compacted or already known chosen.
    mutating func learnChosen(slot: Slot, value: Value) -> Record? {
        guard slot > snapshotThrough else { return nil }
        if let existing = entries[slot], existing.ballot == .chosen {
            return nil  // already known; the agreement checker catches a conflicting value
        }
        let entry = LogEntry(ballot: .chosen, value: value)
        entries[slot] = entry
        highestSlot = max(highestSlot, slot)
        return .accepted(slot: slot, entry: entry)
    }

    /// Raises the promise without a prepare (a candidate promises its own ballot).
    mutating func promise(_ ballot: Ballot) -> Record? {
        guard ballot > promised else { return nil }
        promised = ballot
        return .promised(ballot)
    }

    func entry(at slot: Slot) -> LogEntry? { entries[slot] }

    /// Drops entries a durable snapshot through `slot` covers, but for the last
    /// `tailSlots` of them (a tail for catching up slightly lagging learners).
    mutating func compact(through slot: Slot, keepingTail tailSlots: Int) {
        guard slot > snapshotThrough else { return }
        snapshotThrough = slot
        let keepFrom = slot >= Slot(tailSlots) ? slot - Slot(tailSlots) + 1 : 1
        firstRetainedSlot = max(firstRetainedSlot, keepFrom)
        entries = entries.filter { $0.key >= firstRetainedSlot }
        highestSlot = max(highestSlot, slot)
    }
}

extension Ballot {
    /// Marks an entry a learner knows is chosen. It outranks every real ballot, which is
    /// safe: a proposer that adopts it proposes the chosen value, as Paxos requires.
    public static let chosen = Ballot(round: .max, replica: .max)
}
