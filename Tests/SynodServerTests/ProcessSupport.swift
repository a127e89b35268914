import ClusterLauncher
import Foundation
import Synchronization
import SynodServer
import Testing

// Process-level test support: finding the `synod` binary, choosing free ports, and running
// replicas as real `synod serve` processes that can be killed with SIGKILL and restarted.

/// Why a process-level test cannot go on; the description is the whole message.
struct ProcessTestError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

// MARK: - The binary

enum SynodBinary {
    /// The `synod` executable built next to this test bundle, or `$SYNOD_BINARY`.
    static func locate() throws -> String {
        let fileManager = FileManager.default
        if let path = ProcessInfo.processInfo.environment["SYNOD_BINARY"], !path.isEmpty {
            guard fileManager.isExecutableFile(atPath: path) else {
                throw ProcessTestError("SYNOD_BINARY=\(path) is not an executable file")
            }
            return path
        }
        var searched: [String] = []
        var directory = URL(fileURLWithPath: testExecutablePath()).deletingLastPathComponent()
        // Walk up from the test bundle: .build/debug/X.xctest/…, .build/<triple>/debug/…
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent("synod").path
            searched.append(candidate)
            if fileManager.isExecutableFile(atPath: candidate), !isDirectory(candidate) { return candidate }
            if directory.path == "/" { break }
            directory = directory.deletingLastPathComponent()
        }
        throw ProcessTestError(
            "the synod executable was not found (looked at \(searched.joined(separator: ", "))); build it with "
                + "`swift build` (or `swift test`, which builds it) or set SYNOD_BINARY")
    }

    static func testExecutablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}

// MARK: - Ports

/// Hands out blocks of loopback ports in 20000–30999 (below Linux's ephemeral range, as
/// DESIGN §1 asks). Within one test process blocks never repeat; the starting block comes
/// from the process id so that two test processes on one machine are unlikely to meet, and
/// every port of a block is checked free (bindable) before it is handed out.
enum PortAllocator {
    static let rangeStart = 20_000
    static let rangeEnd = 31_000
    static let blockSize = 20
    private static let next = Mutex<Int?>(nil)

    /// `count` (≤ blockSize) consecutive free ports.
    static func ports(_ count: Int) throws -> [Int] {
        precondition(count >= 1 && count <= blockSize, "a port block holds 1…\(blockSize) ports")
        let blocks = (rangeEnd - rangeStart) / blockSize
        for _ in 0..<blocks {
            let block = next.withLock { next -> Int in
                let block = next ?? Int(getpid()) % blocks
                next = (block + 1) % blocks
                return block
            }
            let base = rangeStart + block * blockSize
            let ports = Array(base..<(base + count))
            if ports.allSatisfy(isFree) { return ports }
        }
        throw ProcessTestError("no free block of \(count) ports in \(rangeStart)–\(rangeEnd - 1)")
    }

    /// Whether a listener could bind 127.0.0.1:port (with SO_REUSEADDR, as the servers do).
    static func isFree(_ port: Int) -> Bool {
        LoopbackPort.isFree(port)
    }
}

// MARK: - Time

/// Monotonic nanoseconds, the time base of recorded histories.
func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// The seed of a process test's injected failures: `SYNOD_TEST_SEED` when set, else a fresh
/// one. Replica N runs with `--seed` seed + N, so a run with the same seed draws the same
/// failures at the same ticks (its timing, and so its interleavings, still vary).
/// A value that is not a number fails the test: ignoring it would run another seed than the
/// one asked for.
struct FaultSeed: CustomStringConvertible {
    let value: UInt64

    struct Unreadable: Error, CustomStringConvertible {
        let text: String
        var description: String { "SYNOD_TEST_SEED=\(text) is not a seed (a number from 0 to \(UInt64.max))" }
    }

    init() throws {
        if let text = ProcessInfo.processInfo.environment["SYNOD_TEST_SEED"] {
            guard let seed = UInt64(text) else { throw Unreadable(text: text) }
            value = seed
        } else {
            value = UInt64.random(in: 1...1_000_000_000)
        }
    }

    func arguments(replica id: Int) -> [String] { ["--seed", "\(value &+ UInt64(id))"] }

    /// For a test's output: the seed and how to run the test with it again.
    func replay(filter: String) -> String { "seed \(value) (replay: SYNOD_TEST_SEED=\(value) scripts/test --filter \(filter))" }

    var description: String { "seed \(value)" }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether
/// it held.
func eventually(
    timeout: Duration, interval: Duration = .milliseconds(100), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: interval)
    }
}

// MARK: - Child processes

