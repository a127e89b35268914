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
}

/// The `Output` contract, pipelined (DESIGN §2's dedicated fsync thread):
///
///     turn k:  step → append records_k → [sync_k starts if none runs] → held_k
///     turn k+1: step → append records_k+1 → held_k+1        (sync_k still running)
///     .synced(sync_k): release held_k (send, apply, answer); sync_k+1 starts
///
/// - **Persist before send**: an output leaves only when the log is durable through its own
///   records, hence through every record appended before them.
/// - **Turn order**: outputs leave in the order their turns ran; one that needs no sync of
///   its own waits behind those that do. Every effect a turn has on the world is in its
///   output, so the world sees exactly what a runtime that fsynced inside each turn would
///   have shown — later, never differently.
/// - **Group commit**: one sync in flight; everything appended meanwhile rides the next.
/// - **Early accepts** (`Envelope.mayLeaveBeforePersist`) only in a turn that starts with
///   every earlier record durable and nothing held, as the argument for them assumes (their
///   `chosenThrough` is backed by durable votes only). With a sync pending, a reply to an
///   earlier accept may have been counted with this replica's own not-yet-durable vote, and
///   an early accept would announce that slot as chosen.
/// - **Draining** (`drain`): installing a snapshot, an injected failure, recovery and stop
///   make everything durable at once and release all that is held first.
extension ReplicaRuntime {
    /// Carries out an output: appends its records and releases it — sends its messages,
    /// applies, answers — once they are durable and every earlier output is released.
    func carryOut(_ output: Output, newLeader: ReplicaID? = nil) {
        guard !isHalted else { return }
        var output = output
        var durableThrough: UInt64 = 0
        if !output.records.isEmpty {
            guard let storage else { preconditionFailure("records to persist while the replica is down") }
            if held.isEmpty && syncNeededThrough <= storage.durableSequence {
                // Accept requests first: the acceptors' fsyncs overlap ours.
                let early = output.messages.filter(leavesBeforePersist)
                if !early.isEmpty {
                    environment.send(early)
                    output.messages.removeAll(where: leavesBeforePersist)
                    if environment.crashes(at: .afterEarlySend) {
                        halt()
                        return
                    }
                }
            }
            do {
                try storage.append(output.records)
            } catch {
                environment.fatal("cannot append to the write-ahead log, stopping: \(error)")
            }
            if output.recordsNeedSync && options.bug != .noFsync {
                syncNeededThrough = storage.appendedSequence
                if options.bug != .releaseBeforeSync { durableThrough = storage.appendedSequence }
            }
            output.records = []
        }
        guard !output.isEmpty || newLeader != nil else {
            startSyncIfNeeded()
            return
        }
        let waiting = HeldOutput(output: output, durableThrough: durableThrough, newLeader: newLeader)
        let overtakes = options.bug == .releaseOutOfOrder && durableThrough == 0
        if (held.isEmpty || overtakes) && durableThrough <= (storage?.durableSequence ?? 0) {
            release(waiting)
        } else {
            held.append(waiting)
        }
        startSyncIfNeeded()
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
