import Testing

@testable import Paxos

/// A hand-driven cluster: messages are delivered only when a test says so, so each test
/// reads as a scripted scenario with canonical traces.
struct ScriptedCluster {
    var replicas: [ReplicaID: Replica] = [:]
    /// Messages sent and not yet delivered, in order.
    var inFlight: [Envelope] = []
    /// Every output, by replica, in order.
    var outputs: [ReplicaID: [Output]] = [:]
    var trace: [String] = []

    init(size: Int, electionTimeoutTicks: Int = 10, seed: UInt64 = 7, compactionTailSlots: Int = 1_024) throws {
        let ids = (1...size).map { ReplicaID($0) }
        for id in ids {
            let configuration = try Configuration(
                replicaID: id, replicas: ids, heartbeatIntervalTicks: 1, electionTimeoutTicks: electionTimeoutTicks,
                slotsInFlightMax: 4, batchCommandsMax: 3, compactionTailSlots: compactionTailSlots, randomSeed: seed)
            replicas[id] = Replica(configuration: configuration)
        }
    }

    @discardableResult
    mutating func step(_ id: ReplicaID, _ event: Event) -> Output {
        let output = replicas[id]!.step(event)
        outputs[id, default: []].append(output)
        inFlight.append(contentsOf: output.messages)
        return output
    }

    /// Delivers every message in flight (and the ones they cause) except those `drop`
    /// rejects, until none is left or `limit` deliveries happened.
    mutating func deliverAll(limit: Int = 10_000, drop: (Envelope) -> Bool = { _ in false }) {
        var delivered = 0
        while !inFlight.isEmpty && delivered < limit {
            let envelope = inFlight.removeFirst()
            delivered += 1
            if drop(envelope) { continue }
            trace.append(envelope.description)
            step(envelope.to, .receive(envelope))
        }
    }

    /// Makes `id` campaign now and delivers everything: it becomes leader.
    mutating func elect(_ id: ReplicaID) {
        let timeout = replicas[id]!.electionTimeout
        for _ in 0..<timeout { step(id, .tick) }
        deliverAll()
    }

    func committed(_ id: ReplicaID) -> [SlotEntry] {
        outputs[id, default: []].flatMap(\.committed)
    }
}

func command(_ text: String) -> Command { Command(Array(text.utf8)) }

