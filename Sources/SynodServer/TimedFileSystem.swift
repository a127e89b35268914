import Prometheus
import Storage

/// A `FileSystem` that times every fsync of the file system it wraps, for
/// `synod_disk_wal_fsync_duration_seconds` (etcd's `etcd_disk_wal_fsync_duration_seconds`)
/// and `synod_disk_snapshot_fsync_duration_seconds`. Everything else passes straight through;
/// errors are rethrown unchanged (a failed fsync still stops the replica).
final class TimedFileSystem: FileSystem {
    let base: FileSystem
    let metrics: ServerMetrics

    init(base: FileSystem, metrics: ServerMetrics) {
        self.base = base
        self.metrics = metrics
    }

    func makeDirectory(_ path: String) throws { try base.makeDirectory(path) }
    func listDirectory(_ path: String) throws -> [String] { try base.listDirectory(path) }
    func fileExists(_ path: String) -> Bool { base.fileExists(path) }

    func openFile(_ path: String, create: Bool) throws -> StorageFile {
        let file = try base.openFile(path, create: create)
        // Segments end in `.log` (`WriteAheadLog.segmentSuffix`); the rest are snapshots.
        let metrics = self.metrics
        if path.hasSuffix(".log") {
            return TimedFile(base: file) { duration in
                metrics.walFsyncDuration.record(duration)
                metrics.recordWALFsync(duration)
            }
        }
        return TimedFile(base: file) { metrics.snapshotFsyncDuration.record($0) }
    }

    func readFile(_ path: String) throws -> [UInt8] { try base.readFile(path) }
    func readFile(_ path: String, offset: UInt64, count: Int) throws -> [UInt8] {
        try base.readFile(path, offset: offset, count: count)
    }
    func fileSize(_ path: String) throws -> UInt64 { try base.fileSize(path) }
    func rename(_ source: String, to destination: String) throws { try base.rename(source, to: destination) }
    func removeFile(_ path: String) throws { try base.removeFile(path) }

    func syncDirectory(_ path: String) throws {
        let metrics = self.metrics
        try timed({ metrics.directoryFsyncDuration.record($0) }) { try base.syncDirectory(path) }
    }
}

/// An open file whose `sync` and `dataSync` are timed.
final class TimedFile: StorageFile {
    let base: StorageFile
    /// Told how long each fsync took.
    let record: (Duration) -> Void

    init(base: StorageFile, record: @escaping (Duration) -> Void) {
        self.base = base
        self.record = record
    }

    var path: String { base.path }
    func write(_ bytes: [UInt8], at offset: UInt64) throws { try base.write(bytes, at: offset) }
    func append(_ bytes: [UInt8]) throws { try base.append(bytes) }
    func size() throws -> UInt64 { try base.size() }
    func sync() throws { try timed(record) { try base.sync() } }
    func dataSync() throws { try timed(record) { try base.dataSync() } }
    func truncate(to size: UInt64) throws { try base.truncate(to: size) }
    func preallocate(bytes: UInt64) throws { try base.preallocate(bytes: bytes) }
    func close() throws { try base.close() }
}

/// Runs `body`, recording how long it took (also when it throws).
private func timed(_ record: (Duration) -> Void, _ body: () throws -> Void) rethrows {
    let clock = ContinuousClock()
    let start = clock.now
    defer { record(clock.now - start) }
    try body()
}
