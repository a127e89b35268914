import Paxos

/// What the simulator needs of a replica's durable storage.
protocol SimulatedDisk: AnyObject {
    /// Appends records; they are lost at a crash until `sync`.
    func append(_ records: [Record])
    /// Makes everything appended durable (one fsync: group commit).
    func sync()
    /// Makes a state-machine snapshot through `slot` durable and drops the log it covers.
    func saveSnapshot(through slot: Slot, stateMachine: [UInt8])
    /// A crash: whatever was not synced is lost (or torn).
    func crash()
    /// Rebuilds what survived.
    func recover() throws -> RecoveredDisk
    /// Bytes the disk holds (for the bounded-disk check).
    var sizeBytes: Int { get }
}

struct RecoveredDisk {
    var durable: DurableState
    var stateMachine: [UInt8]?
    var note: String
}

/// An in-memory model of a disk: records are durable once synced. Used when
/// `SimulationOptions.useStorage` is off, and as the reference the storage-backed runs
/// are compared with.
final class MemoryDisk: SimulatedDisk {
    private var synced: [Record] = []
    private var unsynced: [Record] = []
    private var snapshot: (slot: Slot, bytes: [UInt8])?

    func append(_ records: [Record]) {
        unsynced.append(contentsOf: records)
    }

    func sync() {
        synced.append(contentsOf: unsynced)
        unsynced.removeAll()
    }

    func saveSnapshot(through slot: Slot, stateMachine: [UInt8]) {
        sync()
        snapshot = (slot, stateMachine)
        var promised = Ballot.zero
        var kept: [Record] = []
        for record in synced {
            switch record {
            case .promised(let ballot): promised = max(promised, ballot)
            case .accepted(let recordSlot, _) where recordSlot <= slot: continue
            case .chosenThrough(let through) where through <= slot: continue
            default: kept.append(record)
            }
        }
        synced = (promised == .zero ? [] : [.promised(promised)]) + kept
    }

    func crash() {
        unsynced.removeAll()
    }

    func recover() throws -> RecoveredDisk {
        var state = DurableState()
        if let snapshot { state.compact(through: snapshot.slot) }
        for record in synced { state.apply(record) }
        return RecoveredDisk(durable: state, stateMachine: snapshot?.bytes, note: "records=\(synced.count)")
    }

    var sizeBytes: Int { synced.count * 64 + (snapshot?.bytes.count ?? 0) }
}
