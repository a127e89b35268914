import Glibc
import Paxos

/// Options of the write-ahead log.
public struct WALOptions: Sendable {
    /// A segment is preallocated to this size and a new one is started when the next
    /// batch would not fit (a single larger record gets a segment of its own, grown past
    /// the bound). 64 MiB by default; tests use small ones.
    public var segmentBytesMax: Int
    /// Preallocate segments (fallocate) so that appends never change the file size and
    /// fdatasync writes no metadata.
    public var preallocate: Bool

    public static let segmentBytesDefault = 64 * 1024 * 1024
    /// The smallest segment allowed: room for a few records.
    public static let segmentBytesMin = 4096

    public init(segmentBytesMax: Int = WALOptions.segmentBytesDefault, preallocate: Bool = true) {
        self.segmentBytesMax = segmentBytesMax
        self.preallocate = preallocate
    }

    func validate() throws {
        guard segmentBytesMax >= Self.segmentBytesMin else {
            throw StorageError.invalidOptions("segmentBytesMax \(segmentBytesMax) is below \(Self.segmentBytesMin)")
        }
    }
}

/// What recovery found in the log.
public struct WALRecoveryReport: Sendable, Hashable {
    public var segmentsRead = 0
    public var recordsReplayed = 0
    /// Bytes of a torn tail cut off the last segment (0: the log ended cleanly).
    public var tornBytesTruncated = 0
    /// The segment and offset where the torn tail was cut, if any.
    public var tornFile: String?
    public var tornOffset: UInt64 = 0

    public init() {}
}

/// A segmented, append-only write-ahead log of `Record`s with group commit.
///
/// Files: `wal-<16 hex digits of the sequence number of its first record>.log` in one
/// directory. Records are framed by `WALFrame`. `append` writes (one `pwrite` per segment
/// touched); `sync` makes everything appended since the last sync durable with ONE
/// `fdatasync`, plus one directory fsync if a segment was created. Before a new segment is
/// created the current one is fdatasynced if it has unsynced data or a sync of it is in
/// flight (only when `append` is called twice without `sync`, a sync runs elsewhere, or a
/// batch exceeds a segment), so that only the last segment can ever hold a torn tail (see
/// `DamageVerdict`).
///
/// The sync may also run on another thread while appends go on: `beginSync` returns a
/// `PendingSync` covering every record appended so far, its `run()` does the fdatasync
/// wherever the caller likes, and `endSync` notes what became durable (`durableSequence`).
///
/// A segment roll never waits for a disk on the caller's thread: when a batch does not fit
/// and the active segment's tail is not durable yet (unsynced, or its sync still running),
/// the batch — and every later one — is held in memory (`rollHeld`) with its sequence
/// numbers; the next sync covers only the old segment, and once that is durable
/// (`endSync`, `beginSync` or `sync`) the new segment is created and the held records are
/// written to it, for the sync after to cover. So the old segment's tail is still durable
/// before the new one holds anything, at the cost of one more sync round at a roll.
///
/// Not thread-safe, apart from `PendingSync.run()`.
public final class WriteAheadLog {
    /// The largest frame body (type + record encoding). Larger appends throw
    /// `recordTooLarge`; larger length words read back are damage, not allocations.
    public static let recordBytesMax = 64 * 1024 * 1024

    struct Segment {
        var firstSequence: UInt64
        var name: String
        var recordCount: Int
        /// The highest slot of an `accepted` record in it (0: none). A segment all of whose
        /// accepted slots a snapshot covers may be removed.
        var acceptedSlotMax: Slot
        /// The highest ballot of a `promised` record and the highest `chosenThrough` record
        /// in it: a segment may be removed only if the snapshot header records at least these
        /// (a snapshot written off the driver's thread records them as of its start, and the
        /// segments written since must keep theirs).
        var promisedMax: Ballot = .zero
        var chosenThroughMax: Slot = 0

