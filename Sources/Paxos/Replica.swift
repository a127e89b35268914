/// One node of the cluster: a proposer, an acceptor and a learner, driven by `step`.
///
/// The replica is a pure state machine (etcd-raft's `RawNode` idea): no clock, no I/O,
/// no randomness but the seeded PRNG in its configuration. The runtime feeds it events
/// and carries out the `Output` of each step in the order `Output` documents —
/// **records persisted and fsynced before the messages of the same step leave**.
public struct Replica: Sendable {
    public let configuration: Configuration
    public internal(set) var acceptor: Acceptor
    public internal(set) var proposer = Proposer()
    public internal(set) var learner: Learner

    /// The leader this replica follows (itself when leading), if it knows one.
    public internal(set) var leader: ReplicaID?
    /// The ballot of `leader`.
    public internal(set) var leaderBallot: Ballot = .zero
    /// Ticks since a leader's heartbeat or accept; doubles as the candidate's election
    /// clock.
    var ticksSinceLeaderContact = 0
    /// This round's randomized election timeout, in `electionTimeoutTicks ..< 2×` that.
    var electionTimeout: Int
    /// Logical time: ticks since this replica started.
    var now = 0
    /// The last heartbeat this follower acknowledged: its ballot and read round, and the
    /// tick it was acknowledged in (see `onHeartbeat`).
    var lastHeartbeatAck: (ballot: Ballot, readRound: UInt64, tick: Int)?
    /// When each peer was last offered a snapshot (rate limit).
    var snapshotOfferedAt: [ReplicaID: Int] = [:]
    var random: SplitMix64
    /// The output the current step is building.
    var output = Output()
    /// Whether the acceptor role is down (the seed's acceptor failure): it answers no
    /// prepare and no accept, and this replica neither campaigns nor votes for its own
    /// proposals, while its proposer keeps leading (with a majority of the other
    /// acceptors) and its learner keeps learning.
    public internal(set) var acceptorDown = false
    /// Ticks to wait, after a restart or an acceptor recovery, before granting a promise
    /// to a candidate while no leader is heard: a recovering acceptor must not disrupt a
    /// leader it has not heard from yet.
    var promiseHoldTicks = 0

    /// A replica starting from what it persisted (`DurableState()` for a new one). The
    /// state machine must have been restored to `durable.snapshotThrough`; the first
    /// steps hand it the chosen slots after that.
    public init(configuration: Configuration, durable: DurableState = DurableState()) {
        self.configuration = configuration
        acceptor = Acceptor(durable: durable)
        learner = Learner(durable: durable)
        proposer.roundSeen = durable.promised.round
        random = SplitMix64(seed: configuration.randomSeed ^ (UInt64(configuration.replicaID) &* 0x9E37_79B9))
        electionTimeout = configuration.electionTimeoutTicks
        electionTimeout = randomElectionTimeout()
        // A replica restarting with state waits one election timeout before promising;
        // a brand-new cluster elects at once.
        if durable.promised != .zero { promiseHoldTicks = configuration.electionTimeoutTicks }
    }

    /// The acceptor role fails (the seed's fault model): it stops answering and loses its
    /// volatile state. The proposer and learner keep running.
    public mutating func failAcceptor() {
        acceptorDown = true
        acceptor.forgetVolatileState(keepingChosenThrough: learner.chosenThrough)
    }

    /// The acceptor comes back with the state its write-ahead log holds (the same
    /// recovery a restart runs); it then waits an election timeout before promising.
    public mutating func recoverAcceptor(from durable: DurableState) {
        acceptor.restore(from: durable)
        proposer.roundSeen = max(proposer.roundSeen, acceptor.promised.round)
        acceptorDown = false
        promiseHoldTicks = configuration.electionTimeoutTicks
    }

    public var id: ReplicaID { configuration.replicaID }
    public var role: Proposer.Role { proposer.role }
    /// The ballot this replica leads or campaigns with.
    public var ballot: Ballot? { proposer.ballot }
    public var isLeader: Bool { proposer.leadership != nil }

    /// Handles one event and returns what the runtime must do, in `Output`'s order.
    public mutating func step(_ event: Event) -> Output {
        precondition(output.isEmpty, "step is not reentrant")
        switch event {
        case .receive(let envelope):
            receive(envelope)
        case .propose(let commands):
            propose(commands)
        case .read(let id):
            read(id)
        case .reads(let ids):
            for id in ids { read(id) }
        case .tick:
            tick()
        case .compacted(let slot):
            precondition(slot <= learner.appliedThrough, "compacted past the apply point: \(slot)")
            acceptor.compact(through: slot, keepingTail: configuration.compactionTailSlots)
        case .snapshotInstalled(let slot):
            installSnapshot(through: slot)
        case .transferLeadership(let target):
            transferLeadership(to: target)
        }
        finishStep()
        let result = output
        output = Output()
        return result
    }

    // MARK: - Sending

    mutating func emit(_ message: Message, to peer: ReplicaID) {
        precondition(peer != id, "a replica never messages itself")
        output.messages.append(Envelope(from: id, to: peer, message: message))
    }

    mutating func broadcast(_ message: Message) {
        for peer in configuration.peers {
            emit(message, to: peer)
        }
    }

