import KVStore
import Paxos
import ReplicaRuntime
import Storage
import StorageTools
import Testing

/// A disk whose syncs finish when the test says: the runtime's seams recorded, each message
/// with the number of the turn that sent it and each sync with the turn that began it.
final class ControlledDiskEnvironment: RuntimeEnvironment {
    /// The turn being run (set by the test before each turn).
    var turn = 0
    /// Messages sent, with the turn that sent them.
    var sent: [(turn: Int, envelope: Envelope)] = []
    /// Syncs begun and not yet run, with the turn that began them (it covers every record
    /// appended up to and including that turn).
    var syncs: [(turn: Int, sync: PendingSync)] = []
    /// The most syncs ever outstanding at once (the runtime keeps at most one in flight).
    var syncsOutstandingMax = 0
    var syncsBegun = 0

    func send(_ envelopes: [Envelope]) { sent.append(contentsOf: envelopes.map { (turn, $0) }) }
    func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID) {}
    func log(_ level: RuntimeLogLevel, _ message: String) {}
    func fatal(_ message: String) -> Never { preconditionFailure(message) }
    func runInBackground(_ work: @escaping @Sendable () -> RuntimeEvent) {}

    func syncInBackground(_ sync: PendingSync) {
        syncs.append((turn, sync))
        syncsBegun += 1
        syncsOutstandingMax = max(syncsOutstandingMax, syncs.count)
    }

    /// Runs the oldest outstanding sync now (the disk finished it); returns the event that
    /// hands it back and the turn through which the log is now durable.
    func finishSync() -> (event: RuntimeEvent, durableThroughTurn: Int)? {
        guard !syncs.isEmpty else { return nil }
        let (turn, sync) = syncs.removeFirst()
        return (sync.runForRuntime(), turn)
    }
}

/// The pipelined `Output` contract (`ReplicaRuntime+Pipeline.swift`), checked on the runtime
/// itself: a turn's output leaves only after the sync covering its records ran, outputs leave
/// in turn order, one sync is in flight at a time, and early accepts sent with a sync pending
/// announce no chosen slot whose votes are not all durable. Each check is shown to catch
/// the injected bug it exists for.
@Suite("Replica runtime: durability and order of released outputs")
struct DurabilityTests {
    static let leaderBallot = Ballot(round: 1, replica: 2)

    static func runtime(
        id: ReplicaID = 1, replicas: [ReplicaID] = [1, 2, 3], bug: RuntimeBug? = nil
    ) throws -> (ReplicaRuntime, ControlledDiskEnvironment) {
        let environment = ControlledDiskEnvironment()
        let runtime = ReplicaRuntime(
            options: RuntimeOptions(
                paxos: try Configuration(replicaID: id, replicas: replicas, electionTimeoutTicks: 5), directory: "/data",
                fileSystem: SimulatedFileSystem(seed: 9), storage: .testing(), bug: bug),
            environment: environment)
        try runtime.start(now: .milliseconds(0))
        return (runtime, environment)
    }

    static func value(_ slot: Slot) -> Value {
        .batch([
            Command(
                WriteCommand(
                    requestID: RequestID(clientID: 3, sequence: UInt64(slot)),
                    operation: .put(PutRequest(key: Array("k\(slot)".utf8), value: [UInt8(truncatingIfNeeded: slot)]))
                ).encode())
        ])
    }

    /// What a follower's run broke, if anything.
    struct Findings {
        /// `accepted` replies that left before the sync covering their record ran.
        var sentBeforeDurable: [String] = []
        /// Replies that left before a reply to an earlier turn.
        var outOfOrder: [String] = []
        var repliesMissing = 0
        var syncsOutstandingMax = 0
        var syncsBegun = 0
        var turnsWithRecords = 0
    }

