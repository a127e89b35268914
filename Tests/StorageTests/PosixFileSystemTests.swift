import Glibc
import Paxos
import Testing

@testable import Storage
@testable import StorageTools

/// The real disk, in a fresh directory under /tmp.
@Suite("POSIX file system")
struct PosixFileSystemTests {
    private func temporaryDirectory(_ name: String) -> String {
        "/tmp/synod-storage-tests-\(getpid())-\(name)-\(UInt64.random(in: 0...UInt64.max))"
    }

    private func removeTree(_ directory: String) {
        let fileSystem = PosixFileSystem()
        for name in (try? fileSystem.listDirectory(directory)) ?? [] {
            let path = joinPath(directory, name)
            if (try? fileSystem.listDirectory(path)) != nil {
                removeTree(path)
            } else {
                try? fileSystem.removeFile(path)
            }
        }
        rmdir(directory)
    }

    @Test("basic operations")
    func operations() throws {
        let directory = temporaryDirectory("ops")
        defer { removeTree(directory) }
        let fileSystem = PosixFileSystem()
        try fileSystem.makeDirectory(directory + "/sub")
        #expect(try fileSystem.listDirectory(directory) == ["sub"])
        let file = try fileSystem.openFile(directory + "/a", create: true)
        try file.preallocate(bytes: 8192)
        #expect(try file.size() == 8192)
        try file.write([1, 2, 3], at: 100)
        try file.append([4])
        try file.dataSync()
        try file.sync()
        #expect(try fileSystem.readFile(directory + "/a", offset: 99, count: 5) == [0, 1, 2, 3, 0])
        #expect(try fileSystem.readFile(directory + "/a", offset: 8190, count: 10) == [0, 0, 4])
        try file.truncate(to: 101)
        #expect(try fileSystem.fileSize(directory + "/a") == 101)
        try file.close()
        try fileSystem.rename(directory + "/a", to: directory + "/b")
        try fileSystem.syncDirectory(directory)
        #expect(fileSystem.fileExists(directory + "/b"))
        #expect(!fileSystem.fileExists(directory + "/a"))
        try fileSystem.removeFile(directory + "/b")
        #expect(throws: StorageError.notFound(path: directory + "/b")) { try fileSystem.readFile(directory + "/b") }
        #expect(throws: StorageError.self) { try fileSystem.openFile(directory + "/missing", create: false) }
    }

    @Test("storage on the real disk: persist, snapshot, torn tail, reopen")
    func storageRoundTrip() throws {
        let directory = temporaryDirectory("wal")
        defer { removeTree(directory) }
        let fileSystem = PosixFileSystem()
        let options = StorageOptions.testing(segmentBytesMax: 8192)
        var model = DurableState()
        do {
            let (storage, recovered) = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, options: options)
            #expect(recovered.durable == DurableState())
            for step in makeWorkload(seed: 9, steps: 80, snapshots: true) {
                try perform(step, on: storage)
                apply(step, to: &model)
            }
            try storage.close()
        }
        let (storage, recovered) = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, options: options)
        #expect(recovered.durable == model)
        if let snapshot = recovered.snapshot {
            #expect(snapshot.stateMachine == stateMachineBody(through: snapshot.through))
        }
        try storage.close()

        // Garbage after the last record, as a torn write would leave: cut, then clean.
        let last = try #require(storage.segmentNames.last)
        let path = joinPath(directory, last)
        let scan = SegmentScan.scan(try fileSystem.readFile(path), frameBytesMax: WriteAheadLog.recordBytesMax)
        let file = try fileSystem.openFile(path, create: false)
        try file.write([0x10, 0, 0, 0, 0xAA, 0xBB, 0xCC], at: UInt64(scan.validEnd))
        try file.close()
        let (again, torn) = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, options: options)
        #expect(torn.durable == model)
        #expect(torn.report.wal.tornBytesTruncated == 7)
        #expect(try fileSystem.fileSize(path) == 8192, "the segment is preallocated again")
        try again.close()
        let (_, clean) = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, options: options)
        #expect(clean.report.wal.tornBytesTruncated == 0)
    }

    @Test("the benchmark runs and renders its table")
    func benchmark() throws {
        let directory = temporaryDirectory("bench")
        defer { removeTree(directory) }
        let report = try StorageBenchmark.run(directory: directory, batchSizes: [1, 8], secondsPerCase: 0.1)
        #expect(report.cases.count == 3)
        #expect(report.cases.allSatisfy { $0.records > 0 && $0.fsyncs > 0 })
        #expect(report.cases[2].records == report.cases[2].fsyncs * 8)
        let table = report.markdownTable
        #expect(table.contains("| raw write+fdatasync | 1 |"))
        #expect(table.contains("| wal group commit | 8 |"))
        #expect(try PosixFileSystem().listDirectory(directory).isEmpty, "the benchmark cleans up")
    }
}
