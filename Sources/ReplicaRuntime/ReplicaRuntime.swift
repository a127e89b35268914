import KVStore
import Paxos
import Storage

/// Deliberately broken runtime behaviour, to prove that the simulator's checkers catch
/// the class of bug they exist for (FoundationDB's BUGGIFY idea: the bug lives in the
/// code that ships, switched on only by the simulator).
public enum RuntimeBug: String, CaseIterable, Sendable {
    /// Acknowledges without fsyncing: records reach the disk only when the (simulated) OS
    /// writes dirty pages back, so a crash forgets promises and acceptances announced.
    case noFsync = "no-fsync"
    /// Lets acceptors' `accepted` replies leave before their fsync, as a leader's `accept`
    /// requests may.
    case acceptedBeforeFsync = "accepted-before-fsync"
    /// Releases a turn's output as soon as its records are appended, while the sync that
    /// makes them durable still runs in the background: a crash in between forgets promises
    /// and acceptances announced.
    case releaseBeforeSync = "release-before-sync"
    /// Releases an output that needs no sync of its own at once, ahead of earlier outputs
    /// still held for theirs (turn order broken).
    case releaseOutOfOrder = "release-out-of-order"
    /// Early accepts sent with a sync pending piggyback the core's whole chosen prefix,
    /// which may count this leader's own vote before it is durable.
    case earlyAcceptsUncapped = "early-accepts-uncapped"
    /// Forgets the promised ballot on recovery (keeps the accepted values).
    case forgetPromise = "forget-promise"
    /// Installs a received snapshot in the middle of a turn, before the slots stepped
    /// earlier in that turn are applied (which then land on top of the newer snapshot).
    case installSnapshotMidTurn = "install-snapshot-mid-turn"
    /// An acceptor recovers from an injected failure without replaying its log: it comes
    /// back with no promise and no accepted values.
    case acceptorRecoversWithoutLog = "acceptor-recovers-without-log"
    /// The watch hub loses one event of every fifth revision it sends (`WatchHub.pump`).
    case dropWatchEvent = "drop-watch-event"
    /// A follower tracks lease deadlines on its own clock, where keep-alives never reach
    /// it, and proposes expiries: kept-alive leases expire.
    case followerExpiresLeases = "follower-expires-leases"
    /// Leases as before epochs existed: no leader logs an epoch, expiries carry none, so an
    /// expiry chosen late, after other leaders renewed the lease, still deletes it.
    case noLeaseEpochs = "no-lease-epochs"
}

/// Everything a `ReplicaRuntime` is configured with.
public struct RuntimeOptions {
    public var paxos: Configuration
    /// The replica's data directory on `fileSystem`.
    public var directory: String
    public var fileSystem: FileSystem
    public var storage: StorageOptions
    /// Take a state-machine snapshot and compact the log every this many applied slots.
    public var snapshotEverySlots: Int
    /// A snapshot also waits until the commands applied since the last one add up to
    /// 1/`snapshotLogShare` of that snapshot's size: snapshots then write at most
    /// `snapshotLogShare` bytes per byte of commands the log takes in, however large the
    /// store grows, and the log between snapshots stays under 1/`snapshotLogShare` of the
    /// last snapshot plus `snapshotEverySlots` slots. It compares with the last snapshot, not
    /// the growing store, so the next snapshot always comes. 0: the slot count alone. (A
    /// 60 MB store snapshotted every 10,000 slots under load spent 9 % of the replicas' CPU.)
    /// The default, 1, lets the log grow to the last snapshot's size (within
    /// `snapshotLogBytesMax`) and writes half the snapshot bytes 2 did: at 2, snapshots were
    /// 9-12 % of the replicas' CPU (3 replicas, 256 puts in flight). etcd holds up to 100,000
    /// entries of log in memory.
    public var snapshotLogShare: Int
    public static let snapshotLogShareDefault = 1
    public static let snapshotLogShareMax = 1_024
    /// ... but never more than this many bytes of commands since the last snapshot: the
    /// acceptor keeps the log above its snapshot in memory, so a store of many GB waits for
    /// at most this much log (and writes more per byte of commands) rather than hold half
    /// its size in memory.
    public var snapshotLogBytesMax: Int
    public static let snapshotLogBytesMaxDefault = 256 << 20
    public var tickMilliseconds: UInt64
    public var faults: FaultModel
    public var seed: UInt64
    /// Client requests waiting for an answer (queued in the core or forwarded), at most.
    public var requestsWaitingMax: Int
    public static let requestsWaitingMaxDefault = 32_768
    /// Bytes of the client writes waiting for an answer, at most.
    public var requestBytesWaitingMax: Int
    /// Snapshot bytes sent to one peer per turn: pacing, so a large snapshot never
    /// overruns the transport's per-peer queue.
    public var snapshotBytesPerTurnMax: Int
    /// The most bytes one snapshot chunk carries (below the transport's frame bound).
    public var snapshotChunkBytesMax: Int
    public var bug: RuntimeBug?
    /// Automatic compaction of the history, proposed by the leader (nil: only on request).
    public var autoCompaction: AutoCompaction?
    /// etcd's `--quota-backend-bytes`: the store size (`KVStore.approximateBytes`) a write may
    /// not take the store to (`ReplicaRuntime+Quota.swift`).
    public var quotaBytes: Int

