import ArgumentParser
import ClusterLauncher
import EtcdAPI
import EtcdGRPC
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization
import SynodClient
import SynodTLS

/// `synod demo`: the course project's client run, done properly. Starts a local cluster with
/// random acceptor failures (or uses `--endpoints`), then PUTs, GETs and DELETEs keys, each
/// at a random replica, retrying elsewhere when a replica is unavailable, and prints one line
/// per operation: when, what, which replica served it, at which revision, how fast.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a short PUT/GET/DELETE session against a cluster that fails at random.",
        discussion: """
            Without --endpoints it starts a cluster as `synod cluster --replicas 5 --fail-every 3000 \
            --fail-downtime 1500` would, in a temporary directory on --base-port, relays the \
            cluster's failure, recovery and leader lines, and stops the cluster (SIGTERM) at the end \
            or on Ctrl-C; its replicas also stop if the demo is killed. Writes carry a \
            synod-request-id header, so a write retried on another replica is applied exactly once. Exits non-zero if the cluster does not come up or an \
            operation fails after all its attempts.
            """
    )

    @Option(name: .long, help: "Comma-separated host:port endpoints of a running cluster (default: start one).")
    var endpoints: String?

    @Option(name: .long, help: "Replicas of the cluster the demo starts.")
    var replicas: Int = 5

    @Option(name: .customLong("base-port"), help: "Client port of replica 1 of the cluster the demo starts.")
    var basePort: Int = 22_379

    @Option(name: .customLong("fail-every"), help: "Random acceptor failures of the started cluster: mean milliseconds between two failures of each replica.")
    var failEvery: Int = 3_000

    @Option(name: .customLong("fail-downtime"), help: "Longest downtime of a random failure, in milliseconds.")
    var failDowntime: Int = 1_500

    @Option(name: .long, help: "Deadline of one attempt of an operation (e.g. 3s, 500ms).")
    var timeout: DurationArgument = DurationArgument(.seconds(3))

    @Option(name: .long, help: "Attempts per operation before the demo gives up.")
    var attempts: Int = DemoLimits.attemptsDefault

    @Option(name: .long, help: "Longest wait for the cluster to come up and elect a leader (e.g. 30s).")
    var startup: DurationArgument = DurationArgument(.seconds(30))

    @Flag(help: "Start the cluster with TLS and client certificates on both planes (as `synod cluster --tls`).")
    var tls = false

    @OptionGroup var clientTLS: ClientTLSOptions

    func validate() throws {
        guard (1...DemoLimits.replicasMax).contains(replicas), replicas % 2 == 1 else {
            throw ValidationError("--replicas must be odd and in 1...\(DemoLimits.replicasMax)")
        }
        guard basePort >= 1, basePort + 2 * replicas < 65_536 else {
            throw ValidationError("--base-port \(basePort) leaves no room for \(replicas) replicas")
        }
        guard failEvery >= 0 else { throw ValidationError("--fail-every must not be negative") }
        guard failDowntime >= 0 else { throw ValidationError("--fail-downtime must not be negative") }
        guard timeout.duration > .zero else { throw ValidationError("--timeout must be positive") }
        guard (1...DemoLimits.attemptsMax).contains(attempts) else {
            throw ValidationError("--attempts must be in 1...\(DemoLimits.attemptsMax)")
        }
        guard startup.duration > .zero else { throw ValidationError("--startup must be positive") }
        if let endpoints {
            do { _ = try DemoEndpoint.parseList(endpoints) } catch { throw ValidationError("--endpoints: \(error)") }
            if tls { throw ValidationError("--tls is for the cluster the demo starts; for --endpoints give --cacert, --cert, --key") }
        }
    }

    func run() async throws {
        let printer = DemoPrinter()
        var cluster: DemoCluster?
        let endpointList: [DemoEndpoint]
        var tlsFiles = try clientTLS.files(endpoints: endpoints ?? "")
        if let endpoints {
            endpointList = try DemoEndpoint.parseList(endpoints)
            printer.note("using the cluster at \(endpoints)")
        } else {
            let started = DemoCluster(
                replicas: replicas, basePort: basePort, failEvery: failEvery, failDowntimeMilliseconds: failDowntime,
                tls: tls, printer: printer)
            cluster = started
            do {
                endpointList = try started.start()
                if let certificates = started.certificates {
                    tlsFiles = ClientTLSFiles(
                        trustedCAFile: certificates.caCertificate, certificateFile: certificates.clientCertificate,
                        keyFile: certificates.clientKey)
                }
            } catch {
                started.stop()
                throw DemoFailure.report(printer, "\(error)")
            }
        }
        let interrupts = DemoInterrupts.install(printer: printer, cluster: cluster)
        var failure: String?
        do {
            var session = try DemoSession(
                endpoints: endpointList, tls: tlsFiles, printer: printer, attemptTimeout: timeout.duration, attemptsMax: attempts,
                cluster: cluster)
            try await session.run(startupDeadline: ContinuousClock.now.advanced(by: startup.duration))
        } catch {
            failure = "\(error)"
        }
        if let cluster {
            if !interrupts.fired { printer.note("stopping the cluster (SIGTERM)") }
            cluster.stop()
        }
        if interrupts.fired {
            // The signal handler stops the cluster and exits with 130.
            while true { pause() }
        }
        if let failure { throw DemoFailure.report(printer, failure) }
    }
}

