import Prometheus
import Synchronization
import Transport
import UnaryGRPC

/// The replica's Prometheus metrics (text exposition at `/metrics`), named after etcd's where
/// etcd has a counterpart (`etcd_server_has_leader` → `synod_server_has_leader`) and after
/// go-grpc-prometheus for the gRPC API (`grpc_server_handled_total`), so existing etcd
/// dashboards and alerts need only the prefix changed.
///
/// Three kinds of source: the gRPC method wrapper (`instrument`) and the fsync timer
/// (`TimedFileSystem`) record as things happen, from their own threads; values that live on
/// the replica loop's thread are sampled there (`ReplicaMonitor`) and copied in by `update`;
/// the peer transport's atomic counters are read at each update.
final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    // Sampled from the loop (`update`).
    let hasLeader: Gauge
    let isLeader: Gauge
    let leaderID: Gauge
    let ballotRound: Gauge
    let proposalsCommitted: Gauge
    let proposalsApplied: Gauge
    let proposalsPending: Gauge
    let revision: Gauge
    let diskBytes: Gauge
    let replicaDown: Gauge
    let acceptorDown: Gauge
    let watchStreams: Gauge
    let watchers: Gauge
    /// Counters mirrored from cumulative values elsewhere, by name.
    private let mirrored: [String: Counter]
    /// The last value copied into each mirrored counter.
    private let mirroredValues = Mutex<[String: Int]>([:])

    // Recorded as they happen.
    let walFsyncDuration: DurationHistogram
    let snapshotFsyncDuration: DurationHistogram
    let directoryFsyncDuration: DurationHistogram
    /// Peer messages and snapshot chunks the loop's full inbox refused.
    let inboxDropped = Atomic<Int>(0)
    /// Totals for the status page's rates (the histograms keep theirs private).
    let walFsyncs = Atomic<Int>(0)
    let walFsyncNanoseconds = Atomic<Int>(0)
    let requestsStarted = Atomic<Int>(0)

    /// etcd's WAL fsync buckets: 1 ms to 8.192 s, doubling.
    static let fsyncBuckets: [Duration] = (0..<14).map { .microseconds(1_000 << $0) }
    /// go-grpc-prometheus's default handling-time buckets, in seconds.
    static let grpcBuckets: [Duration] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000].map {
        .milliseconds($0)
    }

    init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func gauge(_ name: String, _ help: String) -> Gauge { registry.makeGauge(descriptor: Self.name(name, help)) }
        hasLeader = gauge("synod_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.")
        isLeader = gauge("synod_server_is_leader", "Whether or not this replica is the leader. 1 if is, 0 otherwise.")
        leaderID = gauge("synod_server_leader_id", "The id of the leader this replica knows, 0 if none.")
        ballotRound = gauge(
            "synod_server_ballot_round", "The round of this replica's current ballot (etcd's raft term).")
        proposalsCommitted = gauge(
            "synod_server_proposals_committed_total", "The highest slot known chosen (etcd's committed index).")
        proposalsApplied = gauge(
            "synod_server_proposals_applied_total", "The highest slot applied to the key-value store.")
        proposalsPending = gauge(
            "synod_server_proposals_pending", "Client requests waiting for an answer (queued, forwarded or reading).")
        revision = gauge("synod_mvcc_current_revision", "The key-value store's current revision.")
        diskBytes = gauge("synod_disk_usage_bytes", "Bytes of the write-ahead log and snapshots on disk.")
        replicaDown = gauge("synod_server_replica_down", "1 while the whole replica is down (an injected failure).")
        acceptorDown = gauge("synod_server_acceptor_down", "1 while this replica's acceptor is down (an injected failure).")
        watchStreams = gauge("synod_watch_streams", "Open Watch streams on this replica (etcd: etcd_debugging_mvcc_watch_stream_total).")
        watchers = gauge("synod_watchers", "Watchers on this replica (etcd: etcd_debugging_mvcc_watcher_total).")

        var mirrored: [String: Counter] = [:]
        for (name, help) in Self.mirroredCounters {
            mirrored[name] = registry.makeCounter(descriptor: Self.name(name, help))
        }
        self.mirrored = mirrored

        walFsyncDuration = registry.makeDurationHistogram(
            descriptor: Self.name(
                "synod_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by the write-ahead log."),
            buckets: Self.fsyncBuckets)
        snapshotFsyncDuration = registry.makeDurationHistogram(
            descriptor: Self.name(
                "synod_disk_snapshot_fsync_duration_seconds", "The latency distributions of fsync of snapshot files."),
            buckets: Self.fsyncBuckets)
        directoryFsyncDuration = registry.makeDurationHistogram(
            descriptor: Self.name(
                "synod_disk_directory_fsync_duration_seconds",
                "The latency distributions of fsync of the data directory (file creation, rename, removal)."),
            buckets: Self.fsyncBuckets)
    }

    /// A metric's exact name (no namespace or unit parts added) and help text.
    static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// Counters whose running totals live elsewhere (the loop, the transport): name and help.
    static let mirroredCounters: [(String, String)] = [
        ("synod_server_leader_changes_seen_total", "The number of leader changes seen."),
        ("synod_server_snapshots_saved_total", "State-machine snapshots written (each followed by log compaction)."),
        ("synod_server_snapshots_installed_total", "Snapshots received from a peer and installed."),
        ("synod_server_acceptor_failures_total", "Injected failures of this replica's acceptor (or whole replica)."),
        ("synod_server_acceptor_recoveries_total", "Recoveries from injected failures."),
        ("synod_server_inbox_dropped_total", "Peer messages and snapshot chunks dropped because the loop's inbox was full."),
        ("synod_network_peer_sent_frames_total", "Frames written to peers."),
        ("synod_network_peer_sent_bytes_total", "The total number of bytes sent to peers."),
        ("synod_network_peer_received_frames_total", "Frames received from peers."),
        ("synod_network_peer_received_bytes_total", "The total number of bytes received from peers."),
        ("synod_network_peer_sent_failures_total", "Frames to peers dropped (queue full, oversized, unknown peer)."),
        ("synod_network_peer_connections_established_total", "Outbound peer connections established."),
        ("synod_network_peer_connect_failures_total", "Outbound peer connect attempts that failed."),
        ("synod_network_peer_connections_accepted_total", "Inbound peer connections accepted."),
        ("synod_network_peer_connections_rejected_total", "Inbound peer connections closed for breaking the protocol."),
    ]

    /// Copies a sample of the loop's state and the transport's counters in.
    func update(_ sample: LoopSample, transport: PeerTransport.Statistics) {
        let status = sample.status
        hasLeader.set(Int64(status.leader == nil ? 0 : 1))
        isLeader.set(Int64(status.isLeader ? 1 : 0))
        leaderID.set(Int64(status.leader ?? 0))
        ballotRound.set(Int64(clamping: status.ballotRound))
        proposalsCommitted.set(Int64(clamping: status.chosenThrough))
        proposalsApplied.set(Int64(clamping: status.appliedThrough))
        proposalsPending.set(Int64(sample.requestsWaiting))
        revision.set(status.revision)
        diskBytes.set(Int64(clamping: status.diskBytes))
        replicaDown.set(Int64(status.isDown ? 1 : 0))
        acceptorDown.set(Int64(sample.acceptorDown ? 1 : 0))
        watchStreams.set(Int64(sample.watchStreams))
        watchers.set(Int64(sample.watchers))
        advance([
            "synod_server_leader_changes_seen_total": sample.leaderChangesSeen,
            "synod_server_snapshots_saved_total": sample.snapshotsSaved,
            "synod_server_snapshots_installed_total": sample.snapshotsInstalled,
            "synod_server_acceptor_failures_total": sample.acceptorFailures,
            "synod_server_acceptor_recoveries_total": sample.acceptorRecoveries,
            "synod_server_inbox_dropped_total": inboxDropped.load(ordering: .relaxed),
            "synod_network_peer_sent_frames_total": transport.framesSent,
            "synod_network_peer_sent_bytes_total": transport.bytesSent,
            "synod_network_peer_received_frames_total": transport.framesReceived,
            "synod_network_peer_received_bytes_total": transport.bytesReceived,
            "synod_network_peer_sent_failures_total": transport.framesDropped,
            "synod_network_peer_connections_established_total": transport.connectionsEstablished,
            "synod_network_peer_connect_failures_total": transport.connectFailures,
            "synod_network_peer_connections_accepted_total": transport.connectionsAccepted,
            "synod_network_peer_connections_rejected_total": transport.connectionsRejected,
        ])
    }

    /// Moves each mirrored counter up to its source's running total (never down: the
    /// sources only grow while the process lives).
    private func advance(_ totals: [String: Int]) {
        mirroredValues.withLock { last in
            for (name, total) in totals {
                guard let counter = mirrored[name] else { preconditionFailure("no mirrored counter \(name)") }
                let delta = total - last[name, default: 0]
                if delta > 0 {
                    counter.increment(by: Int64(delta))
                    last[name] = total
                }
            }
        }
    }

    /// The whole exposition, Prometheus text format 0.0.4.
    func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }

    func noteInboxDrop() {
        inboxDropped.wrappingAdd(1, ordering: .relaxed)
    }

    func recordWALFsync(_ duration: Duration) {
        walFsyncs.wrappingAdd(1, ordering: .relaxed)
        let (seconds, attoseconds) = duration.components
        walFsyncNanoseconds.wrappingAdd(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000), ordering: .relaxed)
    }
}

