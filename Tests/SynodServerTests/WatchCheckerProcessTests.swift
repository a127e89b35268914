import EtcdAPI
import Foundation
import GRPCCore
import Linearizability
import Paxos
import Synchronization
import Testing

@testable import SynodServer

/// The watch checker against real processes: watchers on every replica, writes (puts,
/// deletes and two-key txns) through all of them, replicas killed with SIGKILL and restarted;
/// each watcher resumes from its last delivered revision + 1 (on the next replica when its
/// own is down) and asks for progress now and then. The reference is built independently
/// of the watch code, from historical range reads at every revision, and every watcher is
/// checked against it (`WatchChecker`): ordered, unique, no gaps, atomic revisions, exact
/// events, progress never ahead of delivery, and every acknowledged write present.
extension SynodProcessTests {
    @Test("watch checker: watchers resume across kill -9 and restarts; 0 violations", .timeLimit(.minutes(10)))
    func watchCheckerWithKills() async throws {
        let seed = UInt64.random(in: 1...1_000_000)
        var random = SplitMix64(seed: seed)
        try await LocalCluster.with(name: "watch-checker", replicas: 3) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting 3 replicas (seed \(seed))")
                    return
                }
                let acknowledged = AcknowledgedEvents()
                let start = try await WatchLoad.putRetrying("wc/start", "0", connections: connections)
                acknowledged.append([WatchLoad.put("wc/start", "0", start)])
                let lanes = (0..<WatchLoad.watchers).map { WatchLane(name: "w\($0)", startRevision: start) }
                let stop = StopFlag()
                let watcherTasks = lanes.enumerated().map { index, lane in
                    Task { await lane.run(connections: connections, firstReplica: index % 3, until: stop) }
                }
                let writerSeeds = (0..<WatchLoad.writers).map { _ in random.next() }
                let writerTasks = writerSeeds.enumerated().map { lane, writerSeed in
                    Task {
                        await WatchLoad.write(
                            lane: lane, seed: writerSeed, connections: connections, acknowledged: acknowledged)
                    }
                }
                // One replica at a time: SIGKILL, down for a while, restarted.
                for _ in 0..<WatchLoad.kills {
                    try await Task.sleep(for: .milliseconds(1_500 + Int(random.next() % 1_000)))
                    let victim = cluster.replica(1 + Int(random.next() % 3))
                    await victim.kill9()
                    try await Task.sleep(for: .milliseconds(600 + Int(random.next() % 900)))
                    do { try victim.start() } catch { cluster.fail("cannot restart r\(victim.id): \(error)") }
                }
                var writes = 0
                for task in writerTasks { writes += await task.value }
                let end = try await WatchLoad.putRetrying("wc/end", "0", connections: connections)
                acknowledged.append([WatchLoad.put("wc/end", "0", end)])
                let caughtUp = await eventually(timeout: .seconds(45), interval: .milliseconds(100)) {
                    lanes.allSatisfy { $0.lastDelivered >= end }
                }
                stop.set()
                for task in watcherTasks { await task.value }
                cluster.expect(
                    caughtUp,
                    "watchers did not reach revision \(end) (seed \(seed)): "
                        + lanes.map { "\($0.name)@\($0.lastDelivered)" }.joined(separator: " "))

                // The reference, from historical reads (not from the watch code).
                let reference = try await WatchLoad.reference(from: start, through: end, connections: connections)
                let checker = WatchChecker(reference: reference)
                var violations = checker.checkAcknowledged(acknowledged.all)
                for lane in lanes {
                    violations += checker.check(
                        watcher: lane.name, startRevision: start, items: lane.items, finalRevision: end)
                }
                let resumes = lanes.map { lane in lane.items.filter { if case .opened = $0 { true } else { false } }.count - 1 }
                let progress = lanes.map { lane in lane.items.filter { if case .progress = $0 { true } else { false } }.count }
                print(
                    "watch checker (seed \(seed)): \(writes) writes acknowledged, revisions \(start)…\(end), "
                        + "\(reference.count) revisions in range, resumes per watcher \(resumes), progress "
                        + "notifications \(progress), \(violations.count) violations")
                cluster.expect(
                    violations.isEmpty,
                    "watch checker (seed \(seed)) found:\n" + violations.prefix(20).joined(separator: "\n"))
                cluster.expect(resumes.reduce(0, +) > 0, "no watcher ever resumed: the kills tested nothing (seed \(seed))")
            }
        }
    }
}

