/// Phase 1 (prepare/promise) and leader election.
extension Replica {
    /// Campaigns with a ballot above every round seen: promises it to its own acceptor
    /// and asks every peer to promise it for all slots from the first not known chosen.
    mutating func startCampaign() {
        abandonProposer()
        leader = nil
        leaderBallot = .zero
        ticksSinceLeaderContact = 0
        electionTimeout = randomElectionTimeout()
        // Without its acceptor a replica does not campaign: its ballot must be durable
        // (promised by its own acceptor) before any prepare leaves, so that it never reuses
        // a ballot after a crash. The others elect a leader meanwhile.
        guard !acceptorDown else { return }

        let round = max(proposer.roundSeen, acceptor.promised.round) + 1
        proposer.roundSeen = round
        let ballot = Ballot(round: round, replica: id)
        let fromSlot = learner.chosenThrough + 1
        guard case .promise(let raised, let entries) = acceptor.prepare(ballot: ballot, fromSlot: fromSlot) else {
            preconditionFailure("own acceptor refused ballot \(ballot) above every round seen")
        }
        if raised { output.records.append(.promised(ballot)) }
        var candidacy = Candidacy(ballot: ballot, fromSlot: fromSlot)
        candidacy.promises[id] = Promise(entries: entries, chosenThrough: learner.chosenThrough)
        proposer.candidacy = candidacy
        broadcast(.prepare(ballot: ballot, fromSlot: fromSlot))
        becomeLeaderIfPromised()
    }

    mutating func resendPrepares() {
        guard var candidacy = proposer.candidacy else { return }
        candidacy.resendElapsed += 1
        if candidacy.resendElapsed >= configuration.heartbeatIntervalTicks {
            candidacy.resendElapsed = 0
            for peer in configuration.peers where candidacy.promises[peer] == nil {
                // A promise that came in pieces is continued, not restarted.
                let fromSlot =
                    candidacy.partialPromises[peer]?.nextSlot(after: candidacy.fromSlot) ?? candidacy.fromSlot
                emit(.prepare(ballot: candidacy.ballot, fromSlot: fromSlot), to: peer)
            }
        }
        proposer.candidacy = candidacy
    }

    /// Drops any candidacy or leadership, failing what waited on it (the clients retry).
    mutating func abandonProposer() {
        if let leadership = proposer.leadership {
            output.proposalsDropped.append(contentsOf: leadership.pendingCommands)
            for requester in leadership.readsAwaitingReady {
                failRead(requester)
            }
            for read in leadership.readsAwaitingConfirm {
                failRead(read.requester)
            }
            if leader == id {
                leader = nil
                leaderBallot = .zero
            }
        }
        proposer.leadership = nil
        proposer.candidacy = nil
    }

    mutating func onPrepare(from: ReplicaID, ballot: Ballot, fromSlot: Slot) {
        // A malformed prepare from the network (no proposer uses the zero ballot) is
        // dropped here rather than reaching the acceptor's precondition.
        guard ballot != .zero, ballot != .chosen, fromSlot >= 1 else { return }
        proposer.roundSeen = max(proposer.roundSeen, ballot.round)
        guard !ignoresPrepare(from: from) else { return }
        guard ballot >= acceptor.promised else {
            emit(.reject(promised: acceptor.promised), to: from)
            return
        }
        // A candidate that lags too far, or behind this replica's snapshot, gets what it
        // lacks instead of a promise: the promise would be huge or incomplete.
        let lagsTooFar = learner.chosenThrough >= fromSlot + Slot(configuration.promiseLagSlotsMax)
        if fromSlot < acceptor.firstRetainedSlot || lagsTooFar {
            sendChosen(to: from, from: fromSlot)
            return
        }
        guard case .promise(let raised, let entries) = acceptor.prepare(ballot: ballot, fromSlot: fromSlot) else {
            preconditionFailure("acceptor refused ballot \(ballot) at or above its promise")
        }
        if raised {
            output.records.append(.promised(ballot))
            if let own = proposer.ballot, ballot > own { abandonProposer() }
            if leader != from {
                leader = nil
                leaderBallot = .zero
            }
            ticksSinceLeaderContact = 0  // give the candidate time to finish
        }
        let (piece, more) = Self.promisePiece(entries, bytesMax: configuration.batchBytesMax)
        emit(.promise(ballot: ballot, entries: piece, chosenThrough: learner.chosenThrough, more: more), to: from)
    }

    /// The first entries of a promise that fit in `bytesMax` command bytes (at least one
    /// entry, whose size the batch bounds already limit), and whether entries were left out.
    /// Entries are in slot order, so the piece is complete up to its last slot.
    static func promisePiece(_ entries: [SlotEntry], bytesMax: Int) -> (piece: [SlotEntry], more: Bool) {
        var bytes = 0
        for (index, item) in entries.enumerated() {
            let size = item.entry.value.commandBytes
            if index > 0 && (bytes + size > bytesMax || index == WireLimits.entriesPerMessageMax) {
                return (Array(entries[..<index]), true)
            }
            bytes += size
        }
        return (entries, false)
    }

