import KVStore
import Paxos

/// What a keep-alive or time-to-live query learned about one lease.
public struct LeaseState: Sendable, Hashable {
    public var id: Int64
    /// Milliseconds the lease has left after the renewal (for a keep-alive: its whole TTL),
    /// or at the query; nil when it does not exist or ran out.
    public var remainingMilliseconds: Int64?
    /// The TTL as granted, from the answering replica's store (0 when it has no such lease).
    public var grantedTTLSeconds: Int64
    /// The attached keys in byte order, from the answering replica's store (queries only).
    public var keys: [[UInt8]]

    public init(id: Int64, remainingMilliseconds: Int64?, grantedTTLSeconds: Int64, keys: [[UInt8]]) {
        self.id = id
        self.remainingMilliseconds = remainingMilliseconds
        self.grantedTTLSeconds = grantedTTLSeconds
        self.keys = keys
    }
}

/// One lease's expiry on the leader.
struct LeaseDeadline {
    var deadline: RuntimeInstant
    /// When this leader proposed the lease's expiry (nil: not yet). Proposed again after
    /// `LeaseKeeper.expiryRetryMilliseconds` if the lease still exists (the proposal was lost).
    var expiryProposedAt: RuntimeInstant?
}

/// A keep-alive waiting for its read-index confirmation on the leader.
struct ConfirmingKeepAlive {
    enum Origin {
        case local(deadline: RuntimeInstant, reply: LeaseReply)
        case remote(ReplicaID, requestID: UInt64)
    }
    let lease: Int64
    let renew: Bool
    let origin: Origin
}

/// A keep-alive a follower passed to the leader.
struct ForwardedKeepAlive {
    let lease: Int64
    let renew: Bool
    let deadline: RuntimeInstant
    let reply: LeaseReply
    var leader: ReplicaID
}

/// Lease expiry in the runtime (the state machine half is `KVStore+Leases.swift`).
///
/// Only the leader decides that a lease ran out, from its own monotonic clock (`now`), and
/// it says so with an `expire` command in the log, so every replica deletes the same keys at
/// the same revision. Its deadlines exist only while it leads, has applied every slot its
/// Phase 1 recovered (so an expiry an earlier leader had chosen is already applied) and has
/// applied its own `leaseEpoch` command (its ballot, logged once it recovered): then every
/// lease gets `now + max(TTL, election timeout)`, so a leader change never cuts a kept-alive
/// lease short — the old leader's deadline for it was at most `TTL` after its last renewal,
/// which happened before this leader's Phase 1 completed.
///
/// Every `expire` carries the epoch it was proposed in and changes nothing once a later
/// epoch was applied before it: an expiry that only its proposer's acceptor accepted, chosen
/// much later when Phase 1 makes that replica re-propose it, cannot delete a lease that
/// leaders in between renewed. (Either the later leader's epoch precedes the expiry in the
/// log, and the expiry is void, or it follows it, and that leader never saw the lease.)
///
/// Keep-alives do not go through the log (as in etcd). A follower forwards each one to the
/// leader (`Message.leaseKeepAlive`); the leader renews only after a read-index confirmation
/// round shows it still leads, so a deposed leader that has not noticed yet cannot promise a
/// TTL its successor does not honour. All waiting keep-alives are bounded in count and by
/// the request deadline.
struct LeaseKeeper {
    /// Deadlines are kept (this replica leads, recovered, under `trackedBallot`).
    var tracking = false
    var trackedBallot: Ballot?
    var deadlines: [Int64: LeaseDeadline] = [:]
    /// `KVStore.leaseGeneration` when `deadlines` were last brought in line with the leases.
    var syncedGeneration: UInt64 = 0
    /// No deadline or retry falls before this (a lower bound: renewals only move them later).
    var earliestDue = RuntimeInstant.distantFuture
    /// This leader's `leaseEpoch` command: for which epoch and when it was last proposed
    /// (proposed again after `2 × election timeout` while the store has not applied it).
    var epochProposed: (epoch: LeaseEpoch, at: RuntimeInstant)?

