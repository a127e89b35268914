import Paxos
@_exported import ReplicaRuntime
import SynodTLS

/// A host and port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, with one clear line on error.
    public init(parsing text: String, what: String) throws(ServerConfigurationError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65_535).contains(port), colon != text.startIndex
        else {
            throw .invalid("\(what) '\(text)' is not host:port (port 1–65535)")
        }
        self.init(host: String(text[..<colon]), port: port)
    }

    public var description: String { "\(host):\(port)" }
}

public enum ServerConfigurationError: Error, CustomStringConvertible, Equatable {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let text): return text
        }
    }
}

/// How reads are served when the request does not say.
public enum ReadConsistency: String, Sendable, CaseIterable {
    /// Read index through the leader: never stale.
    case linearizable
    /// Served from this replica's state machine: fast, possibly stale.
    case serializable
}

/// Everything `synod serve` needs, validated at construction.
public struct ServerConfiguration: Sendable {
    public var replicaID: ReplicaID
    /// Every replica's peer address, this one's included.
    public var peers: [ReplicaID: Endpoint]
    /// Every replica's client address where known (for MemberList).
    public var clientEndpoints: [ReplicaID: Endpoint]
    public var listenClient: Endpoint
    public var listenPeer: Endpoint
    public var dataDirectory: String
    public var defaultConsistency: ReadConsistency
    /// Real time per Paxos tick.
    public var tickMilliseconds: Int
    public var heartbeatIntervalTicks: Int
    public var electionTimeoutTicks: Int
    /// A client request waits at most this long for its answer.
    public var requestTimeoutMilliseconds: Int
    /// Snapshot the state machine and compact the log every this many applied slots.
    public var snapshotEverySlots: Int
    /// `RuntimeOptions.snapshotLogShare` (`--snapshot-log-share`).
    public var snapshotLogShare: Int
    /// Largest request accepted, like etcd's `--max-request-bytes` (1.5 MiB).
    public var requestBytesMax: Int
    /// The seed's random acceptor failures, per unit of time (`FaultModel`).
    public var faults: FaultModel
    /// etcd's `--auto-compaction-mode` / `--auto-compaction-retention` (nil: off, as etcd).
    public var autoCompaction: AutoCompaction?
    /// etcd's `--quota-backend-bytes`, resolved (`ServerConfiguration+Quota.swift`).
    public var quotaBytes: Int = RuntimeOptions.quotaBytesDefault
    /// Client requests waiting for consensus or a read index at once, at most; more are
    /// refused at once with etcd's "too many requests" (`--max-waiting-requests`).
    public var requestsWaitingMax: Int = Self.requestsWaitingMaxDefault
    public static let requestsWaitingMaxDefault = RuntimeOptions.requestsWaitingMaxDefault
    /// Event loops serving client connections (`--client-event-loops`). The first is the
    /// replica's own loop (runtime and peer transport): a connection there hands nothing
    /// over; connections on the others hand each request to it. More than one may let a
    /// leader that serves many clients spread their HTTP/2 work over more cores on a machine
    /// of its own; on the 2-core machine that runs a whole cluster, two were slower in every
    /// case measured (docs/BENCHMARKS.md), hence the default of one.
    public var clientEventLoops: Int = Self.clientEventLoopsDefault
    public static let clientEventLoopsDefault = 1
    public static let clientEventLoopsMax = 16
    public var randomSeed: UInt64
    /// TLS on the client API (etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`); nil: plaintext.
    public var clientTLS: ServerTLSFiles? = nil
    /// TLS between replicas (`--peer-cert-file`, …, `--peer-client-cert-auth`); nil: plaintext.
    public var peerTLS: ServerTLSFiles? = nil

    public init(
        replicaID: ReplicaID,
        peers: [ReplicaID: Endpoint],
        clientEndpoints: [ReplicaID: Endpoint] = [:],
        listenClient: Endpoint,
        listenPeer: Endpoint,
        dataDirectory: String,
        defaultConsistency: ReadConsistency = .linearizable,
        tickMilliseconds: Int = 10,
        heartbeatIntervalTicks: Int = 3,
        electionTimeoutTicks: Int = 15,
        requestTimeoutMilliseconds: Int = 5_000,
        snapshotEverySlots: Int = 10_000,
        snapshotLogShare: Int = RuntimeOptions.snapshotLogShareDefault,
        requestBytesMax: Int = 1_572_864,
        faults: FaultModel = .off,
        autoCompaction: AutoCompaction? = nil,
        randomSeed: UInt64 = UInt64.random(in: 1...UInt64.max)
    ) throws(ServerConfigurationError) {
        self.replicaID = replicaID
        self.peers = peers
        self.clientEndpoints = clientEndpoints
        self.listenClient = listenClient
        self.listenPeer = listenPeer
        self.dataDirectory = dataDirectory
        self.defaultConsistency = defaultConsistency
        self.tickMilliseconds = tickMilliseconds
        self.heartbeatIntervalTicks = heartbeatIntervalTicks
        self.electionTimeoutTicks = electionTimeoutTicks
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        self.snapshotEverySlots = snapshotEverySlots
        self.snapshotLogShare = snapshotLogShare
        self.requestBytesMax = requestBytesMax
        self.faults = faults
        self.autoCompaction = autoCompaction
        self.randomSeed = randomSeed
        guard peers[replicaID] != nil else {
            throw .invalid("--peers must include this replica's own id \(replicaID)")
        }
        guard !dataDirectory.isEmpty else { throw .invalid("--data-dir must not be empty") }
        if faults.isOn && faults.meanMillisecondsBetweenFailures < UInt64(tickMilliseconds) {
            throw .invalid("--fail-every must be at least one tick (\(tickMilliseconds) ms), not \(faults.meanMillisecondsBetweenFailures)")
        }
        guard tickMilliseconds >= 1 else { throw .invalid("tick must be at least 1 ms") }
        guard electionTimeoutTicks >= 3 * heartbeatIntervalTicks else {
            throw .invalid(
                "--election-timeout (\(electionTimeoutTicks * tickMilliseconds) ms) must be at least 3 × --heartbeat-interval "
                    + "(\(heartbeatIntervalTicks * tickMilliseconds) ms)")
        }
        guard snapshotEverySlots >= 1 else { throw .invalid("--snapshot-every must be at least 1") }
        guard (0...RuntimeOptions.snapshotLogShareMax).contains(snapshotLogShare) else {
            throw .invalid(
                "--snapshot-log-share must be between 0 and \(RuntimeOptions.snapshotLogShareMax), not \(snapshotLogShare)")
        }
        guard requestTimeoutMilliseconds >= 1 else { throw .invalid("request timeout must be positive") }
        do {
            _ = try paxosConfiguration()
        } catch {
            throw .invalid(error.description)
        }
    }

