import ArgumentParser
import EtcdAPI
import Foundation
import GRPCCore
import NIOCore
import NIOPosix
import NIOSSL
import SynodClient
import SynodTLS
import UnaryGRPC

/// `synod bench`: a load generator speaking the etcd v3 API, so the same command drives Synod
/// or etcd. Each of `--concurrency` slots is one task that sends its next request when the
/// previous one is answered; requests go round-robin over `--connections` HTTP/2 connections.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load-test a Synod or etcd cluster through the etcd v3 API.",
        discussion: """
            Runs for --warmup, then measures for --duration or --requests, whichever ends first. \
            Writes carry a synod-request-id header (one client ID per in-flight slot), which etcd \
            ignores. Latency is measured per request from send to answer, in microseconds.
            """
    )

    @Option(name: .long, help: "Comma-separated host:port client endpoints.")
    var endpoints: String = ClientDefaults.endpoints

    @Flag(name: .long, help: "Send every request to the current leader (found with Maintenance.Status).")
    var leader = false

    @Flag(
        name: .customLong("round-robin"),
        help: "Send each request on the next connection, as clientv3's round-robin balancer picks an endpoint per call (default: each in-flight request keeps one connection).")
    var roundRobin = false

    @Option(name: .long, help: "put, get, get-serializable, mixed or txn-cas.")
    var workload: BenchWorkloadKind = .put

    @Option(name: .long, help: "Size of the key space.")
    var keys: Int = 100_000

    @Option(name: .customLong("key-size"), help: "Key size in bytes.")
    var keySize: Int = 16

    @Option(name: .customLong("value-size"), help: "Value size in bytes.")
    var valueSize: Int = 256

    @Option(name: .long, help: "Requests in flight.")
    var concurrency: Int = 64

    @Option(name: .long, help: "HTTP/2 connections, spread over the endpoints.")
    var connections: Int = 1

    @Option(name: .long, help: "Measurement time (e.g. 10s).")
    var duration: DurationArgument = DurationArgument(.seconds(10))

    @Option(name: .long, help: "Stop after this many measured requests (0: only --duration bounds the run).")
    var requests: Int = 0

    @Option(name: .long, help: "Unmeasured time before measuring.")
    var warmup: DurationArgument = DurationArgument(.seconds(1))

    @Option(name: .long, help: "Deadline of one request.")
    var timeout: DurationArgument = DurationArgument(.seconds(5))

    @Option(name: .customLong("read-fraction"), help: "Share of gets in the mixed workload.")
    var readFraction: Double = 0.5

    @Flag(name: .customLong("no-prepopulate"), help: "Skip writing the key space before read workloads.")
    var noPrepopulate = false

    @Option(name: .long, help: "name:password: authenticate once and send the token with every request (auth on vs off).")
    var user: String?

    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    @OptionGroup var tls: ClientTLSOptions
    @Option(
        name: .long,
        help: "Watch streams on the written prefix, spread over the endpoints; reports the delay from a put's answer to its event at a watcher.")
    var watchers: Int = 0

    func validate() throws {
        guard (1...BenchLimits.keysMax).contains(keys) else {
            throw ValidationError("--keys must be in 1...\(BenchLimits.keysMax)")
        }
        let digits = String(keys - 1).count
        guard keySize >= digits + 1, keySize <= BenchLimits.keySizeBytesMax else {
            throw ValidationError(
                "--key-size must be in \(digits + 1)...\(BenchLimits.keySizeBytesMax) for \(keys) keys")
        }
        guard (0...BenchLimits.valueSizeBytesMax).contains(valueSize) else {
            throw ValidationError("--value-size must be in 0...\(BenchLimits.valueSizeBytesMax)")
        }
        guard (1...BenchLimits.concurrencyMax).contains(concurrency) else {
            throw ValidationError("--concurrency must be in 1...\(BenchLimits.concurrencyMax)")
        }
        guard (1...BenchLimits.connectionsMax).contains(connections) else {
            throw ValidationError("--connections must be in 1...\(BenchLimits.connectionsMax)")
        }
        guard duration.duration > .zero, duration.duration <= BenchLimits.durationMax else {
            throw ValidationError("--duration must be in (0, 1h]")
        }
        guard warmup.duration >= .zero, warmup.duration <= BenchLimits.durationMax else {
            throw ValidationError("--warmup must be in [0, 1h]")
        }
        guard timeout.duration > .zero else { throw ValidationError("--timeout must be positive") }
        guard requests >= 0 else { throw ValidationError("--requests must be >= 0") }
        guard (0...1).contains(readFraction) else { throw ValidationError("--read-fraction must be in [0, 1]") }
        guard (0...BenchLimits.watchersMax).contains(watchers) else {
            throw ValidationError("--watchers must be in 0...\(BenchLimits.watchersMax)")
        }
        do { _ = try SynodEndpoint.parseList(endpoints) } catch { throw ValidationError("--endpoints: \(error)") }
    }

    func run() async throws {
        var endpointList = try SynodEndpoint.parseList(endpoints)
        var options = SynodClientOptions()
        options.requestTimeout = timeout.duration
        let tlsFiles = try tls.files(endpoints: endpoints)
        options.tls = tlsFiles
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try tlsFiles?.context(applicationProtocols: ["h2"])
        } catch {
            throw CommandFailure.report("\(error)")
        }
        if leader { endpointList = [try await findLeader(endpointList, options: options)] }
        // One event-loop thread per core at most: the client shares the machine with the
        // servers it measures.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: min(connections, System.coreCount))
        var opened: [UnaryClientConnection] = []
        for index in 0..<connections {
            let endpoint = endpointList[index % endpointList.count]
            do {
                opened.append(
                    try await UnaryClientConnection.connect(
                        host: endpoint.host, port: endpoint.port, group: group, tls: tlsContext))
            } catch {
                throw CommandFailure.report("cannot connect to \(endpoint): \(error)")
            }
        }
        var plan = BenchPlan(
            workload: workload,
            keys: BenchPlan.makeKeys(count: keys, sizeBytes: keySize),
            value: Data((0..<valueSize).map { UInt8(ascii: "a") + UInt8($0 % 26) }),
            connections: opened,
            readFraction: readFraction,
            timeout: timeout.duration,
            requestsMax: requests == 0 ? Int.max : requests,
            measureStartNanoseconds: 0,
            stopNanoseconds: 0,
            concurrency: concurrency,
            clientIDBase: SynodClientOptions.randomClientID()
        )
        plan.roundRobin = roundRobin
        if let user {
            var authOptions = options
            authOptions.credentials = try SynodCredentials(parsing: user)
            let client = try SynodClient(endpoints: endpointList, options: authOptions)
            let token = try await client.authToken()
            await client.close()
            if let token { plan.metadata = [("token", token)] }
        }
        let progress = BenchProgress(enabled: isatty(STDERR_FILENO) != 0 && !json)
        if workload.needsPrepopulation && !noPrepopulate {
            progress.note("writing \(keys) keys (txns of \(BenchLimits.prepopulateBatchMax) puts)…")
            do {
                try await BenchPrepopulation.run(plan: plan, count: keys)
            } catch {
                throw CommandFailure.report("pre-population failed: \(benchDescribe(error))")
            }
        }

        if watchers > 0 {
            let watching = try BenchWatchers(count: watchers, endpoints: endpointList, options: options)
            watching.start(prefix: Array("b".utf8))
            plan.watchers = watching
        }
        let start = BenchClock.nanoseconds()
        plan.measureStartNanoseconds = start + UInt64(warmup.seconds * 1e9)
        plan.stopNanoseconds = plan.measureStartNanoseconds + UInt64(duration.seconds * 1e9)
        let counters = BenchCounters()
        let usageBefore = ProcessCPU.now()
        let progressTask = progress.start(plan: plan, counters: counters, startNanoseconds: start)
        let merged = await BenchSlots.run(plan: plan, counters: counters)
        let end = BenchClock.nanoseconds()
        progressTask?.cancel()
        await progressTask?.value
        progress.finish()
        let watchSummary = await plan.watchers?.finish()

        let measuredEnd = min(max(merged.lastFinishNanoseconds, plan.measureStartNanoseconds), end)
        let report = BenchReport(
            workload: workload.rawValue,
            endpoints: (0..<connections).map { endpointList[$0 % endpointList.count].description },
            concurrency: concurrency,
            connections: connections,
            keys: keys,
            keySizeBytes: keySize,
            valueSizeBytes: valueSize,
            result: merged,
            measuredSeconds: Double(measuredEnd - plan.measureStartNanoseconds) / 1e9,
            clientCPUSeconds: ProcessCPU.now() - usageBefore,
            wallSeconds: Double(end - start) / 1e9,
            watch: watchSummary
        )
        for connection in opened { await connection.close() }
        try? await group.shutdownGracefully()
        print(json ? report.json : report.text)
    }

    /// The endpoint whose Status names itself leader; the first endpoint (with a warning) when
    /// none does, so a server without leader reporting can still be measured.
    private func findLeader(_ endpoints: [SynodEndpoint], options: SynodClientOptions) async throws -> SynodEndpoint {
        let client = try SynodClient(endpoints: endpoints, options: options)
        let statuses = await client.statusAll()
        await client.close()
        for (endpoint, result) in statuses {
            if case .success(let status) = result, status.isLeader { return endpoint }
        }
        let warning = "warning: --leader: no endpoint reports itself leader; using \(endpoints[0])\n"
        FileHandle.standardError.write(Data(warning.utf8))
        return endpoints[0]
    }
}

func benchDescribe(_ error: any Error) -> String {
    if let error = error as? RPCError { return "\(error.code): \(error.message)" }
    if let error = error as? GRPCStatus { return error.description }
    return "\(error)"
}

/// CPU time (user + system) of this process, to tell how much of the machine the client used.
enum ProcessCPU {
    static func now() -> Double {
        var usage = rusage()
        #if os(Linux)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
