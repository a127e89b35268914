import Foundation
import Testing

extension SynodProcessTests {
    /// Disaster recovery as etcd's guide does it: `etcdctl snapshot save` from a running
    /// replica, then `synod snapshot restore` into a new cluster's data directories; the new
    /// 3-replica cluster serves every key. A damaged file is refused with one line.
    @Test("etcdctl snapshot save, then synod snapshot restore into a fresh 3-replica cluster that serves every key", .timeLimit(.minutes(5)))
    func backupAndRestore() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("synod-backup-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let file = (work as NSString).appendingPathComponent("backup.db")
        var expected: [String: String] = [:]
        try await LocalCluster.with(name: "backup-source", replicas: 3) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("the source cluster never became writable")
                    return
                }
                var ids = RequestIDGenerator()
                for index in 0..<40 {
                    let key = "patients/site-a/\(index)"
                    _ = try await connections.replica(1 + index % 3).put(key, "record \(index)", requestID: ids.next())
                    expected[key] = "record \(index)"
                }
                // The follower that answers may lag a moment: read through it first (a
                // linearizable read waits until it applied every write above).
                _ = try await connections.replica(2).value("patients/site-a/39")
                let etcdctl = Etcdctl(executable: try Etcdctl.locate(), endpoint: cluster.replica(2).clientEndpoint)
                let saved = try await etcdctl.runFull(["snapshot", "save", file])
                print("backup: \(saved.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
                // Defragment answers as etcd's does (nothing to do here).
                let defrag = try await etcdctl.runFull(["defrag"])
                cluster.expect(defrag.stdout.contains("Finished defragmenting"), "etcdctl defrag said: \(defrag.stdout) \(defrag.stderr)")
            }
        }
        let binary = try SynodBinary.locate()
        // A damaged copy is refused, naming the problem.
        let damaged = (work as NSString).appendingPathComponent("damaged.db")
        var bytes = try #require(FileManager.default.contents(atPath: file))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: damaged))
        let refused = try await ProgramRun.run(
            binary, ["snapshot", "restore", damaged, "--data-dir", (work as NSString).appendingPathComponent("x"), "--replicas", "1"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("SHA-256"), "stderr: \(refused.stderr)")

        let target = try LocalCluster(name: "backup-target", replicas: 3)
        let restored = try await ProgramRun.run(
            binary, ["snapshot", "restore", file, "--data-dir", target.directory, "--replicas", "3"])
        #expect(restored.status == 0, "restore failed: \(restored.stderr)")
        print("backup: \(restored.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        do {
            try target.startAll()
            try await ClusterConnections.with(ports: target.replicas.map(\.clientPort)) { connections in
                let agreement = await connections.awaitAgreement(on: expected.mapValues { Optional($0) }, timeout: .seconds(30))
                target.expect(agreement.isEmpty, "restored cluster is missing keys:\n" + agreement.prefix(5).joined(separator: "\n"))
                target.expect(await connections.awaitWritable(timeout: .seconds(30)), "the restored cluster takes no writes")
            }
            await target.tearDown()
        } catch {
            target.dumpLogsOnce(reason: "\(error)")
            await target.tearDown()
            throw error
        }
    }
}
