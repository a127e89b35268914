import Foundation
import KVStore
import Logging
import Paxos
import ReplicaRuntime
import Storage
import Transport

/// Drives one `ReplicaRuntime` from a dedicated thread: collects the events other threads
/// hand it (client requests from the HTTP/2 connections, messages and snapshot chunks from
/// the peer transport) and runs one runtime turn per wake-up. Everything that arrives while
/// a turn (and its fsync) runs goes into the next turn, so batching follows load.
///
/// The inbox is bounded in count and bytes: over the bound a client request is refused at
/// once with etcd's "too many requests" and a peer message is dropped (Paxos retransmits).
final class ReplicaLoop: @unchecked Sendable {
    // Shared with other threads, guarded by `condition`.
    private let condition = NSCondition()
    private var inbox: [RuntimeEvent] = []
    private var inboxBytes = 0
    /// Work that must run on the loop thread between turns (watch requests, HashKV), in
    /// the order it was handed over.
    private var tasks: [LoopTask] = []
    /// Bound of `tasks`.
    static let tasksMax = 65_536
    private var stopping = false
    /// Bounds of `inbox`.
    static let inboxEventsMax = 65_536
    static let inboxBytesMax = 256 << 20
    private(set) var peerEventsDropped = 0

    let configuration: ServerConfiguration
    let logger: Logger
    let runtime: ReplicaRuntime
    let environment: ServerEnvironment
    private var thread: Thread?
    private let clock = ContinuousClock()
    private let origin: ContinuousClock.Instant

    init(
        configuration: ServerConfiguration, paxosConfiguration: Configuration, transport: PeerTransport, logger: Logger,
        fileSystem: FileSystem = PosixFileSystem()
    ) {
        self.configuration = configuration
        self.logger = logger
        origin = clock.now
        environment = ServerEnvironment(transport: transport, logger: logger)
        watchHub = WatchHub()
        var options = RuntimeOptions(
            paxos: paxosConfiguration, directory: configuration.dataDirectory, fileSystem: fileSystem,
            storage: Self.storageOptions, snapshotEverySlots: configuration.snapshotEverySlots,
            tickMilliseconds: UInt64(configuration.tickMilliseconds), faults: configuration.faults,
            seed: configuration.randomSeed,
            snapshotChunkBytesMax: min(SnapshotReader.chunkBytesMax, transport.snapshotChunkBytesMax))
        options.autoCompaction = configuration.autoCompaction
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

    /// Hands an event to the loop. Returns false if the loop is stopping or its inbox is
    /// full (the caller answers "too many requests"; a peer message is just dropped).
    @discardableResult
    func submit(_ event: RuntimeEvent) -> Bool {
        let bytes = event.approximateBytes
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return false }
        guard inbox.count < Self.inboxEventsMax, inboxBytes + bytes <= Self.inboxBytesMax else {
            if !event.isClientRequest { peerEventsDropped += 1 }
            return false
        }
        inbox.append(event)
        inboxBytes += bytes
        if inbox.count == 1 { condition.signal() }
        return true
    }

    /// Hands the loop the outcome of the runtime's background work (`runInBackground`):
    /// outside the inbox's bounds, which must never drop it (at most one is in flight).
    func submitFromBackground(_ event: RuntimeEvent) {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return }
        inbox.append(event)
        if inbox.count == 1 { condition.signal() }
    }

    /// Runs `body` on the loop thread after the current turn, with the runtime (whose state
    /// nothing else touches meanwhile). Returns false, without running it, if the loop is
    /// stopping or `tasksMax` tasks wait already.
    @discardableResult
    func perform(_ body: @escaping LoopTask) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping, tasks.count < Self.tasksMax else { return false }
        tasks.append(body)
        if tasks.count == 1 { condition.signal() }
        return true
    }

    /// The replica's etcd watchers; touched only on the loop thread (from tasks).
    let watchHub: WatchHub

    /// The applied auth state, published for the connections' checks (AuthCredentials.swift).
    let authView = AuthView()

    /// Starts the thread after recovering from the data directory.
    func start() throws {
        try runtime.start(now: now)
        authView.refresh(runtime.kv.authState)
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
            while inbox.isEmpty && tasks.isEmpty && !stopping && clock.now < nextTick {
                let wait = clock.now.duration(to: nextTick)
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
                _ = condition.wait(until: Date().addingTimeInterval(max(seconds, 0)))
            }
            let batch = inbox
            inbox.removeAll(keepingCapacity: true)
            inboxBytes = 0
            let work = tasks
            tasks.removeAll(keepingCapacity: true)
            let stop = stopping
            condition.unlock()
            if stop {
                shutdown(failing: batch)
                return
            }
            var tickDue = false
            let instant = clock.now
            if instant >= nextTick {
                tickDue = true
                nextTick = instant.advanced(by: tick)
            }
            let started = clock.now
            runtime.turn(batch, tick: tickDue, now: now)
            noteSlowTurn(started.duration(to: clock.now), events: batch.count)
            // After the turn: a task sees every command the turn applied (a watch created
            // now starts from the store's state after them), and `afterTurn` runs once for
            // both (the watch hub sends what was applied), so nothing applied in between is missed.
            for task in work { task(runtime) }
            watchHub.afterTurn(runtime)
            authView.refresh(runtime.kv.authState)
        }
    }

    /// A turn this long holds up heartbeats: followers may call an election after the
    /// election timeout. Logged (at most once a second) with how long it took, as etcd warns
    /// of slow applies and fdatasyncs.
    static let slowTurn = Duration.milliseconds(100)
    private var lastSlowTurnLogged: ContinuousClock.Instant?

    private func noteSlowTurn(_ took: Duration, events: Int) {
        guard took >= Self.slowTurn else { return }
        let instant = clock.now
        if let last = lastSlowTurnLogged, last.duration(to: instant) < .seconds(1) { return }
        lastSlowTurnLogged = instant
        let milliseconds = took.components.seconds * 1_000 + took.components.attoseconds / 1_000_000_000_000_000
        logger.warning("slow turn: \(milliseconds) ms for \(events) events (heartbeats wait for it; election timeout \(configuration.electionTimeoutTicks * configuration.tickMilliseconds) ms)")
    }

    private func shutdown(failing batch: [RuntimeEvent]) {
        for event in batch {
            switch event {
            case .write(_, _, _, let reply): reply(.failure(.stopping))
            case .read(_, _, _, let reply): reply(.failure(.stopping))
            case .status(let reply): reply(runtime.status)
            case .transferLeadership(_, let reply): reply(false)
            case .backup(let reply): reply(nil)
            case .leaseKeepAlive(_, _, _, let reply): reply(.failure(.stopping))
            default: break
            }
        }
        runtime.stop()
        logger.notice("replica loop stopped")
    }
}

/// Work for the loop thread (see `ReplicaLoop.perform`).
typealias LoopTask = @Sendable (ReplicaRuntime) -> Void

/// The runtime's seams in the server: the peer transport, swift-log, and exit on a fatal
/// storage error.
final class ServerEnvironment: RuntimeEnvironment {
    let transport: PeerTransport
    let logger: Logger
    /// Set once the loop exists; its background work reports back through it.
    weak var loop: ReplicaLoop?
    /// One thread for the runtime's slow work (snapshots), in order.
    private let background = DispatchQueue(label: "synod-background")

    init(transport: PeerTransport, logger: Logger) {
        self.transport = transport
        self.logger = logger
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
