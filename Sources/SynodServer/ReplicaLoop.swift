import Foundation
import KVStore
import Logging
import NIOCore
import Paxos
import ReplicaRuntime
import Storage
import Synchronization
import Transport

/// Drives one `ReplicaRuntime` on the replica's event loop — the one SwiftNIO thread that
/// also runs the client API's connections, the peer transport and the monitor, so nothing
/// on a write's path inside a replica changes threads (DESIGN §2).
///
/// Events submitted on the loop (a client call just decoded, a peer's message just read) go
/// straight into the inbox: no lock, no wake-up. The first event of a batch schedules one
/// runtime turn (`execute`), which NIO runs after everything it read in that epoll pass, so
/// one pass is one batch; ticks come from `scheduleRepeatedTask`. Other threads — the fsync
/// thread handing back a finished sync, the background snapshot writer, blocking admin calls
/// and tests — hand events over with `execute`. The WAL's fdatasync runs on the fsync thread
/// (`SyncThread`): the loop steps the next batch while the disk syncs (group commit) — unless
/// the loop has nothing else to do, when it runs the fdatasync itself (`ServerEnvironment.endTurn`).
///
/// The inbox is bounded in count and bytes: over the bound a client request is refused at
/// once with etcd's "too many requests" and a peer message is dropped (Paxos retransmits).
final class ReplicaLoop: @unchecked Sendable {
    let eventLoop: EventLoop
    // Touched on `eventLoop` only.
    private var inbox: [RuntimeEvent] = []
    private var inboxBytes = 0
    /// The previous turn's batch, emptied: the inbox's next buffer. Swapping the two keeps
    /// a turn from allocating (emptying the inbox while the batch still shares its buffer
    /// would allocate a new one of the same capacity — tens of KiB under load — every turn).
    private var spareInbox: [RuntimeEvent] = []
    /// Work that must run on the loop between turns (watch requests, HashKV), in the order
    /// it was handed over.
    private var tasks: [LoopTask] = []
    /// A turn is scheduled (`execute`) and has not run yet.
    private var turnScheduled = false
    private var tickTask: RepeatedTask?
    private var lastSlowTurnLogged: ContinuousClock.Instant?
    /// Bound of `tasks`.
    static let tasksMax = 65_536
    /// Bounds of `inbox`.
    static let inboxEventsMax = 65_536
    static let inboxBytesMax = 256 << 20
    /// Set once by `stop`, from any thread.
    private let stopping = Atomic<Bool>(false)

    let configuration: ServerConfiguration
    let logger: Logger
    let runtime: ReplicaRuntime
    let environment: ServerEnvironment
    private let clock = ContinuousClock()
    private let origin: ContinuousClock.Instant

    init(
        configuration: ServerConfiguration, paxosConfiguration: Configuration, transport: PeerTransport,
        eventLoop: EventLoop, logger: Logger, fileSystem: FileSystem = PosixFileSystem()
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
        origin = clock.now
        environment = ServerEnvironment(
            transport: transport, logger: logger, syncThreadName: "synod-fsync-\(configuration.replicaID)")
        watchHub = WatchHub()
        var options = RuntimeOptions(
            paxos: paxosConfiguration, directory: configuration.dataDirectory, fileSystem: fileSystem,
            storage: Self.storageOptions, snapshotEverySlots: configuration.snapshotEverySlots,
            tickMilliseconds: UInt64(configuration.tickMilliseconds), faults: configuration.faults,
            seed: configuration.randomSeed,
            snapshotChunkBytesMax: min(SnapshotReader.chunkBytesMax, transport.snapshotChunkBytesMax))
        options.autoCompaction = configuration.autoCompaction
        options.snapshotLogShare = configuration.snapshotLogShare
        options.quotaBytes = configuration.quotaBytes
        options.requestsWaitingMax = configuration.requestsWaitingMax
        runtime = ReplicaRuntime(options: options, environment: environment)
        environment.loop = self
    }

    /// 16 MiB segments: small enough that compaction frees disk soon after a snapshot,
    /// large enough that segment rollover (and its directory fsync) is rare.
    static let storageOptions = StorageOptions(wal: WALOptions(segmentBytesMax: 16 << 20))

