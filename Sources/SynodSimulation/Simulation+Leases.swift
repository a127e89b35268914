import KVStore
import Paxos
import ReplicaRuntime

/// Leases in the simulation: lease holders that grant a lease (TTL 1 s), attach a key to it,
/// keep it alive every 250 ms through random replicas for a while, then revoke it or abandon
/// it (so that it expires), a few times over. Their keep-alives reach the runtime as the
/// server's do (`RuntimeEvent.leaseKeepAlive`), with the same loss and delays as other clients.
///
/// Two checkers:
/// - safety: no lease expires (an `expire` command that deleted it is applied anywhere)
///   before `TTL` after the send time of the last keep-alive (or grant) acknowledged to its
///   holder: a lease kept alive within its TTL is never expired;
/// - agreement: every replica applies a lease's expiry in the same slot at the same revision.
struct SimLeaseHolder {
    let id: Int
    enum Phase: Equatable {
        case idle
        case granting
        case attaching
        case keeping(until: UInt64)
        case revoking
    }
    var phase: Phase = .idle
    var lease: Int64 = 0
    var sequence: UInt64 = 0
    /// Replies to an older step are stale and ignored.
    var step = 0
    /// When the current write was first sent (a retry reuses its request id).
    var firstSentAt: UInt64 = 0
    var cyclesLeft: Int

    var requestID: RequestID { RequestID(clientID: 1_000 + UInt64(id), sequence: sequence) }
}

/// What the checkers know of one lease.
struct SimLeaseRecord {
    /// Its holder had an acknowledgement that the lease lives until at least this time (the
    /// send time of the acknowledged grant or keep-alive plus the TTL).
    var keptUntil: UInt64
    /// The first effective expiry applied anywhere: time, slot and revision.
    var expiredAt: (time: UInt64, slot: Slot, revision: Int64)?
}

enum LeaseSimEvent {
    case next(holder: Int)
    case keepAliveDue(holder: Int, step: Int)
    case writeReply(holder: Int, step: Int, WriteResult?)
    case keepAliveReply(holder: Int, lease: Int64, sentAt: UInt64, remainingMilliseconds: Int64?)
    case retry(holder: Int, step: Int)
}

extension Simulation {
    static let leaseTTLSeconds: Int64 = 1
    static let keepAliveEveryUnits: UInt64 = 250
    static let leaseCyclesPerHolder = 2

    var leaseHoldersDone: Bool { leaseHolders.allSatisfy { $0.phase == .idle && $0.cyclesLeft == 0 } }

    func startLeaseHolders() {
        for holder in leaseHolders {
            schedule(.lease(.next(holder: holder.id)), after: 1 + random.next() % 200)
        }
    }

    func handleLease(_ event: LeaseSimEvent) {
        switch event {
        case .next(let holder):
            beginLeaseCycle(holder)
        case .keepAliveDue(let holder, let step):
            keepAliveDue(holder, step: step)
        case .writeReply(let holder, let step, let result):
            leaseWriteReplied(holder, step: step, result: result)
        case .keepAliveReply(let holder, let lease, let sentAt, let remaining):
            keepAliveReplied(holder, lease: lease, sentAt: sentAt, remaining: remaining)
        case .retry(let holder, let step):
            guard leaseHolders[holder - 1].step == step else { return }
            sendLeaseWrite(holder)
        }
    }

    private func beginLeaseCycle(_ id: Int) {
        var holder = leaseHolders[id - 1]
        guard !inLivenessPhase, holder.phase == .idle, holder.cyclesLeft > 0 else { return }
        holder.cyclesLeft -= 1
        holder.phase = .granting
        leaseHolders[id - 1] = holder
        newLeaseWrite(id)
    }

    /// A new write (fresh request id) for the holder's current phase.
    private func newLeaseWrite(_ id: Int) {
        leaseHolders[id - 1].sequence += 1
        leaseHolders[id - 1].firstSentAt = time
        sendLeaseWrite(id)
    }

