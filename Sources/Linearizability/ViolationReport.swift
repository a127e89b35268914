/// Turns the deepest point of a failed search into a `LinearizabilityViolation`.
///
/// At that point the first return event left in the list belongs to an observed operation
/// that had to take effect before it returned. The operations that could have gone next are
/// the ones called no later than that return (calls precede returns at equal times); the
/// search tried each and every one led to a dead end.
struct ViolationReport<M: Model> {
    let model: M
    let partitionIndex: Int
    let operations: [Operation<M.Input, M.Output>]
    /// The longest linearizable prefix, as operation indices in linearization order.
    let prefix: [Int]
    let statesAfter: [M.State]

    func violation() -> LinearizabilityViolation {
        precondition(prefix.count == statesAfter.count)
        precondition(prefix.count < operations.count, "a failed search leaves some operation unlinearized")
        let stateAtFrontier = statesAfter.last ?? model.initialState
        let named = model.describePartition(operations)
        let partition = named.isEmpty ? "partition \(partitionIndex)" : named

        let shownFrom = max(0, prefix.count - LinearizabilityViolation.reportedPrefixOperationsMax)
        let prefixLines = (shownFrom..<prefix.count).map { position in
            let operationLine = line(prefix[position])
            let state = model.describeState(statesAfter[position])
            return "\(position + 1). \(operationLine)  => \(state)"
        }

        let (blocking, stuck) = frontier()
        let stuckLines = stuck.map(line)

        var text = "not linearizable: \(partition)\n"
        text += "longest linearizable prefix: \(prefix.count) of \(operations.count) operations"
        text += prefix.isEmpty ? " (none)\n" : ", ending in state \(model.describeState(stateAtFrontier))\n"
        if shownFrom > 0 {
            text += "  ... \(shownFrom) earlier operations\n"
        }
        for prefixLine in prefixLines {
            text += "  \(prefixLine)\n"
        }
        text += "could not linearize any of these next from state \(model.describeState(stateAtFrontier))"
        text += " (the operation of client \(operations[blocking].clientID) returned at "
        text += "\(operations[blocking].returned.map(String.init) ?? "∞") before it could take effect):\n"
        for stuckLine in stuckLines {
            text += "  \(stuckLine)\n"
        }
        return LinearizabilityViolation(
            partition: partition,
            linearizedCount: prefix.count,
            operationCount: operations.count,
            linearizedPrefix: prefixLines,
            unlinearizable: stuckLines,
            description: text
        )
    }

    /// The observed operation whose return blocked the search, and every remaining operation
    /// called no later than that return, in call order.
    private func frontier() -> (blocking: Int, stuck: [Int]) {
        let linearized = Set(prefix)
        let remaining = operations.indices.filter { !linearized.contains($0) }
        let observed = remaining.filter { operations[$0].isObserved }
        guard let blocking = observed.min(by: { returnTime($0) < returnTime($1) }) else {
            preconditionFailure("search failed with no observed operation left in \(operations.count) operations")
        }
        let deadline = returnTime(blocking)
        let stuck = remaining
            .filter { operations[$0].call <= deadline }
            .sorted { (operations[$0].call, $0) < (operations[$1].call, $1) }
        precondition(stuck.contains(blocking))
        return (blocking, stuck)
    }

    private func returnTime(_ index: Int) -> UInt64 {
        operations[index].returned ?? UInt64.max
    }

    /// `client 3  put(x, "1") -> ok  [call 10, return 20]`
    private func line(_ index: Int) -> String {
        let operation = operations[index]
        let returned = operation.returned.map { "return \($0)" } ?? "no return (outcome unknown)"
        let described = model.describe(operation.input, operation.output)
        return "client \(operation.clientID)  \(described)  [call \(operation.call), \(returned)]"
    }
}
