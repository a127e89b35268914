import Testing

@testable import Storage
@testable import StorageTools

@Suite("Simulated file system")
struct SimulatedFileSystemTests {
    /// `/d/f`, created and its name made durable (its bytes are up to the test).
    static func durableFile(seed: UInt64) throws -> (SimulatedFileSystem, StorageFile) {
        let fileSystem = SimulatedFileSystem(seed: seed)
        try fileSystem.makeDirectory("/d")
        let file = try fileSystem.openFile("/d/f", create: true)
        try fileSystem.syncDirectory("/d")
        return (fileSystem, file)
    }

    @Test("synced bytes survive; unsynced ones are dropped, kept, torn at a sector or zero-filled")
    func crashOutcomes() throws {
        var outcomes: Set<String> = []
        for seed in UInt64(1)...UInt64(60) {
            let (fileSystem, file) = try Self.durableFile(seed: seed)
            let synced = [UInt8](repeating: 1, count: 100)
            try file.write(synced, at: 0)
            try file.dataSync()
            let unsynced = [UInt8](repeating: 2, count: 1500)
            try file.write(unsynced, at: 100)
            fileSystem.crash()
            let bytes = try #require(fileSystem.contents(of: "/d/f"), "seed \(seed)")
            #expect(Array(bytes.prefix(100)) == synced, "seed \(seed)")
            let tail = Array(bytes.dropFirst(100))
            if tail.isEmpty {
                outcomes.insert("dropped")
            } else if tail == unsynced {
                outcomes.insert("whole")
            } else if tail.allSatisfy({ $0 == 0 }) {
                #expect(tail.count == 1500, "seed \(seed)")
                outcomes.insert("zero-filled")
            } else {
                #expect(tail.allSatisfy { $0 == 2 }, "seed \(seed)")
                #expect(bytes.count % SimulatedFileSystem.sectorBytes == 0, "seed \(seed): torn at \(bytes.count)")
                outcomes.insert("torn")
            }
            // Handles from before the crash are dead.
            #expect(throws: StorageError.self) { try file.write([1], at: 0) }
        }
        #expect(outcomes == ["dropped", "whole", "zero-filled", "torn"])
    }

    @Test("a deferred fdatasync makes durable exactly what was written before it began, never what came after")
    func deferredSyncCoversItsPrefix() throws {
        var laterKept: Set<Bool> = []
        for seed in UInt64(1)...UInt64(40) {
            let (fileSystem, file) = try Self.durableFile(seed: seed)
            try file.write([UInt8](repeating: 1, count: 600), at: 0)
            let sync = file.deferredDataSync()
            try file.write([UInt8](repeating: 2, count: 600), at: 600)
            try sync()
            fileSystem.crash()
            let bytes = try #require(fileSystem.contents(of: "/d/f"), "seed \(seed)")
            #expect(Array(bytes.prefix(600)) == [UInt8](repeating: 1, count: 600), "seed \(seed)")
            laterKept.insert(bytes.count > 600 && bytes[600] == 2)
        }
        // The later write is left to the crash: sometimes kept, sometimes not.
        #expect(laterKept == [true, false])
        // After a full sync the deferred one has nothing left to do, and counts anyway.
        let (fileSystem, file) = try Self.durableFile(seed: 99)
        try file.write([3], at: 0)
        let sync = file.deferredDataSync()
        try file.dataSync()
        let syncs = fileSystem.fileSyncCount
        try sync()
        #expect(fileSystem.fileSyncCount == syncs + 1)
        // Closed handles cannot sync.
        let late = file.deferredDataSync()
        try file.close()
        #expect(throws: StorageError.self) { try late() }
    }

    @Test("unsynced renames revert and unsynced removes reappear")
    func directoryDurability() throws {
        let fileSystem = SimulatedFileSystem(seed: 1)
        try fileSystem.makeDirectory("/d")
        let file = try fileSystem.openFile("/d/a.tmp", create: true)
        try file.write([7], at: 0)
        try file.sync()
        try fileSystem.syncDirectory("/d")
        try fileSystem.rename("/d/a.tmp", to: "/d/a")
        fileSystem.crash()
        #expect(try fileSystem.listDirectory("/d") == ["a.tmp"])
        try fileSystem.rename("/d/a.tmp", to: "/d/a")
        try fileSystem.syncDirectory("/d")
        try fileSystem.removeFile("/d/a")
        fileSystem.crash()
        #expect(try fileSystem.listDirectory("/d") == ["a"])
        #expect(fileSystem.contents(of: "/d/a") == [7])
    }

    @Test("crashAfterMutations halts every later call; counters count")
    func halting() throws {
        let fileSystem = SimulatedFileSystem(seed: 2)
        try fileSystem.makeDirectory("/d")
        let file = try fileSystem.openFile("/d/f", create: true)  // mutation 1
        fileSystem.crashAfterMutations = 3
        try file.write([1], at: 0)  // 2
        try file.write([2], at: 1)  // 3: halts after it
        #expect(fileSystem.isHalted)
        #expect(throws: StorageError.simulatedCrash) { try file.sync() }
        #expect(throws: StorageError.simulatedCrash) { try fileSystem.listDirectory("/d") }
        fileSystem.crash()
        #expect(!fileSystem.isHalted)
        #expect(fileSystem.writeCount == 2)
        #expect(fileSystem.mutationCount == 3)
        #expect(fileSystem.fileSyncCount == 0)
        #expect(try fileSystem.listDirectory("/d").isEmpty)
    }

    @Test("preallocation zero-fills and truncation shortens")
    func sizes() throws {
        let fileSystem = SimulatedFileSystem(seed: 3)
        try fileSystem.makeDirectory("/d")
        let file = try fileSystem.openFile("/d/f", create: true)
        try file.preallocate(bytes: 4096)
        #expect(try file.size() == 4096)
        try file.write([1, 2, 3], at: 10)
        try file.truncate(to: 12)
        #expect(fileSystem.contents(of: "/d/f") == [UInt8](repeating: 0, count: 10) + [1, 2])
        try file.append([9])
        #expect(try fileSystem.readFile("/d/f", offset: 11, count: 10) == [2, 9])
    }
}
