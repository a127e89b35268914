import Foundation
import Testing

/// Runs the real `etcdctl` (Debian's etcd-client, API v3) against one endpoint.
struct Etcdctl {
    let executable: String
    let endpoint: String

    /// `etcdctl` on PATH, or a failure telling how to get it.
    static func locate() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/etcdctl"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw ProcessTestError("etcdctl not found: run scripts/test, which installs etcd-client")
    }

    /// Runs `etcdctl <arguments>`; throws with its output unless it exits 0; returns stdout.
    func run(_ arguments: [String], stdin: String? = nil) async throws -> String {
        try await runFull(arguments, stdin: stdin).stdout
    }

    /// Like `run`, with stderr too (some commands, like `endpoint health`, print there).
    func runFull(_ arguments: [String], stdin: String? = nil) async throws -> ProgramRun {
        let result = try await ProgramRun.run(
            executable, ["--endpoints=\(endpoint)", "--command-timeout=5s", "--dial-timeout=2s"] + arguments,
            stdin: stdin, environment: ["ETCDCTL_API": "3"], timeout: .seconds(15))
        guard result.status == 0, !result.timedOut else {
            throw ProcessTestError(
                "etcdctl \(arguments.joined(separator: " ")) against \(endpoint) "
                    + (result.timedOut ? "timed out" : "exited \(result.status)")
                    + "\nstdout: \(result.stdout)\nstderr: \(result.stderr)")
        }
        return result
    }

    /// Runs with `-w json` and parses the output as a JSON object.
    func json(_ arguments: [String]) async throws -> [String: Any] {
        let output = try await run(arguments + ["-w", "json"])
        guard let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
            throw ProcessTestError("etcdctl \(arguments.joined(separator: " ")) -w json printed no object: \(output)")
        }
        return object
    }
}

/// Field access for etcdctl's JSON (Go's encoding/json of the protobuf structs: snake_case
/// header fields, []byte as base64).
enum JSONField {
    static func int(_ object: [String: Any], _ name: String) -> Int64? {
        (object[name] as? NSNumber)?.int64Value
    }

