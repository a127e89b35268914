import ArgumentParser
import EtcdAPI
import Foundation
import Histogram
import KVStore
import NIOConcurrencyHelpers
import NIOCore
import Paxos
import SwiftProtobuf
import Synchronization
import SynodClient
import UnaryGRPC

/// What `synod bench` sends.
enum BenchWorkloadKind: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// `KV.Put` of a random key.
    case put
    /// Linearizable `KV.Range` of one random (pre-populated) key.
    case get
    /// Serializable (local) `KV.Range` of one random key.
    case getSerializable = "get-serializable"
    /// `--read-fraction` linearizable gets, the rest puts.
    case mixed
    /// Compare-and-swap: `txn(mod(k) == last seen) put k v else get k`, each in-flight slot on its
    /// own share of the keys, so conflicts are rare and a conflict refreshes the revision.
    case txnCAS = "txn-cas"

    var needsPrepopulation: Bool {
        switch self {
        case .get, .getSerializable, .mixed: return true
        case .put, .txnCAS: return false
        }
    }
}

/// The immutable inputs every slot shares: keys, the value, the connections.
struct BenchPlan: Sendable {
    var workload: BenchWorkloadKind
    /// Every key of the key space, `b000…0<index>` padded to the key size.
    var keys: [Data]
    var value: Data
    /// Slot `i` uses connection `i % count` for all its requests, unless `roundRobin`.
    var connections: [UnaryClientConnection]
    /// Each slot sends each request on the next connection, as grpc-go's round_robin balancer
    /// (clientv3's) picks an endpoint per call: one request in flight visits every endpoint.
    var roundRobin = false
    var readFraction: Double
    /// Deadline of one request.
    var timeout: Duration
    /// Requests started after warmup, at most (`Int.max`: no limit).
    var requestsMax: Int
    /// `BenchClock.nanoseconds()` at which warmup ends and measurement starts.
    var measureStartNanoseconds: UInt64
    /// … and at which no further request starts.
    var stopNanoseconds: UInt64
    var concurrency: Int
    /// Slot `i` writes as client `clientIDBase &+ i` (one write in flight per client ID).
    var clientIDBase: UInt64
    /// Metadata every request carries: the auth token with `--user`.
    var metadata: [(String, String)] = []
    /// `--watchers`: told when each measured put was answered.
    var watchers: BenchWatchers? = nil

    static func makeKeys(count: Int, sizeBytes: Int) -> [Data] {
        (0..<count).map { index in
            let digits = String(index)
            let padding = String(repeating: "0", count: max(0, sizeBytes - 1 - digits.count))
            return Data(("b" + padding + digits).utf8)
        }
    }
}

/// Counters the progress bar reads while the slots run.
final class BenchCounters: Sendable {
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    /// Tickets handed out to requests started after warmup; bounded by `--requests`.
    let tickets = Atomic<Int>(0)
}

/// What one in-flight slot measured; merged into the report.
struct BenchSlotResult: Sendable {
    var latencyMicroseconds = Histogram<UInt64>(
        lowestDiscernibleValue: 1,
        highestTrackableValue: BenchLimits.latencyMicrosecondsMax,
        numberOfSignificantValueDigits: .three
    )
    var succeeded = 0
    var warmupSucceeded = 0
    var errorsByCode: [String: Int] = [:]
    /// The first error message seen per code, to tell what went wrong.
    var errorExamples: [String: String] = [:]
    var casConflicts = 0
    /// When this slot's last measured request finished.
    var lastFinishNanoseconds: UInt64 = 0

    mutating func merge(_ other: BenchSlotResult) {
        latencyMicroseconds.add(other.latencyMicroseconds)
        succeeded += other.succeeded
        warmupSucceeded += other.warmupSucceeded
        for (code, count) in other.errorsByCode { errorsByCode[code, default: 0] += count }
        for (code, message) in other.errorExamples where errorExamples[code] == nil { errorExamples[code] = message }
        casConflicts += other.casConflicts
        lastFinishNanoseconds = max(lastFinishNanoseconds, other.lastFinishNanoseconds)
    }
}

