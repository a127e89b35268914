import KVStore
import Paxos
import ReplicaRuntime
import Storage
import StorageTools
import Synchronization
import Testing

/// The runtime's seams recorded, for tests that drive one `ReplicaRuntime` by hand.
final class RecordingEnvironment: RuntimeEnvironment {
    var sent: [Envelope] = []
    var chunks: [(ReplicaID, SnapshotChunk)] = []
    var lines: [String] = []
    /// What `runInBackground` produced (run at once), for a test to hand back in a turn.
    var background: [RuntimeEvent] = []
    /// Log syncs begun and not yet run: `turn` runs them after each turn and hands them back,
    /// as a fast disk would (`DurabilityTests` run them itself, when it likes).
    var syncs: [PendingSync] = []

    func send(_ envelopes: [Envelope]) { sent.append(contentsOf: envelopes) }
    func runInBackground(_ work: @escaping @Sendable () -> RuntimeEvent) { background.append(work()) }
    func syncInBackground(_ sync: PendingSync) { syncs.append(sync) }
    /// What the runtime handed over to free (kept, not dropped).
    var discarded: [Discarded] = []
    func discard(_ garbage: Discarded) { discarded.append(garbage) }

    /// A turn of `runtime`, then turns that hand back the syncs it began until none is in
    /// flight: the turn's outputs are released, as after a runtime that synced in the turn.
    func turn(_ runtime: ReplicaRuntime, _ events: [RuntimeEvent], tick: Bool, now: RuntimeInstant) {
        runtime.turn(events, tick: tick, now: now)
        while !syncs.isEmpty {
            let done = syncs.map { $0.runForRuntime() }
            syncs.removeAll()
            runtime.turn(done, tick: false, now: now)
        }
    }

    func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID) { chunks.append((peer, chunk)) }
    func log(_ level: RuntimeLogLevel, _ message: String) { lines.append(message) }
    func fatal(_ message: String) -> Never { preconditionFailure(message) }
}

/// Collects outcomes delivered through `@Sendable` reply closures.
final class Outcomes: Sendable {
    let writes = Mutex<[RequestOutcome<WriteResult>]>([])

    var failures: [RequestFailure] {
        writes.withLock { $0.compactMap { if case .failure(let failure) = $0 { return failure } else { return nil } } }
    }
    var successes: Int {
        writes.withLock { $0.filter { if case .success = $0 { return true } else { return false } }.count }
    }
}

@Suite("Replica runtime")
struct ReplicaRuntimeTests {
    static func runtime(
        replicas: [ReplicaID] = [1], requestsWaitingMax: Int = 4, requestBytesWaitingMax: Int = 1 << 20,
        faults: FaultModel = .off
    ) throws -> (ReplicaRuntime, RecordingEnvironment) {
        let environment = RecordingEnvironment()
        let paxos = try Configuration(replicaID: 1, replicas: replicas, electionTimeoutTicks: 5)
        let runtime = ReplicaRuntime(
            options: RuntimeOptions(
                paxos: paxos, directory: "/data", fileSystem: SimulatedFileSystem(seed: 1),
                storage: .testing(), faults: faults, requestsWaitingMax: requestsWaitingMax,
                requestBytesWaitingMax: requestBytesWaitingMax),
            environment: environment)
        try runtime.start(now: .milliseconds(0))
        if replicas.count > 1 {
            // r2 leads (as far as this replica knows): writes are forwarded and wait there.
            environment.turn(runtime, 
                [.message(Envelope(from: 2, to: 1, message: .heartbeat(ballot: Ballot(round: 1, replica: 2), chosenThrough: 0, readRound: 0)))],
                tick: false, now: .milliseconds(0))
        }
        return (runtime, environment)
    }

    static func put(_ key: String, sequence: UInt64, bytes: Int = 8) -> (WriteCommand, Command) {
        let command = WriteCommand(
            requestID: RequestID(clientID: 7, sequence: sequence),
            operation: .put(PutRequest(key: Array(key.utf8), value: [UInt8](repeating: 1, count: bytes))))
        return (command, Command(command.encode()))
    }

