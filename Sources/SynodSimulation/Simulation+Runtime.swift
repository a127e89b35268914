import KVStore
import Paxos
import ReplicaRuntime
import Storage
import StorageTools

/// One simulated replica process: the shipped `ReplicaRuntime` over a simulated file
/// system, fed by the simulated network in turns like the server's loop. A crash discards
/// the runtime (the process) and keeps only what the file system made durable.
final class SimNode {
    let id: ReplicaID
    let configuration: Configuration
    let fileSystem: SimulatedFileSystem
    var runtime: ReplicaRuntime?
    var environment: SimEnvironment?
    /// Bumped at every crash, so events of an earlier life are ignored.
    var incarnation = 0
    /// Events delivered and not yet handed to the runtime: a turn takes them all.
    var inbox: [RuntimeEvent] = []
    var turnScheduled = false
    /// The highest ballot this replica ever promised or accepted on the wire, in any
    /// life (the simulator's ghost state for the P1a monitor).
    var highestBallotAnswered: Ballot = .zero

    init(id: ReplicaID, cluster: [ReplicaID], seed: UInt64) {
        self.id = id
        fileSystem = SimulatedFileSystem(seed: seed &* 31 &+ UInt64(id))
        do {
            configuration = try Configuration(
                replicaID: id, replicas: cluster, heartbeatIntervalTicks: 2, electionTimeoutTicks: 12,
                slotsInFlightMax: 8, batchCommandsMax: 16, batchBytesMax: Int(1 + seed % 3) * 1_536,
                pendingCommandsMax: 64, pendingBytesMax: 48 * 1_024, learnEntriesMax: 16, promiseLagSlotsMax: 64,
                compactionTailSlots: Int(seed % 3) * 4,
                randomSeed: seed)
        } catch {
            preconditionFailure("simulator configuration is invalid: \(error)")
        }
    }

    var replica: Replica? { runtime?.replica }
    var isUp: Bool { runtime?.replica != nil }
}

/// The runtime's seams in the simulator: the seeded network, the trace, the checkers.
final class SimEnvironment: RuntimeEnvironment {
    unowned let simulation: Simulation
    let node: ReplicaID
    let incarnation: Int

    init(simulation: Simulation, node: ReplicaID, incarnation: Int) {
        self.simulation = simulation
        self.node = node
        self.incarnation = incarnation
    }

    func send(_ envelopes: [Envelope]) {
        for envelope in envelopes {
            simulation.monitorPromises(envelope)
            simulation.send(envelope)
        }
    }

    func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID) {
        simulation.sendChunk(chunk, from: node, to: peer)
    }

    /// The work runs a few moments later (the background thread's), in one piece; a crash
    /// before then means it never ran. A crash after it ran and before the replica took its
    /// outcome leaves a written snapshot that only the next recovery adopts.
    func runInBackground(_ work: @escaping @Sendable () -> RuntimeEvent) {
        simulation.schedule(
            .background(node: node, incarnation: incarnation, work: work), after: 1 + simulation.random.next() % 20)
    }

    /// The disk finishes the sync a few moments later (now and then much later: a slow
    /// fdatasync), while the replica goes on stepping turns; a crash before then means the
    /// sync never ran, and the file system keeps only what was durable. Now and then the
    /// process does crash in that window, with records appended and outputs held.
    func syncInBackground(_ sync: PendingSync) {
        let random = simulation.random.next()
        let delay = random % 8 == 0 ? 5 + simulation.random.next() % 40 : 1 + simulation.random.next() % 6
        simulation.schedule(
            .background(node: node, incarnation: incarnation, work: { sync.runForRuntime() }), after: delay)
        guard !simulation.inLivenessPhase,
            simulation.random.next() % 10_000 < simulation.plan.crashPerTenThousand
        else { return }
        simulation.schedule(.crash(node: node, incarnation: incarnation), after: simulation.random.next() % delay)
    }

    func log(_ level: RuntimeLogLevel, _ message: String) {
        simulation.trace.note(simulation.time, "r\(node) \(message)")
    }

    func fatal(_ message: String) -> Never {
        preconditionFailure("r\(node): \(message)")
    }

    func didApply(_ item: SlotEntry) {
        simulation.checkAgreement(item, at: node)
        simulation.noteLeaseExpiries(item, at: node)
    }

    func crashes(at point: CrashPoint) -> Bool {
        switch point {
        case .afterEarlySend:
            guard !simulation.inLivenessPhase else { return false }
            guard simulation.random.next() % 10_000 < simulation.plan.crashPerTenThousand else { return false }
            simulation.trace.note(simulation.time, "r\(node) crashes after sending accepts, before its fsync")
            return true
        }
    }
}

