/// Phase 2 (accept/accepted), batching, pipelining, heartbeats and learning.
extension Replica {
    /// Client commands: queued by the leader, forwarded by a follower that knows one,
    /// dropped (for the client to retry) otherwise.
    mutating func propose(_ commands: [Command]) {
        guard !commands.isEmpty else { return }
        if isLeader {
            enqueue(commands)
        } else if let leader, leader != id {
            // Bounded in bytes and count like a batch, so a forward fits a transport frame.
            var start = 0
            var bytes = 0
            for (index, command) in commands.enumerated() {
                let full = index - start == WireLimits.commandsPerForwardMax || bytes + command.bytes.count > configuration.batchBytesMax
                if index > start && full {
                    emit(.forward(commands: Array(commands[start..<index])), to: leader)
                    start = index
                    bytes = 0
                }
                bytes += command.bytes.count
            }
            emit(.forward(commands: Array(commands[start...])), to: leader)
        } else {
            output.proposalsDropped.append(contentsOf: commands)
        }
    }

    mutating func enqueue(_ commands: [Command]) {
        precondition(isLeader, "only a leader queues commands")
        for command in commands {
            if proposer.leadership!.pendingCommands.count >= configuration.pendingCommandsMax
                || proposer.leadership!.pendingBytes + command.bytes.count > configuration.pendingBytesMax
            {
                output.proposalsDropped.append(command)
            } else {
                proposer.leadership!.pendingCommands.append(command)
                proposer.leadership!.pendingBytes += command.bytes.count
            }
        }
    }

    /// Fills the window: each new slot takes as many queued commands as its batch bounds
    /// allow. Commands that arrive while the window is full wait and ride together in the
    /// next slot — batching follows load without a timer.
    mutating func flushProposals() {
        while let leadership = proposer.leadership, !leadership.pendingCommands.isEmpty,
            Int(leadership.nextSlot - 1 - learner.chosenThrough) < configuration.slotsInFlightMax
        {
            var count = 0
            var bytes = 0
            for command in leadership.pendingCommands {
                if count == configuration.batchCommandsMax { break }
                if count > 0 && bytes + command.bytes.count > configuration.batchBytesMax { break }
                count += 1
                bytes += command.bytes.count
            }
            let batch = Array(leadership.pendingCommands.prefix(count))
            proposer.leadership!.pendingCommands.removeFirst(count)
            proposer.leadership!.pendingBytes -= bytes
            let slot = leadership.nextSlot
            proposer.leadership!.nextSlot += 1
            proposeValue(.batch(batch), in: slot)
        }
    }

    /// Phase 2a for one slot: the leader's own acceptor accepts first (its record goes
    /// into this step's output, durable before the accepts leave), then every peer is
    /// asked.
    mutating func proposeValue(_ value: Value, in slot: Slot) {
        let ballot = proposer.leadership!.ballot
        // A leader whose acceptor is down proposes without its own vote: a majority of
        // the other acceptors decides, and the value enters its log once chosen.
        if acceptorDown {
            proposer.leadership!.proposals[slot] = Proposal(value: value, voters: [])
            broadcast(.accept(ballot: ballot, slot: slot, value: value, chosenThrough: learner.chosenThrough))
            return
        }
        guard let records = acceptor.accept(ballot: ballot, slot: slot, value: value) else {
            preconditionFailure("leader's own acceptor refused its ballot \(ballot) in slot \(slot)")
        }
        output.records.append(contentsOf: records)
        proposer.leadership!.proposals[slot] = Proposal(value: value, voters: [id])
        broadcast(.accept(ballot: ballot, slot: slot, value: value, chosenThrough: learner.chosenThrough))
        noteAccepted(slot: slot, by: id)
    }

    mutating func onAccept(from: ReplicaID, ballot: Ballot, slot: Slot, value: Value, chosenThrough: Slot) {
        // Slot 0 and the sentinel ballots never come from a correct proposer: drop them
        // instead of letting network input reach the acceptor's preconditions.
        guard slot >= 1, ballot != .zero, ballot != .chosen else { return }
        proposer.roundSeen = max(proposer.roundSeen, ballot.round)
        guard let records = acceptor.accept(ballot: ballot, slot: slot, value: value) else {
            emit(.reject(promised: acceptor.promised), to: from)
            return
        }
        output.records.append(contentsOf: records)
        noteLeader(from, ballot: ballot)
        emit(.accepted(ballot: ballot, slot: slot), to: from)
        learnPrefix(ballot: ballot, through: chosenThrough)
    }

