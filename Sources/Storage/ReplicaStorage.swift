import ByteCodec
import Paxos

/// Options of a replica's storage; validated by `ReplicaStorage.open`.
public struct StorageOptions: Sendable {
    public var wal: WALOptions

    public init(wal: WALOptions = WALOptions()) {
        self.wal = wal
    }

    /// Small segments, for tests and the simulator.
    public static func testing(segmentBytesMax: Int = 16 * 1024) -> StorageOptions {
        StorageOptions(wal: WALOptions(segmentBytesMax: segmentBytesMax))
    }
}

/// The state machine's snapshot found at recovery.
public struct RecoveredSnapshot: Hashable, Sendable {
    public var through: Slot
    public var stateMachine: [UInt8]
}

/// What recovery did, for the server's log.
public struct RecoveryReport: Hashable, Sendable, CustomStringConvertible {
    public var wal: WALRecoveryReport
    /// 0 when there was no snapshot.
    public var snapshotThrough: Slot = 0
    /// Leftover temporary files of an interrupted snapshot save or install, removed.
    public var temporaryFilesRemoved = 0
    /// Older snapshots and covered segments whose removal a crash interrupted, removed.
    public var staleFilesRemoved = 0

    /// One line, e.g. `recovered 120 records from 2 segments after snapshot through 1000;
    /// cut a torn tail of 300 bytes at /data/wal-….log:4096`.
    public var description: String {
        var line = "recovered \(wal.recordsReplayed) records from \(wal.segmentsRead) segments"
        line += snapshotThrough > 0 ? " after snapshot through \(snapshotThrough)" : " (no snapshot)"
        if let file = wal.tornFile {
            line += "; cut a torn tail of \(wal.tornBytesTruncated) bytes at \(file):\(wal.tornOffset)"
        }
        if temporaryFilesRemoved + staleFilesRemoved > 0 {
            line += "; removed \(temporaryFilesRemoved) temporary and \(staleFilesRemoved) stale files"
        }
        return line
    }
}

/// Everything `open` recovered.
public struct RecoveredState: Sendable {
    /// The promise, the accepted/learned entries above the snapshot, the chosen prefix.
    public var durable: DurableState
    /// The newest snapshot, if any: restore the state machine from it.
    public var snapshot: RecoveredSnapshot?
    public var report: RecoveryReport
}

/// A replica's durable storage: the write-ahead log of `Record`s, and the state machine's
/// snapshots that let the log be compacted. This is the facade the server and the
/// simulator use.
///
/// Directory layout: `wal-<first sequence>.log` segments, `snapshot-<slot>.snap` (one,
/// transiently two), and `*.tmp` files only while a snapshot is being written.
///
/// **Disk bound.** After `saveSnapshot(through: s)` the directory holds one snapshot and
/// only the segments that contain an accepted slot above `s` (plus the active one): at
/// most `snapshot + segmentBytesMax × (1 + ⌈bytes of records above s / segmentBytesMax⌉)`.
/// A server that saves a snapshot every K chosen slots keeps the log under roughly
/// K slots' worth of records plus two segments.
///
/// Not thread-safe: one thread at a time (the server's storage thread). It is not
/// `Sendable`; a caller that moves it between threads must serialize all calls.
public final class ReplicaStorage {
    public let directory: String
    public let options: StorageOptions
    private let fileSystem: FileSystem
    private let log: WriteAheadLog

    /// The highest promised ballot in any appended record or snapshot header (a snapshot
    /// header may carry one not yet durable in the log: more durable than needed is safe).
    public private(set) var promised: Ballot
    /// The chosen prefix as durable: a snapshot header carries it, and recovery then expects
    /// an entry for every slot up to it, so a `chosenThrough` record counts only once the
    /// entries appended before it are durable too. Invariant: `chosenThrough >= snapshotThrough`.
    public private(set) var chosenThrough: Slot
    /// `chosenThrough` records appended and not yet durable: the last sequence number of
    /// their batch, and the slot.
    private var chosenMarksPending: [(sequence: UInt64, slot: Slot)] = []
    /// The slot the newest durable snapshot covers (0: none).
    public private(set) var snapshotThrough: Slot
    /// Bumped by each `beginSnapshotInstall`; an older installer is refused.
    private var installGeneration = 0
    /// Set by the first failed fsync: every later call throws it again. A failed fsync is
    /// never retried (the kernel may have dropped the pages); the replica must stop.
    public private(set) var fsyncFailure: StorageError?

