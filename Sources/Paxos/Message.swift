/// The messages replicas exchange. Every message carries its sender and the sender's
/// view of the leader's ballot where one applies; all are idempotent, so the network may
/// lose, duplicate and reorder them freely.
public enum Message: Hashable, Sendable {
    /// Phase 1a: a proposer asks acceptors to promise `ballot` for every slot ≥ `fromSlot`.
    case prepare(ballot: Ballot, fromSlot: Slot)
    /// Phase 1b: the acceptor promised `ballot`; `entries` holds every `(slot, entry)` it
    /// has at or above the prepare's `fromSlot`, and `chosenThrough` marks which of those
    /// are already known chosen (a chosen entry is adopted as is, never re-decided).
    /// A promise is bounded in bytes (`Configuration.batchBytesMax`, as `learn`): when the
    /// entries do not fit, `more` is true, `entries` is complete up to its last slot, and
    /// the candidate asks for the rest with another `prepare` of the same ballot from the
    /// slot after it — the promise counts toward a quorum only once complete.
    case promise(ballot: Ballot, entries: [SlotEntry], chosenThrough: Slot, more: Bool)
    /// Phase 2a: the leader asks acceptors to accept `value` in `slot` under `ballot`.
    /// `chosenThrough` piggybacks the leader's chosen prefix for learners.
    case accept(ballot: Ballot, slot: Slot, value: Value, chosenThrough: Slot)
    /// Phase 2b: the acceptor accepted `slot` in `ballot`.
    case accepted(ballot: Ballot, slot: Slot)
    /// The receiver refused a message of an older ballot: it has promised `promised`.
    case reject(promised: Ballot)
    /// The leader's heartbeat: it is alive, the prefix through `chosenThrough` is chosen,
    /// and `readRound` numbers a read-index confirmation round.
    case heartbeat(ballot: Ballot, chosenThrough: Slot, readRound: UInt64)
    /// A follower's answer to a heartbeat; it confirms the ballot for `readRound` and
    /// reports how far it has learned, so the leader can send it what it lacks.
    case heartbeatAck(ballot: Ballot, readRound: UInt64, chosenThrough: Slot)
    /// Chosen values a learner lacked, in slot order, contiguous from the first.
    case learn(ballot: Ballot, entries: [SlotEntry], chosenThrough: Slot)
    /// A learner asks for chosen values from `fromSlot` on.
    case learnRequest(fromSlot: Slot)
    /// Client commands a follower passes to the leader it believes in.
    case forward(commands: [Command])
    /// A follower asks the leader for a read index on behalf of its read `requestID`.
    case readIndexRequest(requestID: UInt64)
    /// The leader's answer: the read may be served once `readIndex` is applied; a zero
    /// `ballot` means the leader could not confirm its leadership and the read must retry.
    case readIndexResponse(requestID: UInt64, ballot: Ballot, readIndex: Slot)
    /// The leader of `ballot` steps down in favour of `target` (a planned leader change:
    /// SIGTERM, `MoveLeader`): followers forget it as their leader, so that they promise to
    /// the target without waiting out an election timeout, and the target campaigns at once.
    case transferLeadership(ballot: Ballot, target: ReplicaID)
    /// A follower passes a client's lease keep-alive to the leader it believes in (with
    /// `renew` false: a time-to-live query). Only the leader's clock decides when a lease
    /// expires, so only the leader renews; the runtime handles these, not the core.
    case leaseKeepAlive(requestID: UInt64, lease: Int64, renew: Bool)
    /// The leader's answer: the lease's time to live in seconds after the renewal (remaining,
    /// for a query); 0 when the lease does not exist or expired; -1 when the receiver could
    /// not answer as the leader (the follower fails the request as "no leader").
    case leaseKeepAliveResponse(requestID: UInt64, ttlSeconds: Int64)

    /// A short name for traces and metrics.
    public var kind: String {
        switch self {
        case .prepare: return "prepare"
        case .promise: return "promise"
        case .accept: return "accept"
        case .accepted: return "accepted"
        case .reject: return "reject"
        case .heartbeat: return "heartbeat"
        case .heartbeatAck: return "heartbeat-ack"
        case .learn: return "learn"
        case .learnRequest: return "learn-request"
        case .forward: return "forward"
        case .readIndexRequest: return "read-index-request"
        case .readIndexResponse: return "read-index-response"
        case .transferLeadership: return "transfer-leadership"
        case .leaseKeepAlive: return "lease-keep-alive"
        case .leaseKeepAliveResponse: return "lease-keep-alive-response"
        }
    }
}