    @Test("Writes waiting beyond the count bound are refused at once with 'too many requests'")
    func waitingCountBound() throws {
        // Three replicas, only this one running: writes are forwarded to r2 and never answered.
        let (runtime, environment) = try Self.runtime(replicas: [1, 2, 3], requestsWaitingMax: 4)
        let outcomes = Outcomes()
        var events: [RuntimeEvent] = []
        for sequence in UInt64(1)...6 {
            let (command, encoded) = Self.put("k", sequence: sequence)
            events.append(.write(command, encoded, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } }))
        }
        environment.turn(runtime, events, tick: false, now: .milliseconds(1))
        #expect(outcomes.failures == [.tooManyRequests, .tooManyRequests])
        #expect(runtime.requestsWaiting <= 4)
    }

    @Test("Writes waiting beyond the byte bound are refused at once with 'too many requests'")
    func waitingBytesBound() throws {
        let (runtime, environment) = try Self.runtime(replicas: [1, 2, 3], requestsWaitingMax: 100, requestBytesWaitingMax: 10_000)
        let outcomes = Outcomes()
        var events: [RuntimeEvent] = []
        for sequence in UInt64(1)...5 {
            let (command, encoded) = Self.put("k\(sequence)", sequence: sequence, bytes: 4_000)
            events.append(.write(command, encoded, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } }))
        }
        environment.turn(runtime, events, tick: false, now: .milliseconds(1))
        #expect(outcomes.failures == [.tooManyRequests, .tooManyRequests, .tooManyRequests])
        #expect(runtime.requestBytesWaiting <= 10_000)
    }

    @Test("Waiting writes expire at their deadline with 'timed out', and the accounting returns to zero")
    func deadlines() throws {
        let (runtime, environment) = try Self.runtime(replicas: [1, 2, 3])
        let outcomes = Outcomes()
        let (command, encoded) = Self.put("k", sequence: 1)
        environment.turn(runtime, 
            [.write(command, encoded, deadline: .milliseconds(50), reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } })],
            tick: false, now: .milliseconds(1))
        environment.turn(runtime, [], tick: true, now: .milliseconds(40))
        #expect(outcomes.failures.isEmpty)
        environment.turn(runtime, [], tick: true, now: .milliseconds(60))
        #expect(outcomes.failures == [.timedOut])
        #expect(runtime.requestsWaiting == 0 && runtime.requestBytesWaiting == 0)
    }

    @Test("A single replica leads, applies and answers; a restart recovers the write from its log")
    func singleReplica() throws {
        let (runtime, environment) = try Self.runtime()
        let outcomes = Outcomes()
        for tick in 1...30 { environment.turn(runtime, [], tick: true, now: .milliseconds(UInt64(tick * 10))) }
        #expect(runtime.status.isLeader)
        let (command, encoded) = Self.put("k", sequence: 1)
        environment.turn(runtime, 
            [.write(command, encoded, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } })],
            tick: false, now: .milliseconds(400))
        #expect(outcomes.successes == 1)
        #expect(runtime.kv.get(Array("k".utf8)) != nil)
    }

    @Test("Acceptor-mode failures keep a single-replica leader leading and log both lines")
    func acceptorFailuresAreLogged() throws {
        let (runtime, environment) = try Self.runtime(
            faults: FaultModel(mode: .acceptor, meanMillisecondsBetweenFailures: 20, downtimeMillisecondsMax: 30))
        for tick in 1...300 { environment.turn(runtime, [], tick: true, now: .milliseconds(UInt64(tick * 10))) }
        #expect(environment.lines.contains { $0.hasPrefix("fault injector: acceptor crashed") })
        #expect(environment.lines.contains { $0.hasPrefix("fault injector: acceptor recovered") })
        #expect(runtime.faultCounts.failures >= 10)
        #expect(runtime.replica != nil, "acceptor mode must never take the whole replica down")
    }
}

