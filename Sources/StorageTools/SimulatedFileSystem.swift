import Paxos
import Storage
/// An in-memory `FileSystem` for the deterministic simulator and the crash tests.
///
/// It models what a crash may do to a real disk, every choice drawn from one seeded PRNG:
/// - Each file has *durable* bytes (as of its last `sync`/`dataSync`) and the changes
///   made since (writes, truncates, preallocations), kept in issue order.
/// - Each directory has *durable* entries (as of its last `syncDirectory`) and current
///   ones. A create, rename or remove that was not followed by `syncDirectory` is undone
///   at `crash()`: a new file vanishes, a renamed file gets its old name back, a removed
///   file reappears. (This is the worst case a POSIX file system allows; ext4 often keeps
///   such entries, which only makes the real world kinder than the simulation.)
/// - `crash()` keeps, for each file, a random prefix (possibly empty) of its unsynced
///   changes, in issue order; the last kept change, if it is a write, may be kept whole,
///   torn at a 512-byte sector boundary (only the sectors before the tear persist), or
///   zero-filled (its range reads as zeros). Nothing after it persists.
/// - Directories themselves are durable once made (a simplification: the storage layer
///   never depends on a directory creation racing a crash).
///
/// Tests inject failures with `crashAfterMutations` (stop after the N-th mutating call,
/// as if the power failed right after it) and `failNextSync(errno:)`, and corrupt media
/// with `flipBit(path:offset:bit:)`. Counters tell how many syncs the code under test did.
///
/// Not thread-safe; the simulator drives it from one thread.
public final class SimulatedFileSystem: FileSystem {
    /// The unit of a torn write.
    public static let sectorBytes = 512

    // MARK: Model

    final class Inode {
        /// The bytes that survive any crash.
        var durable: [UInt8] = []
        /// The bytes a reader sees now.
        var current: [UInt8] = []
        /// Changes since the last sync, in issue order. Invariant: applying them all to
        /// `durable` gives `current`.
        var pending: [Change] = []
        /// Changes ever made durable; `pending[0]` is change number `changesSynced`.
        var changesSynced = 0
    }

    enum Change {
        case write(offset: Int, bytes: [UInt8])
        case resize(to: Int)
    }

    struct Directory {
        var current: [String: Inode] = [:]
        var durable: [String: Inode] = [:]
    }

    private var directories: [String: Directory] = [:]
    private var random: SplitMix64
    /// Bumped by every crash; handles opened before it fail.
    private var generation = 0
    private var pendingSyncFailure: Int32?

    // MARK: Counters and fault injection

    /// `sync` and `dataSync` calls that succeeded.
    public private(set) var fileSyncCount = 0
    /// `syncDirectory` calls that succeeded.
    public private(set) var directorySyncCount = 0
    /// `write` and `append` calls.
    public private(set) var writeCount = 0
    /// Calls that change files or names: writes, truncates, preallocations, creates,
    /// renames, removes.
    public private(set) var mutationCount = 0
    public private(set) var crashCount = 0
    /// When `mutationCount` reaches this, the file system halts: every later call throws
    /// `StorageError.simulatedCrash` until `crash()` is called. The power failed right
    /// after that mutation.
    public var crashAfterMutations: Int?
    public private(set) var isHalted = false
    /// One line per file the last `crash()` changed, for failure messages.
    public private(set) var lastCrashLog: [String] = []

    public init(seed: UInt64) {
        random = SplitMix64(seed: seed)
        directories["/"] = Directory()
    }

    /// The next `sync`, `dataSync` or `syncDirectory` fails with `errno` (default EIO)
    /// and makes nothing durable.
    public func failNextSync(errno: Int32 = 5) {
        pendingSyncFailure = errno
    }

