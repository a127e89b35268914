import ClusterLauncher
import Foundation
import SynodClient
import SynodTLS
import Testing

/// TLS on both planes with real processes: `synod cluster --tls` and the real etcdctl with a
/// client certificate against every replica, clients without a certificate refused, the Swift
/// client and `synod get` over TLS, a restart of the whole cluster on its kept certificates,
/// and a replica whose peer certificate comes from another CA kept out of the cluster.
@Suite("TLS", .serialized)
struct TLSClusterTests {
    /// `etcdctl <tlsFlags> <arguments>` against one endpoint; never throws on a failed run.
    static func etcdctl(_ endpoint: String, _ tlsFlags: [String], _ arguments: [String]) async throws -> ProgramRun {
        try await ProgramRun.run(
            try Etcdctl.locate(),
            ["--endpoints=\(endpoint)", "--command-timeout=5s", "--dial-timeout=3s"] + tlsFlags + arguments,
            environment: ["ETCDCTL_API": "3"], timeout: .seconds(20))
    }

    static func flags(_ files: LocalCertificateFiles) -> [String] {
        files.clientFlags.split(separator: " ").map(String.init)
    }

    @Test(
        "synod cluster --tls: etcdctl with a client certificate against every replica, no certificate refused, restart",
        .timeLimit(.minutes(10)))
    func clusterWithClientCertificates() async throws {
        let cluster = try SupervisedCluster(name: "tls", replicas: 3, extraArguments: ["--tls"])
        defer { cluster.tearDown() }
        _ = try await cluster.startAndWaitUntilServing()
        let files = LocalCertificateFiles(dataDirectory: cluster.directory + "/data")
        let flags = Self.flags(files)
        let members = cluster.layout.members

        // The supervisor says where the certificates are and what clients add; endpoints stay host:port.
        #expect(await eventually(timeout: .seconds(10)) { cluster.log().contains("etcdctl flags: \(files.clientFlags)") },
            "\(cluster.describe())")
        #expect(cluster.log().contains("endpoints: \(cluster.layout.clientEndpoints)\n"), "\(cluster.describe())")
        for key in [files.caKey, files.clientKey, files.serverKey(replica: 1), files.peerKey(replica: 3)] {
            let mode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(key) has mode \(String(mode ?? 0, radix: 8))")
        }

        let writable = await eventually(timeout: .seconds(30), interval: .milliseconds(300)) {
            (try? await Self.etcdctl(members[0].clientEndpoint, flags, ["put", "tls/probe", "1"]))?.status == 0
        }
        try #require(writable, "no put over TLS succeeded within 30 s\n\(cluster.describe())")

        // etcdctl with the client certificate, against every replica.
        for member in members {
            let put = try await Self.etcdctl(member.clientEndpoint, flags, ["put", "tls/r\(member.id)", "v\(member.id)"])
            #expect(put.status == 0 && put.stdout.contains("OK"), "put via r\(member.id): \(put)")
            let get = try await Self.etcdctl(member.clientEndpoint, flags, ["get", "tls/r\(member.id)", "--print-value-only"])
            #expect(get.stdout == "v\(member.id)\n", "get via r\(member.id): \(get)")
        }
        let all = try await Self.etcdctl(members[1].clientEndpoint, flags, ["get", "tls/r", "--prefix", "--print-value-only"])
        #expect(all.stdout == "v1\nv2\nv3\n", "\(all)")

