import Foundation
import Testing

extension SynodProcessTests {
    /// etcd's `--quota-backend-bytes` with etcdctl 3.4: over the quota writes fail with etcd's
    /// error and the NOSPACE alarm is raised through the log (every replica lists it and shows
    /// it in `endpoint status`); deletes and compaction still work; after compaction, defrag
    /// and `alarm disarm`, writes succeed again.
    @Test("--quota-backend-bytes: NOSPACE alarm, alarm list, endpoint status, compaction + disarm (etcdctl)", .timeLimit(.minutes(10)))
    func spaceQuotaRaisesNoSpace() async throws {
        let executable = try Etcdctl.locate()
        try await LocalCluster.with(
            name: "quota", replicas: 3, extraArguments: ["--quota-backend-bytes", "\(Self.quotaBytes)"]
        ) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting 3 replicas")
                    return
                }
            }
            let etcdctls = cluster.replicas.map { Etcdctl(executable: executable, endpoint: $0.clientEndpoint) }
            let (r1, r2, r3) = (etcdctls[0], etcdctls[1], etcdctls[2])
            #expect(try await r1.run(["alarm", "list"]) == "", "no alarm before the quota is reached")

            // One key rewritten: its history alone fills the quota.
            let value = String(repeating: "q", count: Self.valueBytes)
            var refusal = ""
            var accepted = 0
            for _ in 0..<Self.putsMax {
                let run = try await ProgramRun.run(
                    executable, ["--endpoints=\(r1.endpoint)", "--command-timeout=5s", "put", "quota/big", value],
                    environment: ["ETCDCTL_API": "3"], timeout: .seconds(15))
                if run.status != 0 {
                    refusal = run.stderr
                    break
                }
                accepted += 1
            }
            #expect(refusal.contains("etcdserver: mvcc: database space exceeded"), "after \(accepted) puts: \(refusal)")
            #expect(accepted * Self.valueBytes <= Self.quotaBytes, "\(accepted) puts of \(Self.valueBytes) bytes fit a \(Self.quotaBytes)-byte quota")
            #expect(accepted * Self.valueBytes >= Self.quotaBytes / 2, "refused after only \(accepted) puts")

            // The alarm is replicated: every replica lists it and reports it in its status.
            for etcdctl in etcdctls {
                var listed = ""
                let seen = await eventually(timeout: .seconds(10), interval: .milliseconds(200)) {
                    listed = (try? await etcdctl.run(["alarm", "list"])) ?? ""
                    return listed.contains("alarm:NOSPACE")
                }
                #expect(seen, "alarm list on \(etcdctl.endpoint): \(listed)")
                #expect(listed.contains("memberID:1 "), "the refusing replica r1 raised it: \(listed)")
                let status = try await etcdctl.run(["endpoint", "status"])
                #expect(status.contains("alarm:NOSPACE"), "endpoint status on \(etcdctl.endpoint): \(status)")
            }

            // While the alarm is active: even a small put is refused on every replica, a txn with
            // a put too; reads, deletes and compaction go on.
            for etcdctl in [r2, r3] {
                let stderr = try await etcdctl.failing(["put", "quota/small", "s"])
                #expect(stderr.contains("database space exceeded"), "small put via \(etcdctl.endpoint): \(stderr)")
            }
            let txn = try await ProgramRun.run(
                executable, ["--endpoints=\(r2.endpoint)", "--command-timeout=5s", "txn"],
                stdin: "\nput quota/txn t\n\n\n", environment: ["ETCDCTL_API": "3"], timeout: .seconds(15))
            #expect(txn.status != 0 && txn.stderr.contains("database space exceeded"), "txn with a put: \(txn.stderr)")
            #expect(try await r3.run(["get", "quota/big", "--print-value-only"]).hasPrefix("qqq"))
            _ = try await r2.run(["del", "quota/nothing"])
            let object = try await r1.json(["get", "quota/big"])
            guard let header = object["header"] as? [String: Any], let revision = JSONField.int(header, "revision") else {
                throw ProcessTestError("etcdctl get -w json printed no header revision: \(object)")
            }
            let compacted = try await r2.run(["compaction", "--physical", "\(revision)"])
            #expect(compacted.contains("compacted revision \(revision)"), "\(compacted)")
            _ = try await r3.run(["defrag"])

            // Disarm: the alarm goes everywhere, and writes work again.
            let disarmed = try await r3.run(["alarm", "disarm"])
            #expect(disarmed.contains("alarm:NOSPACE"), "alarm disarm printed: \(disarmed)")
            for etcdctl in etcdctls {
                let cleared = await eventually(timeout: .seconds(10), interval: .milliseconds(200)) {
                    ((try? await etcdctl.run(["alarm", "list"])) ?? "x") == ""
                }
                #expect(cleared, "alarm list on \(etcdctl.endpoint) after disarm")
                let status = try await etcdctl.run(["endpoint", "status"])
                #expect(!status.contains("NOSPACE"), "\(status)")
            }
            _ = try await r2.run(["put", "quota/small", "s"])
            #expect(try await r1.run(["get", "quota/small", "--print-value-only"]) == "s\n")
        }
    }

    static let quotaBytes = 1 << 20
    static let valueBytes = 60_000
    /// Bounds the fill loop: twice what the quota can hold.
    static let putsMax = 2 * (1 << 20) / 60_000 + 2
}
