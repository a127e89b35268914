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
/// in turn order, one sync is in flight at a time, and early accepts leave only from a turn
/// that starts with every earlier record durable. Each check is shown to catch the injected bug it exists for.
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

    /// A leader (r1 of 3) sends its `accept`s before its own record is durable only in a turn
    /// that starts with every earlier record durable: with a sync pending, the replies to
    /// earlier accepts may already count this replica's own not-yet-durable vote in its
    /// chosen prefix, which an early accept would announce.
    @Test("Early accepts leave only from a turn that starts with every earlier record durable")
    func earlyAcceptsOnlyWhenIdle() throws {
        let (runtime, environment) = try Self.runtime()
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

        func accepts(since index: Int) -> [Slot] {
            environment.sent[index...].compactMap { entry in
                if case .accept(_, let slot, _, _) = entry.envelope.message, entry.envelope.to == 2 { return slot }
                return nil
            }
        }
        // Turn A starts with every record durable: its accept leaves at once, before its sync ran.
        var mark = environment.sent.count
        let (first, firstBytes) = ReplicaRuntimeTests.put("a", sequence: 1)
        runtime.turn([.write(first, firstBytes, deadline: .distantFuture, reply: { _ in })], tick: false, now: .milliseconds(time + 1))
        let early = accepts(since: mark)
        #expect(early.count == 1, "the first accept did not leave early: \(environment.sent[mark...].map(\.envelope))")
        #expect(environment.syncs.count == 1)
        // Turn B starts with turn A's record not durable: its accept waits for the sync.
        mark = environment.sent.count
        let (second, secondBytes) = ReplicaRuntimeTests.put("b", sequence: 2)
        runtime.turn([.write(second, secondBytes, deadline: .distantFuture, reply: { _ in })], tick: false, now: .milliseconds(time + 2))
        #expect(accepts(since: mark).isEmpty, "an accept left early with an earlier record not durable")
        while let (event, _) = environment.finishSync() { runtime.turn([event], tick: false, now: .milliseconds(time + 3)) }
        #expect(accepts(since: mark).count == 1)
        #expect(runtime.outputsHeld == 0)
    }
}
