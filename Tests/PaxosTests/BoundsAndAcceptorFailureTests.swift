import Testing

@testable import Paxos

/// Message byte bounds (a promise, a forward never outgrows a transport frame), the
/// leader's queue byte bound, and the seed's acceptor-only failures.
@Suite("Bounds and acceptor failures")
struct BoundsAndAcceptorFailureTests {
    static func bigCommand(_ index: Int, bytes: Int) -> Command {
        Command(Array("c\(index)-".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: bytes))
    }

    @Test("A promise over the byte bound comes in pieces, and the candidate gets every entry before it leads")
    func promiseInPieces() throws {
        var cluster = try ScriptedCluster(size: 3)
        // r2 and r3 accepted ten 600 KB values from an old leader r1 in round 1 (6 MB in
        // all; a promise with all of them would exceed the transport's 4 MiB frame).
        let old = Ballot(round: 1, replica: 1)
        for slot in Slot(1)...10 {
            let value = Value.batch([Self.bigCommand(Int(slot), bytes: 600_000)])
            for id: ReplicaID in [2, 3] {
                _ = cluster.replicas[id]!.acceptor.accept(ballot: old, slot: slot, value: value)
            }
        }
        // r1 is cut off, so r2 needs r3's whole promise to lead.
        let timeout = cluster.replicas[2]!.electionTimeout
        for _ in 0..<timeout { cluster.step(2, .tick) }
        cluster.deliverAll(drop: { $0.to == 1 || $0.from == 1 })
        #expect(cluster.replicas[2]!.isLeader)
        let bound = cluster.replicas[2]!.configuration.batchBytesMax
        let promises = cluster.outputs.values.flatMap { $0.flatMap(\.messages) }.compactMap { envelope -> (Int, Bool)? in
            guard case .promise(_, let entries, _, let more) = envelope.message else { return nil }
            return (entries.reduce(0) { $0 + $1.entry.value.commandBytes }, more)
        }
        #expect(promises.count >= 5, "expected the 6 MB promise in pieces, got \(promises.count)")
        for (bytes, _) in promises {
            #expect(bytes <= max(bound, 600_010), "a promise piece carried \(bytes) bytes")
        }
        #expect(promises.contains { $0.1 }, "no piece said more")
        // Every old value is re-proposed and chosen in its slot.
        cluster.deliverAll(drop: { $0.to == 1 || $0.from == 1 })
        let chosen = cluster.committed(2).filter { $0.slot <= 10 }
        #expect(chosen.map(\.slot) == Array(Slot(1)...10))
        for item in chosen {
            #expect(item.entry.value == .batch([Self.bigCommand(Int(item.slot), bytes: 600_000)]))
        }
    }

