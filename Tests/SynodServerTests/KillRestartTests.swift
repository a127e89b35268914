import EtcdAPI
import Foundation
import GRPCCore
import Linearizability
import Synchronization
import Testing

typealias KVOperation = Linearizability.Operation<KVModel.Input, KVModel.Output>

/// The history of a run, appended to by every client lane.
final class HistoryRecorder: Sendable {
    private let operations = Mutex<[KVOperation]>([])

    func record(_ operation: KVOperation) {
        operations.withLock { $0.append(operation) }
    }

    var history: [KVOperation] { operations.withLock { $0 } }
}

/// Tells client lanes to finish their current operation and stop.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .relaxed) }

    func set() { flag.store(true, ordering: .relaxed) }
}

/// Counts of what the load did, for the report line.
struct LoadCounts: Sendable, CustomStringConvertible {
    var acknowledged = 0
    var unknown = 0
    var attempts = 0
    var retries = 0
    var unexpectedErrors: [String] = []

    mutating func add(_ other: LoadCounts) {
        acknowledged += other.acknowledged
        unknown += other.unknown
        attempts += other.attempts
        retries += other.retries
        unexpectedErrors += other.unexpectedErrors
    }

    var description: String {
        "\(acknowledged) acknowledged, \(unknown) unknown, \(attempts) attempts (\(retries) failed and retried)"
    }
}

/// One client lane of the load: its own exactly-once client id, one operation at a time,
/// each retried on the other replicas with the same request id until an overall budget.
struct ClientLane: Sendable {
    let lane: Int
    let keys: [String]
    let connections: ClusterConnections
    let recorder: HistoryRecorder
    /// How long one attempt may take.
    static let attemptTimeout = Duration.seconds(2)
    /// How long one operation is retried before it is recorded as unknown.
    static let operationBudgetNanoseconds: UInt64 = 12_000_000_000
    /// What a replica that is down, electing or recovering answers; anything else is a bug.
    static let retryableCodes: Set<RPCError.Code> = [.unavailable, .deadlineExceeded, .cancelled, .unknown]

    func run(until stop: StopFlag) async -> LoadCounts {
        var counts = LoadCounts()
        var requestIDs = RequestIDGenerator()
        var lastSeen: [String: String] = [:]
        var preferred = Int.random(in: 0..<connections.connections.count)
        var serial = 0
        while !stop.isSet {
            serial += 1
            let key = keys.randomElement()!
            let value = "c\(lane)-\(serial)"
            let input: KVModel.Input
            switch Int.random(in: 0..<100) {
            case 0..<35: input = .put(key: key, value: value)
            case 35..<65: input = .get(key: key)
            case 65..<75: input = .delete(key: key)
            default:
                let expected = Bool.random() ? lastSeen[key] : nil
                input = .cas(key: key, expected: expected, new: value)
            }
            let requestID = input.isReadOnly ? nil : requestIDs.next()
            let call = monotonicNanoseconds()
            var output: KVModel.Output?
            var attempt = 0
            while output == nil, monotonicNanoseconds() - call < Self.operationBudgetNanoseconds {
                let connection = connections.connections[(preferred + attempt) % connections.connections.count]
                attempt += 1
                counts.attempts += 1
                do {
                    output = try await perform(input, on: connection, requestID: requestID)
                } catch {
                    counts.retries += 1
                    if let rpc = error as? RPCError, !Self.retryableCodes.contains(rpc.code) {
                        // Not a failure of the moment: retrying cannot help; the outcome stays unknown.
                        counts.unexpectedErrors.append("lane \(lane) \(input) via \(connection.endpoint): \(describe(error))")
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 20...80)))
                }
            }
            if attempt > 1 { preferred = (preferred + attempt - 1) % connections.connections.count }
            let returned = output == nil ? nil : monotonicNanoseconds()
            recorder.record(KVOperation(clientID: lane, input: input, call: call, returned: returned, output: output))
            if output == nil { counts.unknown += 1 } else { counts.acknowledged += 1 }
            switch (input, output) {
            case (.put(_, let written), .putOK?), (.cas(_, _, let written), .cas(succeeded: true)?):
                lastSeen[key] = written
            case (.get, .value(let read)?):
                lastSeen[key] = read
            case (.delete, .deleted?):
                lastSeen[key] = nil
            default:
                break
            }
        }
        return counts
    }

    func perform(_ input: KVModel.Input, on connection: ReplicaConnection, requestID: String?) async throws
        -> KVModel.Output
    {
        let timeout = Self.attemptTimeout
        switch input {
        case .put(let key, let value):
            _ = try await connection.put(key, value, requestID: requestID, timeout: timeout)
            return .putOK
        case .get(let key):
            return .value(try await connection.value(key, timeout: timeout))
        case .delete(let key):
            let response = try await connection.delete(key, requestID: requestID, timeout: timeout)
            return .deleted(response.deleted > 0)
        case .cas(let key, let expected, let new):
            let response = try await connection.compareAndSwap(
                key, expected: expected, new: new, requestID: requestID, timeout: timeout)
            return .cas(succeeded: response.succeeded)
        }
    }
}

