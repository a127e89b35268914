import Paxos

/// Runs many seeds and summarizes them, for `synod simulate` and the tests.
public struct SimulationSummary: Sendable {
    public var seedsRun = 0
    public var operationsChecked = 0
    public var faultsInjected = 0
    public var checkerGaveUp = 0
    /// The failing runs, in seed order.
    public var failures: [SimulationResult] = []

    public init() {}

    /// The one summary line `synod simulate` prints.
    public var line: String {
        "violations=\(failures.count) seeds=\(seedsRun) operations=\(operationsChecked) "
            + "faults=\(faultsInjected) checker-gave-up=\(checkerGaveUp)"
    }

    public mutating func add(_ result: SimulationResult) {
        seedsRun += 1
        operationsChecked += result.operationsChecked
        faultsInjected += result.faultsInjected
        if result.checkerGaveUp { checkerGaveUp += 1 }
        if !result.violations.isEmpty { failures.append(result) }
    }
}

extension SimulationResult {
    /// A failure report: the seed, how to replay it, the violations and the trace tail.
    public var report: String {
        var lines = [
            "seed \(seed) failed (replicas=\(replicaCount), \(faultPlan)); replay with: "
                + "synod simulate \(replayArguments)"
        ]
        lines += violations.map { "  violation: \($0)" }
        lines.append("  trace tail:")
        lines += traceTail.map { "    \($0)" }
        return lines.joined(separator: "\n")
    }
}