    mutating func onPromise(from: ReplicaID, ballot: Ballot, entries: [SlotEntry], chosenThrough: Slot, more: Bool) {
        guard var candidacy = proposer.candidacy, candidacy.ballot == ballot, candidacy.promises[from] == nil else {
            return
        }
        var promise = candidacy.partialPromises.removeValue(forKey: from) ?? Promise(entries: [], chosenThrough: 0)
        let expected = promise.nextSlot(after: candidacy.fromSlot)
        // A piece must continue exactly where the last one ended (a duplicate or a piece
        // of an older prepare is dropped; the resend asks again).
        if let first = entries.first, first.slot < expected {
            candidacy.partialPromises[from] = promise.entries.isEmpty ? nil : promise
            proposer.candidacy = candidacy
            return
        }
        promise.entries.append(contentsOf: entries)
        promise.chosenThrough = max(promise.chosenThrough, chosenThrough)
        if more && !entries.isEmpty {
            candidacy.partialPromises[from] = promise
            proposer.candidacy = candidacy
            emit(.prepare(ballot: ballot, fromSlot: promise.nextSlot(after: candidacy.fromSlot)), to: from)
            return
        }
        candidacy.promises[from] = promise
        proposer.candidacy = candidacy
        becomeLeaderIfPromised()
    }

    /// With promises from a majority, the candidate leads: for every slot from its first
    /// unchosen one to the highest any promise reported, it proposes the value Paxos
    /// requires — a value known chosen, else the value of the highest ballot accepted,
    /// else a no-op that fills the hole (Paxos Made Simple, 2.2 and 3).
    mutating func becomeLeaderIfPromised() {
        guard let candidacy = proposer.candidacy, candidacy.promises.count >= configuration.quorum else { return }
        var known: [Slot: Value] = [:]
        var highest: [Slot: LogEntry] = [:]
        var lastSlot = candidacy.fromSlot - 1
        for acceptorID in candidacy.promises.keys.sorted() {
            let promise = candidacy.promises[acceptorID]!
            for item in promise.entries where item.slot >= candidacy.fromSlot {
                lastSlot = max(lastSlot, item.slot)
                if item.entry.ballot == .chosen || item.slot <= promise.chosenThrough {
                    known[item.slot] = item.entry.value
                } else if let best = highest[item.slot], best.ballot >= item.entry.ballot {
                    continue
                } else {
                    highest[item.slot] = item.entry
                }
            }
        }
        proposer.candidacy = nil
        var leadership = Leadership(ballot: candidacy.ballot, nextSlot: lastSlot + 1, recoveryEnd: lastSlot)
        for peer in candidacy.promises.keys where peer != id {
            leadership.peerLastHeard[peer] = now
            leadership.peerChosenThrough[peer] = candidacy.promises[peer]!.chosenThrough
        }
        proposer.leadership = leadership
        leader = id
        leaderBallot = candidacy.ballot
        ticksSinceLeaderContact = 0
        broadcast(.heartbeat(ballot: candidacy.ballot, chosenThrough: learner.chosenThrough, readRound: 0))
        if lastSlot >= candidacy.fromSlot {
            for slot in candidacy.fromSlot...lastSlot where slot > learner.chosenThrough {
                proposeValue(known[slot] ?? highest[slot]?.value ?? .noop, in: slot)
            }
        }
    }

    /// A refusal: some acceptor promised a higher ballot. A leader takes a higher ballot
    /// at once (it still hears from a quorum, or check quorum would have deposed it); a
    /// candidate goes higher at its next timeout.
    mutating func onReject(from: ReplicaID, promised: Ballot) {
        proposer.roundSeen = max(proposer.roundSeen, promised.round)
        if let leadership = proposer.leadership, promised > leadership.ballot {
            startCampaign()
        }
    }

    /// A planned leader change (Raft's leadership transfer, in Paxos terms): the leader picks
    /// an up-to-date peer it heard from recently, tells everyone it steps down in favour of
    /// it, and drops its leadership (queued commands are dropped for the clients to retry with
    /// their request ids). No safety argument changes: the target still runs Phase 1 with a
    /// higher ballot; the message only spares everyone the election timeout.
    mutating func transferLeadership(to requested: ReplicaID?) {
        guard let leadership = proposer.leadership else { return }
        let candidates = configuration.peers.filter { peer in
            guard let heard = leadership.peerLastHeard[peer] else { return false }
            return now - heard <= configuration.electionTimeoutTicks
        }
        let target: ReplicaID?
        if let requested {
            target = candidates.contains(requested) ? requested : nil
        } else {
            target = candidates.max { lhs, rhs in
                let left = leadership.peerChosenThrough[lhs] ?? 0
                let right = leadership.peerChosenThrough[rhs] ?? 0
                return left != right ? left < right : lhs > rhs
            }
        }
        guard let target else { return }
        broadcast(.transferLeadership(ballot: leadership.ballot, target: target))
        abandonProposer()
        leader = nil
        leaderBallot = .zero
        ticksSinceLeaderContact = 0
        electionTimeout = randomElectionTimeout()
    }

    mutating func onTransferLeadership(from: ReplicaID, ballot: Ballot, target: ReplicaID) {
        guard leader == from, ballot == leaderBallot else { return }
        leader = nil
        leaderBallot = .zero
        ticksSinceLeaderContact = 0
        promiseHoldTicks = 0
        if target == id && !acceptorDown {
            startCampaign()
        }
    }
}