/// The demo's bounds (STYLE 9).
enum DemoLimits {
    static let replicasMax = 15
    static let attemptsDefault = 10
    static let attemptsMax = 100
    /// Keys written before the session proper.
    static let prepopulatedKeys = 10
    /// How long a stopped cluster may take to drain before it is killed.
    static let stopGraceSeconds: Double = 15
    /// Pause between two attempts of one operation, so a recovering cluster gets a moment.
    static let retryPause: Duration = .milliseconds(200)
}

/// Why the demo failed; one line for the user.
enum DemoError: Error, CustomStringConvertible {
    case clusterDidNotStart(String)
    case noLeader(Duration)
    case operationFailed(String, attempts: Int, lastError: String)
    case wrongResult(String)

    var description: String {
        switch self {
        case .clusterDidNotStart(let reason): return "the cluster did not come up: \(reason)"
        case .noLeader(let waited):
            return "no replica reported a leader within \(DemoSession.milliseconds(waited))"
        case .operationFailed(let operation, let attempts, let lastError):
            return "\(operation) failed after \(attempts) attempts; last error: \(lastError)"
        case .wrongResult(let text): return "unexpected result: \(text)"
        }
    }
}

/// Prints `Error: message` to stderr (after the demo's own output) and exits with 1.
enum DemoFailure {
    static func report(_ printer: DemoPrinter, _ message: String) -> ExitCode {
        printer.flush()
        FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
        return ExitCode(1)
    }
}

// MARK: - Output

/// Serializes the demo's lines and the cluster lines it relays; every line gets a local
/// wall-clock timestamp with milliseconds.
final class DemoPrinter: @unchecked Sendable {
    private let lock = NSLock()

    /// `12:34:56.789`
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        localtime_r(&seconds, &parts)
        return String(
            format: "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min, parts.tm_sec, Int32(now.tv_nsec / 1_000_000))
    }

    /// A timestamped line.
    func line(_ text: String) {
        write(Self.timestamp() + "  " + text)
    }

    /// A timestamped note (setup, cluster events).
    func note(_ text: String) {
        line("· " + text)
    }

    /// A line without timestamp (tables, summary).
    func write(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// Waits for lines being written by other threads.
    func flush() {
        lock.lock()
        lock.unlock()
    }
}

// MARK: - Endpoints

struct DemoEndpoint: Hashable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    var description: String { "\(host):\(port)" }

    static func parseList(_ text: String) throws -> [DemoEndpoint] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !items.isEmpty else { throw DemoError.clusterDidNotStart("no endpoints in '\(text)'") }
        return try items.map { item in
            guard let colon = item.lastIndex(of: ":"), colon != item.startIndex,
                let port = Int(item[item.index(after: colon)...]), (1...65_535).contains(port)
            else {
                throw ValidationError("'\(item)' is not host:port")
            }
            return DemoEndpoint(host: String(item[..<colon]), port: port)
        }
    }
}

// MARK: - The cluster the demo starts

/// The demo's own local cluster: `synod serve` processes started and supervised as
/// `synod cluster` does (`ClusterLauncher`), so they stop when the demo does, however it
/// stops. Their lines about failures, recoveries, leaders and exits are relayed.
final class DemoCluster: @unchecked Sendable {
    let replicas: Int
    let basePort: Int
    let failEvery: Int
    let failDowntimeMilliseconds: Int
    let printer: DemoPrinter
    let dataDirectory: String
    let layout: ClusterLayout
    private let lock = NSLock()
    // Guarded by `lock`.
    private var children: [ReplicaProcess] = []
    private var stopped = false
    /// Signalled once `stop()` has finished (and re-signalled by each waiter).
    private let stopDone = DispatchSemaphore(value: 0)
    private(set) var failuresSeen = 0
    private(set) var recoveriesSeen = 0
    private(set) var exitsSeen = 0

