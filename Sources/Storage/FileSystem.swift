/// The file operations the write-ahead log and the snapshots need, and nothing more, so
/// that the same storage code runs on the real disk (`PosixFileSystem`) and inside the
/// deterministic simulator (`SimulatedFileSystem`).
///
/// Durability rules every implementation follows (and `SimulatedFileSystem` enforces at
/// `crash()`): bytes written to a file are durable only after `sync()` or `dataSync()` of
/// that file; a created, renamed or removed *name* is durable only after
/// `syncDirectory(_:)` of its directory. Implementations never sync on their own: the
/// callers (`WriteAheadLog`, `SnapshotStore`) decide when, so the policy lives in one place
/// and the simulator can check it.
///
/// A failed `sync`, `dataSync` or `syncDirectory` throws `StorageError.fsyncFailed`, and
/// the caller must stop the replica (see that case).
///
/// Implementations are not thread-safe: one thread at a time.
public protocol FileSystem: AnyObject {
    /// Creates the directory and any missing parents; no error if it exists.
    func makeDirectory(_ path: String) throws
    /// The names (not paths) of the entries of `path`, sorted.
    func listDirectory(_ path: String) throws -> [String]
    func fileExists(_ path: String) -> Bool
    /// Opens `path` for reading and writing; creates it (empty) if `create` and missing.
    func openFile(_ path: String, create: Bool) throws -> StorageFile
    /// The whole file.
    func readFile(_ path: String) throws -> [UInt8]
    /// Up to `count` bytes from `offset` (fewer at the end of the file).
    func readFile(_ path: String, offset: UInt64, count: Int) throws -> [UInt8]
    func fileSize(_ path: String) throws -> UInt64
    /// Atomically replaces `destination` with `source` (POSIX rename).
    func rename(_ source: String, to destination: String) throws
    func removeFile(_ path: String) throws
    /// fsync of the directory itself: makes its creates, renames and removes durable.
    func syncDirectory(_ path: String) throws
}

/// An open file. Writes are positional (`pwrite`); there is no implicit file offset.
public protocol StorageFile: AnyObject {
    var path: String { get }
    /// Writes all of `bytes` at `offset`, extending the file if needed.
    func write(_ bytes: [UInt8], at offset: UInt64) throws
    /// Writes all of `bytes` at the current end of the file.
    func append(_ bytes: [UInt8]) throws
    func size() throws -> UInt64
    /// fsync: data and metadata (size) durable.
    func sync() throws
    /// fdatasync: data durable, and the metadata needed to read it back (the size).
    func dataSync() throws
    func truncate(to size: UInt64) throws
    /// An fdatasync to run later, possibly on another thread (`PendingSync`): it makes
    /// durable at least the bytes written before this call (a real fdatasync also covers
    /// later ones; the simulator's does not, the worst case). Not to be run after `close()`.
    func deferredDataSync() -> () throws -> Void
    /// Reserves space so the file is at least `bytes` long, zero-filled (fallocate mode 0).
    /// Later writes into it need no size change, so `dataSync` stays cheap.
    func preallocate(bytes: UInt64) throws
    func close() throws
}

extension StorageFile {
    public func deferredDataSync() -> () throws -> Void {
        { try self.dataSync() }
    }
}

/// `directory/name`.
public func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

/// The directory part of `path` (`"."` when there is none).
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    if slash == path.startIndex { return "/" }
    return String(path[path.startIndex..<slash])
}

/// The last component of `path`.
public func fileName(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[path.index(after: slash)...])
}