    private init(directory: String, fileSystem: FileSystem, options: StorageOptions, log: WriteAheadLog, state: DurableState) {
        self.directory = directory
        self.fileSystem = fileSystem
        self.options = options
        self.log = log
        promised = state.promised
        chosenThrough = state.chosenThrough
        snapshotThrough = state.snapshotThrough
    }

    /// Opens (creating if needed) the storage in `directory` and recovers: the newest
    /// snapshot, then every record of the log after it. A torn tail of the log is cut (the
    /// report says how many bytes); damage a crash cannot explain throws
    /// `StorageError.corruptRecord` or `.corruptSnapshot` and changes nothing.
    public static func open(
        directory: String, fileSystem: FileSystem, options: StorageOptions = StorageOptions()
    ) throws -> (ReplicaStorage, RecoveredState) {
        try options.wal.validate()
        try fileSystem.makeDirectory(directory)
        // The data directory's own entry must be durable, or a crash soon after the first
        // start could take the whole directory, synced files and all.
        try fileSystem.syncDirectory(parentDirectory(of: directory))
        var report = RecoveryReport(wal: WALRecoveryReport())
        var names = try fileSystem.listDirectory(directory)

        let snapshotSlots = names.compactMap(SnapshotFiles.parse).sorted()
        var state = DurableState()
        var snapshot: RecoveredSnapshot?
        var snapshotHeader: SnapshotHeader?
        if let newest = snapshotSlots.last {
            let path = joinPath(directory, SnapshotFiles.name(through: newest))
            let (header, body) = try SnapshotHeader.verify(try fileSystem.readFile(path), file: path)
            guard header.through == newest else {
                throw StorageError.corruptSnapshot(
                    file: path, reason: "header says through \(header.through)", expectedCRC: 0, actualCRC: 0)
            }
            state = DurableState(
                promised: header.promised, entries: [:], chosenThrough: header.chosenThrough,
                snapshotThrough: header.through)
            snapshot = RecoveredSnapshot(through: header.through, stateMachine: body)
            snapshotHeader = header
            report.snapshotThrough = header.through
        }

        let (log, walReport) = try WriteAheadLog.open(
            directory: directory, fileSystem: fileSystem, options: options.wal
        ) { record in
            state.apply(record)
        }
        report.wal = walReport

        // Finish what a crash may have interrupted: leftover temporary files, older
        // snapshots, covered segments.
        names = try fileSystem.listDirectory(directory)
        var removed = false
        for name in names where name.hasSuffix(SnapshotFiles.temporarySuffix) {
            try fileSystem.removeFile(joinPath(directory, name))
            report.temporaryFilesRemoved += 1
            removed = true
        }
        for slot in snapshotSlots.dropLast() {
            try fileSystem.removeFile(joinPath(directory, SnapshotFiles.name(through: slot)))
            report.staleFilesRemoved += 1
            removed = true
        }
        if removed { try fileSystem.syncDirectory(directory) }
        report.staleFilesRemoved += try log.removeSegments(
            coveredThrough: state.snapshotThrough, promised: snapshotHeader?.promised ?? .zero,
            chosenThrough: snapshotHeader?.chosenThrough ?? 0)

        precondition(state.chosenThrough >= state.snapshotThrough, "recovered chosenThrough below the snapshot")
        let storage = ReplicaStorage(
            directory: directory, fileSystem: fileSystem, options: options, log: log, state: state)
        return (storage, RecoveredState(durable: state, snapshot: snapshot, report: report))
    }