enum BenchLimits {
    /// Latencies above this (60 s) are clamped; a request never waits longer than `--timeout`.
    static let latencyMicrosecondsMax: UInt64 = 60_000_000
    static let keysMax = 1_000_000
    static let concurrencyMax = 4096
    static let connectionsMax = 64
    static let valueSizeBytesMax = 1 << 20
    static let keySizeBytesMax = 1024
    static let durationMax: Duration = .seconds(3600)
    /// Puts per pre-population txn: etcd's and Synod's default `--max-txn-ops`.
    static let prepopulateBatchMax = 128
    static let watchersMax = 10_000
}

/// A small fast PRNG per slot (the core's SplitMix64): the system generator is a syscall away.
extension SplitMix64 {

    /// Uniform in `0..<bound` (Lemire's multiply-shift; the bias is negligible for a benchmark).
    mutating func next(below bound: Int) -> Int {
        Int((UInt128(next()) * UInt128(bound)) >> 64)
    }
}

enum BenchClock {
    /// CLOCK_MONOTONIC in nanoseconds: one vDSO call, no allocation.
    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// The etcd v3 methods the load generator calls.
enum EtcdPath {
    static let range = "/etcdserverpb.KV/Range"
    static let put = "/etcdserverpb.KV/Put"
    static let txn = "/etcdserverpb.KV/Txn"
}

/// One in-flight slot: issues its next request from the completion of the previous one, on
/// its connection's event loop, until the stop time or the request budget. No task and no
/// thread hop per request: the client's CPU is CPU the measured servers do not get. (With
/// `roundRobin` consecutive requests may complete on different event loops; they never
/// overlap, and each hand-over goes through the loop's task queue.)
final class BenchSlot: @unchecked Sendable {
    // Touched by one request's completion at a time (see above).
    let plan: BenchPlan
    let index: Int
    let counters: BenchCounters
    /// The connection of the request in flight (the next one per request with `roundRobin`).
    var connection: UnaryClientConnection
    var connectionIndex: Int
    let done: @Sendable (BenchSlotResult) -> Void
    var random: SplitMix64
    var result = BenchSlotResult()
    /// `<clientID hex>-`, the fixed half of this slot's `synod-request-id`.
    let requestIDPrefix: String
    var nextSequence: UInt64 = 1
    /// txn-cas: the mod revision this slot last saw per key index (0: absent).
    var modRevisions: [Int: Int64] = [:]
    let put: Etcdserverpb_PutRequest
    let range: Etcdserverpb_RangeRequest
    /// The request in flight: when it started, whether it counts, its CAS key.
    var startNanoseconds: UInt64 = 0
    var measured = false
    var casKeyIndex: Int?
    /// The request in flight is a put (its answer's revision goes to `plan.watchers`).
    var sentPut = false
    /// After a failure the next request waits this long, so a dead connection does not spin.
    static let retryDelay = TimeAmount.milliseconds(5)

    init(plan: BenchPlan, index: Int, counters: BenchCounters, done: @escaping @Sendable (BenchSlotResult) -> Void) {
        self.plan = plan
        self.index = index
        self.counters = counters
        self.done = done
        connectionIndex = index % plan.connections.count
        connection = plan.connections[connectionIndex]
        random = SplitMix64(seed: plan.clientIDBase &+ UInt64(index) &* 0x2545_F491_4F6C_DD1D)
        var clientID = plan.clientIDBase &+ UInt64(index)
        if clientID == 0 { clientID = 1 }
        requestIDPrefix = SynodRequestID(clientID: clientID, sequence: 1).description.dropLast(1).description
        var put = Etcdserverpb_PutRequest()
        put.value = plan.value
        self.put = put
        var range = Etcdserverpb_RangeRequest()
        range.serializable = plan.workload == .getSerializable
        self.range = range
    }

