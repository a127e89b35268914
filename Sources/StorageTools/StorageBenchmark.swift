import Glibc
import Paxos
import Storage

/// One measured case of `StorageBenchmark`.
public struct StorageBenchmarkCase: Codable, Hashable, Sendable {
    /// `raw write+fdatasync` or `wal group commit`.
    public var name: String
    /// Records per fdatasync (1 for the raw case).
    public var batchSize: Int
    public var records: Int
    public var fsyncs: Int
    public var seconds: Double
    public var recordsPerSecond: Double { seconds > 0 ? Double(records) / seconds : 0 }
    public var fsyncsPerSecond: Double { seconds > 0 ? Double(fsyncs) / seconds : 0 }
    /// Mean time of one append+sync (or write+fdatasync), in microseconds.
    public var microsecondsPerSync: Double { fsyncs > 0 ? seconds * 1_000_000 / Double(fsyncs) : 0 }

    enum CodingKeys: String, CodingKey {
        case name, batchSize, records, fsyncs, seconds, recordsPerSecond, fsyncsPerSecond, microsecondsPerSync
    }

    public init(name: String, batchSize: Int, records: Int, fsyncs: Int, seconds: Double) {
        self.name = name
        self.batchSize = batchSize
        self.records = records
        self.fsyncs = fsyncs
        self.seconds = seconds
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        batchSize = try container.decode(Int.self, forKey: .batchSize)
        records = try container.decode(Int.self, forKey: .records)
        fsyncs = try container.decode(Int.self, forKey: .fsyncs)
        seconds = try container.decode(Double.self, forKey: .seconds)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(batchSize, forKey: .batchSize)
        try container.encode(records, forKey: .records)
        try container.encode(fsyncs, forKey: .fsyncs)
        try container.encode(seconds, forKey: .seconds)
        try container.encode(recordsPerSecond, forKey: .recordsPerSecond)
        try container.encode(fsyncsPerSecond, forKey: .fsyncsPerSecond)
        try container.encode(microsecondsPerSync, forKey: .microsecondsPerSync)
    }
}

/// The result of `StorageBenchmark.run`.
public struct StorageBenchmarkReport: Codable, Hashable, Sendable {
    public var directory: String
    public var recordBytes: Int
    public var cases: [StorageBenchmarkCase]

    /// A Markdown table, one row per case.
    public var markdownTable: String {
        var lines = [
            "Storage benchmark on \(directory), \(recordBytes)-byte records",
            "",
            "| case | batch | records/s | fsyncs/s | µs per sync |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in cases {
            lines.append(
                "| \(row.name) | \(row.batchSize) | \(format(row.recordsPerSecond)) | "
                    + "\(format(row.fsyncsPerSecond)) | \(format(row.microsecondsPerSync)) |")
        }
        return lines.joined(separator: "\n")
    }

    private func format(_ value: Double) -> String {
        String(Int(value.rounded()))
    }
}

/// Measures the disk under `directory` in one run: the raw rate of `pwrite` + `fdatasync`
/// of one record, and the write-ahead log's group commit (`ReplicaStorage.persist`) at
/// each batch size. The ratio of WAL records/s to raw fsyncs/s is what group commit buys.
public enum StorageBenchmark {
    public static func run(
        directory: String, batchSizes: [Int] = [1, 16, 256], recordBytes: Int = 256, secondsPerCase: Double
    ) throws -> StorageBenchmarkReport {
        precondition(secondsPerCase > 0, "secondsPerCase must be positive")
        precondition(recordBytes >= 32, "recordBytes below 32 cannot hold a record")
        precondition(batchSizes.allSatisfy { $0 > 0 }, "batch sizes must be positive")
        let fileSystem = PosixFileSystem()
        try fileSystem.makeDirectory(directory)
        var report = StorageBenchmarkReport(directory: directory, recordBytes: recordBytes, cases: [])
        report.cases.append(try runRaw(directory: directory, fileSystem: fileSystem, recordBytes: recordBytes, seconds: secondsPerCase))
        for batchSize in batchSizes {
            report.cases.append(
                try runLog(
                    directory: directory, fileSystem: fileSystem, batchSize: batchSize, recordBytes: recordBytes,
                    seconds: secondsPerCase))
        }
        return report
    }

    private static func runRaw(
        directory: String, fileSystem: PosixFileSystem, recordBytes: Int, seconds: Double
    ) throws -> StorageBenchmarkCase {
        let path = joinPath(directory, "raw-bench.dat")
        let fileBytes = 64 * 1024 * 1024
        let file = try fileSystem.openFile(path, create: true)
        defer {
            try? file.close()
            try? fileSystem.removeFile(path)
        }
        try file.preallocate(bytes: UInt64(fileBytes))
        try file.sync()
        let record = [UInt8](repeating: 0xA5, count: recordBytes)
        var offset = 0
        var count = 0
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < deadline {
            try file.write(record, at: UInt64(offset))
            try file.dataSync()
            count += 1
            offset = (offset + recordBytes) % (fileBytes - recordBytes)
        }
        return StorageBenchmarkCase(
            name: "raw write+fdatasync", batchSize: 1, records: count, fsyncs: count,
            seconds: elapsedSeconds(clock.now - start))
    }

    private static func runLog(
        directory: String, fileSystem: PosixFileSystem, batchSize: Int, recordBytes: Int, seconds: Double
    ) throws -> StorageBenchmarkCase {
        let logDirectory = joinPath(directory, "wal-bench-\(batchSize)")
        try removeAll(logDirectory, fileSystem: fileSystem)
        defer { try? removeAll(logDirectory, fileSystem: fileSystem) }
        let (storage, _) = try ReplicaStorage.open(directory: logDirectory, fileSystem: fileSystem)
        defer { try? storage.close() }
        // Pad the command so the framed record is about recordBytes long.
        let probe = WALFrame.encode(record(slot: 1 << 20, commandBytes: 0)).count
        let commandBytes = max(0, recordBytes - probe - 2)
        var slot: Slot = 1
        var records = 0
        let syncsBefore = storage.logDataSyncCount
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < deadline {
            var batch: [Record] = []
            batch.reserveCapacity(batchSize)
            for _ in 0..<batchSize {
                batch.append(record(slot: slot, commandBytes: commandBytes))
                slot += 1
            }
            try storage.persist(batch)
            records += batchSize
        }
        let elapsed = elapsedSeconds(clock.now - start)
        return StorageBenchmarkCase(
            name: "wal group commit", batchSize: batchSize, records: records,
            fsyncs: storage.logDataSyncCount - syncsBefore, seconds: elapsed)
    }

    private static func record(slot: Slot, commandBytes: Int) -> Record {
        .accepted(
            slot: slot,
            entry: LogEntry(
                ballot: Ballot(round: 7, replica: 1),
                value: .batch([Command([UInt8](repeating: UInt8(truncatingIfNeeded: slot), count: commandBytes))])))
    }

    private static func removeAll(_ directory: String, fileSystem: PosixFileSystem) throws {
        guard fileSystem.fileExists(directory) else { return }
        for name in try fileSystem.listDirectory(directory) {
            try fileSystem.removeFile(joinPath(directory, name))
        }
        rmdir(directory)
    }

    private static func elapsedSeconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
