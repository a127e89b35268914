import Foundation
import Histogram
import KVStore
import Synchronization
import SynodClient

/// `synod bench --watchers N`: N watch streams on the prefix the benchmark writes (every key
/// starts with "b"), spread round-robin over the endpoints (one connection per endpoint, the
/// streams multiplexed on it as etcd clients do), while the slots put. For every measured put
/// whose revision is a multiple of `sampleEvery`, the delay from the put's answer to its
/// event at each watcher: the time a change takes to reach watchers once the writer knows it
/// is durable. An event that arrives before its put's answer counts as 0 (and is counted).
final class BenchWatchers: Sendable {
    /// Revisions tracked: one in `sampleEvery`, so the bookkeeping stays small next to the
    /// streams' own cost at any throughput.
    static let sampleEvery: Int64 = 4
    /// Answer times kept, at most (about 16 MiB).
    static let answersMax = 1 << 20
    /// Events one watcher holds while their put's answer is still unknown, at most.
    static let pendingPerWatcherMax = 1 << 14

    struct Summary: Sendable {
        var watchers: Int
        var delayMicroseconds: Histogram<UInt64>
        var events: Int
        var beforeAnswer: Int
        var failures: [String]

        func percentile(_ value: Double) -> UInt64 {
            delayMicroseconds.totalCount == 0 ? 0 : delayMicroseconds.valueAtPercentile(value)
        }
    }

    let count: Int
    private let clients: [SynodClient]
    private let answers = Mutex<[Int64: UInt64]>([:])
    private let summary: Mutex<Summary>
    private let tasks = Mutex<[Task<Void, Never>]>([])

    init(count: Int, endpoints: [SynodEndpoint], options: SynodClientOptions) throws {
        self.count = count
        clients = try endpoints.map { try SynodClient(endpoints: [$0], options: options) }
        summary = Mutex(Summary(watchers: count, delayMicroseconds: Self.histogram(), events: 0, beforeAnswer: 0, failures: []))
    }

    static func histogram() -> Histogram<UInt64> {
        Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: BenchLimits.latencyMicrosecondsMax,
            numberOfSignificantValueDigits: .three)
    }

    /// Opens every watch (from now on).
    func start(prefix: [UInt8]) {
        for index in 0..<count {
            let client = clients[index % clients.count]
            let task = Task { await self.watch(client, prefix: prefix, index: index) }
            tasks.withLock { $0.append(task) }
        }
    }

    /// A measured put was answered at `nanoseconds` with header revision `revision`.
    func noteAnswer(revision: Int64, at nanoseconds: UInt64) {
        guard revision % Self.sampleEvery == 0 else { return }
        answers.withLock { answers in
            if answers.count < Self.answersMax { answers[revision] = nanoseconds }
        }
    }

    /// Stops every watch and returns what they measured.
    func finish() async -> Summary {
        let running = tasks.withLock { $0 }
        for task in running { task.cancel() }
        for task in running { await task.value }
        for client in clients { await client.close() }
        return summary.withLock { $0 }
    }

    private func watch(_ client: SynodClient, prefix: [UInt8], index: Int) async {
        var delays = Self.histogram()
        var pending: [Int64: UInt64] = [:]
        var lastRevision: Int64 = 0
        var events = 0
        var beforeAnswer = 0
        var failure: String?
        do {
            for try await event in client.watchPrefix(prefix) {
                let arrived = BenchClock.nanoseconds()
                let revision = event.kv.modRevision
                // A txn's events share a revision: count it once.
                guard revision != lastRevision else { continue }
                lastRevision = revision
                guard revision % Self.sampleEvery == 0 else { continue }
                if let answered = answers.withLock({ $0[revision] }) {
                    events += 1
                    if arrived >= answered {
                        _ = delays.record(min((arrived - answered) / 1_000, BenchLimits.latencyMicrosecondsMax))
                    } else {
                        beforeAnswer += 1
                        _ = delays.record(0)
                    }
                } else if pending.count < Self.pendingPerWatcherMax {
                    pending[revision] = arrived
                }
            }
        } catch {
            if !Task.isCancelled { failure = "watcher \(index): \(benchDescribe(error))" }
        }
        // Events that came before their put's answer was recorded.
        let known = answers.withLock { answers in pending.compactMap { answers[$0.key] != nil ? $0.key : nil } }
        for _ in known {
            events += 1
            beforeAnswer += 1
            _ = delays.record(0)
        }
        summary.withLock { summary in
            summary.delayMicroseconds.add(delays)
            summary.events += events
            summary.beforeAnswer += beforeAnswer
            if let failure { summary.failures.append(failure) }
        }
    }
}
