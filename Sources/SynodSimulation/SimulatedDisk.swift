import Paxos
import Storage

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

/// A replica's disk through the real `Storage` module (write-ahead log, snapshots,
/// recovery) over a `SimulatedFileSystem` that loses unsynced data and tears writes at a
/// crash. A restart runs the same recovery a real replica runs.
final class StorageDisk: SimulatedDisk {
    let fileSystem: SimulatedFileSystem
    let directory: String
    private var storage: ReplicaStorage?
    /// Records appended but not yet handed to the storage: what a runtime that never
    /// fsyncs (the injected `no-fsync` bug) leaves in the page cache.
    private var buffered: [Record] = []

    init(seed: UInt64, replica: ReplicaID) {
        fileSystem = SimulatedFileSystem(seed: seed)
        directory = "/data/r\(replica)"
        do {
            storage = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, options: Self.options).0
        } catch {
            preconditionFailure("a new simulated disk cannot be opened: \(error)")
        }
    }

    /// Small segments, so that compaction and segment rollover happen within a short run.
    static let options = StorageOptions.testing(segmentBytesMax: 16 * 1024)

    func append(_ records: [Record]) {
        buffered.append(contentsOf: records)
    }

    func sync() {
        guard !buffered.isEmpty else { return }
        do {
            try storage!.persist(buffered)
        } catch {
            preconditionFailure("simulated storage failed: \(error)")
        }
        buffered.removeAll()
    }

    func saveSnapshot(through slot: Slot, stateMachine: [UInt8]) {
        sync()
        do {
            try storage!.saveSnapshot(through: slot, stateMachine: stateMachine)
        } catch {
            preconditionFailure("simulated snapshot failed: \(error)")
        }
    }

    func crash() {
        buffered.removeAll()
        storage = nil
        fileSystem.crash()
    }

    func recover() throws -> RecoveredDisk {
        let (storage, recovered) = try ReplicaStorage.open(
            directory: directory, fileSystem: fileSystem, options: Self.options)
        self.storage = storage
        return RecoveredDisk(
            durable: recovered.durable, stateMachine: recovered.snapshot?.stateMachine,
            note: "\(recovered.report)")
    }

    var sizeBytes: Int { Int(storage?.diskUsageBytes ?? 0) }
}