@Suite("Replica scenarios")
struct ReplicaScenarioTests {
    @Test("A follower that hears no leader for its election timeout runs Phase 1 and wins with a majority")
    func electionByTicks() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        #expect(cluster.replicas[1]!.isLeader)
        #expect(cluster.replicas[2]!.leader == 1)
        #expect(cluster.replicas[3]!.leader == 1)
        #expect(cluster.trace.contains("r1→r2 prepare b=1.1 from=1"))
        #expect(cluster.trace.contains("r2→r1 promise b=1.1 entries=0 chosen=0"))
    }

    @Test("A command proposed at a follower is forwarded, chosen by a majority and applied on every replica")
    func writeThroughFollower() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(3, .propose([command("a")]))
        cluster.deliverAll()
        cluster.step(1, .tick)
        cluster.deliverAll()
        for id: ReplicaID in 1...3 {
            #expect(cluster.committed(id).map(\.entry.value) == [.batch([command("a")])], "replica \(id)")
        }
        #expect(cluster.trace.contains("r3→r1 forward n=1"))
        #expect(cluster.trace.contains("r1→r2 accept b=1.1 s=1 n=1 chosen=0"))
    }

    @Test("Persist before send: a promise and an accepted reply leave in the same output as their records")
    func recordsAccompanyReplies() throws {
        var cluster = try ScriptedCluster(size: 3)
        let prepare = Envelope(from: 1, to: 2, message: .prepare(ballot: Ballot(round: 4, replica: 1), fromSlot: 1))
        let promise = cluster.step(2, .receive(prepare))
        #expect(promise.records == [.promised(Ballot(round: 4, replica: 1))])
        #expect(promise.messages.map(\.message.kind) == ["promise"])
        let accept = Envelope(
            from: 1, to: 2,
            message: .accept(ballot: Ballot(round: 4, replica: 1), slot: 1, value: .batch([command("x")]), chosenThrough: 0))
        let accepted = cluster.step(2, .receive(accept))
        #expect(
            accepted.records == [.accepted(slot: 1, entry: LogEntry(ballot: Ballot(round: 4, replica: 1), value: .batch([command("x")])))])
        #expect(accepted.messages.map(\.message.kind) == ["accepted"])
    }

    @Test("P1a: an acceptor rejects an accept below the ballot it promised")
    func acceptBelowPromiseRejected() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.step(2, .receive(Envelope(from: 3, to: 2, message: .prepare(ballot: Ballot(round: 5, replica: 3), fromSlot: 1))))
        let output = cluster.step(
            2,
            .receive(
                Envelope(
                    from: 1, to: 2,
                    message: .accept(ballot: Ballot(round: 4, replica: 1), slot: 1, value: .noop, chosenThrough: 0))))
        #expect(output.records.isEmpty)
        #expect(output.messages.map(\.message) == [.reject(promised: Ballot(round: 5, replica: 3))])
    }

    @Test("Phase 1b reports the highest-numbered accepted proposal of every slot (Paxos Made Simple 2.2)")
    func promiseCarriesAccepted() throws {
        var cluster = try ScriptedCluster(size: 3)
        let low = Ballot(round: 1, replica: 1)
        cluster.step(2, .receive(Envelope(from: 1, to: 2, message: .accept(ballot: low, slot: 3, value: .batch([command("v")]), chosenThrough: 0))))
        // The leader itself prepares a higher ballot (its own prepares are never ignored).
        let output = cluster.step(2, .receive(Envelope(from: 1, to: 2, message: .prepare(ballot: Ballot(round: 2, replica: 1), fromSlot: 1))))
        guard case .promise(_, let entries, _, _) = output.messages.first?.message else {
            Issue.record("no promise in \(output.messages)")
            return
        }
        #expect(entries == [SlotEntry(slot: 3, entry: LogEntry(ballot: low, value: .batch([command("v")])))])
    }

    @Test("A new leader re-proposes the highest-ballot accepted value of each slot and fills holes with no-ops")
    func newLeaderRecovers() throws {
        var cluster = try ScriptedCluster(size: 3)
        // Two earlier leaders, r3 (round 1) and then r2 (round 2), left accepted values:
        // r2 accepted slot 2 in 1.3 and slot 3 in 2.2; r3 accepted slot 3 in 1.3 only.
        _ = cluster.replicas[2]!.acceptor.accept(ballot: Ballot(round: 1, replica: 3), slot: 2, value: .batch([command("old")]))
        _ = cluster.replicas[2]!.acceptor.accept(ballot: Ballot(round: 2, replica: 2), slot: 3, value: .batch([command("new")]))
        _ = cluster.replicas[3]!.acceptor.accept(ballot: Ballot(round: 1, replica: 3), slot: 3, value: .batch([command("stale")]))
        cluster.inFlight.removeAll()
        // r1's first campaign (round 1) is refused; it learns round 2 and wins with round 3.
        for _ in 0..<3 where !cluster.replicas[1]!.isLeader {
            cluster.elect(1)
        }
        #expect(cluster.replicas[1]!.isLeader)
        #expect(cluster.replicas[1]!.ballot!.round >= 3)
        let values = cluster.committed(1).map(\.entry.value)
        #expect(values == [.noop, .batch([command("old")]), .batch([command("new")])])
    }

    @Test("Acceptors that heard from a live leader ignore a challenger's prepare (no disruption)")
    func leaseIgnoresChallenger() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        let output = cluster.step(2, .receive(Envelope(from: 3, to: 2, message: .prepare(ballot: Ballot(round: 9, replica: 3), fromSlot: 1))))
        #expect(output.messages.isEmpty)
        #expect(cluster.replicas[2]!.acceptor.promised == Ballot(round: 1, replica: 1))
    }

    @Test("Check quorum: a leader that hears from no majority for an election timeout steps down")
    func checkQuorumStepsDown() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        for _ in 0..<25 { cluster.step(1, .tick) }
        cluster.inFlight.removeAll()
        #expect(!cluster.replicas[1]!.isLeader)
    }

    @Test("Pipelining: at most slotsInFlightMax slots wait to be chosen; the rest batch behind them")
    func windowAndBatching() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.inFlight.removeAll()
        let commands = (0..<20).map { command("c\($0)") }
        let output = cluster.step(1, .propose(commands))
        let accepts = output.messages.filter { $0.to == 2 && $0.message.kind == "accept" }
        #expect(accepts.count == 4)  // slotsInFlightMax
        for accept in accepts {
            guard case .accept(_, _, let value, _) = accept.message else { continue }
            #expect(value.commands.count == 3)  // batchCommandsMax
        }
        #expect(cluster.replicas[1]!.proposer.leadership!.pendingCommands.count == 8)
    }

    @Test("Read index: a read is released only after a majority confirmed the leader, and after apply")
    func readIndex() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(1, .propose([command("w")]))
        cluster.deliverAll()
        let first = cluster.step(1, .read(42))
        #expect(first.readsReleased.isEmpty)
        #expect(first.messages.contains { if case .heartbeat(_, _, let round) = $0.message { return round == 1 } else { return false } })
        cluster.deliverAll()
        let released = cluster.outputs[1]!.flatMap(\.readsReleased)
        #expect(released == [42])
    }

    @Test("A read at a follower goes to the leader for a read index and is served locally after apply")
    func followerRead() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(2, .read(7))
        cluster.deliverAll()
        #expect(cluster.outputs[2]!.flatMap(\.readsReleased) == [7])
        #expect(cluster.trace.contains("r2→r1 read-index-request id=7"))
    }

    @Test("A learner that missed slots is sent the chosen values it lacks")
    func learnerCatchesUp() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(1, .propose([command("a"), command("b")]))
        cluster.deliverAll(drop: { $0.to == 3 || $0.from == 3 })
        #expect(cluster.committed(3).isEmpty)
        cluster.step(1, .tick)
        cluster.deliverAll()
        cluster.step(1, .tick)
        cluster.deliverAll()
        #expect(cluster.committed(3).map(\.entry.value) == cluster.committed(1).map(\.entry.value))
        #expect(cluster.trace.contains { $0.hasPrefix("r3→r1 learn-request") })
        #expect(!cluster.trace.contains { $0.hasPrefix("r2→r1 learn-request") })
    }

    @Test("A learner that holds the slots announced asks for nothing, and a lagging ack alone sends no learn")
    func learnOnlyWhenAsked() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        for index in 0..<4 {
            cluster.step(1, .propose([command("w\(index)")]))
            cluster.deliverAll()
            cluster.step(1, .tick)
            cluster.deliverAll()
        }
        #expect(cluster.committed(2).count == cluster.committed(1).count)
        #expect(!cluster.trace.contains { $0.contains("learn") })
        // An ack that answered an older heartbeat: the learner was behind the leader then,
        // not necessarily now. It asks by itself if it lacks values.
        let ballot = cluster.replicas[1]!.ballot!
        let output = cluster.step(
            1, .receive(Envelope(from: 2, to: 1, message: .heartbeatAck(ballot: ballot, readRound: 0, chosenThrough: 1))))
        #expect(!output.messages.contains { $0.message.kind == "learn" })
    }

    @Test("A follower acks heartbeats once per tick, but every new read round and every new ballot at once")
    func heartbeatAcksPerTick() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        let ballot = cluster.replicas[1]!.ballot!
        func acks(_ output: Output) -> [Message] {
            output.messages.map(\.message).filter { $0.kind == "heartbeat-ack" }
        }
        func heartbeat(_ ballot: Ballot, chosen: Slot, round: UInt64) -> Event {
            .receive(Envelope(from: 1, to: 2, message: .heartbeat(ballot: ballot, chosenThrough: chosen, readRound: round)))
        }
        cluster.step(2, .tick)
        // The first heartbeat of a tick is acked; the leader's further announcements of its
        // chosen prefix in the same tick are not.
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 0))).count == 1)
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 0))).isEmpty)
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 0))).isEmpty)
        // A read round waits for a majority of acks: a new one is confirmed at once, an old
        // one not again.
        let confirm = acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 1)))
        #expect(confirm.count == 1)
        if case .heartbeatAck(_, let round, _) = confirm.first { #expect(round == 1) }
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 1))).isEmpty)
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 0))).isEmpty)
        // A new tick: the leader hears again that the follower is alive.
        cluster.step(2, .tick)
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 1))).count == 1)
        #expect(acks(cluster.step(2, heartbeat(ballot, chosen: 0, round: 1))).isEmpty)
        // A new leader's ballot is acked at once.
        let next = Ballot(round: ballot.round + 1, replica: 3)
        let output = cluster.step(
            2, .receive(Envelope(from: 3, to: 2, message: .heartbeat(ballot: next, chosenThrough: 0, readRound: 1))))
        #expect(acks(output).count == 1)
    }

    @Test(
        "After compaction a lagging learner gets entries from the retained tail, or a snapshot without one",
        arguments: [(1_024, false), (0, true)])
    func compactionTail(tailSlots: Int, expectSnapshot: Bool) throws {
        var cluster = try ScriptedCluster(size: 3, compactionTailSlots: tailSlots)
        cluster.elect(1)
        for index in 0..<6 {
            cluster.step(1, .propose([command("w\(index)")]))
            cluster.deliverAll(drop: { $0.to == 3 || $0.from == 3 })
        }
        let applied = cluster.replicas[1]!.learner.appliedThrough
        #expect(applied >= 6)
        cluster.step(1, .compacted(through: applied))
        let output = cluster.step(1, .receive(Envelope(from: 3, to: 1, message: .learnRequest(fromSlot: 1))))
        #expect(output.snapshotsNeeded == (expectSnapshot ? [3] : []))
        #expect(output.messages.contains { $0.message.kind == "learn" } == !expectSnapshot)
    }

    @Test("Restart: a replica rebuilt from its records keeps its promise and its chosen log")
    func restartFromRecords() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(1, .propose([command("a")]))
        cluster.deliverAll()
        cluster.step(1, .tick)
        cluster.deliverAll()
        var durable = DurableState()
        for output in cluster.outputs[2]! {
            for record in output.records { durable.apply(record) }
        }
        #expect(durable.promised == Ballot(round: 1, replica: 1))
        var restarted = Replica(configuration: cluster.replicas[2]!.configuration, durable: durable)
        let output = restarted.step(.tick)
        #expect(output.committed.map(\.entry.value) == [.batch([command("a")])])
    }

    @Test("Canonical one-line traces")
    func traces() {
        let envelope = Envelope(
            from: 1, to: 2,
            message: .accept(ballot: Ballot(round: 3, replica: 1), slot: 17, value: .batch([command("x")]), chosenThrough: 16))
        #expect(envelope.description == "r1→r2 accept b=3.1 s=17 n=1 chosen=16")
    }

    @Test("Configuration is validated at construction with one clear line")
    func configurationValidation() {
        #expect(throws: ConfigurationError.invalid("replica id 4 is not one of the cluster's [1, 2, 3]")) {
            try Configuration(replicaID: 4, replicas: [1, 2, 3])
        }
        #expect(throws: ConfigurationError.self) { try Configuration(replicaID: 1, replicas: [1, 1, 2]) }
        #expect(throws: ConfigurationError.self) {
            try Configuration(replicaID: 1, replicas: [1], heartbeatIntervalTicks: 5, electionTimeoutTicks: 6)
        }
    }

    @Test("Bounds relate: promise lag exceeds the window, pending commands hold at least a batch")
    func boundsRelate() throws {
        let configuration = try Configuration(replicaID: 1, replicas: [1, 2, 3])
        #expect(configuration.promiseLagSlotsMax > configuration.slotsInFlightMax)
        #expect(configuration.pendingCommandsMax >= configuration.batchCommandsMax)
        #expect(configuration.readTimeoutTicks >= configuration.electionTimeoutTicks)
    }

    @Test("A single-replica cluster elects itself and commits alone")
    func singleReplica() throws {
        var cluster = try ScriptedCluster(size: 1)
        cluster.elect(1)
        cluster.step(1, .propose([command("solo")]))
        #expect(cluster.committed(1).map(\.entry.value) == [.batch([command("solo")])])
        let read = cluster.step(1, .read(1))
        #expect(read.readsReleased == [1])
    }
}
