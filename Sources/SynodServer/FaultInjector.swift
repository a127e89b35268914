import Paxos

/// The seed's random acceptor failures (`--fail-rate`, `--fail-downtime`): before each
/// Paxos message the acceptor "crashes" with probability `rate`, stays down for a random
/// time up to the downtime, then recovers through the real write-ahead-log recovery.
struct FaultInjector {
    let rate: Double
    let downtimeMilliseconds: Int
    private var random: SplitMix64
    private var downUntil: ContinuousClock.Instant?
    private(set) var failures = 0

    init(rate: Double, downtimeMilliseconds: Int, seed: UInt64) {
        self.rate = rate
        self.downtimeMilliseconds = downtimeMilliseconds
        random = SplitMix64(seed: seed ^ 0xFA17_FA17)
    }

    /// Whether the acceptor fails before handling the next message.
    mutating func shouldFail(now: ContinuousClock.Instant) -> Bool {
        guard rate > 0, downUntil == nil else { return false }
        return Double(random.next() >> 11) / Double(1 << 53) < rate
    }

    /// Records a failure; returns its downtime in milliseconds.
    mutating func fail(now: ContinuousClock.Instant) -> Int {
        failures += 1
        let downtime = downtimeMilliseconds == 0 ? 0 : Int(random.next() % UInt64(downtimeMilliseconds + 1))
        downUntil = now.advanced(by: .milliseconds(downtime))
        return downtime
    }

    /// Whether a failed acceptor's downtime is over.
    mutating func shouldRecover(now: ContinuousClock.Instant) -> Bool {
        guard let until = downUntil, now >= until else { return false }
        downUntil = nil
        return true
    }
}