        mutating func note(_ record: Record) {
            switch record {
            case .accepted(let slot, _): acceptedSlotMax = max(acceptedSlotMax, slot)
            case .promised(let ballot): promisedMax = max(promisedMax, ballot)
            case .chosenThrough(let slot): chosenThroughMax = max(chosenThroughMax, slot)
            }
        }

        func isCovered(through slot: Slot, promised: Ballot, chosenThrough: Slot) -> Bool {
            acceptedSlotMax <= slot && promisedMax <= promised && chosenThroughMax <= chosenThrough
        }
        /// Bytes of valid records: where the next append goes.
        var endOffset: Int
    }

    public let directory: String
    public let options: WALOptions
    private let fileSystem: FileSystem
    /// Oldest first. Invariant: the last one is the one `active` writes.
    private(set) var segments: [Segment] = []
    private var active: StorageFile?
    /// The sequence number the next record gets.
    public private(set) var nextSequence: UInt64 = 1
    /// Every record with a sequence number at or below this one is durable.
    /// Invariant: `durableSequence < nextSequence`.
    public private(set) var durableSequence: UInt64 = 0
    private var hasUnsyncedData = false
    private var hasUnsyncedDirectory = false
    /// The sync begun and not yet ended (`beginSync`/`endSync`), if any.
    private var inFlight: PendingSync?
    /// Records appended while a roll waits for the active segment's tail to be durable, with
    /// their frames, and the sequence number of the first (see the type's comment).
    /// Invariant: non-empty only while the active segment has unsynced data or a sync of it
    /// in flight.
    private var rollHeld: [(record: Record, frame: [UInt8])] = []
    private var rollHeldFirstSequence: UInt64 = 0

    /// fdatasync calls on segments (group commits and segment rolls).
    public private(set) var dataSyncCount = 0
    /// fsync calls on the directory.
    public private(set) var directorySyncCount = 0

    static let segmentPrefix = "wal-"
    static let segmentSuffix = ".log"

    static func segmentName(firstSequence: UInt64) -> String {
        segmentPrefix + hex16(firstSequence) + segmentSuffix
    }

    /// The first sequence number encoded in a segment's name, nil if not a segment name.
    static func parseSegmentName(_ name: String) -> UInt64? {
        guard name.hasPrefix(segmentPrefix), name.hasSuffix(segmentSuffix),
            name.count == segmentPrefix.count + 16 + segmentSuffix.count
        else { return nil }
        let digits = name.dropFirst(segmentPrefix.count).dropLast(segmentSuffix.count)
        guard digits.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        return UInt64(digits, radix: 16)
    }

    private init(directory: String, fileSystem: FileSystem, options: WALOptions) {
        self.directory = directory
        self.fileSystem = fileSystem
        self.options = options
    }

