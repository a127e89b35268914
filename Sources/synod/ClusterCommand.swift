import ArgumentParser
import Foundation
import ReplicaRuntime

/// `synod cluster`: N replicas as separate `synod serve` processes on 127.0.0.1, so any
/// one of them can be killed.
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Start a local cluster: N `synod serve` processes on 127.0.0.1.",
        discussion: """
            Prints one line `endpoints: host:port,…` for clients, then every replica's log lines \
            prefixed with its id. Ctrl-C stops all replicas gracefully. Started again with the \
            same --data-dir, the cluster resumes with all its data. Replica i listens for clients \
            on base-port + 2·(i−1) and for peers on the port after it (2379/2380, 2381/2382, …).
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

    @Option(help: "Default read consistency of every replica: linearizable or serializable.")
    var consistency: String = "linearizable"

    func validate() throws {
        guard replicas >= 1, replicas <= 15 else { throw ValidationError("--replicas must be between 1 and 15") }
        guard basePort >= 1, basePort + 2 * replicas < 65_536 else {
            throw ValidationError("--base-port \(basePort) leaves no room for \(replicas) replicas")
        }
        if let failEvery, failEvery < 0 { throw ValidationError("--fail-every must not be negative") }
        if let failDowntime, failDowntime < 0 { throw ValidationError("--fail-downtime must not be negative") }
        if let failMode, !["acceptor", "replica"].contains(failMode) {
            throw ValidationError("--fail-mode must be acceptor or replica, not '\(failMode)'")
        }
    }

    func run() throws {
        let executable = Self.executablePath()
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let ids = Array(1...replicas)
        let clientPort = { (id: Int) in basePort + 2 * (id - 1) }
        let peers = ids.map { "\($0)=127.0.0.1:\(clientPort($0) + 1)" }.joined(separator: ",")
        let clients = ids.map { "\($0)=127.0.0.1:\(clientPort($0))" }.joined(separator: ",")
        let preset = chaos ? FaultModel.chaos : FaultModel.off
        let every = failEvery ?? Int(preset.meanMillisecondsBetweenFailures)
        let downtime = failDowntime ?? Int(preset.downtimeMillisecondsMax)
        let mode = failMode ?? preset.mode.rawValue

        let output = LockedOutput()
        var processes: [Int: Process] = [:]
        for id in ids {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = [
                "serve", "--id", "\(id)", "--peers", peers, "--client-urls", clients,
                "--listen-client", "127.0.0.1:\(clientPort(id))", "--listen-peer", "127.0.0.1:\(clientPort(id) + 1)",
                "--data-dir", (dataDir as NSString).appendingPathComponent("r\(id)"), "--consistency", consistency,
                "--fail-every", "\(every)", "--fail-downtime", "\(downtime)", "--fail-mode", mode,
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            let prefix = "r\(id) | "
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                guard !data.isEmpty else {
                    handle.readabilityHandler = nil
                    return
                }
                output.write(prefix: prefix, data)
            }
            process.terminationHandler = { process in
                output.line("cluster | r\(id) exited (\(process.terminationReason == .uncaughtSignal ? "signal" : "status") \(process.terminationStatus))")
            }
            try process.run()
            processes[id] = process
        }
        output.line("endpoints: " + ids.map { "127.0.0.1:\(clientPort($0))" }.joined(separator: ","))
        if every > 0 {
            output.line(
                "cluster | random \(mode) failures on: each replica fails every \(every) ms on average "
                    + "(--fail-every), down for up to \(downtime) ms (--fail-downtime)")
        }

        // Ctrl-C or SIGTERM: stop every replica gracefully, then exit.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        output.line("cluster | stopping all replicas")
        for process in processes.values where process.isRunning {
            process.terminate()  // SIGTERM: each replica drains and stops
        }
        let deadline = Date().addingTimeInterval(10)
        for process in processes.values {
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        _ = sources
        output.line("cluster | stopped")
    }

    /// The path of this very binary, so the replicas run the same build.
    static func executablePath() -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        return CommandLine.arguments[0]
    }
}

/// Serializes output lines from several replicas.
final class LockedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var partial: [String: Data] = [:]

    func write(prefix: String, _ data: Data) {
        lock.lock()
        defer { lock.unlock() }
        var buffer = (partial[prefix] ?? Data()) + data
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer[buffer.startIndex..<newline]
            FileHandle.standardOutput.write(Data(prefix.utf8) + line + Data([UInt8(ascii: "\n")]))
            buffer = Data(buffer[buffer.index(after: newline)...])
        }
        partial[prefix] = buffer
    }

    func line(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