    mutating func onAccepted(from: ReplicaID, ballot: Ballot, slot: Slot) {
        guard let leadership = proposer.leadership, leadership.ballot == ballot else { return }
        proposer.leadership!.peerLastHeard[from] = now
        noteAccepted(slot: slot, by: from)
    }

    /// "A value is chosen when a large enough set of acceptors have accepted it" — a
    /// majority, in this leader's ballot.
    mutating func noteAccepted(slot: Slot, by acceptorID: ReplicaID) {
        guard var proposal = proposer.leadership!.proposals[slot], !proposal.chosen else { return }
        proposal.voters.insert(acceptorID)
        proposal.chosen = proposal.voters.count >= configuration.quorum
        proposer.leadership!.proposals[slot] = proposal
        while let next = proposer.leadership!.proposals[learner.chosenThrough + 1], next.chosen {
            let slot = learner.chosenThrough + 1
            proposer.leadership!.proposals.removeValue(forKey: slot)
            // Without its own vote the leader's log may lack the value: learn it as chosen.
            if acceptor.entry(at: slot)?.ballot != proposer.leadership!.ballot,
                let record = acceptor.learnChosen(slot: slot, value: next.value)
            {
                output.records.append(record)
            }
            learner.chosenThrough = slot
        }
    }

    /// Tells the followers of a chosen prefix that advanced in this step (one heartbeat
    /// per step, however many slots were chosen).
    mutating func announceChosen() {
        guard learner.chosenThrough > proposer.leadership!.chosenAnnounced else { return }
        proposer.leadership!.chosenAnnounced = learner.chosenThrough
        broadcast(
            .heartbeat(
                ballot: proposer.leadership!.ballot, chosenThrough: learner.chosenThrough,
                readRound: proposer.leadership!.readRoundSent))
    }

    mutating func leaderTick() {
        let ballot = proposer.leadership!.ballot
        ticksSinceLeaderContact = 0
        proposer.leadership!.heartbeatElapsed += 1
        if proposer.leadership!.heartbeatElapsed >= configuration.heartbeatIntervalTicks {
            proposer.leadership!.heartbeatElapsed = 0
            proposer.leadership!.chosenAnnounced = learner.chosenThrough
            broadcast(
                .heartbeat(
                    ballot: ballot, chosenThrough: learner.chosenThrough,
                    readRound: proposer.leadership!.readRoundSent))
            retransmitAccepts()
        }
        proposer.leadership!.quorumCheckElapsed += 1
        if proposer.leadership!.quorumCheckElapsed >= configuration.electionTimeoutTicks {
            proposer.leadership!.quorumCheckElapsed = 0
            let heard = configuration.peers.filter { peer in
                guard let last = proposer.leadership!.peerLastHeard[peer] else { return false }
                return now - last <= configuration.electionTimeoutTicks
            }
            if heard.count + 1 < configuration.quorum {
                // Check quorum: a leader cut off from a majority steps down, so that the
                // replicas that still hear it stop ignoring the others' prepares.
                abandonProposer()
                electionTimeout = randomElectionTimeout()
            }
        }
    }

    /// Accepts may be lost: resend those not yet chosen to acceptors that have not
    /// answered them.
    mutating func retransmitAccepts() {
        let leadership = proposer.leadership!
        for slot in leadership.proposals.keys.sorted() {
            let proposal = leadership.proposals[slot]!
            guard !proposal.chosen else { continue }
            for peer in configuration.peers where !proposal.voters.contains(peer) {
                emit(
                    .accept(
                        ballot: leadership.ballot, slot: slot, value: proposal.value,
                        chosenThrough: learner.chosenThrough), to: peer)
            }
        }
    }