/// Runs a program to completion with a bounded wait; SIGKILLs it at the deadline.
struct ProgramRun: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool

    static func run(
        _ executable: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil,
        timeout: Duration = .seconds(15)
    ) async throws -> ProgramRun {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        // Files, not pipes: nothing can block on a full pipe, and no reader threads.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("synod-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        process.standardOutput = out
        process.standardError = err
        if let stdin {
            let inURL = directory.appendingPathComponent("stdin")
            _ = FileManager.default.createFile(atPath: inURL.path, contents: Data(stdin.utf8))
            process.standardInput = try FileHandle(forReadingFrom: inURL)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        let exited = await waitForExit(process, timeout: timeout)
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            _ = await waitForExit(process, timeout: .seconds(5))
        }
        try? out.close()
        try? err.close()
        let stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        return ProgramRun(
            status: process.isRunning ? -1 : process.terminationStatus, stdout: stdout, stderr: stderr,
            timedOut: !exited)
    }

    static func waitForExit(_ process: Process, timeout: Duration) async -> Bool {
        await eventually(timeout: timeout, interval: .milliseconds(10)) { !process.isRunning }
    }
}

// MARK: - Replicas

/// One `synod serve` process with its own data directory and log file; it can be killed
/// with SIGKILL and started again on the same data directory. Started through
/// `ClusterLauncher` as `synod cluster` starts its replicas, so it stops when the test
/// process dies, however it dies: a crashed test run leaves no replica behind.
final class ReplicaProcess: @unchecked Sendable {
    let id: Int
    let clientPort: Int
    let peerPort: Int
    let dataDirectory: String
    let logPath: String
    private let child: ClusterLauncher.ReplicaProcess
    private let starts = Mutex(0)

    init(member: ClusterLayout.Member, layout: ClusterLayout, directory: String, binary: String, arguments: [String]) {
        id = member.id
        clientPort = member.clientPort
        peerPort = member.peerPort
        dataDirectory = (directory as NSString).appendingPathComponent("r\(member.id)")
        logPath = (directory as NSString).appendingPathComponent("r\(member.id).log")
        child = ClusterLauncher.ReplicaProcess(
            name: "r\(member.id)", executable: binary,
            arguments: layout.serveArguments(id: member.id, dataDirectory: dataDirectory, extra: arguments),
            output: .appendToFile(logPath))
    }

    var clientEndpoint: String { "127.0.0.1:\(clientPort)" }

    var isRunning: Bool { child.isRunning }

    /// The pid of the current (or last) run.
    var processIdentifier: Int32? { child.processIdentifier }

    /// Starts the process, appending its stdout and stderr to the log file.
    func start() throws {
        let start = starts.withLock { starts in
            starts += 1
            return starts
        }
        appendToLog("---- test harness: start #\(start) of r\(id) at \(Date()) ----\n")
        try child.start()
    }

    /// SIGKILL, then waits (bounded) until the process is gone.
    func kill9() async {
        guard let pid = child.processIdentifier, child.isRunning else { return }
        child.kill9()
        if !(await child.exited(within: .seconds(10))) {
            Issue.record("r\(id) (pid \(pid)) still running 10 s after SIGKILL")
        }
        appendToLog("---- test harness: r\(id) killed with SIGKILL at \(Date()) ----\n")
    }

    /// SIGTERM, then waits (bounded) until the process has stopped gracefully.
    func terminate() async {
        guard let pid = child.processIdentifier, child.isRunning else { return }
        child.terminate()
        if !(await child.exited(within: .seconds(10))) {
            Issue.record("r\(id) (pid \(pid)) still running 10 s after SIGTERM")
            child.kill9()
        }
        appendToLog("---- test harness: r\(id) stopped with SIGTERM at \(Date()) ----\n")
    }

    /// SIGSTOP: the replica keeps its sockets but answers nothing until `resume()`.
    func pause() {
        child.pause()
        appendToLog("---- test harness: r\(id) paused (SIGSTOP) at \(Date()) ----\n")
    }

    /// Closes the replica's stdin pipe, as the death of its supervisor would.
    func closeSupervisionPipe() {
        child.closeSupervisionPipe()
        appendToLog("---- test harness: r\(id) supervision pipe closed at \(Date()) ----\n")
    }

    /// SIGCONT after `pause()`.
    func resume() {
        child.resume()
        appendToLog("---- test harness: r\(id) resumed (SIGCONT) at \(Date()) ----\n")
    }

    /// The exit status if the process has stopped on its own (not by this harness).
    var terminationDescription: String? {
        child.termination?.description
    }