    public init(
        paxos: Configuration, directory: String, fileSystem: FileSystem, storage: StorageOptions = StorageOptions(),
        snapshotEverySlots: Int = 10_000, tickMilliseconds: UInt64 = 10, faults: FaultModel = .off, seed: UInt64 = 0,
        requestsWaitingMax: Int = requestsWaitingMaxDefault, requestBytesWaitingMax: Int = 256 << 20,
        snapshotBytesPerTurnMax: Int = 2 << 20, snapshotChunkBytesMax: Int = SnapshotReader.chunkBytesMax,
        bug: RuntimeBug? = nil
    ) {
        self.paxos = paxos
        self.directory = directory
        self.fileSystem = fileSystem
        self.storage = storage
        self.snapshotEverySlots = snapshotEverySlots
        self.snapshotLogShare = Self.snapshotLogShareDefault
        self.snapshotLogBytesMax = Self.snapshotLogBytesMaxDefault
        self.tickMilliseconds = tickMilliseconds
        self.faults = faults
        self.seed = seed
        self.requestsWaitingMax = requestsWaitingMax
        self.requestBytesWaitingMax = requestBytesWaitingMax
        self.snapshotBytesPerTurnMax = snapshotBytesPerTurnMax
        self.snapshotChunkBytesMax = snapshotChunkBytesMax
        self.bug = bug
        self.autoCompaction = nil
        self.quotaBytes = Self.quotaBytesDefault
    }
}

/// The runtime of one replica — the one the server runs and the simulator proves. It owns
/// the `Replica` (the pure Paxos core), the `KVStore`, the storage, the client requests
/// waiting for an answer, snapshot sending and installing, compaction, request deadlines
/// and the fault injector, and carries out the core's `Output` contract:
///
///     step every event of a turn → append → (ONE fsync, in the background) → send → apply → answer
///
/// pipelined: a turn's records are appended, one sync runs in the background while the next
/// turns are stepped, and each turn's output is released when its records are durable, in
/// turn order (`ReplicaRuntime+Pipeline.swift`).
///
/// It is single-threaded (its driver calls it from one thread) and does all I/O through
/// `RuntimeEnvironment` and the `FileSystem` seam. Time is what the driver says it is.
public final class ReplicaRuntime {
    public let options: RuntimeOptions
    let environment: RuntimeEnvironment
    public var id: ReplicaID { options.paxos.replicaID }