/// The acknowledged writes' events, from every writer lane.
final class AcknowledgedEvents: Sendable {
    private let events = Mutex<[WatchChecker.Event]>([])
    func append(_ more: [WatchChecker.Event]) { events.withLock { $0 += more } }
    var all: [WatchChecker.Event] { events.withLock { $0 } }
}

enum WatchLoad {
    static let watchers = 4
    static let writers = 3
    static let kills = 4
    /// Writes per writer lane, at most (bounded in count and in time).
    static let writesPerLaneMax = 600
    static let loadNanoseconds: UInt64 = 14_000_000_000
    /// A pause between two writes of a lane, so the load spans the kills.
    static let writePause = Duration.milliseconds(15)
    static let keys = (0..<6).map { "wc/k\($0)" }
    static let prefix = "wc/"
    static let prefixEnd = "wc0"

    static func put(_ key: String, _ value: String, _ revision: Int64) -> WatchChecker.Event {
        WatchChecker.Event(revision: revision, isDelete: false, key: Array(key.utf8), value: Array(value.utf8))
    }

    /// A put retried on every replica with one request id until it is acknowledged (bounded).
    static func putRetrying(_ key: String, _ value: String, connections: ClusterConnections) async throws -> Int64 {
        var ids = RequestIDGenerator()
        let id = ids.next()
        for attempt in 0..<200 {
            let connection = connections.connections[attempt % connections.connections.count]
            if let response = try? await connection.put(key, value, requestID: id) { return response.header.revision }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ProcessTestError("put \(key) was never acknowledged")
    }

    /// One writer lane: puts, deletes and two-key txns through every replica, each retried
    /// with its request id (exactly-once) until acknowledged or its budget runs out; records
    /// the acknowledged ones' events at their revisions. Returns how many were acknowledged.
    static func write(
        lane: Int, seed: UInt64, connections: ClusterConnections, acknowledged: AcknowledgedEvents
    ) async -> Int {
        var random = SplitMix64(seed: seed)
        var ids = RequestIDGenerator()
        let began = monotonicNanoseconds()
        var count = 0
        for serial in 0..<writesPerLaneMax where monotonicNanoseconds() - began < loadNanoseconds {
            let id = ids.next()
            let value = "l\(lane)-\(serial)"
            let key = keys[Int(random.next() % UInt64(keys.count))]
            let other = keys[(keys.firstIndex(of: key)! + 1 + Int(random.next() % UInt64(keys.count - 1))) % keys.count]
            let choice = random.next() % 100
            var preferred = Int(random.next() % 3)
            let budget = monotonicNanoseconds()
            while monotonicNanoseconds() - budget < 10_000_000_000 {
                let connection = connections.connections[preferred % 3]
                do {
                    var events: [WatchChecker.Event] = []
                    if choice < 60 {
                        let revision = try await connection.put(key, value, requestID: id).header.revision
                        events = [put(key, value, revision)]
                    } else if choice < 75 {
                        let response = try await connection.delete(key, requestID: id)
                        if response.deleted > 0 {
                            events = [WatchChecker.Event(revision: response.header.revision, isDelete: true, key: Array(key.utf8), value: [])]
                        }
                    } else {
                        let revision = try await twoPuts(key, other, value, id: id, on: connection)
                        events = [put(key, value, revision), put(other, value, revision)]
                    }
                    acknowledged.append(events)
                    count += 1
                    try? await Task.sleep(for: writePause)
                    break
                } catch {
                    preferred += 1
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
        }
        return count
    }

    /// A txn without compares putting two keys: both events share one revision.
    static func twoPuts(_ first: String, _ second: String, _ value: String, id: String, on connection: ReplicaConnection)
        async throws -> Int64
    {
        var request = Etcdserverpb_TxnRequest()
        request.success = [first, second].map { key in
            var put = Etcdserverpb_PutRequest()
            put.key = Data(key.utf8)
            put.value = Data(value.utf8)
            var op = Etcdserverpb_RequestOp()
            op.request = .requestPut(put)
            return op
        }
        let response = try await connection.kv.txn(
            request, metadata: ReplicaConnection.metadata(requestID: id), options: ReplicaConnection.options(timeout: .seconds(2)))
        return response.header.revision
    }

    /// Each revision's changes under the prefix, from linearizable range reads of the prefix
    /// at every revision `start - 1 … end` (MVCC reads, not the watch path).
    static func reference(from start: Int64, through end: Int64, connections: ClusterConnections) async throws
        -> [Int64: [WatchChecker.Event]]
    {
        var states: [Int64: [[UInt8]: (value: [UInt8], modRevision: Int64)]] = [:]
        for revision in (start - 1)...end {
            var request = Etcdserverpb_RangeRequest()
            request.key = Data(prefix.utf8)
            request.rangeEnd = Data(prefixEnd.utf8)
            request.revision = revision
            var response: Etcdserverpb_RangeResponse?
            for attempt in 0..<50 where response == nil {
                response = try? await connections.connections[attempt % 3].kv.range(
                    request, options: ReplicaConnection.options(timeout: .seconds(2)))
            }
            guard let response else { throw ProcessTestError("range of \(prefix) at revision \(revision) never answered") }
            var state: [[UInt8]: (value: [UInt8], modRevision: Int64)] = [:]
            for kv in response.kvs { state[Array(kv.key)] = (Array(kv.value), kv.modRevision) }
            states[revision] = state
        }
        return WatchChecker.reference(fromStates: states, first: start, last: end)
    }
}

/// One logical watcher of the prefix: a raw Watch stream on one replica at a time, resumed
/// from its last delivered revision + 1 on the next replica whenever the stream ends.
final class WatchLane: Sendable {
    let name: String
    let startRevision: Int64
    private let state: Mutex<(items: [WatchChecker.Item], lastDelivered: Int64)>

    init(name: String, startRevision: Int64) {
        self.name = name
        self.startRevision = startRevision
        state = Mutex(([], startRevision - 1))
    }

    var items: [WatchChecker.Item] { state.withLock { $0.items } }
    var lastDelivered: Int64 { state.withLock { $0.lastDelivered } }

    /// How often a stream asks for a progress notification.
    static let progressEvery = Duration.milliseconds(250)

    func run(connections: ClusterConnections, firstReplica: Int, until stop: StopFlag) async {
        var replica = firstReplica
        while !stop.isSet {
            let from = state.withLock { state in
                state.items.append(.opened(startRevision: state.lastDelivered + 1))
                return state.lastDelivered + 1
            }
            await stream(on: connections.connections[replica % 3], from: from, until: stop)
            replica += 1
            if !stop.isSet { try? await Task.sleep(for: .milliseconds(100)) }
        }
    }

    /// One stream, until it fails or `stop` is set.
    private func stream(on connection: ReplicaConnection, from: Int64, until stop: StopFlag) async {
        let (outbound, requests) = AsyncStream.makeStream(of: [UInt8].self)
        requests.yield(WatchRequestCoding.create(key: WatchLoad.prefix, rangeEnd: WatchLoad.prefixEnd, start: from))
        let ended = StopFlag()
        let call = Task {
            defer { ended.set() }
            try await connection.grpc.bidirectionalStreaming(
                request: StreamingClientRequest(of: [UInt8].self) { sink in
                    for await request in outbound { try await sink.write(request) }
                },
                descriptor: MethodDescriptor(fullyQualifiedService: "etcdserverpb.Watch", method: "Watch"),
                serializer: RawBytesSerializer(), deserializer: RawBytesDeserializer(),
                options: ReplicaConnection.options(timeout: .seconds(3_600))
            ) { response in
                for try await message in response.messages {
                    try self.receive(message)
                }
            }
        }
        // Ask for progress now and then while the stream lives; stop on `stop` or its end.
        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.progressEvery)
                requests.yield(WatchRequestCoding.progress)
            }
        }
        while !stop.isSet {
            try? await Task.sleep(for: .milliseconds(50))
            if ended.isSet { break }
        }
        progress.cancel()
        requests.finish()
        call.cancel()
        _ = await call.result
    }

    private func receive(_ bytes: [UInt8]) throws {
        let response = try DecodedWatchResponse(bytes)
        if response.canceled {
            throw ProcessTestError("watch cancelled: \(response.cancelReason) (compact \(response.compactRevision))")
        }
        if response.created { return }
        state.withLock { state in
            if response.events.isEmpty {
                if response.watchID == -1 { state.items.append(.progress(revision: response.revision)) }
            } else {
                state.items.append(.events(response.checkerEvents))
                state.lastDelivered = max(state.lastDelivered, response.checkerEvents.last!.revision)
            }
        }
    }
}