    /// Defaults for a LAN (loopback round trip ≈ 0.1 ms): a heartbeat every 30 ms and a
    /// randomized 150–300 ms election timeout, so a failed leader is replaced in about a
    /// quarter of a second. Across data centers raise both with the round-trip time (etcd's
    /// advice: heartbeat ≈ the RTT, election timeout ≥ 10 × the heartbeat).
    public static let heartbeatIntervalMillisecondsDefault = 30
    public static let electionTimeoutMillisecondsDefault = 150

    /// Milliseconds as whole ticks (at least one), for a flag named `what`.
    public static func ticks(_ milliseconds: Int, tickMilliseconds: Int, what: String) throws(ServerConfigurationError) -> Int {
        guard tickMilliseconds >= 1 else { throw .invalid("--tick-ms must be at least 1") }
        guard milliseconds >= tickMilliseconds, milliseconds % tickMilliseconds == 0 else {
            throw .invalid("\(what) must be a positive multiple of the tick (\(tickMilliseconds) ms), not \(milliseconds)")
        }
        return milliseconds / tickMilliseconds
    }

    /// etcd's auto-compaction flags: `revision` with a count, or `periodic` with a duration
    /// (`90s`, `30m`, `1h`, `500ms`; a bare number is hours, as etcd reads it). An empty
    /// retention, or `0`, turns it off.
    public static func autoCompaction(mode: String, retention: String) throws(ServerConfigurationError) -> AutoCompaction? {
        let text = retention.trimmingCharacters(in: .whitespaces)
        if text.isEmpty || text == "0" { return nil }
        switch mode {
        case "revision":
            guard let count = Int64(text), count > 0 else {
                throw .invalid("--auto-compaction-retention must be a positive revision count in revision mode, not '\(retention)'")
            }
            return .revision(retain: count)
        case "periodic":
            let units: [(suffix: String, milliseconds: Double)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
            for unit in units where text.hasSuffix(unit.suffix) {
                if let value = Double(text.dropLast(unit.suffix.count)), value > 0 {
                    return .periodic(milliseconds: UInt64(value * unit.milliseconds))
                }
            }
            if let hours = Double(text), hours > 0 { return .periodic(milliseconds: UInt64(hours * 3_600_000)) }
            throw .invalid("--auto-compaction-retention must be a duration like 1h, 30m or 90s in periodic mode, not '\(retention)'")
        default:
            throw .invalid("--auto-compaction-mode must be periodic or revision, not '\(mode)'")
        }
    }

    /// The consensus core's configuration for this replica.
    public func paxosConfiguration() throws(ConfigurationError) -> Configuration {
        try Configuration(
            replicaID: replicaID, replicas: Array(peers.keys), heartbeatIntervalTicks: heartbeatIntervalTicks,
            electionTimeoutTicks: electionTimeoutTicks, randomSeed: randomSeed)
    }

    /// A stable id of this cluster, from its membership (etcd's `cluster_id`).
    public var clusterID: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for id in peers.keys.sorted() {
            for byte in "\(id)=\(peers[id]!)".utf8 {
                hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
            }
        }
        return hash
    }

    /// Parses `1=127.0.0.1:2380,2=127.0.0.1:2382`.
    public static func parseMembers(_ text: String, what: String) throws(ServerConfigurationError)
        -> [ReplicaID: Endpoint]
    {
        var members: [ReplicaID: Endpoint] = [:]
        for item in text.split(separator: ",") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let id = ReplicaID(parts[0]), id >= 1 else {
                throw .invalid("\(what) entry '\(item)' is not id=host:port with an id ≥ 1")
            }
            guard members[id] == nil else { throw .invalid("\(what) names replica \(id) twice") }
            members[id] = try Endpoint(parsing: String(parts[1]), what: "\(what) address")
        }
        guard !members.isEmpty else { throw .invalid("\(what) is empty") }
        return members
    }
}