    /// The core; nil while the replica is down (an injected failure) or not started.
    public internal(set) var replica: Replica?
    public internal(set) var kv = KVStore()
    var storage: ReplicaStorage?
    var snapshotThrough: Slot = 0
    /// Bytes of the commands applied since the last snapshot began (or was installed, or
    /// the storage recovered), for `RuntimeOptions.snapshotLogShare`.
    var appliedBytesSinceSnapshot = 0
    /// The state machine's bytes in the newest snapshot written, installed or recovered.
    var lastSnapshotBytes = 0
    /// The snapshot being written in the background, and the life of the storage it belongs
    /// to; at most one at a time.
    var snapshotWriting: (storageLife: Int, through: Slot)?
    /// Removals of files an adopted snapshot made obsolete, running off the driver's thread
    /// (`StorageCleanup`). An injected failure's recovery waits for them: reopening the
    /// storage lists and reads the segments they remove.
    var cleanupsInFlight = 0
    /// Bumped whenever the storage is opened anew (start, injected failures): a background
    /// snapshot of an earlier life is not adopted.
    var storageLife = 0
    var installer: SnapshotInstaller?
    var installerFrom: ReplicaID?
    /// Snapshots being sent, by peer, paced per turn.
    var snapshotTransfers: [ReplicaID: SnapshotTransfer] = [:]
    var faults: FaultInjector
    var compactor: AutoCompactor?
    /// Outputs whose records are appended to the log and not yet all durable, in turn order,
    /// each released (sent, applied, answered) once the sync covering its records completed
    /// and everything before it was released (`ReplicaRuntime+Pipeline.swift`).
    /// Invariant: empty while the replica is down.
    var held: [HeldOutput] = []
    /// The log sync running away from the driver's thread (`syncInBackground`); at most one.
    var syncInFlight: PendingSync?
    /// The last log sequence number whose record must be durable before anything a later
    /// turn does leaves (a `chosenThrough`-only output needs no sync of its own).
    var syncNeededThrough: UInt64 = 0
    /// The chosen prefix as of the last released output: every vote behind it is durable.
    /// Early accepts sent with a sync pending announce no more than this.
    var chosenReleased: Slot = 0
    /// Sequence numbers of the runtime's own commands (automatic compactions).
    var ownSequence: UInt64 = 0
    var lastLeader: ReplicaID?
    /// When this replica last proposed its NOSPACE alarm (proposed again at most once a
    /// `noSpaceAlarmRetryMilliseconds` while it is not yet applied).
    var noSpaceAlarmProposedAt: RuntimeInstant?
    public internal(set) var now = RuntimeInstant(nanoseconds: 0)
    /// Lease deadlines (leader only) and keep-alives waiting (`ReplicaRuntime+Leases.swift`).
    var leaseKeeper = LeaseKeeper()

    // Client requests waiting for an answer.
    var writesWaiting: [RequestID: [WaitingWrite]] = [:]
    var readsWaiting: [ReadID: WaitingRead] = [:]
    var nextReadID: ReadID = 1
    /// Invariant: `requestsWaiting` = writers in `writesWaiting` + `readsWaiting.count`;
    /// `requestBytesWaiting` = the bytes of the writes among them.
    /// The slot the store has applied (the core's `appliedThrough` runs ahead of it within a
    /// turn, until the turn's output is carried out).
    public internal(set) var appliedThroughKV: Slot = 0

    /// Set when the process died at a crash point: the runtime does nothing more.
    public private(set) var isHalted = false
    /// Cleared by `stopInjectingFaults` (the simulator's liveness phase).
    var injectsFaults = true
    public private(set) var requestsWaiting = 0
    public private(set) var requestBytesWaiting = 0
    /// Counters for monitoring, since the process started (read on the driver's thread).
    /// Times a leader became known that differs from the last one known (etcd's
    /// `leader_changes_seen`).
    public internal(set) var leaderChangesSeen = 0
    /// State-machine snapshots this replica wrote (each followed by a compaction).
    public internal(set) var snapshotsSaved = 0
    /// Snapshots received from a peer and installed.
    public internal(set) var snapshotsInstalled = 0

    public init(options: RuntimeOptions, environment: RuntimeEnvironment) {
        self.options = options
        self.environment = environment
        compactor = options.autoCompaction.map { AutoCompactor(policy: $0) }
        faults = FaultInjector(model: options.faults, tickMilliseconds: options.tickMilliseconds, seed: options.seed)
    }

    // MARK: - Driving

    /// Opens the data directory and rebuilds the replica exactly as after a crash.
    public func start(now: RuntimeInstant) throws {
        self.now = now
        try recover()
    }

