import Glibc

/// An exclusive lock on a replica's data directory, held while this object lives (`synod
/// serve` keeps it for the life of the process).
///
/// Two replicas writing one write-ahead log would each believe it owns the promises and
/// acceptances in it — a silent break of the acceptor's durability rule. So `synod serve`
/// takes this lock before it reads anything in the directory, and a second process on the
/// same directory stops at once with one line naming the holder.
///
/// Mechanism: `flock(LOCK_EX | LOCK_NB)` on `<directory>/LOCK`, whose content is the
/// holder's process id (advisory, for the message only: the lock is the `flock`, which the
/// kernel drops when the holder dies however it dies, so a stale LOCK file never blocks a
/// restart). `flock` locks belong to an open file description, so a second `open` + `flock`
/// of the same file conflicts even inside one process.
public final class DataDirectoryLock: Sendable {
    /// The name of the lock file inside the data directory.
    public static let fileName = "LOCK"

    public let directory: String
    public let path: String
    /// Open and locked for as long as this object lives: closing it releases the lock.
    private let descriptor: Int32

    /// Creates `directory` if it is missing, then takes the lock or throws.
    ///
    /// - Throws: `DataDirectoryLockError.inUse` when another open file description holds
    ///   the lock (with the holder's pid when its LOCK file says so), `.ioFailed` when a
    ///   system call fails.
    public init(directory: String) throws(DataDirectoryLockError) {
        precondition(!directory.isEmpty, "a data directory path must not be empty")
        try Self.makeDirectory(directory)
        let path = directory.hasSuffix("/") ? directory + Self.fileName : directory + "/" + Self.fileName
        let existed = access(path, F_OK) == 0
        let descriptor = Self.retryingEINTR { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        guard descriptor >= 0 else { throw .ioFailed(operation: "open", path: path, errno: errno) }
        if Self.retryingEINTR({ flock(descriptor, LOCK_EX | LOCK_NB) }) != 0 {
            let error = errno
            let holder = Self.readHolder(descriptor)
            _ = close(descriptor)
            guard error == EWOULDBLOCK else { throw .ioFailed(operation: "flock", path: path, errno: error) }
            throw .inUse(directory: directory, holder: holder)
        }
        do {
            try Self.writeHolder(getpid(), to: descriptor, path: path)
            // A new directory entry survives a crash only once its directory is synced.
            if !existed { try Self.syncDirectory(directory) }
        } catch {
            _ = close(descriptor)
            throw error
        }
        self.directory = directory
        self.path = path
        self.descriptor = descriptor
    }

    deinit {
        _ = close(descriptor)
    }

    /// The process id a lock file names, if it names one.
    public static func holder(ofLockIn directory: String) -> Int32? {
        let descriptor = open(directory + "/" + fileName, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { _ = close(descriptor) }
        return readHolder(descriptor)
    }

    // MARK: - System calls

    private static func makeDirectory(_ directory: String) throws(DataDirectoryLockError) {
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for component in directory.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .ioFailed(operation: "mkdir", path: prefix, errno: errno)
            }
            prefix += "/"
        }
    }

    /// Replaces the file's content with `<pid>\n`.
    private static func writeHolder(_ pid: Int32, to descriptor: Int32, path: String) throws(DataDirectoryLockError) {
        let text = Array("\(pid)\n".utf8)
        guard retryingEINTR({ ftruncate(descriptor, 0) }) == 0 else {
            throw .ioFailed(operation: "ftruncate", path: path, errno: errno)
        }
        let written = text.withUnsafeBytes { bytes in
            retryingEINTR { pwrite(descriptor, bytes.baseAddress, bytes.count, 0) }
        }
        guard written == text.count else { throw .ioFailed(operation: "pwrite", path: path, errno: errno) }
    }

    /// The pid written by the holder; nil while it has not written it yet, or if the file
    /// holds anything else.
    private static func readHolder(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { bytes in
            retryingEINTR { pread(descriptor, bytes.baseAddress, bytes.count, 0) }
        }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        guard let pid = Int32(text.split(separator: "\n").first ?? ""), pid > 0 else { return nil }
        return pid
    }

    private static func syncDirectory(_ directory: String) throws(DataDirectoryLockError) {
        let descriptor = retryingEINTR { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard descriptor >= 0 else { throw .ioFailed(operation: "open", path: directory, errno: errno) }
        defer { _ = close(descriptor) }
        // A failed fsync is never retried (see StorageError.fsyncFailed).
        guard fsync(descriptor) == 0 else { throw .ioFailed(operation: "fsync", path: directory, errno: errno) }
    }

    private static func retryingEINTR<Result: BinaryInteger>(_ call: () -> Result) -> Result {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }
}

/// Why the data directory could not be locked; the description is the whole message.
public enum DataDirectoryLockError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Another process (or another open of the LOCK file) holds the lock.
    case inUse(directory: String, holder: Int32?)
    /// A system call failed.
    case ioFailed(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .inUse(let directory, let holder?):
            return "data directory \(directory) is in use by process \(holder)"
        case .inUse(let directory, nil):
            return "data directory \(directory) is in use by another process"
        case .ioFailed(let operation, let path, let code):
            return "cannot lock the data directory: \(operation) \(path): \(String(cString: strerror(code)))"
        }
    }
}
