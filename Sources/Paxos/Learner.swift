/// The learner: knows which prefix of the log is chosen, hands chosen values to the state
/// machine in slot order, and releases linearizable reads once the state machine has
/// applied through their read index.
public struct Learner: Sendable {
    /// Every slot through this one is chosen and its value is in the log (or in the
    /// snapshot). Invariant: `appliedThrough <= chosenThrough`.
    public internal(set) var chosenThrough: Slot
    /// The slots handed to the state machine through `Output.committed` (or covered by
    /// the snapshot it was restored from).
    public internal(set) var appliedThrough: Slot
    /// The chosen prefix last written as a record.
    var chosenThroughPersisted: Slot
    /// Reads with a confirmed read index, waiting for the apply point. Bound:
    /// `pendingReadsMax`.
    var readsAwaitingApply: [(index: Slot, id: ReadID)] = []
    /// Reads sent to the leader for a read index: the leader's ballot and the tick sent.
    var readsAwaitingIndex: [ReadID: (ballot: Ballot, sentAt: Int)] = [:]

    init(durable: DurableState) {
        chosenThrough = max(durable.chosenThrough, durable.snapshotThrough)
        chosenThroughPersisted = chosenThrough
        appliedThrough = durable.snapshotThrough
    }

    var pendingReadCount: Int { readsAwaitingApply.count + readsAwaitingIndex.count }
}
