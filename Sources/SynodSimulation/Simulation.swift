import KVStore
import Linearizability
import Paxos
import ReplicaRuntime
import Storage
import StorageTools

/// The outcome of one simulated run.
public struct SimulationResult: Sendable {
    public var seed: UInt64
    public var replicaCount: Int
    /// Safety and liveness violations found (empty: the run passed).
    public var violations: [String]
    /// Client operations handed to the linearizability checker.
    public var operationsChecked: Int
    /// Crashes, restarts and partition changes.
    public var faultsInjected: Int
    public var messagesDelivered: Int
    public var messagesDropped: Int
    /// Whether the checker exhausted its budget on some key (neither proven nor refuted).
    public var checkerGaveUp: Bool
    /// The last lines of the trace, for a failure report.
    public var traceTail: [String]
    /// A digest of the whole trace: the same seed gives the same digest.
    public var traceDigest: UInt64
    public var faultPlan: String
    public var ticks: Int
    /// The `synod simulate` arguments that replay this run.
    public var replayArguments: String
    /// Event responses the simulated watchers received and the watch checker checked.
    public var watchResponsesChecked = 0
}

/// A deterministic simulation of a whole cluster in one process: every replica's
/// `Replica` and `KVStore`, a seeded network that loses, duplicates, reorders and delays
/// messages and partitions replicas, crashes and restarts over a disk that loses what
/// was not synced, and clients whose history is checked for linearizability. After the
/// fault phase everything heals and every pending request must complete and every
/// replica converge (the liveness phase).
public final class Simulation: @unchecked Sendable {  // one thread drives each instance
    /// Time units per tick; message delays are drawn in units.
    static let tickUnits: UInt64 = 10
    /// A client attempt waits this long before retrying elsewhere.
    static let attemptTimeoutUnits: UInt64 = 40 * tickUnits
    /// In the fault phase a client gives an operation up after this long (its outcome is
    /// then unknown to the checker).
    static let operationDeadlineUnits: UInt64 = 200 * tickUnits

    let options: SimulationOptions
    var random: SplitMix64
    let plan: FaultPlan
    var time: UInt64 = 0
    var queue = EventQueue<SimEvent>()
    var nodes: [SimNode] = []
    var clients: [SimClient] = []
    /// Directed links that drop everything.
    var cuts: Set<Link> = []
    var inLivenessPhase = false
    var history: [Operation<KVModel.Input, KVModel.Output>] = []
    var operationsIssued = 0
    /// The value every replica applied in each slot: all must agree.
    var appliedValues: [Slot: Value] = [:]
    var violations: [String] = []
    var faults = 0
    var delivered = 0
    var dropped = 0
    var trace: TraceRing
    /// When the last snapshot chunk on each link arrives (chunks keep their order).
    var chunkArrivals: [Link: UInt64] = [:]
    /// Users, roles and guest writes when `options.auth` (Simulation+Auth.swift).
    var authModel = SimulationAuthModel()
    /// Simulated watch clients and each replica's watch hub (`Simulation+Watch.swift`).
    var watch = SimWatchState()
    /// Lease holders and what the lease checkers know (`Simulation+Leases.swift`).
    var leaseHolders: [SimLeaseHolder] = []
    var leaseRecords: [Int64: SimLeaseRecord] = [:]

    public init(options: SimulationOptions) {
        precondition([1, 3, 5, 7].contains(options.replicaCount), "replica count must be 1, 3, 5 or 7")
        self.options = options
        var random = SplitMix64(seed: options.seed)
        plan = FaultPlan(random: &random)
        self.random = random
        trace = TraceRing(capacity: options.traceTailLines)
        let ids = (1...options.replicaCount).map { ReplicaID($0) }
        for id in ids {
            nodes.append(SimNode(id: id, cluster: ids, seed: options.seed))
        }
        for index in 0..<options.clientCount {
            clients.append(SimClient(id: index + 1))
        }
        for index in 0..<options.leaseHolderCount {
            leaseHolders.append(SimLeaseHolder(id: index + 1, cyclesLeft: Self.leaseCyclesPerHolder))
        }
    }

