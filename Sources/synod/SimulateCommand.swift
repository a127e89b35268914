import ArgumentParser
import ReplicaRuntime
import SynodSimulation

/// `synod simulate`: runs the deterministic simulator over many seeds and checks every
/// run for agreement, linearizability and liveness.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the deterministic cluster simulator with faults and check every run.",
        discussion: """
            Prints one summary line with violations=<n>. Exits non-zero on any violation and \
            prints the failing seed, how to replay it, and the tail of its trace.
            """
    )

    @Option(help: "Number of seeds to run, starting at --first-seed.")
    var seeds: Int = 100

    @Option(help: "Run only this seed (replays a failure).")
    var seed: UInt64?

    @Option(help: "First seed when running several.")
    var firstSeed: UInt64 = 1

    @Option(help: "Replicas per run: 1, 3, 5 or 7. Default: alternate 3 and 5.")
    var replicas: Int?

    @Option(help: "Client operations per run.")
    var ops: Int = 60

    @Option(help: "Concurrent simulated clients per run.")
    var clients: Int = 4

    @Option(name: .customLong("inject-bug"), help: "Break the replica on purpose: forget-promise, no-fsync, accepted-before-fsync, release-before-sync, early-accepts-uncapped, acceptor-recovers-without-log, drop-watch-event, follower-expires-leases or no-lease-epochs.")
    var injectBug: String?


    @Option(help: "A snapshot also waits until the log took in 1/N of the last snapshot's size (0, the default here: the slot count alone; servers default to \(RuntimeOptions.snapshotLogShareDefault)).")
    var snapshotLogShare: Int = 0

    @Option(help: "Trace lines to print for a failing seed.")
    var traceLines: Int = 60

    @Flag(help: "Print every run's summary.")
    var verbose = false

    @Flag(help: "Simulate auth: users and roles set up through the log, writes checked, denied writes never applied.")
    var auth = false

    func validate() throws {
        if let replicas, ![1, 3, 5, 7].contains(replicas) {
            throw ValidationError("--replicas must be 1, 3, 5 or 7, not \(replicas)")
        }
        if let injectBug, InjectedBug(rawValue: injectBug) == nil {
            let known = InjectedBug.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("unknown --inject-bug '\(injectBug)'; known: \(known)")
        }
        guard seeds >= 1 else { throw ValidationError("--seeds must be at least 1") }
        guard ops >= 1 else { throw ValidationError("--ops must be at least 1") }
        guard clients >= 1 else { throw ValidationError("--clients must be at least 1") }
        guard (0...RuntimeOptions.snapshotLogShareMax).contains(snapshotLogShare) else {
            throw ValidationError(
                "--snapshot-log-share must be between 0 and \(RuntimeOptions.snapshotLogShareMax), not \(snapshotLogShare)")
        }
    }

    func run() throws {
        let bug = injectBug.flatMap(InjectedBug.init(rawValue:))
        let seedList: [UInt64] = seed.map { [$0] } ?? (0..<UInt64(seeds)).map { firstSeed + $0 }
        var summary = SimulationSummary()
        for seed in seedList {
            let replicaCount = replicas ?? (seed % 2 == 0 ? 5 : 3)
            var options = SimulationOptions(
                seed: seed, replicaCount: replicaCount, operationCount: ops, clientCount: clients,
                bug: bug, traceTailLines: traceLines)
            options.auth = auth
            options.snapshotLogShare = snapshotLogShare
            let result = Simulation(options: options).run()
            summary.add(result)
            if verbose {
                print(
                    "seed=\(seed) replicas=\(replicaCount) violations=\(result.violations.count) "
                        + "ops=\(result.operationsChecked) faults=\(result.faultsInjected) ticks=\(result.ticks) "
                        + "delivered=\(result.messagesDelivered) digest=\(String(result.traceDigest, radix: 16))")
            }
            if !result.violations.isEmpty {
                print(result.report)
                if bug != nil { break }  // an injected bug is caught: stop at the first seed
            }
        }
        print(summary.line)
        if !summary.failures.isEmpty {
            throw ExitCode(1)
        }
    }
}
