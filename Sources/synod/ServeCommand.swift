import ArgumentParser
import ClusterLauncher
import Foundation
import Synchronization
import Logging
import Paxos
import Storage
import SynodServer
import SynodTLS

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

            TLS, with etcd's flags: --cert-file/--key-file serve the client API over TLS (ALPN h2, \
            HTTP/1.1 monitoring on the same port), --client-cert-auth with --trusted-ca-file requires \
            clients to present a certificate of that CA (its common name is the client's user name). \
            The --peer-* flags do the same between replicas; a peer certificate must also have the \
            common name r<id> and be valid for the replica's host in --peers. Without them, \
            everything is plaintext. `synod cluster --tls` makes such certificates.
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

    @Option(
        help: ArgumentHelp(
            "Seed of this replica's random choices: when it fails (--fail-every) and its election timeouts (random when omitted).",
            discussion: "With failures on, the log names the seed; the same seed repeats which ticks fail and for how long."))
    var seed: UInt64?

    @Option(help: "Snapshot the state machine and compact the log every this many slots.")
    var snapshotEvery: Int = 10_000

    @Option(
        help: ArgumentHelp(
            "A snapshot also waits until the log took in 1/N of the last snapshot's size (0: --snapshot-every alone).",
            discussion: "Bounds what snapshots cost as the store grows: at most N bytes written per byte of commands, with at most 256 MiB of commands between snapshots."))
    var snapshotLogShare: Int = RuntimeOptions.snapshotLogShareDefault

    @Option(help: "Milliseconds per Paxos tick (the unit of the two timings below).")
    var tickMs: Int = 10

    @Option(help: "Automatic compaction of the history: periodic or revision (like etcd's).")
    var autoCompactionMode: String = "periodic"

    @Option(help: "What automatic compaction keeps: a duration (1h, 30m, 90s) in periodic mode, a revision count in revision mode; 0 = off.")
    var autoCompactionRetention: String = "0"

    @Option(help: ArgumentHelp(ServerConfiguration.quotaHelp))
    var quotaBackendBytes: Int = 0

    @Option(help: "Client requests a replica holds waiting for consensus at once; more are refused at once with etcd's \"too many requests\" (ResourceExhausted) for the client to retry.")
    var maxWaitingRequests: Int = ServerConfiguration.requestsWaitingMaxDefault

    @Option(help: "Event loops (threads) serving client connections; the first is the replica's own, whose connections hand no request to another thread.")
    var clientEventLoops: Int = ServerConfiguration.clientEventLoopsDefault

    @Option(help: "Milliseconds between a leader's heartbeats (like etcd's --heartbeat-interval).")
    var heartbeatInterval: Int = ServerConfiguration.heartbeatIntervalMillisecondsDefault

    @Option(help: "Milliseconds without a leader before a follower campaigns; randomized up to twice that (like etcd's --election-timeout).")
    var electionTimeout: Int = ServerConfiguration.electionTimeoutMillisecondsDefault
    @Option(
        name: .customLong("listen-metrics-urls"),
        help: "Also serve /metrics, /health, /livez, /readyz and /status here (no gRPC): http://host:port,…")
    var listenMetricsUrls: String?

    @Option(help: "TLS certificate (PEM) of the client API; with --key-file, clients must use TLS.")
    var certFile: String?

    @Option(help: "Private key (PEM) of --cert-file.")
    var keyFile: String?

    @Option(help: "CA certificate (PEM) that signs client certificates, for --client-cert-auth.")
    var trustedCaFile: String?

    @Flag(help: "Require every client to present a certificate signed by --trusted-ca-file.")
    var clientCertAuth = false

    @Option(help: "TLS certificate (PEM) of this replica toward its peers: common name r<id>, valid for its host in --peers.")
    var peerCertFile: String?

    @Option(help: "Private key (PEM) of --peer-cert-file.")
    var peerKeyFile: String?

    @Option(help: "CA certificate (PEM) that signs the peers' certificates (the system's roots if not given).")
    var peerTrustedCaFile: String?

    @Flag(help: "Require every peer to present a certificate signed by --peer-trusted-ca-file that names it.")
    var peerClientCertAuth = false

    @Flag(name: .customLong(String(SupervisorWatch.flag.dropFirst(2))), help: ArgumentHelp(SupervisorWatch.help))
    var exitOnStdinEOF = false

    /// Both planes' TLS files from the flags, every file loaded once so that a bad one stops
    /// the replica at start-up with one line.
    func tlsFiles() throws(TLSSetupError) -> (client: ServerTLSFiles?, peer: ServerTLSFiles?) {
        let client = try ServerTLSFiles.from(
            certificateFile: certFile, keyFile: keyFile, trustedCAFile: trustedCaFile,
            clientCertificateAuth: clientCertAuth, flagPrefix: "")
        let peer = try ServerTLSFiles.from(
            certificateFile: peerCertFile, keyFile: peerKeyFile, trustedCAFile: peerTrustedCaFile,
            clientCertificateAuth: peerClientCertAuth, flagPrefix: "peer-")
        _ = try client?.serverContext()
        _ = try peer?.serverContext()
        _ = try peer?.dialingContext()
        return (client, peer)
    }

    func run() async throws {
        var configuration: ServerConfiguration
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
                snapshotEverySlots: snapshotEvery, snapshotLogShare: snapshotLogShare, faults: faults,
                autoCompaction: try ServerConfiguration.autoCompaction(mode: autoCompactionMode, retention: autoCompactionRetention))
            if let seed { resolved.randomSeed = seed }
            resolved.quotaBytes = ServerConfiguration.quotaBytes(flag: quotaBackendBytes)
            guard maxWaitingRequests >= 1 else {
                throw ServerConfigurationError.invalid("--max-waiting-requests must be at least 1 (got \(maxWaitingRequests))")
            }
            resolved.requestsWaitingMax = maxWaitingRequests
            guard (1...ServerConfiguration.clientEventLoopsMax).contains(clientEventLoops) else {
                throw ServerConfigurationError.invalid(
                    "--client-event-loops must be 1 to \(ServerConfiguration.clientEventLoopsMax) (got \(clientEventLoops))")
            }
            resolved.clientEventLoops = clientEventLoops
            (resolved.clientTLS, resolved.peerTLS) = try tlsFiles()
            configuration = resolved
        } catch let error as ServerConfigurationError {
            // One line naming the problem, no usage block.
            FileHandle.standardError.write(Data("synod serve: \(error.description)\n".utf8))
            throw ExitCode.validationFailure
        } catch let error as TLSSetupError {
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
