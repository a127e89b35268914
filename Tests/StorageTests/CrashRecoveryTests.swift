import Paxos
import Testing

@testable import Storage
@testable import StorageTools

/// Crash at every write point of a workload, with the simulated disk choosing what of the
/// unsynced writes survives (dropped, whole, torn at a sector, zero-filled).
@Suite("Crash recovery")
struct CrashRecoveryTests {
    static let options = StorageOptions.testing(segmentBytesMax: 4096)

    /// Counts the mutating calls a workload makes when nothing fails.
    private func mutations(of workload: [Step], seed: UInt64) throws -> Int {
        let fileSystem = SimulatedFileSystem(seed: seed)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        for step in workload { try perform(step, on: storage) }
        return fileSystem.mutationCount
    }

    @Test(
        "crash after every write call: acknowledged records survive, nothing is invented, torn is never corrupt",
        arguments: [(UInt64(1), false), (2, false), (3, true), (4, true)])
    func crashAtEveryWritePoint(seed: UInt64, snapshots: Bool) throws {
        let workload = makeWorkload(seed: seed, steps: 45, snapshots: snapshots)
        let total = try mutations(of: workload, seed: seed)
        #expect(total > 40, "seed \(seed): the workload should make many writes")
        var tornTails = 0
        for crashPoint in 1...total {
            let context = "seed \(seed) snapshots \(snapshots) crash after mutation \(crashPoint) of \(total)"
            let fileSystem = SimulatedFileSystem(seed: seed &* 1000 &+ UInt64(crashPoint))
            fileSystem.crashAfterMutations = crashPoint
            var acknowledged = 0
            do {
                let (storage, _) = try ReplicaStorage.open(
                    directory: testDirectory, fileSystem: fileSystem, options: Self.options)
                for step in workload {
                    try perform(step, on: storage)
                    acknowledged += 1
                }
            } catch StorageError.simulatedCrash {
                // The power failed: what was acknowledged must survive.
            }
            fileSystem.crash()

            let before = modelState(after: workload.prefix(acknowledged))
            let candidates = acknowledged < workload.count
                ? possibleStates(before: before, during: workload[acknowledged]) : [before]
            let recovered: RecoveredState
            let storage: ReplicaStorage
            do {
                (storage, recovered) = try ReplicaStorage.open(
                    directory: testDirectory, fileSystem: fileSystem, options: Self.options)
            } catch {
                Issue.record("\(context): recovery threw \(error); crash: \(fileSystem.lastCrashLog)")
                continue
            }
            #expect(candidates.contains(recovered.durable), "\(context): \(recovered.report); \(fileSystem.lastCrashLog)")
            if recovered.report.wal.tornBytesTruncated > 0 { tornTails += 1 }
            if let snapshot = recovered.snapshot {
                #expect(snapshot.stateMachine == stateMachineBody(through: snapshot.through), "\(context)")
                #expect(snapshot.through == recovered.durable.snapshotThrough, "\(context)")
            }

            // The log stays appendable after a cut tail: write more, lose power, recover.
            let more: [Record] = [.promised(Ballot(round: 999, replica: 2)), .chosenThrough(recovered.durable.chosenThrough)]
            try storage.persist(more)
            fileSystem.crash()
            let (_, again) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
            var expected = recovered.durable
            for record in more { expected.apply(record) }
            #expect(again.durable == expected, "\(context): after a second crash")
            #expect(again.report.wal.tornBytesTruncated == 0, "\(context): synced data left no torn tail")
        }
        #expect(tornTails > 0, "seed \(seed): some crashes should have left a torn tail to cut")
    }

    @Test("the simulated crash is deterministic for a seed")
    func deterministic() throws {
        func run() throws -> [String: [UInt8]] {
            let fileSystem = SimulatedFileSystem(seed: 77)
            let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
            fileSystem.crashAfterMutations = 9
            do {
                for step in makeWorkload(seed: 5, steps: 30, snapshots: true) { try perform(step, on: storage) }
            } catch StorageError.simulatedCrash {}
            fileSystem.crash()
            return fileSystem.allFiles()
        }
        #expect(try run() == run())
    }
}