    var confirming: [ReadID: ConfirmingKeepAlive] = [:]
    var forwarded: [UInt64: ForwardedKeepAlive] = [:]
    var nextForwardID: UInt64 = 1

    /// Keep-alives waiting (confirming plus forwarded, and those the leader confirms for
    /// followers), at most.
    static let waitingMax = 16_384
    /// Expiry commands one tick proposes, at most (the rest follow on the next ticks).
    static let expiriesPerTickMax = 64
    var waitingCount: Int { confirming.count + forwarded.count }
}

/// `Message.leaseKeepAliveResponse` codes below 0.
private enum KeepAliveCode {
    static let notFound: Int64 = -1
    static let notLeader: Int64 = -2
    static let overloaded: Int64 = -3
}

extension ReplicaRuntime {
    var electionTimeoutMilliseconds: UInt64 {
        UInt64(options.paxos.electionTimeoutTicks) * options.tickMilliseconds
    }

    // MARK: - Keep-alives

    /// A client's keep-alive or query: confirmed locally when leading, else forwarded.
    func keepAlive(lease: Int64, renew: Bool, deadline: RuntimeInstant, reply: @escaping LeaseReply, reads: inout [ReadID]) {
        guard let replica else { return reply(.failure(.recovering)) }
        guard leaseKeeper.waitingCount < LeaseKeeper.waitingMax else { return reply(.failure(.tooManyRequests)) }
        if replica.isLeader {
            confirmKeepAlive(
                ConfirmingKeepAlive(lease: lease, renew: renew, origin: .local(deadline: deadline, reply: reply)),
                reads: &reads)
        } else if let leader = replica.leader, leader != id {
            let requestID = leaseKeeper.nextForwardID
            leaseKeeper.nextForwardID += 1
            leaseKeeper.forwarded[requestID] = ForwardedKeepAlive(
                lease: lease, renew: renew, deadline: deadline, reply: reply, leader: leader)
            environment.send([
                Envelope(from: id, to: leader, message: .leaseKeepAlive(requestID: requestID, lease: lease, renew: renew))
            ])
        } else {
            reply(.failure(.noLeader))
        }
    }

    /// Joins the next read-index confirmation round.
    private func confirmKeepAlive(_ keepAlive: ConfirmingKeepAlive, reads: inout [ReadID]) {
        let readID = nextReadID
        nextReadID += 1
        leaseKeeper.confirming[readID] = keepAlive
        reads.append(readID)
    }

    /// Lease messages between replicas; true when `envelope` was one (the core never sees them).
    func handleLeaseMessage(_ envelope: Envelope, reads: inout [ReadID]) -> Bool {
        switch envelope.message {
        case .leaseKeepAlive(let requestID, let lease, let renew):
            let code: Int64
            if replica?.isLeader != true {
                code = KeepAliveCode.notLeader
            } else if leaseKeeper.waitingCount >= LeaseKeeper.waitingMax {
                code = KeepAliveCode.overloaded
            } else {
                confirmKeepAlive(
                    ConfirmingKeepAlive(lease: lease, renew: renew, origin: .remote(envelope.from, requestID: requestID)),
                    reads: &reads)
                return true
            }
            respondToFollower(envelope.from, requestID: requestID, code: code)
            return true
        case .leaseKeepAliveResponse(let requestID, let code):
            guard let forwarded = leaseKeeper.forwarded.removeValue(forKey: requestID) else { return true }
            if code == KeepAliveCode.overloaded {
                forwarded.reply(.failure(.tooManyRequests))
            } else {
                forwarded.reply(answer(forwarded.lease, renew: forwarded.renew, code: code))
            }
            return true
        default:
            return false
        }
    }

    private func respondToFollower(_ follower: ReplicaID, requestID: UInt64, code: Int64) {
        environment.send([
            Envelope(from: id, to: follower, message: .leaseKeepAliveResponse(requestID: requestID, ttlSeconds: code))
        ])
    }

