import KVStore
import Paxos
import Storage

/// A turn's output after its records were appended: what is left to carry out once they
/// are durable.
struct HeldOutput {
    /// Records appended already; early `accept`s (if any) sent already.
    var output: Output
    /// The log sequence number that must be durable before this output leaves (0: none).
    var durableThrough: UInt64
    /// The leader that became known in this output's turn, if it changed: once the output is
    /// released, writes without a session still waiting on another leader fail.
    var newLeader: ReplicaID?
    /// The core's chosen prefix at the end of this output's turn: once the output is
    /// released, every vote it was counted from is durable (`chosenReleased`).
    var chosenThrough: Slot
}

/// The `Output` contract, pipelined (DESIGN §2's dedicated fsync thread):
///
///     turn k:  step → append records_k → [sync_k starts if none runs] → held_k
///     turn k+1: step → append records_k+1 → held_k+1        (sync_k still running)
///     .synced(sync_k): release held_k (send, apply, answer); sync_k+1 starts
///
/// - **Persist before send**: an output leaves only when the log is durable through every
///   record appended up to its turn that needs a sync — its own and those of earlier turns,
///   even of a turn whose output had nothing left to hold.
/// - **Turn order**: outputs leave in the order their turns ran; one that needs no sync of
///   its own waits behind those that do. Every effect a turn has on the world is in its
///   output, so the world sees exactly what a runtime that fsynced inside each turn would
///   have shown — later, never differently.
/// - **Group commit**: one sync in flight; everything appended meanwhile rides the next.
/// - **Early accepts** (`Envelope.mayLeaveBeforePersist`) leave before the turn's records
///   are durable, as before, so the acceptors' fsyncs overlap the leader's — but with a sync
///   pending, their piggybacked `chosenThrough` is capped at `chosenReleased`, the chosen
///   prefix of the last released output. A reply to an earlier accept may have been stepped
///   before the sync covering the leader's own vote for that slot completed, so the core may
///   count a slot chosen whose majority is not durable yet; everything else that announces
///   it (commits, answers, heartbeats, learns) is held behind that sync, and the cap keeps
///   the early accepts from announcing it either: a follower that learned it from one and
///   applied it could otherwise disagree with a new leader after the old one crashed and
///   lost its vote. With nothing pending (every earlier record durable, nothing held) no cap
///   is needed: the argument in `Envelope.mayLeaveBeforePersist` holds as it stands.
/// - **Draining** (`drain`): installing a snapshot, an injected failure, recovery and stop
///   make everything durable at once and release all that is held first.
extension ReplicaRuntime {
    /// Carries out an output: appends its records and releases it — sends its messages,
    /// applies, answers — once they are durable and every earlier output is released.
    func carryOut(_ output: Output, newLeader: ReplicaID? = nil) {
        guard !isHalted else { return }
        var output = output
        var ownRecordsNeedSync = false
        if !output.records.isEmpty {
            guard let storage else { preconditionFailure("records to persist while the replica is down") }
            // Accept requests first: the acceptors' fsyncs overlap ours.
            let early = output.messages.filter(leavesBeforePersist)
            if !early.isEmpty {
                let idle = held.isEmpty && syncNeededThrough <= storage.durableSequence
                environment.send(idle || options.bug == .earlyAcceptsUncapped ? early : early.map(cappingChosen))
                output.messages.removeAll(where: leavesBeforePersist)
                if environment.crashes(at: .afterEarlySend) {
                    halt()
                    return
                }
            }
            do {
                try storage.append(output.records)
            } catch {
                environment.fatal("cannot append to the write-ahead log, stopping: \(error)")
            }
            if output.recordsNeedSync && options.bug != .noFsync {
                syncNeededThrough = storage.appendedSequence
                ownRecordsNeedSync = true
            }
            output.records = []
        }
        // Not only its own records: an earlier turn's output that had nothing left to hold
        // (its accepts left early) still had records this one's effects may rest on — a
        // commit counted with the leader's own vote of that turn.
        let overtakes = options.bug == .releaseOutOfOrder && !ownRecordsNeedSync
        let durableThrough = options.bug == .releaseBeforeSync || overtakes ? 0 : syncNeededThrough
        guard !output.isEmpty || newLeader != nil else {
            startSyncIfNeeded()
            return
        }
        let waiting = HeldOutput(
            output: output, durableThrough: durableThrough, newLeader: newLeader,
            chosenThrough: replica?.learner.chosenThrough ?? 0)
        if (held.isEmpty || overtakes) && durableThrough <= (storage?.durableSequence ?? 0) {
            release(waiting)
        } else {
            held.append(waiting)
        }
        startSyncIfNeeded()
    }

