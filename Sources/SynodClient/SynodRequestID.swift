/// The identity of one write for exactly-once retries (DESIGN §3 "Exactly-once"), sent as gRPC
/// metadata `synod-request-id: <clientID as 16 lowercase hex digits>-<sequence in decimal>`.
///
/// The server keeps, per client ID, the last sequence applied and its result: a repeat of it
/// gets the same result again and a lower sequence is refused as stale. So a client ID may have
/// at most one write in flight, and every retry of a write carries the same value. etcd ignores
/// unknown metadata, so the header is harmless there.
public struct SynodRequestID: Sendable, Hashable, CustomStringConvertible {
    public static let metadataKey = "synod-request-id"

    public var clientID: UInt64
    /// 1, 2, 3, … per client ID.
    public var sequence: UInt64

    public init(clientID: UInt64, sequence: UInt64) {
        precondition(clientID != 0, "client ID 0 has no session")
        precondition(sequence >= 1, "sequences start at 1")
        self.clientID = clientID
        self.sequence = sequence
    }

    /// The header value.
    public var description: String {
        var hex = String(clientID, radix: 16)
        if hex.count < 16 { hex = String(repeating: "0", count: 16 - hex.count) + hex }
        return "\(hex)-\(sequence)"
    }

    /// Parses a header value; nil when malformed (the server's side of the format).
    public init?(headerValue: String) {
        let parts = headerValue.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 16,
            parts[0].allSatisfy({ $0.isHexDigit && !$0.isUppercase }),
            let clientID = UInt64(parts[0], radix: 16), clientID != 0,
            let sequence = UInt64(parts[1]), sequence >= 1
        else { return nil }
        self.init(clientID: clientID, sequence: sequence)
    }
}

/// Hands out client identities so that each has at most one write in flight.
///
/// Identity `k` is `baseClientID &+ k` (skipping 0); an identity returns to the pool when its
/// write is finished — answered, refused, or given up on. A given-up write may still be applied
/// later, but only before the identity's next write (a later one makes it stale on the server).
struct WriteSessionPool: Sendable {
    private struct Session: Sendable {
        var clientID: UInt64
        var nextSequence: UInt64
    }

    let baseClientID: UInt64
    private var idle: [Session] = []
    private var created: UInt64 = 0
    /// Bound on distinct identities: a client never has more writes in flight than this.
    static let sessionsMax: UInt64 = 1 << 20

    init(baseClientID: UInt64) {
        precondition(baseClientID != 0)
        self.baseClientID = baseClientID
    }

    /// Sessions with a write in flight, by client ID.
    private var inUse: [UInt64: Session] = [:]

    /// The identity for the next write; give it back with `release` when the write is finished.
    mutating func acquire() -> SynodRequestID {
        var session: Session
        if let reused = idle.popLast() {
            session = reused
        } else {
            precondition(created < Self.sessionsMax, "more than \(Self.sessionsMax) writes in flight")
            var clientID = baseClientID &+ created
            created += 1
            if clientID == 0 {  // Wrapped around: skip the reserved ID.
                clientID = baseClientID &+ created
                created += 1
            }
            session = Session(clientID: clientID, nextSequence: 1)
        }
        let id = SynodRequestID(clientID: session.clientID, sequence: session.nextSequence)
        session.nextSequence += 1
        precondition(inUse[session.clientID] == nil, "identity \(id) handed out twice")
        inUse[session.clientID] = session
        return id
    }

    mutating func release(_ id: SynodRequestID) {
        guard let session = inUse.removeValue(forKey: id.clientID) else {
            preconditionFailure("release of identity \(id) that is not in use")
        }
        precondition(session.nextSequence == id.sequence + 1, "release out of order for \(id)")
        idle.append(session)
    }
}
