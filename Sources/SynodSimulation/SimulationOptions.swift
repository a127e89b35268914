import Paxos
import ReplicaRuntime

/// A deliberately broken replica, to prove that the simulator and its checkers catch
/// the class of bug they exist for.
public enum InjectedBug: String, CaseIterable, Sendable {
    /// The acceptor loses its promised ballot on restart (it still has its accepted
    /// values): it may then accept a lower ballot than one it promised.
    case forgetPromise = "forget-promise"
    /// The runtime acknowledges without fsyncing: records reach the disk only when the
    /// simulated OS writes dirty pages back (about every 30 ticks), so a crash forgets
    /// promises and acceptances already announced.
    case noFsync = "no-fsync"
    /// The runtime lets acceptors' `accepted` replies leave before their fsync, as it may
    /// a leader's `accept` requests: a crash in that window forgets a vote that counted.
    case acceptedBeforeFsync = "accepted-before-fsync"
    /// The runtime releases a turn's output (messages, answers) as soon as its records are
    /// appended, before the background sync made them durable: a crash in between forgets
    /// what was announced.
    case releaseBeforeSync = "release-before-sync"
    /// The runtime's early accepts, sent while a sync is pending, piggyback a chosen prefix
    /// that counts the leader's own vote before it is durable.
    case earlyAcceptsUncapped = "early-accepts-uncapped"
    /// The runtime's injected acceptor failure recovers without replaying the log.
    case acceptorRecoversWithoutLog = "acceptor-recovers-without-log"
    /// The watch hub loses one event of every fifth revision it sends: the watch checker
    /// (`Simulation+Watch.swift`) must catch the gap.
    case dropWatchEvent = "drop-watch-event"
    /// Followers track lease deadlines on their own clocks (which keep-alives never reach)
    /// and propose expiries: kept-alive leases expire (the lease checker's bug).
    case followerExpiresLeases = "follower-expires-leases"
    /// Leases as before epochs existed (no epoch logged, expiries carry none): an expiry
    /// accepted only by a cut-off leader's acceptor and chosen after later leaders renewed the
    /// lease deletes it (the lease checker's bug).
    case noLeaseEpochs = "no-lease-epochs"
}

/// Everything one simulated run depends on. Same options ⇒ identical run.
public struct SimulationOptions: Sendable {
    public var seed: UInt64
    /// 1, 3, 5 or 7.
    public var replicaCount: Int
    /// Client operations issued in the fault phase, over all clients.
    public var operationCount: Int
    public var clientCount: Int
    /// A small key set makes operations contend.
    public var keyCount: Int
    public var bug: InjectedBug?
    /// Bound of the fault phase, in simulated ticks.
    public var faultPhaseTicksMax: Int
    /// Bound of the liveness phase: every pending request completes and every replica
    /// converges within this many ticks after everything heals.
    public var livenessTicksMax: Int
    /// Take a state-machine snapshot and compact the log every this many applied slots.
    public var snapshotEverySlots: Int
    /// `RuntimeOptions.snapshotLogShare`. 0 by default: runs are short and their stores
    /// small, and the slot count alone takes the most snapshots (installs, compactions) per
    /// run; `synod simulate --snapshot-log-share 1` runs the server's default, and so do
    /// 100 seeds of the test suite (`SimulationTests.serverSnapshotPacing`).
    public var snapshotLogShare = 0
    /// Trace lines kept for a failure report.
    public var traceTailLines: Int
    /// Users, roles and permission checks in the run (Simulation+Auth.swift).
    public var auth = false
    /// Lease holders (`Simulation+Leases.swift`); each runs a few grant/keep-alive cycles.
    public var leaseHolderCount: Int

    public init(
        seed: UInt64,
        replicaCount: Int = 3,
        operationCount: Int = 60,
        clientCount: Int = 4,
        keyCount: Int = 3,
        bug: InjectedBug? = nil,
        faultPhaseTicksMax: Int = 3_000,
        livenessTicksMax: Int = 3_000,
        snapshotEverySlots: Int = 16,
        traceTailLines: Int = 60,
        leaseHolderCount: Int = 2
    ) {
        self.seed = seed
        self.replicaCount = replicaCount
        self.operationCount = operationCount
        self.clientCount = clientCount
        self.keyCount = keyCount
        self.bug = bug
        self.faultPhaseTicksMax = faultPhaseTicksMax
        self.livenessTicksMax = livenessTicksMax
        self.snapshotEverySlots = snapshotEverySlots
        self.traceTailLines = traceTailLines
        self.leaseHolderCount = leaseHolderCount
    }
}

/// Fault rates, derived from the seed so that seeds explore different mixes (swarm
/// testing: some seeds lose many messages, others crash often, others partition).
struct FaultPlan: CustomStringConvertible {
    var lossPercent: UInt64
    var duplicatePercent: UInt64
    /// Typical one-way delay bound in time units (a tick is `Simulation.tickUnits`).
    var delayUnitsMax: UInt64
    var longDelayPercent: UInt64
    /// Per tick, chance (in 1/10,000) of a partition change.
    var partitionPerTenThousand: UInt64
    /// Per tick, chance (in 1/10,000) that some replica crashes.
    var crashPerTenThousand: UInt64
    var restartDelayTicksMax: UInt64
    /// The runtime's own fault injector (per unit of time), on in some seeds.
    var faults: FaultModel

    init(random: inout SplitMix64) {
        lossPercent = random.next() % 4 == 0 ? 0 : random.next() % 20
        duplicatePercent = random.next() % 10
        delayUnitsMax = 2 + random.next() % 12
        longDelayPercent = random.next() % 5
        partitionPerTenThousand = 20 + random.next() % 200
        if random.next() % 3 == 0 {
            // Crash-heavy seeds: replicas die often and come back fast, so a replica's
            // lives overlap with messages of ballots it saw in an earlier life.
            crashPerTenThousand = 300 + random.next() % 1_200
            restartDelayTicksMax = 2 + random.next() % 8
        } else {
            crashPerTenThousand = 20 + random.next() % 250
            restartDelayTicksMax = 2 + random.next() % 60
        }
        switch random.next() % 3 {
        case 0:
            // Mean time between failures 0.5–5 s of simulated time (1 unit = 1 ms), down up to 0.4 s.
            faults = FaultModel(
                mode: .acceptor, meanMillisecondsBetweenFailures: 300 + random.next() % 3_000,
                downtimeMillisecondsMax: 50 + random.next() % 400)
        case 1:
            faults = FaultModel(
                mode: .replica, meanMillisecondsBetweenFailures: 500 + random.next() % 4_500,
                downtimeMillisecondsMax: 400)
        default:
            faults = .off
        }
    }

    var description: String {
        "loss=\(lossPercent)% dup=\(duplicatePercent)% delay≤\(delayUnitsMax)u long=\(longDelayPercent)% "
            + "partition=\(partitionPerTenThousand)‱ crash=\(crashPerTenThousand)‱ restart≤\(restartDelayTicksMax)t "
            + "injector=\(faults)"
    }
}
