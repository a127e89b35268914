import KVStore
import Paxos

/// One simulated replica process: the consensus core, the state machine and the disk,
/// plus the client requests it is serving. A crash drops everything but the disk.
final class SimNode {
    let id: ReplicaID
    let configuration: Configuration
    let disk: SimulatedDisk
    var replica: Replica?
    var kv = KVStore()
    /// Bumped at every crash, so events of an earlier life are ignored.
    var incarnation = 0
    var writesWaiting: [RequestID: (client: Int, operation: Int)] = [:]
    var readsWaiting: [ReadID: (client: Int, operation: Int, key: String)] = [:]
    var nextReadID: ReadID = 1
    var snapshotThrough: Slot = 0
    /// The highest ballot this replica ever promised or accepted on the wire, in any
    /// life (the simulator's ghost state for the P1a monitor).
    var highestBallotAnswered: Ballot = .zero

    init(id: ReplicaID, cluster: [ReplicaID], disk: SimulatedDisk, seed: UInt64) {
        self.id = id
        self.disk = disk
        do {
            configuration = try Configuration(
                replicaID: id, replicas: cluster, heartbeatIntervalTicks: 2, electionTimeoutTicks: 12,
                slotsInFlightMax: 8, batchCommandsMax: 16, learnEntriesMax: 16, promiseLagSlotsMax: 64,
                compactionTailSlots: Int(seed % 3) * 4,
                randomSeed: seed)
        } catch {
            preconditionFailure("simulator configuration is invalid: \(error)")
        }
    }
}

extension Simulation {
    func start(_ node: SimNode, durable: DurableState = DurableState()) {
        node.replica = Replica(configuration: node.configuration, durable: durable)
        schedule(.tick(node: node.id, incarnation: node.incarnation), after: 1 + random.next() % Self.tickUnits)
    }

    /// Steps a replica and carries out its output in the contract's order.
    func step(_ node: SimNode, _ event: Event) {
        guard node.replica != nil else { return }
        let output = node.replica!.step(event)
        carryOut(output, at: node)
    }

    func carryOut(_ output: Output, at node: SimNode) {
        var messages = output.messages
        if !output.records.isEmpty {
            // 0. Accept requests may leave before the fsync (`Envelope.mayLeaveBeforePersist`);
            // now and then the replica crashes right after them, before its records are durable.
            let early = messages.filter(leavesBeforePersist)
            if !early.isEmpty {
                messages.removeAll(where: leavesBeforePersist)
                for envelope in early {
                    monitorPromises(envelope)
                    send(envelope)
                }
                if !inLivenessPhase && random.next() % 10_000 < plan.crashPerTenThousand {
                    trace.note(time, "r\(node.id) crashes after sending accepts, before its fsync")
                    crash(node)
                    return
                }
            }
            // 1. Persist, then fsync (unless the injected bug defers the fsync to the next
            // tick, or the output holds only `chosenThrough` records, which a crash may lose).
            node.disk.append(output.records)
            if options.bug != .noFsync && output.recordsNeedSync { node.disk.sync() }
        }
        // 2. Only then send.
        for envelope in messages {
            monitorPromises(envelope)
            send(envelope)
        }
        // 3. Apply in slot order.
        for item in output.committed {
            apply(item, at: node)
        }
        // 4. Reads, failures, snapshots, dropped proposals.
        for readID in output.readsReleased {
            guard let waiting = node.readsWaiting.removeValue(forKey: readID) else { continue }
            let value = node.kv.get(Array(waiting.key.utf8)).map { String(decoding: $0.value, as: UTF8.self) }
            reply(.value(value), to: waiting.client, operation: waiting.operation)
        }
        for readID in output.readsFailed {
            guard let waiting = node.readsWaiting.removeValue(forKey: readID) else { continue }
            reply(.retry, to: waiting.client, operation: waiting.operation)
        }
        for peer in output.snapshotsNeeded {
            sendSnapshot(from: node, to: peer)
        }
        for command in output.proposalsDropped {
            guard let decoded = try? WriteCommand.decode(command.bytes),
                let waiting = node.writesWaiting.removeValue(forKey: decoded.requestID)
            else { continue }
            reply(.retry, to: waiting.client, operation: waiting.operation)
        }
        compactIfDue(node)
    }

