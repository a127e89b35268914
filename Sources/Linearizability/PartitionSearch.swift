/// Wing & Gong's backtracking search for a linearization of one partition, with Lowe's
/// improvements as in Porcupine: the call/return list with lift/unlift, and memoization of
/// every configuration (linearized set, model state) already explored.
///
/// The search walks the list from its head. At a call event it tries to linearize that
/// operation now: if the model accepts it and the resulting configuration is new, it lifts the
/// operation and starts again from the head. At a return event, the operation returning there
/// should have been linearized already, so the last choice was wrong: it backtracks. An
/// operation with an unknown outcome has no return event, so it is never forced; the search
/// succeeds once every observed operation is linearized.
///
/// Unknown outcomes make the configurations exponential in their number (any subset may have
/// taken effect), which matters most when proving a history illegal. Three reductions, each
/// sound because the configuration pruned is dominated by one the search explores anyway:
/// observed operations are tried first, the memo prunes by dominance (`ConfigurationMemo`),
/// and `nextStates` drops useless unobserved choices.
struct PartitionSearch<M: Model> {
    enum Outcome {
        case linearizable
        /// The longest prefix found, as operation indices in linearization order, with the
        /// model state after each.
        case notLinearizable(prefix: [Int], statesAfter: [M.State])
        case budgetExhausted
    }

    /// One linearized operation on the backtracking stack.
    private struct Frame {
        let callNode: Int
        /// The model state before the operation took effect, restored on backtracking.
        let stateBefore: M.State
        /// Which of the operation's possible next states was taken (see `nextStates`).
        let choice: Int
    }

    /// Which call events the walk tries: observed operations first, then those with an unknown
    /// outcome. Trying the required ones first reaches configurations with fewer optional
    /// operations linearized early, and those dominate the rest in the memo.
    private enum Pass {
        case observed
        case unobserved
    }

    private let model: M
    private let operations: [Operation<M.Input, M.Output>]
    private var list: EntryList
    private var observedLinearized: LinearizedSet
    private var unobservedLinearized: LinearizedSet
    private var state: M.State
    private var memo = ConfigurationMemo<M.State>()
    private var frames: [Frame] = []
    private let observedTotal: Int
    /// Invariant: 0 <= observedRemaining <= observedTotal, the observed operations not yet
    /// linearized.
    private var observedRemaining: Int
    /// The longest prefix is the one with the most observed operations (the first such).
    private var longestPrefixObservedCount = 0
    private var longestPrefix: [Int] = []
    private var longestPrefixStatesAfter: [M.State] = []

    init(model: M, operations: [Operation<M.Input, M.Output>]) {
        self.model = model
        self.operations = operations
        self.list = EntryList(operations)
        self.observedLinearized = LinearizedSet(capacity: operations.count)
        self.unobservedLinearized = LinearizedSet(capacity: operations.count)
        self.state = model.initialState
        self.observedTotal = operations.count { $0.isObserved }
        self.observedRemaining = observedTotal
        let fresh = memo.visit(observed: observedLinearized, unobserved: unobservedLinearized, state: state)
        precondition(fresh)
    }

    /// Runs the search, spending one unit of `stepBudget` per visited event.
    ///
    /// The walk goes through the list from its head in two passes, observed then unobserved
    /// calls, each stopping at the first return event: only operations called by then may go
    /// next. When both passes are done, the operation returning there should have been
    /// linearized already, so the last choice was wrong: backtrack.
    mutating func run(stepBudget: inout Int) -> Outcome {
        var cursor = list.first
        var pass = Pass.observed
        while observedRemaining > 0 {
            precondition(cursor != EntryList.none, "ran off the list with \(observedRemaining) observed operations left")
            guard stepBudget > 0 else { return .budgetExhausted }
            stepBudget -= 1
            if list.isCall[cursor] {
                let observed = operations[list.operation[cursor]].isObserved
                let linearizedNow = (pass == .observed) == observed && tryLinearize(cursor, fromChoice: 0)
                (cursor, pass) = linearizedNow ? (list.first, .observed) : (list.successor(of: cursor), pass)
            } else if pass == .observed {
                (cursor, pass) = (list.first, .unobserved)
            } else {
                guard let frame = frames.popLast() else {
                    return .notLinearizable(prefix: longestPrefix, statesAfter: longestPrefixStatesAfter)
                }
                undo(frame)
                if tryLinearize(frame.callNode, fromChoice: frame.choice + 1) {
                    (cursor, pass) = (list.first, .observed)
                } else {
                    let observed = operations[list.operation[frame.callNode]].isObserved
                    (cursor, pass) = (list.successor(of: frame.callNode), observed ? .observed : .unobserved)
                }
            }
        }
        return .linearizable
    }