    /// Opens the log in `directory` (which must exist), replays every valid record in order
    /// through `replay`, cuts a torn tail off the last segment, and makes what it found
    /// durable (fdatasync of the last segment, fsync of the directory) before returning,
    /// so nothing the replica acts on after recovery can still be lost.
    ///
    /// Throws `StorageError.corruptRecord` (and changes nothing) on damage that a crash
    /// cannot explain; see `DamageVerdict`.
    public static func open(
        directory: String, fileSystem: FileSystem, options: WALOptions, replay: (Record) -> Void
    ) throws -> (WriteAheadLog, WALRecoveryReport) {
        try options.validate()
        let log = WriteAheadLog(directory: directory, fileSystem: fileSystem, options: options)
        var report = WALRecoveryReport()
        let names = try fileSystem.listDirectory(directory)
            .compactMap { name in parseSegmentName(name).map { (sequence: $0, name: name) } }
            .sorted { $0.sequence < $1.sequence }

        // Read and judge every segment before changing anything.
        var scans: [SegmentScan] = []
        for (index, segment) in names.enumerated() {
            let path = joinPath(directory, segment.name)
            let bytes = try fileSystem.readFile(path)
            let scan = SegmentScan.scan(bytes, frameBytesMax: recordBytesMax)
            if let damage = scan.damage {
                let verdict = DamageVerdict.decide(
                    isLastSegment: index == names.count - 1, validFrameAfter: damage.validFrameAfter)
                if verdict == .corrupt {
                    throw StorageError.corruptRecord(
                        file: path, offset: UInt64(damage.offset),
                        expectedCRC: damage.expectedCRC, actualCRC: damage.actualCRC)
                }
                precondition(index == names.count - 1, "a torn tail outside the last segment")
                precondition(!damage.validFrameAfter, "a torn tail with a valid frame after it")
            }
            scans.append(scan)
        }

        for (segment, scan) in zip(names, scans) {
            var info = Segment(
                firstSequence: segment.sequence, name: segment.name, recordCount: scan.records.count,
                acceptedSlotMax: 0, endOffset: scan.validEnd)
            for record in scan.records {
                info.note(record)
                replay(record)
            }
            report.segmentsRead += 1
            report.recordsReplayed += scan.records.count
            log.segments.append(info)
        }

        if let last = log.segments.last, let lastScan = scans.last {
            let path = joinPath(directory, last.name)
            let file = try fileSystem.openFile(path, create: false)
            if let damage = lastScan.damage {
                // Torn tail: cut it, and zero the space again by preallocating.
                precondition(damage.offset == last.endOffset, "torn tail must start at the valid end")
                try file.truncate(to: UInt64(damage.offset))
                report.tornBytesTruncated = damage.garbageEnd - damage.offset
                report.tornFile = path
                report.tornOffset = UInt64(damage.offset)
            }
            if options.preallocate {
                try file.preallocate(bytes: UInt64(options.segmentBytesMax))
            }
            try file.sync()
            log.dataSyncCount += 1
            log.active = file
            log.nextSequence = last.firstSequence + UInt64(last.recordCount)
        }
        log.durableSequence = log.nextSequence - 1
        try fileSystem.syncDirectory(directory)
        log.directorySyncCount += 1
        return (log, report)
    }

    /// Writes `records` after the last one, in one `pwrite` (unless the batch is larger
    /// than a segment). Not durable until `sync()`.
    public func append(_ records: [Record]) throws {
        guard !records.isEmpty else { return }
        let frames = records.map(WALFrame.encode)
        for frame in frames where frame.count - WALFrame.headerBytes > Self.recordBytesMax {
            throw StorageError.recordTooLarge(bytes: frame.count, max: Self.recordBytesMax)
        }
        // A batch that does not fit the active segment starts a new one before anything
        // is written, so the batch stays one write and one fdatasync — at once when the
        // active segment is durable, else once it is (held meanwhile; see the type's
        // comment). Only a batch larger than a whole segment is split, at the cost of one
        // more fdatasync per extra segment.
        let batchBytes = frames.reduce(0) { $0 + $1.count }
        let activeEnd = segments.last?.endOffset ?? 0
        if !rollHeld.isEmpty {
            holdForRoll(records, frames)
            return
        }
        if active == nil || (activeEnd > 0 && activeEnd + batchBytes > options.segmentBytesMax) {
            if active != nil, !activeTailIsDurable {
                rollHeldFirstSequence = nextSequence
                holdForRoll(records, frames)
                return
            }
            try startSegment()
        }
        try write(records, frames)
    }

    private func holdForRoll(_ records: [Record], _ frames: [[UInt8]]) {
        for (record, frame) in zip(records, frames) { rollHeld.append((record, frame)) }
        nextSequence += UInt64(records.count)
    }

    /// The roll a held batch waits for, once the active segment's tail is durable: the new
    /// segment, and the held records written to it (not yet durable).
    private func rollIfDurable() throws {
        guard !rollHeld.isEmpty, activeTailIsDurable else { return }
        try rollHeldRecords()
    }