    /// `Envelope.mayLeaveBeforePersist`, or with the injected bug also `accepted` replies.
    func leavesBeforePersist(_ envelope: Envelope) -> Bool {
        if options.bug == .acceptedBeforeFsync, case .accepted = envelope.message { return true }
        return envelope.mayLeaveBeforePersist
    }

    func apply(_ item: SlotEntry, at node: SimNode) {
        if let earlier = appliedValues[item.slot] {
            if earlier != item.entry.value {
                violation("agreement: r\(node.id) applied \(item.entry.value) in slot \(item.slot), another replica applied \(earlier)")
            }
        } else {
            appliedValues[item.slot] = item.entry.value
        }
        trace.note(time, "r\(node.id) apply s=\(item.slot) \(item.entry.value) b=\(item.entry.ballot)")
        for command in item.entry.value.commands {
            let (requestID, result) = node.kv.apply(encoded: command.bytes)
            guard let requestID, let waiting = node.writesWaiting.removeValue(forKey: requestID) else { continue }
            reply(.write(result), to: waiting.client, operation: waiting.operation)
        }
    }

    /// Snapshots the state machine and compacts the log every `snapshotEverySlots`.
    func compactIfDue(_ node: SimNode) {
        guard let applied = node.replica?.learner.appliedThrough,
            applied >= node.snapshotThrough + Slot(options.snapshotEverySlots)
        else { return }
        node.disk.saveSnapshot(through: applied, stateMachine: node.kv.snapshot())
        node.snapshotThrough = applied
        let output = node.replica!.step(.compacted(through: applied))
        carryOut(output, at: node)
    }

    /// Sends the state machine as of the apply point (a consistent state of that slot,
    /// at or past the last compaction) to a peer that lacks the compacted log.
    func sendSnapshot(from node: SimNode, to peer: ReplicaID) {
        guard let applied = node.replica?.learner.appliedThrough, applied > 0 else { return }
        guard !cuts.contains(Link(from: node.id, to: peer)) else { return }
        guard random.next() % 100 >= plan.lossPercent else { return }
        trace.note(time, "r\(node.id)→r\(peer) snapshot s=\(applied)")
        schedule(
            .snapshot(to: peer, slot: applied, bytes: node.kv.snapshot()),
            after: 1 + random.next() % (plan.delayUnitsMax * 4))
    }

    func installSnapshot(_ node: SimNode, through slot: Slot, bytes: [UInt8]) {
        guard let replica = node.replica, slot > replica.learner.appliedThrough else { return }
        guard let restored = try? KVStore(snapshot: bytes) else {
            violation("r\(node.id) received an unreadable snapshot through \(slot)")
            return
        }
        node.kv = restored
        node.disk.saveSnapshot(through: slot, stateMachine: bytes)
        node.snapshotThrough = slot
        trace.note(time, "r\(node.id) installed snapshot s=\(slot)")
        step(node, .snapshotInstalled(through: slot))
    }

    /// Checks Paxos's acceptor rule on the wire, across a replica's lives: "an acceptor
    /// can accept a proposal numbered n iff it has not responded to a prepare request
    /// having a number greater than n" (Paxos Made Simple, P1a). A replica that promises
    /// or accepts below a ballot it promised or accepted earlier — even before a crash —
    /// has broken it.
    func monitorPromises(_ envelope: Envelope) {
        let node = node(envelope.from)
        switch envelope.message {
        case .promise(let ballot, _, _), .accepted(let ballot, _):
            if ballot < node.highestBallotAnswered {
                violation(
                    "P1a: r\(node.id) sent \(envelope.message.kind) b=\(ballot) after answering "
                        + "b=\(node.highestBallotAnswered)")
            }
            node.highestBallotAnswered = max(node.highestBallotAnswered, ballot)
        default:
            break
        }
    }

    // MARK: - Crashes

    func crash(_ node: SimNode) {
        guard node.replica != nil else { return }
        faults += 1
        trace.note(time, "crash r\(node.id)")
        node.replica = nil
        node.incarnation += 1
        node.disk.crash()
        node.writesWaiting.removeAll()
        node.readsWaiting.removeAll()
        let delay = (1 + random.next() % plan.restartDelayTicksMax) * Self.tickUnits
        schedule(.restart(node: node.id, incarnation: node.incarnation), after: delay)
    }

