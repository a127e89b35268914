/// A sequential specification: what a single copy of the object would do, one operation at
/// a time. The checker searches for an order of the history's operations, consistent with
/// real time, that this specification accepts (Herlihy & Wing, "Linearizability", 1990).
public protocol Model {
    associatedtype State: Hashable & Sendable
    associatedtype Input: Sendable
    associatedtype Output: Sendable

    /// The state before any operation (of each partition).
    var initialState: State { get }

    /// Whether applying `input` to `state` may legally produce `output`, and the next state.
    func step(_ state: State, _ input: Input, _ output: Output) -> (legal: Bool, next: State)

    /// The states `input` may leave behind when it took effect but nobody saw its output
    /// (the operation timed out). Return `[state]` for a read-only input. An empty array
    /// means it cannot take effect in `state`; it then stays pending, which is allowed,
    /// because an operation with an unknown outcome is never required to take effect.
    func stepUnobserved(_ state: State, _ input: Input) -> [State]

    /// Splits a history into independent sub-histories (per key), each checked on its own
    /// from `initialState` (P-compositionality). Default: one partition. A model may drop
    /// operations that cannot constrain anything (an unobserved read). The order of the
    /// partitions decides which violation is reported first, so keep it deterministic.
    func partition(_ operations: [Operation<Input, Output>]) -> [[Operation<Input, Output>]]

    /// One operation for a human, e.g. `put(x, "1") -> ok`; `output == nil` means unknown.
    func describe(_ input: Input, _ output: Output?) -> String

    /// Names one partition for a human, e.g. `key "x"`. Default: empty.
    func describePartition(_ operations: [Operation<Input, Output>]) -> String

    /// One state for a human. Default: `String(describing:)`.
    func describeState(_ state: State) -> String
}

extension Model {
    public func partition(_ operations: [Operation<Input, Output>]) -> [[Operation<Input, Output>]] {
        [operations]
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        let result = output.map { String(describing: $0) } ?? "?"
        return "\(input) -> \(result)"
    }

    public func describePartition(_ operations: [Operation<Input, Output>]) -> String {
        ""
    }

    public func describeState(_ state: State) -> String {
        String(describing: state)
    }
}