    /// Appends `records` to the log and makes them durable with ONE fdatasync (group
    /// commit; plus a directory fsync when a new segment was started). Only after this
    /// returns may the output's messages be sent. A `StorageError.fsyncFailed` means the
    /// replica must stop. With `sync: false` (`Output.recordsNeedSync`) the records are
    /// only appended; the next synced call makes them durable too. `append` and
    /// `syncNow` in a row (the runtime pipelines them with `beginSync` instead).
    public func persist(_ records: [Record], sync: Bool = true) throws {
        try append(records)
        if sync { try syncNow() }
    }

    /// Writes `records` after the last one without making them durable: `syncNow`, or a
    /// `beginSync` … `endSync` begun after this call, does. `appendedSequence` is the
    /// sequence number of the last one. Promises and chosen prefixes count from here on
    /// (a snapshot header may carry them: more durable than needed is never unsafe).
    public func append(_ records: [Record]) throws {
        guard !records.isEmpty else { return }
        try checkingFsync { try log.append(records) }
        for record in records {
            switch record {
            case .promised(let ballot): promised = max(promised, ballot)
            case .chosenThrough(let slot): chosenMarksPending.append((appendedSequence, slot))
            case .accepted: break
            }
        }
    }

    /// Counts the `chosenThrough` marks the log has made durable.
    private func noteDurable() {
        let durable = log.durableSequence
        while let first = chosenMarksPending.first, first.sequence <= durable {
            chosenThrough = max(chosenThrough, first.slot)
            chosenMarksPending.removeFirst()
        }
    }

    /// The sequence number of the last record appended (0: none since the log began).
    public var appendedSequence: UInt64 { log.nextSequence - 1 }
    /// Every record at or below this sequence number is durable.
    /// Invariant: `durableSequence <= appendedSequence`.
    public var durableSequence: UInt64 { log.durableSequence }

    /// Makes every record appended so far durable, here and now (one fdatasync, plus a
    /// directory fsync after a new segment). Allowed while a `beginSync` is in flight.
    public func syncNow() throws {
        try checkingFsync { try log.sync() }
        noteDurable()
    }

    /// Starts a sync of every record appended so far, to run elsewhere (`PendingSync.run()`,
    /// the server's fsync thread) while this storage goes on appending; nil if everything
    /// appended is durable already. At most one in flight: `endSync` it first.
    public func beginSync() throws -> PendingSync? {
        if let failure = fsyncFailure { throw failure }
        var pending: PendingSync?
        try checkingFsync { pending = try log.beginSync() }
        return pending
    }

    /// Takes back the sync in flight after it ran: its records are durable now
    /// (`durableSequence`) — unless it failed: then the failure is thrown, now and by every
    /// later call, and the replica must stop.
    public func endSync(_ pending: PendingSync) throws {
        try checkingFsync {
            if let failure = pending.failure { throw failure }
            try log.endSync(pending)
        }
        noteDurable()
    }

    /// Whether `pending` is this storage's sync in flight (not one of a storage closed since).
    public func isInFlight(_ pending: PendingSync) -> Bool { log.isInFlight(pending) }

    /// Saves the state machine's snapshot through `slot` (which the caller has applied,
    /// so `slot` is chosen), then compacts: removes older snapshots and every log segment
    /// whose accepted slots the snapshot covers. The header carries the current promise
    /// and chosen prefix (see `SnapshotHeader`). A `slot` at or below the current snapshot
    /// does nothing. The same as `beginSnapshot`, `PendingSnapshot.write` and `adopt` in a row.
    public func saveSnapshot(through slot: Slot, stateMachine: [UInt8]) throws {
        guard let pending = try beginSnapshot(through: slot) else { return }
        try checkingFsync { try pending.write(stateMachine: stateMachine) }
        try adopt(pending)
    }