    /// Flips one bit of a file's bytes, durable and current alike: media corruption.
    public func flipBit(path: String, offset: Int, bit: Int = 0) {
        precondition((0..<8).contains(bit), "bit \(bit) out of a byte")
        guard let inode = lookup(path) else { preconditionFailure("flipBit: no file \(path)") }
        precondition(offset < inode.current.count, "flipBit: offset \(offset) beyond \(path)")
        inode.current[offset] ^= UInt8(1) << UInt8(bit)
        if offset < inode.durable.count { inode.durable[offset] ^= UInt8(1) << UInt8(bit) }
    }

    /// Overwrites bytes of a file, durable and current alike (tests of damaged media).
    public func overwrite(path: String, offset: Int, bytes: [UInt8]) {
        guard let inode = lookup(path) else { preconditionFailure("overwrite: no file \(path)") }
        precondition(offset + bytes.count <= inode.current.count, "overwrite beyond \(path)")
        inode.current.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        if offset + bytes.count <= inode.durable.count {
            inode.durable.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        }
    }

    /// The current bytes of `path`, nil if there is no such file.
    public func contents(of path: String) -> [UInt8]? {
        lookup(path)?.current
    }

    /// A copy of every file's current bytes, by path (tests compare before and after).
    public func allFiles() -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for (directoryPath, directory) in directories {
            for (name, inode) in directory.current {
                files[joinPath(directoryPath, name)] = inode.current
            }
        }
        return files
    }

    /// Simulates power loss: undoes unsynced directory changes, keeps a random prefix of
    /// each file's unsynced changes (the last possibly torn), invalidates open handles.
    public func crash() {
        crashCount += 1
        generation += 1
        isHalted = false
        crashAfterMutations = nil
        pendingSyncFailure = nil
        lastCrashLog = []
        var seen: Set<ObjectIdentifier> = []
        for directoryPath in directories.keys.sorted() {
            directories[directoryPath]!.current = directories[directoryPath]!.durable
            for name in directories[directoryPath]!.current.keys.sorted() {
                let inode = directories[directoryPath]!.current[name]!
                guard seen.insert(ObjectIdentifier(inode)).inserted else { continue }
                resolveAtCrash(inode, path: joinPath(directoryPath, name))
            }
        }
    }

    private func resolveAtCrash(_ inode: Inode, path: String) {
        defer {
            inode.current = inode.durable
            inode.changesSynced += inode.pending.count
            inode.pending = []
        }
        guard !inode.pending.isEmpty else { return }
        let kept = Int(random.next() % UInt64(inode.pending.count + 1))
        var content = inode.durable
        var note = "kept \(kept)/\(inode.pending.count) changes"
        for index in 0..<kept {
            let isLast = index == kept - 1
            switch inode.pending[index] {
            case .resize(let size):
                Self.resize(&content, to: size)
            case .write(let offset, let bytes):
                guard isLast else {
                    Self.write(&content, bytes, at: offset)
                    continue
                }
                switch random.next() % 3 {
                case 0:
                    Self.write(&content, bytes, at: offset)
                    note += ", last whole"
                case 1:
                    let sector = Self.sectorBytes
                    let firstBoundary = (offset / sector + 1) * sector
                    let boundaries = Array(stride(from: firstBoundary, to: offset + bytes.count, by: sector))
                    if boundaries.isEmpty {
                        note += ", last within one sector: dropped"
                    } else {
                        let cut = boundaries[Int(random.next() % UInt64(boundaries.count))]
                        Self.write(&content, Array(bytes[0..<cut - offset]), at: offset)
                        note += ", last torn at \(cut)"
                    }
                default:
                    Self.write(&content, [UInt8](repeating: 0, count: bytes.count), at: offset)
                    note += ", last zero-filled"
                }
            }
        }
        inode.durable = content
        lastCrashLog.append("\(path): \(note)")
    }

    // MARK: Helpers

    private static func write(_ content: inout [UInt8], _ bytes: [UInt8], at offset: Int) {
        if content.count < offset + bytes.count {
            content.append(contentsOf: repeatElement(0, count: offset + bytes.count - content.count))
        }
        content.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }

    private static func resize(_ content: inout [UInt8], to size: Int) {
        if content.count > size {
            content.removeSubrange(size...)
        } else if content.count < size {
            content.append(contentsOf: repeatElement(0, count: size - content.count))
        }
    }

    private static func normalize(_ path: String) -> String {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }

    private func lookup(_ path: String) -> Inode? {
        let path = Self.normalize(path)
        return directories[parentDirectory(of: path)]?.current[fileName(of: path)]
    }

    private func checkRunning() throws {
        if isHalted { throw StorageError.simulatedCrash }
    }

    private func mutated() {
        mutationCount += 1
        if let limit = crashAfterMutations, mutationCount >= limit {
            isHalted = true
        }
    }

    private func takeSyncFailure(_ path: String) throws {
        if let errno = pendingSyncFailure {
            pendingSyncFailure = nil
            throw StorageError.fsyncFailed(path: path, errno: errno)
        }
    }

    // MARK: File operations used by SimulatedFile

    fileprivate func checkHandle(_ handle: SimulatedFile) throws {
        try checkRunning()
        guard handle.generation == generation, !handle.isClosed else {
            throw StorageError.ioFailed(operation: "use of a stale or closed handle", path: handle.path, errno: 9)
        }
    }

    fileprivate func write(_ handle: SimulatedFile, _ bytes: [UInt8], at offset: Int) throws {
        try checkHandle(handle)
        Self.write(&handle.inode.current, bytes, at: offset)
        handle.inode.pending.append(.write(offset: offset, bytes: bytes))
        writeCount += 1
        mutated()
    }

    fileprivate func resize(_ handle: SimulatedFile, to size: Int) throws {
        try checkHandle(handle)
        Self.resize(&handle.inode.current, to: size)
        handle.inode.pending.append(.resize(to: size))
        mutated()
    }

    fileprivate func sync(_ handle: SimulatedFile) throws {
        try checkHandle(handle)
        try takeSyncFailure(handle.path)
        handle.inode.durable = handle.inode.current
        handle.inode.changesSynced += handle.inode.pending.count
        handle.inode.pending = []
        fileSyncCount += 1
    }

    /// An fdatasync begun now that completes later: it makes durable exactly the changes made
    /// before `begin` (a real one may cover later writes too; this is the worst case, so code
    /// that counts later writes as durable is caught). Valid while the handle is.
    fileprivate func deferredSync(_ handle: SimulatedFile) -> () throws -> Void {
        let inode = handle.inode
        let target = inode.changesSynced + inode.pending.count
        return { [self] in
            try checkHandle(handle)
            try takeSyncFailure(handle.path)
            let count = target - inode.changesSynced
            if count > 0 {
                var content = inode.durable
                for change in inode.pending[0..<count] {
                    switch change {
                    case .write(let offset, let bytes): Self.write(&content, bytes, at: offset)
                    case .resize(let size): Self.resize(&content, to: size)
                    }
                }
                inode.durable = content
                inode.pending.removeFirst(count)
                inode.changesSynced = target
            }
            fileSyncCount += 1
        }
    }

    // MARK: FileSystem

    public func makeDirectory(_ path: String) throws {
        try checkRunning()
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix = prefix.isEmpty || prefix == "/" ? prefix + component : prefix + "/" + component
            if directories[prefix] == nil { directories[prefix] = Directory() }
        }
    }

    public func listDirectory(_ path: String) throws -> [String] {
        try checkRunning()
        guard let directory = directories[Self.normalize(path)] else { throw StorageError.notFound(path: path) }
        return directory.current.keys.sorted()
    }

    public func fileExists(_ path: String) -> Bool {
        lookup(path) != nil
    }

    public func openFile(_ path: String, create: Bool) throws -> StorageFile {
        try checkRunning()
        let path = Self.normalize(path)
        let directoryPath = parentDirectory(of: path)
        guard directories[directoryPath] != nil else { throw StorageError.notFound(path: directoryPath) }
        let name = fileName(of: path)
        if let inode = directories[directoryPath]!.current[name] {
            return SimulatedFile(fileSystem: self, inode: inode, path: path, generation: generation)
        }
        guard create else { throw StorageError.notFound(path: path) }
        let inode = Inode()
        directories[directoryPath]!.current[name] = inode
        mutated()
        return SimulatedFile(fileSystem: self, inode: inode, path: path, generation: generation)
    }

    public func readFile(_ path: String) throws -> [UInt8] {
        try checkRunning()
        guard let inode = lookup(path) else { throw StorageError.notFound(path: path) }
        return inode.current
    }

    public func readFile(_ path: String, offset: UInt64, count: Int) throws -> [UInt8] {
        try checkRunning()
        guard let inode = lookup(path) else { throw StorageError.notFound(path: path) }
        let start = min(Int(clamping: offset), inode.current.count)
        let end = min(start + count, inode.current.count)
        return Array(inode.current[start..<end])
    }

    public func fileSize(_ path: String) throws -> UInt64 {
        try checkRunning()
        guard let inode = lookup(path) else { throw StorageError.notFound(path: path) }
        return UInt64(inode.current.count)
    }

    public func rename(_ source: String, to destination: String) throws {
        try checkRunning()
        let source = Self.normalize(source)
        let destination = Self.normalize(destination)
        guard let inode = lookup(source) else { throw StorageError.notFound(path: source) }
        let destinationDirectory = parentDirectory(of: destination)
        guard directories[destinationDirectory] != nil else { throw StorageError.notFound(path: destinationDirectory) }
        directories[parentDirectory(of: source)]!.current[fileName(of: source)] = nil
        directories[destinationDirectory]!.current[fileName(of: destination)] = inode
        mutated()
    }

    public func removeFile(_ path: String) throws {
        try checkRunning()
        let path = Self.normalize(path)
        guard lookup(path) != nil else { throw StorageError.notFound(path: path) }
        directories[parentDirectory(of: path)]!.current[fileName(of: path)] = nil
        mutated()
    }

    public func syncDirectory(_ path: String) throws {
        try checkRunning()
        let path = Self.normalize(path)
        guard directories[path] != nil else { throw StorageError.notFound(path: path) }
        try takeSyncFailure(path)
        directories[path]!.durable = directories[path]!.current
        directorySyncCount += 1
    }
}