extension SynodProcessTests {
    @Test(
        "kill -9 of minorities, then of all five replicas, with restarts: no acknowledged write is lost and the history is linearizable",
        .timeLimit(.minutes(10)))
    func killAndRestart() async throws {
        let replicaCount = 5
        let lanes = 5
        let keys = ["k0", "k1", "k2", "k3"]
        // Frequent snapshots (every 150 slots, however the store grows), so that restarts
        // recover from snapshot + log and replicas that fall behind a compacted log catch up
        // by snapshot transfer.
        try await LocalCluster.with(
            name: "kill-restart", replicas: replicaCount,
            extraArguments: ["--snapshot-every", "150", "--snapshot-log-share", "0"]
        ) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                let started = ContinuousClock.now
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting \(replicaCount) replicas")
                    return
                }
                let recorder = HistoryRecorder()
                let stop = StopFlag()
                let counts = await withTaskGroup(of: LoadCounts.self, returning: LoadCounts.self) { group in
                    for lane in 1...lanes {
                        let worker = ClientLane(lane: lane, keys: keys, connections: connections, recorder: recorder)
                        group.addTask { await worker.run(until: stop) }
                    }
                    await Self.killRestartSchedule(cluster, connections: connections)
                    stop.set()
                    var total = LoadCounts()
                    for await counts in group { total.add(counts) }
                    return total
                }
                print("kill-restart: load done after \(ContinuousClock.now - started): \(counts)")
                for error in counts.unexpectedErrors.prefix(10) {
                    cluster.fail("unexpected error: \(error)")
                }
                for replica in cluster.replicas where !replica.isRunning {
                    cluster.fail("r\(replica.id) is not running at the end (\(replica.terminationDescription ?? "?"))")
                }
                cluster.expect(counts.acknowledged > 100, "only \(counts.acknowledged) operations were acknowledged")