extension Simulation {
    /// Starts (or restarts) a replica process over what its file system kept.
    func start(_ node: SimNode) {
        let environment = SimEnvironment(simulation: self, node: node.id, incarnation: node.incarnation)
        var bug: RuntimeBug?
        switch options.bug {
        case .forgetPromise: bug = .forgetPromise
        case .noFsync: bug = .noFsync
        case .acceptedBeforeFsync: bug = .acceptedBeforeFsync
        case .releaseBeforeSync: bug = .releaseBeforeSync
        case .earlyAcceptsUncapped: bug = .earlyAcceptsUncapped
        case .acceptorRecoversWithoutLog: bug = .acceptorRecoversWithoutLog
        case .dropWatchEvent: bug = .dropWatchEvent
        case .followerExpiresLeases: bug = .followerExpiresLeases
        case .noLeaseEpochs: bug = .noLeaseEpochs
        case nil: bug = nil
        }
        var runtimeOptions = RuntimeOptions(
            paxos: node.configuration, directory: "/data/r\(node.id)", fileSystem: node.fileSystem,
            storage: .testing(segmentBytesMax: 16 * 1024), snapshotEverySlots: options.snapshotEverySlots,
            tickMilliseconds: Self.tickUnits, faults: plan.faults,
            seed: options.seed &+ UInt64(node.id) &* 7_919 &+ UInt64(node.incarnation),
            requestsWaitingMax: 48, requestBytesWaitingMax: 32 * 1_024,
            snapshotBytesPerTurnMax: 2 * 1_024, snapshotChunkBytesMax: 700, bug: bug)
        // Some seeds compact their history automatically, through the log.
        if options.seed % 4 == 0 { runtimeOptions.autoCompaction = .revision(retain: 8) }
        runtimeOptions.snapshotLogShare = options.snapshotLogShare
        let runtime = ReplicaRuntime(options: runtimeOptions, environment: environment)
        node.environment = environment
        node.runtime = runtime
        node.inbox.removeAll()
        node.turnScheduled = false
        do {
            try runtime.start(now: now)
        } catch {
            violation("r\(node.id) cannot recover its disk: \(error)")
            node.runtime = nil
            return
        }
        checkAcceptorMemory(node)
        watchProcessStarted(node)
        if inLivenessPhase { runtime.stopInjectingFaults() }
        schedule(.tick(node: node.id, incarnation: node.incarnation), after: 1 + random.next() % Self.tickUnits)
    }

    /// The runtime's clock: one time unit is one millisecond.
    var now: RuntimeInstant { .milliseconds(time) }

    /// Hands an event to a replica; it is stepped in the replica's next turn, with
    /// whatever else arrives before it (as the server's loop batches a wake-up's events).
    func deliver(_ event: RuntimeEvent, to node: SimNode) {
        guard node.runtime != nil else { return }
        node.inbox.append(event)
        if !node.turnScheduled {
            node.turnScheduled = true
            schedule(.turn(node: node.id, incarnation: node.incarnation), after: random.next() % 3)
        }
    }

    /// One turn of a replica: every event in its inbox, and the tick if one is due.
    func runTurn(_ node: SimNode, tick: Bool) {
        guard let runtime = node.runtime else { return }
        let events = node.inbox
        node.inbox.removeAll()
        node.turnScheduled = false
        runtime.turn(events, tick: tick, now: now)
        if runtime.isHalted {
            crash(node)
            return
        }
        checkAcceptorMemory(node)
        watchAfterTurn(node)
    }

    /// Paxos's acceptor durability, checked on the state: an acceptor that is up (after any
    /// number of restarts and injected failures) has promised at least every ballot it ever
    /// answered on the wire — it remembers its promises (the P1a monitor's ghost state).
    func checkAcceptorMemory(_ node: SimNode) {
        guard let acceptor = node.runtime?.replica?.acceptor, node.runtime?.replica?.acceptorDown == false else { return }
        if acceptor.promised < node.highestBallotAnswered {
            violation(
                "acceptor memory: r\(node.id) has promised \(acceptor.promised) but answered "
                    + "b=\(node.highestBallotAnswered) earlier (a promise was forgotten)")
            node.highestBallotAnswered = acceptor.promised  // report once
        }
    }