    /// Lines of the replicas' output the demo relays.
    static let relayedMarkers = ["fault injector", "recovered", "leader is", "exited", "Program crashed", "Fatal error"]

    /// Made by `start()` when the cluster runs with TLS (before any replica starts; only
    /// read afterwards).
    private(set) var certificates: LocalCertificateFiles?
    let tls: Bool

    init(replicas: Int, basePort: Int, failEvery: Int, failDowntimeMilliseconds: Int, tls: Bool = false, printer: DemoPrinter) {
        self.tls = tls
        self.replicas = replicas
        self.basePort = basePort
        self.failEvery = failEvery
        self.failDowntimeMilliseconds = failDowntimeMilliseconds
        self.printer = printer
        layout = ClusterLayout(replicas: replicas, basePort: basePort)
        dataDirectory = (NSTemporaryDirectory() as NSString).appendingPathComponent("synod-demo-\(getpid())")
    }

    /// Starts the replicas and returns their endpoints (the session then waits for a leader).
    func start() throws -> [DemoEndpoint] {
        if let (port, role) = layout.firstPortInUse() {
            throw DemoError.clusterDidNotStart(
                "port \(port) (\(role)) on 127.0.0.1 is in use (an earlier demo still running?); "
                    + "choose another --base-port")
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        let extra = ["--fail-every", "\(failEvery)", "--fail-downtime", "\(failDowntimeMilliseconds)"]
        if tls {
            let files = LocalCertificateFiles(dataDirectory: dataDirectory)
            try LocalCertificateAuthority.ensure(files, replicas: layout.members.map(\.id))
            certificates = files
            printer.note("TLS with client certificates on both planes; clients add \(files.clientFlags)")
        }
        printer.note(
            "starting \(replicas) replicas (as `synod cluster --replicas \(replicas) --data-dir \(dataDirectory) "
                + "--base-port \(basePort) \(extra.joined(separator: " "))`)")
        let executable = ReplicaProcess.currentExecutablePath()
        for member in layout.members {
            let id = member.id
            let child = ReplicaProcess(
                name: "r\(id)", executable: executable,
                arguments: layout.serveArguments(
                    id: id, dataDirectory: (dataDirectory as NSString).appendingPathComponent("r\(id)"),
                    extra: extra + (certificates?.serveArguments(replica: id) ?? [])),
                output: .lines { [weak self] line in self?.handle("r\(id) | " + line) },
                onExit: { [weak self] termination in self?.exited("r\(id)", termination) })
            do {
                try child.start()
            } catch {
                throw DemoError.clusterDidNotStart("\(error)")
            }
            lock.withLock { children.append(child) }
        }
        let list = try DemoEndpoint.parseList(layout.clientEndpoints)
        printer.note("cluster endpoints: \(list.map(\.description).joined(separator: ","))")
        return list
    }

    private func exited(_ name: String, _ termination: ReplicaProcess.Termination) {
        handle("cluster | \(name) exited (\(termination))")
    }

    private func handle(_ line: String) {
        guard Self.relayedMarkers.contains(where: { line.contains($0) }) else { return }
        lock.withLock {
            if line.contains("fault injector: acceptor crashed") { failuresSeen += 1 }
            if line.contains("fault injector: acceptor recovered") { recoveriesSeen += 1 }
            if line.contains(" exited (") && !stopped { exitsSeen += 1 }
        }
        printer.line("  [cluster] " + Self.condensed(line))
    }

    /// `r2 | 2026-…T17:38:26+0000 notice synod.r2: chosen=0 [SynodServer] leader is r1 (1.1)`
    /// becomes `r2 | leader is r1 (1.1)  {chosen=0}`: the demo prints its own timestamp.
    static func condensed(_ line: String) -> String {
        guard let bar = line.range(of: " | ") else { return line }
        let replica = line[..<bar.lowerBound]
        let rest = line[bar.upperBound...]
        guard let labelEnd = rest.range(of: ": ") else { return line }
        let afterLabel = rest[labelEnd.upperBound...]
        guard let sourceStart = afterLabel.range(of: "["), let sourceEnd = afterLabel.range(of: "] ") else {
            return line
        }
        guard sourceStart.lowerBound < sourceEnd.lowerBound else { return line }
        let metadata = afterLabel[..<sourceStart.lowerBound].trimmingCharacters(in: .whitespaces)
        let message = afterLabel[sourceEnd.upperBound...]
        return "\(replica) | \(message)" + (metadata.isEmpty ? "" : "  {\(metadata)}")
    }

    /// SIGTERM to every replica (each stops gracefully), wait, then SIGKILL; removes the
    /// data directory. Idempotent: a second caller waits until the first is done.
    func stop() {
        let first = lock.withLock {
            defer { stopped = true }
            return !stopped
        }
        guard first else {
            stopDone.wait()
            stopDone.signal()
            return
        }
        defer { stopDone.signal() }
        let children = lock.withLock { self.children }
        let killed = ReplicaProcess.stopAll(children, graceSeconds: DemoLimits.stopGraceSeconds)
        if !killed.isEmpty {
            printer.note(
                "\(killed.map(\.name).joined(separator: ", ")) did not stop within "
                    + "\(Int(DemoLimits.stopGraceSeconds)) s: SIGKILL")
        }
        // Let the last relayed lines (the replicas' exits) arrive.
        let drained = Date().addingTimeInterval(1)
        for child in children { _ = child.waitForOutput(seconds: max(0, drained.timeIntervalSinceNow)) }
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }

    var counts: (failures: Int, recoveries: Int, exits: Int) {
        lock.withLock { (failuresSeen, recoveriesSeen, exitsSeen) }
    }
}

/// The signal that arrived (0: none yet). Written by `demoSignalHandler` — an atomic
/// store is all a signal handler may safely do — and polled by the watcher thread.
private let demoSignalReceived = Atomic<Int32>(0)

private func demoSignalHandler(_ signalNumber: Int32) {
    demoSignalReceived.store(signalNumber, ordering: .relaxed)
}

/// Ctrl-C or SIGTERM: stop the cluster the demo started, then exit 130.
///
/// A plain handler plus a watcher thread rather than a Dispatch signal source: with a child
/// process running, the Dispatch source did not fire on Linux and the demo died of the
/// signal, leaving the cluster behind.
final class DemoInterrupts: Sendable {
    /// Bound on how late the watcher notices a signal.
    static let pollInterval: UInt32 = 50_000