    mutating func randomElectionTimeout() -> Int {
        let base = configuration.electionTimeoutTicks
        return base + Int(random.next() % UInt64(base))
    }

    // MARK: - Events

    mutating func receive(_ envelope: Envelope) {
        let from = envelope.from
        guard envelope.to == id, from != id, configuration.replicas.contains(from) else { return }
        if acceptorDown {
            // A down acceptor answers nothing addressed to it (and a prepare's or accept's
            // other effects wait for its recovery; heartbeats still teach the learner).
            switch envelope.message {
            case .prepare, .accept: return
            default: break
            }
        }
        switch envelope.message {
        case .prepare(let ballot, let fromSlot):
            onPrepare(from: from, ballot: ballot, fromSlot: fromSlot)
        case .promise(let ballot, let entries, let chosenThrough, let more):
            onPromise(from: from, ballot: ballot, entries: entries, chosenThrough: chosenThrough, more: more)
        case .accept(let ballot, let slot, let value, let chosenThrough):
            onAccept(from: from, ballot: ballot, slot: slot, value: value, chosenThrough: chosenThrough)
        case .accepted(let ballot, let slot):
            onAccepted(from: from, ballot: ballot, slot: slot)
        case .reject(let promised):
            onReject(from: from, promised: promised)
        case .heartbeat(let ballot, let chosenThrough, let readRound):
            onHeartbeat(from: from, ballot: ballot, chosenThrough: chosenThrough, readRound: readRound)
        case .heartbeatAck(let ballot, let readRound, let chosenThrough):
            onHeartbeatAck(from: from, ballot: ballot, readRound: readRound, chosenThrough: chosenThrough)
        case .learn(_, let entries, _):
            onLearn(from: from, entries: entries)
        case .learnRequest(let fromSlot):
            sendChosen(to: from, from: fromSlot)
        case .forward(let commands):
            if isLeader { enqueue(commands) }  // else dropped: the origin's client retries
        case .readIndexRequest(let requestID):
            onReadIndexRequest(from: from, requestID: requestID)
        case .readIndexResponse(let requestID, let ballot, let readIndex):
            onReadIndexResponse(requestID: requestID, ballot: ballot, readIndex: readIndex)
        case .transferLeadership(let ballot, let target):
            onTransferLeadership(from: from, ballot: ballot, target: target)
        case .leaseKeepAlive, .leaseKeepAliveResponse:
            // Leases are the state machine's and the runtime's business: it handles these
            // before they reach the core.
            return
        }
    }

    mutating func tick() {
        now += 1
        if promiseHoldTicks > 0 { promiseHoldTicks -= 1 }
        switch proposer.role {
        case .leader:
            leaderTick()
        case .candidate:
            ticksSinceLeaderContact += 1
            if ticksSinceLeaderContact >= electionTimeout {
                startCampaign()
            } else {
                resendPrepares()
            }
        case .follower:
            ticksSinceLeaderContact += 1
            if ticksSinceLeaderContact >= electionTimeout {
                startCampaign()
            }
        }
        expireForwardedReads()
    }

    /// Notes a message from a leader of `ballot`: it is alive, so this replica does not
    /// campaign, and it ignores other candidates' prepares for a while.
    mutating func noteLeader(_ from: ReplicaID, ballot: Ballot) {
        guard ballot >= leaderBallot else { return }
        leader = from
        leaderBallot = ballot
        ticksSinceLeaderContact = 0
        promiseHoldTicks = 0
        if let own = proposer.ballot, ballot > own {
            abandonProposer()
        }
    }

    /// Whether this replica should ignore a prepare from `candidate`: it leads, or it
    /// heard from a live leader within the minimum election timeout. This keeps a
    /// partitioned replica that rejoins with a high ballot from disrupting a healthy
    /// leader (the role of etcd-raft's CheckQuorum lease).
    func ignoresPrepare(from candidate: ReplicaID) -> Bool {
        if isLeader { return true }
        if promiseHoldTicks > 0 && leader == nil { return true }
        guard let leader, leader != candidate, leader != id else { return false }
        return ticksSinceLeaderContact < configuration.electionTimeoutTicks
    }

    mutating func finishStep() {
        if isLeader {
            flushProposals()
            flushReads()
            announceChosen()
        }
        if learner.chosenThrough > learner.chosenThroughPersisted {
            output.records.append(.chosenThrough(learner.chosenThrough))
            learner.chosenThroughPersisted = learner.chosenThrough
        }
        commit()
        releaseAppliedReads()
    }

    mutating func installSnapshot(through slot: Slot) {
        guard slot > learner.appliedThrough else { return }  // stale: already past it
        acceptor.compact(through: slot, keepingTail: 0)
        learner.chosenThrough = max(learner.chosenThrough, slot)
        learner.chosenThroughPersisted = max(learner.chosenThroughPersisted, slot)
        learner.appliedThrough = slot
        if var leadership = proposer.leadership {
            leadership.proposals = leadership.proposals.filter { $0.key > slot }
            leadership.nextSlot = max(leadership.nextSlot, slot + 1)
            proposer.leadership = leadership
        }
    }
}
