/// Lowe's memoization of configurations already explored, strengthened for operations with
/// an unknown outcome.
///
/// A configuration is (observed operations linearized, unobserved operations linearized,
/// model state). Linearizing an unobserved operation is never required, so a configuration
/// with fewer unobserved operations linearized and otherwise equal can do everything the
/// other can: it dominates it. A configuration is worth exploring only if no configuration
/// seen before dominates it (equality is the plain Porcupine cache hit).
struct ConfigurationMemo<State: Hashable> {
    private struct Key: Hashable {
        let observed: LinearizedSet
        let state: State
    }

    /// For each (observed set, state): the unobserved sets seen, none a subset of another.
    private var unobservedSetsSeen: [Key: [LinearizedSet]] = [:]

    /// Records the configuration and returns true, or returns false if one seen before
    /// dominates it.
    mutating func visit(observed: LinearizedSet, unobserved: LinearizedSet, state: State) -> Bool {
        let key = Key(observed: observed, state: state)
        var seen = unobservedSetsSeen[key, default: []]
        if seen.contains(where: { $0.isSubset(of: unobserved) }) {
            return false
        }
        // Whatever the new configuration dominates will never need a lookup hit again.
        seen.removeAll { unobserved.isSubset(of: $0) }
        seen.append(unobserved)
        unobservedSetsSeen[key] = seen
        return true
    }
}