    mutating func onHeartbeat(from: ReplicaID, ballot: Ballot, chosenThrough: Slot, readRound: UInt64) {
        proposer.roundSeen = max(proposer.roundSeen, ballot.round)
        guard ballot >= acceptor.promised else {
            emit(.reject(promised: acceptor.promised), to: from)
            return
        }
        noteLeader(from, ballot: ballot)
        learnPrefix(ballot: ballot, through: chosenThrough)
        // An ack confirms a read round (at once: a linearizable read waits for a majority of
        // them), and otherwise only tells the leader that this follower is alive and how far
        // it has learned: once per tick is enough for that. The leader announces every
        // advance of its chosen prefix with a heartbeat, and acking each one doubled the
        // messages a follower sends under load and woke the leader twice more per write at
        // one in flight.
        if let last = lastHeartbeatAck, last.ballot == ballot, last.readRound >= readRound, last.tick == now {
            // Acknowledged in this tick already, with this round confirmed.
        } else {
            lastHeartbeatAck = (ballot, readRound, now)
            emit(.heartbeatAck(ballot: ballot, readRound: readRound, chosenThrough: learner.chosenThrough), to: from)
        }
        // Behind what the leader announced: the values it lacks (lost accepts, entries of an
        // older ballot) come by `learn`. Asked for here, by the one who knows it lacks them,
        // not by the leader on every ack: an ack tells the leader only how far this learner
        // was when it answered, and the leader has chosen more slots since — most of which
        // this learner holds already and learns from the next heartbeat.
        if learner.chosenThrough < chosenThrough {
            emit(.learnRequest(fromSlot: learner.chosenThrough + 1), to: from)
        }
    }

    mutating func onHeartbeatAck(from: ReplicaID, ballot: Ballot, readRound: UInt64, chosenThrough: Slot) {
        guard let leadership = proposer.leadership, leadership.ballot == ballot else { return }
        proposer.leadership!.peerLastHeard[from] = now
        proposer.leadership!.peerReadRound[from] = max(leadership.peerReadRound[from] ?? 0, readRound)
        proposer.leadership!.peerChosenThrough[from] = chosenThrough
    }

    /// A learner marks chosen the slots through the leader's chosen prefix whose entry it
    /// accepted in the leader's own ballot (the leader proposes one value per slot per
    /// ballot, so that entry holds the chosen value) or learned as chosen. Entries from
    /// older ballots may differ from what was chosen; those come by `learn`.
    mutating func learnPrefix(ballot: Ballot, through slot: Slot) {
        while learner.chosenThrough < slot, let entry = acceptor.entry(at: learner.chosenThrough + 1),
            entry.ballot == ballot || entry.ballot == .chosen
        {
            learner.chosenThrough += 1
        }
    }

    /// Sends chosen values from `first` on to a learner that lacks them, or asks the
    /// runtime to send a snapshot when they were compacted away.
    mutating func sendChosen(to peer: ReplicaID, from first: Slot) {
        guard first <= learner.chosenThrough else { return }
        if first < acceptor.firstRetainedSlot {
            let last = snapshotOfferedAt[peer]
            if last == nil || now - last! >= configuration.snapshotResendTicks {
                snapshotOfferedAt[peer] = now
                output.snapshotsNeeded.append(peer)
            }
            return
        }
        let last = min(learner.chosenThrough, first + Slot(configuration.learnEntriesMax) - 1)
        var entries: [SlotEntry] = []
        var bytes = 0
        for slot in first...last {
            guard let entry = acceptor.entry(at: slot) else {
                preconditionFailure("chosen slot \(slot) has no entry (chosen through \(learner.chosenThrough))")
            }
            // Bounded in bytes too, so that a learn message fits a transport frame.
            let size = entry.value.commands.reduce(0) { $0 + $1.bytes.count }
            if !entries.isEmpty && bytes + size > configuration.batchBytesMax { break }
            bytes += size
            entries.append(SlotEntry(slot: slot, entry: LogEntry(ballot: .chosen, value: entry.value)))
        }
        emit(.learn(ballot: ballot ?? leaderBallot, entries: entries, chosenThrough: learner.chosenThrough), to: peer)
    }

    /// Chosen values from a peer, contiguous; they extend the chosen prefix.
    mutating func onLearn(from: ReplicaID, entries: [SlotEntry]) {
        guard let first = entries.first else { return }
        if first.slot > learner.chosenThrough + 1 {
            emit(.learnRequest(fromSlot: learner.chosenThrough + 1), to: from)
            return
        }
        for item in entries where item.slot == learner.chosenThrough + 1 {
            guard item.entry.ballot == .chosen else { return }  // learn carries chosen values only
            if let record = acceptor.learnChosen(slot: item.slot, value: item.entry.value) {
                output.records.append(record)
            }
            learner.chosenThrough = item.slot
        }
    }

    /// Hands every chosen, not yet applied slot to the state machine, in order.
    mutating func commit() {
        while learner.appliedThrough < learner.chosenThrough {
            let slot = learner.appliedThrough + 1
            guard let entry = acceptor.entry(at: slot) else {
                preconditionFailure("chosen slot \(slot) has no entry to apply")
            }
            output.committed.append(SlotEntry(slot: slot, entry: entry))
            learner.appliedThrough = slot
        }
    }
}