    /// Whether a signal arrived; the watcher then owns the exit.
    var fired: Bool { demoSignalReceived.load(ordering: .relaxed) != 0 }

    static func install(printer: DemoPrinter, cluster: DemoCluster?) -> DemoInterrupts {
        signal(SIGINT, demoSignalHandler)
        signal(SIGTERM, demoSignalHandler)
        let watcher = Thread {
            while demoSignalReceived.load(ordering: .relaxed) == 0 { usleep(pollInterval) }
            printer.note("interrupted: stopping the cluster")
            cluster?.stop()
            printer.flush()
            exit(130)
        }
        watcher.name = "synod-demo-signals"
        watcher.start()
        return DemoInterrupts()
    }
}

// MARK: - The session

/// One replica's connection and the generated etcd clients on it.
struct DemoReplica: Sendable {
    typealias Transport = HTTP2ClientTransport.Posix

    let endpoint: DemoEndpoint
    let grpc: GRPCClient<Transport>
    let kv: Etcdserverpb_KV.Client<Transport>
    let maintenance: Etcdserverpb_Maintenance.Client<Transport>

    init(endpoint: DemoEndpoint, tls: ClientTLSFiles? = nil) throws {
        let transport = try Transport(
            target: .ipv4(address: endpoint.host, port: endpoint.port),
            transportSecurity: SynodConnection.transportSecurity(tls),
            config: .defaults { config in
                config.backoff = .init(initial: .milliseconds(50), max: .seconds(1), multiplier: 1.6, jitter: 0.2)
            })
        self.endpoint = endpoint
        grpc = GRPCClient(transport: transport)
        kv = Etcdserverpb_KV.Client(wrapping: grpc)
        maintenance = Etcdserverpb_Maintenance.Client(wrapping: grpc)
    }
}

/// The operations the session runs.
enum DemoOperation: Sendable {
    case put(key: String, value: String)
    case get(key: String)
    case delete(key: String)