// MARK: - gRPC

extension ServerMetrics {
    /// go-grpc-prometheus's code names (`grpc_code` label), indexed by code.
    static let grpcCodeNames = [
        "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
        "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
        "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    ]

    /// Wraps every method so that it counts calls started and answered (by status code) and
    /// times them from arrival to the built answer: `grpc_server_started_total`,
    /// `grpc_server_handled_total`, `grpc_server_handling_seconds`.
    func instrument(_ methods: [String: UnaryMethod]) -> [String: UnaryMethod] {
        var wrapped: [String: UnaryMethod] = [:]
        for (path, method) in methods {
            let labels = Self.grpcLabels(path: path)
            let started = registry.makeCounter(
                descriptor: Self.name("grpc_server_started_total", "Total number of RPCs started on the server."),
                labels: labels)
            let seconds = registry.makeDurationHistogram(
                descriptor: Self.name(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server."),
                labels: labels, buckets: Self.grpcBuckets)
            // One counter per code, made up front: the observer runs on the event loop and
            // should not take the registry's lock.
            let handled = Self.grpcCodeNames.map { code in
                registry.makeCounter(
                    descriptor: Self.name(
                        "grpc_server_handled_total",
                        "Total number of RPCs completed on the server, regardless of success or failure."),
                    labels: labels + [("grpc_code", code)])
            }
            wrapped[path] = { [self] call in
                started.increment()
                requestsStarted.wrappingAdd(1, ordering: .relaxed)
                let start = ContinuousClock.now
                method(
                    call.observingAnswer { result in
                        seconds.record(ContinuousClock.now - start)
                        switch result {
                        case .success: handled[GRPCStatus.ok].increment()
                        case .failure(let status): handled[status.code].increment()
                        }
                    })
            }
        }
        return wrapped
    }

    /// `/etcdserverpb.KV/Put` → grpc_type unary, grpc_service etcdserverpb.KV, grpc_method Put.
    static func grpcLabels(path: String) -> [(String, String)] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        let service = parts.count == 2 ? String(parts[0]) : "unknown"
        let method = parts.count == 2 ? String(parts[1]) : path
        return [("grpc_type", "unary"), ("grpc_service", service), ("grpc_method", method)]
    }
}