    private func leaseOperation(_ holder: SimLeaseHolder) -> WriteOperation? {
        switch holder.phase {
        case .granting: return .lease(.grant(id: 0, ttlSeconds: Self.leaseTTLSeconds))
        case .attaching:
            return .put(PutRequest(key: Array("lease-key-\(holder.id)".utf8), value: [1], lease: holder.lease))
        case .revoking: return .lease(.revoke(id: holder.lease))
        case .idle, .keeping: return nil
        }
    }

    /// Sends (or resends) the current write to a random replica; retried until answered.
    private func sendLeaseWrite(_ id: Int) {
        leaseHolders[id - 1].step += 1
        let holder = leaseHolders[id - 1]
        guard !inLivenessPhase, let operation = leaseOperation(holder) else {
            leaseHolders[id - 1].phase = .idle
            return
        }
        let step = holder.step
        let command = WriteCommand(requestID: holder.requestID, operation: asSimulatedUser(operation))
        let target = node(ReplicaID(1 + random.next() % UInt64(nodes.count)))
        let deadline = now.advanced(byMilliseconds: Self.attemptTimeoutUnits)
        if target.isUp && random.next() % 100 >= plan.lossPercent {
            deliver(
                .write(
                    command, Command(command.encode()), deadline: deadline,
                    reply: { [unowned self] outcome in
                        guard random.next() % 100 >= plan.lossPercent else { return }
                        var result: WriteResult?
                        if case .success(let value, _) = outcome { result = value }
                        schedule(.lease(.writeReply(holder: id, step: step, result)), after: networkDelay())
                    }),
                to: target)
        }
        schedule(.lease(.retry(holder: id, step: step)), after: Self.attemptTimeoutUnits)
    }

    private func leaseWriteReplied(_ id: Int, step: Int, result: WriteResult?) {
        var holder = leaseHolders[id - 1]
        guard holder.step == step else { return }
        guard let result else {
            // Not served there (no leader, timeout): try again soon, same request id.
            holder.step += 1
            leaseHolders[id - 1] = holder
            schedule(.lease(.retry(holder: id, step: holder.step)), after: 5 + random.next() % 30)
            return
        }
        switch (holder.phase, result) {
        case (.granting, .lease(let response)):
            holder.lease = response.id
            // The leader's deadline starts when it applies the grant, after the first send.
            leaseRecords[response.id] = SimLeaseRecord(
                keptUntil: holder.firstSentAt + UInt64(response.ttlSeconds) * 1_000, expiredAt: nil)
            trace.note(time, "lease holder \(id): granted \(String(response.id, radix: 16))")
            holder.phase = .attaching
            leaseHolders[id - 1] = holder
            newLeaseWrite(id)
        case (.attaching, .put):
            let keepFor = 1_200 + random.next() % 1_300
            holder.phase = .keeping(until: time + keepFor)
            holder.step += 1
            leaseHolders[id - 1] = holder
            schedule(.lease(.keepAliveDue(holder: id, step: holder.step)), after: 1)
        case (.attaching, .failure(.lease(.notFound), _)), (.revoking, .lease), (.revoking, .failure(.lease(.notFound), _)):
            // Expired before the key was attached (a long outage), or revoked: next cycle.
            finishLeaseCycle(id)
        default:
            violation("lease holder \(id) got \(result) while \(holder.phase)")
            finishLeaseCycle(id)
        }
    }