    /// One turn: steps every event, then carries out the merged output once (one fsync
    /// for the whole turn: group commit). `tick` says that a tick of logical time passed.
    public func turn(_ events: [RuntimeEvent], tick: Bool, now: RuntimeInstant) {
        guard !isHalted else { return }
        self.now = max(self.now, now)
        var output = Output()
        var proposals: [Command] = []
        var reads: [ReadID] = []
        // Failures and recoveries first, while nothing of this turn is pending.
        if tick { tickFaults() }
        for event in events {
            handle(event, into: &output, proposals: &proposals, reads: &reads)
            guard !isHalted else { return }
        }
        // All writes of a turn go to the core together, so they batch into as few slots
        // as the bounds allow; all reads share one read-index confirmation round.
        if replica != nil && !proposals.isEmpty {
            output.append(replica!.step(.propose(proposals)))
        }
        if replica != nil && !reads.isEmpty {
            output.append(replica!.step(.reads(reads)))
        }
        if tick {
            if replica != nil { output.append(replica!.step(.tick)) }
            expireRequests()
            proposeAutoCompaction(into: &output)
            proposeLeaseExpiries(into: &output)
        }
        let newLeader = noteLeadershipChanges(into: &output)
        carryOut(output, newLeader: newLeader)
        guard !isHalted else { return }
        compactIfDue()
        continueSnapshotTransfers()
    }

    /// The process died: nothing more happens (waiting clients learn nothing, as from a
    /// killed process).
    func halt() {
        isHalted = true
        replica = nil
        installer = nil
        snapshotTransfers.removeAll()
        held.removeAll()
        syncInFlight = nil
    }

    /// No new injected failures from now on (a failed replica still recovers).
    public func stopInjectingFaults() {
        injectsFaults = false
    }

    /// Stops the runtime: every waiting request fails with `stopping`, storage is closed.
    public func stop() {
        // What is held leaves first (its records made durable here), as a turn's output did.
        drain()
        failAllWaiting(.stopping)
        try? storage?.close()
        storage = nil
        replica = nil
    }

    /// What the replica reports about itself.
    public var status: ReplicaStatus {
        ReplicaStatus(
            revision: kv.revision, leader: replica?.leader, ballotRound: currentRound,
            chosenThrough: replica?.learner.chosenThrough ?? 0, appliedThrough: replica?.learner.appliedThrough ?? 0,
            diskBytes: storage?.diskUsageBytes ?? 0, isDown: replica == nil, isLeader: replica?.isLeader ?? false,
            storeBytes: kv.approximateBytes, alarms: kv.activeAlarms)
    }

    /// Failures and recoveries the fault injector caused so far.
    public var faultCounts: (failures: Int, recoveries: Int) { (faults.failures, faults.recoveries) }

    var currentRound: UInt64 { replica?.ballot?.round ?? replica?.acceptor.promised.round ?? 0 }

    var position: ReplicaPosition {
        ReplicaPosition(revision: kv.revision, leader: replica?.leader, ballotRound: currentRound)
    }

    // MARK: - Events

