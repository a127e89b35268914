import Foundation
import Testing

extension SynodProcessTests {
    /// The waiting-request bound, end to end: with room for 1 request per replica, 256 puts
    /// in flight through real HTTP/2 connections get etcd's "too many requests" at once for
    /// what does not fit — not a timeout — the rest succeed, and the replicas keep serving.
    /// (Room for 8 was not always exceeded: on a loaded machine the debug-built load generator
    /// itself queues the requests, and they reach the replicas a few at a time.)
    @Test("a full request queue answers etcd's 'too many requests' at once, not a timeout, and the replica keeps serving", .timeLimit(.minutes(5)))
    func fullQueueIsTooManyRequests() async throws {
        let binary = try SynodBinary.locate()
        try await Self.withWritableCluster(name: "queue-bound", replicas: 3, extraArguments: ["--max-waiting-requests", "1"]) {
            cluster, _ in
            guard
                let report = try await runRoundRobinPuts(binary, cluster, concurrency: 256),
                let errors = report["errors"] as? [String: Any], let examples = report["errorExamples"] as? [String: Any]
            else {
                Issue.record("no errors in the report")
                return
            }
            let refused = JSONField.int(errors, "resourceExhausted") ?? 0
            #expect(refused > 0, "no request was refused: \(report)")
            #expect((examples["resourceExhausted"] as? String) == "etcdserver: too many requests", "\(examples)")
            // Refused at once: nothing waited for its 10 s deadline, and nothing else failed.
            #expect(Set(errors.keys) == ["resourceExhausted"], "other errors: \(errors)")
            #expect((JSONField.int(report, "succeeded") ?? 0) > 0, "\(report)")
            // Every replica still takes writes and answers reads.
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                for id in 1...3 {
                    let put = try? await connections.replica(id).put("after-flood/\(id)", "ok", timeout: .seconds(5))
                    cluster.expect(put != nil, "r\(id) takes no write after the flood")
                }
            }
        }
    }
}
