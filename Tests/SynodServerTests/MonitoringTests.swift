import Foundation
import Testing

extension SynodProcessTests {
    @Test(
        "monitoring: /metrics parses as Prometheus text and counts puts; /health, /livez, /readyz follow quorum loss and return",
        .timeLimit(.minutes(5)))
    func monitoringEndpoints() async throws {
        try await Self.withWritableCluster(name: "monitoring", replicas: 3) { cluster, connections in
            let r1 = cluster.replica(1).clientPort

            // /metrics: the whole exposition is well formed, the put counter moves.
            let before = try await Self.metrics(port: r1, cluster: cluster)
            let putsBefore = PrometheusText.total(
                before, "grpc_server_handled_total", labels: ["grpc_method": "Put", "grpc_code": "OK"])
            var requestIDs = RequestIDGenerator()
            for index in 0..<5 {
                _ = try await connections.replica(1).put("monitoring/\(index)", "v\(index)", requestID: requestIDs.next())
            }
            let after = try await Self.metrics(port: r1, cluster: cluster)
            let putsAfter = PrometheusText.total(
                after, "grpc_server_handled_total", labels: ["grpc_method": "Put", "grpc_code": "OK"])
            cluster.expect(putsAfter - putsBefore >= 5, "5 puts moved grpc_server_handled_total{Put,OK} from \(putsBefore) to \(putsAfter)")
            for name in [
                "synod_server_has_leader", "synod_server_leader_changes_seen_total",
                "synod_server_proposals_committed_total", "synod_server_proposals_applied_total",
                "synod_disk_wal_fsync_duration_seconds_count", "synod_server_acceptor_failures_total",
                "synod_network_peer_sent_bytes_total", "grpc_server_handling_seconds_count", "synod_watchers",
                "synod_watch_streams",
            ] {
                cluster.expect(after.contains { $0.name == name }, "/metrics lacks \(name)")
            }
            cluster.expect(PrometheusText.total(after, "synod_server_has_leader") == 1, "synod_server_has_leader is not 1")
            cluster.expect(
                PrometheusText.total(after, "synod_disk_wal_fsync_duration_seconds_count") > 0,
                "no WAL fsync was timed after 5 puts")
            cluster.expect(
                PrometheusText.total(after, "synod_server_proposals_committed_total") >= 5,
                "synod_server_proposals_committed_total < 5 after 5 puts")

            // Healthy everywhere.
            for replica in cluster.replicas {
                let health = try await HTTPProbe.get(port: replica.clientPort, path: "/health")
                cluster.expect(
                    health.status == 200 && health.body == #"{"health":"true"}"#,
                    "r\(replica.id) /health on a healthy cluster: \(health)")
                for path in ["/livez", "/readyz"] {
                    let answer = try await HTTPProbe.get(port: replica.clientPort, path: path)
                    cluster.expect(answer.status == 200, "r\(replica.id) \(path): \(answer)")
                }
            }
            let status = try await HTTPProbe.get(port: r1, path: "/status.json")
            cluster.expect(status.status == 200 && status.body.contains(#""members""#), "/status.json: \(status)")
            let missing = try await HTTPProbe.get(port: r1, path: "/no-such-page")
            cluster.expect(missing.status == 404, "/no-such-page: \(missing)")

            // Quorum lost: r1 alone is alive but not healthy; still live and ready.
            await cluster.replica(2).kill9()
            await cluster.replica(3).kill9()
            var last: HTTPProbe.Response?
            let unhealthy = try await eventually(timeout: .seconds(20), interval: .milliseconds(250)) {
                last = try await HTTPProbe.get(port: r1, path: "/health")
                return last?.status == 503
            }
            cluster.expect(unhealthy, "r1 /health did not turn 503 within 20 s of losing its quorum; last \(String(describing: last))")
            if let last, unhealthy {
                cluster.expect(
                    last.body.contains(#""health":"false""#) && last.body.contains(#""reason""#),
                    "503 /health body: \(last.body)")
                print("monitoring: r1 alone: \(last.body)")
            }
            let live = try await HTTPProbe.get(port: r1, path: "/livez")
            cluster.expect(live.status == 200, "r1 /livez without quorum: \(live)")
            let ready = try await HTTPProbe.get(port: r1, path: "/readyz")
            cluster.expect(ready.status == 200, "r1 /readyz without quorum (recovered, up): \(ready)")

            // Quorum back: healthy again.
            try cluster.replica(2).start()
            try cluster.replica(3).start()
            let healthyAgain = await eventually(timeout: .seconds(30), interval: .milliseconds(250)) {
                last = try? await HTTPProbe.get(port: r1, path: "/health")
                return last?.status == 200
            }
            cluster.expect(healthyAgain, "r1 /health not 200 within 30 s of restarting r2 and r3; last \(String(describing: last))")
            let restarted = await eventually(timeout: .seconds(30), interval: .milliseconds(250)) {
                (try? await HTTPProbe.get(port: cluster.replica(2).clientPort, path: "/health"))?.status == 200
            }
            cluster.expect(restarted, "restarted r2 /health not 200 within 30 s")
        }
    }

    @Test("monitoring: --listen-metrics-urls serves /metrics, /health and /status on a port of its own", .timeLimit(.minutes(3)))
    func metricsListener() async throws {
        let port = try PortAllocator.ports(1)[0]
        try await LocalCluster.with(
            name: "metrics-listener", replicas: 1, extraArguments: ["--listen-metrics-urls", "http://127.0.0.1:\(port)"]
        ) { cluster in
            var last: HTTPProbe.Response?
            let serving = await eventually(timeout: .seconds(30), interval: .milliseconds(200)) {
                last = try? await HTTPProbe.get(port: port, path: "/health")
                return last?.status == 200
            }
            cluster.expect(serving, "http://127.0.0.1:\(port)/health not 200 within 30 s; last \(String(describing: last))")
            let samples = try await Self.metrics(port: port, cluster: cluster)
            cluster.expect(PrometheusText.total(samples, "synod_server_has_leader") == 1, "metrics port: has_leader != 1")
            let page = try await HTTPProbe.get(port: port, path: "/status")
            cluster.expect(page.status == 200 && page.body.contains("<table"), "metrics port /status: \(page)")
            let events = try await HTTPProbe.get(port: port, path: "/status/events", until: "event: status\ndata: {")
            cluster.expect(
                events.status == 200 && events.headers["content-type"] == "text/event-stream",
                "metrics port /status/events: \(events)")
            // The port speaks no gRPC: HTTP/1.1 only.
            let livez = try await HTTPProbe.get(port: port, path: "/livez")
            cluster.expect(livez.status == 200, "metrics port /livez: \(livez)")
        }
    }

    /// GET /metrics, checked line by line against the text format.
    static func metrics(port: Int, cluster: LocalCluster) async throws -> [PrometheusText.Sample] {
        let answer = try await HTTPProbe.get(port: port, path: "/metrics")
        cluster.expect(answer.status == 200, "GET /metrics on \(port): \(answer)")
        cluster.expect(
            answer.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true,
            "/metrics content-type \(answer.headers["content-type"] ?? "none")")
        let (samples, bad) = PrometheusText.parse(answer.body)
        cluster.expect(bad.isEmpty, "/metrics lines not `name{labels} value`: \(bad.prefix(5))")
        cluster.expect(samples.count > 20, "/metrics has only \(samples.count) samples")
        return samples
    }
}