    /// Whether everything written to the active segment is durable: nothing unsynced, and no
    /// sync of it in flight that has not run yet.
    private var activeTailIsDurable: Bool {
        !hasUnsyncedData && !(active.map { inFlight?.syncs($0) == true } ?? false)
    }

    private func rollHeldRecords() throws {
        let held = rollHeld
        let heldEnd = nextSequence
        rollHeld = []
        nextSequence = rollHeldFirstSequence
        try startSegment()
        try write(held.map(\.record), held.map(\.frame))
        precondition(nextSequence == heldEnd, "held records lost their sequence numbers")
    }

    /// Writes framed records to the active segment (rolling, with a synchronous fdatasync,
    /// only inside a batch larger than what is left of a segment).
    private func write(_ records: [Record], _ frames: [[UInt8]]) throws {
        let batchBytes = frames.reduce(0) { $0 + $1.count }
        var pending: [UInt8] = []
        pending.reserveCapacity(min(batchBytes, options.segmentBytesMax))
        var pendingSummary = Segment(firstSequence: 0, name: "", recordCount: 0, acceptedSlotMax: 0, endOffset: 0)
        var pendingCount = 0
        for (record, frame) in zip(records, frames) {
            let end = (segments.last?.endOffset ?? 0) + pending.count
            if active == nil || (end > 0 && end + frame.count > options.segmentBytesMax) {
                try flush(&pending, count: &pendingCount, summary: &pendingSummary)
                try startSegment()
            }
            pending.append(contentsOf: frame)
            pendingCount += 1
            pendingSummary.note(record)
        }
        try flush(&pending, count: &pendingCount, summary: &pendingSummary)
    }

    /// Writes `pending` to the active segment; `summary` carries what its records hold.
    private func flush(_ pending: inout [UInt8], count: inout Int, summary: inout Segment) throws {
        guard !pending.isEmpty else { return }
        guard let file = active, var segment = segments.last else {
            preconditionFailure("flush without an active segment")
        }
        try file.write(pending, at: UInt64(segment.endOffset))
        segment.endOffset += pending.count
        segment.recordCount += count
        segment.acceptedSlotMax = max(segment.acceptedSlotMax, summary.acceptedSlotMax)
        segment.promisedMax = max(segment.promisedMax, summary.promisedMax)
        segment.chosenThroughMax = max(segment.chosenThroughMax, summary.chosenThroughMax)
        segments[segments.count - 1] = segment
        nextSequence += UInt64(count)
        hasUnsyncedData = true
        pending = []
        count = 0
        summary = Segment(firstSequence: 0, name: "", recordCount: 0, acceptedSlotMax: 0, endOffset: 0)
    }

    /// Closes the active segment (fdatasync first, so a later segment never outlives an
    /// earlier one's tail — also when a sync of it is in flight elsewhere, which may not have
    /// finished) and creates the next, named after `nextSequence`.
    private func startSegment() throws {
        if let file = active {
            if !activeTailIsDurable {
                try file.dataSync()
                dataSyncCount += 1
                hasUnsyncedData = false
            }
            try closeWhenIdle(file)
            active = nil
        }
        let name = Self.segmentName(firstSequence: nextSequence)
        precondition(!segments.contains { $0.name == name }, "segment \(name) exists already")
        let file = try fileSystem.openFile(joinPath(directory, name), create: true)
        if options.preallocate {
            try file.preallocate(bytes: UInt64(options.segmentBytesMax))
        }
        segments.append(
            Segment(firstSequence: nextSequence, name: name, recordCount: 0, acceptedSlotMax: 0, endOffset: 0))
        active = file
        hasUnsyncedData = true  // the preallocation itself must reach the disk
        hasUnsyncedDirectory = true
    }