    /// Starts a snapshot through `slot` that another thread may write (`PendingSnapshot.write`
    /// touches only its own files) while this storage goes on appending; `adopt` it here
    /// afterwards. Its header records the promise and chosen prefix as of now, and adoption
    /// removes only segments whose records that header covers, so records persisted while it
    /// was written are never lost. Nil when `slot` is at or below the current snapshot.
    public func beginSnapshot(through slot: Slot) throws -> PendingSnapshot? {
        if let failure = fsyncFailure { throw failure }
        guard slot > snapshotThrough else { return nil }
        return PendingSnapshot(
            through: slot, promised: promised, chosenThrough: max(chosenThrough, slot), directory: directory,
            fileSystem: fileSystem)
    }

    /// Makes a written snapshot the base of recovery and compacts what it covers; one at or
    /// below the current snapshot changes nothing.
    public func adopt(_ pending: PendingSnapshot) throws {
        try checkingFsync { try adoptDeferringCleanup(pending).run() }
    }

    /// `adopt`, but the obsolete files (the older snapshots, the covered segments) are
    /// only listed: the caller removes them, on any thread, with `StorageCleanup.run()`.
    /// Until then they are what a crash in the middle of `adopt` leaves, which recovery
    /// finishes removing.
    public func adoptDeferringCleanup(_ pending: PendingSnapshot) throws -> StorageCleanup {
        guard pending.through > snapshotThrough else { return StorageCleanup(paths: [], directory: directory, fileSystem: fileSystem) }
        var cleanup: StorageCleanup?
        try checkingFsync {
            cleanup = try adoptSnapshot(through: pending.through, promised: pending.promised, chosenThrough: pending.chosenThrough)
        }
        return cleanup!
    }

    /// Runs `body` unless an fsync failed before; remembers an fsync failure it throws.
    private func checkingFsync(_ body: () throws -> Void) throws {
        if let failure = fsyncFailure { throw failure }
        do {
            try body()
        } catch let error as StorageError {
            if case .fsyncFailed = error { fsyncFailure = error }
            throw error
        }
    }

    /// The newest snapshot is durable under its name: make it the base of recovery and
    /// list what it made obsolete (the older snapshots, the segments it covers; the log
    /// forgets those at once, so no later step counts on them).
    fileprivate func adoptSnapshot(
        through slot: Slot, promised headerPromised: Ballot, chosenThrough headerChosen: Slot
    ) throws -> StorageCleanup {
        precondition(slot > snapshotThrough, "adopting snapshot \(slot) at or below \(snapshotThrough)")
        snapshotThrough = slot
        chosenThrough = max(chosenThrough, slot)
        var paths: [String] = []
        for name in try fileSystem.listDirectory(directory) {
            if let older = SnapshotFiles.parse(name), older < slot { paths.append(joinPath(directory, name)) }
        }
        let segments = log.detachSegments(coveredThrough: slot, promised: headerPromised, chosenThrough: headerChosen)
        paths += segments.map { joinPath(directory, $0) }
        return StorageCleanup(paths: paths, directory: directory, fileSystem: fileSystem)
    }

    /// A reader of the newest snapshot file, to send it to a peer; nil if there is none.
    public func snapshotReader() throws -> SnapshotReader? {
        guard snapshotThrough > 0 else { return nil }
        let path = joinPath(directory, SnapshotFiles.name(through: snapshotThrough))
        return SnapshotReader(
            through: snapshotThrough, totalBytes: try fileSystem.fileSize(path), path: path, fileSystem: fileSystem)
    }

