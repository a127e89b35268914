/// The verdict of `checkLinearizability`.
public enum CheckResult: Sendable {
    /// Every partition has a linearization.
    case ok
    /// Some partition has none; the violation says which and where the search got stuck.
    case illegal(LinearizabilityViolation)
    /// The search ran out of its step budget before a verdict. Never read this as `ok`.
    case unknown
}

extension CheckResult {
    /// Whether the verdict is `.ok`.
    public var isOK: Bool {
        if case .ok = self { return true }
        return false
    }

    /// Whether the verdict is `.illegal`.
    public var isIllegal: Bool {
        if case .illegal = self { return true }
        return false
    }
}

/// Evidence that a history is not linearizable, for a human reading a failed test.
///
/// The search's deepest point is the longest sequence of operations it could linearize; the
/// stuck operations are those that could have gone next there (every operation called no
/// later than the first pending return), none of which the model accepted without leading
/// to a dead end.
public struct LinearizabilityViolation: Sendable, CustomStringConvertible {
    /// The partition with no linearization, e.g. `key "x"` (its index if the model names none).
    public let partition: String
    /// How many operations the longest linearizable prefix holds.
    public let linearizedCount: Int
    /// How many operations the partition holds.
    public let operationCount: Int
    /// The tail of the longest linearizable prefix, one line per operation, oldest first;
    /// at most `LinearizabilityViolation.reportedPrefixOperationsMax` lines.
    public let linearizedPrefix: [String]
    /// The operations that could not be linearized next, one line each.
    public let unlinearizable: [String]
    /// The whole report, several lines.
    public let description: String

    /// How much of the prefix a report shows: the end of it is what matters.
    public static let reportedPrefixOperationsMax = 30

    init(
        partition: String,
        linearizedCount: Int,
        operationCount: Int,
        linearizedPrefix: [String],
        unlinearizable: [String],
        description: String
    ) {
        precondition(linearizedCount < operationCount, "a violation leaves some operation unlinearized")
        precondition(linearizedPrefix.count <= Self.reportedPrefixOperationsMax)
        precondition(!unlinearizable.isEmpty, "a violation names the operations it could not linearize")
        self.partition = partition
        self.linearizedCount = linearizedCount
        self.operationCount = operationCount
        self.linearizedPrefix = linearizedPrefix
        self.unlinearizable = unlinearizable
        self.description = description
    }
}
