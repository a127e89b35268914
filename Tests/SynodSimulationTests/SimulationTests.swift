#if canImport(Glibc)
import Glibc
#endif
import ReplicaRuntime
import Testing

@testable import SynodSimulation

/// The seeded simulation: every run is checked for agreement (all replicas apply the same
/// value in each slot), Paxos's acceptor rule P1a on the wire, linearizability of the
/// clients' history, and liveness after healing. A failure prints the seed and how to
/// replay it: `synod simulate --seed S --replicas R`.
@Suite("Deterministic simulation")
struct SimulationTests {
    /// 1,000 seeds per run in ten batches that run in parallel, alternating 3 and 5
    /// replicas. Set SYNOD_SIMULATION_FIRST_SEED to explore another range.
    static let batches = Array(0..<10)
    static let seedsPerBatch: UInt64 = 100

    /// A value that is not a number fails the test (it would explore seeds nobody asked for).
    static func firstSeed() throws -> UInt64 {
        guard let text = Environment.value("SYNOD_SIMULATION_FIRST_SEED") else { return 1 }
        guard let seed = UInt64(text) else { throw UnreadableSeed(text: text) }
        return seed
    }

    struct UnreadableSeed: Error, CustomStringConvertible {
        let text: String
        var description: String { "SYNOD_SIMULATION_FIRST_SEED=\(text) is not a seed (a number from 0 to \(UInt64.max))" }
    }

    @Test("1,000 seeds with faults, 3 and 5 replicas: no violation", arguments: batches)
    func manySeeds(batch: Int) async throws {
        let first = try Self.firstSeed()
        await offThePool {
            var summary = SimulationSummary()
            let start = first + UInt64(batch) * Self.seedsPerBatch
            for seed in start..<(start + Self.seedsPerBatch) {
                let replicas = seed % 2 == 0 ? 5 : 3
                let result = Simulation(options: SimulationOptions(seed: seed, replicaCount: replicas)).run()
                summary.add(result)
                #expect(result.violations.isEmpty, "\(result.report)")
            }
            #expect(summary.seedsRun == Int(Self.seedsPerBatch))
            #expect(summary.operationsChecked > 0)
            #expect(summary.faultsInjected > 0)
        }
    }

    /// The simulator's default snapshots by slot count alone; servers also pace snapshots by
    /// the log's bytes (`RuntimeOptions.snapshotLogShareDefault`). These seeds run the server's rule.
    @Test("100 seeds with the server's snapshot pacing (the default snapshot-log-share): no violation", arguments: [0, 1])
    func serverSnapshotPacing(batch: Int) async {
        await offThePool {
            let start = 5_001 + UInt64(batch) * 50
            var changedRuns = 0
            for seed in start..<(start + 50) {
                var options = SimulationOptions(seed: seed, replicaCount: seed % 2 == 0 ? 5 : 3)
                options.snapshotLogShare = RuntimeOptions.snapshotLogShareDefault
                let result = Simulation(options: options).run()
                #expect(
                    result.violations.isEmpty,
                    "\(result.report)\nreplay: synod simulate --seed \(seed) --replicas \(options.replicaCount) --snapshot-log-share \(options.snapshotLogShare)")
                if seed < start + 10 {
                    options.snapshotLogShare = 0
                    if Simulation(options: options).run().traceDigest != result.traceDigest { changedRuns += 1 }
                }
            }
            // The rule must reach these runs: it takes fewer snapshots, so the runs differ.
            #expect(changedRuns > 0, "snapshot-log-share \(RuntimeOptions.snapshotLogShareDefault) changed none of 10 runs")
        }
    }

    @Test("1 and 7 replicas work too", arguments: [1, 7])
    func otherSizes(replicas: Int) async {
        await offThePool {
            for seed: UInt64 in 1...15 {
                let result = Simulation(options: SimulationOptions(seed: seed, replicaCount: replicas)).run()
                #expect(result.violations.isEmpty, "\(result.report)")
                #expect(result.operationsChecked > 0)
            }
        }
    }

    @Test("Same seed, same run: the trace digest and the outcome repeat exactly")
    func deterministic() async {
        await offThePool {
            for seed: UInt64 in [3, 4, 99] {
                let first = Simulation(options: SimulationOptions(seed: seed, replicaCount: 5)).run()
                let second = Simulation(options: SimulationOptions(seed: seed, replicaCount: 5)).run()
                #expect(first.traceDigest == second.traceDigest)
                #expect(first.traceTail == second.traceTail)
                #expect(first.operationsChecked == second.operationsChecked)
                let other = Simulation(options: SimulationOptions(seed: seed + 1000, replicaCount: 5)).run()
                #expect(other.traceDigest != first.traceDigest)
            }
        }
    }

    /// Seeds each injected bug may take: 1–200, except bugs that need a rare interleaving,
    /// whose known seed is replayed rather than running thousands of seeds in every test
    /// run — early-accepts-uncapped (a leader crashes with its own vote not yet durable
    /// after a follower applied the slot from an early accept) and no-lease-epochs (an
    /// expiry accepted only by a cut-off leader's acceptor, chosen after other leaders
    /// renewed the lease). Each change to the messages the replicas exchange moves these
    /// interleavings to other seeds; since followers ack heartbeats at most once per tick
    /// (besides new read rounds), `synod simulate --inject-bug early-accepts-uncapped` first
    /// fails at seed 85 and `--inject-bug no-lease-epochs` at 1117 (none in 1–1000). Before
    /// that change they were 1773 and 4199.
    static func seeds(_ bug: InjectedBug) -> ClosedRange<UInt64> {
        switch bug {
        case .earlyAcceptsUncapped: return 85...85
        case .noLeaseEpochs: return 1117...1117
        default: return 1...200
        }
    }

    @Test("Injected bugs are caught within their seed budget (200; rare bugs at their known seed)", arguments: InjectedBug.allCases)
    func injectedBugCaught(bug: InjectedBug) async {
        await offThePool {
            var caughtAt: UInt64?
            for seed: UInt64 in Self.seeds(bug) {
                let replicas = seed % 2 == 0 ? 5 : 3
                let result = Simulation(options: SimulationOptions(seed: seed, replicaCount: replicas, bug: bug)).run()
                if !result.violations.isEmpty {
                    caughtAt = seed
                    break
                }
            }
            #expect(caughtAt != nil, "\(bug.rawValue) was not caught in seeds \(Self.seeds(bug))")
        }
    }

    @Test("The event queue orders by time, then by insertion")
    func eventQueueOrder() {
        var queue = EventQueue<String>()
        queue.push("c", at: 5)
        queue.push("a", at: 1)
        queue.push("d", at: 5)
        queue.push("b", at: 3)
        var order: [String] = []
        while let next = queue.pop() { order.append(next.element) }
        #expect(order == ["a", "b", "c", "d"])
    }
}

enum Environment {
    static func value(_ name: String) -> String? {
        guard let pointer = getenv(name) else { return nil }
        return String(cString: pointer)
    }
}
