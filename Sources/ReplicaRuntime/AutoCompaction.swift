import KVStore
import Paxos

/// etcd's automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`):
/// the leader proposes a `compact` command now and then, so history does not grow without
/// bound. Only the leader decides (from its own clock); the command goes through the log, so
/// every replica compacts at the same point of its history.
public enum AutoCompaction: Sendable, Hashable, CustomStringConvertible {
    /// Keep the last `retain` revisions (etcd's `revision` mode). A compaction is proposed
    /// once a tenth of `retain` new revisions (at least one) have accumulated beyond it.
    case revision(retain: Int64)
    /// Keep the revisions of the last `milliseconds` (etcd's `periodic` mode): every tenth of
    /// the period (at most once a second apart), compact to the revision the store had one
    /// period ago.
    case periodic(milliseconds: UInt64)

    public var description: String {
        switch self {
        case .revision(let retain): return "revision mode, keeping the last \(retain) revisions"
        case .periodic(let milliseconds): return "periodic mode, keeping \(milliseconds) ms of history"
        }
    }
}

/// The leader's bookkeeping for `AutoCompaction`.
struct AutoCompactor {
    let policy: AutoCompaction
    /// (time, revision) samples for periodic mode, oldest first; at most `samplesMax`.
    var samples: [(at: RuntimeInstant, revision: Int64)] = []
    var lastSample = RuntimeInstant(nanoseconds: 0)
    /// The last revision proposed for compaction (not proposed again).
    var proposedThrough: Int64 = 0
    static let samplesMax = 11

    /// The revision to compact to now, if any.
    mutating func target(now: RuntimeInstant, revision: Int64, compacted: Int64) -> Int64? {
        let floor = max(compacted, proposedThrough)
        switch policy {
        case .revision(let retain):
            let target = revision - retain
            let step = max(1, retain / 10)
            guard target >= floor + step else { return nil }
            return target
        case .periodic(let milliseconds):
            let interval = max(milliseconds / 10, 1_000)
            if samples.isEmpty || lastSample.milliseconds(to: now) >= interval {
                samples.append((now, revision))
                lastSample = now
                if samples.count > Self.samplesMax { samples.removeFirst(samples.count - Self.samplesMax) }
            }
            // The newest sample at least one period old.
            guard let old = samples.last(where: { $0.at.milliseconds(to: now) >= milliseconds }), old.revision > floor
            else { return nil }
            return old.revision
        }
    }
}