    var name: String {
        switch self {
        case .put: return "PUT"
        case .get: return "GET"
        case .delete: return "DELETE"
        }
    }

    var key: String {
        switch self {
        case .put(let key, _), .get(let key), .delete(let key): return key
        }
    }

    var isWrite: Bool {
        if case .get = self { return false }
        return true
    }

    var text: String {
        switch self {
        case .put(let key, let value): return "PUT    \(key) = \"\(value)\""
        case .get(let key): return "GET    \(key)"
        case .delete(let key): return "DELETE \(key)"
        }
    }
}

/// What one operation returned.
enum DemoResponse: Sendable {
    case put(Etcdserverpb_PutResponse)
    case get(Etcdserverpb_RangeResponse)
    case delete(Etcdserverpb_DeleteRangeResponse)

    var header: Etcdserverpb_ResponseHeader {
        switch self {
        case .put(let response): return response.header
        case .get(let response): return response.header
        case .delete(let response): return response.header
        }
    }
}

/// The sequential client session: one client id, one request sequence, a model of what
/// each key must hold (one client and linearizable reads: every GET must match it).
struct DemoSession {
    let replicas: [DemoReplica]
    let printer: DemoPrinter
    let attemptTimeout: Duration
    let attemptsMax: Int
    let cluster: DemoCluster?
    /// High bit clear: the server reserves it for writes without a request id.
    let clientID = UInt64.random(in: 1...(UInt64.max >> 1))
    var sequence: UInt64 = 0
    var expected: [String: String] = [:]
    var random = SystemRandomNumberGenerator()
    var latenciesMicroseconds: [Int] = []
    var counts: [String: Int] = [:]
    var retries = 0

    init(
        endpoints: [DemoEndpoint], tls: ClientTLSFiles? = nil, printer: DemoPrinter, attemptTimeout: Duration,
        attemptsMax: Int, cluster: DemoCluster?
    ) throws {
        self.replicas = try endpoints.map { try DemoReplica(endpoint: $0, tls: tls) }
        self.printer = printer
        self.attemptTimeout = attemptTimeout
        self.attemptsMax = attemptsMax
        self.cluster = cluster
    }

    mutating func run(startupDeadline: ContinuousClock.Instant) async throws {
        let connections = replicas.map(\.grpc)
        try await withThrowingDiscardingTaskGroup { group in
            for grpc in connections {
                group.addTask { try? await grpc.runConnections() }
            }
            defer {
                for grpc in connections { grpc.beginGracefulShutdown() }
            }
            try await script(startupDeadline: startupDeadline)
        }
    }

    mutating func script(startupDeadline: ContinuousClock.Instant) async throws {
        let started = ContinuousClock.now
        try await waitForLeader(until: startupDeadline)
        printer.write("")
        printer.note(
            "client \(Self.hex16(clientID)): every operation goes to a random replica; writes carry "
                + "synod-request-id \(Self.hex16(clientID))-<sequence>")
        printer.note("pre-populating \(DemoLimits.prepopulatedKeys) keys")
        for index in 0..<DemoLimits.prepopulatedKeys {
            try await perform(.put(key: Self.key(index), value: "v\(index).0"))
        }
        printer.write("")
        printer.note("the session: puts, gets and deletes, interleaved")
        for operation in Self.session {
            try await perform(operation)
        }
        printer.write("")
        try await printStatus()
        summarize(elapsed: ContinuousClock.now - started)
    }

    static func key(_ index: Int) -> String {
        "demo/key-" + (index < 10 ? "0\(index)" : "\(index)")
    }

    /// Interleaved: 7 PUTs, 8 GETs (2 of deleted keys), 5 DELETEs.
    static let session: [DemoOperation] = [
        .get(key: key(3)),
        .put(key: key(3), value: "v3.1"),
        .get(key: key(3)),
        .delete(key: key(5)),
        .get(key: key(5)),
        .put(key: key(10), value: "v10.0"),
        .delete(key: key(2)),
        .get(key: key(10)),
        .put(key: key(1), value: "v1.1"),
        .get(key: key(2)),
        .delete(key: key(7)),
        .put(key: key(5), value: "v5.1"),
        .get(key: key(5)),
        .delete(key: key(10)),
        .put(key: key(8), value: "v8.1"),
        .get(key: key(8)),
        .delete(key: key(0)),
        .put(key: key(9), value: "v9.1"),
        .get(key: key(1)),
        .get(key: key(7)),
    ]

