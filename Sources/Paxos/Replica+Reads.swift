/// Linearizable reads by read index (Ongaro's thesis, 6.4): the leader notes its chosen
/// prefix when the read arrives, confirms with a majority that it still leads, and the
/// read is served once the state machine has applied through that prefix. Reads that
/// arrive together share one confirmation round.
extension Replica {
    mutating func read(_ readID: ReadID) {
        if isLeader {
            if proposer.leadership!.readCount >= configuration.pendingReadsMax {
                output.readsFailed.append(readID)
            } else {
                addLeaderRead(.local(readID))
            }
        } else if let leader, leader != id, learner.pendingReadCount < configuration.pendingReadsMax {
            learner.readsAwaitingIndex[readID] = (leaderBallot, now)
            emit(.readIndexRequest(requestID: readID), to: leader)
        } else {
            output.readsFailed.append(readID)
        }
    }

    mutating func onReadIndexRequest(from: ReplicaID, requestID: UInt64) {
        if isLeader, proposer.leadership!.readCount < configuration.pendingReadsMax {
            addLeaderRead(.remote(from, requestID: requestID))
        } else {
            emit(.readIndexResponse(requestID: requestID, ballot: .zero, readIndex: 0), to: from)
        }
    }

    mutating func onReadIndexResponse(requestID: UInt64, ballot: Ballot, readIndex: Slot) {
        guard learner.readsAwaitingIndex.removeValue(forKey: requestID) != nil else { return }
        if ballot == .zero {
            output.readsFailed.append(requestID)
        } else {
            learner.readsAwaitingApply.append((readIndex, requestID))
        }
    }

    /// A new leader serves reads only once every slot Phase 1 recovered is chosen: a
    /// value an earlier leader had chosen may sit in one of them.
    /// The highest slot this leader's Phase 1 recovered (nil when not leading): once the
    /// state machine has applied it, every value an earlier leader may have had chosen is
    /// applied (the runtime's lease expiry starts there).
    public var leadershipRecoveryEnd: Slot? { proposer.leadership?.recoveryEnd }

    public var isReadyForReads: Bool {
        guard let leadership = proposer.leadership else { return false }
        return learner.chosenThrough >= leadership.recoveryEnd
    }

    mutating func addLeaderRead(_ requester: ReadRequester) {
        if isReadyForReads {
            let round = proposer.leadership!.readRoundSent + 1
            proposer.leadership!.readsAwaitingConfirm.append(
                PendingRead(requester: requester, readIndex: learner.chosenThrough, round: round))
            proposer.leadership!.readRoundRequested = true
        } else {
            proposer.leadership!.readsAwaitingReady.append(requester)
        }
    }

    /// At the end of a leader's step: admit reads that waited for readiness, start one
    /// confirmation round for all reads that arrived in this step, release confirmed ones.
    mutating func flushReads() {
        if isReadyForReads && !proposer.leadership!.readsAwaitingReady.isEmpty {
            let waiting = proposer.leadership!.readsAwaitingReady
            proposer.leadership!.readsAwaitingReady = []
            for requester in waiting {
                addLeaderRead(requester)
            }
        }
        if proposer.leadership!.readRoundRequested {
            proposer.leadership!.readRoundRequested = false
            proposer.leadership!.chosenAnnounced = learner.chosenThrough
            proposer.leadership!.readRoundSent += 1
            proposer.leadership!.heartbeatElapsed = 0
            broadcast(
                .heartbeat(
                    ballot: proposer.leadership!.ballot, chosenThrough: learner.chosenThrough,
                    readRound: proposer.leadership!.readRoundSent))
        }
        let confirmed = confirmedReadRound
        guard !proposer.leadership!.readsAwaitingConfirm.isEmpty else { return }
        var waiting: [PendingRead] = []
        for read in proposer.leadership!.readsAwaitingConfirm {
            guard read.round <= confirmed else {
                waiting.append(read)
                continue
            }
            switch read.requester {
            case .local(let readID):
                learner.readsAwaitingApply.append((read.readIndex, readID))
            case .remote(let peer, let requestID):
                emit(
                    .readIndexResponse(
                        requestID: requestID, ballot: proposer.leadership!.ballot, readIndex: read.readIndex),
                    to: peer)
            }
        }
        proposer.leadership!.readsAwaitingConfirm = waiting
    }

    /// The highest read round acknowledged by a majority (the leader counts itself).
    var confirmedReadRound: UInt64 {
        let leadership = proposer.leadership!
        var rounds = [leadership.readRoundSent]
        for peer in configuration.peers {
            rounds.append(leadership.peerReadRound[peer] ?? 0)
        }
        rounds.sort(by: >)
        return rounds[configuration.quorum - 1]
    }

    mutating func failRead(_ requester: ReadRequester) {
        switch requester {
        case .local(let readID):
            output.readsFailed.append(readID)
        case .remote(let peer, let requestID):
            emit(.readIndexResponse(requestID: requestID, ballot: .zero, readIndex: 0), to: peer)
        }
    }

    /// Reads whose index request or answer was lost fail after `readTimeoutTicks`.
    mutating func expireForwardedReads() {
        guard !learner.readsAwaitingIndex.isEmpty else { return }
        for readID in learner.readsAwaitingIndex.keys.sorted() {
            let sentAt = learner.readsAwaitingIndex[readID]!.sentAt
            if now - sentAt >= configuration.readTimeoutTicks {
                learner.readsAwaitingIndex.removeValue(forKey: readID)
                output.readsFailed.append(readID)
            }
        }
    }

    mutating func releaseAppliedReads() {
        guard !learner.readsAwaitingApply.isEmpty else { return }
        var waiting: [(index: Slot, id: ReadID)] = []
        for read in learner.readsAwaitingApply {
            if read.index <= learner.appliedThrough {
                output.readsReleased.append(read.id)
            } else {
                waiting.append(read)
            }
        }
        learner.readsAwaitingApply = waiting
    }
}