    func start() {
        connection.eventLoop.execute { self.issueNext() }
    }

    private func issueNext() {
        let now = BenchClock.nanoseconds()
        if now >= plan.stopNanoseconds { return done(result) }
        measured = now >= plan.measureStartNanoseconds
        if measured && plan.requestsMax != Int.max {
            let ticket = counters.tickets.add(1, ordering: .relaxed).newValue
            if ticket > plan.requestsMax { return done(result) }
        }
        if plan.roundRobin {
            connectionIndex = (connectionIndex + 1) % plan.connections.count
            connection = plan.connections[connectionIndex]
        }
        startNanoseconds = now
        casKeyIndex = nil
        sentPut = false
        let keyIndex = random.next(below: plan.keys.count)
        switch plan.workload {
        case .put:
            sendPut(keyIndex: keyIndex)
        case .get, .getSerializable:
            sendGet(keyIndex: keyIndex)
        case .mixed:
            if Double(random.next() >> 11) * 0x1p-53 < plan.readFraction {
                sendGet(keyIndex: keyIndex)
            } else {
                sendPut(keyIndex: keyIndex)
            }
        case .txnCAS:
            sendCompareAndSwap()
        }
    }

    private func send(_ path: String, _ message: some SwiftProtobuf.Message, write: Bool) {
        let bytes: [UInt8]
        do {
            bytes = try message.serializedBytes()
        } catch {
            return completed(.failure(GRPCStatus(code: GRPCStatus.internalError, message: "cannot encode: \(error)")))
        }
        var metadata = plan.metadata
        if write {
            metadata.append((SynodRequestID.metadataKey, requestIDPrefix + String(nextSequence)))
            nextSequence += 1
        }
        connection.call(path: path, message: bytes, metadata: metadata, timeout: plan.timeout) { response in
            self.completed(response)
        }
    }

    private func completed(_ response: Result<[UInt8], GRPCStatus>) {
        let finish = BenchClock.nanoseconds()
        switch response {
        case .failure(let status):
            counters.failed.add(1, ordering: .relaxed)
            if measured {
                result.errorsByCode[status.codeName, default: 0] += 1
                if result.errorExamples[status.codeName] == nil { result.errorExamples[status.codeName] = status.message }
            }
            // Never recurse from a failure: a closed connection fails calls at once.
            connection.eventLoop.scheduleTask(in: Self.retryDelay) { self.issueNext() }
            return
        case .success(let bytes):
            if let keyIndex = casKeyIndex { noteCompareAndSwap(bytes, keyIndex: keyIndex) }
            if sentPut, measured, let watchers = plan.watchers,
                let response = try? Etcdserverpb_PutResponse(serializedBytes: bytes)
            {
                watchers.noteAnswer(revision: response.header.revision, at: finish)
            }
        }
        counters.completed.add(1, ordering: .relaxed)
        if measured {
            result.succeeded += 1
            _ = result.latencyMicroseconds.record(
                min((finish - startNanoseconds) / 1000, BenchLimits.latencyMicrosecondsMax))
            result.lastFinishNanoseconds = finish
        } else {
            result.warmupSucceeded += 1
        }
        issueNext()
    }

    private func sendPut(keyIndex: Int) {
        var request = put
        request.key = plan.keys[keyIndex]
        sentPut = true
        send(EtcdPath.put, request, write: true)
    }

    private func sendGet(keyIndex: Int) {
        var request = range
        request.key = plan.keys[keyIndex]
        send(EtcdPath.range, request, write: false)
    }