    // MARK: Operations

    mutating func perform(_ operation: DemoOperation) async throws {
        var metadata: Metadata = [:]
        if operation.isWrite {
            sequence += 1
            metadata.addString("\(Self.hex16(clientID))-\(sequence)", forKey: "synod-request-id")
        }
        var options = CallOptions.defaults
        options.timeout = attemptTimeout
        options.waitForReady = false
        var target = Int.random(in: 0..<replicas.count, using: &random)
        var lastError = ""
        for attempt in 1...attemptsMax {
            let replica = replicas[target]
            let start = ContinuousClock.now
            do {
                let response = try await call(operation, on: replica, metadata: metadata, options: options)
                let latency = ContinuousClock.now - start
                try report(operation, response, replica: replica, latency: latency, attempt: attempt)
                return
            } catch let error as RPCError where Self.isRetryable(error.code) {
                lastError = "\(replica.endpoint): \(error.code): \(error.message)"
                guard attempt < attemptsMax else { break }
                retries += 1
                let next = otherReplica(than: target)
                printer.line(
                    "  ↻ \(operation.name) \(operation.key): \(replica.endpoint) answered \(error.code) "
                        + "(\(error.message)) after \(Self.milliseconds(ContinuousClock.now - start)); "
                        + "retrying on \(replicas[next].endpoint)"
                        + (operation.isWrite ? " with the same request id" : ""))
                target = next
                try await Task.sleep(for: DemoLimits.retryPause)
            } catch let error as RPCError {
                throw DemoError.operationFailed(
                    operation.text, attempts: attempt,
                    lastError: "\(replica.endpoint): \(error.code): \(error.message)")
            }
        }
        throw DemoError.operationFailed(operation.text, attempts: attemptsMax, lastError: lastError)
    }

    /// Retried elsewhere: the replica is recovering, has no leader, or did not answer in time.
    static func isRetryable(_ code: RPCError.Code) -> Bool {
        code == .unavailable || code == .deadlineExceeded
    }

    mutating func otherReplica(than index: Int) -> Int {
        guard replicas.count > 1 else { return index }
        let offset = Int.random(in: 1..<replicas.count, using: &random)
        return (index + offset) % replicas.count
    }

    func call(_ operation: DemoOperation, on replica: DemoReplica, metadata: Metadata, options: CallOptions)
        async throws -> DemoResponse
    {
        switch operation {
        case .put(let key, let value):
            var request = Etcdserverpb_PutRequest()
            request.key = Data(key.utf8)
            request.value = Data(value.utf8)
            return .put(try await replica.kv.put(request, metadata: metadata, options: options))
        case .get(let key):
            var request = Etcdserverpb_RangeRequest()
            request.key = Data(key.utf8)
            return .get(try await replica.kv.range(request, metadata: metadata, options: options))
        case .delete(let key):
            var request = Etcdserverpb_DeleteRangeRequest()
            request.key = Data(key.utf8)
            return .delete(try await replica.kv.deleteRange(request, metadata: metadata, options: options))
        }
    }