    /// A follower (r1 of 3) gets, one per turn, either the leader's next `accept` (a record
    /// to persist, an `accepted` reply) or a heartbeat (no record, a `heartbeatAck` carrying
    /// the turn number as its read round); between turns the disk finishes the outstanding
    /// sync at random moments. Every reply is traced back to its turn.
    static func runFollower(seed: UInt64, turns: Int, bug: RuntimeBug?) throws -> Findings {
        var random = SplitMix64(seed: seed)
        let (runtime, environment) = try runtime(bug: bug)
        var findings = Findings()
        /// The turn whose `accept` asked for each slot.
        var acceptTurn: [Slot: Int] = [:]
        var nextSlot: Slot = 1
        var durableThroughTurn = 0
        var requests = 0
        for turn in 1...turns {
            environment.turn = turn
            var events: [RuntimeEvent] = []
            // The disk may finish the sync in flight just before this turn's messages arrive.
            if random.next() % 3 == 0, let (event, through) = environment.finishSync() {
                durableThroughTurn = max(durableThroughTurn, through)
                events.append(event)
            }
            if random.next() % 3 != 0 {
                acceptTurn[nextSlot] = turn
                events.append(
                    .message(
                        Envelope(
                            from: 2, to: 1,
                            message: .accept(ballot: leaderBallot, slot: nextSlot, value: value(nextSlot), chosenThrough: 0))))
                nextSlot += 1
                findings.turnsWithRecords += 1
            } else {
                events.append(
                    .message(
                        Envelope(from: 2, to: 1, message: .heartbeat(ballot: leaderBallot, chosenThrough: 0, readRound: UInt64(turn)))))
            }
            requests += 1
            let sentBefore = environment.sent.count
            runtime.turn(events, tick: false, now: .milliseconds(UInt64(turn)))
            for (_, envelope) in environment.sent[sentBefore...] {
                guard case .accepted(_, let slot) = envelope.message else { continue }
                if acceptTurn[slot]! > durableThroughTurn {
                    findings.sentBeforeDurable.append(
                        "accepted s=\(slot) (accept in turn \(acceptTurn[slot]!)) sent in turn \(turn), durable through turn \(durableThroughTurn)")
                }
            }
        }
        // The disk catches up: everything held must leave.
        var turn = turns
        while let (event, through) = environment.finishSync() {
            turn += 1
            environment.turn = turn
            durableThroughTurn = max(durableThroughTurn, through)
            runtime.turn([event], tick: false, now: .milliseconds(UInt64(turn)))
        }
        // Each reply's cause, in the order the replies left.
        var causes: [Int] = []
        for (_, envelope) in environment.sent {
            switch envelope.message {
            case .accepted(_, let slot): causes.append(acceptTurn[slot]!)
            case .heartbeatAck(_, let readRound, _): causes.append(Int(readRound))
            default: break
            }
        }
        for index in causes.indices.dropFirst() where causes[index] < causes[index - 1] {
            findings.outOfOrder.append("the reply to turn \(causes[index]) left after the reply to turn \(causes[index - 1])")
        }
        findings.repliesMissing = requests - causes.count
        findings.syncsOutstandingMax = environment.syncsOutstandingMax
        findings.syncsBegun = environment.syncsBegun
        return findings
    }

    @Test("A follower's replies leave only after their records are durable, in turn order, one sync at a time", arguments: [UInt64(1), 2, 3, 4, 5, 6])
    func followerReleasesInOrder(seed: UInt64) throws {
        let findings = try Self.runFollower(seed: seed, turns: 200, bug: nil)
        #expect(findings.sentBeforeDurable.isEmpty, "seed \(seed): \(findings.sentBeforeDurable.prefix(3))")
        #expect(findings.outOfOrder.isEmpty, "seed \(seed): \(findings.outOfOrder.prefix(3))")
        #expect(findings.repliesMissing == 0, "seed \(seed): \(findings.repliesMissing) replies never left")
        #expect(findings.syncsOutstandingMax == 1, "seed \(seed)")
        // Group commit: records appended while a sync runs ride the next one.
        #expect(findings.syncsBegun < findings.turnsWithRecords, "seed \(seed): \(findings.syncsBegun) syncs for \(findings.turnsWithRecords) turns with records")
    }

    @Test("The checks catch outputs released before their sync (injected bug release-before-sync)")
    func catchesReleaseBeforeSync() throws {
        let findings = try Self.runFollower(seed: 1, turns: 200, bug: .releaseBeforeSync)
        #expect(!findings.sentBeforeDurable.isEmpty)
    }

