import Paxos

/// How the seed's random acceptor failures behave: per unit of *time* (not per message,
/// which would make the busiest replica — the leader — fail most, and scale failures with
/// load). Each replica fails on its own at random moments — a memoryless process with a
/// mean time between failures — and recovers after a random downtime up to a bound.
public struct FaultModel: Sendable, Hashable, CustomStringConvertible {
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// Only the acceptor role fails: it answers no prepare and no accept, and its
        /// in-memory state is rebuilt from the write-ahead log on recovery, while the
        /// replica's proposer and learner keep running.
        case acceptor
        /// The whole replica fails: proposer, learner, waiting requests and every piece of
        /// in-memory state, then recovers from its write-ahead log like a restart.
        case replica
    }

    public var mode: Mode
    /// Mean time between a replica's failures, in milliseconds; 0 turns failures off.
    public var meanMillisecondsBetweenFailures: UInt64
    /// Longest downtime of one failure, in milliseconds (drawn uniformly from 0 up to it).
    public var downtimeMillisecondsMax: UInt64

    public init(mode: Mode = .acceptor, meanMillisecondsBetweenFailures: UInt64 = 0, downtimeMillisecondsMax: UInt64 = 1_500) {
        self.mode = mode
        self.meanMillisecondsBetweenFailures = meanMillisecondsBetweenFailures
        self.downtimeMillisecondsMax = downtimeMillisecondsMax
    }

    public static let off = FaultModel()

    /// `--chaos`: each acceptor fails every 6 s on average for up to 1.5 s (0.75 s on
    /// average), so on average about one acceptor in eight is down at any moment.
    public static let chaos = FaultModel(mode: .acceptor, meanMillisecondsBetweenFailures: 6_000, downtimeMillisecondsMax: 1_500)

    public var isOn: Bool { meanMillisecondsBetweenFailures > 0 }

    public var description: String {
        guard isOn else { return "off" }
        return "\(mode.rawValue) failures every \(meanMillisecondsBetweenFailures) ms on average, "
            + "down for up to \(downtimeMillisecondsMax) ms"
    }
}

/// Draws a replica's failures and recoveries from its own seeded generator. Checked once
/// per tick: a failure happens in a tick of `tickMilliseconds` with probability
/// `tick / mean` — the discrete form of exponential inter-failure times.
struct FaultInjector {
    let model: FaultModel
    let tickMilliseconds: UInt64
    private var random: SplitMix64
    private(set) var downUntil: RuntimeInstant?
    private(set) var failures = 0
    private(set) var recoveries = 0

    init(model: FaultModel, tickMilliseconds: UInt64, seed: UInt64) {
        self.model = model
        self.tickMilliseconds = max(1, tickMilliseconds)
        random = SplitMix64(seed: seed ^ 0xFA17_FA17)
    }

    var isDown: Bool { downUntil != nil }

    /// Whether the replica (or its acceptor) fails in this tick; if so, it is now down and
    /// the downtime in milliseconds is returned.
    mutating func failsThisTick(now: RuntimeInstant) -> UInt64? {
        guard model.isOn, downUntil == nil else { return nil }
        // P(fail in one tick) = tick / mean, drawn with 2^-32 resolution.
        let threshold = (UInt64(1) << 32) * tickMilliseconds / model.meanMillisecondsBetweenFailures
        guard random.next() >> 32 < threshold else { return nil }
        failures += 1
        let downtime = model.downtimeMillisecondsMax == 0 ? 0 : random.next() % (model.downtimeMillisecondsMax + 1)
        downUntil = now.advanced(byMilliseconds: downtime)
        return downtime
    }

    /// Whether a failed replica's downtime is over (it then counts as recovered).
    mutating func recoversNow(now: RuntimeInstant) -> Bool {
        guard let until = downUntil, now >= until else { return false }
        downUntil = nil
        recoveries += 1
        return true
    }
}