    var now: RuntimeInstant {
        let elapsed = origin.duration(to: clock.now)
        return RuntimeInstant(
            nanoseconds: UInt64(elapsed.components.seconds) * 1_000_000_000
                + UInt64(elapsed.components.attoseconds / 1_000_000_000))
    }

    /// The runtime instant `duration` from now (for request deadlines).
    func deadline(after duration: Duration) -> RuntimeInstant {
        let milliseconds = duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
        return now.advanced(byMilliseconds: UInt64(max(0, milliseconds)))
    }

    // MARK: - Any thread

    /// Hands an event to the loop. On the loop: false if the loop is stopping or its inbox
    /// is full (the caller answers "too many requests"; a peer message is just dropped).
    /// From another thread the event is handed over (true unless stopping) and, if the inbox
    /// turns out full or the loop stopped, answered there as refused.
    @discardableResult
    func submit(_ event: RuntimeEvent) -> Bool {
        if eventLoop.inEventLoop { return enqueue(event) }
        guard !stopping.load(ordering: .acquiring) else { return false }
        eventLoop.execute { [self] in
            if !enqueue(event) { refuse(event, stopping.load(ordering: .acquiring) ? .stopping : .tooManyRequests) }
        }
        return true
    }

    /// Hands the loop the outcome of the runtime's background work (`runInBackground`,
    /// `syncInBackground`): outside the inbox's bounds, which must never drop it (at most
    /// one of each kind is in flight).
    func submitFromBackground(_ event: RuntimeEvent) {
        guard !stopping.load(ordering: .acquiring) else { return }
        eventLoop.execute { [self] in
            guard !stopping.load(ordering: .acquiring) else { return }
            inbox.append(event)
            scheduleTurn()
        }
    }

    /// Runs `body` on the loop after the current turn, with the runtime (whose state nothing
    /// else touches meanwhile). Returns false, without running it, if the loop is stopping or
    /// `tasksMax` tasks wait already (from another thread: dropped there).
    @discardableResult
    func perform(_ body: @escaping LoopTask) -> Bool {
        guard eventLoop.inEventLoop else {
            guard !stopping.load(ordering: .acquiring) else { return false }
            eventLoop.execute { [self] in _ = addTask(body) }
            return true
        }
        return addTask(body)
    }

    /// The replica's etcd watchers; touched only on the loop (from tasks).
    let watchHub: WatchHub

    /// The applied auth state, published for the connections' checks (AuthCredentials.swift).
    let authView = AuthView()