        // Without a client certificate, or without TLS: no answer, and the replica logs why.
        let anonymous = try await Self.etcdctl(members[0].clientEndpoint, ["--cacert=\(files.caCertificate)"], ["get", "tls/r1"])
        #expect(anonymous.status != 0 && !anonymous.stdout.contains("v1"), "answered without a certificate: \(anonymous)")
        let plaintext = try await Self.etcdctl(members[0].clientEndpoint, [], ["get", "tls/r1"])
        #expect(plaintext.status != 0 && !plaintext.stdout.contains("v1"), "answered in plaintext: \(plaintext)")
        #expect(
            await eventually(timeout: .seconds(5)) {
                cluster.log().contains("client connection from 127.0.0.1:") && cluster.log().contains("refused: TLS handshake failed")
            }, "\(cluster.describe())")

        // The Swift client over TLS, with and without its certificate.
        let endpoints = members.map(\.clientEndpoint)
        var options = SynodClientOptions()
        options.tls = ClientTLSFiles(
            trustedCAFile: files.caCertificate, certificateFile: files.clientCertificate, keyFile: files.clientKey)
        let client = try SynodClient(endpoints: endpoints, options: options)
        try await client.put(key: "tls/swift", value: "hello")
        let read = try await client.get(key: "tls/swift")
        #expect(read.kvs.map { String(decoding: $0.value, as: UTF8.self) } == ["hello"])
        await client.close()
        options.tls = ClientTLSFiles(trustedCAFile: files.caCertificate)
        options.retriesMax = 1
        options.requestTimeout = .seconds(2)
        let uncertified = try SynodClient(endpoints: endpoints, options: options)
        do {
            _ = try await uncertified.get(key: "tls/swift")
            Issue.record("the Swift client was answered without a client certificate")
        } catch {}
        await uncertified.close()

        // `synod get` takes etcdctl's flags.
        let synodGet = try await ProgramRun.run(
            cluster.binary, ["get", "tls/swift", "--endpoints", cluster.layout.clientEndpoints] + flags)
        #expect(synodGet.status == 0 && synodGet.stdout == "tls/swift\nhello\n", "\(synodGet)")

        // The whole cluster restarts on the certificates it made, with its data.
        let caBefore = try Data(contentsOf: URL(fileURLWithPath: files.caCertificate))
        let clientBefore = try Data(contentsOf: URL(fileURLWithPath: files.clientCertificate))
        #expect(cluster.supervisor.send(SIGTERM))
        #expect(await cluster.supervisor.exited(within: .seconds(30)), "\(cluster.describe())")
        _ = try await cluster.startAndWaitUntilServing()
        #expect(cluster.log().contains("reusing the certificates"), "\(cluster.describe())")
        #expect(try Data(contentsOf: URL(fileURLWithPath: files.caCertificate)) == caBefore)
        #expect(try Data(contentsOf: URL(fileURLWithPath: files.clientCertificate)) == clientBefore)
        for member in members {
            var last: ProgramRun?
            let served = await eventually(timeout: .seconds(30), interval: .milliseconds(300)) {
                last = try? await Self.etcdctl(member.clientEndpoint, flags, ["get", "tls/r\(member.id)", "--print-value-only"])
                return last?.stdout == "v\(member.id)\n"
            }
            #expect(served, "after the restart, r\(member.id): \(String(describing: last))\n\(cluster.describe())")
        }
    }

    @Test(
        "with client-certificate auth, the certificate's CN is the user: site-a writes its prefix only, a token overrides",
        .timeLimit(.minutes(5)))
    func certificateCommonNameIsTheUser() async throws {
        let cluster = try SupervisedCluster(
            name: "tls-cn", replicas: 3, extraArguments: ["--tls", "--tls-client-cn", "site-a"])
        defer { cluster.tearDown() }
        _ = try await cluster.startAndWaitUntilServing()
        let flags = Self.flags(LocalCertificateFiles(dataDirectory: cluster.directory + "/data"))
        let members = cluster.layout.members
        let writable = await eventually(timeout: .seconds(30), interval: .milliseconds(300)) {
            (try? await Self.etcdctl(members[0].clientEndpoint, flags, ["put", "patients/site-b/p0", "before"]))?.status == 0
        }
        try #require(writable, "no put over TLS succeeded within 30 s\n\(cluster.describe())")
        for setup in [
            ["user", "add", "root:root-pw"], ["user", "add", "site-a:site-a-pw"], ["role", "add", "site-a-rw"],
            ["role", "grant-permission", "site-a-rw", "readwrite", "patients/site-a/", "--prefix"],
            ["user", "grant-role", "site-a", "site-a-rw"], ["auth", "enable"],
        ] {
            let run = try await Self.etcdctl(members[0].clientEndpoint, flags, setup)
            try #require(run.status == 0, "\(setup): \(run)")
        }
        // No --user: every replica takes the user from the certificate (CN site-a).
        for member in members {
            let own = try await Self.etcdctl(member.clientEndpoint, flags, ["put", "patients/site-a/r\(member.id)", "ok"])
            #expect(own.status == 0 && own.stdout.contains("OK"), "site-a's own prefix via r\(member.id): \(own)")
            let other = try await Self.etcdctl(member.clientEndpoint, flags, ["put", "patients/site-b/r\(member.id)", "no"])
            #expect(other.status != 0 && other.stderr.contains("etcdserver: permission denied"),
                "site-b's prefix via r\(member.id): \(other)")
            let read = try await Self.etcdctl(member.clientEndpoint, flags, ["get", "patients/site-b/p0"])
            #expect(read.status != 0 && read.stderr.contains("etcdserver: permission denied"), "read via r\(member.id): \(read)")
        }
        // A token (--user) takes precedence over the certificate's CN, as in etcd.
        let asRoot = try await Self.etcdctl(
            members[1].clientEndpoint, flags + ["--user=root:root-pw"], ["get", "patients/", "--prefix", "--keys-only"])
        #expect(asRoot.status == 0, "\(asRoot)")
        #expect(asRoot.stdout.split(separator: "\n").filter { !$0.isEmpty } == [
            "patients/site-a/r1", "patients/site-a/r2", "patients/site-a/r3", "patients/site-b/p0",
        ], "\(asRoot)")
    }

    @Test("a replica whose peer certificate comes from another CA cannot join, and the logs say why", .timeLimit(.minutes(5)))
    func peerOfAnotherCA() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-tls-ca-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = LocalCertificateFiles(directory: directory + "/good")
        let rogue = LocalCertificateFiles(directory: directory + "/rogue")
        try LocalCertificateAuthority.ensure(good, replicas: [1, 2, 3])
        try LocalCertificateAuthority.ensure(rogue, replicas: [1, 2, 3])
        try await LocalCluster.with(name: "tls-rogue", replicas: 3, replicaArguments: { id, _ in
            (id == 3 ? rogue : good).serveArguments(replica: id)
        }) { cluster in
            let flags = Self.flags(good)
            let writable = await eventually(timeout: .seconds(30), interval: .milliseconds(300)) {
                (try? await Self.etcdctl(cluster.replica(1).clientEndpoint, flags, ["put", "tls/k", "v"]))?.status == 0
            }
            guard writable else { return cluster.fail("r1 and r2 did not accept a write within 30 s") }
            // The leader dialled r3 and refused its certificate; r3 refused theirs.
            let explained = await eventually(timeout: .seconds(10)) {
                let good = [cluster.replica(1).log(), cluster.replica(2).log()]
                return good.contains { log in
                    log.split(separator: "\n").contains {
                        $0.contains("cannot connect to peer r3") && $0.contains("CERTIFICATE_VERIFY_FAILED")
                    }
                } && cluster.replica(3).log().contains("CERTIFICATE_VERIFY_FAILED")
            }
            cluster.expect(explained, "the logs do not say why r3 was refused")
            // r3 never learns what the cluster chose.
            try? await Task.sleep(for: .seconds(2))
            let onRogue = try await Self.etcdctl(
                cluster.replica(3).clientEndpoint, Self.flags(rogue), ["get", "tls/k", "--consistency=s", "--print-value-only"])
            cluster.expect(!onRogue.stdout.contains("v"), "r3 holds the cluster's value: \(onRogue)")
            let onGood = try await Self.etcdctl(
                cluster.replica(2).clientEndpoint, flags, ["get", "tls/k", "--print-value-only"])
            cluster.expect(onGood.stdout == "v\n", "r2 lost the value: \(onGood)")
        }
    }

    @Test("bad TLS flags and files stop synod serve at start-up with one line")
    func badFilesAreOneLine() async throws {
        let binary = try SynodBinary.locate()
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-tls-bad-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = LocalCertificateFiles(directory: directory + "/tls")
        try LocalCertificateAuthority.ensure(files, replicas: [1, 2])
        let port = try PortAllocator.ports(2)[0]
        let base = [
            "serve", "--id", "1", "--peers", "1=127.0.0.1:\(port + 1)", "--listen-client", "127.0.0.1:\(port)",
            "--data-dir", directory + "/r1",
        ]
        let cases: [(arguments: [String], expected: String)] = [
            (["--cert-file", directory + "/missing.crt", "--key-file", files.serverKey(replica: 1)], "--cert-file \(directory)/missing.crt: no such file"),
            (["--cert-file", files.serverCertificate(replica: 1)], "--cert-file needs --key-file"),
            (["--cert-file", files.serverCertificate(replica: 1), "--key-file", files.serverKey(replica: 2)], "is not the private key"),
            (["--cert-file", files.serverCertificate(replica: 1), "--key-file", files.serverKey(replica: 1), "--client-cert-auth"], "--client-cert-auth needs --trusted-ca-file"),
            (["--peer-cert-file", files.caKey, "--peer-key-file", files.peerKey(replica: 1)], "--peer-cert-file \(files.caKey): "),
            (["--peer-client-cert-auth"], "--peer-client-cert-auth needs TLS"),
        ]
        for (arguments, expected) in cases {
            let run = try await ProgramRun.run(binary, base + arguments, timeout: .seconds(15))
            #expect(run.status != 0 && !run.timedOut, "\(arguments): \(run)")
            let lines = run.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains(expected), "\(arguments): \(run.stderr)")
        }
    }
}
