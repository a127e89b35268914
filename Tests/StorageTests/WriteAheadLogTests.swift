import ByteCodec
import Paxos
import Testing

@testable import Storage
@testable import StorageTools

@Suite("Write-ahead log")
struct WriteAheadLogTests {
    static let options = StorageOptions.testing(segmentBytesMax: 4096)

    private func open(_ fileSystem: SimulatedFileSystem, options: StorageOptions = Self.options) throws
        -> (ReplicaStorage, RecoveredState)
    {
        try ReplicaStorage.open(directory: testDirectory, fileSystem: fileSystem, options: options)
    }

    private func segmentPaths(_ fileSystem: SimulatedFileSystem) throws -> [String] {
        try fileSystem.listDirectory(testDirectory).filter { $0.hasPrefix("wal-") }.map { joinPath(testDirectory, $0) }
    }

    private func accepted(_ slot: Slot, bytes: Int = 100, fill: UInt8 = 0x5A) -> Record {
        .accepted(
            slot: slot,
            entry: LogEntry(
                ballot: Ballot(round: 1, replica: 1),
                value: .batch([Command([UInt8](repeating: fill, count: bytes))])))
    }

    @Test("round trip across many segments, with group commit of one fdatasync per persist")
    func roundTrip() throws {
        let fileSystem = SimulatedFileSystem(seed: 1)
        let (storage, first) = try open(fileSystem)
        #expect(first.durable == DurableState())
        #expect(first.snapshot == nil)
        let workload = makeWorkload(seed: 11, steps: 120, snapshots: false)
        for step in workload {
            let syncsBefore = fileSystem.fileSyncCount
            let directorySyncsBefore = fileSystem.directorySyncCount
            let segmentsBefore = storage.segmentNames.count
            try perform(step, on: storage)
            let rolled = storage.segmentNames.count - segmentsBefore
            // Group commit: one fdatasync per persist (the closed segment was synced by the
            // previous persist), and one directory fsync when a segment was started.
            #expect(fileSystem.fileSyncCount - syncsBefore == 1)
            #expect(fileSystem.directorySyncCount - directorySyncsBefore == min(rolled, 1))
        }
        #expect(storage.segmentNames.count > 3, "small segments must roll")
        fileSystem.crash()
        let (_, recovered) = try open(fileSystem)
        #expect(recovered.durable == modelState(after: workload))
        #expect(recovered.report.wal.tornBytesTruncated == 0)
        #expect(recovered.report.wal.recordsReplayed == workload.reduce(0) {
            if case .persist(let records) = $1 { return $0 + records.count }
            return $0
        })
    }

    @Test("segment names carry the first sequence number in 16 hex digits")
    func segmentNames() throws {
        #expect(WriteAheadLog.segmentName(firstSequence: 0x1A) == "wal-000000000000001a.log")
        #expect(WriteAheadLog.parseSegmentName("wal-000000000000001a.log") == 0x1A)
        #expect(WriteAheadLog.parseSegmentName("wal-000000000000001A.log") == nil)
        #expect(WriteAheadLog.parseSegmentName("wal-1a.log") == nil)
        let fileSystem = SimulatedFileSystem(seed: 2)
        let (storage, _) = try open(fileSystem)
        for slot in 1...60 { try storage.persist([accepted(Slot(slot))]) }
        var expectedFirst: UInt64 = 1
        for name in storage.segmentNames {
            #expect(WriteAheadLog.parseSegmentName(name) == expectedFirst)
            let scan = SegmentScan.scan(
                try fileSystem.readFile(joinPath(testDirectory, name)), frameBytesMax: WriteAheadLog.recordBytesMax)
            expectedFirst += UInt64(scan.records.count)
        }
        #expect(expectedFirst == 61)
    }

    @Test("the decision table: torn only at the end of the last segment")
    func decisionTable() {
        #expect(DamageVerdict.decide(isLastSegment: true, validFrameAfter: false) == .tornTail)
        #expect(DamageVerdict.decide(isLastSegment: true, validFrameAfter: true) == .corrupt)
        #expect(DamageVerdict.decide(isLastSegment: false, validFrameAfter: false) == .corrupt)
        #expect(DamageVerdict.decide(isLastSegment: false, validFrameAfter: true) == .corrupt)
    }

    @Test("a last record torn at a sector boundary is cut, and the log goes on")
    func tornLastSector() throws {
        let fileSystem = SimulatedFileSystem(seed: 3)
        let options = StorageOptions.testing(segmentBytesMax: 64 * 1024)
        let (storage, _) = try open(fileSystem, options: options)
        let first = accepted(1, bytes: 300)
        let last = accepted(2, bytes: 2000, fill: 0x77)
        try storage.persist([first])
        try storage.persist([last])
        let path = try segmentPaths(fileSystem)[0]
        let lastOffset = WALFrame.encode(first).count
        let lastBytes = WALFrame.encode(last).count
        // Keep the sectors before the tear, lose the rest: the last sector never arrived.
        let tear = (lastOffset / 512 + 2) * 512
        fileSystem.overwrite(path: path, offset: tear, bytes: [UInt8](repeating: 0, count: lastOffset + lastBytes - tear))

        let (reopened, recovered) = try open(fileSystem, options: options)
        var expected = DurableState()
        expected.apply(first)
        #expect(recovered.durable == expected)
        #expect(recovered.report.wal.tornBytesTruncated == tear - lastOffset)
        #expect(recovered.report.wal.tornOffset == UInt64(lastOffset))
        #expect(recovered.report.wal.tornFile == path)
        #expect(recovered.report.description.contains("cut a torn tail of \(tear - lastOffset) bytes"))

        let next = accepted(3, bytes: 50)
        try reopened.persist([next])
        fileSystem.crash()
        let (_, again) = try open(fileSystem, options: options)
        expected.apply(next)
        #expect(again.durable == expected)
        #expect(again.report.wal.tornBytesTruncated == 0)
    }

    @Test("a zero-filled tail is a clean end")
    func zeroFilledTail() throws {
        let fileSystem = SimulatedFileSystem(seed: 4)
        let (storage, _) = try open(fileSystem)
        let first = accepted(1)
        let last = accepted(2)
        try storage.persist([first])
        try storage.persist([last])
        let path = try segmentPaths(fileSystem)[0]
        let offset = WALFrame.encode(first).count
        fileSystem.overwrite(path: path, offset: offset, bytes: [UInt8](repeating: 0, count: WALFrame.encode(last).count))
        let (_, recovered) = try open(fileSystem)
        var expected = DurableState()
        expected.apply(first)
        #expect(recovered.durable == expected)
        #expect(recovered.report.wal.tornBytesTruncated == 0)
        #expect(recovered.report.wal.tornFile == nil)
    }

    /// A flipped bit anywhere is either cut as a torn tail (only when it is in the last
    /// record, or in the zero-filled space after it) or refused as corruption with the
    /// files untouched; the recovered state is never wrong.
    @Test("bit flips at random offsets are always detected", arguments: Array(UInt64(1)...UInt64(6)))
    func bitFlips(seed: UInt64) throws {
        var random = TestRandom(seed: seed)
        let workload = makeWorkload(seed: seed + 100, steps: 40, snapshots: false)
        var records: [Record] = []
        for case .persist(let batch) in workload { records += batch }
        var corruptCount = 0
        var tornCount = 0
        for trial in 0..<60 {
            let fileSystem = SimulatedFileSystem(seed: seed)
            let (storage, _) = try open(fileSystem)
            for step in workload { try perform(step, on: storage) }
            let segments = try segmentPaths(fileSystem)
            // Two flips in three land in the last segment, where both verdicts are possible.
            let segmentIndex = trial % 3 == 0 ? random.int(0...segments.count - 1) : segments.count - 1
            let path = segments[segmentIndex]
            let bytes = try fileSystem.readFile(path)
            let scan = SegmentScan.scan(bytes, frameBytesMax: WriteAheadLog.recordBytesMax)
            // Half the flips land in records, half anywhere (mostly the zero-filled tail).
            let offset = trial % 2 == 0 ? random.int(0...scan.validEnd - 1) : random.int(0...bytes.count - 1)
            let bit = random.int(0...7)
            let context = "seed \(seed) trial \(trial) \(path) offset \(offset) bit \(bit)"
            fileSystem.flipBit(path: path, offset: offset, bit: bit)
            let filesBefore = fileSystem.allFiles()

            let isLastSegment = segmentIndex == segments.count - 1
            let lastRecordOffset = scan.validEnd - WALFrame.encode(records.last!).count
            do {
                let (_, recovered) = try open(fileSystem)
                #expect(isLastSegment, "\(context): damage in a non-last segment was accepted")
                if offset >= scan.validEnd {
                    #expect(recovered.durable == modelState(after: workload), "\(context)")
                } else {
                    #expect(offset >= lastRecordOffset, "\(context): damage before the last record was cut")
                    var expected = DurableState()
                    for record in records.dropLast() { expected.apply(record) }
                    #expect(recovered.durable == expected, "\(context)")
                }
                #expect(recovered.report.wal.tornBytesTruncated > 0, "\(context)")
                tornCount += 1
            } catch let error as StorageError {
                guard case .corruptRecord = error else {
                    Issue.record("\(context): unexpected \(error)")
                    continue
                }
                #expect(fileSystem.allFiles() == filesBefore, "\(context): refused recovery must change nothing")
                corruptCount += 1
            }
        }
        #expect(corruptCount > 0 && tornCount > 0, "seed \(seed): both verdicts should occur")
    }

    @Test("corruption in the middle is refused with one exact line, files untouched")
    func corruptInTheMiddle() throws {
        let fileSystem = SimulatedFileSystem(seed: 5)
        let (storage, _) = try open(fileSystem)
        let records = [accepted(1), accepted(2), accepted(3)]
        try storage.persist(records)
        let path = try segmentPaths(fileSystem)[0]
        let secondOffset = WALFrame.encode(records[0]).count
        let payloadOffset = secondOffset + WALFrame.headerBytes + 5
        let frame = WALFrame.encode(records[1])
        let expectedCRC = WALFrame.readUInt32(frame, 4)
        fileSystem.flipBit(path: path, offset: payloadOffset, bit: 3)
        var damaged = Array(frame[WALFrame.headerBytes...])
        damaged[5] ^= 1 << 3
        let actualCRC = CRC32C.checksum(damaged)
        let filesBefore = fileSystem.allFiles()

        let error = try #require(throws: StorageError.self) { try open(fileSystem) }
        #expect(error == .corruptRecord(file: path, offset: UInt64(secondOffset), expectedCRC: expectedCRC, actualCRC: actualCRC))
        let message = error.description
        #expect(
            message == "corrupt write-ahead log record in \(path) at offset \(secondOffset): "
                + "expected CRC32C \(hex(expectedCRC)), actual \(hex(actualCRC)); "
                + "remove this replica's data directory and restart it to catch up from its peers")
        #expect(!message.contains("\n"))
        #expect(message.contains("corrupt"))
        #expect(fileSystem.allFiles() == filesBefore)
        // Refusing again gives the same answer: nothing was repaired behind our back.
        #expect(throws: StorageError.self) { try open(fileSystem) }
    }

    @Test("damage in a non-last segment is corruption even at that segment's end")
    func corruptNonLastSegment() throws {
        let fileSystem = SimulatedFileSystem(seed: 6)
        let (storage, _) = try open(fileSystem)
        for slot in 1...80 { try storage.persist([accepted(Slot(slot))]) }
        let segments = try segmentPaths(fileSystem)
        #expect(segments.count >= 2)
        let bytes = try fileSystem.readFile(segments[0])
        let scan = SegmentScan.scan(bytes, frameBytesMax: WriteAheadLog.recordBytesMax)
        fileSystem.flipBit(path: segments[0], offset: scan.validEnd - 1)
        let error = try #require(throws: StorageError.self) { try open(fileSystem) }
        guard case .corruptRecord(let file, _, _, _) = error else {
            Issue.record("expected corruptRecord, got \(error)")
            return
        }
        #expect(file == segments[0])
    }

    @Test("a new segment whose directory was not fsynced vanishes at a crash; the WAL fsyncs it")
    func directoryFsync() throws {
        // The file system's rule, shown directly.
        let fileSystem = SimulatedFileSystem(seed: 7)
        try fileSystem.makeDirectory(testDirectory)
        let orphan = try fileSystem.openFile(joinPath(testDirectory, "wal-0000000000000001.log"), create: true)
        try orphan.write([1, 2, 3], at: 0)
        try orphan.dataSync()
        fileSystem.crash()
        #expect(try fileSystem.listDirectory(testDirectory).isEmpty, "an unsynced directory entry must vanish")

        // The WAL fsyncs the directory when it starts a segment, so its data survives.
        let (storage, _) = try open(fileSystem)
        let directorySyncsBefore = fileSystem.directorySyncCount
        var expected = DurableState()
        for slot in 1...40 {
            let record = accepted(Slot(slot))
            try storage.persist([record])
            expected.apply(record)
        }
        #expect(storage.segmentNames.count >= 2)
        #expect(fileSystem.directorySyncCount - directorySyncsBefore == storage.segmentNames.count)
        fileSystem.crash()
        let (_, recovered) = try open(fileSystem)
        #expect(recovered.durable == expected)
        #expect(recovered.report.wal.segmentsRead == storage.segmentNames.count)
    }

    @Test("a failed fdatasync surfaces as fsyncFailed")
    func failedFsync() throws {
        let fileSystem = SimulatedFileSystem(seed: 8)
        let (storage, _) = try open(fileSystem)
        try storage.persist([accepted(1)])
        fileSystem.failNextSync(errno: 5)
        let error = try #require(throws: StorageError.self) { try storage.persist([accepted(2)]) }
        guard case .fsyncFailed(let path, let errno) = error else {
            Issue.record("expected fsyncFailed, got \(error)")
            return
        }
        #expect(path.hasPrefix(testDirectory + "/wal-"))
        #expect(errno == 5)
        #expect(error.description.contains("fsync failed"))
        // Never retried: the storage stays failed.
        #expect(storage.fsyncFailure == error)
        #expect(throws: error) { try storage.persist([accepted(3)]) }
        #expect(throws: error) { try storage.saveSnapshot(through: 1, stateMachine: []) }
    }

    // MARK: - Syncs run elsewhere (append / beginSync / PendingSync.run / endSync)

    /// The fsync thread's part and the hand-back, in a row.
    private func finish(_ pending: PendingSync, on storage: ReplicaStorage) throws {
        try pending.run()
        try storage.endSync(pending)
    }

    /// A storage with slot 1 appended and a sync of it begun, not yet run.
    private func syncInFlight(seed: UInt64) throws -> (SimulatedFileSystem, ReplicaStorage, PendingSync) {
        let fileSystem = SimulatedFileSystem(seed: seed)
        let (storage, _) = try open(fileSystem)
        try storage.append([accepted(1)])
        #expect(storage.appendedSequence == 1)
        #expect(storage.durableSequence == 0)
        return (fileSystem, storage, try #require(try storage.beginSync()))
    }

    private func crashAndRecover(_ fileSystem: SimulatedFileSystem) throws -> RecoveredState {
        fileSystem.crash()
        return try open(fileSystem).1
    }

    @Test("appended records are durable only after a sync; a pending sync covers what was appended before it began")
    func pendingSyncCoversItsPrefix() throws {
        let (fileSystem, storage, pending) = try syncInFlight(seed: 21)
        #expect(pending.through == 1)
        // Appended while the sync is in flight: not covered by it.
        try storage.append([accepted(2)])
        try finish(pending, on: storage)
        #expect(storage.durableSequence == 1)
        #expect(storage.appendedSequence == 2)
        // The simulated disk syncs exactly the prefix: slot 2 may or may not survive, slot 1 must.
        let recovered = try crashAndRecover(fileSystem)
        #expect(recovered.durable.entries[1] != nil, "a record covered by a completed sync was lost")
    }

    @Test("with nothing appended since the last sync there is nothing to begin")
    func nothingToSync() throws {
        let (storage, _) = try open(SimulatedFileSystem(seed: 22))
        try storage.persist([accepted(1)])
        #expect(try storage.beginSync() == nil)
        try storage.append([accepted(2)])
        let pending = try #require(try storage.beginSync())
        try finish(pending, on: storage)
        #expect(try storage.beginSync() == nil)
        #expect(storage.durableSequence == storage.appendedSequence)
    }

    @Test("a segment roll never fdatasyncs on the caller's thread: the batch waits until the sync in flight made the old segment durable")
    func rollWhileSyncInFlight() throws {
        let fileSystem = SimulatedFileSystem(seed: 23)
        let (storage, _) = try open(fileSystem)
        try storage.append([accepted(1, bytes: 1_500)])
        let pending = try #require(try storage.beginSync())
        let segmentsBefore = storage.segmentNames.count
        let syncsBefore = fileSystem.fileSyncCount
        // Does not fit the 4 KiB segment, and the old one's tail is not durable yet: the batch
        // is held (with its sequence number), no new segment, no synchronous fdatasync.
        try storage.append([accepted(2, bytes: 3_000)])
        try storage.append([accepted(3)])
        #expect(storage.appendedSequence == 3)
        #expect(storage.segmentNames.count == segmentsBefore)
        #expect(fileSystem.fileSyncCount == syncsBefore)
        // The sync ran: the new segment starts and gets the held records.
        try finish(pending, on: storage)
        #expect(storage.durableSequence == 1)
        #expect(storage.segmentNames.count == segmentsBefore + 1)
        let second = try #require(try storage.beginSync())
        #expect(second.through == 3)
        try finish(second, on: storage)
        #expect(storage.durableSequence == 3)
        let recovered = try crashAndRecover(fileSystem)
        #expect(recovered.durable.entries.keys.sorted() == [1, 2, 3])
        #expect(recovered.report.wal.tornBytesTruncated == 0)
    }

    @Test("a crash while records wait for a roll loses only what was never durable; recovery finds no damage")
    func crashWhileRollHeld() throws {
        let fileSystem = SimulatedFileSystem(seed: 28)
        let (storage, _) = try open(fileSystem)
        try storage.persist([accepted(1)])
        try storage.append([accepted(2, bytes: 1_500)])
        let pending = try #require(try storage.beginSync())
        try storage.append([accepted(3, bytes: 3_000)])
        try pending.run()
        // The process dies before the hand-back: slot 3 was in no file.
        let recovered = try crashAndRecover(fileSystem)
        #expect(recovered.durable.entries[1] != nil && recovered.durable.entries[3] == nil)
        #expect(recovered.report.wal.tornBytesTruncated == 0)
    }

    @Test("a roll waiting for an unsynced tail: the next sync covers the old segment only, the one after the held records; syncNow does both")
    func rollAfterUnsyncedTail() throws {
        for useSyncNow in [false, true] {
            let fileSystem = SimulatedFileSystem(seed: 27)
            let (storage, _) = try open(fileSystem)
            try storage.append([accepted(1, bytes: 1_500)])
            try storage.append([accepted(2, bytes: 3_000)])
            let segments = storage.segmentNames.count
            if useSyncNow {
                try storage.syncNow()
            } else {
                let first = try #require(try storage.beginSync())
                #expect(first.through == 1)
                #expect(storage.segmentNames.count == segments)
                try finish(first, on: storage)
                #expect(storage.durableSequence == 1)
                let second = try #require(try storage.beginSync())
                #expect(second.through == 2)
                try finish(second, on: storage)
            }
            #expect(storage.segmentNames.count == segments + 1)
            #expect(storage.durableSequence == 2)
            let recovered = try crashAndRecover(fileSystem)
            #expect(recovered.durable.entries.keys.sorted() == [1, 2], "syncNow: \(useSyncNow)")
        }
    }

    @Test("syncNow while a sync is in flight makes everything durable; the late sync then changes nothing")
    func syncNowOvertakesPendingSync() throws {
        let (fileSystem, storage, pending) = try syncInFlight(seed: 24)
        try storage.append([accepted(2)])
        try storage.syncNow()
        #expect(storage.durableSequence == 2)
        try finish(pending, on: storage)
        #expect(storage.durableSequence == 2)
        try storage.close()
        let recovered = try crashAndRecover(fileSystem)
        #expect(recovered.durable.entries.keys.sorted() == [1, 2])
    }

    @Test("a pending sync that fails is remembered: endSync and every later call throw it")
    func failedPendingSync() throws {
        let (fileSystem, storage, pending) = try syncInFlight(seed: 25)
        fileSystem.failNextSync(errno: 5)
        #expect(throws: StorageError.self) { try pending.run() }
        #expect(pending.failure != nil)
        let error = try #require(throws: StorageError.self) { try storage.endSync(pending) }
        guard case .fsyncFailed = error else {
            Issue.record("expected fsyncFailed, got \(error)")
            return
        }
        #expect(storage.durableSequence == 0)
        #expect(throws: error) { try storage.append([accepted(2)]) }
        #expect(throws: error) { try storage.beginSync() }
    }

    @Test("a chosen prefix counts for snapshot headers only once the entries before it are durable")
    func chosenThroughWaitsForDurability() throws {
        let fileSystem = SimulatedFileSystem(seed: 26)
        let (storage, _) = try open(fileSystem)
        try storage.persist([accepted(1), accepted(2), .chosenThrough(2)])
        #expect(storage.chosenThrough == 2)
        // Slot 3 accepted and marked chosen, neither durable yet (a sync may be in flight).
        try storage.append([accepted(3)])
        let pending = try #require(try storage.beginSync())
        try storage.append([.chosenThrough(3)])
        #expect(storage.chosenThrough == 2)
        // A snapshot begun now must not promise recovery an entry for slot 3.
        let snapshot = try #require(try storage.beginSnapshot(through: 2))
        #expect(snapshot.chosenThrough == 2)
        try finish(pending, on: storage)
        #expect(storage.chosenThrough == 2, "the mark was appended after the sync began")
        try storage.syncNow()
        #expect(storage.chosenThrough == 3)
    }

    @Test("random appends, background syncs, syncNow and crashes: every record the log called durable survives", arguments: Array(UInt64(1)...UInt64(8)))
    func randomPipelinedSyncs(seed: UInt64) throws {
        var random = TestRandom(seed: seed)
        let fileSystem = SimulatedFileSystem(seed: seed &+ 100)
        var (storage, _) = try open(fileSystem)
        var slotOfSequence: [UInt64: Slot] = [:]
        var nextSlot: Slot = 1
        var pending: PendingSync?
        var crashes = 0
        for _ in 0..<400 {
            switch random.next() % 10 {
            case 0...4:
                let count = random.int(1...3)
                var records: [Record] = []
                for _ in 0..<count {
                    records.append(accepted(nextSlot, bytes: random.int(10...900)))
                    nextSlot += 1
                }
                try storage.append(records)
                for offset in 0..<count {
                    slotOfSequence[storage.appendedSequence - UInt64(count - 1 - offset)] = nextSlot - Slot(count - offset)
                }
            case 5, 6:
                if let running = pending {
                    try finish(running, on: storage)
                    pending = nil
                } else {
                    pending = try storage.beginSync()
                }
            case 7:
                try storage.syncNow()
            case 8:
                // The process dies: what the log called durable must be there.
                let durable = storage.durableSequence
                fileSystem.crash()
                crashes += 1
                pending = nil
                let (reopened, recovered) = try open(fileSystem)
                for sequence in slotOfSequence.keys where sequence <= durable {
                    let slot = slotOfSequence[sequence]!
                    #expect(recovered.durable.entries[slot] != nil, "seed \(seed): slot \(slot) (sequence \(sequence), durable through \(durable)) lost")
                }
                storage = reopened
                // Sequence numbers restart from what recovery found.
                slotOfSequence = [:]
                nextSlot = (recovered.durable.entries.keys.max() ?? 0) + 1
            default:
                continue
            }
            #expect(storage.durableSequence <= storage.appendedSequence)
        }
        #expect(crashes > 0, "seed \(seed): no crash happened")
    }

    @Test("oversized records and bad options are refused")
    func limits() throws {
        let fileSystem = SimulatedFileSystem(seed: 10)
        #expect(throws: StorageError.self) {
            try ReplicaStorage.open(
                directory: testDirectory, fileSystem: fileSystem,
                options: StorageOptions(wal: WALOptions(segmentBytesMax: 100)))
        }
        let description = StorageError.invalidOptions("x").description
        #expect(!description.contains("\n"))
    }
}
