import Foundation
import KVStore
import NIOCore
import Paxos
import ReplicaRuntime
import Synchronization
import Transport
import UnaryGRPC

/// What the replica loop reports about itself, read on the loop's own thread (inside a
/// `.status` event), so no value of the runtime is ever read from another thread.
struct LoopSample: Sendable {
    var status: ReplicaStatus
    var acceptorDown: Bool
    var requestsWaiting: Int
    var leaderChangesSeen: Int
    var snapshotsSaved: Int
    var snapshotsInstalled: Int
    var acceptorFailures: Int
    var acceptorRecoveries: Int
    var watchStreams: Int
    var watchers: Int
}

/// One thing the status page lists as it happens.
struct MonitorEvent: Sendable, Codable {
    /// Milliseconds since 1970.
    var at: Int64
    var text: String
}

/// Watches one replica for `/metrics`, `/health`, `/livez`, `/readyz` and `/status`: asks the
/// loop for a `LoopSample` (on demand, and every `samplingInterval` in the background, which
/// also turns counter changes into `MonitorEvent`s) and keeps the rates the status page
/// shows. Every wait is bounded: a loop that does not answer in time makes the answer
/// unhealthy (or stale), never a hung HTTP request.
final class ReplicaMonitor: Sendable {
    let loop: ReplicaLoop
    let transport: PeerTransport
    let metrics: ServerMetrics
    let configuration: ServerConfiguration
    /// Runs the timeouts and the background sampling (the replica's event loop, which the client API, the transport and the runtime share).
    let eventLoop: EventLoop
    let startedAt = Date()

    static let samplingInterval = TimeAmount.milliseconds(500)
    /// How long a health, readiness or liveness check waits for the loop.
    static let loopAnswerTimeout = TimeAmount.seconds(2)
    /// A linearizable read round `/health` waits for (etcd's /health uses a 1 s QGET... its
    /// request timeout; a healthy cluster answers in milliseconds).
    static let healthReadTimeout = Duration.seconds(1)
    /// Events the status page can show, at most (the oldest go first).
    static let eventsMax = 200

    struct Observed: Sendable {
        var last: LoopSample?
        var lastAt: ContinuousClock.Instant?
        var events: [MonitorEvent] = []
        /// Events recorded since start (`events` keeps only the newest `eventsMax`).
        var eventsRecorded = 0
        /// `requestsStarted` and WAL fsync totals at the previous background sample, for rates.
        var previousRequests = 0
        var previousFsyncs = 0
        var previousFsyncNanoseconds = 0
        var requestsPerSecond = 0.0
        var fsyncsPerSecond = 0.0
        var fsyncMeanMilliseconds = 0.0
    }

    private let observed = Mutex(Observed())
    /// `/status/events` streams, each with `eventsRecorded` when it was last sent events.
    private let subscribers = Mutex<[(stream: HTTPBodyStream, eventsSent: Int)]>([])
    /// Open `/status/events` streams, at most.
    static let subscribersMax = 32
    private let stopped = Atomic<Bool>(false)

    init(
        loop: ReplicaLoop, transport: PeerTransport, metrics: ServerMetrics, configuration: ServerConfiguration,
        eventLoop: EventLoop
    ) {
        self.loop = loop
        self.transport = transport
        self.metrics = metrics
        self.configuration = configuration
        self.eventLoop = eventLoop
    }

    // MARK: - Sampling

    /// Asks the loop for a sample; `done` gets it (on the loop thread), or nil on this
    /// monitor's event loop if the loop refused the event or did not answer within `timeout`.
    /// `done` runs exactly once.
    func sample(timeout: TimeAmount = loopAnswerTimeout, _ done: @escaping @Sendable (LoopSample?) -> Void) {
        let once = Once(done)
        let loop = self.loop
        let submitted = loop.submit(
            .status({ status in
                // On the loop thread: the runtime's counters may be read here.
                let runtime = loop.runtime
                let faults = runtime.faultCounts
                once.run(
                    LoopSample(
                        status: status, acceptorDown: runtime.replica?.acceptorDown ?? false,
                        requestsWaiting: runtime.requestsWaiting, leaderChangesSeen: runtime.leaderChangesSeen,
                        snapshotsSaved: runtime.snapshotsSaved, snapshotsInstalled: runtime.snapshotsInstalled,
                        acceptorFailures: faults.failures, acceptorRecoveries: faults.recoveries,
                        watchStreams: loop.watchHub.streamCount, watchers: loop.watchHub.watcherCount))
            }))
        guard submitted else { return once.run(nil) }
        eventLoop.scheduleTask(in: timeout) { once.run(nil) }
    }

