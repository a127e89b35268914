import NIOCore

/// Reconnect delays: exponential from `initial` to `max`, with "equal jitter" — each delay
/// drawn uniformly from the upper half of its exponential ceiling, so replicas that lost
/// a peer at the same moment do not redial it in lockstep.
struct Backoff: Hashable, Sendable {
    let initial: TimeAmount
    let max: TimeAmount

    init(initial: TimeAmount, max: TimeAmount) {
        precondition(initial > .zero, "backoff initial \(initial) must be positive")
        precondition(initial <= max, "backoff initial \(initial) exceeds max \(max)")
        self.initial = initial
        self.max = max
    }

    /// The ceiling of attempt `attempt` (0-based): `initial · 2^attempt`, capped at `max`.
    func ceiling(attempt: Int) -> TimeAmount {
        precondition(attempt >= 0, "negative attempt \(attempt)")
        let shift = Swift.min(attempt, 62)
        let (scaled, overflow) = initial.nanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        if overflow || scaled > max.nanoseconds { return max }
        return .nanoseconds(scaled)
    }

    /// The delay before attempt `attempt + 1`, in `[ceiling/2, ceiling]`.
    func delay<Generator: RandomNumberGenerator>(attempt: Int, using generator: inout Generator) -> TimeAmount {
        let ceiling = ceiling(attempt: attempt).nanoseconds
        let delay = Int64.random(in: (ceiling / 2)...ceiling, using: &generator)
        // Invariant: a delay never exceeds the cap and is never negative.
        precondition(delay >= 0, "negative backoff delay")
        precondition(delay <= max.nanoseconds, "backoff delay above max")
        return .nanoseconds(delay)
    }
}
