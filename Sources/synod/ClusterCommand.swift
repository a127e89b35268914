import ArgumentParser
import ClusterLauncher
import Foundation
import ReplicaRuntime
import SynodServer
import SynodTLS

/// `synod cluster`: N replicas as separate `synod serve` processes on 127.0.0.1, so any
/// one of them can be killed. The replicas never outlive this supervisor: each watches a
/// pipe on its stdin (`SupervisorWatch`) and stops when the supervisor is gone.
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Start a local cluster: N `synod serve` processes on 127.0.0.1.",
        discussion: """
            Prints one line `endpoints: host:port,…` for clients, then every replica's log lines \
            prefixed with its id. Ctrl-C, SIGTERM or SIGHUP stops all replicas gracefully; if the \
            supervisor dies any other way (kill -9), each replica notices within a second and \
            stops. Started again with the same --data-dir, the cluster resumes with all its data. \
            Replica i listens for clients on base-port + 2·(i−1) and for peers on the port after \
            it (2379/2380, 2381/2382, …); if any of these ports is in use, the cluster does not \
            start. Exits non-zero when every replica has exited on its own.

            With --tls, the cluster's own CA and certificates are made (or, on a restart, reused) in \
            <data-dir>/tls/ — ca.crt, r<i>.crt/.key (client API), r<i>-peer.crt/.key (peers), \
            client.crt/.key (a client certificate, CN root) — and every replica serves both planes \
            over TLS with client-certificate auth. A second line `etcdctl flags: --cacert=… \
            --cert=… --key=…` tells clients what to add.
            """
    )

    @Option(help: "Number of replicas (odd: 1, 3, 5, 7 …).")
    var replicas: Int = 5

    @Option(help: "Data directory; replica i keeps its data in <dir>/r<i>.")
    var dataDir: String = "./synod-data"

    @Option(help: "Client port of replica 1; replica i uses base + 2·(i−1), its peer port the next one.")
    var basePort: Int = 2379

    @Flag(help: "Turn the random acceptor failures on: each acceptor fails every 6 s on average, down for up to 1.5 s.")
    var chaos = false

    @Option(help: "Random failures: mean milliseconds between two failures of each replica (overrides --chaos; 0 = off).")
    var failEvery: Int?

    @Option(help: "Longest downtime of a random failure, in milliseconds.")
    var failDowntime: Int?

    @Option(help: "What a random failure takes down: acceptor (only the acceptor role) or replica (everything).")
    var failMode: String?

    @Option(help: "Seed of the replicas' random choices (replica N gets seed + N): the same seed repeats when each fails and for how long.")
    var seed: UInt64?

    @Option(help: "Default read consistency of every replica: linearizable or serializable.")
    var consistency: String = "linearizable"

    @Flag(help: "TLS with client certificates on both planes, certificates made in <data-dir>/tls/.")
    var tls = false

    @Option(name: .customLong("tls-client-cn"), help: "Common name (etcd's user name) of the client certificate --tls makes.")
    var tlsClientCN: String = "root"
    @Option(help: ArgumentHelp(ServerConfiguration.quotaHelp))
    var quotaBackendBytes: Int = 0

    @Flag(name: .customLong(String(SupervisorWatch.flag.dropFirst(2))), help: ArgumentHelp(SupervisorWatch.help))
    var exitOnStdinEOF = false

    func validate() throws {
        guard !tlsClientCN.isEmpty, tlsClientCN.utf8.count <= 64 else {
            throw ValidationError("--tls-client-cn must have 1 to 64 bytes")
        }
        guard replicas >= 1, replicas <= ClusterLayout.replicasMax else {
            throw ValidationError("--replicas must be between 1 and \(ClusterLayout.replicasMax)")
        }
        guard basePort >= 1, basePort + 2 * replicas <= 65_536 else {
            throw ValidationError("--base-port \(basePort) leaves no room for \(replicas) replicas")
        }
        if let failEvery, failEvery < 0 { throw ValidationError("--fail-every must not be negative") }
        if let failDowntime, failDowntime < 0 { throw ValidationError("--fail-downtime must not be negative") }
        if let failMode, !["acceptor", "replica"].contains(failMode) {
            throw ValidationError("--fail-mode must be acceptor or replica, not '\(failMode)'")
        }
    }

    /// How long the replicas may take to stop gracefully before they are killed.
    static let stopGraceSeconds: Double = 10
    /// How long the supervisor waits for the last lines of a replica that exited.
    static let outputDrainSeconds: Double = 1
    /// How often the supervisor looks at signals and at its replicas.
    static let pollMicroseconds: UInt32 = 50_000

    func run() throws {
        let layout = ClusterLayout(replicas: replicas, basePort: basePort)
        // Before any replica starts: a second cluster on the same ports must not start
        // replicas that fail one by one (or, worse, share the first cluster's directories).
        if let (port, role) = layout.firstPortInUse() {
            FileHandle.standardError.write(
                Data("synod cluster: port \(port) (\(role)) is in use; is another cluster running?\n".utf8))
            throw ExitCode(1)
        }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let preset = chaos ? FaultModel.chaos : FaultModel.off
        let every = failEvery ?? Int(preset.meanMillisecondsBetweenFailures)
        let downtime = failDowntime ?? Int(preset.downtimeMillisecondsMax)
        let mode = failMode ?? preset.mode.rawValue
        // Installed before the first replica starts, so that no stop signal finds a replica
        // without its supervisor looking.
        StopSignals.install()
        if exitOnStdinEOF { SupervisorWatch.start(name: "synod cluster") }

        let output = LockedOutput()
        let certificates = try tls ? makeCertificates(layout, output: output) : nil
        let executable = ReplicaProcess.currentExecutablePath()
        var children: [ReplicaProcess] = []
        for member in layout.members {
            let id = member.id
            let arguments = layout.serveArguments(
                id: id, dataDirectory: (dataDir as NSString).appendingPathComponent("r\(id)"),
                extra: [
                    "--consistency", consistency, "--fail-every", "\(every)", "--fail-downtime", "\(downtime)",
                    "--fail-mode", mode, "--quota-backend-bytes=\(quotaBackendBytes)",
                ] + (seed.map { ["--seed", "\($0 &+ UInt64(id))"] } ?? []) + (certificates?.serveArguments(replica: id) ?? []))
            let child = ReplicaProcess(
                name: "r\(id)", executable: executable, arguments: arguments,
                output: .lines { line in output.line("r\(id) | " + line) },
                onExit: { termination in output.line("cluster | r\(id) exited (\(termination))") })
            do {
                try child.start()
            } catch {
                output.line("cluster | cannot start r\(id): \(error)")
                ReplicaProcess.stopAll(children, graceSeconds: Self.stopGraceSeconds)
                throw ExitCode(1)
            }
            children.append(child)
        }
        output.line("endpoints: " + layout.clientEndpoints)
        if let certificates { output.line("etcdctl flags: " + certificates.clientFlags) }
        if every > 0 {
            output.line(
                "cluster | random \(mode) failures on: each replica fails every \(every) ms on average "
                    + "(--fail-every), down for up to \(downtime) ms (--fail-downtime)")
        }

        // Ctrl-C, SIGTERM or SIGHUP: stop every replica gracefully, then exit. If every
        // replica has exited on its own, there is nothing left to supervise: exit non-zero.
        while StopSignals.received == nil {
            if !children.contains(where: \.isRunning) {
                for child in children { _ = child.waitForOutput(seconds: Self.outputDrainSeconds) }
                output.line("cluster | all \(children.count) replicas exited; stopping")
                throw ExitCode(1)
            }
            usleep(Self.pollMicroseconds)
        }
        output.line("cluster | \(StopSignals.name(StopSignals.received!)): stopping all replicas")
        let killed = ReplicaProcess.stopAll(children, graceSeconds: Self.stopGraceSeconds)
        for child in killed {
            output.line("cluster | \(child.name) did not stop within \(Int(Self.stopGraceSeconds)) s: killed")
        }
        for child in children { _ = child.waitForOutput(seconds: Self.outputDrainSeconds) }
        output.line("cluster | stopped")
    }
}

