import KVStore
import Paxos

/// etcd's space quota (`--quota-backend-bytes`) and its NOSPACE alarm.
///
/// What is measured: the store's logical size, `KVStore.approximateBytes` — every retained
/// version of every key (keys, values, metadata) and the change log, i.e. the live data plus
/// the history a compaction would free. It is the same on every replica at the same revision
/// and is what `Status.dbSize` reports. (Disk use — the write-ahead log and snapshots — is
/// bounded separately, by snapshots and log compaction.)
///
/// As etcd's `quotaKVServer`: the replica a client writes to refuses a put or a txn with puts
/// whose cost (etcd's: 256 bytes plus key and value per put) would take the store to the
/// quota, answers "etcdserver: mvcc: database space exceeded", and raises the NOSPACE alarm
/// — through the log, as an `alarm` command, so every replica activates it at the same point
/// of its command sequence. While the alarm is active every replica's store refuses such
/// writes when applying them (`KVStore+Alarms.swift`), so the refusal is deterministic even
/// for writes proposed before the alarm. Deletes, compaction and reads go on; `etcdctl alarm
/// disarm` clears the alarm (if the store is still over the quota, the next write raises it
/// again).
extension RuntimeOptions {
    /// etcd's default quota: 2 GiB.
    public static let quotaBytesDefault = 2 << 30
}

extension ReplicaRuntime {
    /// A NOSPACE alarm proposed but not yet applied is proposed again after this long (the
    /// proposal may have been lost with a leader).
    static let noSpaceAlarmRetryMilliseconds: UInt64 = 1_000

    /// Whether the write may be proposed under the quota; if not, proposes this replica's
    /// NOSPACE alarm (once, unless it is not applied within the retry interval).
    func fitsQuota(_ command: WriteCommand, proposals: inout [Command]) -> Bool {
        let cost = KVStore.quotaCostBytes(command.operation)
        // etcd's `backendQuota.Available`: size + cost < quota; a request that adds nothing passes.
        guard cost > 0, kv.approximateBytes + cost >= options.quotaBytes else { return true }
        proposeNoSpaceAlarm(into: &proposals)
        return false
    }

    func proposeNoSpaceAlarm(into proposals: inout [Command]) {
        let member = AlarmMember(memberID: UInt64(id), alarm: .nospace)
        guard !kv.activeAlarms.contains(member) else { return }
        if let last = noSpaceAlarmProposedAt, last.milliseconds(to: now) < Self.noSpaceAlarmRetryMilliseconds { return }
        noSpaceAlarmProposedAt = now
        ownSequence += 1
        // No session: activating an active alarm changes nothing, so a repeat is harmless.
        let command = WriteCommand(
            requestID: RequestID(clientID: RequestID.untrackedBit | UInt64(id), sequence: ownSequence),
            operation: .alarm(AlarmRequest(action: .activate, memberID: UInt64(id), alarm: .nospace)))
        environment.log(
            .notice,
            "space quota exceeded: the store holds \(kv.approximateBytes) bytes of a \(options.quotaBytes)-byte quota; "
                + "raising the NOSPACE alarm (compact, then `etcdctl alarm disarm`)")
        proposals.append(Command(command.encode()))
    }
}