    /// Runs the whole simulation and checks it.
    public func run() -> SimulationResult {
        for node in nodes {
            start(node)
        }
        for client in clients {
            schedule(.clientNext(client: client.id), after: 1 + random.next() % 50)
        }
        startWatchers()
        startLeaseHolders()
        queue.push(.faultTick, at: Self.tickUnits)
        let faultEnd = UInt64(options.faultPhaseTicksMax) * Self.tickUnits
        while let event = queue.pop() {
            time = event.time
            handle(event.element)
            if !inLivenessPhase && (time >= faultEnd || faultPhaseDone) {
                beginLivenessPhase()
            }
            if inLivenessPhase {
                if livenessReached { break }
                if time >= livenessDeadline {
                    reportLivenessFailure()
                    break
                }
            }
            if violations.count > 20 { break }
        }
        checkConvergence()
        checkDeniedWrites()
        checkLeaseExpiries()
        let checked = checkHistory()
        checkWatches()
        var result = SimulationResult(
            seed: options.seed, replicaCount: options.replicaCount, violations: violations,
            operationsChecked: history.count, faultsInjected: faults, messagesDelivered: delivered,
            messagesDropped: dropped, checkerGaveUp: !checked, traceTail: trace.lines(),
            traceDigest: trace.digest, faultPlan: plan.description, ticks: Int(time / Self.tickUnits),
            replayArguments: replayArguments)
        result.watchResponsesChecked = watchResponsesReceived
        return result
    }

    var replayArguments: String {
        var arguments = "--seed \(options.seed) --replicas \(options.replicaCount) --ops \(options.operationCount) "
            + "--clients \(options.clientCount)"
        if let bug = options.bug { arguments += " --inject-bug \(bug.rawValue)" }
        if options.auth { arguments += " --auth" }
        return arguments
    }

    func schedule(_ event: SimEvent, after delay: UInt64) {
        queue.push(event, at: time + max(1, delay))
    }

    func node(_ id: ReplicaID) -> SimNode { nodes[Int(id) - 1] }

    func violation(_ text: String) {
        violations.append("t=\(time) \(text)")
        trace.note(time, "VIOLATION \(text)")
    }

    // MARK: - Phases

    var faultPhaseDone: Bool {
        operationsIssued >= options.operationCount && clients.allSatisfy { $0.current == nil } && leaseHoldersDone
    }

    var livenessDeadline: UInt64 = .max

    func beginLivenessPhase() {
        inLivenessPhase = true
        livenessDeadline = time + UInt64(options.livenessTicksMax) * Self.tickUnits
        trace.note(time, "liveness phase: heal all, restart all")
        cuts.removeAll()
        for node in nodes {
            if node.runtime == nil {
                restart(node)
            } else {
                node.runtime!.stopInjectingFaults()
            }
        }
        for index in clients.indices {
            clients[index].current?.deadline = .max
        }
    }

    var livenessReached: Bool {
        guard clients.allSatisfy({ $0.current == nil }) else { return false }
        guard nodes.allSatisfy({ $0.replica != nil }) else { return false }
        let applied = nodes.map { $0.replica!.learner.appliedThrough }
        guard Set(applied).count == 1 else { return false }
        guard nodes.contains(where: { $0.replica!.isLeader }) else { return false }
        guard watchersCaughtUp else { return false }
        return Set(nodes.map { $0.runtime!.kv.stateDigest() }).count == 1
    }

    func reportLivenessFailure() {
        let pending = clients.filter { $0.current != nil }.map { "c\($0.id)" }
        let state = nodes.map { node -> String in
            guard let replica = node.replica else { return "r\(node.id):down" }
            return "r\(node.id):\(replica.role.rawValue) chosen=\(replica.learner.chosenThrough) "
                + "applied=\(replica.learner.appliedThrough) promised=\(replica.acceptor.promised)"
        }
        violation(
            "liveness: not converged \(options.livenessTicksMax) ticks after healing; pending clients "
                + "\(pending); \(state.joined(separator: ", "))")
    }