    /// Makes everything appended since the last sync durable: one fdatasync of the active
    /// segment, and one fsync of the directory if a segment was created since (two of each
    /// when records wait for a roll: the old segment's tail first).
    /// A sync in flight that has not run yet counts as unsynced here: this one does its work.
    public func sync() throws {
        if !rollHeld.isEmpty, let file = active {
            try file.dataSync()
            dataSyncCount += 1
            hasUnsyncedData = false
            // (A sync in flight of the old file makes `startSegment` fdatasync it once more.)
            try rollHeldRecords()
        }
        let unfinished = inFlight.flatMap { $0.hasRun ? nil : $0 }
        if let file = active, hasUnsyncedData || unfinished?.syncs(file) == true {
            try file.dataSync()
            dataSyncCount += 1
            hasUnsyncedData = false
        }
        if hasUnsyncedDirectory || unfinished?.syncsDirectory == true {
            try fileSystem.syncDirectory(directory)
            directorySyncCount += 1
            hasUnsyncedDirectory = false
        }
        durableSequence = nextSequence - 1
    }

    /// Starts a sync of everything appended so far, to be run elsewhere (`PendingSync.run()`,
    /// e.g. on a dedicated thread) while appends go on; hand it back to `endSync` when it
    /// succeeded. Nil when nothing is waiting to be made durable. At most one may be in
    /// flight. What is appended after this call is not covered (the next sync covers it).
    public func beginSync() throws -> PendingSync? {
        precondition(inFlight == nil, "a second sync begun while one is in flight")
        try rollIfDurable()
        // Held records are in no file yet: this sync covers the old segment's tail only.
        let through = (rollHeld.isEmpty ? nextSequence : rollHeldFirstSequence) - 1
        guard through > durableSequence || hasUnsyncedData || hasUnsyncedDirectory else { return nil }
        let pending = PendingSync(
            through: through, file: hasUnsyncedData ? active?.deferredDataSync() : nil,
            directory: hasUnsyncedDirectory ? directory : nil, fileSystem: fileSystem, fileToWatch: active)
        if hasUnsyncedData { dataSyncCount += 1 }
        if hasUnsyncedDirectory { directorySyncCount += 1 }
        hasUnsyncedData = false
        hasUnsyncedDirectory = false
        inFlight = pending
        return pending
    }

    /// Notes that `pending` (the sync in flight) ran successfully: the records it covers are
    /// durable. A sync that failed is never ended: the replica must stop. When records wait
    /// for a roll and the old segment is durable now, starts the new segment and writes them.
    public func endSync(_ pending: PendingSync) throws {
        precondition(inFlight === pending, "ending a sync that is not the one in flight")
        precondition(pending.hasRun, "ending a sync that has not run")
        precondition(pending.failure == nil, "ending a sync that failed")
        inFlight = nil
        durableSequence = max(durableSequence, pending.through)
        try rollIfDurable()
    }

    /// Whether `pending` is the sync in flight on this log.
    public func isInFlight(_ pending: PendingSync) -> Bool { inFlight === pending }

    /// Closes `file` now, or — if the sync in flight is about to fdatasync it — as soon as
    /// that sync has run (closing it under the sync could reuse its descriptor).
    private func closeWhenIdle(_ file: StorageFile) throws {
        if let inFlight, inFlight.closeAfterRun(file) { return }
        try file.close()
    }

    /// Removes the oldest segments a snapshot covers — all of their `accepted` records are
    /// for slots at or below `slot`, and their `promised` and `chosenThrough` records are at
    /// or below the snapshot header's `promised` and `chosenThrough` — stopping at the first
    /// that is not (so the log stays a contiguous suffix) and never removing the active
    /// segment. Returns how many were removed; the directory is fsynced if any were.
    @discardableResult
    public func removeSegments(coveredThrough slot: Slot, promised: Ballot, chosenThrough: Slot) throws -> Int {
        let names = detachSegments(coveredThrough: slot, promised: promised, chosenThrough: chosenThrough)
        try StorageCleanup(paths: names.map { joinPath(directory, $0) }, directory: directory, fileSystem: fileSystem).run()
        if !names.isEmpty { directorySyncCount += 1 }
        return names.count
    }

