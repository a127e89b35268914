/// Checks whether `history` is linearizable with respect to `model`.
///
/// Each partition from `model.partition` is searched on its own (linearizability is local:
/// Herlihy & Wing 1990, "P-compositionality" in Horn & Kroening 2015). Partitions are checked
/// in the model's order and the first violation is reported.
///
/// - Parameter stepBudget: how many list events the search may visit across all partitions.
///   When it runs out the result is `.unknown`, never `.ok`.
public func checkLinearizability<M: Model>(
    model: M,
    history: [Operation<M.Input, M.Output>],
    stepBudget: Int = 10_000_000
) -> CheckResult {
    precondition(stepBudget > 0, "stepBudget must be positive, got \(stepBudget)")
    for operation in history {
        operation.validate()
    }
    var budgetRemaining = stepBudget
    for (index, operations) in model.partition(history).enumerated() {
        for operation in operations {
            operation.validate()
        }
        var search = PartitionSearch(model: model, operations: operations)
        switch search.run(stepBudget: &budgetRemaining) {
        case .linearizable:
            continue
        case .budgetExhausted:
            return .unknown
        case .notLinearizable(let prefix, let statesAfter):
            let report = ViolationReport(
                model: model,
                partitionIndex: index,
                operations: operations,
                prefix: prefix,
                statesAfter: statesAfter
            )
            return .illegal(report.violation())
        }
    }
    return .ok
}
