import ClusterLauncher
import Testing

/// The local cluster's layout: the ports `synod cluster` documents and the arguments each
/// `synod serve` gets.
@Suite("Cluster layout")
struct ClusterLayoutTests {
    @Test("replica i serves clients on base + 2(i-1) and peers on the port after it")
    func ports() {
        let layout = ClusterLayout(replicas: 3, basePort: 2379)
        #expect(layout.members.map(\.clientPort) == [2379, 2381, 2383])
        #expect(layout.members.map(\.peerPort) == [2380, 2382, 2384])
        #expect(layout.clientEndpoints == "127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383")
        #expect(layout.peersArgument == "1=127.0.0.1:2380,2=127.0.0.1:2382,3=127.0.0.1:2384")
    }

    @Test("synod serve arguments name the replica, its listeners, its data and the extras last")
    func serveArguments() {
        let layout = ClusterLayout(replicas: 2, basePort: 20_000)
        let arguments = layout.serveArguments(id: 2, dataDirectory: "/d/r2", extra: ["--tick-ms", "5"])
        #expect(
            arguments == [
                "serve", "--id", "2", "--peers", "1=127.0.0.1:20001,2=127.0.0.1:20003",
                "--client-urls", "1=127.0.0.1:20000,2=127.0.0.1:20002",
                "--listen-client", "127.0.0.1:20002", "--listen-peer", "127.0.0.1:20003",
                "--data-dir", "/d/r2", "--tick-ms", "5",
            ])
    }

    @Test("a supervised child gets the supervision flag; an unsupervised one does not")
    func supervisionFlag() {
        let supervised = ClusterLauncher.ReplicaProcess(
            name: "r1", executable: "/bin/true", arguments: ["serve"], output: .lines { _ in })
        let plain = ClusterLauncher.ReplicaProcess(
            name: "x", executable: "/bin/true", arguments: ["demo"], output: .lines { _ in }, supervised: false)
        #expect(supervised.arguments == ["serve", SupervisorWatch.flag])
        #expect(plain.arguments == ["demo"])
    }
}