    /// Starts receiving a snapshot through `slot` of `totalBytes` (the whole file a peer's
    /// `SnapshotReader` sends). Starting another install abandons this one.
    public func beginSnapshotInstall(through slot: Slot, totalBytes: UInt64) throws -> SnapshotInstaller {
        let headerBytes = UInt64(SnapshotHeader.headerBytes)
        guard totalBytes >= headerBytes, totalBytes - headerBytes <= SnapshotHeader.bodyBytesMax else {
            throw StorageError.snapshotTransferInvalid("a snapshot of \(totalBytes) bytes")
        }
        guard slot > snapshotThrough else {
            throw StorageError.snapshotTransferInvalid("snapshot through \(slot) is not above ours (\(snapshotThrough))")
        }
        installGeneration += 1
        let temporary = joinPath(directory, SnapshotFiles.name(through: slot) + ".install" + SnapshotFiles.temporarySuffix)
        if fileSystem.fileExists(temporary) { try fileSystem.removeFile(temporary) }
        let file = try fileSystem.openFile(temporary, create: true)
        return SnapshotInstaller(
            storage: self, generation: installGeneration, through: slot, totalBytes: totalBytes, file: file)
    }

    fileprivate func finishInstall(_ installer: SnapshotInstaller, file: StorageFile) throws -> [UInt8] {
        var body: [UInt8] = []
        try checkingFsync { body = try install(installer, file: file) }
        return body
    }

    private func install(_ installer: SnapshotInstaller, file: StorageFile) throws -> [UInt8] {
        guard installer.generation == installGeneration else {
            throw StorageError.snapshotTransferInvalid("a newer install superseded this one")
        }
        let temporary = file.path
        try file.close()
        let (received, body) = try SnapshotHeader.verify(try fileSystem.readFile(temporary), file: temporary)
        guard received.through == installer.through else {
            throw StorageError.snapshotTransferInvalid(
                "the file is through \(received.through), the transfer said \(installer.through)")
        }
        guard installer.through > snapshotThrough else {
            try fileSystem.removeFile(temporary)
            throw StorageError.snapshotTransferInvalid(
                "snapshot through \(installer.through) is no longer above ours (\(snapshotThrough))")
        }
        // Our own promise and chosen prefix, never the sender's (see SnapshotHeader).
        var local = received
        local.promised = promised
        local.chosenThrough = max(chosenThrough, received.through)
        let rewrite = try fileSystem.openFile(temporary, create: false)
        try rewrite.write(local.encoded(), at: 0)
        try rewrite.sync()
        try rewrite.close()
        try fileSystem.rename(temporary, to: joinPath(directory, SnapshotFiles.name(through: installer.through)))
        try fileSystem.syncDirectory(directory)
        try adoptSnapshot(through: installer.through, promised: local.promised, chosenThrough: local.chosenThrough).run()
        return body
    }

    /// The bytes of every file in the directory (logical sizes: preallocated segments
    /// count in full). Best effort, for metrics and logs: a file that cannot be listed or
    /// measured counts as 0.
    public var diskUsageBytes: UInt64 {
        guard let names = try? fileSystem.listDirectory(directory) else { return 0 }
        return names.reduce(0) { total, name in
            total + ((try? fileSystem.fileSize(joinPath(directory, name))) ?? 0)
        }
    }

    /// fdatasync calls the log made (group commits and segment rolls).
    public var logDataSyncCount: Int { log.dataSyncCount }
    /// The log's segment file names, oldest first.
    public var segmentNames: [String] { log.segmentNames }

    public func close() throws {
        try log.close()
    }
}

/// Receives a snapshot from a peer, chunk by chunk, in order. `finish()` verifies both
/// checksums, writes this replica's promise into the header, fsyncs, renames, fsyncs the
/// directory, makes it the newest snapshot, compacts the log, and returns the state
/// machine's bytes to restore. After `finish()` the caller steps the replica with
/// `Event.snapshotInstalled(through:)`.
public final class SnapshotInstaller {
    public let through: Slot
    public let totalBytes: UInt64
    public private(set) var bytesReceived: UInt64 = 0
    fileprivate let generation: Int
    private let storage: ReplicaStorage
    private let file: StorageFile
    private var isFinished = false

    fileprivate init(storage: ReplicaStorage, generation: Int, through: Slot, totalBytes: UInt64, file: StorageFile) {
        self.storage = storage
        self.generation = generation
        self.through = through
        self.totalBytes = totalBytes
        self.file = file
    }

