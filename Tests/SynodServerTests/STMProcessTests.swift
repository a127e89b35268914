import Foundation
import Testing

/// Go test programs under Tests/go/src, built at test time in GOPATH mode against Debian's
/// golang-etcd-server-dev (clientv3 and its concurrency package, unchanged).
enum GoProgram {
    /// `go` on PATH (scripts/test installs golang-go), or nil.
    static let goPath: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/go" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static let skipReason: Comment = "go is not installed (scripts/test installs golang-go and golang-etcd-server-dev)"

    /// Debian's Go sources (golang-etcd-server-dev and its dependencies).
    static let systemGopath = "/usr/share/gocode"

    /// Tests/go, the GOPATH of the project's own Go programs.
    static var projectGopath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("go").path
    }

    /// Builds `Tests/go/src/<package>` into a temporary directory; returns the binary's path.
    static func build(_ package: String) async throws -> String {
        guard let go = goPath else { throw ProcessTestError("go not found") }
        guard FileManager.default.fileExists(atPath: "\(systemGopath)/src/go.etcd.io/etcd/clientv3") else {
            throw ProcessTestError(
                "\(systemGopath)/src/go.etcd.io/etcd/clientv3 is missing: scripts/test installs golang-etcd-server-dev")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("synod-go-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let binary = output.appendingPathComponent(package).path
        let run = try await ProgramRun.run(
            go, ["build", "-o", binary, package],
            environment: ["GO111MODULE": "off", "GOPATH": "\(projectGopath):\(systemGopath)", "GOFLAGS": ""],
            timeout: .seconds(600))
        guard run.status == 0, !run.timedOut else {
            throw ProcessTestError(
                "go build \(package) " + (run.timedOut ? "timed out" : "exited \(run.status)")
                    + "\nstdout: \(run.stdout)\nstderr: \(run.stderr)")
        }
        return binary
    }
}

extension SynodProcessTests {
    /// clientv3's STM (`concurrency.NewSTM`, default isolation: serializable snapshot) from
    /// several goroutines over all three replicas: every transfer commits and money is
    /// conserved. Without history its reads at the first read's revision failed as compacted.
    @Test(
        "clientv3 concurrency.NewSTM: concurrent transfers over 3 replicas commit and conserve the total",
        .enabled(if: GoProgram.goPath != nil, GoProgram.skipReason), .timeLimit(.minutes(15)))
    func clientv3STMTransfers() async throws {
        let binary = try await GoProgram.build("synodstm")
        defer { try? FileManager.default.removeItem(atPath: (binary as NSString).deletingLastPathComponent) }
        try await LocalCluster.with(name: "stm", replicas: 3) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting 3 replicas")
                    return
                }
            }
            let seed = UInt64.random(in: 1...1_000_000)
            let run = try await ProgramRun.run(
                binary,
                [
                    "-endpoints", cluster.endpoints.joined(separator: ","), "-accounts", "6", "-workers", "9",
                    "-transfers", "40", "-seed", "\(seed)", "-timeout", "120s",
                ],
                environment: [:], timeout: .seconds(180))
            print(run.stdout + run.stderr)
            cluster.expect(
                run.status == 0 && !run.timedOut && run.stdout.contains("synodstm: ok"),
                "synodstm (seed \(seed)) " + (run.timedOut ? "timed out" : "exited \(run.status)")
                    + "\nstdout: \(run.stdout)\nstderr: \(run.stderr)")
        }
    }
}