                // Final linearizable reads join the history: every acknowledged write must
                // show through them.
                var history = recorder.history
                print("kill-restart: history: \(Self.tally(history))")
                guard let finalValues = await Self.finalReads(keys: keys, into: &history, connections: connections, cluster: cluster)
                else { return }
                Self.checkLastWritesVisible(history: history, finalValues: finalValues, cluster: cluster)
                Self.checkLinearizable(history: history, cluster: cluster)
                await Self.checkReplicasConverge(
                    connections: connections, keys: keys, expected: finalValues, cluster: cluster)
                print("kill-restart: finished after \(ContinuousClock.now - started)")
            }
        }
    }

    /// One linearizable read of each key after the load (any replica that answers), added
    /// to the history: every acknowledged write must show through them. Nil (and the
    /// cluster failed) if some key could not be read within 20 s.
    static func finalReads(
        keys: [String], into history: inout [KVOperation], connections: ClusterConnections, cluster: LocalCluster
    ) async -> [String: String?]? {
        var finalValues: [String: String?] = [:]
        for key in keys {
            let call = monotonicNanoseconds()
            var value: String??
            _ = await eventually(timeout: .seconds(20), interval: .milliseconds(200)) {
                for connection in connections.connections {
                    do {
                        value = .some(try await connection.value(key, timeout: .seconds(2)))
                        return true
                    } catch {
                        continue
                    }
                }
                return false
            }
            guard let value else {
                cluster.fail("no linearizable read of \(key) succeeded within 20 s after the load")
                return nil
            }
            finalValues[key] = value
            history.append(
                KVOperation(
                    clientID: 0, input: .get(key: key), call: call, returned: monotonicNanoseconds(), output: .value(value)))
        }
        return finalValues
    }

    /// What the history holds, by kind and outcome.
    static func tally(_ history: [KVOperation]) -> String {
        var counts: [String: Int] = [:]
        for operation in history {
            let kind: String
            switch (operation.input, operation.output) {
            case (_, nil): kind = "unknown"
            case (.put, _): kind = "put"
            case (.get, .value(nil)?): kind = "get of an absent key"
            case (.get, _): kind = "get"
            case (.delete, .deleted(true)?): kind = "delete"
            case (.delete, _): kind = "delete of an absent key"
            case (.cas, .cas(succeeded: true)?): kind = "cas succeeded"
            case (.cas, _): kind = "cas failed"
            }
            counts[kind, default: 0] += 1
        }
        return counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }

    /// Minority kills with restarts on the same data directory, then all five at once.
    static func killRestartSchedule(_ cluster: LocalCluster, connections: ClusterConnections) async {
        let count = cluster.replicas.count
        try? await Task.sleep(for: .seconds(1))
        for round in 1...6 {
            try? await Task.sleep(for: .milliseconds(Int.random(in: 1_000...2_000)))
            // A minority: one replica, sometimes two; in some rounds the leader among them.
            var victims = Array((1...count).shuffled().prefix(round % 3 == 0 ? 2 : 1))
            if round % 2 == 0, let leader = await currentLeader(connections), !victims.contains(leader) {
                victims[0] = leader
            }
            for id in victims { await cluster.replica(id).kill9() }
            print("kill-restart: round \(round): killed \(victims.map { "r\($0)" }.joined(separator: ", ")) at \(Date())")
            try? await Task.sleep(for: .milliseconds(Int.random(in: 500...1_000)))
            for id in victims {
                do { try cluster.replica(id).start() } catch { cluster.fail("cannot restart r\(id): \(error)") }
            }
        }
        try? await Task.sleep(for: .seconds(2))
        await cluster.killAll()
        print("kill-restart: killed all \(count) replicas")
        try? await Task.sleep(for: .milliseconds(500))
        do { try cluster.startAll() } catch { cluster.fail("cannot restart the cluster: \(error)") }
        // Load continues a little after the whole-cluster restart.
        try? await Task.sleep(for: .seconds(6))
    }

    /// The leader named by the first replica that answers Status, if any.
    static func currentLeader(_ connections: ClusterConnections) async -> Int? {
        for connection in connections.connections {
            if let status = try? await connection.status(timeout: .milliseconds(300)), status.leader != 0 {
                return Int(status.leader)
            }
        }
        return nil
    }

    /// Where a put (or successful CAS) was acknowledged and every other write to its key had
    /// returned before it was called, its value must be the final value.
    static func checkLastWritesVisible(history: [KVOperation], finalValues: [String: String?], cluster: LocalCluster) {
        var checked = 0
        for (key, final) in finalValues {
            let writes = history.filter { operation in
                guard operation.input.key == key else { return false }
                switch (operation.input, operation.output) {
                case (.get, _), (.cas, .cas(succeeded: false)?): return false
                default: return true
                }
            }
            for write in writes {
                let written: String
                switch (write.input, write.output) {
                case (.put(_, let value), .putOK?), (.cas(_, _, let value), .cas(succeeded: true)?): written = value
                default: continue
                }
                let isLast = writes.allSatisfy { other in
                    other.clientID == write.clientID && other.call == write.call
                        || (other.returned.map { $0 < write.call } ?? false)
                }
                guard isLast else { continue }
                checked += 1
                cluster.expect(
                    final == written,
                    "acknowledged write of \(key) = \"\(written)\" (the last write to it) is lost: the final value is \(final.map { "\"\($0)\"" } ?? "absent")"
                )
            }
        }
        print("kill-restart: \(checked) keys had an unambiguous last acknowledged write; all checked")
    }

    static func checkLinearizable(history: [KVOperation], cluster: LocalCluster) {
        let start = ContinuousClock.now
        var budget = 2_000_000
        var result = checkLinearizability(model: KVModel(), history: history, stepBudget: budget)
        while case .unknown = result, budget < 200_000_000 {
            budget *= 10
            result = checkLinearizability(model: KVModel(), history: history, stepBudget: budget)
        }
        let observed = history.filter(\.isObserved).count
        print(
            "kill-restart: linearizability of \(history.count) operations (\(observed) observed): \(result.isOK ? "ok" : result.isIllegal ? "ILLEGAL" : "unknown") with step budget \(budget), \(ContinuousClock.now - start)"
        )
        switch result {
        case .ok:
            break
        case .illegal(let violation):
            cluster.fail("the history is not linearizable:\n\(violation)")
        case .unknown:
            cluster.fail("the linearizability check gave no verdict within a step budget of \(budget)")
        }
    }

    /// Serializable reads on every replica must come to agree with the final values.
    static func checkReplicasConverge(
        connections: ClusterConnections, keys: [String], expected: [String: String?], cluster: LocalCluster
    ) async {
        let started = ContinuousClock.now
        let disagreements = await connections.awaitAgreement(on: expected, timeout: .seconds(20))
        print("kill-restart: replicas converged: \(disagreements.isEmpty) after \(ContinuousClock.now - started)")
        cluster.expect(
            disagreements.isEmpty,
            "replicas did not converge within 20 s (serializable reads):\n" + disagreements.joined(separator: "\n"))
    }
}