    /// The outcome a client sees for a leader's answer `code` (milliseconds left, or a code).
    private func answer(_ lease: Int64, renew: Bool, code: Int64) -> RequestOutcome<LeaseState> {
        if code < KeepAliveCode.notFound { return .failure(.noLeader) }
        let info = kv.leaseInfo(lease)
        let state = LeaseState(
            id: lease, remainingMilliseconds: code >= 0 ? code : nil, grantedTTLSeconds: info?.ttlSeconds ?? 0,
            keys: renew ? [] : info?.keys ?? [])
        return .success(state, position)
    }

    /// A confirmation round released `readID`: renew (or measure) the lease and answer.
    func answerConfirmedKeepAlive(_ readID: ReadID) -> Bool {
        guard let keepAlive = leaseKeeper.confirming.removeValue(forKey: readID) else { return false }
        syncLeaseDeadlines()
        let code = leaderAnswer(lease: keepAlive.lease, renew: keepAlive.renew)
        switch keepAlive.origin {
        case .local(_, let reply): reply(answer(keepAlive.lease, renew: keepAlive.renew, code: code))
        case .remote(let follower, let requestID): respondToFollower(follower, requestID: requestID, code: code)
        }
        return true
    }

    /// The leader's renewal or measurement: milliseconds left, or a `KeepAliveCode`.
    private func leaderAnswer(lease: Int64, renew: Bool) -> Int64 {
        guard leaseKeeper.tracking else { return KeepAliveCode.notLeader }
        guard let ttlSeconds = kv.leaseInfo(lease)?.ttlSeconds, var entry = leaseKeeper.deadlines[lease] else {
            return KeepAliveCode.notFound
        }
        // Ran out: its expiry is (or is about to be) proposed; a renewal cannot save it.
        if entry.expiryProposedAt != nil || entry.deadline <= now { return KeepAliveCode.notFound }
        guard renew else { return Int64(now.milliseconds(to: entry.deadline)) }
        let ttlMilliseconds = UInt64(ttlSeconds).multipliedReportingOverflow(by: 1_000)
        entry.deadline = now.advanced(byMilliseconds: ttlMilliseconds.overflow ? .max : ttlMilliseconds.partialValue)
        leaseKeeper.deadlines[lease] = entry
        return ttlSeconds.multipliedReportingOverflow(by: 1_000).overflow ? .max : ttlSeconds * 1_000
    }

    func failConfirmingKeepAlive(_ readID: ReadID) -> Bool {
        guard let keepAlive = leaseKeeper.confirming.removeValue(forKey: readID) else { return false }
        switch keepAlive.origin {
        case .local(_, let reply): reply(.failure(.noLeader))
        case .remote(let follower, let requestID):
            respondToFollower(follower, requestID: requestID, code: KeepAliveCode.notLeader)
        }
        return true
    }

    /// Forwarded keep-alives follow a new leader (they renew nothing twice that matters: a
    /// renewal is idempotent); when this replica is the new leader, it confirms them itself.
    func reforwardKeepAlives(to leader: ReplicaID, into output: inout Output) {
        var own: [ReadID] = []
        for requestID in leaseKeeper.forwarded.keys.sorted() {
            guard var forwarded = leaseKeeper.forwarded[requestID], forwarded.leader != leader else { continue }
            if leader == id {
                leaseKeeper.forwarded[requestID] = nil
                confirmKeepAlive(
                    ConfirmingKeepAlive(
                        lease: forwarded.lease, renew: forwarded.renew,
                        origin: .local(deadline: forwarded.deadline, reply: forwarded.reply)),
                    reads: &own)
            } else {
                forwarded.leader = leader
                leaseKeeper.forwarded[requestID] = forwarded
                environment.send([
                    Envelope(
                        from: id, to: leader,
                        message: .leaseKeepAlive(requestID: requestID, lease: forwarded.lease, renew: forwarded.renew))
                ])
            }
        }
        if !own.isEmpty, replica != nil {
            output.append(replica!.step(.reads(own)))
        }
    }