    func checkAgreement(_ item: SlotEntry, at node: ReplicaID) {
        if let earlier = appliedValues[item.slot] {
            if earlier != item.entry.value {
                violation("agreement: r\(node) applied \(item.entry.value) in slot \(item.slot), another replica applied \(earlier)")
            }
        } else {
            appliedValues[item.slot] = item.entry.value
        }
        trace.note(time, "r\(node) apply s=\(item.slot) \(item.entry.value) b=\(item.entry.ballot)")
    }

    /// Checks Paxos's acceptor rule on the wire, across a replica's lives: "an acceptor
    /// can accept a proposal numbered n iff it has not responded to a prepare request
    /// having a number greater than n" (Paxos Made Simple, P1a). A replica that promises
    /// or accepts below a ballot it promised or accepted earlier — even before a crash —
    /// has broken it.
    func monitorPromises(_ envelope: Envelope) {
        let node = node(envelope.from)
        switch envelope.message {
        case .promise(let ballot, _, _, _), .accepted(let ballot, _):
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

    /// Kills a replica's process: the runtime and everything in memory go; the file
    /// system keeps what was synced (and maybe part of what was not, torn).
    func crash(_ node: SimNode) {
        guard node.runtime != nil else { return }
        faults += 1
        trace.note(time, "crash r\(node.id)")
        watchProcessCrashed(node)
        node.runtime = nil
        node.environment = nil
        node.inbox.removeAll()
        node.turnScheduled = false
        node.incarnation += 1
        node.fileSystem.crash()
        let delay = (1 + random.next() % plan.restartDelayTicksMax) * Self.tickUnits
        schedule(.restart(node: node.id, incarnation: node.incarnation), after: delay)
    }

    func restart(_ node: SimNode) {
        faults += 1
        trace.note(time, "restart r\(node.id)")
        start(node)
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

    /// Snapshot chunks travel like a TCP stream: in order on their link, and lost with the
    /// link (a lost chunk leaves a gap the receiver detects).
    func sendChunk(_ chunk: SnapshotChunk, from: ReplicaID, to: ReplicaID) {
        let link = Link(from: from, to: to)
        guard !cuts.contains(link), random.next() % 100 >= plan.lossPercent / 2 else {
            dropped += 1
            return
        }
        let at = max(time + networkDelay(), (chunkArrivals[link] ?? 0) + 1)
        chunkArrivals[link] = at
        queue.push(.snapshotChunk(to: to, from: from, chunk), at: at)
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
            let alive = nodes.filter { $0.runtime != nil }
            if !alive.isEmpty {
                crash(alive[Int(random.next() % UInt64(alive.count))])
            }
        }
        if random.next() % 10_000 < plan.partitionPerTenThousand {
            changePartition()
        }
        // Planned leader changes (SIGTERM, MoveLeader) through the runtime, now and then.
        if random.next() % 10_000 < plan.partitionPerTenThousand / 3, let leader = leaderID {
            let target: ReplicaID? = random.next() % 2 == 0 ? nil : ReplicaID(1 + random.next() % UInt64(nodes.count))
            trace.note(time, "transfer leadership from r\(leader) to \(target.map { "r\($0)" } ?? "the most up-to-date peer")")
            deliver(.transferLeadership(to: target, reply: { _ in }), to: node(leader))
        }
    }

    var leaderID: ReplicaID? { nodes.first(where: { $0.replica?.isLeader == true })?.id }

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
            guard let leader = leaderID else { return }
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
            guard let leader = leaderID else { return }
            for other in ids where other != leader {
                cuts.insert(Link(from: leader, to: other))
                cuts.insert(Link(from: other, to: leader))
            }
            let ticks = 2 * UInt64(nodes[0].configuration.electionTimeoutTicks) + random.next() % 20
            schedule(.heal, after: ticks * Self.tickUnits)
            trace.note(time, "flap leader r\(leader) for \(ticks) ticks")
        default:
            // Cut the leader's outbound links only: it hears the others, they don't hear it.
            guard let leader = leaderID else { return }
            for other in ids where other != leader {
                cuts.insert(Link(from: leader, to: other))
            }
            trace.note(time, "cut r\(leader)→all")
        }
    }
}
