import ArgumentParser
import ClusterLauncher
import Foundation
import Synchronization
import Logging
import Paxos
import Storage
import SynodServer

/// `synod serve`: one replica.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run one Synod replica (the etcd v3 API for clients, Paxos with its peers).",
        discussion: """
            Example, replica 1 of 3:
              synod serve --id 1 --peers 1=127.0.0.1:2380,2=127.0.0.1:2382,3=127.0.0.1:2384 \\
                --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380 --data-dir ./synod-data/r1

            The replica locks its data directory (<data-dir>/LOCK, which names the holder's pid) \
            before reading anything in it; a second replica on the same directory exits at once.
            """
    )

    @Option(help: "This replica's id (1-based).")
    var id: UInt32

    @Option(help: "Every replica's peer address, this one's included: id=host:port,…")
    var peers: String

    @Option(help: "Every replica's client address (for member list): id=host:port,…")
    var clientUrls: String?

    @Option(help: "Where this replica keeps its write-ahead log and snapshots.")
    var dataDir: String

    @Option(help: "Address for clients (the etcd v3 gRPC API).")
    var listenClient: String = "127.0.0.1:2379"

    @Option(help: "Address for the other replicas.")
    var listenPeer: String?

    @Option(help: "Default read consistency: linearizable or serializable.")
    var consistency: String = "linearizable"

    @Option(help: "Random failures: mean milliseconds between two failures of this replica (0 = off).")
    var failEvery: Int = 0

    @Option(help: "Longest downtime of a random failure, in milliseconds.")
    var failDowntime: Int = 1_500

    @Option(help: "What a random failure takes down: acceptor (only the acceptor role) or replica (everything).")
    var failMode: String = "acceptor"

    @Option(help: "Snapshot the state machine and compact the log every this many slots.")
    var snapshotEvery: Int = 10_000

    @Option(help: "Milliseconds per Paxos tick (the unit of the two timings below).")
    var tickMs: Int = 10

    @Option(help: "Automatic compaction of the history: periodic or revision (like etcd's).")
    var autoCompactionMode: String = "periodic"

    @Option(help: "What automatic compaction keeps: a duration (1h, 30m, 90s) in periodic mode, a revision count in revision mode; 0 = off.")
    var autoCompactionRetention: String = "0"

    @Option(help: ArgumentHelp(ServerConfiguration.quotaHelp))
    var quotaBackendBytes: Int = 0

    @Option(help: "Milliseconds between a leader's heartbeats (like etcd's --heartbeat-interval).")
    var heartbeatInterval: Int = ServerConfiguration.heartbeatIntervalMillisecondsDefault

    @Option(help: "Milliseconds without a leader before a follower campaigns; randomized up to twice that (like etcd's --election-timeout).")
    var electionTimeout: Int = ServerConfiguration.electionTimeoutMillisecondsDefault
    @Option(
        name: .customLong("listen-metrics-urls"),
        help: "Also serve /metrics, /health, /livez, /readyz and /status here (no gRPC): http://host:port,…")
    var listenMetricsUrls: String?

    @Flag(name: .customLong(String(SupervisorWatch.flag.dropFirst(2))), help: ArgumentHelp(SupervisorWatch.help))
    var exitOnStdinEOF = false

    func run() async throws {
        let configuration: ServerConfiguration
        var monitoring = MonitoringOptions()
        do {
            if let listenMetricsUrls {
                monitoring.metricsListeners = try MonitoringOptions.parseMetricsURLs(listenMetricsUrls)
            }
            let members = try ServerConfiguration.parseMembers(peers, what: "--peers")
            let clients = try clientUrls.map { try ServerConfiguration.parseMembers($0, what: "--client-urls") } ?? [:]
            guard let consistency = ReadConsistency(rawValue: consistency) else {
                throw ServerConfigurationError.invalid(
                    "--consistency must be linearizable or serializable, not '\(self.consistency)'")
            }
            guard let mode = FaultModel.Mode(rawValue: failMode) else {
                throw ServerConfigurationError.invalid("--fail-mode must be acceptor or replica, not '\(failMode)'")
            }
            guard failEvery >= 0, failDowntime >= 0 else {
                throw ServerConfigurationError.invalid("--fail-every and --fail-downtime must not be negative")
            }
            let faults = FaultModel(
                mode: mode, meanMillisecondsBetweenFailures: UInt64(failEvery),
                downtimeMillisecondsMax: UInt64(failDowntime))
            let listenPeer = try listenPeer.map { try Endpoint(parsing: $0, what: "--listen-peer") }
            guard let ownPeer = members[id] else {
                throw ServerConfigurationError.invalid("--peers must include this replica's own id \(id)")
            }
            var resolved = try ServerConfiguration(
                replicaID: id, peers: members, clientEndpoints: clients,
                listenClient: try Endpoint(parsing: listenClient, what: "--listen-client"),
                listenPeer: listenPeer ?? ownPeer, dataDirectory: dataDir, defaultConsistency: consistency,
                tickMilliseconds: tickMs,
                heartbeatIntervalTicks: try ServerConfiguration.ticks(heartbeatInterval, tickMilliseconds: tickMs, what: "--heartbeat-interval"),
                electionTimeoutTicks: try ServerConfiguration.ticks(electionTimeout, tickMilliseconds: tickMs, what: "--election-timeout"),
                snapshotEverySlots: snapshotEvery, faults: faults,
                autoCompaction: try ServerConfiguration.autoCompaction(mode: autoCompactionMode, retention: autoCompactionRetention))
            resolved.quotaBytes = ServerConfiguration.quotaBytes(flag: quotaBackendBytes)
            configuration = resolved
        } catch let error as ServerConfigurationError {
            // One line naming the problem, no usage block.
            FileHandle.standardError.write(Data("synod serve: \(error.description)\n".utf8))
            throw ExitCode.validationFailure
        }
        // SIGTERM/SIGINT become stop requests from here on, so one that arrives while the
        // replica is still starting stops it gracefully once it can, not by the default action.
        let stopRequest = StopRequest()
        stopRequest.handleSignals([SIGTERM, SIGINT])
        let supervisorLost = SupervisorLoss()
        if exitOnStdinEOF {
            // The whole cluster is going down with its supervisor: no leadership handover.
            SupervisorWatch.start(
                name: "synod serve r\(id)", onLoss: { supervisorLost.set() }, stop: { stopRequest.request() })
        }
        // Before anything in the directory is read: two replicas on one write-ahead log
        // would each trust promises the other may break.
        let lock: DataDirectoryLock
        do {
            lock = try DataDirectoryLock(directory: dataDir)
        } catch {
            FileHandle.standardError.write(Data("synod serve: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
        defer { withExtendedLifetime(lock) {} }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "synod.r\(id)")
        do {
            try await SynodServer(
                configuration: configuration, monitoring: monitoring, logger: logger,
                stopRequest: stopRequest, handsOverLeadership: { !supervisorLost.isSet }
            ).run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }
}

/// Set when the supervisor of this replica is gone (see `SupervisorWatch`).
final class SupervisorLoss: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
