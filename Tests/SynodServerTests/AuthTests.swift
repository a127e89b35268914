import EtcdAPI
import Foundation
import GRPCCore
import SynodClient
import Testing

/// etcd's users, roles and permissions through the real etcdctl (issue #13): the clinical-trial
/// example of a site-scoped user, across every replica and a restart of the whole cluster.
extension SynodProcessTests {
    @Test(
        "etcdctl users, roles, auth enable; site-a may write only its prefix, also after a full restart",
        .timeLimit(.minutes(10)))
    func siteScopedUser() async throws {
        let executable = try Etcdctl.locate()
        // Small snapshots: the restart recovers the auth state from a snapshot, not only the log.
        try await LocalCluster.with(name: "auth", replicas: 3, extraArguments: ["--snapshot-every", "20", "--snapshot-log-share", "0"]) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting 3 replicas")
                    return
                }
            }
            let r1 = Etcdctl(executable: executable, endpoint: cluster.replica(1).clientEndpoint)
            let r2 = Etcdctl(executable: executable, endpoint: cluster.replica(2).clientEndpoint)
            let r3 = Etcdctl(executable: executable, endpoint: cluster.replica(3).clientEndpoint)

            // Set up through different replicas: each change is in the log, read back anywhere.
            try await expectOutput(
                r1, ["user", "add", "root", "--new-user-password=rootpw", "--interactive=false"],
                "User root created\n", cluster)
            try await expectOutput(r2, ["role", "add", "root"], "Role root created\n", cluster)
            try await expectOutput(
                r3, ["user", "grant-role", "root", "root"], "Role root is granted to user root\n", cluster)
            try await expectOutput(
                r1, ["user", "add", "site-a", "--new-user-password=apw", "--interactive=false"],
                "User site-a created\n", cluster)
            try await expectOutput(r2, ["role", "add", "site-a-rw"], "Role site-a-rw created\n", cluster)
            _ = try await r3.run(["role", "grant-permission", "site-a-rw", "readwrite", "patients/site-a/", "--prefix"])
            try await expectOutput(
                r1, ["user", "grant-role", "site-a", "site-a-rw"],
                "Role site-a-rw is granted to user site-a\n", cluster)
            try await expectOutput(r2, ["user", "list"], "root\nsite-a\n", cluster)
            try await expectOutput(r3, ["role", "list"], "root\nsite-a-rw\n", cluster)
            let role = try await r1.run(["role", "get", "site-a-rw"])
            cluster.expect(
                role.contains("[patients/site-a/, patients/site-a0)"),
                "role get shows the prefix as a range: \(role.debugDescription)")
            // Errors with etcd's messages.
            let duplicate = try await r2.attempt([
                "user", "add", "site-a", "--new-user-password=x", "--interactive=false",
            ])
            cluster.expect(
                duplicate.stderr.contains("etcdserver: user name already exists"),
                "adding site-a twice: \(duplicate.stderr.debugDescription)")
            let noRoot = try await r3.attempt(["user", "grant-role", "nobody", "site-a-rw"])
            cluster.expect(
                noRoot.stderr.contains("etcdserver: user name not found"),
                "granting to a missing user: \(noRoot.stderr.debugDescription)")

            try await expectOutput(r1, ["auth", "enable"], "Authentication Enabled\n", cluster)
            try await Self.checkSiteScoped(cluster: cluster, etcdctls: [r1, r2, r3], round: "before the restart")

            // The whole cluster down at once and back: auth state comes from disk.
            await cluster.killAll()
            try cluster.startAll()
            let ready = await eventually(timeout: .seconds(30)) {
                (try? await r2.run(["--user", "root:rootpw", "put", "restart-probe", "x"])) != nil
            }
            cluster.expect(ready, "no authenticated write succeeded within 30 s of restarting the cluster")
            try await Self.checkSiteScoped(cluster: cluster, etcdctls: [r1, r2, r3], round: "after the restart")

            // Disable: anonymous calls work again.
            _ = try await r3.run(["--user", "root:rootpw", "auth", "disable"])
            _ = try await r3.run(["put", "patients/site-b/after-disable", "ok"])  // r3 applied the disable
        }
    }

    static func checkSiteScoped(cluster: LocalCluster, etcdctls: [Etcdctl], round: String) async throws {
        for (position, etcdctl) in etcdctls.enumerated() {
            let at = "\(round), through r\(position + 1)"
            // site-a writes and reads its own prefix.
            let key = "patients/site-a/p\(position)"
            let put = try await etcdctl.run(["--user", "site-a:apw", "put", key, "record-\(position)"])
            cluster.expect(put == "OK\n", "\(at): site-a's put printed \(put.debugDescription)")
            let get = try await etcdctl.run(["--user", "site-a:apw", "get", key, "--print-value-only"])
            cluster.expect(get == "record-\(position)\n", "\(at): site-a reads \(get.debugDescription)")
            // ... and is denied another site's, with etcdctl's exact error; nothing is written.
            let denied = try await etcdctl.attempt(
                ["--user", "site-a:apw", "put", "patients/site-b/p\(position)", "stolen"])
            cluster.expect(denied.status != 0, "\(at): site-a's put to site-b succeeded")
            cluster.expect(
                denied.stderr.contains("Error: etcdserver: permission denied"),
                "\(at): site-a's put to site-b printed \(denied.stderr.debugDescription)")
            let deniedRead = try await etcdctl.attempt(
                ["--user", "site-a:apw", "get", "--prefix", "patients/"])
            cluster.expect(
                deniedRead.stderr.contains("etcdserver: permission denied"),
                "\(at): site-a's read of all patients printed \(deniedRead.stderr.debugDescription)")
            let stolen = try await etcdctl.run(["--user", "root:rootpw", "get", "patients/site-b/p\(position)"])
            cluster.expect(stolen.isEmpty, "\(at): the denied put left \(stolen.debugDescription)")
            // No credentials, a wrong password, a forged token.
            let anonymous = try await etcdctl.attempt(["put", "patients/site-a/x", "y"])
            cluster.expect(
                anonymous.stderr.contains("etcdserver: user name is empty"),
                "\(at): an anonymous put printed \(anonymous.stderr.debugDescription)")
            let wrongPassword = try await etcdctl.attempt(
                ["--user", "site-a:nope", "get", "patients/site-a/x"])
            cluster.expect(
                wrongPassword.stderr.contains("etcdserver: authentication failed, invalid user ID or password"),
                "\(at): a wrong password printed \(wrongPassword.stderr.debugDescription)")
        }
    }

    private func expectOutput(
        _ etcdctl: Etcdctl, _ arguments: [String], _ expected: String, _ cluster: LocalCluster
    ) async throws {
        let output = try await etcdctl.run(arguments)
        cluster.expect(
            output == expected,
            "etcdctl \(arguments.joined(separator: " ")) printed \(output.debugDescription), "
                + "expected \(expected.debugDescription)")
    }

    @Test(
        "a forged token is refused with etcd's 'invalid auth token'; the Swift client authenticates with credentials",
        .timeLimit(.minutes(5)))
    func invalidToken() async throws {
        let executable = try Etcdctl.locate()
        try await LocalCluster.with(name: "auth-token", replicas: 1) { cluster in
            let etcdctl = Etcdctl(executable: executable, endpoint: cluster.replica(1).clientEndpoint)
            let ready = await eventually(timeout: .seconds(30)) { (try? await etcdctl.run(["put", "k", "v"])) != nil }
            guard ready else { return cluster.fail("the replica took no write within 30 s") }
            _ = try await etcdctl.run(["user", "add", "root", "--new-user-password=pw", "--interactive=false"])
            _ = try await etcdctl.run(["auth", "enable"])  // etcdctl adds and grants the root role itself
            try await ClusterConnections.with(ports: [cluster.replica(1).clientPort]) { connections in
                // A well-formed token whose MAC is wrong, and garbage.
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                for token in ["synod1.cm9vdA.\(now).AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not-a-token"] {
                    var request = Etcdserverpb_PutRequest()
                    request.key = Data("k".utf8)
                    request.value = Data("v2".utf8)
                    var metadata = Metadata()
                    metadata.addString(token, forKey: "token")
                    do {
                        _ = try await connections.replica(1).kv.put(
                            request, metadata: metadata, options: ReplicaConnection.options(timeout: .seconds(5)))
                        cluster.fail("a put with token \(token) succeeded")
                    } catch let error as RPCError {
                        cluster.expect(
                            error.code == .unauthenticated && error.message == "etcdserver: invalid auth token",
                            "a put with token \(token) answered \(error.code) \(error.message)")
                    }
                }
            }
            // The Swift client authenticates once and sends the token (SynodClient+Auth.swift).
            let endpoint = try SynodEndpoint(parsing: cluster.replica(1).clientEndpoint)
            var options = SynodClientOptions()
            options.credentials = SynodCredentials(user: "root", password: "pw")
            let client = try SynodClient(endpoints: [endpoint], options: options)
            _ = try await client.put(key: "from-swift", value: "ok")
            let read = try await client.get(key: "from-swift")
            cluster.expect(read.body.kvs.first?.value == Array("ok".utf8), "the Swift client read \(read.body.kvs)")
            await client.close()
            options.credentials = SynodCredentials(user: "root", password: "wrong")
            let refused = try SynodClient(endpoints: [endpoint], options: options)
            do {
                _ = try await refused.get(key: "from-swift")
                cluster.fail("a wrong password was accepted")
            } catch let error as SynodClientError {
                cluster.expect(
                    "\(error)".contains("etcdserver: authentication failed, invalid user ID or password"),
                    "a wrong password gave \(error)")
            }
            await refused.close()
            let value = try await etcdctl.run(["--user", "root:pw", "get", "k", "--print-value-only"])
            cluster.expect(value == "v\n", "forged-token puts changed k to \(value.debugDescription)")
        }
    }
}

extension Etcdctl {
    /// Runs `etcdctl <arguments>` and returns how it went, failure included.
    func attempt(_ arguments: [String]) async throws -> ProgramRun {
        try await ProgramRun.run(
            executable, ["--endpoints=\(endpoint)", "--command-timeout=5s", "--dial-timeout=2s"] + arguments,
            environment: ["ETCDCTL_API": "3"], timeout: .seconds(15))
    }
}
