import Foundation
import KVStore
import Logging
import Paxos
import Storage
import Transport

/// What a client request ends with.
enum RequestOutcome<Value: Sendable>: Sendable {
    case success(Value, LoopSnapshot)
    case failure(RequestFailure)
}

/// Why a request could not be served; each maps to etcd's status code and message.
enum RequestFailure: Error, Sendable, Equatable {
    case noLeader
    case timedOut
    case recovering
    case stopping
    case store(KVError)
}

/// The replica's position when a request was answered, for response headers.
struct LoopSnapshot: Sendable {
    var revision: Int64
    var leader: ReplicaID?
    var ballotRound: UInt64
}

/// Replica status, for Maintenance.Status and logs.
struct ReplicaStatus: Sendable {
    var revision: Int64
    var leader: ReplicaID?
    var ballotRound: UInt64
    var chosenThrough: Slot
    var appliedThrough: Slot
    var diskBytes: UInt64
    var isDown: Bool
}

/// Events handed to the loop from other threads.
enum LoopEvent: Sendable {
    case message(Envelope)
    case snapshotChunk(ReplicaID, SnapshotChunk)
    /// A write with its encoding (done on the caller's thread, off the loop).
    case write(WriteCommand, Command, deadline: ContinuousClock.Instant, reply: @Sendable (RequestOutcome<WriteResult>) -> Void)
    case read(
        RangeRequest, serializable: Bool, deadline: ContinuousClock.Instant,
        reply: @Sendable (RequestOutcome<RangeResponse>) -> Void)
    case status(@Sendable (ReplicaStatus) -> Void)
}

/// The runtime of one replica: a dedicated thread that owns the `Replica`, the
/// `KVStore` and the storage, and runs
///
///     collect events → step each → persist + ONE fdatasync → send → apply → answer
///
/// Everything that arrives while an fdatasync runs is handled in the next turn, so
/// batching (group commit) follows load. No async hop on this path: gRPC handlers and
/// NIO callbacks only enqueue and wake the thread.
final class ReplicaLoop: @unchecked Sendable {
    // Shared with other threads, guarded by `condition`.
    private let condition = NSCondition()
    private var inbox: [LoopEvent] = []
    private var stopping = false
    /// Bound of `inbox`; beyond it client requests are refused (messages still queue).
    static let inboxRequestsMax = 65_536
    private var inboxRequests = 0

    // Owned by the loop thread.
    let configuration: ServerConfiguration
    let paxosConfiguration: Configuration
    let logger: Logger
    let transport: PeerTransport
    var storage: ReplicaStorage?
    var replica: Replica?
    var kv = KVStore()
    var writesWaiting: [RequestID: [(deadline: ContinuousClock.Instant, reply: @Sendable (RequestOutcome<WriteResult>) -> Void)]] = [:]
    var readsWaiting: [ReadID: (request: RangeRequest, deadline: ContinuousClock.Instant, reply: @Sendable (RequestOutcome<RangeResponse>) -> Void)] = [:]
    var nextReadID: ReadID = 1
    var snapshotThrough: Slot = 0
    var installer: SnapshotInstaller?
    var faults: FaultInjector
    var lastLeader: ReplicaID?
    var thread: Thread?
    let clock = ContinuousClock()

    init(
        configuration: ServerConfiguration, paxosConfiguration: Configuration, transport: PeerTransport, logger: Logger
    ) {
        self.configuration = configuration
        self.paxosConfiguration = paxosConfiguration
        self.transport = transport
        self.logger = logger
        faults = FaultInjector(
            rate: configuration.failRate, downtimeMilliseconds: configuration.failDowntimeMilliseconds,
            seed: configuration.randomSeed)
    }

    // MARK: - Any thread