    /// The states the operation may lead to from `state`; an unknown outcome may fork.
    ///
    /// For an unobserved operation two kinds of choice are dropped, each dominated by a
    /// configuration the search explores anyway (see `ConfigurationMemo`):
    /// - one that leaves the state unchanged: not linearizing it reaches the same state;
    /// - one it would also reach straight after the state before the last operation, when
    ///   that one was unobserved too (a write overwriting another): linearizing only this
    ///   one from there, a sibling configuration, reaches the same state with fewer
    ///   optional operations used.
    private func nextStates(_ operation: Operation<M.Input, M.Output>) -> [M.State] {
        if let output = operation.output {
            let (legal, next) = model.step(state, operation.input, output)
            return legal ? [next] : []
        }
        var candidates = model.stepUnobserved(state, operation.input).filter { $0 != state }
        if let last = frames.last, !operations[list.operation[last.callNode]].isObserved, !candidates.isEmpty {
            let direct = model.stepUnobserved(last.stateBefore, operation.input)
            candidates.removeAll { direct.contains($0) }
        }
        return candidates
    }

    /// Linearizes the operation of `callNode` with the first possible next state at index
    /// `fromChoice` or later that leads to an unexplored configuration. Returns whether it did.
    private mutating func tryLinearize(_ callNode: Int, fromChoice: Int) -> Bool {
        let operationIndex = list.operation[callNode]
        let operation = operations[operationIndex]
        let candidates = nextStates(operation)
        guard fromChoice < candidates.count else { return false }
        var observedAfter = observedLinearized
        var unobservedAfter = unobservedLinearized
        if operation.isObserved {
            observedAfter.insert(operationIndex)
        } else {
            unobservedAfter.insert(operationIndex)
        }
        for choice in fromChoice..<candidates.count {
            let next = candidates[choice]
            guard memo.visit(observed: observedAfter, unobserved: unobservedAfter, state: next) else { continue }
            frames.append(Frame(callNode: callNode, stateBefore: state, choice: choice))
            state = next
            observedLinearized = observedAfter
            unobservedLinearized = unobservedAfter
            list.lift(callNode)
            if operation.isObserved {
                observedRemaining -= 1
                precondition(observedRemaining >= 0)
            }
            recordIfLongest()
            return true
        }
        return false
    }

    private mutating func undo(_ frame: Frame) {
        let operationIndex = list.operation[frame.callNode]
        list.unlift(frame.callNode)
        state = frame.stateBefore
        if operations[operationIndex].isObserved {
            observedLinearized.remove(operationIndex)
            observedRemaining += 1
            precondition(observedRemaining <= observedTotal)
        } else {
            unobservedLinearized.remove(operationIndex)
        }
    }

    /// Keeps the deepest point of the search for the report: the first prefix holding the
    /// most observed operations. Only strict growth records, so this costs O(n) at most n times.
    private mutating func recordIfLongest() {
        let observedCount = observedTotal - observedRemaining
        guard observedCount > longestPrefixObservedCount else { return }
        longestPrefixObservedCount = observedCount
        longestPrefix = frames.map { list.operation[$0.callNode] }
        longestPrefixStatesAfter = frames.dropFirst().map(\.stateBefore) + [state]
        precondition(longestPrefix.count == longestPrefixStatesAfter.count)
    }
}