    /// Prints the operation's line and checks it against the model.
    mutating func report(
        _ operation: DemoOperation, _ response: DemoResponse, replica: DemoReplica, latency: Duration, attempt: Int
    ) throws {
        var outcome: String
        var mismatch: String?
        switch (operation, response) {
        case (.put(let key, let value), .put):
            outcome = "OK"
            expected[key] = value
        case (.get(let key), .get(let range)):
            let found = range.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
            if let found, let kv = range.kvs.first {
                outcome = "→ \"\(found)\" (version \(kv.version), mod rev \(kv.modRevision))"
            } else {
                outcome = "→ not found"
            }
            if found != expected[key] {
                mismatch = "GET \(key) returned \(found.map { "\"\($0)\"" } ?? "nothing"), expected "
                    + (expected[key].map { "\"\($0)\"" } ?? "not found")
            }
        case (.delete(let key), .delete(let deleted)):
            outcome = "→ deleted \(deleted.deleted)"
            let wasThere = expected.removeValue(forKey: key) != nil
            if wasThere != (deleted.deleted == 1) {
                mismatch = "DELETE \(key) deleted \(deleted.deleted), expected \(wasThere ? 1 : 0)"
            }
        default:
            preconditionFailure("response does not match operation \(operation.name)")
        }
        let header = response.header
        let operationColumn = operation.text.padding(toLength: 32, withPad: " ", startingAt: 0)
        let outcomeColumn = outcome.padding(toLength: 36, withPad: " ", startingAt: 0)
        let served = "r\(header.memberID) \(replica.endpoint)"
        printer.line(
            "\(operationColumn) \(outcomeColumn) served by \(served)  rev \(header.revision)  "
                + "\(Self.milliseconds(latency))" + (attempt > 1 ? "  (attempt \(attempt))" : ""))
        latenciesMicroseconds.append(Self.microseconds(latency))
        counts[operation.name, default: 0] += 1
        if let mismatch { throw DemoError.wrongResult(mismatch) }
    }

    // MARK: Status

    /// Polls every replica's status until one reports a leader.
    func waitForLeader(until deadline: ContinuousClock.Instant) async throws {
        let begin = ContinuousClock.now
        var options = CallOptions.defaults
        options.timeout = .seconds(1)
        options.waitForReady = false
        while ContinuousClock.now < deadline {
            for replica in replicas {
                guard let status = try? await replica.maintenance.status(.init(), options: options) else { continue }
                if status.leader != 0 {
                    printer.note(
                        "cluster is up: \(replica.endpoint) reports leader r\(status.leader) "
                            + "after \(Self.milliseconds(ContinuousClock.now - begin))")
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw DemoError.noLeader(ContinuousClock.now - begin)
    }

    func printStatus() async throws {
        printer.note("Maintenance.Status of every replica")
        var options = CallOptions.defaults
        options.timeout = .seconds(2)
        options.waitForReady = false
        printer.write("    replica  endpoint             leader  revision  raft index  applied  term  errors")
        for replica in replicas {
            do {
                let status = try await replica.maintenance.status(.init(), options: options)
                let leader = status.leader == 0 ? "-" : "r\(status.leader)"
                let marker = status.leader != 0 && status.leader == status.header.memberID ? "*" : " "
                printer.write(
                    "   \(marker)" + "r\(status.header.memberID)".padding(toLength: 9, withPad: " ", startingAt: 0)
                        + replica.endpoint.description.padding(toLength: 21, withPad: " ", startingAt: 0)
                        + leader.padding(toLength: 8, withPad: " ", startingAt: 0)
                        + "\(status.header.revision)".padding(toLength: 10, withPad: " ", startingAt: 0)
                        + "\(status.raftIndex)".padding(toLength: 12, withPad: " ", startingAt: 0)
                        + "\(status.raftAppliedIndex)".padding(toLength: 9, withPad: " ", startingAt: 0)
                        + "\(status.raftTerm)".padding(toLength: 6, withPad: " ", startingAt: 0)
                        + status.errors.joined(separator: "; "))
            } catch let error as RPCError {
                printer.write(
                    "    ?        " + replica.endpoint.description.padding(toLength: 21, withPad: " ", startingAt: 0)
                        + "unreachable: \(error.code): \(error.message)")
            }
        }
        printer.write("    (* = the replica that leads; raft index = chosen prefix, applied = applied prefix)")
    }

    func summarize(elapsed: Duration) {
        let sorted = latenciesMicroseconds.sorted()
        let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        let slowest = sorted.last ?? 0
        let total = counts.values.reduce(0, +)
        var line = "summary: \(total) operations succeeded (\(counts["PUT"] ?? 0) PUT, \(counts["GET"] ?? 0) GET, "
            + "\(counts["DELETE"] ?? 0) DELETE), \(retries) retries, every GET matched; "
            + "latency median \(Self.milliseconds(microseconds: median)), "
            + "max \(Self.milliseconds(microseconds: slowest)); "
            + String(format: "%.1f s in all", Double(Self.microseconds(elapsed)) / 1e6)
        if let cluster {
            let seen = cluster.counts
            line += "; cluster log: \(seen.failures) injected acceptor failures, \(seen.recoveries) recoveries"
            if seen.exits > 0 { line += ", \(seen.exits) replica processes exited" }
        }
        printer.write("")
        printer.write(line)
    }

    // MARK: Formatting

    static func microseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)
    }

    static func milliseconds(_ duration: Duration) -> String {
        milliseconds(microseconds: microseconds(duration))
    }

    static func milliseconds(microseconds: Int) -> String {
        String(format: "%.1f ms", Double(microseconds) / 1000)
    }

    /// Sixteen lower-case hex digits, as the request id header wants them.
    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