    /// Recovers from the data directory (on the caller's thread: nothing reaches the runtime
    /// before the transport and the client API start), then starts the ticks on the loop.
    func start() throws {
        try runtime.start(now: now)
        authView.refresh(runtime.kv.authState)
        let tick = TimeAmount.milliseconds(Int64(configuration.tickMilliseconds))
        eventLoop.execute { [self] in
            guard !stopping.load(ordering: .acquiring) else { return }
            tickTask = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [self] _ in
                runTurn(tick: true)
            }
        }
    }

    /// Stops the loop: what is held is released, pending requests fail with `stopping`,
    /// storage is closed, the fsync thread ends. Waits for it when called off the loop.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if eventLoop.inEventLoop {
            shutdown()
        } else {
            try? eventLoop.submit { [self] in shutdown() }.wait()
        }
    }

    // MARK: - On the loop

    private func enqueue(_ event: RuntimeEvent) -> Bool {
        guard !stopping.load(ordering: .acquiring) else { return false }
        let bytes = event.approximateBytes
        guard inbox.count < Self.inboxEventsMax, inboxBytes + bytes <= Self.inboxBytesMax else { return false }
        inbox.append(event)
        inboxBytes += bytes
        scheduleTurn()
        return true
    }

    private func addTask(_ body: @escaping LoopTask) -> Bool {
        guard !stopping.load(ordering: .acquiring), tasks.count < Self.tasksMax else { return false }
        tasks.append(body)
        scheduleTurn()
        return true
    }

    /// One turn per loop pass: the first event of a batch schedules it, and it runs after
    /// the rest of what the loop read in this pass has been handed over.
    private func scheduleTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        eventLoop.execute { [self] in
            turnScheduled = false
            runTurn(tick: false)
        }
    }

    private func runTurn(tick: Bool) {
        guard !stopping.load(ordering: .acquiring) else { return }
        guard tick || !inbox.isEmpty || !tasks.isEmpty else { return }
        var batch: [RuntimeEvent] = []
        swap(&batch, &inbox)
        swap(&inbox, &spareInbox)
        inboxBytes = 0
        let work = tasks
        if !work.isEmpty { tasks = [] }
        let started = clock.now
        let events = batch.count
        environment.beginTurn()
        runtime.turn(batch, tick: tick, now: now)
        batch.removeAll(keepingCapacity: true)
        spareInbox = batch
        // After the turn: a task sees every command the turn applied (a watch created
        // now starts from the store's state after them), and `afterTurn` runs once for
        // both (the watch hub sends what was applied), so nothing applied in between is missed.
        for task in work { task(runtime) }
        watchHub.afterTurn(runtime)
        authView.refresh(runtime.kv.authState)
        environment.endTurn(idle: events <= 1 && inbox.isEmpty && tasks.isEmpty)
        // Measured last: the tasks and an fdatasync run on the loop hold heartbeats up too.
        noteSlowTurn(started.duration(to: clock.now), events: events)
    }

    /// A turn this long holds up heartbeats: followers may call an election after the
    /// election timeout. Logged (at most once a second) with how long it took, as etcd warns
    /// of slow applies and fdatasyncs.
    static let slowTurn = Duration.milliseconds(100)

    private func noteSlowTurn(_ took: Duration, events: Int) {
        guard took >= Self.slowTurn else { return }
        let instant = clock.now
        if let last = lastSlowTurnLogged, last.duration(to: instant) < .seconds(1) { return }
        lastSlowTurnLogged = instant
        let milliseconds = took.components.seconds * 1_000 + took.components.attoseconds / 1_000_000_000_000_000
        logger.warning("slow turn: \(milliseconds) ms for \(events) events (heartbeats wait for it; election timeout \(configuration.electionTimeoutTicks * configuration.tickMilliseconds) ms)")
    }

    /// Answers an event the runtime will not see (the loop is stopping, or its inbox is
    /// full) as refused; a peer's message or chunk is just dropped.
    private func refuse(_ event: RuntimeEvent, _ failure: RequestFailure) {
        switch event {
        case .write(_, _, _, let reply): reply(.failure(failure))
        case .read(_, _, _, let reply): reply(.failure(failure))
        case .status(let reply): reply(runtime.status)
        case .transferLeadership(_, let reply): reply(false)
        case .backup(let reply): reply(nil)
        case .leaseKeepAlive(_, _, _, let reply): reply(.failure(failure))
        case .message, .snapshotChunk, .snapshotWritten, .storageCleaned, .synced: break
        }
    }

    private func shutdown() {
        tickTask?.cancel()
        tickTask = nil
        let batch = inbox
        inbox.removeAll()
        inboxBytes = 0
        tasks.removeAll()
        for event in batch { refuse(event, .stopping) }
        runtime.stop()
        environment.stopSyncThread()
        logger.notice("replica loop stopped")
    }
}

/// Work for the loop thread (see `ReplicaLoop.perform`).
typealias LoopTask = @Sendable (ReplicaRuntime) -> Void

/// The runtime's seams in the server: the peer transport, the fsync thread, a background
/// thread for snapshots, swift-log, and exit on a fatal storage error.
final class ServerEnvironment: RuntimeEnvironment {
    let transport: PeerTransport
    let logger: Logger
    /// Set once the loop exists; its background work reports back through it.
    weak var loop: ReplicaLoop?
    /// One thread for the runtime's slow work (snapshots), in order.
    private let background = DispatchQueue(label: "synod-background")
    /// The write-ahead log's fdatasyncs, off the event loop.
    private let syncThread: SyncThread