    func handle(_ event: RuntimeEvent, into output: inout Output, proposals: inout [Command], reads: inout [ReadID]) {
        switch event {
        case .message(let envelope):
            guard replica != nil else { return }
            if handleLeaseMessage(envelope, reads: &reads) { return }
            output.append(replica!.step(.receive(envelope)))
        case .snapshotChunk(let from, let chunk):
            guard replica != nil else { return }
            receiveSnapshotChunk(chunk, from: from, output: &output)
        case .write(let command, let encoded, let deadline, let reply):
            guard replica != nil else { return reply(.failure(.recovering)) }
            guard requestsWaiting < options.requestsWaitingMax,
                requestBytesWaiting + encoded.bytes.count <= options.requestBytesWaitingMax
            else { return reply(.failure(.tooManyRequests)) }
            guard fitsQuota(command, proposals: &proposals) else { return reply(.failure(.store(.noSpace))) }
            let forwardedTo = replica!.isLeader ? nil : replica!.leader
            writesWaiting[command.requestID, default: []].append(
                WaitingWrite(command: encoded, deadline: deadline, forwardedTo: forwardedTo, reply: reply))
            requestsWaiting += 1
            requestBytesWaiting += encoded.bytes.count
            proposals.append(encoded)
        case .read(let request, let serializable, let deadline, let reply):
            guard replica != nil else { return reply(.failure(.recovering)) }
            // A serializable read at a revision this replica has not applied yet (clientv3's
            // STM reads every key at the revision its first read got, from whichever replica
            // its round-robin picks next) goes through the read index like a linearizable
            // read: the revision was chosen before the read started, so this replica then
            // has it; only a revision nobody has written fails as a future revision.
            if serializable && request.revision <= kv.revision {
                reply(serve(request))
                return
            }
            guard requestsWaiting < options.requestsWaitingMax else { return reply(.failure(.tooManyRequests)) }
            let readID = nextReadID
            nextReadID += 1
            readsWaiting[readID] = WaitingRead(request: request, deadline: deadline, reply: reply)
            requestsWaiting += 1
            reads.append(readID)
        case .status(let reply):
            reply(status)
        case .backup(let reply):
            guard replica != nil else { return reply(nil) }
            // What this turn stepped so far is not applied yet: the image is the store as of
            // the slots applied, which `appliedThroughKV` names.
            reply(BackupImage(appliedThrough: appliedThroughKV, revision: kv.revision, stateMachine: kv.snapshot()))
        case .leaseKeepAlive(let lease, let renew, let deadline, let reply):
            keepAlive(lease: lease, renew: renew, deadline: deadline, reply: reply, reads: &reads)
        case .transferLeadership(let target, let reply):
            guard replica != nil, replica!.isLeader else { return reply(false) }
            output.append(replica!.step(.transferLeadership(to: target)))
            let started = !replica!.isLeader
            if started { environment.log(.notice, "handing leadership over\(target.map { " to r\($0)" } ?? "")") }
            reply(started)
        case .snapshotWritten(let pending, let failure):
            snapshotWritten(pending, failure: failure, output: &output)
        case .storageCleaned(let failure):
            cleanupsInFlight -= 1
            // A failed unlink or directory fsync is a broken disk, as in `adopt` before.
            if let failure { environment.fatal("cannot remove the files a snapshot made obsolete, stopping: \(failure)") }
        case .synced(let sync):
            synced(sync)
        }
    }

    func serve(_ request: RangeRequest) -> RequestOutcome<RangeResponse> {
        do {
            let response = try kv.range(request)
            var answered = position
            answered.revision = response.revision
            return .success(response, answered)
        } catch {
            return .failure(.store(error))
        }
    }

    // MARK: - Waiting requests

    func takeWrites(_ requestID: RequestID) -> [WaitingWrite] {
        guard let waiting = writesWaiting.removeValue(forKey: requestID) else { return [] }
        requestsWaiting -= waiting.count
        requestBytesWaiting -= waiting.reduce(0) { $0 + $1.command.bytes.count }
        return waiting
    }

    func takeRead(_ readID: ReadID) -> WaitingRead? {
        guard let waiting = readsWaiting.removeValue(forKey: readID) else { return nil }
        requestsWaiting -= 1
        return waiting
    }

    func expireRequests() {
        // Runs every tick: allocate only when something did expire. Sorted: dictionary
        // order must never reach an output (it differs per process).
        let now = self.now
        let anyWriteExpired = writesWaiting.values.contains { $0.contains { $0.deadline <= now } }
        let expiredWrites =
            anyWriteExpired
            ? writesWaiting.filter { $0.value.contains { $0.deadline <= now } }.keys.sorted(by: RequestID.ordered) : []
        for requestID in expiredWrites {
            let all = takeWrites(requestID)
            for waiter in all where waiter.deadline <= now { waiter.reply(.failure(.timedOut)) }
            let alive = all.filter { $0.deadline > now }
            if !alive.isEmpty {
                writesWaiting[requestID] = alive
                requestsWaiting += alive.count
                requestBytesWaiting += alive.reduce(0) { $0 + $1.command.bytes.count }
            }
        }
        expireLeaseRequests()
        guard readsWaiting.values.contains(where: { $0.deadline <= now }) else { return }
        for readID in readsWaiting.filter({ $0.value.deadline <= now }).keys.sorted() {
            takeRead(readID)?.reply(.failure(.timedOut))
        }
    }

    func failAllWaiting(_ failure: RequestFailure) {
        for requestID in writesWaiting.keys.sorted(by: RequestID.ordered) {
            for waiter in takeWrites(requestID) { waiter.reply(.failure(failure)) }
        }
        for readID in readsWaiting.keys.sorted() {
            takeRead(readID)?.reply(.failure(failure))
        }
        failLeaseRequests(failure)
        precondition(requestsWaiting == 0 && requestBytesWaiting == 0, "waiting-request accounting is off")
    }