@Suite("Replica runtime: snapshot installation order")
struct SnapshotOrderTests {
    /// A put without a session, so that applying it twice shows (exactly-once would hide it).
    static func untrackedPut(_ key: String, sequence: UInt64) -> Command {
        Command(
            WriteCommand(
                requestID: RequestID(clientID: RequestID.untrackedBit | 5, sequence: sequence),
                operation: .put(PutRequest(key: Array(key.utf8), value: Array("v\(sequence)".utf8)))
            ).encode())
    }

    /// The state machine through slot 6 of a single-replica cluster (its lease epoch in slot
    /// 1, five puts), as a snapshot file.
    static func sourceSnapshot() throws -> (SnapshotChunk, KVStore) {
        let fileSystem = SimulatedFileSystem(seed: 2)
        let environment = RecordingEnvironment()
        let runtime = ReplicaRuntime(
            options: RuntimeOptions(
                paxos: try Configuration(replicaID: 1, replicas: [1], electionTimeoutTicks: 5), directory: "/data",
                fileSystem: fileSystem, storage: .testing(), snapshotEverySlots: 6),
            environment: environment)
        try runtime.start(now: .milliseconds(0))
        for tick in 1...30 { environment.turn(runtime, [], tick: true, now: .milliseconds(UInt64(tick * 10))) }
        for sequence in UInt64(1)...5 {
            let command = untrackedPut("k\(sequence)", sequence: sequence)
            let decoded = try WriteCommand.decode(command.bytes)
            environment.turn(runtime, [.write(decoded, command, deadline: .distantFuture, reply: { _ in })], tick: false, now: .milliseconds(400))
        }
        let state = runtime.kv
        runtime.stop()
        let (storage, _) = try ReplicaStorage.open(directory: "/data", fileSystem: fileSystem, options: .testing())
        let reader = try #require(try storage.snapshotReader())
        #expect(reader.through == 6)
        #expect(state.leaseEpoch != .none, "the leader logged its lease epoch")
        let bytes = try reader.read(at: 0, count: Int(reader.totalBytes))
        return (SnapshotChunk(through: 6, offset: 0, totalBytes: reader.totalBytes, bytes: bytes, isLast: true), state)
    }

    static func follower(bug: RuntimeBug?) throws -> (ReplicaRuntime, RecordingEnvironment) {
        let environment = RecordingEnvironment()
        let runtime = ReplicaRuntime(
            options: RuntimeOptions(
                paxos: try Configuration(replicaID: 1, replicas: [1, 2, 3], electionTimeoutTicks: 5), directory: "/data",
                fileSystem: SimulatedFileSystem(seed: 3), storage: .testing(), bug: bug),
            environment: environment)
        try runtime.start(now: .milliseconds(0))
        return (runtime, environment)
    }

    /// The follower accepted slot 1 earlier; in one turn it learns slot 1 is chosen and
    /// receives the last chunk of a snapshot through slot 6. Slot 1 must be applied before
    /// the snapshot replaces the store, never on top of it.
    static func run(bug: RuntimeBug?) throws -> (KVStore, KVStore) {
        let (chunk, source) = try sourceSnapshot()
        let (runtime, environment) = try follower(bug: bug)
        let ballot = Ballot(round: 1, replica: 2)
        let first = untrackedPut("k1", sequence: 1)
        environment.turn(runtime, 
            [.message(Envelope(from: 2, to: 1, message: .accept(ballot: ballot, slot: 1, value: .batch([first]), chosenThrough: 0)))],
            tick: false, now: .milliseconds(1))
        environment.turn(runtime, 
            [
                .message(Envelope(from: 2, to: 1, message: .heartbeat(ballot: ballot, chosenThrough: 1, readRound: 0))),
                .snapshotChunk(from: 2, chunk),
            ], tick: false, now: .milliseconds(2))
        return (runtime.kv, source)
    }

