import ClusterLauncher
import Foundation
import Testing

/// Supervision with real processes: replicas never outlive `synod cluster`, SIGHUP stops it
/// gracefully, a second cluster on the same ports and a second replica on a live data
/// directory are refused at once with one line naming the port or the directory and pid.
@Suite("Supervision", .serialized)
struct SupervisionTests {
    @Test("kill -9 of the cluster supervisor leaves no replica process after 3 s")
    func supervisorKilledReplicasFollow() async throws {
        let cluster = try SupervisedCluster(name: "kill-supervisor", replicas: 3)
        defer { cluster.tearDown() }
        let replicaPIDs = try await cluster.startAndWaitUntilServing()
        try #require(replicaPIDs.count == 3, "\(cluster.describe())")

        cluster.supervisor.kill9()
        #expect(await cluster.supervisor.exited(within: .seconds(10)), "the supervisor survived SIGKILL")
        let gone = await eventually(timeout: .seconds(3), interval: .milliseconds(50)) {
            replicaPIDs.allSatisfy { !ProcessTable.isAlive($0) }
        }
        let alive = replicaPIDs.filter(ProcessTable.isAlive)
        #expect(gone, "replicas \(alive) still running 3 s after their supervisor was killed\n\(cluster.describe())")
        let portsFree = await eventually(timeout: .seconds(3)) { cluster.layout.firstPortInUse() == nil }
        let inUse = cluster.layout.firstPortInUse().map { "\($0.port) (\($0.role))" } ?? "none"
        #expect(portsFree, "a port still in use after the replicas exited: \(inUse)")
    }

    @Test("SIGHUP stops the cluster gracefully")
    func sighupStopsGracefully() async throws {
        let cluster = try SupervisedCluster(name: "sighup", replicas: 1)
        defer { cluster.tearDown() }
        let replicaPIDs = try await cluster.startAndWaitUntilServing()

        #expect(cluster.supervisor.send(SIGHUP))
        let exited = await cluster.supervisor.exited(within: .seconds(20))
        #expect(exited, "synod cluster still running 20 s after SIGHUP\n\(cluster.describe())")
        guard exited else { return }
        #expect(cluster.supervisor.termination == .init(bySignal: false, status: 0), "\(cluster.describe())")
        let log = cluster.log()
        #expect(log.contains("cluster | SIGHUP: stopping all replicas"), "\(cluster.describe())")
        #expect(log.contains("cluster | r1 exited (status 0)"), "r1 did not stop gracefully\n\(cluster.describe())")
        #expect(log.contains("cluster | stopped"), "\(cluster.describe())")
        #expect(replicaPIDs.allSatisfy { !ProcessTable.isAlive($0) })
    }

