/// The set of operations linearized so far, as a bitset: half of the memoization key
/// (Lowe 2017: a configuration is the set of linearized operations plus the model state).
struct LinearizedSet: Hashable {
    private var words: [UInt64]

    init(capacity: Int) {
        precondition(capacity >= 0)
        words = [UInt64](repeating: 0, count: (capacity + 63) / 64)
    }

    func contains(_ member: Int) -> Bool {
        words[member / 64] & (1 << UInt64(member % 64)) != 0
    }

    mutating func insert(_ member: Int) {
        precondition(!contains(member), "operation \(member) linearized twice")
        words[member / 64] |= 1 << UInt64(member % 64)
    }

    mutating func remove(_ member: Int) {
        precondition(contains(member), "operation \(member) removed but not linearized")
        words[member / 64] &= ~(1 << UInt64(member % 64))
    }

    func inserting(_ member: Int) -> LinearizedSet {
        var copy = self
        copy.insert(member)
        return copy
    }
}

extension LinearizedSet {
    /// Whether every member of `self` is a member of `other` (same capacity).
    func isSubset(of other: LinearizedSet) -> Bool {
        precondition(words.count == other.words.count, "sets of different capacity")
        for index in words.indices where words[index] & ~other.words[index] != 0 {
            return false
        }
        return true
    }
}