    @Test("Slots committed earlier in a turn are applied before a snapshot installed in that turn")
    func appliedBeforeInstall() throws {
        let (installed, source) = try Self.run(bug: nil)
        #expect(installed == source)
        #expect(installed.stateDigest() == source.stateDigest())
    }

    @Test("The injected bug (install mid-turn) leaves the store diverged: this test's check catches it")
    func injectedBugDiverges() throws {
        let (installed, source) = try Self.run(bug: .installSnapshotMidTurn)
        #expect(installed.revision != source.revision)
    }
}

@Suite("Replica runtime: forwarded writes and leader changes")
struct ReforwardTests {
    @Test("A follower forwards all the writes of one turn to the leader in one message, in arrival order")
    func followerBatchesForwards() throws {
        let (runtime, environment) = try ReplicaRuntimeTests.runtime(replicas: [1, 2, 3], requestsWaitingMax: 64)
        environment.sent.removeAll()
        let writes = (1...50).map { ReplicaRuntimeTests.put("k\($0)", sequence: UInt64($0)) }
        environment.turn(
            runtime, writes.map { .write($0.0, $0.1, deadline: .distantFuture, reply: { _ in }) }, tick: false,
            now: .milliseconds(1))
        let forwards = environment.sent.compactMap { envelope -> [Command]? in
            guard case .forward(let commands) = envelope.message else { return nil }
            #expect(envelope.to == 2)
            return commands
        }
        #expect(forwards.count == 1, "one forward per turn, not per write: \(forwards.map(\.count))")
        #expect(forwards.flatMap { $0 } == writes.map(\.1))
        #expect(runtime.requestsWaiting == 50)
    }

    @Test("A write forwarded to a leader that is replaced goes to the new leader; one without a session fails at once")
    func reforward() throws {
        let (runtime, environment) = try ReplicaRuntimeTests.runtime(replicas: [1, 2, 3])
        let outcomes = Outcomes()
        let (tracked, trackedBytes) = ReplicaRuntimeTests.put("k", sequence: 1)
        let untracked = WriteCommand(
            requestID: RequestID(clientID: RequestID.untrackedBit | 9, sequence: 1),
            operation: .put(PutRequest(key: Array("u".utf8), value: [1])))
        environment.turn(runtime, 
            [
                .write(tracked, trackedBytes, deadline: .distantFuture, reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } }),
                .write(
                    untracked, Command(untracked.encode()), deadline: .distantFuture,
                    reply: { outcome in outcomes.writes.withLock { $0.append(outcome) } }),
            ], tick: false, now: .milliseconds(1))
        #expect(environment.sent.filter { if case .forward = $0.message { return $0.to == 2 } else { return false } }.count == 1)
        environment.sent.removeAll()
        // r3 takes over with a higher ballot.
        environment.turn(runtime, 
            [.message(Envelope(from: 3, to: 1, message: .heartbeat(ballot: Ballot(round: 2, replica: 3), chosenThrough: 0, readRound: 0)))],
            tick: false, now: .milliseconds(2))
        let forwards = environment.sent.compactMap { envelope -> [Command]? in
            guard envelope.to == 3, case .forward(let commands) = envelope.message else { return nil }
            return commands
        }
        #expect(forwards.flatMap { $0 } == [trackedBytes], "the tracked write was not re-forwarded to r3: \(environment.sent)")
        #expect(outcomes.failures == [.leaderChanged])
        #expect(runtime.requestsWaiting == 1)
    }
}

