/// The client session table behind exactly-once application (DESIGN §3 "Exactly-once").
struct ClientSession: Sendable, Equatable {
    /// The last sequence applied for the client.
    var sequence: UInt64
    /// The result of applying `sequence`, returned again for a repeat.
    var result: WriteResult
    /// `sessionClock` at the last use. Invariant: distinct across sessions, `<= sessionClock`.
    var lastUsed: UInt64
    /// FNV-1a of the encoded `result`, cached for the state digest.
    var resultDigest: UInt64

    /// This session's term in `KVStore.sessionsDigest`.
    func digest(clientID: UInt64) -> UInt64 {
        var hasher = FNV1a()
        hasher.combine(clientID)
        hasher.combine(sequence)
        hasher.combine(lastUsed)
        hasher.combine(resultDigest)
        return hasher.finalized
    }
}

/// One entry of the recency queue: `clientID` was used at tick `lastUsed`.
struct SessionUse: Sendable, Equatable {
    var lastUsed: UInt64
    var clientID: UInt64
}

extension KVStore {
    /// Remembers `result` as the client's last; evicts the least recently used session when a
    /// new client would overflow `KVLimits.sessionsMax`.
    mutating func recordSession(_ requestID: RequestID, result: WriteResult) {
        precondition(requestID.hasSession, "client \(requestID.clientID) has no session")
        let previous = sessions[requestID.clientID]
        if let previous {
            precondition(previous.sequence < requestID.sequence, "sessions only move forward")
            sessionsDigest &-= previous.digest(clientID: requestID.clientID)
        } else if sessions.count >= KVLimits.sessionsMax {
            evictLeastRecentlyUsedSession()
        }
        sessionClock += 1
        // Without leases, as a snapshot keeps it (its key-value encoding has no lease).
        let session = ClientSession(
            sequence: requestID.sequence,
            result: result.withoutLeases,
            lastUsed: sessionClock,
            resultDigest: Self.resultDigest(result, scratch: &digestScratch)
        )
        sessions[requestID.clientID] = session
        sessionsDigest &+= session.digest(clientID: requestID.clientID)
        noteUse(SessionUse(lastUsed: sessionClock, clientID: requestID.clientID))
        precondition(sessions.count <= KVLimits.sessionsMax, "session table over its bound")
    }

    /// A repeat of the last request counts as a use for eviction.
    mutating func touchSession(clientID: UInt64) {
        guard var session = sessions[clientID] else { preconditionFailure("touch of an unknown session") }
        sessionsDigest &-= session.digest(clientID: clientID)
        sessionClock += 1
        session.lastUsed = sessionClock
        sessions[clientID] = session
        sessionsDigest &+= session.digest(clientID: clientID)
        noteUse(SessionUse(lastUsed: sessionClock, clientID: clientID))
    }

    private mutating func evictLeastRecentlyUsedSession() {
        while sessionRecencyHead < sessionRecency.count {
            let use = sessionRecency[sessionRecencyHead]
            sessionRecencyHead += 1
            guard let session = sessions[use.clientID], session.lastUsed == use.lastUsed else { continue }
            sessionsDigest &-= session.digest(clientID: use.clientID)
            sessions[use.clientID] = nil
            return
        }
        preconditionFailure("the recency queue lost a live session")
    }

    private mutating func noteUse(_ use: SessionUse) {
        sessionRecency.append(use)
        let live = sessionRecency.count - sessionRecencyHead
        // Keep the queue O(sessions): drop stale entries once they outnumber live sessions.
        if live > 2 * sessions.count + 64 {
            sessionRecency = sessionRecency[sessionRecencyHead...].filter { use in
                sessions[use.clientID]?.lastUsed == use.lastUsed
            }
            sessionRecencyHead = 0
        } else if sessionRecencyHead >= 1024 && sessionRecencyHead * 2 >= sessionRecency.count {
            sessionRecency.removeFirst(sessionRecencyHead)
            sessionRecencyHead = 0
        }
    }

    /// Rebuilds the recency queue from the table (after restore), oldest use first.
    mutating func rebuildSessionRecency() {
        sessionRecency = sessions.map { SessionUse(lastUsed: $0.value.lastUsed, clientID: $0.key) }
            .sorted { $0.lastUsed < $1.lastUsed }
        sessionRecencyHead = 0
    }
}