    /// Hands an event to the loop. Returns false if the loop is stopping or full.
    @discardableResult
    func submit(_ event: LoopEvent) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return false }
        switch event {
        case .write, .read:
            guard inboxRequests < Self.inboxRequestsMax else { return false }
            inboxRequests += 1
        default:
            break
        }
        inbox.append(event)
        if inbox.count == 1 { condition.signal() }
        return true
    }

    /// Starts the thread after recovering from the data directory.
    func start() throws {
        try recover()
        let thread = Thread { [self] in run() }
        thread.name = "synod-replica-\(configuration.replicaID)"
        thread.stackSize = 8 << 20
        self.thread = thread
        thread.start()
    }

    /// Stops the loop: pending requests fail with `stopping`, storage is closed.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    // MARK: - The loop thread

    private func run() {
        let tick = Duration.milliseconds(configuration.tickMilliseconds)
        var nextTick = clock.now.advanced(by: tick)
        while true {
            condition.lock()
            while inbox.isEmpty && !stopping && clock.now < nextTick {
                let wait = clock.now.duration(to: nextTick)
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
                _ = condition.wait(until: Date().addingTimeInterval(max(seconds, 0)))
            }
            let batch = inbox
            inbox.removeAll(keepingCapacity: true)
            inboxRequests = 0
            let stop = stopping
            condition.unlock()
            if stop {
                shutdown(failing: batch)
                return
            }
            var tickDue = false
            let now = clock.now
            if now >= nextTick {
                tickDue = true
                nextTick = now.advanced(by: tick)
            }
            turn(batch, tickDue: tickDue)
        }
    }

    /// One turn: step every event, then carry out the merged output once.
    func turn(_ batch: [LoopEvent], tickDue: Bool) {
        var output = Output()
        var proposals: [Command] = []
        var reads: [ReadID] = []
        for event in batch {
            handle(event, into: &output, proposals: &proposals, reads: &reads)
        }
        // All writes of a turn go to the core together, so they batch into as few slots
        // as the bounds allow; all reads share one read-index confirmation round.
        if replica != nil && !proposals.isEmpty {
            output.append(replica!.step(.propose(proposals)))
        }
        if replica != nil && !reads.isEmpty {
            output.append(replica!.step(.reads(reads)))
        }
        if tickDue {
            if replica == nil {
                if faults.shouldRecover(now: clock.now) {
                    do {
                        try recover()
                        logger.notice("fault injector: acceptor recovered from its write-ahead log")
                    } catch {
                        fatal("cannot recover after an injected failure: \(error)")
                    }
                }
            } else {
                output.append(replica!.step(.tick))
            }
            expireRequests()
        }
        carryOut(output)
        noteLeadershipChanges()
    }

    func handle(_ event: LoopEvent, into output: inout Output, proposals: inout [Command], reads: inout [ReadID]) {
        switch event {
        case .message(let envelope):
            guard replica != nil else { return }
            if faults.shouldFail(now: clock.now) {
                // Like a real crash: what this turn stepped so far is neither persisted
                // nor sent, and its waiting clients are failed.
                output = Output()
                proposals.removeAll()
                reads.removeAll()
                crashForFault()
                return
            }
            output.append(replica!.step(.receive(envelope)))
        case .snapshotChunk(let from, let chunk):
            guard replica != nil else { return }
            receiveSnapshotChunk(chunk, from: from, into: &output)
        case .write(let command, let encoded, let deadline, let reply):
            guard replica != nil else { return reply(.failure(.recovering)) }
            writesWaiting[command.requestID, default: []].append((deadline, reply))
            proposals.append(encoded)
        case .read(let request, let serializable, let deadline, let reply):
            guard replica != nil else { return reply(.failure(.recovering)) }
            if serializable {
                reply(serve(request))
            } else {
                let readID = nextReadID
                nextReadID += 1
                readsWaiting[readID] = (request, deadline, reply)
                reads.append(readID)
            }
        case .status(let reply):
            reply(status)
        }
    }

    var status: ReplicaStatus {
        ReplicaStatus(
            revision: kv.revision, leader: replica?.leader, ballotRound: currentRound,
            chosenThrough: replica?.learner.chosenThrough ?? 0, appliedThrough: replica?.learner.appliedThrough ?? 0,
            diskBytes: storage?.diskUsageBytes ?? 0, isDown: replica == nil)
    }

    var currentRound: UInt64 { replica?.ballot?.round ?? replica?.acceptor.promised.round ?? 0 }

    var position: LoopSnapshot {
        LoopSnapshot(revision: kv.revision, leader: replica?.leader, ballotRound: currentRound)
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

    /// Carries out an output in the contract's order: persist and fsync, send, apply,
    /// answer.
    func carryOut(_ output: Output) {
        var messages = output.messages
        if !output.records.isEmpty {
            // Accept requests first: the acceptors' fsyncs overlap ours
            // (`Envelope.mayLeaveBeforePersist`). Replies they cause wait in the inbox and
            // are stepped in a later turn, after this fsync.
            let early = messages.filter(\.mayLeaveBeforePersist)
            if !early.isEmpty {
                transport.send(early)
                messages.removeAll(where: \.mayLeaveBeforePersist)
            }
            do {
                try storage!.persist(output.records, sync: output.recordsNeedSync)
            } catch {
                fatal("cannot persist to the write-ahead log, stopping: \(error)")
            }
        }
        if !messages.isEmpty {
            transport.send(messages)
        }
        for item in output.committed {
            for command in item.entry.value.commands {
                let (requestID, result) = kv.apply(encoded: command.bytes)
                guard let requestID, let waiting = writesWaiting.removeValue(forKey: requestID) else { continue }
                var answered = position
                answered.revision = result.revision
                for waiter in waiting {
                    waiter.reply(.success(result, answered))
                }
            }
        }
        for readID in output.readsReleased {
            guard let waiting = readsWaiting.removeValue(forKey: readID) else { continue }
            waiting.reply(serve(waiting.request))
        }
        for readID in output.readsFailed {
            readsWaiting.removeValue(forKey: readID)?.reply(.failure(.noLeader))
        }
        for peer in output.snapshotsNeeded {
            sendSnapshot(to: peer)
        }
        for command in output.proposalsDropped {
            guard let decoded = try? WriteCommand.decode(command.bytes) else { continue }
            for waiter in writesWaiting.removeValue(forKey: decoded.requestID) ?? [] {
                waiter.reply(.failure(.noLeader))
            }
        }
        compactIfDue()
    }

    func expireRequests() {
        let now = clock.now
        // Runs every tick on the loop thread: allocate only for requests that did expire.
        for (requestID, waiting) in writesWaiting where waiting.contains(where: { $0.deadline <= now }) {
            let (expired, alive) = (waiting.filter { $0.deadline <= now }, waiting.filter { $0.deadline > now })
            for waiter in expired { waiter.reply(.failure(.timedOut)) }
            writesWaiting[requestID] = alive.isEmpty ? nil : alive
        }
        for (readID, waiting) in readsWaiting where waiting.deadline <= now {
            readsWaiting.removeValue(forKey: readID)
            waiting.reply(.failure(.timedOut))
        }
    }

    func noteLeadershipChanges() {
        guard let replica else { return }
        if replica.leader != lastLeader {
            lastLeader = replica.leader
            if let leader = replica.leader {
                let ballot = replica.leaderBallot
                logger.notice(
                    "leader is r\(leader) (\(ballot))\(leader == replica.id ? " — this replica leads" : "")",
                    metadata: ["chosen": "\(replica.learner.chosenThrough)"])
            } else {
                logger.notice("no leader known; election under way")
            }
        }
    }

    // MARK: - Snapshots

    func compactIfDue() {
        guard let applied = replica?.learner.appliedThrough,
            applied >= snapshotThrough + Slot(configuration.snapshotEverySlots)
        else { return }
        do {
            try storage!.saveSnapshot(through: applied, stateMachine: kv.snapshot())
        } catch {
            fatal("cannot write a snapshot, stopping: \(error)")
        }
        snapshotThrough = applied
        let output = replica!.step(.compacted(through: applied))
        logger.info("snapshot through slot \(applied) written; log compacted", metadata: ["disk-bytes": "\(storage!.diskUsageBytes)"])
        carryOut(output)
    }

    func sendSnapshot(to peer: ReplicaID) {
        do {
            guard let reader = try storage?.snapshotReader() else { return }
            logger.info("sending snapshot through slot \(reader.through) (\(reader.totalBytes) bytes) to r\(peer)")
            var offset: UInt64 = 0
            repeat {
                let bytes = try reader.read(at: offset, count: SnapshotReader.chunkBytesMax)
                let isLast = offset + UInt64(bytes.count) >= reader.totalBytes
                transport.sendSnapshotChunk(
                    SnapshotChunk(
                        through: reader.through, offset: offset, totalBytes: reader.totalBytes, bytes: bytes,
                        isLast: isLast), to: peer)
                offset += UInt64(bytes.count)
                if bytes.isEmpty { break }
            } while offset < reader.totalBytes
        } catch {
            logger.error("cannot send a snapshot to r\(peer): \(error)")
        }
    }

    func receiveSnapshotChunk(_ chunk: SnapshotChunk, from peer: ReplicaID, into output: inout Output) {
        guard let replica, chunk.through > replica.learner.appliedThrough else { return }
        do {
            if chunk.offset == 0 {
                installer = try storage!.beginSnapshotInstall(through: chunk.through, totalBytes: chunk.totalBytes)
            }
            guard let installer, installer.through == chunk.through else { return }
            try installer.write(chunk.bytes, at: chunk.offset)
            guard chunk.isLast else { return }
            self.installer = nil
            let body = try installer.finish()
            kv = try KVStore(snapshot: body)
            snapshotThrough = chunk.through
            logger.notice("installed snapshot through slot \(chunk.through) from r\(peer)")
            output.append(self.replica!.step(.snapshotInstalled(through: chunk.through)))
        } catch let error as StorageError {
            if case .fsyncFailed = error { fatal("fsync failed while installing a snapshot: \(error)") }
            installer = nil
            logger.error("snapshot from r\(peer) rejected: \(error)")
        } catch {
            installer = nil
            logger.error("snapshot from r\(peer) rejected: \(error)")
        }
    }

    // MARK: - Recovery and failures

    /// 16 MiB segments: small enough that compaction frees disk soon after a snapshot,
    /// large enough that segment rollover (and its directory fsync) is rare.
    static let storageOptions = StorageOptions(wal: WALOptions(segmentBytesMax: 16 << 20))

    /// Opens the data directory and rebuilds the replica exactly as after a crash.
    func recover() throws {
        let (storage, recovered) = try ReplicaStorage.open(
            directory: configuration.dataDirectory, fileSystem: PosixFileSystem(), options: Self.storageOptions)
        self.storage = storage
        if let snapshot = recovered.snapshot {
            kv = try KVStore(snapshot: snapshot.stateMachine)
        } else {
            kv = KVStore()
        }
        snapshotThrough = recovered.durable.snapshotThrough
        replica = Replica(configuration: paxosConfiguration, durable: recovered.durable)
        lastLeader = nil
        logger.notice(
            "recovered: \(recovered.report)",
            metadata: [
                "promised": "\(recovered.durable.promised)", "chosen": "\(recovered.durable.chosenThrough)",
                "snapshot": "\(recovered.durable.snapshotThrough)",
            ])
    }

    /// The seed's random acceptor failure: drop all volatile state and all traffic for a
    /// while; `turn` recovers through the real WAL recovery path afterwards.
    func crashForFault() {
        let downtime = faults.fail(now: clock.now)
        logger.warning("fault injector: acceptor crashed; down for \(downtime) ms, dropping all traffic")
        replica = nil
        installer = nil
        failAllWaiting(.recovering)
        try? storage?.close()
        storage = nil
    }

    func failAllWaiting(_ failure: RequestFailure) {
        for (_, waiting) in writesWaiting {
            for waiter in waiting { waiter.reply(.failure(failure)) }
        }
        writesWaiting.removeAll()
        for (_, waiting) in readsWaiting {
            waiting.reply(.failure(failure))
        }
        readsWaiting.removeAll()
    }

    private func shutdown(failing batch: [LoopEvent]) {
        for event in batch {
            switch event {
            case .write(_, _, _, let reply): reply(.failure(.stopping))
            case .read(_, _, _, let reply): reply(.failure(.stopping))
            case .status(let reply): reply(status)
            default: break
            }
        }
        failAllWaiting(.stopping)
        try? storage?.close()
        logger.notice("replica loop stopped")
    }

    func fatal(_ message: String) -> Never {
        logger.critical("\(message)")
        // A failed fsync or a broken disk must stop the replica (PostgreSQL's fsyncgate
        // lesson): retrying could acknowledge data the kernel already dropped.
        FileHandle.standardError.write(Data("synod: \(message)\n".utf8))
        exit(1)
    }
}