    func log() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log at \(logPath))"
    }

    func logTail(lines: Int = 40) -> String {
        log().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// Appends (O_APPEND, as the child writes) so that notes and the child's lines interleave
    /// in order.
    private func appendToLog(_ text: String) {
        let descriptor = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }
}

/// N replicas as separate `synod serve` processes on 127.0.0.1, each with its own data
/// directory under one fresh temporary directory.
final class LocalCluster: @unchecked Sendable {
    let name: String
    let directory: String
    let replicas: [ReplicaProcess]
    private let failureReported = Mutex(false)

    /// Creates (does not start) `count` replicas; `extraArguments` go to every `synod serve`,
    /// `replicaArguments(id, directory)` to replica `id`'s only (e.g. its own certificates).
    init(
        name: String, replicas count: Int, extraArguments: [String] = [],
        replicaArguments: (Int, String) throws -> [String] = { _, _ in [] }
    ) throws {
        self.name = name
        let binary = try SynodBinary.locate()
        let ports = try PortAllocator.ports(2 * count)
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-\(name)-\(UUID().uuidString.prefix(8))").path
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // The allocator's ports are consecutive, as `synod cluster` lays them out.
        let layout = ClusterLayout(replicas: count, basePort: ports[0])
        precondition(layout.members.flatMap { [$0.clientPort, $0.peerPort] } == ports, "ports \(ports) are not a block")
        replicas = try layout.members.map { member in
            ReplicaProcess(
                member: member, layout: layout, directory: directory, binary: binary,
                arguments: extraArguments + (try replicaArguments(member.id, directory)))
        }
    }

    var endpoints: [String] { replicas.map(\.clientEndpoint) }

    /// The cluster id the replicas put in their peer hellos: the server's own derivation
    /// from the membership, truncated to the hello's 32 bits.
    func peerClusterID() throws -> UInt32 {
        var peers: [UInt32: Endpoint] = [:]
        for replica in replicas {
            peers[UInt32(replica.id)] = Endpoint(host: "127.0.0.1", port: replica.peerPort)
        }
        let configuration = try ServerConfiguration(
            replicaID: 1, peers: peers, listenClient: Endpoint(host: "127.0.0.1", port: replicas[0].clientPort),
            listenPeer: peers[1]!, dataDirectory: replicas[0].dataDirectory)
        return UInt32(truncatingIfNeeded: configuration.clusterID)
    }

    func replica(_ id: Int) -> ReplicaProcess { replicas[id - 1] }

    func startAll() throws {
        for replica in replicas { try replica.start() }
    }

    /// SIGKILLs every replica at once, then waits for all of them to be gone.
    func killAll() async {
        await withTaskGroup(of: Void.self) { group in
            for replica in replicas { group.addTask { await replica.kill9() } }
        }
    }

    /// Kills everything; removes the data unless a failure was reported (or
    /// SYNOD_TEST_KEEP_DATA is set).
    func tearDown() async {
        await killAll()
        if !failureReported.withLock({ $0 }), ProcessInfo.processInfo.environment["SYNOD_TEST_KEEP_DATA"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// Records an issue and, the first time, prints every replica's log tail.
    func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
        dumpLogsOnce(reason: message)
    }

    func expect(_ condition: Bool, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) {
        if !condition { fail(message(), sourceLocation: sourceLocation) }
    }

    func dumpLogsOnce(reason: String) {
        let first = failureReported.withLock { reported -> Bool in
            defer { reported = true }
            return !reported
        }
        guard first else { return }
        var text = "==== \(name) failed: \(reason)\n==== data and full logs kept in \(directory)\n"
        for replica in replicas {
            let state = replica.isRunning ? "running" : (replica.terminationDescription.map { "exited, \($0)" } ?? "stopped")
            text += "==== r\(replica.id) (\(state)), last lines of \(replica.logPath):\n\(replica.logTail())\n"
        }
        print(text)
    }

    /// Runs `body` with the cluster started; always kills the replicas afterwards and prints
    /// their logs if `body` throws.
    static func with<Result>(
        name: String, replicas: Int, extraArguments: [String] = [],
        replicaArguments: (Int, String) throws -> [String] = { _, _ in [] },
        _ body: (LocalCluster) async throws -> Result
    ) async throws -> Result {
        let cluster = try LocalCluster(
            name: name, replicas: replicas, extraArguments: extraArguments, replicaArguments: replicaArguments)
        do {
            try cluster.startAll()
            let result = try await body(cluster)
            await cluster.tearDown()
            return result
        } catch {
            cluster.dumpLogsOnce(reason: "\(error)")
            await cluster.tearDown()
            throw error
        }
    }
}