    /// An early `accept` whose piggybacked chosen prefix says no more than the released
    /// outputs said (see the type's comment).
    func cappingChosen(_ envelope: Envelope) -> Envelope {
        guard case .accept(let ballot, let slot, let value, let chosenThrough) = envelope.message,
            chosenThrough > chosenReleased
        else { return envelope }
        return Envelope(
            from: envelope.from, to: envelope.to,
            message: .accept(ballot: ballot, slot: slot, value: value, chosenThrough: chosenReleased))
    }

    /// `Envelope.mayLeaveBeforePersist`, or with the injected bug also `accepted` replies.
    func leavesBeforePersist(_ envelope: Envelope) -> Bool {
        if options.bug == .acceptedBeforeFsync, case .accepted = envelope.message { return true }
        return envelope.mayLeaveBeforePersist
    }

    /// Starts a sync of everything appended when something waits for one and none runs.
    func startSyncIfNeeded() {
        guard syncInFlight == nil, let storage, syncNeededThrough > storage.durableSequence else { return }
        let pending: PendingSync
        do {
            guard let begun = try storage.beginSync() else { return }
            pending = begun
        } catch {
            environment.fatal("cannot sync the write-ahead log, stopping: \(error)")
        }
        syncInFlight = pending
        environment.syncInBackground(pending)
    }

    /// The sync in flight ran: release what it made durable, start the next.
    func synced(_ sync: PendingSync) {
        // A sync of a storage closed since (an injected failure reopened it) proves nothing.
        guard let inFlight = syncInFlight, inFlight === sync, let storage else { return }
        syncInFlight = nil
        do {
            try storage.endSync(sync)
        } catch {
            // PostgreSQL's fsyncgate lesson: the kernel may have dropped the pages; a retry
            // proves nothing. Stop.
            environment.fatal("fsync of the write-ahead log failed, stopping: \(error)")
        }
        releaseDurable()
        startSyncIfNeeded()
    }

    /// Releases held outputs, oldest first, while the log is durable through their records.
    func releaseDurable() {
        guard let storage else { return }
        while let first = held.first, first.durableThrough <= storage.durableSequence {
            held.removeFirst()
            release(first)
            guard !isHalted else { return }
        }
    }

    /// Makes every appended record durable here and now (a synchronous fsync on the driver's
    /// thread) and releases everything held: for the rare moments that must not overtake
    /// held outputs — installing a snapshot, an injected failure or recovery, stopping.
    func drain() {
        guard !held.isEmpty, let storage else { return }
        do {
            try storage.syncNow()
        } catch {
            environment.fatal("cannot sync the write-ahead log, stopping: \(error)")
        }
        releaseDurable()
        precondition(isHalted || held.isEmpty, "outputs held after a drain")
    }

    /// Carries out what an output asks once its records are durable: send, apply, answer.
    func release(_ held: HeldOutput) {
        chosenReleased = max(chosenReleased, held.chosenThrough)
        let output = held.output
        if !output.messages.isEmpty {
            environment.send(output.messages)
        }
        for item in output.committed {
            apply(item)
        }
        for readID in output.readsReleased {
            if answerConfirmedKeepAlive(readID) { continue }
            guard let waiting = takeRead(readID) else { continue }
            waiting.reply(serve(waiting.request))
        }
        for readID in output.readsFailed {
            if failConfirmingKeepAlive(readID) { continue }
            takeRead(readID)?.reply(.failure(.noLeader))
        }
        for peer in output.snapshotsNeeded {
            startSnapshotTransfer(to: peer)
        }
        for command in output.proposalsDropped {
            guard let requestID = try? WriteCommand.decode(command.bytes).requestID else { continue }
            for waiter in takeWrites(requestID) {
                waiter.reply(.failure(.noLeader))
            }
        }
        if let newLeader = held.newLeader {
            failWritesWithoutSession(forwardedAwayFrom: newLeader)
        }
        compactIfDue()
    }

    func apply(_ item: SlotEntry) {
        environment.didApply(item)
        appliedThroughKV = item.slot
        for command in item.entry.value.commands {
            appliedBytesSinceSnapshot += command.bytes.count
            let (requestID, result) = kv.apply(encoded: command.bytes)
            guard let requestID else { continue }
            let waiting = takeWrites(requestID)
            guard !waiting.isEmpty else { continue }
            var answered = position
            answered.revision = result.revision
            for waiter in waiting {
                waiter.reply(.success(result, answered))
            }
        }
    }

    /// Outputs waiting for a sync (for monitoring and tests).
    public var outputsHeld: Int { held.count }
}