    @Test("The checks catch outputs released out of turn order (injected bug release-out-of-order)")
    func catchesReleaseOutOfOrder() throws {
        let findings = try Self.runFollower(seed: 1, turns: 200, bug: .releaseOutOfOrder)
        #expect(!findings.outOfOrder.isEmpty)
        #expect(findings.sentBeforeDurable.isEmpty)
    }

    /// A single replica leads at once; a write it commits in one turn is answered only
    /// after the sync begun in that turn ran.
    @Test("A client is answered only after the sync covering its write")
    func answerWaitsForSync() throws {
        for bug in [nil, RuntimeBug.releaseBeforeSync] {
            let environment = ControlledDiskEnvironment()
            let runtime = ReplicaRuntime(
                options: RuntimeOptions(
                    paxos: try Configuration(replicaID: 1, replicas: [1], electionTimeoutTicks: 5), directory: "/data",
                    fileSystem: SimulatedFileSystem(seed: 5), storage: .testing(), bug: bug),
                environment: environment)
            try runtime.start(now: .milliseconds(0))
            for tick in 1...30 {
                runtime.turn([], tick: true, now: .milliseconds(UInt64(tick * 10)))
                while let (event, _) = environment.finishSync() { runtime.turn([event], tick: false, now: .milliseconds(UInt64(tick * 10))) }
            }
            #expect(runtime.status.isLeader)
            let outcomes = Outcomes()
            let (command, encoded) = ReplicaRuntimeTests.put("k", sequence: 1)
            runtime.turn(
                [.write(command, encoded, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } })],
                tick: false, now: .milliseconds(400))
            if bug == nil {
                #expect(outcomes.successes == 0, "answered before the sync ran")
                #expect(runtime.outputsHeld == 1)
                // The sync runs; the answer follows.
                let (event, _) = try #require(environment.finishSync())
                runtime.turn([event], tick: false, now: .milliseconds(401))
                #expect(outcomes.successes == 1)
                #expect(runtime.outputsHeld == 0)
            } else {
                #expect(outcomes.successes == 1, "the injected bug answers before the sync: this test's check catches it")
            }
        }
    }

    /// A leader (r1 of 3) elected, with nothing held.
    static func leader(bug: RuntimeBug? = nil) throws -> (ReplicaRuntime, ControlledDiskEnvironment, time: UInt64) {
        let (runtime, environment) = try Self.runtime(bug: bug)
        // Campaign: tick until the prepares leave (after the promise record's sync).
        var time: UInt64 = 0
        var ballot: Ballot?
        while ballot == nil && time < 2_000 {
            time += 10
            runtime.turn([], tick: true, now: .milliseconds(time))
            while let (event, _) = environment.finishSync() { runtime.turn([event], tick: false, now: .milliseconds(time)) }
            for (_, envelope) in environment.sent {
                if case .prepare(let prepared, _) = envelope.message { ballot = prepared }
            }
        }
        let campaign = try #require(ballot)
        runtime.turn(
            [.message(Envelope(from: 2, to: 1, message: .promise(ballot: campaign, entries: [], chosenThrough: 0, more: false)))],
            tick: false, now: .milliseconds(time))
        while let (event, _) = environment.finishSync() { runtime.turn([event], tick: false, now: .milliseconds(time)) }
        #expect(runtime.status.isLeader)
        #expect(runtime.outputsHeld == 0)
        return (runtime, environment, time)
    }

    /// The accepts to r2 sent since `index`: ballot, slot and the chosen prefix they carry.
    static func accepts(_ environment: ControlledDiskEnvironment, since index: Int) -> [(Ballot, Slot, chosen: Slot)] {
        environment.sent[index...].compactMap { entry in
            guard entry.envelope.to == 2, case .accept(let ballot, let slot, _, let chosen) = entry.envelope.message else { return nil }
            return (ballot, slot, chosen)
        }
    }

    /// What a leader's early accepts announced while its own vote for slot A was not durable.
    static func earlyAcceptsWithSyncPending(bug: RuntimeBug?) throws -> (slotA: Slot, chosenAnnounced: [Slot], chosenAfter: Slot) {
        let (runtime, environment, time) = try leader(bug: bug)
        // Turn A: nothing pending; slot A's accept leaves at once, before A's own vote is durable.
        var mark = environment.sent.count
        let outcomes = Outcomes()
        let (first, firstBytes) = ReplicaRuntimeTests.put("a", sequence: 1)
        runtime.turn(
            [.write(first, firstBytes, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } })],
            tick: false, now: .milliseconds(time + 1))
        let sentA = Self.accepts(environment, since: mark)
        #expect(sentA.count == 1, "the accept did not leave before the sync: \(environment.sent[mark...].map(\.envelope))")
        #expect(environment.syncs.count == 1)
        let (ballot, slotA, _) = try #require(sentA.first)
        // Turn B, with A's sync still running: r2's vote makes slot A chosen in the core (its
        // own vote counted, not durable yet). Turn A's output had nothing left to hold once its
        // accepts left, and turn B's own records need no sync (a chosen mark) — its commit
        // rests on A's record all the same: no answer, no heartbeat announcing slot A yet.
        mark = environment.sent.count
        runtime.turn(
            [.message(Envelope(from: 2, to: 1, message: .accepted(ballot: ballot, slot: slotA)))],
            tick: false, now: .milliseconds(time + 2))
        #expect(runtime.status.chosenThrough >= slotA)
        #expect(outcomes.successes == 0, "a write was answered before the leader's own vote was durable")
        let heartbeats = environment.sent[mark...].compactMap { entry -> Slot? in
            if case .heartbeat(_, let chosen, _) = entry.envelope.message { return chosen }
            return nil
        }
        #expect(heartbeats.allSatisfy { $0 < slotA }, "a heartbeat announced slot \(slotA) before it was durable")
        // Turn C, A's sync still running: a new write's accept leaves early.
        mark = environment.sent.count
        let (second, secondBytes) = ReplicaRuntimeTests.put("b", sequence: 2)
        runtime.turn([.write(second, secondBytes, deadline: .distantFuture, reply: { _ in })], tick: false, now: .milliseconds(time + 2))
        let announced = Self.accepts(environment, since: mark).map(\.chosen)
        #expect(announced.count == 1, "the second accept did not leave early")
        // The disk catches up; the next turn's accept may say it.
        while let (event, _) = environment.finishSync() { runtime.turn([event], tick: false, now: .milliseconds(time + 3)) }
        #expect(runtime.outputsHeld == 0)
        #expect(outcomes.successes == 1)
        mark = environment.sent.count
        let (third, thirdBytes) = ReplicaRuntimeTests.put("c", sequence: 3)
        runtime.turn([.write(third, thirdBytes, deadline: .distantFuture, reply: { _ in })], tick: false, now: .milliseconds(time + 4))
        let after = try #require(Self.accepts(environment, since: mark).first)
        return (slotA, announced, after.chosen)
    }

    /// A leader (r1 of 3) sends its `accept`s before its own record is durable — with a sync
    /// pending too, so the followers' fsyncs overlap its own — but nothing (an answer, a
    /// heartbeat, a later early accept) announces a slot chosen whose majority counted its
    /// own vote before that vote was durable, even when the turn of that vote held nothing.
    @Test("Nothing announces a slot chosen on the leader's not-yet-durable vote; early accepts leave at once, capped")
    func earlyAcceptsCapChosen() throws {
        let (slotA, announced, after) = try Self.earlyAcceptsWithSyncPending(bug: nil)
        #expect(announced.allSatisfy { $0 < slotA }, "an early accept announced slot \(slotA) chosen before the leader's vote was durable: \(announced)")
        #expect(after >= slotA, "once durable, the chosen prefix is announced again")
    }

    @Test("The check catches early accepts that announce an undurable chosen slot (injected bug early-accepts-uncapped)")
    func catchesUncappedEarlyAccepts() throws {
        let (slotA, announced, _) = try Self.earlyAcceptsWithSyncPending(bug: .earlyAcceptsUncapped)
        #expect(announced.contains { $0 >= slotA })
    }
}