    /// The slot's keys are those with `index % concurrency == slot`, so slots rarely conflict.
    private func sendCompareAndSwap() {
        let share = max(1, (plan.keys.count - index + plan.concurrency - 1) / plan.concurrency)
        var keyIndex = index + random.next(below: share) * plan.concurrency
        if keyIndex >= plan.keys.count { keyIndex = index % plan.keys.count }
        let key = plan.keys[keyIndex]
        var compare = Etcdserverpb_Compare()
        compare.key = key
        compare.target = .mod
        compare.result = .equal
        compare.targetUnion = .modRevision(modRevisions[keyIndex] ?? 0)
        var success = Etcdserverpb_RequestOp()
        var put = self.put
        put.key = key
        success.request = .requestPut(put)
        var failure = Etcdserverpb_RequestOp()
        var range = Etcdserverpb_RangeRequest()
        range.key = key
        failure.request = .requestRange(range)
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [compare]
        txn.success = [success]
        txn.failure = [failure]
        casKeyIndex = keyIndex
        send(EtcdPath.txn, txn, write: true)
    }

    private func noteCompareAndSwap(_ bytes: [UInt8], keyIndex: Int) {
        guard let response = try? Etcdserverpb_TxnResponse(serializedBytes: bytes) else { return }
        if response.succeeded {
            modRevisions[keyIndex] = response.header.revision
        } else {
            result.casConflicts += 1
            if case .responseRange(let current)? = response.responses.first?.response {
                modRevisions[keyIndex] = current.kvs.first?.modRevision ?? 0
            }
        }
    }
}

/// Runs every slot to its end and merges what they measured.
enum BenchSlots {
    static func run(plan: BenchPlan, counters: BenchCounters) async -> BenchSlotResult {
        await withCheckedContinuation { continuation in
            let collector = NIOLockedValueBox((merged: BenchSlotResult(), remaining: plan.concurrency))
            for index in 0..<plan.concurrency {
                BenchSlot(plan: plan, index: index, counters: counters) { result in
                    let finished: BenchSlotResult? = collector.withLockedValue { state in
                        state.merged.merge(result)
                        state.remaining -= 1
                        return state.remaining == 0 ? state.merged : nil
                    }
                    if let finished { continuation.resume(returning: finished) }
                }.start()
            }
        }
    }
}

/// Writes keys `0..<count` in txns of up to 128 puts, a few in flight, before a read workload.
enum BenchPrepopulation {
    static func run(plan: BenchPlan, count: Int, inFlightMax: Int = 8) async throws {
        let batches = stride(from: 0, to: count, by: BenchLimits.prepopulateBatchMax).map { start in
            start..<min(count, start + BenchLimits.prepopulateBatchMax)
        }
        let next = BenchCounters()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<min(inFlightMax, batches.count) {
                group.addTask {
                    let connection = plan.connections[worker % plan.connections.count]
                    while true {
                        let batchIndex = next.tickets.add(1, ordering: .relaxed).oldValue
                        guard batchIndex < batches.count else { return }
                        var txn = Etcdserverpb_TxnRequest()
                        txn.success = batches[batchIndex].map { keyIndex in
                            var put = Etcdserverpb_PutRequest()
                            put.key = plan.keys[keyIndex]
                            put.value = plan.value
                            var operation = Etcdserverpb_RequestOp()
                            operation.request = .requestPut(put)
                            return operation
                        }
                        try await sendWithRetries(
                            try txn.serializedBytes(), on: connection, timeout: plan.timeout, metadata: plan.metadata)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Bound on attempts per batch: its puts are idempotent, so transient errors
    /// (`unavailable`, e.g. a stream reset) are retried.
    static let attemptsMax = 5

    private static func sendWithRetries(
        _ txn: [UInt8], on connection: UnaryClientConnection, timeout: Duration, metadata: [(String, String)]
    ) async throws {
        var attempt = 1
        while true {
            do {
                _ = try await connection.call(path: EtcdPath.txn, message: txn, metadata: metadata, timeout: timeout)
                return
            } catch let error as GRPCStatus where error.code == GRPCStatus.unavailable && attempt < attemptsMax {
                attempt += 1
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }
}
