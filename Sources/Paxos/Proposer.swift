/// The proposer: campaigns for leadership with Phase 1 and, once leader, decides client
/// batches in slots with Phase 2. At most one of `candidacy` and `leadership` is set;
/// neither means this proposer follows.
public struct Proposer: Sendable {
    /// The highest round seen in any ballot; a new campaign goes above it.
    var roundSeen: UInt64 = 0
    var candidacy: Candidacy?
    var leadership: Leadership?

    public enum Role: String, Sendable {
        case follower, candidate, leader
    }

    public var role: Role {
        if leadership != nil { return .leader }
        if candidacy != nil { return .candidate }
        return .follower
    }

    /// The ballot this proposer campaigns or leads with, if any.
    public var ballot: Ballot? { leadership?.ballot ?? candidacy?.ballot }
}

/// Phase 1 in progress.
struct Candidacy: Sendable {
    let ballot: Ballot
    /// The first slot not known chosen when the campaign began.
    let fromSlot: Slot
    /// Complete promises received, by acceptor (this replica's own included).
    var promises: [ReplicaID: Promise] = [:]
    /// Promises that arrived in pieces and are not complete yet (`Message.promise`'s
    /// `more`), by acceptor; the next piece is asked from the slot after the last entry.
    var partialPromises: [ReplicaID: Promise] = [:]
    /// Ticks since the prepares were last (re)sent.
    var resendElapsed = 0
}

struct Promise: Sendable {
    var entries: [SlotEntry]
    var chosenThrough: Slot

    /// Where the next piece of a promise that came in pieces starts.
    func nextSlot(after fromSlot: Slot) -> Slot {
        (entries.last?.slot ?? fromSlot - 1) + 1
    }
}

/// A slot this leader proposed and has not yet seen chosen.
struct Proposal: Sendable {
    let value: Value
    /// Acceptors that accepted it in this leader's ballot.
    var voters: Set<ReplicaID>
    var chosen = false
}

/// Who asked for a linearizable read.
enum ReadRequester: Hashable, Sendable {
    case local(ReadID)
    case remote(ReplicaID, requestID: UInt64)
}

struct PendingRead: Sendable {
    let requester: ReadRequester
    /// The chosen prefix when the read arrived: serving it after applying this far
    /// reflects every write acknowledged before the read began.
    let readIndex: Slot
    /// The confirmation round that must reach a majority before the read is served.
    let round: UInt64
}

/// Phase 2 state of a leader.
struct Leadership: Sendable {
    let ballot: Ballot
    /// The next slot to propose into.
    var nextSlot: Slot
    /// The highest slot Phase 1 recovered; reads wait until it is chosen, because a value
    /// chosen by an earlier leader may sit there unknown to this one until then.
    let recoveryEnd: Slot
    var proposals: [Slot: Proposal] = [:]
    /// Commands waiting for room in the window. Bound: `pendingCommandsMax`.
    var pendingCommands: [Command] = []
    var pendingBytes = 0
    /// Read-index confirmation rounds: the last one sent, and each peer's last echo.
    var readRoundSent: UInt64 = 0
    var readRoundRequested = false
    var peerReadRound: [ReplicaID: UInt64] = [:]
    /// Reads that arrived before `recoveryEnd` was chosen. Bound: `pendingReadsMax`.
    var readsAwaitingReady: [ReadRequester] = []
    /// Reads waiting for their confirmation round. Bound: `pendingReadsMax`.
    var readsAwaitingConfirm: [PendingRead] = []
    /// The tick each peer last answered in this ballot (check quorum).
    var peerLastHeard: [ReplicaID: Int] = [:]
    /// How far each peer reports it has learned.
    var peerChosenThrough: [ReplicaID: Slot] = [:]
    var heartbeatElapsed = 0
    var quorumCheckElapsed = 0
    /// The chosen prefix last sent to the followers; when it advances the leader tells
    /// them at once, so a follower answers its clients without waiting for a heartbeat.
    var chosenAnnounced: Slot = 0

    init(ballot: Ballot, nextSlot: Slot, recoveryEnd: Slot) {
        self.ballot = ballot
        self.nextSlot = nextSlot
        self.recoveryEnd = recoveryEnd
    }

    var readCount: Int { readsAwaitingReady.count + readsAwaitingConfirm.count }
}