    /// Forgets the oldest segments while a snapshot through `slot` covers them (never the
    /// active one) and returns their names, oldest first, for the caller to remove.
    public func detachSegments(coveredThrough slot: Slot, promised: Ballot, chosenThrough: Slot) -> [String] {
        var names: [String] = []
        while segments.count > 1, segments[0].isCovered(through: slot, promised: promised, chosenThrough: chosenThrough) {
            names.append(segments[0].name)
            segments.removeFirst()
        }
        return names
    }

    /// The names of the segments, oldest first.
    public var segmentNames: [String] { segments.map(\.name) }

    /// Closes the active segment. Records held for a roll are dropped: they were never
    /// durable (`sync` first to keep them).
    public func close() throws {
        rollHeld = []
        if let file = active { try closeWhenIdle(file) }
        active = nil
    }
}

/// A sync of a write-ahead log begun by `WriteAheadLog.beginSync`: the fdatasync of the
/// segment the records went to (as of the begin) and the directory fsync a new segment
/// needs. `run()` may be called on any thread, once, while the log goes on appending on its
/// own; the log closes no file this sync still has to fdatasync before it has run.
public final class PendingSync: @unchecked Sendable {
    /// The records with sequence numbers at or below this are durable once `run()` returned.
    public let through: UInt64
    private let dataSync: (() throws -> Void)?
    private let directory: String?
    private let fileSystem: FileSystem
    // Shared between the log's thread and the one that runs the sync, guarded by `lock`.
    private let lock = PosixLock()
    private var watched: StorageFile?
    private var ran = false
    private var error: StorageError?
    private var filesToClose: [StorageFile] = []

    init(
        through: UInt64, file: (() throws -> Void)?, directory: String?, fileSystem: FileSystem, fileToWatch: StorageFile?
    ) {
        self.through = through
        self.dataSync = file
        self.directory = directory
        self.fileSystem = fileSystem
        self.watched = file == nil ? nil : fileToWatch
    }

    /// Whether this sync has run (read on the log's thread after the hand-back).
    public var hasRun: Bool { lock.withLock { ran } }
    /// Why `run()` failed, if it did.
    public var failure: StorageError? { lock.withLock { error } }

    /// Whether this sync fsyncs the directory (a segment was created before it began).
    var syncsDirectory: Bool { directory != nil }

    /// Whether this sync will fdatasync `file` and has not yet.
    func syncs(_ file: StorageFile) -> Bool {
        lock.withLock { !ran && watched === file }
    }

    /// Defers closing `file` until this sync has run; false (close it yourself) if it has.
    func closeAfterRun(_ file: StorageFile) -> Bool {
        lock.withLock {
            guard !ran else { return false }
            filesToClose.append(file)
            return true
        }
    }

    /// The fdatasync and the directory fsync. A thrown error (`StorageError.fsyncFailed`)
    /// means the replica must stop: the data may be lost and a retry proves nothing.
    public func run() throws {
        precondition(!hasRun, "a sync run twice")
        var thrown: StorageError?
        do {
            try dataSync?()
            if let directory { try fileSystem.syncDirectory(directory) }
        } catch let error as StorageError {
            thrown = error
        } catch {
            thrown = .ioFailed(operation: "fdatasync", path: directory ?? "", errno: 5)
        }
        let closing = lock.withLock {
            ran = true
            error = thrown
            watched = nil
            defer { filesToClose = [] }
            return filesToClose
        }
        for file in closing { try? file.close() }
        if let thrown { throw thrown }
    }
}

/// A mutual-exclusion lock on a pthread mutex (the module imports no Foundation).
final class PosixLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() {
        precondition(pthread_mutex_init(mutex, nil) == 0, "pthread_mutex_init failed")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