    init(transport: PeerTransport, logger: Logger, syncThreadName: String) {
        self.transport = transport
        self.logger = logger
        syncThread = SyncThread(name: syncThreadName)
    }

    // Touched on the loop only (the runtime calls `syncInBackground` from its turns).
    private var turnRunning = false
    private var syncAtTurnEnd: PendingSync?

    /// A sync asked for during a turn waits for the turn's end (`endTurn`); one asked for
    /// outside a turn (recovery at start) goes to the fsync thread at once.
    func syncInBackground(_ sync: PendingSync) {
        if turnRunning {
            precondition(syncAtTurnEnd == nil, "the runtime keeps at most one sync in flight")
            syncAtTurnEnd = sync
        } else {
            runOnSyncThread(sync)
        }
    }

    func beginTurn() {
        turnRunning = true
    }

    /// After a turn and its tasks: runs the sync the turn asked for. When the turn was the
    /// loop's only work (`idle`: at most one event, nothing arrived meanwhile) the fdatasync
    /// runs here, on the loop: a lone write then wakes no fsync thread and the fsync thread
    /// wakes no loop — two wake-ups of an idle core, 50–80 µs each on this machine, on
    /// every acceptor of one client's put. Under load it goes to the fsync thread, where it
    /// overlaps the next turns (group commit). Either way `.synced` reaches the runtime in a
    /// later turn, as `RuntimeEnvironment.syncInBackground` promises.
    func endTurn(idle: Bool) {
        turnRunning = false
        guard let sync = syncAtTurnEnd else { return }
        syncAtTurnEnd = nil
        if idle {
            loop?.submitFromBackground(sync.runForRuntime())
        } else {
            runOnSyncThread(sync)
        }
    }

    private func runOnSyncThread(_ sync: PendingSync) {
        let loop = self.loop
        syncThread.submit {
            let event = sync.runForRuntime()
            loop?.submitFromBackground(event)
        }
    }

    /// Ends the fsync thread after the sync it runs, if any (the runtime has stopped).
    func stopSyncThread() {
        syncThread.stop()
    }

    func send(_ envelopes: [Envelope]) {
        transport.send(envelopes)
    }

    func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID) {
        transport.sendSnapshotChunk(chunk, to: peer)
    }

    func runInBackground(_ work: @escaping @Sendable () -> RuntimeEvent) {
        let loop = self.loop
        background.async {
            // At a lower priority than the loop (on Linux the nice value is per thread, and
            // `who` 0 is the calling thread): encoding a large store must not take the CPU
            // the loop needs for heartbeats.
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
            let event = work()
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 0)
            loop?.submitFromBackground(event)
        }
    }

    /// On the background thread, after the work queued before it.
    func discard(_ garbage: Discarded) {
        background.async { garbage.drop() }
    }

    func log(_ level: RuntimeLogLevel, _ message: String) {
        switch level {
        case .debug: logger.debug("\(message)")
        case .info: logger.info("\(message)")
        case .notice: logger.notice("\(message)")
        case .warning: logger.warning("\(message)")
        case .error: logger.error("\(message)")
        case .critical: logger.critical("\(message)")
        }
    }

    func fatal(_ message: String) -> Never {
        logger.critical("\(message)")
        // A failed fsync or a broken disk must stop the replica (PostgreSQL's fsyncgate
        // lesson): retrying could acknowledge data the kernel already dropped.
        FileHandle.standardError.write(Data("synod: \(message)\n".utf8))
        exit(1)
    }
}

/// The replica's fsync thread (DESIGN §2): runs the write-ahead log's syncs one after another
/// off the event loop, so the loop steps the next batch while the disk syncs. A plain
/// `Thread` waiting on a condition variable — not libdispatch, whose pool may run each job
/// on another worker thread and adds its own hand-offs.
final class SyncThread: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var jobs: [@Sendable () -> Void] = []
    private var stopping = false
    private var finished = false

    init(name: String) {
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return }
        jobs.append(job)
        condition.signal()
    }

    /// Lets the thread finish the jobs it has and waits until it ended. Idempotent.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        condition.broadcast()
        while !finished { condition.wait() }
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty {
                finished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job() }
        }
    }
}