    func checkConvergence() {
        guard violations.isEmpty else { return }
        let digests = Set(nodes.compactMap { $0.runtime?.kv.stateDigest() })
        if digests.count != 1 {
            violation("replicas diverged: \(digests.count) different state-machine digests")
        }
    }

    /// Runs the linearizability checker; false if it gave up on some key.
    func checkHistory() -> Bool {
        switch checkLinearizability(model: KVModel(), history: history, stepBudget: 2_000_000) {
        case .ok:
            return true
        case .illegal(let report):
            violation("history is not linearizable:\n\(report)")
            return true
        case .unknown:
            return false
        }
    }

    // MARK: - Events

    func handle(_ event: SimEvent) {
        switch event {
        case .tick(let id, let incarnation):
            let node = node(id)
            guard node.incarnation == incarnation, node.runtime != nil else { return }
            runTurn(node, tick: true)
            schedule(.tick(node: id, incarnation: incarnation), after: Self.tickUnits)
        case .turn(let id, let incarnation):
            let node = node(id)
            guard node.incarnation == incarnation else { return }
            runTurn(node, tick: false)
        case .deliver(let envelope):
            let node = node(envelope.to)
            guard node.isUp else {
                dropped += 1
                return
            }
            delivered += 1
            trace.deliver(time, envelope)
            deliver(.message(envelope), to: node)
        case .heal:
            cuts.removeAll()
            trace.note(time, "heal")
        case .faultTick:
            if !inLivenessPhase {
                injectFaults()
                queue.push(.faultTick, at: time + Self.tickUnits)
            }
        case .restart(let id, let crashIncarnation):
            let node = node(id)
            if node.runtime == nil && node.incarnation == crashIncarnation { restart(node) }
        case .crash(let id, let incarnation):
            let node = node(id)
            guard node.incarnation == incarnation, node.runtime != nil else { return }
            trace.note(time, "r\(id) crashes with a log sync in flight")
            crash(node)
        case .background(let id, let incarnation, let work):
            let node = node(id)
            guard node.incarnation == incarnation, node.runtime != nil else { return }
            deliver(work(), to: node)
        case .snapshotChunk(let to, let from, let chunk):
            let node = node(to)
            guard node.isUp else { return }
            deliver(.snapshotChunk(from: from, chunk), to: node)
        case .clientNext(let client):
            startOperation(client: client)
        case .request(let to, let request):
            serve(request, at: node(to))
        case .response(let client, let operation, let reply):
            receive(reply, client: client, operation: operation)
        case .attemptTimeout(let client, let operation, let attempt):
            attemptTimedOut(client: client, operation: operation, attempt: attempt)
        case .watchNext(let watcher):
            watchNext(watcher)
        case .watchWritable(let watcher, let generation):
            watchWritable(watcher, generation: generation)
        case .lease(let event):
            handleLease(event)
        }
    }
}

/// A directed network link.
struct Link: Hashable {
    var from: ReplicaID
    var to: ReplicaID
}

enum SimEvent {
    case tick(node: ReplicaID, incarnation: Int)
    /// A replica takes the events delivered since its last turn.
    case turn(node: ReplicaID, incarnation: Int)
    case deliver(Envelope)
    case faultTick
    case heal
    case restart(node: ReplicaID, incarnation: Int)
    /// The process dies now, unless it died (and restarted) since the crash was planned.
    case crash(node: ReplicaID, incarnation: Int)
    case snapshotChunk(to: ReplicaID, from: ReplicaID, SnapshotChunk)
    case clientNext(client: Int)
    case request(to: ReplicaID, ClientRequest)
    case response(client: Int, operation: Int, ClientReply)
    case attemptTimeout(client: Int, operation: Int, attempt: Int)
    /// A replica's background work (`RuntimeEnvironment.runInBackground`) runs now and its
    /// outcome is handed to the replica, unless the process died since.
    case background(node: ReplicaID, incarnation: Int, work: @Sendable () -> RuntimeEvent)
    case watchNext(watcher: Int)
    case watchWritable(watcher: Int, generation: Int)
    case lease(LeaseSimEvent)
}
