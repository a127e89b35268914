/// The vocabulary of the protocol: replica identities, ballots, slots and values.
///
/// Names follow Lamport's "Paxos Made Simple" and van Renesse & Altinbuken's
/// "Paxos Made Moderately Complex": a *ballot* orders proposers' attempts, a *slot*
/// is one instance of single-decree Paxos, and the value decided in a slot is a
/// *batch* of client commands (or a no-op that fills a hole).

/// A replica's identity inside one cluster; 1-based, never 0.
public typealias ReplicaID = UInt32

/// The index of one Paxos instance in the replicated log; slots start at 1.
public typealias Slot = UInt64

/// A ballot `(round, replica)`, totally ordered by round and then by replica id, so two
/// proposers never share one. `Ballot.zero` is below every ballot a proposer can use.
public struct Ballot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var round: UInt64
    public var replica: ReplicaID

    public init(round: UInt64, replica: ReplicaID) {
        self.round = round
        self.replica = replica
    }

    public static let zero = Ballot(round: 0, replica: 0)

    public static func < (lhs: Ballot, rhs: Ballot) -> Bool {
        if lhs.round != rhs.round { return lhs.round < rhs.round }
        return lhs.replica < rhs.replica
    }

    /// `3.1` is round 3 of replica 1, as in the canonical traces.
    public var description: String { "\(round).\(replica)" }
}

/// One client command, opaque to the consensus core: the state machine (KVStore) gives
/// the bytes their meaning. The core only counts and moves them.
public struct Command: Hashable, Sendable {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }
}

/// The value decided in one slot.
public enum Value: Hashable, Sendable, CustomStringConvertible {
    /// Fills a hole found by a new leader's Phase 1; applying it changes nothing.
    case noop
    /// A batch of client commands applied in order.
    case batch([Command])

    public var commands: [Command] {
        switch self {
        case .noop: return []
        case .batch(let commands): return commands
        }
    }

    public var description: String {
        switch self {
        case .noop: return "noop"
        case .batch(let commands): return "batch(\(commands.count))"
        }
    }
}

/// One entry of a replica's log as the acceptor and learner see it.
public struct LogEntry: Hashable, Sendable {
    /// The ballot in which this acceptor accepted `value`. For an entry learned as chosen
    /// without accepting it (catch-up), the ballot of the message that taught it.
    public var ballot: Ballot
    public var value: Value

    public init(ballot: Ballot, value: Value) {
        self.ballot = ballot
        self.value = value
    }
}

/// An identifier the runtime gives a linearizable read, echoed when it is released or
/// failed. Unique per replica.
public typealias ReadID = UInt64