    /// Restarts from what the disk kept: the snapshot restores the state machine, the
    /// log the acceptor and learner; the chosen slots after the snapshot are reapplied.
    func restart(_ node: SimNode) {
        faults += 1
        let recovered: RecoveredDisk
        do {
            recovered = try node.disk.recover()
        } catch {
            violation("r\(node.id) cannot recover its disk: \(error)")
            return
        }
        var durable = recovered.durable
        if options.bug == .forgetPromise { durable.promised = .zero }
        if let bytes = recovered.stateMachine {
            guard let restored = try? KVStore(snapshot: bytes) else {
                violation("r\(node.id) cannot read its own snapshot")
                return
            }
            node.kv = restored
        } else {
            node.kv = KVStore()
        }
        node.snapshotThrough = durable.snapshotThrough
        trace.note(
            time,
            "restart r\(node.id) promised=\(durable.promised) chosen=\(durable.chosenThrough) "
                + "snapshot=\(durable.snapshotThrough) \(recovered.note)")
        start(node, durable: durable)
    }

    // MARK: - Network

    func send(_ envelope: Envelope) {
        guard !cuts.contains(Link(from: envelope.from, to: envelope.to)) else {
            dropped += 1
            return
        }
        guard random.next() % 100 >= plan.lossPercent else {
            dropped += 1
            return
        }
        schedule(.deliver(envelope), after: networkDelay())
        if random.next() % 100 < plan.duplicatePercent {
            schedule(.deliver(envelope), after: networkDelay())
        }
    }

    func networkDelay() -> UInt64 {
        var delay = 1 + random.next() % plan.delayUnitsMax
        if random.next() % 100 < plan.longDelayPercent {
            delay += random.next() % (30 * Self.tickUnits)
        }
        return delay
    }

    // MARK: - Faults

    func injectFaults() {
        if random.next() % 10_000 < plan.crashPerTenThousand {
            let alive = nodes.filter { $0.replica != nil }
            if !alive.isEmpty {
                crash(alive[Int(random.next() % UInt64(alive.count))])
            }
        }
        if random.next() % 10_000 < plan.partitionPerTenThousand {
            changePartition()
        }
    }

    func changePartition() {
        faults += 1
        let ids = nodes.map(\.id)
        switch random.next() % 6 {
        case 0:
            cuts.removeAll()
            trace.note(time, "heal")
        case 1:
            // Split into two random groups.
            var left: Set<ReplicaID> = []
            for id in ids where random.next() % 2 == 0 { left.insert(id) }
            cuts.removeAll()
            for a in ids {
                for b in ids where a != b && left.contains(a) != left.contains(b) {
                    cuts.insert(Link(from: a, to: b))
                }
            }
            trace.note(time, "partition \(left.sorted()) | \(ids.filter { !left.contains($0) })")
        case 2:
            // Isolate the leader.
            guard let leader = nodes.first(where: { $0.replica?.isLeader == true })?.id else { return }
            for other in ids where other != leader {
                cuts.insert(Link(from: leader, to: other))
                cuts.insert(Link(from: other, to: leader))
            }
            trace.note(time, "isolate leader r\(leader)")
        case 3:
            // A one-way cut.
            let a = ids[Int(random.next() % UInt64(ids.count))]
            let b = ids[Int(random.next() % UInt64(ids.count))]
            guard a != b else { return }
            cuts.insert(Link(from: a, to: b))
            trace.note(time, "cut r\(a)→r\(b)")
        case 4:
            // Flap: isolate the leader just long enough for the others to elect a new one,
            // then heal, so the deposed leader's retransmissions meet the new ballot.
            guard let leader = nodes.first(where: { $0.replica?.isLeader == true })?.id else { return }
            for other in ids where other != leader {
                cuts.insert(Link(from: leader, to: other))
                cuts.insert(Link(from: other, to: leader))
            }
            let ticks = 2 * UInt64(nodes[0].configuration.electionTimeoutTicks) + random.next() % 20
            schedule(.heal, after: ticks * Self.tickUnits)
            trace.note(time, "flap leader r\(leader) for \(ticks) ticks")
        default:
            // Cut the leader's outbound links only: it hears the others, they don't hear it.
            guard let leader = nodes.first(where: { $0.replica?.isLeader == true })?.id else { return }
            for other in ids where other != leader {
                cuts.insert(Link(from: leader, to: other))
            }
            trace.note(time, "cut r\(leader)→all")
        }
    }
}
