import ByteCodec

/// The replicated state machine: an etcd-v3-shaped key-value store applied in slot order on
/// every replica.
///
/// Pure and deterministic: it imports only the standard library and ByteCodec, reads no clock and no
/// randomness, and never lets `Dictionary` order reach an output, a snapshot or a digest. Two
/// replicas that apply the same commands in the same order hold equal stores, produce equal
/// results, equal snapshot bytes and equal `stateDigest()`s.
///
/// Revisions follow etcd: an empty store is at revision 1; every write request that changes
/// something takes the next revision (a txn once for all its writes); a delete that deletes
/// nothing, a failed request, a read-only txn and a compaction take none.
///
/// History (etcd's MVCC): every version of every key is kept until a compaction command
/// forgets what reads at or after its revision no longer need. `range` reads any retained
/// revision, `events(from:key:rangeEnd:limit:)` replays the change log for watches,
/// `lastAppliedEvents` are the changes of the last applied command, `history(key:rangeEnd:limit:)`
/// lists versions with the leader's proposal time, `hashKV(revision:)` fingerprints the
/// history as etcd's HashKV does, and `approximateBytes` sizes it for a space quota.
///
/// Exactly-once: every `WriteCommand` carries a `RequestID`. The session table remembers
/// each client's last sequence and result; a repeat returns that result without applying,
/// an older sequence fails as stale, a newer one is applied and remembered. The table holds
/// at most `KVLimits.sessionsMax` clients and evicts the least recently used one, ordered by
/// the store's own use counter (`sessionClock`), never by hashing order.
public struct KVStore: Sendable {
    /// The live keys in byte order (the state at `revision`).
    var index = KeyIndex()

    /// Every retained version of every key, keys in byte order, for reads at older revisions.
    /// Invariant: the last version of each key is `index`'s entry for it, or a tombstone when
    /// the key is not live.
    var history = VersionIndex()

    /// The changes of every revision from `compactedRevision` (kept so a watch may start
    /// there, as etcd allows; revision 1, the empty store, has none) up to `revision`, in
    /// revision order. Invariant: one record per revision. (After restoring a format-1
    /// snapshot the compacted revision's own record is missing: see `firstWatchableRevision`.)
    var changeLog = ChangeLog()

    /// etcd's `compactMainRev`: reads and watches below it fail as compacted; 0 until the
    /// first compaction. Invariant: `compactedRevision <= revision`.
    public internal(set) var compactedRevision: Int64 = 0

    /// Wrapping sum of `versionDigest` over every retained version and `eventOrderDigest` over
    /// every change-log event: the history part of `stateDigest()`, kept incrementally by
    /// writes and compactions.
    var historyDigest: UInt64 = 0

    /// A running estimate of the memory the retained keys, values and history take, for the
    /// server's space quota (etcd's NOSPACE alarm). Derived, the same on every replica.
    public internal(set) var approximateBytes = 0

    /// The proposal time of the command being applied (not part of the state).
    var applyingProposedAtMilliseconds: Int64 = 0

    /// The revision the last `apply` wrote, 0 when it wrote none (not part of the state).
    var lastAppliedWriteRevision: Int64 = 0

    /// Reused to encode each applied result for its session digest (not part of the state).
    var digestScratch = ByteWriter()

    /// etcd's store revision. Invariant: every key's `modRevision <= revision`; starts at 1.
    public internal(set) var revision: Int64 = 1

    /// clientID → last sequence and result. Invariant: never holds clientID 0;
    /// `count <= KVLimits.sessionsMax`.
    var sessions: [UInt64: ClientSession] = [:]

    /// Ticks once per session use; a session's `lastUsed` is the tick of its last use, so
    /// uses are totally ordered and eviction is deterministic.
    var sessionClock: UInt64 = 0

    /// Sessions in order of use, oldest first, with stale entries (a session used again
    /// later, or gone) skipped lazily. Derived from `sessions`; rebuilt on restore.
    var sessionRecency: [SessionUse] = []
    var sessionRecencyHead = 0

    /// Wrapping sum of `keyDigest` over all keys, and of `ClientSession.digest` over all
    /// sessions: the incremental parts of `stateDigest()`.
    var keysDigest: UInt64 = 0
    var sessionsDigest: UInt64 = 0

    /// Users, roles, permissions and the enabled flag (KVStore+Auth.swift).
    var auth = AuthState()
    /// Active alarms (etcd's alarm store), in (memberID, alarm) order (`KVStore+Alarms.swift`).
    var alarms: [AlarmMember] = []
    /// Leases by id (`KVStore+Leases.swift`). Invariant: `count <= KVLimits.leasesMax`; see
    /// `StoredLease` for how they relate to the keys' `lease`.
    var leases: [Int64: StoredLease] = [:]
    /// Lease ids the store picked so far: the seed of the next one it picks.
    var leaseIDsPicked: UInt64 = 0
    /// Wrapping sum of `leaseDigest` over all leases and `attachmentDigest` over all their keys.
    var leasesDigest: UInt64 = 0
    /// The greatest `LeaseEpoch` applied: expiries proposed under another epoch change nothing.
    public internal(set) var leaseEpoch = LeaseEpoch.none
    /// Bumped whenever a lease is granted, revoked, expired or restored (not part of the
    /// state): the runtime's cue to bring its expiry deadlines in line with the leases.
    public internal(set) var leaseGeneration: UInt64 = 0