    /// Writes the chunk that starts at `offset`; chunks must come in order, each at most
    /// `SnapshotReader.chunkBytesMax` bytes, none past `totalBytes`.
    public func write(_ chunk: [UInt8], at offset: UInt64) throws {
        guard !isFinished else { throw StorageError.snapshotTransferInvalid("write after finish") }
        guard offset == bytesReceived else {
            throw StorageError.snapshotTransferInvalid("chunk at \(offset), expected \(bytesReceived)")
        }
        guard chunk.count <= SnapshotReader.chunkBytesMax else {
            throw StorageError.snapshotTransferInvalid("chunk of \(chunk.count) bytes exceeds \(SnapshotReader.chunkBytesMax)")
        }
        guard UInt64(chunk.count) <= totalBytes - bytesReceived else {
            throw StorageError.snapshotTransferInvalid("chunk ends past \(totalBytes) bytes")
        }
        try file.write(chunk, at: offset)
        bytesReceived += UInt64(chunk.count)
    }

    /// Verifies and installs the snapshot; returns the state machine's bytes.
    public func finish() throws -> [UInt8] {
        guard !isFinished else { throw StorageError.snapshotTransferInvalid("finish twice") }
        guard bytesReceived == totalBytes else {
            throw StorageError.snapshotTransferInvalid("received \(bytesReceived) of \(totalBytes) bytes")
        }
        isFinished = true
        return try storage.finishInstall(self, file: file)
    }
}

/// A snapshot begun by `ReplicaStorage.beginSnapshot`: its slot and header, and where it goes.
/// `write` may run on any thread while the storage goes on (it writes only its own temporary
/// file, then renames it); the file system seam must allow that for distinct files, as
/// `PosixFileSystem` does and the simulator's single-threaded `SimulatedFileSystem` trivially does.
public final class PendingSnapshot: @unchecked Sendable {
    public let through: Slot
    let promised: Ballot
    let chosenThrough: Slot
    private let directory: String
    private let fileSystem: FileSystem
    /// The state machine's bytes, once `write` succeeded.
    public private(set) var stateMachineBytes = 0

    init(through: Slot, promised: Ballot, chosenThrough: Slot, directory: String, fileSystem: FileSystem) {
        self.through = through
        self.promised = promised
        self.chosenThrough = chosenThrough
        self.directory = directory
        self.fileSystem = fileSystem
    }

    /// Writes the snapshot file durably (temporary file, fsync, rename, directory fsync).
    public func write(stateMachine: [UInt8]) throws {
        let header = SnapshotHeader(
            through: through, promised: promised, chosenThrough: chosenThrough,
            bodyBytes: UInt64(stateMachine.count), bodyCRC: CRC32C.checksum(stateMachine))
        try SnapshotFiles.writeAtomically(
            header.encoded() + stateMachine, name: SnapshotFiles.name(through: through), directory: directory,
            fileSystem: fileSystem)
        stateMachineBytes = stateMachine.count
    }
}

/// Files a snapshot made obsolete (`ReplicaStorage.adoptDeferringCleanup`): removed by
/// `run()`, then the directory fsynced, on whichever thread the caller likes. A file gone
/// already (a recovery in between removed it) is no error. Unchecked Sendable as
/// `PendingSnapshot`: immutable, and its file system is one the background thread uses
/// already for snapshots.
public final class StorageCleanup: @unchecked Sendable {
    public let paths: [String]
    let directory: String
    let fileSystem: FileSystem

    init(paths: [String], directory: String, fileSystem: FileSystem) {
        self.paths = paths
        self.directory = directory
        self.fileSystem = fileSystem
    }

    public var isEmpty: Bool { paths.isEmpty }

    public func run() throws {
        guard !paths.isEmpty else { return }
        for path in paths {
            do {
                try fileSystem.removeFile(path)
            } catch StorageError.notFound {
                continue
            }
        }
        try fileSystem.syncDirectory(directory)
    }
}