    /// Samples and copies the result into the metrics (and the status page's state).
    func refresh(_ done: @escaping @Sendable (LoopSample?) -> Void) {
        sample { [self] sample in
            if let sample { record(sample) }
            done(sample)
        }
    }

    /// Starts the background sampling (until `stop`).
    func start() {
        scheduleBackgroundSample()
    }

    /// Stops the background sampling and finishes every `/status/events` stream. Idempotent.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        let open = subscribers.withLock { subscribers in
            defer { subscribers.removeAll() }
            return subscribers
        }
        for subscriber in open { subscriber.stream.finish() }
    }

    private func scheduleBackgroundSample() {
        eventLoop.scheduleTask(in: Self.samplingInterval) { [self] in
            guard !stopped.load(ordering: .relaxed) else { return }
            refresh { [self] sample in
                updateRates()
                publish(sample)
                guard !stopped.load(ordering: .relaxed) else { return }
                eventLoop.execute { self.scheduleBackgroundSample() }
            }
        }
    }

    /// Copies a sample in, noting what changed since the previous one as events.
    private func record(_ sample: LoopSample) {
        metrics.update(sample, transport: transport.statistics)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        observed.withLock { observed in
            var texts: [String] = []
            if let previous = observed.last {
                texts = Self.changes(from: previous, to: sample)
            } else {
                texts = ["monitoring started; " + Self.describe(sample.status)]
            }
            observed.last = sample
            observed.lastAt = .now
            for text in texts { observed.events.append(MonitorEvent(at: now, text: text)) }
            observed.eventsRecorded += texts.count
            if observed.events.count > Self.eventsMax {
                observed.events.removeFirst(observed.events.count - Self.eventsMax)
            }
        }
    }

    /// What changed between two samples, as the status page's event lines.
    static func changes(from previous: LoopSample, to sample: LoopSample) -> [String] {
        var texts: [String] = []
        if sample.leaderChangesSeen != previous.leaderChangesSeen || sample.status.leader != previous.status.leader {
            texts.append(
                sample.status.leader.map { "leader is now r\($0) (ballot round \(sample.status.ballotRound))" }
                    ?? "no leader known")
        }
        if sample.acceptorFailures > previous.acceptorFailures {
            texts.append("acceptor failed (\(sample.acceptorFailures) failures so far)")
        }
        if sample.acceptorRecoveries > previous.acceptorRecoveries {
            texts.append("acceptor recovered from its write-ahead log (\(sample.acceptorRecoveries) recoveries so far)")
        }
        if sample.status.isDown != previous.status.isDown {
            texts.append(sample.status.isDown ? "replica down" : "replica up")
        }
        if sample.snapshotsInstalled > previous.snapshotsInstalled {
            texts.append("installed a snapshot from a peer")
        }
        return texts
    }

    static func describe(_ status: ReplicaStatus) -> String {
        if status.isDown { return "replica down" }
        let leader = status.leader.map { "leader r\($0)" } ?? "no leader"
        return "\(leader), chosen through slot \(status.chosenThrough), applied through \(status.appliedThrough)"
    }

    private func updateRates() {
        let requests = metrics.requestsStarted.load(ordering: .relaxed)
        let fsyncs = metrics.walFsyncs.load(ordering: .relaxed)
        let fsyncNanoseconds = metrics.walFsyncNanoseconds.load(ordering: .relaxed)
        let seconds = Double(Self.samplingInterval.nanoseconds) / 1e9
        observed.withLock { observed in
            observed.requestsPerSecond = Double(requests - observed.previousRequests) / seconds
            let newFsyncs = fsyncs - observed.previousFsyncs
            observed.fsyncsPerSecond = Double(newFsyncs) / seconds
            if newFsyncs > 0 {
                observed.fsyncMeanMilliseconds =
                    Double(fsyncNanoseconds - observed.previousFsyncNanoseconds) / Double(newFsyncs) / 1e6
            }
            observed.previousRequests = requests
            observed.previousFsyncs = fsyncs
            observed.previousFsyncNanoseconds = fsyncNanoseconds
        }
    }

    var snapshot: Observed { observed.withLock { $0 } }

    // MARK: - Server-sent events

    /// Starts a `/status/events` stream: a `status` event (this replica's `/status.json`)
    /// after every background sample, and a `change` event per new `MonitorEvent`. Refused
    /// (503) over `subscribersMax`; a client too slow to take its bounded queue is dropped.
    func subscribe(_ responder: HTTPResponder) {
        let admitted = subscribers.withLock { subscribers in
            subscribers.removeAll { !$0.stream.isOpen }
            return subscribers.count < Self.subscribersMax && !stopped.load(ordering: .relaxed)
        }
        guard admitted else {
            return responder.respond(
                status: 503, contentType: MonitoringEndpoints.text,
                body: Array("too many /status/events streams (at most \(Self.subscribersMax)), or shutting down\n".utf8))
        }
        let stream = responder.startStream()
        let eventCount = observed.withLock { $0.eventsRecorded }
        subscribers.withLock { $0.append((stream, eventCount)) }
    }

    /// Sends every subscriber the new sample and the events it has not seen.
    private func publish(_ sample: LoopSample?) {
        let open = subscribers.withLock { subscribers in
            subscribers.removeAll { !$0.stream.isOpen }
            return subscribers
        }
        guard !open.isEmpty else { return }
        let status = String(decoding: MonitoringEndpoints.encode(StatusReport(monitor: self, sample: sample)), as: UTF8.self)
        let (events, total) = observed.withLock { ($0.events, $0.eventsRecorded) }
        var sentCounts: [Int] = []
        for subscriber in open {
            // The newest events it has not seen (older ones may have been trimmed).
            let fresh = min(max(0, total - subscriber.eventsSent), events.count)
            var delivered = subscriber.stream.sendEvent(status, event: "status")
            for event in events.suffix(fresh) where delivered {
                let text = String(decoding: MonitoringEndpoints.encode(event), as: UTF8.self)
                delivered = subscriber.stream.sendEvent(text, event: "change")
            }
            if !delivered { subscriber.stream.finish() }
            sentCounts.append(total)
        }
        subscribers.withLock { subscribers in
            for (index, subscriber) in open.enumerated() {
                if let position = subscribers.firstIndex(where: { $0.stream === subscriber.stream }) {
                    subscribers[position].eventsSent = sentCounts[index]
                }
            }
        }
    }

    // MARK: - Checks

    /// etcd's `/health`: healthy only if the loop answers, the replica is up, it knows a
    /// leader, and a linearizable read round (a quorum confirms the leader) completes within
    /// `healthReadTimeout`.
    func health(_ done: @escaping @Sendable (CheckResult) -> Void) {
        let once = Once(done)
        refresh { [self] sample in
            guard let sample else { return once.run(.failing("the replica loop did not answer in time")) }
            guard !sample.status.isDown else { return once.run(.failing("the replica is down (injected failure)")) }
            guard sample.status.leader != nil else { return once.run(.failing("RAFT NO LEADER: no leader known")) }
            let read = RangeRequest(key: Array("health".utf8), limit: 1)
            let submitted = loop.submit(
                .read(read, serializable: false, deadline: loop.deadline(after: Self.healthReadTimeout), reply: { outcome in
                    switch outcome {
                    case .success: once.run(.passing)
                    case .failure(let failure): once.run(.failing("linearizable read failed: \(failure)"))
                    }
                }))
            guard submitted else { return once.run(.failing("the replica loop refused the read (busy or stopping)")) }
            eventLoop.scheduleTask(in: Self.loopAnswerTimeout) {
                once.run(.failing("linearizable read did not complete in time"))
            }
        }
    }

    /// `/readyz`: recovered (the loop runs and answers) and the replica up, serving requests.
    func readiness(_ done: @escaping @Sendable (CheckResult) -> Void) {
        refresh { sample in
            guard let sample else { return done(.failing("the replica loop did not answer in time")) }
            done(sample.status.isDown ? .failing("the replica is down (injected failure)") : .passing)
        }
    }

    /// `/livez`: the process serves HTTP and its replica loop still turns.
    func liveness(_ done: @escaping @Sendable (CheckResult) -> Void) {
        sample { sample in
            done(sample == nil ? .failing("the replica loop did not answer in time") : .passing)
        }
    }
}

/// A check's outcome.
enum CheckResult: Sendable, Equatable {
    case passing
    case failing(String)
}

/// Runs a closure at most once, from any thread: the first of several racing answers wins.
final class Once<Value: Sendable>: Sendable {
    private let body: Mutex<(@Sendable (Value) -> Void)?>

    init(_ body: @escaping @Sendable (Value) -> Void) {
        self.body = Mutex(body)
    }

    func run(_ value: Value) {
        let body = self.body.withLock { body in
            defer { body = nil }
            return body
        }
        body?(value)
    }
}
