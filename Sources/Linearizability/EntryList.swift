/// The history of one partition as a doubly linked list of call and return events in time
/// order (Lowe, "Testing for linearizability", 2017; Porcupine's `node` list).
///
/// Linearizing an operation lifts its call and return out of the list; backtracking unlifts
/// them, in reverse order, restoring the links the removed nodes kept (Knuth's dancing
/// links). Nodes are array indices; node 0 is a sentinel head.
///
/// An operation with an unknown outcome has a call event and no return event: it returns at
/// +∞, so nothing ever forces it to be linearized.
struct EntryList {
    static let none = -1
    static let head = 0

    /// Links; a lifted node keeps its own so that `unlift` can put it back.
    private var next: [Int]
    private var previous: [Int]
    /// The operation index of each node (`none` for the head).
    let operation: [Int]
    /// For a call node: its return node, or `none` if the operation never returned.
    /// For a return node and the head: `none`.
    let match: [Int]
    /// Whether each node is a call event.
    let isCall: [Bool]
    /// The call node of each operation.
    let callNode: [Int]

    /// Builds the list. At equal times calls precede returns, so operations that touch in
    /// time count as concurrent; ties otherwise break by operation index (determinism).
    init<Input, Output>(_ operations: [Operation<Input, Output>]) {
        var events: [Event] = []
        events.reserveCapacity(operations.count * 2)
        for (index, operation) in operations.enumerated() {
            events.append(Event(time: operation.call, isCall: true, operation: index))
            if let returned = operation.returned {
                events.append(Event(time: returned, isCall: false, operation: index))
            }
        }
        events.sort { left, right in
            if left.time != right.time { return left.time < right.time }
            if left.isCall != right.isCall { return left.isCall }
            return left.operation < right.operation
        }

        let nodeCount = events.count + 1
        var operation = [Int](repeating: Self.none, count: nodeCount)
        var isCall = [Bool](repeating: false, count: nodeCount)
        var callNode = [Int](repeating: Self.none, count: operations.count)
        var match = [Int](repeating: Self.none, count: nodeCount)
        for (offset, event) in events.enumerated() {
            let node = offset + 1
            operation[node] = event.operation
            isCall[node] = event.isCall
            if event.isCall {
                callNode[event.operation] = node
            } else {
                let call = callNode[event.operation]
                precondition(call != Self.none, "return event of operation \(event.operation) sorted before its call")
                match[call] = node
            }
        }
        self.operation = operation
        self.isCall = isCall
        self.callNode = callNode
        self.match = match
        self.next = (0..<nodeCount).map { $0 + 1 < nodeCount ? $0 + 1 : Self.none }
        self.previous = (0..<nodeCount).map { $0 - 1 }
        precondition(previous[Self.head] == Self.none)
    }

    private struct Event {
        let time: UInt64
        let isCall: Bool
        let operation: Int
    }

    /// The earliest event still in the list, or `none` if it is empty.
    var first: Int { next[Self.head] }

    func successor(of node: Int) -> Int {
        precondition(node != Self.none, "successor of no node")
        return next[node]
    }

    /// Removes an operation's call and return events: it has been linearized.
    mutating func lift(_ call: Int) {
        precondition(isCall[call], "lift of node \(call), which is not a call event")
        unlink(call)
        let returnNode = match[call]
        if returnNode != Self.none {
            unlink(returnNode)
        }
    }

    /// Undoes the most recent `lift(call)` that has not been undone (LIFO).
    mutating func unlift(_ call: Int) {
        precondition(isCall[call], "unlift of node \(call), which is not a call event")
        let returnNode = match[call]
        if returnNode != Self.none {
            relink(returnNode)
        }
        relink(call)
    }

    private mutating func unlink(_ node: Int) {
        let before = previous[node]
        let after = next[node]
        precondition(before != Self.none, "unlink of node \(node), which is the head or already lifted")
        next[before] = after
        if after != Self.none {
            previous[after] = before
        }
    }

    private mutating func relink(_ node: Int) {
        let before = previous[node]
        let after = next[node]
        precondition(next[before] == after, "relink of node \(node) out of LIFO order")
        next[before] = node
        if after != Self.none {
            precondition(previous[after] == before, "relink of node \(node) out of LIFO order")
            previous[after] = node
        }
    }
}
