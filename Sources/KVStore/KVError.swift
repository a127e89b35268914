import ByteCodec

/// Operating errors of the state machine (STYLE §6): typed, with evidence, and with etcd's
/// exact message where etcd has one, so the server can hand `message` to etcd clients.
public enum KVError: Error, Sendable, Hashable, CustomStringConvertible {
    /// etcd `ErrGRPCEmptyKey`.
    case emptyKey
    /// Key (or range end) longer than `KVLimits.keySizeBytesMax`. Synod-specific.
    case keyTooLarge(sizeBytes: Int)
    /// etcd `ErrGRPCRequestTooLarge`: a value over `valueSizeBytesMax` or a request payload over
    /// `requestPayloadBytesMax`.
    case requestTooLarge(sizeBytes: Int)
    /// etcd `ErrGRPCTooManyOps`.
    case tooManyOperations
    /// etcd `ErrGRPCDuplicateKey`: a txn puts one key twice, or puts a key it also deletes.
    case duplicateKey
    /// etcd `ErrGRPCValueProvided`: `ignoreValue` with a non-empty value.
    case valueProvided
    /// etcd `ErrKeyNotFound`: `ignoreValue` put on a missing key.
    case keyNotFound
    /// etcd `ErrCompacted`: a read below, a watch from or a compaction at or below the
    /// compacted revision. Carries the store's compacted revision (a watch reports it as
    /// etcd's `compact_revision`).
    case compacted(revision: Int64)
    /// etcd `ErrFutureRev`.
    case futureRevision(revision: Int64)
    /// Txns nested deeper than `KVLimits.txnNestingDepthMax`. Synod-specific.
    case txnNestingTooDeep(depth: Int)
    /// More than `KVLimits.txnOperationsTotalMax` compares and ops over all levels. Synod-specific.
    case txnTooManyOperationsTotal(count: Int)
    /// A write whose sequence is below the last one applied for its client: never applied.
    case staleRequest(RequestID, lastSequence: UInt64)
    /// etcd `ErrGRPCNoSpace`: the NOSPACE alarm is active and the request would store data.
    case noSpace
    /// `apply(encoded:)` got bytes that are not a `WriteCommand`; nothing was applied.
    case malformedCommand(KVCodecError)
    /// etcd's auth errors (Auth.swift).
    case auth(AuthError)
    /// A lease request failed (`Leases.swift`).
    case lease(LeaseError)

    /// The text a client sees; etcd's exact wording where etcd has the error.
    public var message: String {
        switch self {
        case .emptyKey:
            return "etcdserver: key is not provided"
        case .keyTooLarge(let size):
            return "synod: key is too large (\(size) bytes, limit \(KVLimits.keySizeBytesMax))"
        case .requestTooLarge:
            return "etcdserver: request is too large"
        case .tooManyOperations:
            return "etcdserver: too many operations in txn request"
        case .duplicateKey:
            return "etcdserver: duplicate key given in txn request"
        case .valueProvided:
            return "etcdserver: value is provided"
        case .keyNotFound:
            return "etcdserver: key not found"
        case .noSpace:
            return "etcdserver: mvcc: database space exceeded"
        case .compacted:
            return "etcdserver: mvcc: required revision has been compacted"
        case .futureRevision:
            return "etcdserver: mvcc: required revision is a future revision"
        case .txnNestingTooDeep(let depth):
            return "synod: txn nested too deeply (\(depth) levels, limit \(KVLimits.txnNestingDepthMax))"
        case .txnTooManyOperationsTotal(let count):
            return "synod: too many operations in txn request (\(count) over all nested txns, limit "
                + "\(KVLimits.txnOperationsTotalMax))"
        case .staleRequest(let id, let lastSequence):
            return "synod: stale request (client \(id.clientID) sequence \(id.sequence), "
                + "last applied sequence \(lastSequence))"
        case .malformedCommand(let error):
            return "synod: malformed command: \(error)"
        case .auth(let error):
            return error.message
        case .lease(let error):
            return error.message
        }
    }

    public var description: String { message }
}

/// Why a command, result or snapshot of the store could not be decoded: the decoding error
/// every Synod format shares.
public typealias KVCodecError = DecodeError

/// A snapshot that cannot be restored.
public enum KVSnapshotError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Shorter than magic, format byte and checksum.
    case tooShort(sizeBytes: Int)
    case badMagic([UInt8])
    case unsupportedFormat(UInt8)
    /// The trailing CRC-32C does not match the content: corruption.
    case checksumMismatch(stored: UInt32, computed: UInt32)
    /// The checksum matched but the content does not parse.
    case malformed(KVCodecError)
    /// The content parses but breaks an invariant of the store.
    case invalidState(String)

    public var description: String {
        switch self {
        case .tooShort(let size): return "snapshot too short (\(size) bytes)"
        case .badMagic(let bytes): return "snapshot has bad magic \(KVBytes.describe(bytes))"
        case .unsupportedFormat(let format): return "snapshot format \(format) is not supported"
        case .checksumMismatch(let stored, let computed):
            return "snapshot checksum mismatch (stored \(stored), computed \(computed))"
        case .malformed(let error): return "snapshot malformed: \(error)"
        case .invalidState(let text): return "snapshot state invalid: \(text)"
        }
    }
}