    /// An empty store at revision 1.
    public init() {}

    /// Number of live keys.
    public var count: Int { index.count }

    /// The live pair for `key`, if any.
    public func get(_ key: [UInt8]) -> KeyValue? {
        index.find(key)
    }

    /// Number of client sessions remembered for exactly-once.
    public var sessionCount: Int { sessions.count }

    /// The last sequence applied for `clientID`, if its session is remembered.
    public func lastSequence(clientID: UInt64) -> UInt64? {
        sessions[clientID]?.sequence
    }

    /// Applies one command of the log (see the type's comment for exactly-once rules).
    public mutating func apply(_ command: WriteCommand) -> WriteResult {
        lastAppliedWriteRevision = 0
        applyingProposedAtMilliseconds = command.proposedAtMilliseconds
        defer { applyingProposedAtMilliseconds = 0 }
        let requestID = command.requestID
        guard requestID.hasSession else { return applyOperation(command.operation) }
        if let session = sessions[requestID.clientID] {
            if requestID.sequence == session.sequence {
                touchSession(clientID: requestID.clientID)
                return session.result
            }
            if requestID.sequence < session.sequence {
                return .failure(.staleRequest(requestID, lastSequence: session.sequence), revision: revision)
            }
        }
        let result = applyOperation(command.operation)
        recordSession(requestID, result: result)
        return result
    }

    /// Decodes and applies one command. Bytes that do not decode give a `malformedCommand`
    /// failure with no request id, and change nothing.
    public mutating func apply(encoded bytes: [UInt8]) -> (RequestID?, WriteResult) {
        let command: WriteCommand
        do {
            command = try WriteCommand.decode(bytes)
        } catch {
            lastAppliedWriteRevision = 0
            return (nil, .failure(.malformedCommand(error), revision: revision))
        }
        return (command.requestID, apply(command))
    }

    /// Applies a write outside the session layer: validate, then execute.
    mutating func applyOperation(_ requested: WriteOperation) -> WriteResult {
        let operation: WriteOperation
        do {
            try Self.validate(requested)
            operation = try admit(requested)
        } catch {
            return .failure(error, revision: revision)
        }
        if isOutOfSpace && Self.addsData(operation) { return .failure(.noSpace, revision: revision) }
        let revisionBefore = revision
        let result: WriteResult
        switch operation {
        case .put(let put): result = applyPut(put)
        case .deleteRange(let delete): result = .deleteRange(applyDeleteRange(delete))
        case .txn(let txn): result = applyTxn(txn)
        case .compact(let compaction): result = applyCompaction(compaction)
        case .auth(let change): result = applyAuth(change)
        case .alarm(let alarm): result = applyAlarm(alarm)
        case .lease(let lease): result = applyLease(lease)
        }
        // Invariant: one request takes at most one revision.
        precondition(revision == revisionBefore || revision == revisionBefore + 1, "a request took two revisions")
        precondition(result.revision == revision, "a result must carry the store revision after the request")
        // Invariant: the change log ends at the store revision, and a request that wrote
        // left its events there.
        precondition(changeLog.lastRevision ?? revision == revision, "the change log lags the store revision")
        precondition(revision == revisionBefore || lastAppliedWriteRevision == revision, "a write left no events")
        return result
    }
}

extension KVStore: Equatable {
    /// Equal logical state: revision, keys with metadata, retained history (versions with
    /// their proposal times, change log, compacted revision), sessions and the session clock.
    /// (The indexes' chunk layout, the recency queue's stale entries and what the last
    /// `apply` wrote do not count.)
    public static func == (lhs: KVStore, rhs: KVStore) -> Bool {
        lhs.revision == rhs.revision
            && lhs.compactedRevision == rhs.compactedRevision
            && lhs.sessionClock == rhs.sessionClock
            && lhs.sessions == rhs.sessions
            && lhs.alarms == rhs.alarms
            && lhs.leases == rhs.leases
            && lhs.leaseIDsPicked == rhs.leaseIDsPicked
            && lhs.leaseEpoch == rhs.leaseEpoch
            && KeyIndex.sameEntries(lhs.index, rhs.index)
            && lhs.changeLog == rhs.changeLog
            && VersionIndex.sameEntries(lhs.history, rhs.history)
            && lhs.auth == rhs.auth
    }
}