@Suite("Replica runtime: automatic compaction")
struct AutoCompactionTests {
    static func leader(_ policy: AutoCompaction) throws -> (ReplicaRuntime, RecordingEnvironment) {
        var options = RuntimeOptions(
            paxos: try Configuration(replicaID: 1, replicas: [1], electionTimeoutTicks: 5), directory: "/data",
            fileSystem: SimulatedFileSystem(seed: 4), storage: .testing())
        options.autoCompaction = policy
        let environment = RecordingEnvironment()
        let runtime = ReplicaRuntime(options: options, environment: environment)
        try runtime.start(now: .milliseconds(0))
        for tick in 1...30 { environment.turn(runtime, [], tick: true, now: .milliseconds(UInt64(tick * 10))) }
        return (runtime, environment)
    }

    static func put(_ runtime: ReplicaRuntime, _ environment: RecordingEnvironment, _ sequence: UInt64, at milliseconds: UInt64) {
        let (command, encoded) = ReplicaRuntimeTests.put("k\(sequence % 3)", sequence: sequence)
        environment.turn(runtime, [.write(command, encoded, deadline: .distantFuture, reply: { _ in })], tick: true, now: .milliseconds(milliseconds))
    }

    @Test("revision mode keeps the last N revisions: the leader compacts through the log")
    func revisionMode() throws {
        let (runtime, environment) = try Self.leader(.revision(retain: 10))
        for sequence in UInt64(1)...40 { Self.put(runtime, environment, sequence, at: 400 + sequence * 10) }
        environment.turn(runtime, [], tick: true, now: .milliseconds(900))
        #expect(runtime.kv.compactedRevision >= runtime.kv.revision - 12, "compacted \(runtime.kv.compactedRevision) at \(runtime.kv.revision)")
        #expect(runtime.kv.compactedRevision <= runtime.kv.revision - 10)
    }

    @Test("periodic mode compacts to the revision of one period ago")
    func periodicMode() throws {
        let (runtime, environment) = try Self.leader(.periodic(milliseconds: 10_000))
        for sequence in UInt64(1)...30 { Self.put(runtime, environment, sequence, at: 400 + sequence * 1_000) }
        // At t ≈ 30 s the store is at revision 31; ten seconds earlier it was at about 21.
        #expect(runtime.kv.compactedRevision >= 15 && runtime.kv.compactedRevision <= 22, "compacted \(runtime.kv.compactedRevision)")
    }
}

@Suite("Replica runtime: snapshot cadence")
struct SnapshotCadenceTests {
    /// A single-replica leader that snapshots every 4 slots, with `share` as configured and,
    /// optionally, the history compacted to its last 8 revisions.
    static func leader(share: Int, compacting: Bool = false, logBytesMax: Int = RuntimeOptions.snapshotLogBytesMaxDefault)
        throws -> (ReplicaRuntime, RecordingEnvironment)
    {
        var options = RuntimeOptions(
            paxos: try Configuration(replicaID: 1, replicas: [1], electionTimeoutTicks: 5), directory: "/data",
            fileSystem: SimulatedFileSystem(seed: 5), storage: .testing(), snapshotEverySlots: 4)
        options.snapshotLogShare = share
        options.snapshotLogBytesMax = logBytesMax
        if compacting { options.autoCompaction = .revision(retain: 8) }
        let environment = RecordingEnvironment()
        let runtime = ReplicaRuntime(options: options, environment: environment)
        try runtime.start(now: .milliseconds(0))
        for tick in 1...30 { environment.turn(runtime, [], tick: true, now: .milliseconds(UInt64(tick * 10))) }
        return (runtime, environment)
    }

    /// `count` puts of 200-byte values to `keys` keys, one per turn (one slot each);
    /// finished background snapshots are handed back in the next turn. Returns after which
    /// puts a snapshot was saved.
    static func snapshotPoints(
        puts count: Int, keys: Int, share: Int, compacting: Bool = false,
        logBytesMax: Int = RuntimeOptions.snapshotLogBytesMaxDefault
    ) throws -> [Int] {
        let (runtime, environment) = try leader(share: share, compacting: compacting, logBytesMax: logBytesMax)
        var points: [Int] = []
        for sequence in 1...count {
            let (command, encoded) = ReplicaRuntimeTests.put("k\(sequence % keys)", sequence: UInt64(sequence), bytes: 200)
            let finished = environment.background
            environment.background.removeAll()
            let saved = runtime.snapshotsSaved
            environment.turn(
                runtime, finished + [.write(command, encoded, deadline: .distantFuture, reply: { _ in })], tick: true,
                now: .milliseconds(UInt64(400 + sequence * 10)))
            if runtime.snapshotsSaved > saved { points.append(sequence) }
        }
        return points
    }

