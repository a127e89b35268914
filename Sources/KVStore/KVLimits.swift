/// Every bound of the key-value state machine, in one place (STYLE §9: a limit on everything).
///
/// Where etcd has a limit we take its number; where it has none we pick one and say why.
/// `KVLimitsTests` checks how the limits relate to each other.
public enum KVLimits {
    /// Largest key accepted by `put`, `deleteRange`, `range` and `compare` (also bounds `rangeEnd`).
    ///
    /// etcd has no separate key limit (only the 1.5 MiB request limit). Synod keeps keys
    /// small because every key sits in memory in the ordered index and in every snapshot.
    public static let keySizeBytesMax = 32 * 1024

    /// Largest value accepted by `put`: etcd's default `--max-request-bytes` (1.5 MiB).
    /// A larger value is refused with etcd's "etcdserver: request is too large".
    public static let valueSizeBytesMax = 1_572_864

    /// Largest sum of all key, range-end and value bytes in one write request, nested txns
    /// included. etcd bounds the whole marshalled request by 1.5 MiB; Synod bounds the payload
    /// by 2 MiB so one maximal value plus its key always fits.
    public static let requestPayloadBytesMax = 2 * 1024 * 1024

    /// etcd's `--max-txn-ops` default: at most this many compares, and at most this many ops
    /// in each branch, per txn level; a nested txn gets the budget its parent left (etcd's rule).
    public static let txnOperationsMax = 128

    /// Deepest nesting of txns inside txns. etcd has none explicit (its op budget implies up to
    /// 128); Synod stops at 16 so that decoding and evaluation recurse a bounded depth.
    public static let txnNestingDepthMax = 16

    /// Most compares plus ops in one txn counted over all nesting levels and both branches.
    /// Synod-specific: without it etcd's per-level rule admits ~77 000 ops in one request.
    public static let txnOperationsTotalMax = 1024

    /// Largest encoded `WriteCommand`: the payload bound plus room for per-op framing (tags,
    /// varint lengths and revisions: at most 70 bytes for a range op with extreme revisions,
    /// 18 for a compare, 8 for a put) and the 22-byte header. Every request that passes
    /// validation encodes within it (`CodecTests.maximalValidCommandsFitTheFrame`).
    public static let commandBytesMax = requestPayloadBytesMax + txnOperationsTotalMax * 96 + 64

    /// Client sessions remembered for exactly-once; beyond this the least recently used
    /// session is evicted (a retry from an evicted client would be applied again).
    public static let sessionsMax = 16_384

    /// Entries per leaf chunk of the ordered key index; a full chunk splits in two halves.
    public static let keyIndexChunkEntriesMax = 512

    /// etcd's `MaxLeaseTTL`: a grant asking for more fails with "too large lease TTL".
    public static let leaseTTLSecondsMax: Int64 = 9_000_000_000

    /// Leases alive at once. etcd has no bound; Synod keeps every lease in memory, in every
    /// snapshot and (on the leader) in the expiry table, so it sets one.
    public static let leasesMax = 65_536
}
