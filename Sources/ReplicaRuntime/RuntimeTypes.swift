import KVStore
import Paxos
import Storage

/// A point on the runtime's monotonic clock, in nanoseconds from an arbitrary origin. The
/// server reads it from `ContinuousClock`; the simulator from its simulated time.
public struct RuntimeInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    public static func milliseconds(_ value: UInt64) -> RuntimeInstant {
        RuntimeInstant(nanoseconds: value &* 1_000_000)
    }

    /// Later by `milliseconds` (saturating).
    public func advanced(byMilliseconds milliseconds: UInt64) -> RuntimeInstant {
        let (product, overflow1) = milliseconds.multipliedReportingOverflow(by: 1_000_000)
        let (sum, overflow2) = nanoseconds.addingReportingOverflow(product)
        return RuntimeInstant(nanoseconds: overflow1 || overflow2 ? .max : sum)
    }

    /// Milliseconds from `self` to `later` (0 if `later` is not later).
    public func milliseconds(to later: RuntimeInstant) -> UInt64 {
        later.nanoseconds > nanoseconds ? (later.nanoseconds - nanoseconds) / 1_000_000 : 0
    }

    public static let distantFuture = RuntimeInstant(nanoseconds: .max)

    public static func < (lhs: RuntimeInstant, rhs: RuntimeInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public var description: String { "\(nanoseconds / 1_000_000)ms" }
}

/// What a client request ends with.
public enum RequestOutcome<Value: Sendable>: Sendable {
    case success(Value, ReplicaPosition)
    case failure(RequestFailure)
}

/// Why a request could not be served; each maps to etcd's status code and message.
public enum RequestFailure: Error, Sendable, Equatable {
    case noLeader
    /// The leader this replica forwarded the write to lost its leadership before the
    /// write was known chosen (etcd's "leader changed"); the client retries with the same
    /// request id, which keeps the retry exactly-once.
    case leaderChanged
    case timedOut
    case recovering
    case stopping
    /// A queue is at its bound in count or bytes (etcd's "too many requests").
    case tooManyRequests
    case store(KVError)
}

/// The replica's position when a request was answered, for response headers.
public struct ReplicaPosition: Sendable, Hashable {
    public var revision: Int64
    public var leader: ReplicaID?
    public var ballotRound: UInt64

    public init(revision: Int64, leader: ReplicaID?, ballotRound: UInt64) {
        self.revision = revision
        self.leader = leader
        self.ballotRound = ballotRound
    }
}

/// Replica status, for Maintenance.Status, logs and the simulator's checks.
public struct ReplicaStatus: Sendable {
    public var revision: Int64
    public var leader: ReplicaID?
    public var ballotRound: UInt64
    public var chosenThrough: Slot
    public var appliedThrough: Slot
    public var diskBytes: UInt64
    public var isDown: Bool
    public var isLeader: Bool
    /// The store's size as the space quota measures it (`KVStore.approximateBytes`).
    public var storeBytes: Int
    /// The cluster's active alarms, as this replica has applied them.
    public var alarms: [AlarmMember]

    public init(
        revision: Int64, leader: ReplicaID?, ballotRound: UInt64, chosenThrough: Slot, appliedThrough: Slot,
        diskBytes: UInt64, isDown: Bool, isLeader: Bool = false, storeBytes: Int = 0, alarms: [AlarmMember] = []
    ) {
        self.revision = revision
        self.leader = leader
        self.ballotRound = ballotRound
        self.chosenThrough = chosenThrough
        self.appliedThrough = appliedThrough
        self.diskBytes = diskBytes
        self.isDown = isDown
        self.isLeader = isLeader
        self.storeBytes = storeBytes
        self.alarms = alarms
    }

    /// What a replica that cannot be asked reports.
    public static let unreachable = ReplicaStatus(
        revision: 0, leader: nil, ballotRound: 0, chosenThrough: 0, appliedThrough: 0, diskBytes: 0, isDown: true)
}

public typealias WriteReply = @Sendable (RequestOutcome<WriteResult>) -> Void
public typealias ReadReply = @Sendable (RequestOutcome<RangeResponse>) -> Void
public typealias LeaseReply = @Sendable (RequestOutcome<LeaseState>) -> Void

/// Everything that drives a `ReplicaRuntime`. The server's event loop and the simulator
/// hand it the same events.
public enum RuntimeEvent: Sendable {
    /// A Paxos message from a peer.
    case message(Envelope)
    /// A piece of a snapshot a peer is sending.
    case snapshotChunk(from: ReplicaID, SnapshotChunk)
    /// A client write: the command, its encoding (done off the runtime's thread), the
    /// time after which nobody waits for it, and where its outcome goes.
    case write(WriteCommand, Command, deadline: RuntimeInstant, reply: WriteReply)
    /// A client read; linearizable unless `serializable`.
    case read(RangeRequest, serializable: Bool, deadline: RuntimeInstant, reply: ReadReply)
    /// A status query.
    case status(@Sendable (ReplicaStatus) -> Void)
    /// A planned leader change: if this replica leads, it hands leadership to `to` (nil:
    /// the most up-to-date peer). `reply` says whether a transfer started.
    case transferLeadership(to: ReplicaID?, reply: @Sendable (Bool) -> Void)
    /// A consistent image of the state machine for a backup: the slot it is applied
    /// through, its revision and `KVStore.snapshot()` bytes (nil while the replica is down).
    case backup(@Sendable (BackupImage?) -> Void)
    /// A snapshot that `runInBackground` wrote (or failed to write, saying why).
    case snapshotWritten(PendingSnapshot, failure: String?)
    /// The files an adopted snapshot made obsolete were removed off the driver's thread
    /// (`StorageCleanup`), or could not be (saying why).
    case storageCleaned(failure: String?)
    /// The write-ahead-log sync that `syncInBackground` ran (successfully, or with its
    /// `failure`): the outputs waiting for it may be released.
    case synced(PendingSync)
    /// A lease keep-alive (`renew`) or time-to-live query, answered by the leader
    /// (`ReplicaRuntime+Leases.swift`).
    case leaseKeepAlive(lease: Int64, renew: Bool, deadline: RuntimeInstant, reply: LeaseReply)

    /// Bytes the event holds, for the inbox's byte bound.
    public var approximateBytes: Int {
        switch self {
        case .message(let envelope): return envelope.message.approximateBytes
        case .snapshotChunk(_, let chunk): return chunk.bytes.count + SnapshotChunk.headerBytes
        case .write(_, let command, _, _): return command.bytes.count + 64
        case .read(let request, _, _, _): return request.key.count + request.rangeEnd.count + 64
        case .status, .transferLeadership, .backup, .snapshotWritten, .storageCleaned, .synced: return 16
        case .leaseKeepAlive: return 64
        }
    }

    /// Whether this is a client request (bounded separately from peer traffic).
    public var isClientRequest: Bool {
        switch self {
        case .write, .read, .leaseKeepAlive: return true
        default: return false
        }
    }
}

/// The state machine as of one applied slot, for `Maintenance.Snapshot`.
public struct BackupImage: Sendable {
    public var appliedThrough: Slot
    public var revision: Int64
    public var stateMachine: [UInt8]

    public init(appliedThrough: Slot, revision: Int64, stateMachine: [UInt8]) {
        self.appliedThrough = appliedThrough
        self.revision = revision
        self.stateMachine = stateMachine
    }
}

/// A log line's level: the runtime reports what happens, its driver decides where it goes.
public enum RuntimeLogLevel: Sendable {
    case debug, info, notice, warning, error, critical
}
