import Testing

@testable import SynodServer

@Suite("monitoring, without processes")
struct MonitoringUnitTests {
    @Test("--listen-metrics-urls takes etcd's http://host:port list and refuses the rest with one line")
    func parsesMetricsURLs() throws {
        let endpoints = try MonitoringOptions.parseMetricsURLs("http://127.0.0.1:2381,http://0.0.0.0:9090/")
        #expect(endpoints == [Endpoint(host: "127.0.0.1", port: 2381), Endpoint(host: "0.0.0.0", port: 9090)])
        for bad in ["https://127.0.0.1:2381", "127.0.0.1:2381", "http://127.0.0.1:2381/metrics", "http://127.0.0.1", ""] {
            #expect(throws: ServerConfigurationError.self, "'\(bad)' was accepted") {
                try MonitoringOptions.parseMetricsURLs(bad)
            }
        }
    }

    @Test("a fresh registry's exposition is valid Prometheus text, with etcd-style names and gRPC labels")
    func expositionIsWellFormed() {
        let metrics = ServerMetrics()
        _ = metrics.instrument(["/etcdserverpb.KV/Put": { _ in }])
        metrics.walFsyncDuration.record(.milliseconds(3))
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        let (samples, bad) = PrometheusText.parse(text)
        #expect(bad.isEmpty, "bad lines: \(bad)")
        #expect(PrometheusText.total(samples, "synod_disk_wal_fsync_duration_seconds_count") == 1)
        #expect(
            samples.contains {
                $0.name == "grpc_server_handled_total" && $0.labels["grpc_service"] == "etcdserverpb.KV"
                    && $0.labels["grpc_method"] == "Put" && $0.labels["grpc_code"] == "Unavailable"
            })
        for name in ["synod_server_has_leader", "synod_server_leader_changes_seen_total", "grpc_server_started_total"] {
            #expect(samples.contains { $0.name == name }, "no \(name) in:\n\(text.prefix(2_000))")
        }
    }
}
