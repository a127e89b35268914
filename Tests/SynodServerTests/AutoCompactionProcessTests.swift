import Foundation
import Testing

extension SynodProcessTests {
    /// etcd's `--auto-compaction-mode revision --auto-compaction-retention N`: the leader
    /// compacts through the log, so an old revision reads as compacted on every replica.
    @Test("--auto-compaction-mode revision keeps the last revisions; older reads are compacted everywhere", .timeLimit(.minutes(5)))
    func autoCompactionByRevision() async throws {
        try await LocalCluster.with(
            name: "auto-compaction", replicas: 3,
            extraArguments: ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "10"]
        ) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("never writable")
                    return
                }
                var ids = RequestIDGenerator()
                for index in 0..<40 {
                    _ = try await connections.replica(1).put("auto/\(index % 4)", "v\(index)", requestID: ids.next())
                }
                for replica in cluster.replicas {
                    let etcdctl = Etcdctl(executable: try Etcdctl.locate(), endpoint: replica.clientEndpoint)
                    var last = ""
                    let compacted = await eventually(timeout: .seconds(10), interval: .milliseconds(100)) {
                        let run = try? await ProgramRun.run(
                            etcdctl.executable, ["--endpoints=\(replica.clientEndpoint)", "get", "auto/0", "--rev", "3"],
                            environment: ["ETCDCTL_API": "3"], timeout: .seconds(10))
                        last = (run?.stderr ?? "") + (run?.stdout ?? "")
                        return last.contains("required revision has been compacted")
                    }
                    cluster.expect(compacted, "r\(replica.id): get --rev 3 did not answer compacted: \(last)")
                    let latest = try await etcdctl.run(["get", "auto/3", "--print-value-only"])
                    cluster.expect(latest.contains("v39"), "r\(replica.id): latest value lost: \(latest)")
                }
            }
        }
    }
}