    /// A follower's forwarded writes die with the leader they were sent to: when the
    /// leader changes, each is sent again to the new one (its request id makes the retry
    /// exactly-once) — or, for a write without a session (a plain etcd client's, which a
    /// second copy could apply twice), failed with etcd's "leader changed" so the client
    /// need not wait out its deadline (`failWritesWithoutSession`, once the slots chosen
    /// before the change are applied).
    func reforwardAfterLeaderChange(to newLeader: ReplicaID) -> [Command] {
        var again: [Command] = []
        let forwardedTo: ReplicaID? = newLeader == id ? nil : newLeader
        for requestID in writesWaiting.keys.sorted(by: RequestID.ordered) where requestID.hasSession {
            let waiting = writesWaiting[requestID]!
            guard let previous = waiting.first?.forwardedTo, previous != newLeader else { continue }
            writesWaiting[requestID] = waiting.map {
                var copy = $0
                copy.forwardedTo = forwardedTo
                return copy
            }
            again.append(waiting[0].command)
        }
        return again
    }

    /// Fails the writes without a session still waiting on a leader other than `newLeader`
    /// with "leader changed". Runs when the output of the turn that saw the change is
    /// released: a write whose slot that output (or an earlier one) applies is answered
    /// with its result first.
    func failWritesWithoutSession(forwardedAwayFrom newLeader: ReplicaID) {
        for requestID in writesWaiting.keys.sorted(by: RequestID.ordered) where !requestID.hasSession {
            guard let previous = writesWaiting[requestID]!.first?.forwardedTo, previous != newLeader else { continue }
            for waiter in takeWrites(requestID) { waiter.reply(.failure(.leaderChanged)) }
        }
    }

    /// Logs a leader change and re-forwards what waits on the old leader (into `output`);
    /// returns the new leader, whose turn output fails writes without a session when released.
    func noteLeadershipChanges(into output: inout Output) -> ReplicaID? {
        guard let replica, replica.leader != lastLeader else { return nil }
        lastLeader = replica.leader
        guard let leader = replica.leader else {
            // Forwarded writes keep waiting: they go to whichever leader is found next.
            environment.log(.notice, "no leader known; election under way")
            return nil
        }
        leaderChangesSeen += 1
        environment.log(
            .notice,
            "leader is r\(leader) (\(replica.leaderBallot))\(leader == replica.id ? " — this replica leads" : "")"
                + " chosen=\(replica.learner.chosenThrough)")
        reforwardKeepAlives(to: leader, into: &output)
        let again = reforwardAfterLeaderChange(to: leader)
        if !again.isEmpty {
            environment.log(.info, "re-forwarding \(again.count) writes to the new leader r\(leader)")
            output.append(self.replica!.step(.propose(again)))
        }
        return leader
    }

    /// The leader proposes a compaction when its policy says so (only the leader: one
    /// clock decides, and the log makes every replica compact at the same point).
    func proposeAutoCompaction(into output: inout Output) {
        guard compactor != nil, let replica, replica.isLeader else { return }
        guard let target = compactor!.target(now: now, revision: kv.revision, compacted: kv.compactedRevision) else { return }
        compactor!.proposedThrough = target
        ownSequence += 1
        // No session: a compaction needs no exactly-once answer, and an old one is refused
        // harmlessly by the store ("already compacted").
        let command = WriteCommand(
            requestID: RequestID(clientID: RequestID.untrackedBit | UInt64(id), sequence: ownSequence),
            operation: .compact(CompactionRequest(revision: target)))
        environment.log(.info, "automatic compaction at revision \(target) (\(options.autoCompaction!))")
        output.append(self.replica!.step(.propose([Command(command.encode())])))
    }

    // MARK: - Recovery and failures

