/// etcd's leases as commands of the replicated log.
///
/// A lease is a time to live that keys hang on: when it is revoked, or when it expires, every
/// key attached to it is deleted. Grant, revoke and expiry go through the log, so every
/// replica deletes the same keys at the same revision. Time itself never enters the store:
/// only the leader's runtime watches the clock, and when a lease ran out it proposes an
/// `expire` command, which every replica applies exactly like a revoke. Keep-alives do not
/// go through the log (as in etcd): they only move the leader's deadline.
///
/// Lease epochs close a race between leaders: a leader proposes an expiry that only its own
/// acceptor accepts, another leader renews the lease, and Paxos later makes the first
/// re-propose (and so choose) its old value. Each leader therefore logs a `leaseEpoch`
/// (its ballot) before it tracks deadlines, and every expiry carries the epoch of the leader
/// that proposed it: applied in a later epoch, an expiry changes nothing (ARCHITECTURE §6.5).

/// A leader's term for leases: its Paxos ballot (round, then replica id), so later leaders
/// have greater epochs. The store keeps the greatest it applied.
public struct LeaseEpoch: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var round: UInt64
    public var leader: UInt64

    public init(round: UInt64, leader: UInt64) {
        self.round = round
        self.leader = leader
    }

    /// Before any leader logged one.
    public static let none = LeaseEpoch(round: 0, leader: 0)

    public static func < (lhs: LeaseEpoch, rhs: LeaseEpoch) -> Bool {
        (lhs.round, lhs.leader) < (rhs.round, rhs.leader)
    }

    public var description: String { "\(round).\(leader)" }
}

/// One lease operation of the log.
public enum LeaseOperation: Sendable, Hashable {
    /// etcd's `LeaseGrant`. An id of 0 lets the store pick one: derived from its own grant
    /// counter, so every replica picks the same.
    case grant(id: Int64, ttlSeconds: Int64)
    /// etcd's `LeaseRevoke`: deletes the lease and its keys (one revision for all of them).
    case revoke(id: Int64)
    /// The clock of the leader of `epoch` says the lease ran out: applied exactly as
    /// `revoke` while the store's epoch is `epoch`, as a no-op ("not found") after a later
    /// leader's epoch. `epoch` nil: written by a build before epochs, applied as `revoke`.
    case expire(id: Int64, epoch: LeaseEpoch?)
    /// A new leader's epoch, logged before it tracks lease deadlines; raises the store's
    /// epoch (a lower or equal one, re-proposed late, changes nothing). Takes no revision.
    case epoch(LeaseEpoch)

    /// The lease the operation names (0 for a grant that lets the store pick, and for an epoch).
    public var leaseID: Int64 {
        switch self {
        case .grant(let id, _), .revoke(let id), .expire(let id, _): return id
        case .epoch: return 0
        }
    }
}

/// The answer to a lease operation.
public struct LeaseResponse: Sendable, Hashable {
    /// The store revision after the operation (a revoke that deleted keys took one).
    public var revision: Int64
    /// The lease granted, revoked or expired.
    public var id: Int64
    /// The lease's time to live, as granted.
    public var ttlSeconds: Int64
    /// Keys the revoke or expiry deleted (0 for a grant).
    public var keysDeleted: Int64

    public init(revision: Int64, id: Int64, ttlSeconds: Int64, keysDeleted: Int64 = 0) {
        self.revision = revision
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.keysDeleted = keysDeleted
    }
}

/// What the store knows of one lease (TimeToLive, Leases; the runtime's expiry tracking).
public struct LeaseInfo: Sendable, Hashable {
    public var id: Int64
    /// The time to live as granted, in seconds.
    public var ttlSeconds: Int64
    /// The keys attached to it, in byte order.
    public var keys: [[UInt8]]

    public init(id: Int64, ttlSeconds: Int64, keys: [[UInt8]]) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.keys = keys
    }
}

/// Lease errors, with etcd's exact text (`rpctypes`).
public enum LeaseError: Sendable, Hashable {
    /// etcd `ErrGRPCLeaseNotFound` (NotFound).
    case notFound
    /// etcd `ErrGRPCLeaseExist` (FailedPrecondition).
    case alreadyExists
    /// etcd `ErrGRPCLeaseTTLTooLarge` (OutOfRange): above `KVLimits.leaseTTLSecondsMax`.
    case ttlTooLarge
    /// etcd `ErrGRPCLeaseProvided` (InvalidArgument): a put with both `lease` and `ignoreLease`.
    case leaseProvided
    /// More than `KVLimits.leasesMax` leases. Synod-specific.
    case tooManyLeases

    public var message: String {
        switch self {
        case .notFound: return "etcdserver: requested lease not found"
        case .alreadyExists: return "etcdserver: lease already exists"
        case .ttlTooLarge: return "etcdserver: too large lease TTL"
        case .leaseProvided: return "etcdserver: lease is provided"
        case .tooManyLeases: return "synod: too many leases (limit \(KVLimits.leasesMax))"
        }
    }
}

/// One lease in the store. Invariant: every key in `keys` is live and its `lease` is this
/// lease's id; every live key with a lease is in that lease's `keys`.
struct StoredLease: Sendable, Equatable {
    var ttlSeconds: Int64
    var keys: Set<[UInt8]>
}

extension LeaseOperation: CustomStringConvertible {
    /// Ids in hex, as etcdctl prints them.
    public var description: String {
        switch self {
        case .grant(let id, let ttlSeconds): return "lease-grant \(id == 0 ? "(any)" : String(id, radix: 16)) ttl=\(ttlSeconds)"
        case .revoke(let id): return "lease-revoke \(String(id, radix: 16))"
        case .expire(let id, let epoch):
            return "lease-expire \(String(id, radix: 16))" + (epoch.map { " epoch=\($0)" } ?? "")
        case .epoch(let epoch): return "lease-epoch \(epoch)"
        }
    }
}