    static func gaps(_ points: [Int]) -> [Int] { zip(points.dropFirst(), points).map { $0 - $1 } }

    /// Freeing the log entries a snapshot compacts away held the server's loop for 12–15 ms
    /// under load; the runtime hands them to the environment (the server frees them on its
    /// background thread) instead of dropping them in the turn.
    @Test("A snapshot hands the log entries it compacts away to the environment to free")
    func compactedLogIsDiscarded() throws {
        let (runtime, environment) = try Self.leader(share: 0)
        for sequence in 1...12 {
            let (command, encoded) = ReplicaRuntimeTests.put("k\(sequence)", sequence: UInt64(sequence), bytes: 200)
            let finished = environment.background
            environment.background.removeAll()
            environment.turn(
                runtime, finished + [.write(command, encoded, deadline: .distantFuture, reply: { _ in })], tick: true,
                now: .milliseconds(UInt64(400 + sequence * 10)))
        }
        #expect(runtime.snapshotsSaved >= 2)
        #expect(environment.discarded.count == runtime.snapshotsSaved, "one hand-over per snapshot adopted")
        // The first hand-over is the whole log before the first compaction: from slot 1 on.
        let first = try #require(environment.discarded.first?.contents as? [Slot: LogEntry])
        #expect(first[1] != nil, "slots \(first.keys.sorted())")
        #expect(!first.isEmpty)
        environment.discarded.forEach { $0.drop() }
        #expect(environment.discarded.allSatisfy { $0.contents == nil })
    }

    @Test("With the slot count alone, a growing store is snapshotted every few slots")
    func slotCountAlone() throws {
        let points = try Self.snapshotPoints(puts: 400, keys: 50, share: 0)
        #expect(points.count >= 60, "\(points)")
        #expect(Self.gaps(points).allSatisfy { $0 <= 8 }, "\(Self.gaps(points))")
    }

    @Test("A growing store is snapshotted ever less often: each snapshot waits for half its predecessor's size in new log")
    func growingStoreBacksOff() throws {
        // The history keeps every put, so each snapshot is about as large as the whole log
        // so far, and the next one waits for half of that again: the gaps grow.
        let gaps = Self.gaps(try Self.snapshotPoints(puts: 400, keys: 50, share: 2))
        #expect(gaps.count >= 4, "snapshots must go on being taken: \(gaps)")
        #expect(gaps.last! >= 3 * gaps.first!, "snapshots did not back off: \(gaps)")
    }

    @Test("The log between snapshots of a growing store stops growing at snapshotLogBytesMax")
    func logBytesCapped() throws {
        // Each put's command is about 230 bytes: 4 KB of log is about 18 puts.
        let gaps = Self.gaps(try Self.snapshotPoints(puts: 400, keys: 50, share: 2, logBytesMax: 4_096))
        #expect(gaps.count >= 15, "\(gaps)")
        #expect(gaps.allSatisfy { $0 <= 24 }, "the cap did not hold: \(gaps)")
    }

    @Test("A store kept small by compaction goes on being snapshotted at a steady pace")
    func compactedStoreKeepsCadence() throws {
        let gaps = Self.gaps(try Self.snapshotPoints(puts: 400, keys: 5, share: 2, compacting: true))
        #expect(gaps.count >= 20, "\(gaps)")
        #expect(gaps.suffix(10).allSatisfy { $0 <= 2 * gaps[0] + 8 }, "the pace should not slow: \(gaps)")
    }
}