    /// Opens the data directory and rebuilds the replica from its snapshot and log.
    func recover() throws {
        precondition(held.isEmpty, "recovering with outputs held")
        syncInFlight = nil
        syncNeededThrough = 0
        let (storage, recovered) = try ReplicaStorage.open(
            directory: options.directory, fileSystem: options.fileSystem, options: options.storage)
        self.storage = storage
        storageLife += 1
        snapshotWriting = nil
        appliedBytesSinceSnapshot = 0
        lastSnapshotBytes = recovered.snapshot?.stateMachine.count ?? 0
        if let snapshot = recovered.snapshot {
            kv = try KVStore(snapshot: snapshot.stateMachine)
        } else {
            kv = KVStore()
        }
        var durable = recovered.durable
        if options.bug == .forgetPromise { durable.promised = .zero }
        snapshotThrough = durable.snapshotThrough
        appliedThroughKV = durable.snapshotThrough
        chosenReleased = durable.chosenThrough
        replica = Replica(configuration: options.paxos, durable: durable)
        lastLeader = nil
        environment.log(
            .notice,
            "recovered: \(recovered.report) promised=\(durable.promised) chosen=\(durable.chosenThrough) "
                + "snapshot=\(durable.snapshotThrough)")
    }

    /// The fault injector's turn: fail now and then, recover when the downtime is over.
    func tickFaults() {
        switch options.faults.mode {
        case .replica: tickReplicaFaults()
        case .acceptor: tickAcceptorFaults()
        }
    }

    /// `replica` mode: the whole replica goes down and comes back as after a restart.
    func tickReplicaFaults() {
        if replica == nil {
            guard cleanupsInFlight == 0, faults.recoversNow(now: now) else { return }
            do {
                try recover()
            } catch {
                environment.fatal("cannot recover after an injected failure: \(error)")
            }
            environment.log(.notice, "fault injector: acceptor recovered from its write-ahead log (whole replica restarted)")
            return
        }
        guard injectsFaults, let downtime = faults.failsThisTick(now: now) else { return }
        environment.log(
            .warning, "fault injector: acceptor crashed with its whole replica; down for \(downtime) ms, dropping all traffic")
        // What earlier turns decided leaves first, as it did before the failure.
        drain()
        replica = nil
        installer = nil
        snapshotTransfers.removeAll()
        failAllWaiting(.recovering)
        try? storage?.close()
        storage = nil
    }

    /// `acceptor` mode (the seed's model): only the acceptor role fails; the proposer,
    /// the learner and the waiting clients carry on. On recovery the acceptor's state is
    /// rebuilt from the write-ahead log by the same recovery code a restart runs.
    func tickAcceptorFaults() {
        guard replica != nil else { return }
        if replica!.acceptorDown {
            guard cleanupsInFlight == 0, faults.recoversNow(now: now) else { return }
            // The storage is reopened: nothing may wait on a sync of the old one.
            drain()
            let durable: DurableState
            do {
                syncInFlight = nil
                syncNeededThrough = 0
                try storage?.close()
                let (reopened, recovered) = try ReplicaStorage.open(
                    directory: options.directory, fileSystem: options.fileSystem, options: options.storage)
                storage = reopened
                storageLife += 1
                snapshotWriting = nil
                durable = options.bug == .acceptorRecoversWithoutLog ? DurableState() : recovered.durable
            } catch {
                environment.fatal("cannot recover the acceptor after an injected failure: \(error)")
            }
            replica!.recoverAcceptor(from: durable)
            environment.log(
                .notice,
                "fault injector: acceptor recovered from its write-ahead log (promised=\(durable.promised), "
                    + "\(durable.entries.count) entries)")
            return
        }
        guard injectsFaults, let downtime = faults.failsThisTick(now: now) else { return }
        drain()
        replica!.failAcceptor()
        environment.log(
            .warning,
            "fault injector: acceptor crashed; down for \(downtime) ms (proposer and learner keep running"
                + "\(replica!.isLeader ? ", this replica keeps leading" : ""))")
    }
}

extension RequestID {
    /// A total order for iterating waiting requests deterministically.
    static func ordered(_ lhs: RequestID, _ rhs: RequestID) -> Bool {
        (lhs.clientID, lhs.sequence) < (rhs.clientID, rhs.sequence)
    }
}

struct WaitingWrite {
    let command: Command
    let deadline: RuntimeInstant
    /// The leader this follower forwarded the write to (nil: proposed locally).
    var forwardedTo: ReplicaID?
    let reply: WriteReply
}

struct WaitingRead {
    let request: RangeRequest
    let deadline: RuntimeInstant
    let reply: ReadReply
}