    @Test("Forwarded commands are split so one forward stays within the batch byte bound")
    func forwardSplit() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        let commands = (0..<8).map { Self.bigCommand($0, bytes: 400_000) }
        let output = cluster.step(2, .propose(commands))
        let forwards = output.messages.compactMap { envelope -> [Command]? in
            guard case .forward(let commands) = envelope.message else { return nil }
            return commands
        }
        #expect(forwards.count >= 3)
        #expect(forwards.flatMap { $0 } == commands)
        for forward in forwards {
            #expect(forward.reduce(0) { $0 + $1.bytes.count } <= cluster.replicas[2]!.configuration.batchBytesMax)
        }
    }

    @Test("A leader's queue is bounded in bytes: beyond pendingBytesMax proposals are dropped for retry")
    func pendingBytesBound() throws {
        let configuration = try Configuration(
            replicaID: 1, replicas: [1], slotsInFlightMax: 1, batchCommandsMax: 1, batchBytesMax: 1_000,
            pendingBytesMax: 10_000)
        var replica = Replica(configuration: configuration)
        for _ in 0..<30 { _ = replica.step(.tick) }
        #expect(replica.isLeader)
        // With one slot in flight and a single replica, the first command is chosen at once;
        // make the window stay full by proposing in one step.
        let output = replica.step(.propose((0..<40).map { Self.bigCommand($0, bytes: 900) }))
        #expect(!output.proposalsDropped.isEmpty, "40 × 900 B queued past a 10,000-byte bound")
        #expect(replica.proposer.leadership!.pendingBytes <= 10_000)
    }

    @Test("A leader whose acceptor is down keeps leading with a majority of the others, then recovers it")
    func leaderSurvivesItsAcceptorFailure() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(1, .propose([command("a")]))
        cluster.deliverAll()
        cluster.replicas[1]!.failAcceptor()
        #expect(cluster.replicas[1]!.acceptorDown)
        #expect(cluster.replicas[1]!.acceptor.promised == .zero)
        cluster.step(1, .propose([command("b")]))
        cluster.deliverAll()
        #expect(cluster.replicas[1]!.isLeader, "the leader stepped down when its acceptor failed")
        let values = cluster.committed(1).flatMap(\.entry.value.commands)
        #expect(values == [command("a"), command("b")])
        // Its acceptor answers nothing while down.
        let answer = cluster.step(1, .receive(Envelope(from: 2, to: 1, message: .prepare(ballot: Ballot(round: 99, replica: 2), fromSlot: 1))))
        #expect(answer.messages.isEmpty)
        // Recovery from the durable state restores the promise; then it votes again.
        var durable = DurableState()
        for output in cluster.outputs[1]! { for record in output.records { durable.apply(record) } }
        cluster.replicas[1]!.recoverAcceptor(from: durable)
        #expect(!cluster.replicas[1]!.acceptorDown)
        #expect(cluster.replicas[1]!.acceptor.promised == cluster.replicas[1]!.ballot)
        cluster.step(1, .propose([command("c")]))
        cluster.deliverAll()
        #expect(cluster.committed(2).flatMap(\.entry.value.commands) == [command("a"), command("b"), command("c")])
    }

    @Test("A replica whose acceptor is down does not campaign")
    func noCampaignWithoutAcceptor() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.replicas[2]!.failAcceptor()
        for _ in 0..<100 { cluster.step(2, .tick) }
        #expect(cluster.inFlight.allSatisfy { if case .prepare = $0.message { return false } else { return true } })
    }

    @Test("A recovered acceptor holds its promises for one election timeout while it hears no leader")
    func recoveredAcceptorHoldsPromises() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.replicas[3]!.failAcceptor()
        cluster.replicas[3]!.recoverAcceptor(from: DurableState())
        let prepare = Envelope(from: 2, to: 3, message: .prepare(ballot: Ballot(round: 5, replica: 2), fromSlot: 1))
        #expect(cluster.step(3, .receive(prepare)).messages.isEmpty)
        for _ in 0..<10 { cluster.replicas[3]!.promiseHoldTicks = max(0, cluster.replicas[3]!.promiseHoldTicks - 1) }
        let later = cluster.step(3, .receive(prepare))
        #expect(later.messages.contains { if case .promise = $0.message { return true } else { return false } })
    }
}

@Suite("Planned leader changes")
struct LeadershipTransferTests {
    @Test("A leader hands leadership to an up-to-date peer, which leads without an election timeout")
    func transfer() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        cluster.step(1, .propose([command("a")]))
        cluster.deliverAll()
        for _ in 0..<2 {
            cluster.step(1, .tick)
            cluster.deliverAll()
        }
        cluster.step(1, .transferLeadership(to: 3))
        #expect(!cluster.replicas[1]!.isLeader)
        cluster.deliverAll()
        #expect(cluster.replicas[3]!.isLeader, "r3 did not take over")
        #expect(cluster.replicas[2]!.leader == 3)
        cluster.step(2, .propose([command("b")]))
        cluster.deliverAll()
        #expect(cluster.committed(3).flatMap(\.entry.value.commands) == [command("a"), command("b")])
    }

    @Test("A follower ignores a transfer that does not come from its leader")
    func transferFromAStranger() throws {
        var cluster = try ScriptedCluster(size: 3)
        cluster.elect(1)
        let output = cluster.step(
            3, .receive(Envelope(from: 2, to: 3, message: .transferLeadership(ballot: Ballot(round: 9, replica: 2), target: 3))))
        #expect(output.messages.isEmpty)
        #expect(cluster.replicas[3]!.leader == 1)
    }
}