    @Test("a second synod cluster on ports in use fails at once, naming the port")
    func secondClusterOnSamePortsFails() async throws {
        let cluster = try SupervisedCluster(name: "first-cluster", replicas: 1)
        defer { cluster.tearDown() }
        _ = try await cluster.startAndWaitUntilServing()

        let otherData = cluster.directory + "/second-data"
        let started = ContinuousClock.now
        let run = try await ProgramRun.run(
            cluster.binary,
            ["cluster", "--replicas", "1", "--base-port", "\(cluster.layout.basePort)", "--data-dir", otherData],
            timeout: .seconds(15))
        let elapsed = ContinuousClock.now - started
        #expect(!run.timedOut && run.status != 0, "status \(run.status)\n\(run.stdout)\n\(run.stderr)")
        #expect(elapsed < .seconds(5), "took \(elapsed)")
        let port = cluster.layout.basePort
        #expect(
            run.stderr == "synod cluster: port \(port) (replica 1 client) is in use; is another cluster running?\n",
            "stderr: \(run.stderr)")
        #expect(!run.stdout.contains("endpoints:"), "stdout: \(run.stdout)")
        #expect(!FileManager.default.fileExists(atPath: otherData), "the second cluster touched its data directory")
        #expect(cluster.supervisor.isRunning, "the first cluster did not survive the second")
    }

    @Test("a second synod serve on a live data directory fails at once, naming the directory and the pid")
    func secondServeOnLiveDataDirectoryFails() async throws {
        try await LocalCluster.with(name: "lock", replicas: 1) { cluster in
            let replica = cluster.replica(1)
            let pid = try #require(replica.processIdentifier)
            let lockPath = replica.dataDirectory + "/LOCK"
            let locked = await eventually(timeout: .seconds(20)) {
                (try? String(contentsOfFile: lockPath, encoding: .utf8)) == "\(pid)\n"
            }
            cluster.expect(locked, "\(lockPath) does not name the replica's pid \(pid)")

            let ports = try PortAllocator.ports(2)
            let started = ContinuousClock.now
            let run = try await ProgramRun.run(
                try SynodBinary.locate(),
                [
                    "serve", "--id", "1", "--peers", "1=127.0.0.1:\(ports[1])",
                    "--listen-client", "127.0.0.1:\(ports[0])", "--data-dir", replica.dataDirectory,
                ],
                timeout: .seconds(15))
            let elapsed = ContinuousClock.now - started
            cluster.expect(!run.timedOut && run.status == 1, "status \(run.status)\n\(run.stderr)")
            cluster.expect(elapsed < .seconds(5), "took \(elapsed)")
            cluster.expect(
                run.stderr == "synod serve: data directory \(replica.dataDirectory) is in use by process \(pid)\n",
                "stderr: \(run.stderr)")
            cluster.expect(replica.isRunning, "the live replica did not survive the second one")
        }
    }

    @Test("a cluster whose every replica exits stops with a line saying so")
    func clusterExitsWhenAllReplicasExit() async throws {
        // r1's data directory is held by a live replica, so the cluster's r1 exits at once.
        try await LocalCluster.with(name: "all-exited", replicas: 1) { holder in
            let lockPath = holder.replica(1).dataDirectory + "/LOCK"
            let locked = await eventually(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: lockPath) }
            holder.expect(locked, "no \(lockPath)")
            let ports = try PortAllocator.ports(2)
            let run = try await ProgramRun.run(
                try SynodBinary.locate(),
                ["cluster", "--replicas", "1", "--base-port", "\(ports[0])", "--data-dir", holder.directory],
                timeout: .seconds(20))
            holder.expect(!run.timedOut && run.status == 1, "status \(run.status)\n\(run.stdout)\n\(run.stderr)")
            holder.expect(run.stdout.contains("r1 | synod serve: data directory"), "stdout: \(run.stdout)")
            holder.expect(run.stdout.contains("cluster | all 1 replicas exited; stopping"), "stdout: \(run.stdout)")
        }
    }

    @Test("kill -9 of synod demo leaves none of its replicas after 3 s")
    func demoKilledReplicasFollow() async throws {
        let ports = try PortAllocator.ports(6)
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("synod-demo-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        // The demo does not take the supervision flag: it is a plain child of the test.
        let demo = ClusterLauncher.ReplicaProcess(
            name: "demo", executable: try SynodBinary.locate(),
            arguments: ["demo", "--replicas", "3", "--base-port", "\(ports[0])", "--fail-every", "0"],
            output: .appendToFile(logPath), supervised: false)
        try demo.start()
        let pid = try #require(demo.processIdentifier)
        // Killed, the demo cannot remove its data directory (`synod-demo-<pid>`): the test does.
        let dataDirectory = (NSTemporaryDirectory() as NSString).appendingPathComponent("synod-demo-\(pid)")
        var replicaPIDs: [Int32] = []
        defer {
            demo.kill9()
            for orphan in replicaPIDs where ProcessTable.isAlive(orphan) { kill(orphan, SIGKILL) }
            try? FileManager.default.removeItem(atPath: dataDirectory)
        }
        let started = await eventually(timeout: .seconds(30), interval: .milliseconds(20)) {
            replicaPIDs = ProcessTable.children(of: pid)
            return replicaPIDs.count == 3 || !demo.isRunning
        }
        let log = { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        try #require(started && replicaPIDs.count == 3, "the demo did not start 3 replicas\n\(log())")

        demo.kill9()
        #expect(await demo.exited(within: .seconds(10)), "the demo survived SIGKILL")
        let gone = await eventually(timeout: .seconds(3), interval: .milliseconds(50)) {
            replicaPIDs.allSatisfy { !ProcessTable.isAlive($0) }
        }
        #expect(gone, "replicas \(replicaPIDs.filter(ProcessTable.isAlive)) outlived the demo by 3 s\n\(log())")
    }

    @Test("a replica whose stdin pipe closes stops gracefully within 3 s")
    func stdinEndOfFileStopsGracefully() async throws {
        try await LocalCluster.with(name: "stdin-eof", replicas: 1) { cluster in
            let replica = cluster.replica(1)
            let serving = await eventually(timeout: .seconds(20)) { replica.log().contains("serving clients") }
            cluster.expect(serving, "r1 did not start serving")
            replica.closeSupervisionPipe()
            let stopped = await eventually(timeout: .seconds(3), interval: .milliseconds(20)) { !replica.isRunning }
            cluster.expect(stopped, "r1 still running 3 s after its stdin pipe closed")
            let ended = replica.terminationDescription ?? "?"
            cluster.expect(ended == "status 0", "r1 ended with \(ended), not a graceful stop")
            cluster.expect(replica.log().contains("standard input reached end of file"), "no reason in r1's log")
            cluster.expect(replica.log().contains("shutdown signal received"), "r1 did not stop gracefully")
        }
    }

    @Test("synod serve --help documents the supervision flag and the lock")
    func helpDocumentsSupervision() async throws {
        let run = try await ProgramRun.run(try SynodBinary.locate(), ["serve", "--help"], timeout: .seconds(20))
        #expect(run.status == 0)
        #expect(run.stdout.contains("--exit-on-stdin-eof"), "\(run.stdout)")
        #expect(run.stdout.contains("LOCK"), "\(run.stdout)")
    }
}

// MARK: - Support

/// A `synod cluster` process run by a test, its output in a log file. The test process is
/// its supervisor (it gets the same stdin pipe its replicas get), so a crashed test run
/// stops it too.
final class SupervisedCluster: Sendable {
    let binary: String
    let directory: String
    let logPath: String
    let layout: ClusterLayout
    let supervisor: ClusterLauncher.ReplicaProcess

    /// `extraArguments` go to `synod cluster` (e.g. `--tls`).
    init(name: String, replicas: Int, extraArguments: [String] = []) throws {
        binary = try SynodBinary.locate()
        layout = ClusterLayout(replicas: replicas, basePort: try PortAllocator.ports(2 * replicas)[0])
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + "/cluster.log"
        supervisor = ClusterLauncher.ReplicaProcess(
            name: "cluster", executable: binary,
            arguments: [
                "cluster", "--replicas", "\(replicas)", "--base-port", "\(layout.basePort)",
                "--data-dir", directory + "/data",
            ] + extraArguments,
            output: .appendToFile(logPath))
    }

    /// Starts the cluster; returns its replicas' pids once every replica listens for clients.
    func startAndWaitUntilServing() async throws -> [Int32] {
        try supervisor.start()
        let pid = try #require(supervisor.processIdentifier)
        var replicaPIDs: [Int32] = []
        let serving = await eventually(timeout: .seconds(30)) {
            replicaPIDs = ProcessTable.children(of: pid)
            let listening = layout.members.allSatisfy { !LoopbackPort.isFree($0.clientPort) }
            return replicaPIDs.count == layout.members.count && listening
        }
        guard serving else {
            throw ProcessTestError("the cluster did not come up within 30 s (replicas \(replicaPIDs))\n\(describe())")
        }
        return replicaPIDs
    }

    func log() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log at \(logPath))"
    }

    func describe() -> String {
        "---- \(logPath):\n" + log().split(separator: "\n", omittingEmptySubsequences: false).suffix(40)
            .joined(separator: "\n")
    }

    /// Kills what is left: the supervisor, and any replica it started that outlived it
    /// (the pids are its children's, read before it died); removes the directory.
    func tearDown() {
        let pid = supervisor.processIdentifier
        let orphans = pid.map(ProcessTable.children(of:)) ?? []
        supervisor.kill9()
        _ = supervisor.waitForExit(seconds: 10)
        for orphan in orphans where ProcessTable.isAlive(orphan) { kill(orphan, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Reads /proc.
enum ProcessTable {
    /// The pids whose parent is `parent`.
    static func children(of parent: Int32) -> [Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap(Int32.init).filter { stat($0)?.parent == parent }.sorted()
    }

    /// Whether `pid` exists and is not a zombie (an exited child its new parent has not
    /// reaped yet holds no ports and no locks).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = stat(pid) else { return false }
        return stat.state != "Z" && stat.state != "X"
    }

    /// State and parent from /proc/<pid>/stat: `pid (comm) state ppid …`; comm may hold
    /// spaces and parentheses, so the fields are read after the last `)`.
    private static func stat(_ pid: Int32) -> (state: Character, parent: Int32)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count >= 2, let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
        return (state, parent)
    }
}