    /// Keep-alives past their deadline fail as timed out (the leader's confirmations for
    /// followers end with the confirmation round: the core fails or releases them).
    func expireLeaseRequests() {
        let now = self.now
        if leaseKeeper.forwarded.values.contains(where: { $0.deadline <= now }) {
            for requestID in leaseKeeper.forwarded.filter({ $0.value.deadline <= now }).keys.sorted() {
                leaseKeeper.forwarded.removeValue(forKey: requestID)?.reply(.failure(.timedOut))
            }
        }
        let expired = leaseKeeper.confirming.contains { entry in
            if case .local(let deadline, _) = entry.value.origin { return deadline <= now }
            return false
        }
        guard expired else { return }
        for readID in leaseKeeper.confirming.keys.sorted() {
            guard case .local(let deadline, let reply)? = leaseKeeper.confirming[readID]?.origin, deadline <= now
            else { continue }
            leaseKeeper.confirming[readID] = nil
            reply(.failure(.timedOut))
        }
    }

    func failLeaseRequests(_ failure: RequestFailure) {
        for requestID in leaseKeeper.forwarded.keys.sorted() {
            leaseKeeper.forwarded.removeValue(forKey: requestID)?.reply(.failure(failure))
        }
        for readID in leaseKeeper.confirming.keys.sorted() {
            if case .local(_, let reply)? = leaseKeeper.confirming.removeValue(forKey: readID)?.origin {
                reply(.failure(failure))
            }
        }
        leaseKeeper.confirming.removeAll()
    }

    // MARK: - Deadlines and expiry

    /// This replica's lease epoch when it leads and has applied every slot its Phase 1
    /// recovered (it may then log the epoch), else nil.
    private var recoveredLeaderEpoch: LeaseEpoch? {
        guard let replica, replica.isLeader, let ballot = replica.ballot,
            let recoveryEnd = replica.leadershipRecoveryEnd, appliedThroughKV >= recoveryEnd
        else { return nil }
        return LeaseEpoch(round: ballot.round, leader: UInt64(ballot.replica))
    }

    /// Whether this replica keeps lease deadlines now: it leads, has applied every slot its
    /// Phase 1 recovered, and its epoch is the store's. (The injected bug lets any replica
    /// keep them.)
    private var keepsLeaseDeadlines: Bool {
        if options.bug == .followerExpiresLeases { return replica != nil }
        guard let epoch = recoveredLeaderEpoch else { return false }
        return kv.leaseEpoch == epoch || options.bug == .noLeaseEpochs
    }

    /// A recovered leader whose epoch the store has not applied proposes it (again after
    /// twice the election timeout, if it was lost).
    private func proposeLeaseEpoch(into output: inout Output) {
        guard options.bug != .noLeaseEpochs, let epoch = recoveredLeaderEpoch, kv.leaseEpoch < epoch else { return }
        if let proposed = leaseKeeper.epochProposed, proposed.epoch == epoch,
            now < proposed.at.advanced(byMilliseconds: 2 * electionTimeoutMilliseconds)
        {
            return
        }
        leaseKeeper.epochProposed = (epoch, now)
        environment.log(.info, "leading: logging lease epoch \(epoch) before tracking lease deadlines")
        output.append(replica!.step(.propose([ownLeaseCommand(.epoch(epoch))])))
    }

    /// A lease command of this replica's own: no session (it needs no answer, and a repeated
    /// one fails or changes nothing harmlessly).
    private func ownLeaseCommand(_ operation: LeaseOperation) -> Command {
        ownSequence += 1
        let command = WriteCommand(
            requestID: RequestID(clientID: RequestID.untrackedBit | UInt64(id), sequence: ownSequence),
            operation: .lease(operation))
        return Command(command.encode())
    }