/// A handle on a simulated file; invalid after a crash.
final class SimulatedFile: StorageFile {
    let path: String
    let inode: SimulatedFileSystem.Inode
    let generation: Int
    var isClosed = false
    private unowned let fileSystem: SimulatedFileSystem

    init(fileSystem: SimulatedFileSystem, inode: SimulatedFileSystem.Inode, path: String, generation: Int) {
        self.fileSystem = fileSystem
        self.inode = inode
        self.path = path
        self.generation = generation
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try fileSystem.write(self, bytes, at: Int(offset))
    }

    func append(_ bytes: [UInt8]) throws {
        try fileSystem.write(self, bytes, at: inode.current.count)
    }

    func size() throws -> UInt64 {
        try fileSystem.checkHandle(self)
        return UInt64(inode.current.count)
    }

    func sync() throws {
        try fileSystem.sync(self)
    }

    func dataSync() throws {
        try fileSystem.sync(self)
    }

    func deferredDataSync() -> () throws -> Void {
        fileSystem.deferredSync(self)
    }

    func truncate(to size: UInt64) throws {
        try fileSystem.resize(self, to: Int(size))
    }

    func preallocate(bytes: UInt64) throws {
        try fileSystem.checkHandle(self)
        guard Int(bytes) > inode.current.count else { return }
        try fileSystem.resize(self, to: Int(bytes))
    }

    func close() throws {
        isClosed = true
    }
}
