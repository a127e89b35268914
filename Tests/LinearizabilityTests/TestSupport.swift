@testable import Linearizability

typealias KVOperation = Operation<KVModel.Input, KVModel.Output>

// A small vocabulary for hand-written histories: `put("x", "1", 0...10, client: 1)` is a put
// called at 0 that returned at 10.

func put(_ key: String, _ value: String, _ interval: ClosedRange<UInt64>, client: Int = 0) -> KVOperation {
    observed(.put(key: key, value: value), .putOK, interval, client: client)
}

func get(_ key: String, _ value: String?, _ interval: ClosedRange<UInt64>, client: Int = 0) -> KVOperation {
    observed(.get(key: key), .value(value), interval, client: client)
}

func delete(_ key: String, existed: Bool, _ interval: ClosedRange<UInt64>, client: Int = 0) -> KVOperation {
    observed(.delete(key: key), .deleted(existed), interval, client: client)
}

func cas(
    _ key: String,
    expected: String?,
    new: String,
    succeeded: Bool,
    _ interval: ClosedRange<UInt64>,
    client: Int = 0
) -> KVOperation {
    observed(.cas(key: key, expected: expected, new: new), .cas(succeeded: succeeded), interval, client: client)
}

func observed(
    _ input: KVModel.Input,
    _ output: KVModel.Output,
    _ interval: ClosedRange<UInt64>,
    client: Int
) -> KVOperation {
    Operation(clientID: client, input: input, call: interval.lowerBound, returned: interval.upperBound, output: output)
}

/// An operation whose client never heard back, called at `call`.
func timedOut(_ input: KVModel.Input, calledAt call: UInt64, client: Int = 0) -> KVOperation {
    Operation(clientID: client, input: input, call: call, returned: nil, output: nil)
}

func check(_ history: [KVOperation], stepBudget: Int = 10_000_000) -> CheckResult {
    checkLinearizability(model: KVModel(), history: history, stepBudget: stepBudget)
}

func violation(_ result: CheckResult) -> LinearizabilityViolation? {
    if case .illegal(let violation) = result { return violation }
    return nil
}

/// SplitMix64 (Steele, Lea & Flood 2014): small, seedable, and the same on every platform,
/// so a printed seed replays the identical history.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }

    mutating func percent(_ chance: Int) -> Bool {
        below(100) < chance
    }

    mutating func between(_ range: ClosedRange<UInt64>) -> UInt64 {
        range.lowerBound + next() % (range.upperBound - range.lowerBound + 1)
    }
}

/// Generates linearizable histories by running a real map sequentially: each operation takes
/// effect at an instant, and its client's call and return are spread around that instant by
/// up to `window` ticks. Clients issue one operation at a time. A timed-out operation takes
/// effect or not, at random, and its client moves on.
struct RegisterHistoryGenerator {
    var random: SplitMix64
    var keys: [String]
    var clients: Int
    var window: UInt64
    var timeoutPercent: Int
    /// Whether every put writes a value never written before (more constraining reads) or
    /// draws from a pool of three (values recur, so more orders explain a read).
    var uniqueValues: Bool

    mutating func generate(count: Int) -> [KVOperation] {
        precondition(clients > 0 && !keys.isEmpty)
        var store: [String: String] = [:]
        var clientFreeAt = [UInt64](repeating: 0, count: clients)
        var time: UInt64 = window
        var history: [KVOperation] = []
        for index in 0..<count {
            time += random.between(1...4)
            var ready = clientFreeAt.indices.filter { clientFreeAt[$0] < time }
            if ready.isEmpty {
                time = clientFreeAt.min()! + 1
                ready = clientFreeAt.indices.filter { clientFreeAt[$0] < time }
            }
            let client = ready[random.below(ready.count)]
            let effectAt = time
            let call = random.between(max(clientFreeAt[client] + 1, effectAt - window)...effectAt)
            let key = keys[random.below(keys.count)]
            let input = makeInput(key: key, index: index, current: store[key])

            if random.percent(timeoutPercent) {
                if random.percent(50) {
                    _ = apply(input, to: &store)
                }
                clientFreeAt[client] = effectAt + window
                history.append(Operation(clientID: client, input: input, call: call, returned: nil, output: nil))
            } else {
                let output = apply(input, to: &store)
                let returned = effectAt + random.between(0...window)
                clientFreeAt[client] = returned
                history.append(
                    Operation(clientID: client, input: input, call: call, returned: returned, output: output)
                )
            }
        }
        history.shuffle(using: &random)
        return history
    }

    private mutating func makeInput(key: String, index: Int, current: String?) -> KVModel.Input {
        let value = uniqueValues ? "v\(index)" : ["a", "b", "c"][random.below(3)]
        switch random.below(20) {
        case 0..<8:
            return .put(key: key, value: value)
        case 8..<15:
            return .get(key: key)
        case 15..<18:
            let expected: String? = random.percent(50) ? current : [nil, "a", "v1"][random.below(3)]
            return .cas(key: key, expected: expected, new: value)
        default:
            return .delete(key: key)
        }
    }

    private func apply(_ input: KVModel.Input, to store: inout [String: String]) -> KVModel.Output {
        switch input {
        case .put(let key, let value):
            store[key] = value
            return .putOK
        case .get(let key):
            return .value(store[key])
        case .delete(let key):
            return .deleted(store.removeValue(forKey: key) != nil)
        case .cas(let key, let expected, let new):
            guard store[key] == expected else { return .cas(succeeded: false) }
            store[key] = new
            return .cas(succeeded: true)
        }
    }
}

/// The definition, executed: tries every order of the operations that respects real time
/// (an operation may go next only if every observed operation that returned before its call
/// already went), with every outcome of each unobserved one, which may also never go. No
/// memoization, no list; exponential, for histories of a handful of operations.
func naiveIsLinearizable<M: Model>(model: M, history: [Operation<M.Input, M.Output>]) -> Bool {
    model.partition(history).allSatisfy { operations in
        naiveSearch(model: model, operations: operations, state: model.initialState, remaining: Array(operations.indices))
    }
}

private func naiveSearch<M: Model>(
    model: M,
    operations: [Operation<M.Input, M.Output>],
    state: M.State,
    remaining: [Int]
) -> Bool {
    if remaining.allSatisfy({ !operations[$0].isObserved }) { return true }
    for candidate in remaining {
        let call = operations[candidate].call
        let mustWait = remaining.contains { other in
            guard other != candidate, let returned = operations[other].returned else { return false }
            return returned < call
        }
        if mustWait { continue }
        let rest = remaining.filter { $0 != candidate }
        let nextStates: [M.State]
        if let output = operations[candidate].output {
            let (legal, next) = model.step(state, operations[candidate].input, output)
            nextStates = legal ? [next] : []
        } else {
            nextStates = model.stepUnobserved(state, operations[candidate].input)
        }
        for next in nextStates where naiveSearch(model: model, operations: operations, state: next, remaining: rest) {
            return true
        }
    }
    return false
}