    static func base64(_ object: [String: Any], _ name: String) -> String? {
        guard let text = object[name] as? String, let data = Data(base64Encoded: text) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

extension SynodProcessTests {
    @Test("etcdctl 3.4 works unchanged against every replica of a 3-replica cluster", .timeLimit(.minutes(10)))
    func etcdctlWorksUnchanged() async throws {
        let executable = try Etcdctl.locate()
        try await LocalCluster.with(name: "etcdctl", replicas: 3) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting 3 replicas")
                    return
                }
            }
            for replica in cluster.replicas {
                let etcdctl = Etcdctl(executable: executable, endpoint: replica.clientEndpoint)
                do {
                    try await Self.exerciseEtcdctl(etcdctl, prefix: "r\(replica.id)/", cluster: cluster)
                } catch {
                    cluster.fail("etcdctl against r\(replica.id): \(error)")
                }
            }
            // What one replica wrote, another reads (linearizable by default).
            let first = Etcdctl(executable: executable, endpoint: cluster.replica(1).clientEndpoint)
            let last = Etcdctl(executable: executable, endpoint: cluster.replica(3).clientEndpoint)
            _ = try await first.run(["put", "shared/key", "from-r1"])
            let read = try await last.run(["get", "shared/key", "--print-value-only"])
            cluster.expect(read == "from-r1\n", "r3 reads \(read.debugDescription) for what r1 wrote")
        }
    }

    static func exerciseEtcdctl(_ etcdctl: Etcdctl, prefix: String, cluster: LocalCluster) async throws {
        let where_ = "etcdctl against \(etcdctl.endpoint)"
        // put / get
        let put = try await etcdctl.run(["put", "\(prefix)a", "1"])
        cluster.expect(put == "OK\n", "\(where_): put printed \(put.debugDescription)")
        _ = try await etcdctl.run(["put", "\(prefix)b", "2"])
        _ = try await etcdctl.run(["put", "\(prefix)c", "3"])
        let get = try await etcdctl.run(["get", "\(prefix)a"])
        cluster.expect(get == "\(prefix)a\n1\n", "\(where_): get printed \(get.debugDescription)")

        // get --prefix, in key order
        let all = try await etcdctl.run(["get", "--prefix", prefix])
        cluster.expect(
            all == "\(prefix)a\n1\n\(prefix)b\n2\n\(prefix)c\n3\n", "\(where_): get --prefix printed \(all.debugDescription)")

        // get --limit -w json: two kvs, more = true, count = 3
        let limited = try await etcdctl.json(["get", "--prefix", prefix, "--limit", "2"])
        let limitedKVs = limited["kvs"] as? [[String: Any]] ?? []
        cluster.expect(limitedKVs.count == 2, "\(where_): get --limit 2 returned \(limitedKVs.count) kvs: \(limited)")
        cluster.expect(limited["more"] as? Bool == true, "\(where_): get --limit 2 of 3 keys says more = \(limited["more"] ?? "nil")")
        cluster.expect(JSONField.int(limited, "count") == 3, "\(where_): get --limit 2 says count = \(limited["count"] ?? "nil")")
        cluster.expect(
            limitedKVs.compactMap { JSONField.base64($0, "key") } == ["\(prefix)a", "\(prefix)b"],
            "\(where_): get --limit 2 returned keys \(limitedKVs.map { $0["key"] ?? "nil" })")

        // get -w json: header.revision, base64 key and value, per-key revisions
        let single = try await etcdctl.json(["get", "\(prefix)a"])
        let header = single["header"] as? [String: Any] ?? [:]
        let revision = JSONField.int(header, "revision") ?? 0
        cluster.expect(revision >= 3, "\(where_): get -w json header.revision = \(revision): \(single)")
        cluster.expect(JSONField.int(header, "member_id") != nil, "\(where_): get -w json has no header.member_id: \(single)")
        let kvs = single["kvs"] as? [[String: Any]] ?? []
        cluster.expect(kvs.count == 1, "\(where_): get -w json returned \(kvs.count) kvs")
        if let kv = kvs.first {
            cluster.expect(JSONField.base64(kv, "key") == "\(prefix)a", "\(where_): kvs[0].key = \(kv["key"] ?? "nil")")
            cluster.expect(JSONField.base64(kv, "value") == "1", "\(where_): kvs[0].value = \(kv["value"] ?? "nil")")
            let created = JSONField.int(kv, "create_revision") ?? 0
            let modified = JSONField.int(kv, "mod_revision") ?? 0
            cluster.expect(created > 0 && created == modified, "\(where_): kvs[0] revisions \(kv)")
            cluster.expect(modified <= revision, "\(where_): mod_revision \(modified) above header.revision \(revision)")
            cluster.expect(JSONField.int(kv, "version") == 1, "\(where_): kvs[0].version = \(kv["version"] ?? "nil")")
        }

        // txn, non-interactive: compares, blank line, success ops, blank line, failure ops.
        let txn = "value(\"\(prefix)a\") = \"1\"\n\nput \(prefix)a \"x\"\n\nput \(prefix)a \"y\"\n\n"
        let succeeded = try await etcdctl.run(["txn", "--interactive=false"], stdin: txn)
        cluster.expect(succeeded == "SUCCESS\n\nOK\n", "\(where_): txn printed \(succeeded.debugDescription)")
        let failed = try await etcdctl.run(["txn", "--interactive=false"], stdin: txn)
        cluster.expect(failed == "FAILURE\n\nOK\n", "\(where_): repeated txn printed \(failed.debugDescription)")
        let afterTxn = try await etcdctl.run(["get", "\(prefix)a", "--print-value-only"])
        cluster.expect(afterTxn == "y\n", "\(where_): after the two txns \(prefix)a = \(afterTxn.debugDescription)")
        // Create-if-absent: version == 0.
        let create = "version(\"\(prefix)new\") = \"0\"\n\nput \(prefix)new \"created\"\n\n\n"
        let created = try await etcdctl.run(["txn", "--interactive=false"], stdin: create)
        cluster.expect(created == "SUCCESS\n\nOK\n", "\(where_): create-if-absent txn printed \(created.debugDescription)")
        let notCreated = try await etcdctl.run(["txn", "--interactive=false"], stdin: create)
        cluster.expect(notCreated == "FAILURE\n", "\(where_): repeated create-if-absent txn printed \(notCreated.debugDescription)")

        // del, del --prefix
        let deleted = try await etcdctl.run(["del", "\(prefix)a"])
        cluster.expect(deleted == "1\n", "\(where_): del printed \(deleted.debugDescription)")
        let deletedNothing = try await etcdctl.run(["del", "\(prefix)a"])
        cluster.expect(deletedNothing == "0\n", "\(where_): del of an absent key printed \(deletedNothing.debugDescription)")
        let deletedPrefix = try await etcdctl.run(["del", "--prefix", prefix])
        cluster.expect(deletedPrefix == "3\n", "\(where_): del --prefix printed \(deletedPrefix.debugDescription)")
        let empty = try await etcdctl.run(["get", "--prefix", prefix])
        cluster.expect(empty == "", "\(where_): get --prefix after del --prefix printed \(empty.debugDescription)")

        // member list: every replica with its peer and client URL.
        let members = try await etcdctl.run(["member", "list"])
        let memberLines = members.split(separator: "\n")
        cluster.expect(memberLines.count == cluster.replicas.count, "\(where_): member list printed \(members.debugDescription)")
        for replica in cluster.replicas {
            cluster.expect(
                memberLines.contains { $0.contains("http://127.0.0.1:\(replica.peerPort)") && $0.contains("http://\(replica.clientEndpoint)") },
                "\(where_): member list has no line for r\(replica.id): \(members)")
        }

        // endpoint status, of this endpoint and of the whole cluster (found through member list).
        let status = try await etcdctl.run(["endpoint", "status"])
        cluster.expect(
            status.hasPrefix(etcdctl.endpoint + ", ") && status.contains("3.4.0"),
            "\(where_): endpoint status printed \(status.debugDescription)")
        let clusterStatus = try await etcdctl.run(["endpoint", "status", "--cluster", "-w", "json"])
        let statuses = (try JSONSerialization.jsonObject(with: Data(clusterStatus.utf8)) as? [[String: Any]]) ?? []
        cluster.expect(statuses.count == cluster.replicas.count, "\(where_): endpoint status --cluster: \(clusterStatus)")
        let leaders = Set(statuses.compactMap { ($0["Status"] as? [String: Any]).flatMap { JSONField.int($0, "leader") } })
        cluster.expect(
            leaders.count == 1 && (1...Int64(cluster.replicas.count)).contains(leaders.first ?? 0),
            "\(where_): endpoint status --cluster names leaders \(leaders): \(clusterStatus)")

        // endpoint health
        let healthRun = try await etcdctl.runFull(["endpoint", "health"])
        let health = healthRun.stdout + healthRun.stderr
        cluster.expect(
            health.hasPrefix("\(etcdctl.endpoint) is healthy"), "\(where_): endpoint health printed \(health.debugDescription)")
    }
}