extension Value {
    /// The bytes of the commands it carries.
    public var commandBytes: Int {
        switch self {
        case .noop: return 0
        case .batch(let commands): return commands.reduce(0) { $0 + $1.bytes.count }
        }
    }

    /// Its commands plus an allowance of 8 bytes each for the length prefix: at least what
    /// its encoding takes beyond a few fixed bytes (the callers add those).
    public var approximateBytes: Int { commandBytes + 8 * commands.count }
}

extension Message {
    /// About how many bytes the message takes on the wire: its commands plus a fixed
    /// allowance per entry and command (for queue byte bounds, not for framing).
    public var approximateBytes: Int {
        let fixed = 48
        switch self {
        case .promise(_, let entries, _, _), .learn(_, let entries, _):
            return fixed + entries.reduce(0) { $0 + 24 + $1.entry.value.approximateBytes }
        case .accept(_, _, let value, _):
            return fixed + value.approximateBytes
        case .forward(let commands):
            return fixed + commands.reduce(0) { $0 + 8 + $1.bytes.count }
        default:
            return fixed
        }
    }
}

extension Record {
    /// At least as many bytes as the record's encoding takes (its commands plus an
    /// allowance per command for the length prefix), so an encoder can reserve it at once
    /// instead of growing a large batch step by step.
    public var approximateBytes: Int {
        let fixed = 32
        switch self {
        case .accepted(_, let entry): return fixed + entry.value.approximateBytes
        case .promised, .chosenThrough: return fixed
        }
    }
}

/// A slot with its log entry, as carried in promises and learn messages.
public struct SlotEntry: Hashable, Sendable {
    public var slot: Slot
    public var entry: LogEntry

    public init(slot: Slot, entry: LogEntry) {
        self.slot = slot
        self.entry = entry
    }
}

/// A message with its route.
public struct Envelope: Hashable, Sendable, CustomStringConvertible {
    public var from: ReplicaID
    public var to: ReplicaID
    public var message: Message

    public init(from: ReplicaID, to: ReplicaID, message: Message) {
        self.from = from
        self.to = to
        self.message = message
    }

    /// The canonical one-line trace, e.g. `r1→r2 accept b=3.1 s=17 n=42`.
    public var description: String {
        "r\(from)→r\(to) \(message.kind)\(message.traceFields)"
    }
}

extension Message {
    var traceFields: String {
        switch self {
        case .prepare(let ballot, let fromSlot):
            return " b=\(ballot) from=\(fromSlot)"
        case .promise(let ballot, let entries, let chosenThrough, let more):
            return " b=\(ballot) entries=\(entries.count) chosen=\(chosenThrough)\(more ? " more" : "")"
        case .accept(let ballot, let slot, let value, let chosenThrough):
            return " b=\(ballot) s=\(slot) n=\(value.commands.count) chosen=\(chosenThrough)"
        case .accepted(let ballot, let slot):
            return " b=\(ballot) s=\(slot)"
        case .reject(let promised):
            return " promised=\(promised)"
        case .heartbeat(let ballot, let chosenThrough, let readRound):
            return " b=\(ballot) chosen=\(chosenThrough) read=\(readRound)"
        case .heartbeatAck(let ballot, let readRound, let chosenThrough):
            return " b=\(ballot) read=\(readRound) chosen=\(chosenThrough)"
        case .learn(let ballot, let entries, let chosenThrough):
            let first = entries.first.map { "\($0.slot)" } ?? "-"
            return " b=\(ballot) s=\(first) n=\(entries.count) chosen=\(chosenThrough)"
        case .learnRequest(let fromSlot):
            return " from=\(fromSlot)"
        case .forward(let commands):
            return " n=\(commands.count)"
        case .readIndexRequest(let requestID):
            return " id=\(requestID)"
        case .transferLeadership(let ballot, let target):
            return " b=\(ballot) to=r\(target)"
        case .readIndexResponse(let requestID, let ballot, let readIndex):
            return " id=\(requestID) b=\(ballot) index=\(readIndex)"
        case .leaseKeepAlive(let requestID, let lease, let renew):
            return " id=\(requestID) lease=\(lease)\(renew ? "" : " query")"
        case .leaseKeepAliveResponse(let requestID, let ttlSeconds):
            return " id=\(requestID) ttl=\(ttlSeconds)"
        }
    }
}
