import Glibc

/// `FileSystem` on the real disk through POSIX calls: `open`, `pwrite`, `pread`,
/// `fdatasync`, `fsync`, `posix_fallocate`, `rename`, `unlink`, and `fsync` of a directory
/// file descriptor. Every call retries on `EINTR` except the syncs, which never retry
/// (a failed fsync throws `StorageError.fsyncFailed`; the caller must stop the replica).
public final class PosixFileSystem: FileSystem {
    public init() {}

    public func makeDirectory(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw StorageError.ioFailed(operation: "mkdir", path: prefix, errno: errno)
            }
            prefix += "/"
        }
    }

    public func listDirectory(_ path: String) throws -> [String] {
        guard let directory = opendir(path) else {
            if errno == ENOENT { throw StorageError.notFound(path: path) }
            throw StorageError.ioFailed(operation: "opendir", path: path, errno: errno)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                String(cString: UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func fileExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public func openFile(_ path: String, create: Bool) throws -> StorageFile {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let descriptor = retryingEINTR { open(path, flags, 0o644) }
        guard descriptor >= 0 else {
            if errno == ENOENT { throw StorageError.notFound(path: path) }
            throw StorageError.ioFailed(operation: "open", path: path, errno: errno)
        }
        return PosixFile(path: path, descriptor: descriptor)
    }

    public func readFile(_ path: String) throws -> [UInt8] {
        let size = try fileSize(path)
        return try readFile(path, offset: 0, count: Int(size))
    }

    public func readFile(_ path: String, offset: UInt64, count: Int) throws -> [UInt8] {
        precondition(count >= 0, "negative read count")
        let descriptor = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
        guard descriptor >= 0 else {
            if errno == ENOENT { throw StorageError.notFound(path: path) }
            throw StorageError.ioFailed(operation: "open", path: path, errno: errno)
        }
        defer { _ = Glibc.close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = bytes.withUnsafeMutableBytes { buffer in
                retryingEINTR {
                    pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                }
            }
            guard result >= 0 else {
                throw StorageError.ioFailed(operation: "pread", path: path, errno: errno)
            }
            if result == 0 { break }
            done += result
        }
        if done < count { bytes.removeSubrange(done...) }
        return bytes
    }

    public func fileSize(_ path: String) throws -> UInt64 {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { throw StorageError.notFound(path: path) }
            throw StorageError.ioFailed(operation: "stat", path: path, errno: errno)
        }
        return UInt64(info.st_size)
    }

    public func rename(_ source: String, to destination: String) throws {
        guard Glibc.rename(source, destination) == 0 else {
            throw StorageError.ioFailed(operation: "rename to \(destination)", path: source, errno: errno)
        }
    }

    public func removeFile(_ path: String) throws {
        guard unlink(path) == 0 else {
            if errno == ENOENT { throw StorageError.notFound(path: path) }
            throw StorageError.ioFailed(operation: "unlink", path: path, errno: errno)
        }
    }

    public func syncDirectory(_ path: String) throws {
        let descriptor = retryingEINTR { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard descriptor >= 0 else {
            throw StorageError.ioFailed(operation: "open directory", path: path, errno: errno)
        }
        defer { _ = Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else {
            throw StorageError.fsyncFailed(path: path, errno: errno)
        }
    }
}

/// One open file descriptor.
final class PosixFile: StorageFile {
    let path: String
    private var descriptor: Int32

    init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
    }

    private func checkOpen() throws {
        guard descriptor >= 0 else {
            throw StorageError.ioFailed(operation: "use after close", path: path, errno: EBADF)
        }
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try checkOpen()
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                retryingEINTR {
                    pwrite(descriptor, buffer.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
                }
            }
            guard result > 0 else {
                throw StorageError.ioFailed(operation: "pwrite", path: path, errno: result == 0 ? EIO : errno)
            }
            done += result
        }
    }

    func append(_ bytes: [UInt8]) throws {
        try write(bytes, at: try size())
    }

    func size() throws -> UInt64 {
        try checkOpen()
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw StorageError.ioFailed(operation: "fstat", path: path, errno: errno)
        }
        return UInt64(info.st_size)
    }

    func sync() throws {
        try checkOpen()
        guard fsync(descriptor) == 0 else {
            throw StorageError.fsyncFailed(path: path, errno: errno)
        }
    }

    func dataSync() throws {
        try checkOpen()
        guard fdatasync(descriptor) == 0 else {
            throw StorageError.fsyncFailed(path: path, errno: errno)
        }
    }

    func truncate(to size: UInt64) throws {
        try checkOpen()
        guard retryingEINTR({ ftruncate(descriptor, off_t(size)) }) == 0 else {
            throw StorageError.ioFailed(operation: "ftruncate", path: path, errno: errno)
        }
    }

    func preallocate(bytes: UInt64) throws {
        try checkOpen()
        guard bytes > 0 else { return }
        // posix_fallocate returns the error instead of setting errno.
        let result = posix_fallocate(descriptor, 0, off_t(bytes))
        guard result == 0 else {
            throw StorageError.ioFailed(operation: "fallocate", path: path, errno: result)
        }
    }

    func close() throws {
        guard descriptor >= 0 else { return }
        let result = Glibc.close(descriptor)
        descriptor = -1
        guard result == 0 else {
            throw StorageError.ioFailed(operation: "close", path: path, errno: errno)
        }
    }
}

/// Repeats a system call interrupted by a signal.
private func retryingEINTR<T: BinaryInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result < 0 && errno == EINTR { continue }
        return result
    }
}
