/// The sequential specification of the Synod key-value store: a map from keys to values,
/// checked one key at a time (each key is an independent register).
///
/// The state of a partition is the value of its key, `nil` when absent; every key starts
/// absent. The simulator maps its client operations onto `Input` and `Output`:
///
/// | input                          | output on success        | effect                           |
/// |--------------------------------|--------------------------|----------------------------------|
/// | `.put(key:value:)`             | `.putOK`                 | key := value                     |
/// | `.get(key:)`                   | `.value(v)` (nil absent) | none                             |
/// | `.delete(key:)`                | `.deleted(existed)`      | key := absent                    |
/// | `.cas(key:expected:new:)`      | `.cas(succeeded:)`       | if key == expected: key := new   |
///
/// `.deleted(true)` means a value was removed, `.deleted(false)` that the key was absent.
/// A CAS with `expected == nil` succeeds only if the key is absent (create-if-absent).
/// An output of the wrong shape for its input (a `.putOK` for a get) is illegal.
public struct KVModel: Model {
    public enum Input: Sendable, Hashable {
        case put(key: String, value: String)
        case get(key: String)
        case delete(key: String)
        case cas(key: String, expected: String?, new: String)

        /// The key the operation touches, which is also its partition.
        public var key: String {
            switch self {
            case .put(let key, _), .get(let key), .delete(let key), .cas(let key, _, _):
                return key
            }
        }

        /// Whether the operation never changes the state.
        public var isReadOnly: Bool {
            if case .get = self { return true }
            return false
        }
    }

    public enum Output: Sendable, Hashable {
        case putOK
        /// The value read, `nil` if the key was absent.
        case value(String?)
        /// Whether the delete removed a value.
        case deleted(Bool)
        case cas(succeeded: Bool)
    }

    /// The value of the partition's key, `nil` when absent.
    public typealias State = String?

    public init() {}

    public var initialState: String? { nil }

    public func step(_ state: String?, _ input: Input, _ output: Output) -> (legal: Bool, next: String?) {
        switch (input, output) {
        case (.put(_, let value), .putOK):
            return (true, value)
        case (.get, .value(let read)):
            return (read == state, state)
        case (.delete, .deleted(let existed)):
            return (existed == (state != nil), nil)
        case (.cas(_, let expected, let new), .cas(let succeeded)):
            let matches = state == expected
            return (succeeded == matches, matches ? new : state)
        case (.put, _), (.get, _), (.delete, _), (.cas, _):
            return (false, state)
        }
    }

    public func stepUnobserved(_ state: String?, _ input: Input) -> [String?] {
        switch input {
        case .put(_, let value):
            return [value]
        case .get:
            return [state]
        case .delete:
            return [nil]
        case .cas(_, let expected, let new):
            return [state == expected ? new : state]
        }
    }

    /// One partition per key, in key order. Unobserved gets are dropped: a read nobody saw
    /// constrains nothing.
    public func partition(_ operations: [Operation<Input, Output>]) -> [[Operation<Input, Output>]] {
        var byKey: [String: [Operation<Input, Output>]] = [:]
        for operation in operations where operation.isObserved || !operation.input.isReadOnly {
            byKey[operation.input.key, default: []].append(operation)
        }
        // Dictionary order is seeded per process; sort so reports are reproducible.
        return byKey.keys.sorted().map { byKey[$0]! }
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        let call: String
        switch input {
        case .put(let key, let value):
            call = "put(\(key), \(quoted(value)))"
        case .get(let key):
            call = "get(\(key))"
        case .delete(let key):
            call = "delete(\(key))"
        case .cas(let key, let expected, let new):
            call = "cas(\(key), expected: \(quoted(expected)), new: \(quoted(new)))"
        }
        return "\(call) -> \(describe(output))"
    }

    public func describePartition(_ operations: [Operation<Input, Output>]) -> String {
        guard let key = operations.first?.input.key else { return "" }
        precondition(operations.allSatisfy { $0.input.key == key }, "a KVModel partition holds one key")
        return "key \(quoted(key))"
    }

    public func describeState(_ state: String?) -> String {
        quoted(state)
    }

    private func describe(_ output: Output?) -> String {
        switch output {
        case nil:
            return "?"
        case .putOK:
            return "ok"
        case .value(let value):
            return quoted(value)
        case .deleted(let existed):
            return existed ? "deleted" : "nothing deleted"
        case .cas(let succeeded):
            return succeeded ? "succeeded" : "failed"
        }
    }

    private func quoted(_ value: String?) -> String {
        value.map { "\"\($0)\"" } ?? "nil"
    }
}
