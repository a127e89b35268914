import Paxos
import Testing

@testable import Storage
@testable import StorageTools

@Suite("Snapshots and compaction")
struct SnapshotTests {
    static let segmentBytes = 4096
    static let options = StorageOptions.testing(segmentBytesMax: segmentBytes)

    private func accepted(_ slot: Slot, bytes: Int = 150) -> Record {
        .accepted(
            slot: slot,
            entry: LogEntry(
                ballot: Ballot(round: 2, replica: 1),
                value: .batch([Command([UInt8](repeating: UInt8(truncatingIfNeeded: slot), count: bytes))])))
    }

    @Test("snapshot and recovery: body, header, entries above it")
    func roundTrip() throws {
        let fileSystem = SimulatedFileSystem(seed: 1)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        var model = DurableState()
        for slot in Slot(1)...Slot(30) {
            let records = [accepted(slot), .chosenThrough(slot)]
            try storage.persist(records)
            for record in records { model.apply(record) }
        }
        try storage.saveSnapshot(through: 20, stateMachine: stateMachineBody(through: 20))
        model.compact(through: 20)
        fileSystem.crash()
        let (reopened, recovered) = try ReplicaStorage.open(
            directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.durable == model)
        #expect(recovered.snapshot == RecoveredSnapshot(through: 20, stateMachine: stateMachineBody(through: 20)))
        #expect(recovered.report.snapshotThrough == 20)
        #expect(reopened.snapshotThrough == 20)
        #expect(try fileSystem.listDirectory(testDirectory).filter { $0.hasSuffix(".snap") } == ["snapshot-0000000000000014.snap"])
        // A snapshot at or below the current one is a no-op.
        try reopened.saveSnapshot(through: 10, stateMachine: [1])
        #expect(reopened.snapshotThrough == 20)
    }

    /// The runtime adopts a snapshot on its loop and removes the files it made obsolete in
    /// the background: until then they stay, a recovery in between removes them itself (as
    /// after a crash in the middle of `adopt`), and the cleanup then finds them gone.
    @Test("a deferred cleanup leaves the obsolete files until it runs; a recovery before it finishes the job", arguments: [false, true])
    func deferredCleanup(recoverFirst: Bool) throws {
        let fileSystem = SimulatedFileSystem(seed: 9)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        for slot in Slot(1)...Slot(40) { try storage.persist([accepted(slot), .chosenThrough(slot)]) }
        try storage.saveSnapshot(through: 20, stateMachine: stateMachineBody(through: 20))
        for slot in Slot(41)...Slot(80) { try storage.persist([accepted(slot), .chosenThrough(slot)]) }
        let pending = try #require(try storage.beginSnapshot(through: 70))
        try pending.write(stateMachine: stateMachineBody(through: 70))
        let before = try fileSystem.listDirectory(testDirectory)
        let cleanup = try storage.adoptDeferringCleanup(pending)
        #expect(cleanup.paths.contains { $0.hasSuffix(".snap") }, "the older snapshot is obsolete")
        #expect(cleanup.paths.count >= 2, "covered segments are obsolete: \(cleanup.paths)")
        #expect(try fileSystem.listDirectory(testDirectory) == before, "nothing is removed before the cleanup runs")
        #expect(!storage.segmentNames.contains { name in cleanup.paths.contains { $0.hasSuffix(name) } })
        if recoverFirst {
            try storage.close()
            let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
            #expect(recovered.snapshot?.through == 70)
            #expect(recovered.durable.chosenThrough == 80)
        }
        try cleanup.run()
        for path in cleanup.paths { #expect(!fileSystem.fileExists(path), "\(path) left behind") }
        fileSystem.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.snapshot?.through == 70)
        #expect(recovered.durable.chosenThrough == 80)
        #expect(try fileSystem.listDirectory(testDirectory).filter { $0.hasSuffix(".snap") }.count == 1)
    }

