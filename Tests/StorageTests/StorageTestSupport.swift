import Paxos

@testable import Storage

/// SplitMix64 (the core's) for the tests' own choices; every test prints its seed on failure.
typealias TestRandom = SplitMix64

extension SplitMix64 {
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) } }
}

/// One step of a storage workload.
enum Step {
    case persist([Record])
    case snapshot(Slot)
}

/// The state machine body saved with a snapshot through `slot`: recognizable and
/// slot-specific, so a mixed-up snapshot is caught.
func stateMachineBody(through slot: Slot, bytes: Int = 700) -> [UInt8] {
    (0..<bytes).map { UInt8(truncatingIfNeeded: Int(slot) &* 31 &+ $0) }
}

/// A seeded workload: promises, accepts of increasing slots (sometimes re-accepting the
/// previous one), chosen prefixes, and snapshots of the chosen prefix when `snapshots`.
func makeWorkload(seed: UInt64, steps: Int, snapshots: Bool, commandBytesMax: Int = 300) -> [Step] {
    var random = TestRandom(seed: seed)
    var workload: [Step] = []
    var nextSlot: Slot = 1
    var round: UInt64 = 1
    var chosen: Slot = 0
    var snapshotThrough: Slot = 0
    for _ in 0..<steps {
        if snapshots && chosen > snapshotThrough && random.int(0...7) == 0 {
            workload.append(.snapshot(chosen))
            snapshotThrough = chosen
            continue
        }
        var batch: [Record] = []
        for _ in 0..<random.int(1...4) {
            let roll = random.int(0...99)
            if roll < 15 {
                round += UInt64(random.int(0...1))
                batch.append(.promised(Ballot(round: round, replica: ReplicaID(random.int(1...3)))))
            } else if roll < 80 {
                let slot = nextSlot > 1 && random.int(0...9) == 0 ? nextSlot - 1 : nextSlot
                if slot == nextSlot { nextSlot += 1 }
                let commands = (0..<random.int(0...3)).map { _ in Command(random.bytes(random.int(0...commandBytesMax))) }
                let value: Value = commands.isEmpty ? .noop : .batch(commands)
                batch.append(.accepted(slot: slot, entry: LogEntry(ballot: Ballot(round: round, replica: 1), value: value)))
            } else if nextSlot > 1 {
                chosen = max(chosen, nextSlot - 1 - Slot(random.int(0...1)))
                batch.append(.chosenThrough(chosen))
            }
        }
        if !batch.isEmpty { workload.append(.persist(batch)) }
    }
    return workload
}

/// The in-memory model of what storage must recover.
func modelState(after steps: some Sequence<Step>) -> DurableState {
    var state = DurableState()
    for step in steps {
        apply(step, to: &state)
    }
    return state
}

func apply(_ step: Step, to state: inout DurableState) {
    switch step {
    case .persist(let records):
        for record in records { state.apply(record) }
    case .snapshot(let slot):
        state.compact(through: slot)
    }
}

/// Every state a crash during `step` may leave: none, some or all of its records, or
/// the snapshot saved or not.
func possibleStates(before state: DurableState, during step: Step) -> [DurableState] {
    var states = [state]
    switch step {
    case .persist(let records):
        var partial = state
        for record in records {
            partial.apply(record)
            states.append(partial)
        }
    case .snapshot(let slot):
        var compacted = state
        compacted.compact(through: slot)
        states.append(compacted)
    }
    return states
}

func perform(_ step: Step, on storage: ReplicaStorage) throws {
    switch step {
    case .persist(let records):
        try storage.persist(records)
    case .snapshot(let slot):
        try storage.saveSnapshot(through: slot, stateMachine: stateMachineBody(through: slot))
    }
}

let testDirectory = "/data/r1"
