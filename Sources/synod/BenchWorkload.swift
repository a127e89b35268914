import ArgumentParser
import EtcdAPI
import Foundation
import GRPCCore
import Histogram
import KVStore
import Paxos
import Synchronization
import SynodClient

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
    var connections: [SynodConnection]
    var readFraction: Double
    var callOptions: CallOptions
    /// Requests started after warmup, at most (`Int.max`: no limit).
    var requestsMax: Int
    /// `BenchClock.nanoseconds()` at which warmup ends and measurement starts.
    var measureStartNanoseconds: UInt64
    /// … and at which no further request starts.
    var stopNanoseconds: UInt64
    var concurrency: Int
    /// Slot `i` writes as client `clientIDBase &+ i` (one write in flight per client ID).
    var clientIDBase: UInt64

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

/// One in-flight slot: issues its next request as soon as the previous one finished, until the
/// stop time or the request budget. One task per slot, not one per request.
struct BenchSlot {
    let plan: BenchPlan
    let index: Int
    let counters: BenchCounters
    var random: SplitMix64
    var result = BenchSlotResult()
    /// `<clientID hex>-`, the fixed half of this slot's `synod-request-id`.
    let requestIDPrefix: String
    var nextSequence: UInt64 = 1
    /// txn-cas: the mod revision this slot last saw per key index (0: absent).
    var modRevisions: [Int: Int64] = [:]
    let put: Etcdserverpb_PutRequest
    let range: Etcdserverpb_RangeRequest

    init(plan: BenchPlan, index: Int, counters: BenchCounters) {
        self.plan = plan
        self.index = index
        self.counters = counters
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

    mutating func run() async -> BenchSlotResult {
        var requestNumber = index
        while true {
            let start = BenchClock.nanoseconds()
            if start >= plan.stopNanoseconds { break }
            let measured = start >= plan.measureStartNanoseconds
            if measured && plan.requestsMax != Int.max {
                let ticket = counters.tickets.add(1, ordering: .relaxed).newValue
                if ticket > plan.requestsMax { break }
            }
            let connection = plan.connections[requestNumber % plan.connections.count]
            requestNumber += 1
            let failure = await issue(on: connection)
            let finish = BenchClock.nanoseconds()
            if let (code, message) = failure {
                counters.failed.add(1, ordering: .relaxed)
                if measured {
                    result.errorsByCode[code, default: 0] += 1
                    if result.errorExamples[code] == nil { result.errorExamples[code] = message }
                }
                continue
            }
            counters.completed.add(1, ordering: .relaxed)
            if measured {
                result.succeeded += 1
                _ = result.latencyMicroseconds.record(min((finish - start) / 1000, BenchLimits.latencyMicrosecondsMax))
                result.lastFinishNanoseconds = finish
            } else {
                result.warmupSucceeded += 1
            }
        }
        return result
    }

    /// Sends one request; nil on success, else the gRPC code's name and the message.
    private mutating func issue(on connection: SynodConnection) async -> (String, String)? {
        let keyIndex = random.next(below: plan.keys.count)
        do {
            switch plan.workload {
            case .put:
                try await sendPut(keyIndex: keyIndex, on: connection)
            case .get, .getSerializable:
                try await sendGet(keyIndex: keyIndex, on: connection)
            case .mixed:
                if Double(random.next() >> 11) * 0x1p-53 < plan.readFraction {
                    try await sendGet(keyIndex: keyIndex, on: connection)
                } else {
                    try await sendPut(keyIndex: keyIndex, on: connection)
                }
            case .txnCAS:
                try await sendCompareAndSwap(on: connection)
            }
            return nil
        } catch let error as RPCError {
            return ("\(error.code)", error.message)
        } catch {
            return ("client: \(type(of: error))", "\(error)")
        }
    }

    private mutating func nextRequestMetadata() -> Metadata {
        var metadata: Metadata = [:]
        metadata.addString(requestIDPrefix + String(nextSequence), forKey: SynodRequestID.metadataKey)
        nextSequence += 1
        return metadata
    }

    private mutating func sendPut(keyIndex: Int, on connection: SynodConnection) async throws {
        var request = put
        request.key = plan.keys[keyIndex]
        _ = try await connection.kv.put(request, metadata: nextRequestMetadata(), options: plan.callOptions)
    }

    private func sendGet(keyIndex: Int, on connection: SynodConnection) async throws {
        var request = range
        request.key = plan.keys[keyIndex]
        _ = try await connection.kv.range(request, options: plan.callOptions)
    }

    /// The slot's keys are those with `index % concurrency == slot`, so slots rarely conflict.
    private mutating func sendCompareAndSwap(on connection: SynodConnection) async throws {
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
        let response = try await connection.kv.txn(txn, metadata: nextRequestMetadata(), options: plan.callOptions)
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
                        try await sendWithRetries(txn, on: connection, options: plan.callOptions)
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
        _ txn: Etcdserverpb_TxnRequest,
        on connection: SynodConnection,
        options: CallOptions
    ) async throws {
        var attempt = 1
        while true {
            do {
                _ = try await connection.kv.txn(txn, options: options)
                return
            } catch let error as RPCError where error.code == .unavailable && attempt < attemptsMax {
                attempt += 1
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }
}
