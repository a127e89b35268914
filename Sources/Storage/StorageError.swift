/// Operating errors of the storage layer. Each carries the evidence an operator needs;
/// `description` is one line, fit for a log or a fatal error message.
public enum StorageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// fsync or fdatasync failed. **The caller must stop the replica** (the server calls
    /// `fatalError` with this description): after a failed fsync the kernel may already
    /// have dropped the dirty pages and marked them clean, so a retry could "succeed"
    /// without the data ever reaching the disk (PostgreSQL's fsyncgate). Never retry it,
    /// never ignore it.
    case fsyncFailed(path: String, errno: Int32)
    /// A record of the write-ahead log failed its checksum (or could not be decoded) and a
    /// valid record follows it, or it sits in a segment that is not the last: this is not
    /// a torn tail from a crash but damage to data that was acknowledged. Nothing was
    /// truncated.
    case corruptRecord(file: String, offset: UInt64, expectedCRC: UInt32, actualCRC: UInt32)
    /// A snapshot file failed its header or body checksum, or its header is malformed.
    case corruptSnapshot(file: String, reason: String, expectedCRC: UInt32, actualCRC: UInt32)
    /// A system call other than fsync failed.
    case ioFailed(operation: String, path: String, errno: Int32)
    /// A file or directory that must exist does not.
    case notFound(path: String)
    /// A record larger than `WriteAheadLog.recordBytesMax`.
    case recordTooLarge(bytes: Int, max: Int)
    /// The options given to `open` are invalid (one line saying which and why).
    case invalidOptions(String)
    /// A snapshot chunk arrived out of order, out of bounds, or larger than the bound.
    case snapshotTransferInvalid(String)
    /// The simulated file system refused the call because a simulated crash is pending
    /// (tests only; see `SimulatedFileSystem.crashAfterMutations`).
    case simulatedCrash

    /// The advice every corruption message ends with.
    public static let corruptionAdvice =
        "remove this replica's data directory and restart it to catch up from its peers"

    public var description: String {
        switch self {
        case .fsyncFailed(let path, let errno):
            return "fsync failed on \(path) (errno \(errno)): stopping; the data may not be on disk"
        case .corruptRecord(let file, let offset, let expectedCRC, let actualCRC):
            return "corrupt write-ahead log record in \(file) at offset \(offset): "
                + "expected CRC32C \(hex(expectedCRC)), actual \(hex(actualCRC)); "
                + Self.corruptionAdvice
        case .corruptSnapshot(let file, let reason, let expectedCRC, let actualCRC):
            return "corrupt snapshot \(file) (\(reason)): "
                + "expected CRC32C \(hex(expectedCRC)), actual \(hex(actualCRC)); "
                + Self.corruptionAdvice
        case .ioFailed(let operation, let path, let errno):
            return "\(operation) failed on \(path) (errno \(errno))"
        case .notFound(let path):
            return "\(path) does not exist"
        case .recordTooLarge(let bytes, let max):
            return "record of \(bytes) bytes exceeds the write-ahead log's bound of \(max) bytes"
        case .invalidOptions(let reason):
            return "invalid storage options: \(reason)"
        case .snapshotTransferInvalid(let reason):
            return "invalid snapshot transfer: \(reason)"
        case .simulatedCrash:
            return "simulated crash: the file system refuses calls until crash() is called"
        }
    }
}

/// `0x0000abcd` — eight hex digits, as CRCs are printed everywhere in this module.
func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// Sixteen lower-case hex digits, as in file names.
func hex16(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}