    /// Starts, stops and updates the deadlines: a new leadership extends every lease to
    /// `max(TTL, election timeout)` from now; a lease granted later gets its TTL from when
    /// this replica applied it; a lease gone from the store is forgotten.
    func syncLeaseDeadlines() {
        guard keepsLeaseDeadlines else {
            if leaseKeeper.tracking {
                environment.log(.info, "no longer leading: dropping \(leaseKeeper.deadlines.count) lease deadlines")
                leaseKeeper.tracking = false
                leaseKeeper.trackedBallot = nil
                leaseKeeper.deadlines.removeAll()
                leaseKeeper.earliestDue = .distantFuture
            }
            return
        }
        let ballot = replica?.ballot
        var starting = false
        if !leaseKeeper.tracking || leaseKeeper.trackedBallot != ballot {
            starting = true
            leaseKeeper.tracking = true
            leaseKeeper.trackedBallot = ballot
            leaseKeeper.deadlines.removeAll()
        }
        guard starting || leaseKeeper.syncedGeneration != kv.leaseGeneration else { return }
        leaseKeeper.syncedGeneration = kv.leaseGeneration
        let leases = kv.leaseTTLs()
        var live: Set<Int64> = []
        live.reserveCapacity(leases.count)
        for (lease, ttlSeconds) in leases {
            live.insert(lease)
            guard leaseKeeper.deadlines[lease] == nil else { continue }
            var milliseconds = ttlSeconds > Int64(UInt64.max / 1_000) ? UInt64.max : UInt64(ttlSeconds) * 1_000
            if starting { milliseconds = max(milliseconds, electionTimeoutMilliseconds) }
            let deadline = now.advanced(byMilliseconds: milliseconds)
            leaseKeeper.deadlines[lease] = LeaseDeadline(deadline: deadline, expiryProposedAt: nil)
            leaseKeeper.earliestDue = min(leaseKeeper.earliestDue, deadline)
        }
        if leaseKeeper.deadlines.count > live.count {
            leaseKeeper.deadlines = leaseKeeper.deadlines.filter { live.contains($0.key) }
        }
        if starting {
            environment.log(
                .info, "leading: tracking \(leases.count) lease deadlines (each at least \(electionTimeoutMilliseconds) ms away)")
        }
    }

    /// Proposes `expire` for leases past their deadline, oldest deadline first, at most
    /// `expiriesPerTickMax` per tick; a proposal that got lost is made again after twice the
    /// election timeout (while the lease still exists).
    func proposeLeaseExpiries(into output: inout Output) {
        proposeLeaseEpoch(into: &output)
        syncLeaseDeadlines()
        guard leaseKeeper.tracking, replica != nil, now >= leaseKeeper.earliestDue else { return }
        let retry = 2 * electionTimeoutMilliseconds
        var due: [(at: RuntimeInstant, lease: Int64)] = []
        var nextDue = RuntimeInstant.distantFuture
        for (lease, entry) in leaseKeeper.deadlines {
            let at = entry.expiryProposedAt.map { $0.advanced(byMilliseconds: retry) } ?? entry.deadline
            if at <= now { due.append((at, lease)) } else { nextDue = min(nextDue, at) }
        }
        due.sort { ($0.at, $0.lease) < ($1.at, $1.lease) }
        if due.count > LeaseKeeper.expiriesPerTickMax {
            // The rest are due already: look again next tick.
            nextDue = now
            due.removeLast(due.count - LeaseKeeper.expiriesPerTickMax)
        }
        leaseKeeper.earliestDue = min(nextDue, now.advanced(byMilliseconds: retry))
        guard !due.isEmpty else { return }
        // The store's epoch is this leader's while it tracks deadlines (under the injected
        // bug a follower's expiries carry the store's epoch too, so they take effect).
        let epoch: LeaseEpoch? = options.bug == .noLeaseEpochs ? nil : kv.leaseEpoch
        var commands: [Command] = []
        for (_, lease) in due {
            leaseKeeper.deadlines[lease]?.expiryProposedAt = now
            commands.append(ownLeaseCommand(.expire(id: lease, epoch: epoch)))
        }
        environment.log(.info, "lease expiry: proposing \(commands.count) (\(due.map { String($0.lease, radix: 16) }.joined(separator: ",")))")
        output.append(replica!.step(.propose(commands)))
    }
}