    /// A snapshot written off the driver's thread records the promise as of its start; a
    /// promise persisted while it was being written lands in a segment whose accepted slots
    /// it covers (re-accepted old slots). Neither adoption nor a recovery that finds the
    /// snapshot un-adopted may remove that segment: the acceptor would forget its promise.
    @Test("a promise persisted while a background snapshot is written survives adoption and crashes", arguments: [false, true])
    func promiseDuringBackgroundSnapshot(crashBeforeAdoption: Bool) throws {
        let fileSystem = SimulatedFileSystem(seed: 5)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        try storage.persist([.promised(Ballot(round: 2, replica: 1))])
        for slot in Slot(1)...Slot(60) { try storage.persist([accepted(slot), .chosenThrough(slot)]) }
        let pending = try #require(try storage.beginSnapshot(through: 60))
        // While it is written: a higher promise, then old slots accepted again, enough to
        // seal the promise's segment.
        let later = Ballot(round: 7, replica: 3)
        try storage.persist([.promised(later)])
        for slot in Slot(1)...Slot(40) { try storage.persist([accepted(slot)]) }
        try pending.write(stateMachine: stateMachineBody(through: 60))
        if !crashBeforeAdoption { try storage.adopt(pending) }
        fileSystem.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.snapshot?.through == 60)
        #expect(recovered.durable.promised == later, "the acceptor forgot the promise made during the snapshot")
        // Recovery finished the adoption (removing what the snapshot covers): still there after
        // the next crash.
        fileSystem.crash()
        let (_, again) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(again.durable.promised == later, "the promise was lost by the recovery that adopted the snapshot")
    }

    /// The promise lives only in `promised` records, which carry no slot: compaction must
    /// not lose it (the snapshot header carries it).
    @Test("the promised ballot and the chosen prefix survive compaction")
    func promisedSurvivesCompaction() throws {
        let fileSystem = SimulatedFileSystem(seed: 2)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        let promise = Ballot(round: 9, replica: 3)
        try storage.persist([.promised(promise), .chosenThrough(0)])
        for slot in Slot(1)...Slot(100) { try storage.persist([accepted(slot)]) }
        try storage.persist([.chosenThrough(100)])
        let firstSegment = storage.segmentNames[0]
        try storage.saveSnapshot(through: 100, stateMachine: stateMachineBody(through: 100))
        #expect(!storage.segmentNames.contains(firstSegment), "the segment holding the promise was compacted")
        fileSystem.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.durable.promised == promise)
        #expect(recovered.durable.chosenThrough == 100)
        #expect(recovered.durable.entries.isEmpty)
    }

    @Test("segments with an accepted slot above the snapshot are kept")
    func keepsUncoveredSegments() throws {
        let fileSystem = SimulatedFileSystem(seed: 3)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        // An accept far ahead in the first segment pins it and every later one.
        try storage.persist([accepted(500)])
        for slot in Slot(1)...Slot(80) { try storage.persist([accepted(slot)]) }
        let segmentsBefore = storage.segmentNames
        try storage.saveSnapshot(through: 80, stateMachine: [1, 2, 3])
        #expect(storage.segmentNames == segmentsBefore)
        fileSystem.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.durable.entries.keys.sorted() == [500])
    }

    @Test("snapshots and compaction keep the directory bounded under a long write loop")
    func diskBound() throws {
        let fileSystem = SimulatedFileSystem(seed: 4)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        let snapshotEvery: Slot = 50
        let body = stateMachineBody(through: 0, bytes: 5000)
        let recordBytes = WALFrame.encode(accepted(1)).count + WALFrame.encode(.chosenThrough(1)).count
        // One snapshot, the segments holding slots above it, the active one, plus one
        // more for the snapshot interval's records.
        let slotsBytes = Int(snapshotEvery) * recordBytes
        let segmentsMax = 2 + (slotsBytes + Self.segmentBytes - 1) / Self.segmentBytes
        let bound = UInt64(SnapshotHeader.headerBytes + body.count + segmentsMax * Self.segmentBytes)
        var model = DurableState()
        var usageMax: UInt64 = 0
        for slot in Slot(1)...Slot(3000) {
            let records = [accepted(slot), .chosenThrough(slot)]
            try storage.persist(records)
            for record in records { model.apply(record) }
            if slot % snapshotEvery == 0 {
                try storage.saveSnapshot(through: slot, stateMachine: body)
                model.compact(through: slot)
            }
            let usage = storage.diskUsageBytes
            usageMax = max(usageMax, usage)
            #expect(usage <= bound, "slot \(slot): \(usage) bytes on disk, bound \(bound)")
        }
        let files = try fileSystem.listDirectory(testDirectory)
        #expect(files.count <= segmentsMax + 1, "\(files)")
        #expect(files.filter { $0.hasSuffix(".snap") }.count == 1)
        fileSystem.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.durable == model)
        #expect(usageMax > 0)
    }

    @Test("a corrupt snapshot is refused with one line naming it")
    func corruptSnapshot() throws {
        let fileSystem = SimulatedFileSystem(seed: 5)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        try storage.persist([accepted(1), .chosenThrough(1)])
        try storage.saveSnapshot(through: 1, stateMachine: stateMachineBody(through: 1))
        let path = joinPath(testDirectory, "snapshot-0000000000000001.snap")
        for offset in [3, 20, 61, SnapshotHeader.headerBytes + 100] {
            fileSystem.flipBit(path: path, offset: offset, bit: 1)
            let filesBefore = fileSystem.allFiles()
            let error = try #require(throws: StorageError.self) {
                try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
            }
            guard case .corruptSnapshot(let file, _, _, _) = error else {
                Issue.record("offset \(offset): expected corruptSnapshot, got \(error)")
                continue
            }
            #expect(file == path)
            #expect(!error.description.contains("\n"))
            #expect(error.description.contains("corrupt"))
            #expect(error.description.contains(StorageError.corruptionAdvice))
            #expect(fileSystem.allFiles() == filesBefore)
            fileSystem.flipBit(path: path, offset: offset, bit: 1)
        }
        #expect(throws: Never.self) {
            try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        }
    }

    @Test("leftover temporary files and older snapshots are cleaned at recovery")
    func interruptedSave() throws {
        let fileSystem = SimulatedFileSystem(seed: 6)
        let (storage, _) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        try storage.persist([accepted(1), .chosenThrough(1)])
        try storage.saveSnapshot(through: 1, stateMachine: [1])
        // A save that crashed after writing its temporary file.
        let temporary = try fileSystem.openFile(joinPath(testDirectory, "snapshot-0000000000000002.snap.tmp"), create: true)
        try temporary.write([9, 9, 9], at: 0)
        try temporary.sync()
        try fileSystem.syncDirectory(testDirectory)
        let (_, recovered) = try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: Self.options)
        #expect(recovered.report.temporaryFilesRemoved == 1)
        #expect(recovered.snapshot?.through == 1)
        #expect(try !fileSystem.listDirectory(testDirectory).contains { $0.hasSuffix(".tmp") })
    }

    @Test("chunked snapshot transfer to a lagging peer")
    func chunkedTransfer() throws {
        let leaderFS = SimulatedFileSystem(seed: 7)
        let (leader, _) = try ReplicaStorage.open(directory: "/leader", fileSystem: leaderFS, options: Self.options)
        try leader.persist([.promised(Ballot(round: 50, replica: 1))])
        for slot in Slot(1)...Slot(60) { try leader.persist([accepted(slot), .chosenThrough(slot)]) }
        var random = TestRandom(seed: 7)
        let body = random.bytes(SnapshotReader.chunkBytesMax * 2 + 12345)
        try leader.saveSnapshot(through: 60, stateMachine: body)
        let reader = try #require(try leader.snapshotReader())
        #expect(reader.through == 60)
        #expect(reader.totalBytes == UInt64(SnapshotHeader.headerBytes + body.count))

        let followerFS = SimulatedFileSystem(seed: 8)
        let (follower, _) = try ReplicaStorage.open(directory: "/follower", fileSystem: followerFS, options: Self.options)
        let ownPromise = Ballot(round: 3, replica: 2)
        try follower.persist([.promised(ownPromise)])
        for slot in Slot(1)...Slot(40) { try follower.persist([accepted(slot)]) }
        try follower.persist([accepted(70)])  // above the snapshot: must survive
        let installer = try follower.beginSnapshotInstall(through: reader.through, totalBytes: reader.totalBytes)
        var offset: UInt64 = 0
        var chunks = 0
        while offset < reader.totalBytes {
            let chunk = try reader.readChunk(at: offset)
            #expect(chunk.count <= SnapshotReader.chunkBytesMax)
            #expect(throws: StorageError.self) { try installer.write(chunk, at: offset + 1) }
            try installer.write(chunk, at: offset)
            offset += UInt64(chunk.count)
            chunks += 1
        }
        #expect(chunks == 3)
        #expect(try reader.readChunk(at: reader.totalBytes).isEmpty)
        let installed = try installer.finish()
        #expect(installed == body)
        #expect(follower.snapshotThrough == 60)
        #expect(follower.promised == ownPromise, "a peer's promise is never adopted")

        followerFS.crash()
        let (_, recovered) = try ReplicaStorage.open(directory: "/follower", fileSystem: followerFS, options: Self.options)
        #expect(recovered.snapshot == RecoveredSnapshot(through: 60, stateMachine: body))
        #expect(recovered.durable.promised == ownPromise)
        #expect(recovered.durable.snapshotThrough == 60)
        #expect(recovered.durable.chosenThrough == 60)
        #expect(recovered.durable.entries.keys.sorted() == [70])
    }

    @Test("a damaged, short, stale or out-of-order transfer is refused")
    func badTransfers() throws {
        let leaderFS = SimulatedFileSystem(seed: 9)
        let (leader, _) = try ReplicaStorage.open(directory: "/leader", fileSystem: leaderFS, options: Self.options)
        try leader.persist([accepted(1), .chosenThrough(10)])
        try leader.saveSnapshot(through: 10, stateMachine: stateMachineBody(through: 10))
        let reader = try #require(try leader.snapshotReader())
        let file = try reader.readChunk(at: 0)

        let followerFS = SimulatedFileSystem(seed: 10)
        let (follower, _) = try ReplicaStorage.open(directory: "/follower", fileSystem: followerFS, options: Self.options)

        // A flipped bit in transit.
        var damaged = file
        damaged[SnapshotHeader.headerBytes + 7] ^= 0x10
        var installer = try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count))
        try installer.write(damaged, at: 0)
        let error = try #require(throws: StorageError.self) { try installer.finish() }
        guard case .corruptSnapshot = error else {
            Issue.record("expected corruptSnapshot, got \(error)")
            return
        }
        #expect(follower.snapshotThrough == 0)

        // Short.
        installer = try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count))
        try installer.write(Array(file[0..<100]), at: 0)
        #expect(throws: StorageError.self) { try installer.finish() }
        // Past the end, and too small to hold a header.
        #expect(throws: StorageError.self) { try installer.write(file, at: 100) }
        #expect(throws: StorageError.self) { try follower.beginSnapshotInstall(through: 10, totalBytes: 10) }
        // Superseded by a newer install.
        let old = try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count))
        try old.write(file, at: 0)
        _ = try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count))
        #expect(throws: StorageError.self) { try old.finish() }

        // A good one, then the same again is stale.
        installer = try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count))
        try installer.write(file, at: 0)
        #expect(try installer.finish() == stateMachineBody(through: 10))
        #expect(throws: StorageError.self) { try follower.beginSnapshotInstall(through: 10, totalBytes: UInt64(file.count)) }
    }
}