    private func keepAliveDue(_ id: Int, step: Int) {
        let holder = leaseHolders[id - 1]
        guard holder.step == step, case .keeping(let until) = holder.phase else { return }
        if inLivenessPhase || time >= until {
            if !inLivenessPhase && random.next() % 2 == 0 {
                leaseHolders[id - 1].phase = .revoking
                newLeaseWrite(id)
            } else {
                trace.note(time, "lease holder \(id): abandons \(String(holder.lease, radix: 16))")
                finishLeaseCycle(id)
            }
            return
        }
        let lease = holder.lease
        let sentAt = time
        let target = node(ReplicaID(1 + random.next() % UInt64(nodes.count)))
        if target.isUp && random.next() % 100 >= plan.lossPercent {
            deliver(
                .leaseKeepAlive(
                    lease: lease, renew: true, deadline: now.advanced(byMilliseconds: Self.attemptTimeoutUnits),
                    reply: { [unowned self] outcome in
                        guard random.next() % 100 >= plan.lossPercent else { return }
                        guard case .success(let state, _) = outcome else { return }
                        schedule(
                            .lease(
                                .keepAliveReply(
                                    holder: id, lease: lease, sentAt: sentAt,
                                    remainingMilliseconds: state.remainingMilliseconds)),
                            after: networkDelay())
                    }),
                to: target)
        }
        schedule(.lease(.keepAliveDue(holder: id, step: step)), after: Self.keepAliveEveryUnits)
    }

    private func keepAliveReplied(_ id: Int, lease: Int64, sentAt: UInt64, remaining: Int64?) {
        guard let remaining, remaining > 0 else {
            // Gone: it expired (no keep-alive got through within the TTL) or was revoked.
            let holder = leaseHolders[id - 1]
            if holder.lease == lease, case .keeping = holder.phase {
                trace.note(time, "lease holder \(id): lease \(String(lease, radix: 16)) is gone")
                finishLeaseCycle(id)
            }
            return
        }
        guard var record = leaseRecords[lease] else {
            violation("keep-alive answered for lease \(String(lease, radix: 16)) never granted")
            return
        }
        record.keptUntil = max(record.keptUntil, sentAt + UInt64(Self.leaseTTLSeconds) * 1_000)
        leaseRecords[lease] = record
    }

    private func finishLeaseCycle(_ id: Int) {
        leaseHolders[id - 1].phase = .idle
        leaseHolders[id - 1].step += 1
        schedule(.lease(.next(holder: id)), after: 200 + random.next() % 500)
    }

    // MARK: - Checkers

    /// Called before a replica applies `item` (its store is still the one before it): the
    /// effective expiries the slot carries, with the revision each deletes at, found by
    /// applying the slot to a copy of the store.
    func noteLeaseExpiries(_ item: SlotEntry, at id: ReplicaID) {
        let commands = item.entry.value.commands
        let decoded = commands.map { try? WriteCommand.decode($0.bytes) }
        guard decoded.contains(where: { if case .lease(.expire)? = $0?.operation { return true } else { return false } }),
            var copy = node(id).runtime?.kv
        else { return }
        for (command, bytes) in zip(decoded, commands) {
            let (_, result) = copy.apply(encoded: bytes.bytes)
            guard case .lease(.expire(let lease, _))? = command?.operation, case .lease(let response) = result else {
                continue
            }
            var record = leaseRecords[lease] ?? SimLeaseRecord(keptUntil: 0, expiredAt: nil)
            if let first = record.expiredAt {
                if first.slot != item.slot || first.revision != response.revision {
                    violation(
                        "lease \(String(lease, radix: 16)) expired in slot \(first.slot) at revision \(first.revision) "
                            + "on one replica, in slot \(item.slot) at revision \(response.revision) on r\(id)")
                }
            } else {
                record.expiredAt = (time, item.slot, response.revision)
                trace.note(time, "r\(id) applies expiry of lease \(String(lease, radix: 16)) at revision \(response.revision)")
            }
            leaseRecords[lease] = record
        }
    }

    /// At the end: no lease expired before its holder's last acknowledged keep-alive plus TTL.
    func checkLeaseExpiries() {
        for lease in leaseRecords.keys.sorted() {
            guard let record = leaseRecords[lease], let expired = record.expiredAt else { continue }
            if expired.time < record.keptUntil {
                violation(
                    "lease \(String(lease, radix: 16)) expired at t=\(expired.time) though its holder was told it "
                        + "lives until t=\(record.keptUntil)")
            }
        }
    }
}