extension ClusterCommand {
    /// The cluster's certificates in <data-dir>/tls (absolute paths, so the printed flags work
    /// from anywhere): reused when valid, made when missing.
    func makeCertificates(_ layout: ClusterLayout, output: LockedOutput) throws -> LocalCertificateFiles {
        let directory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        let files = LocalCertificateFiles(dataDirectory: directory)
        do {
            let written = try LocalCertificateAuthority.ensure(
                files, replicas: layout.members.map(\.id), clientCommonName: tlsClientCN)
            let what = written.isEmpty ? "reusing the certificates" : "made \(written.count) certificate and key files"
            output.line("cluster | TLS with client certificates on both planes: \(what) in \(files.directory)")
        } catch {
            FileHandle.standardError.write(Data("synod cluster: \(error)\n".utf8))
            throw ExitCode(1)
        }
        return files
    }
}

/// Serializes output lines from several replicas.
final class LockedOutput: @unchecked Sendable {
    private let lock = NSLock()

    /// One line to stdout through write(2): a terminal that went away (EIO) must not trap the
    /// supervisor in the middle of stopping its replicas, as FileHandle's write would.
    func line(_ text: String) {
        let bytes = Array((text + "\n").utf8)
        lock.withLock {
            var done = 0
            while done < bytes.count {
                let written = bytes[done...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                done += written
            }
        }
    }
}
