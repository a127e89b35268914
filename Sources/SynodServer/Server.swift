import EtcdAPI
import Foundation
import GRPCCore
import Logging
import NIOPosix
import Paxos
import ServiceLifecycle
import Storage
import SynodTLS
import Transport
import UnaryGRPC

/// One Synod replica process: the replica loop, the peer transport and the etcd v3 gRPC
/// API, run until SIGTERM or SIGINT, then stopped gracefully.
public final class SynodServer: Sendable {
    public let configuration: ServerConfiguration
    public let monitoring: MonitoringOptions
    let logger: Logger

    /// Asked at shutdown whether to hand leadership over first (not when the whole cluster
    /// stops with its supervisor).
    let handsOverLeadership: @Sendable () -> Bool
    /// Where stop requests come from; nil: SIGTERM and SIGINT, handled by the service group.
    let stopRequest: StopRequest?

    public init(
        configuration: ServerConfiguration, monitoring: MonitoringOptions = MonitoringOptions(), logger: Logger,
        stopRequest: StopRequest? = nil,
        handsOverLeadership: @escaping @Sendable () -> Bool = { true }
    ) {
        self.configuration = configuration
        self.monitoring = monitoring
        self.logger = logger
        self.stopRequest = stopRequest
        self.handsOverLeadership = handsOverLeadership
    }

    /// Runs until a shutdown signal (or until the task is cancelled).
    public func run() async throws {
        let paxos: Configuration
        do {
            paxos = try configuration.paxosConfiguration()
        } catch {
            throw ServerConfigurationError.invalid(error.description)
        }
        let (clientTLS, peerTLS) = try tlsSetup()
        // One event loop per replica (DESIGN §2): the client API's connections, the peer
        // transport, the monitor and the replica runtime all run on this one thread, so a
        // write crosses no thread inside a replica; only the WAL's fdatasync runs elsewhere
        // (the fsync thread, `SyncThread`). Turn batching keeps peer messages flowing under a
        // burst of client calls: a turn takes everything one epoll pass read. Client
        // connections may also be served by further loops (`clientEventLoops`), which hand
        // each request to this one.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.clientEventLoops)
        let eventLoop = group.next()
        let box = LoopBox()
        var peers: [ReplicaID: (host: String, port: Int)] = [:]
        for (id, endpoint) in configuration.peers where id != configuration.replicaID {
            peers[id] = (endpoint.host, endpoint.port)
        }
        var transportConfiguration = PeerTransport.Configuration()
        transportConfiguration.clusterID = UInt32(truncatingIfNeeded: configuration.clusterID)
        let transport = PeerTransport(
            localID: configuration.replicaID, listenHost: configuration.listenPeer.host,
            listenPort: configuration.listenPeer.port, peers: peers, group: eventLoop, logger: logger,
            configuration: transportConfiguration, tls: peerTLS,
            onMessage: { envelope in box.submitFromPeer(.message(envelope)) },
            onSnapshotChunk: { from, chunk in box.submitFromPeer(.snapshotChunk(from: from, chunk)) })
        let metrics = ServerMetrics()
        box.metrics = metrics
        let loop = ReplicaLoop(
            configuration: configuration, paxosConfiguration: paxos, transport: transport, eventLoop: eventLoop,
            logger: logger, fileSystem: TimedFileSystem(base: PosixFileSystem(), metrics: metrics))
        box.loop = loop
        try loop.start()
        do {
            try transport.start()
        } catch {
            loop.stop()
            throw error
        }
        logger.notice(
            "replica r\(configuration.replicaID) serving clients on \(configuration.listenClient)\(Self.tlsNote(configuration.clientTLS)), peers on \(configuration.listenPeer)\(Self.tlsNote(configuration.peerTLS)), data in \(configuration.dataDirectory)")
        if configuration.faults.isOn {
            // The seed decides when this replica fails and for how long: a run's failures
            // (not its timing) repeat with the same --seed.
            logger.notice("injected failures: \(configuration.faults), random seed \(configuration.randomSeed) (--seed)")
        }

        let frontEnd = EtcdFrontEnd(loop: loop, configuration: configuration)
        let monitor = ReplicaMonitor(
            loop: loop, transport: transport, metrics: metrics, configuration: configuration,
            eventLoop: eventLoop)
        let endpoints = MonitoringEndpoints(monitor: monitor)
        var options = UnaryServer.Options()
        // Far above etcd's limit, which the front end enforces itself with etcd's
        // InvalidArgument "request is too large"; over this bound the server answers
        // RESOURCE_EXHAUSTED and resets the stream without buffering the rest.
        options.requestBytesMax = max(8 << 20, 4 * configuration.requestBytesMax)
        options.tls = clientTLS
        options.onProtocolError = { [logger] remote, reason in
            logger.warning("closed the client connection from \(remote), which broke HTTP/2: \(reason)")
        }
        let clientServer: UnaryServer
        do {
            clientServer = try await UnaryServer.bind(
                host: configuration.listenClient.host, port: configuration.listenClient.port, group: group,
                methods: metrics.instrument(
                    frontEnd.methods.merging([
                        EtcdFrontEnd.moveLeaderPath: frontEnd.moveLeaderMethod,
                        EtcdFrontEnd.defragmentPath: frontEnd.defragmentMethod,
                    ]) { own, _ in own }),
                streamingMethods: frontEnd.streamingMethods.merging([EtcdFrontEnd.snapshotPath: frontEnd.snapshotMethod]) { own, _ in own },
                http: endpoints.handler, options: options)
        } catch {
            loop.stop()
            transport.shutdown()
            try? await group.shutdownGracefully()
            throw ServerError.clientAPIFailed("\(error)", configuration.listenClient)
        }
        // etcd's --listen-metrics-urls: the same monitoring endpoints, no gRPC.
        var metricsServers: [UnaryServer] = []
        for endpoint in monitoring.metricsListeners {
            do {
                metricsServers.append(
                    try await UnaryServer.bind(
                        host: endpoint.host, port: endpoint.port, group: eventLoop, methods: [:],
                        http: endpoints.handler))
                logger.notice("serving /metrics, /health, /livez, /readyz and /status on http://\(endpoint)")
            } catch {
                await clientServer.close()
                for server in metricsServers { await server.close() }
                loop.stop()
                transport.shutdown()
                try? await group.shutdownGracefully()
                throw ServerError.metricsListenerFailed("\(error)", endpoint)
            }
        }
        monitor.start()
        let services = [ClientAPIService(server: clientServer, logger: logger, beforeDrain: { monitor.stop() })]
            + metricsServers.map { ClientAPIService(server: $0, logger: logger, beforeDrain: { monitor.stop() }) }
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: stopRequest == nil ? [.sigterm, .sigint] : [],
                logger: logger))
        stopRequest?.connect { Task { await serviceGroup.triggerGracefulShutdown() } }
        do {
            try await serviceGroup.run()
        } catch {
            logger.error("client API stopped: \(error)")
            monitor.stop()
            loop.stop()
            transport.shutdown()
            try? await group.shutdownGracefully()
            throw ServerError.clientAPIFailed("\(error)", configuration.listenClient)
        }
        if handsOverLeadership(), loop.handOverLeadership() {
            logger.notice("shutting down after handing leadership over")
        }
        logger.notice("shutting down: stopping the replica loop and the peer transport")
        monitor.stop()
        loop.stop()
        transport.shutdown()
        try? await group.shutdownGracefully()
    }
}

extension SynodServer {
    /// The TLS contexts of both planes, from the configuration's files (nil: plaintext). ALPN
    /// offers `h2` first (gRPC clients require it), then `http/1.1` for the monitoring
    /// endpoints on the client port.
    static func tlsNote(_ files: ServerTLSFiles?) -> String {
        guard let files else { return "" }
        return files.clientCertificateAuth ? " (TLS, client certificates required)" : " (TLS)"
    }

    func tlsSetup() throws(ServerConfigurationError) -> (UnaryServer.TLS?, PeerTransport.TLS?) {
        let logger = self.logger
        do {
            let client = try configuration.clientTLS.map { files throws(TLSSetupError) in
                UnaryServer.TLS(context: try files.serverContext(applicationProtocols: ["h2", "http/1.1"])) { remote, reason in
                    logger.warning("client connection from \(remote) refused: TLS handshake failed: \(reason)")
                }
            }
            let peer = try configuration.peerTLS.map { files throws(TLSSetupError) in try PeerTransport.TLS(files: files) }
            return (client, peer)
        } catch {
            throw .invalid(error.description)
        }
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case clientAPIFailed(String, Endpoint)
    case metricsListenerFailed(String, Endpoint)

    public var description: String {
        switch self {
        case .clientAPIFailed(let reason, let endpoint):
            return "cannot serve clients on \(endpoint): \(reason)"
        case .metricsListenerFailed(let reason, let endpoint):
            return "cannot serve metrics on http://\(endpoint): \(reason)"
        }
    }
}

/// Lets transport callbacks reach the loop created after the transport.
final class LoopBox: @unchecked Sendable {
    // Written once before the transport starts delivering, then only read.
    nonisolated(unsafe) var loop: ReplicaLoop?
    nonisolated(unsafe) var metrics: ServerMetrics?

    /// Hands a peer's message or chunk to the loop, counting those a full inbox drops.
    func submitFromPeer(_ event: RuntimeEvent) {
        guard let loop, !loop.submit(event) else { return }
        metrics?.noteInboxDrop()
    }
}

/// Runs the client API as a lifecycle service: on SIGTERM/SIGINT it stops accepting
/// connections and lets the calls in flight finish.
struct ClientAPIService: Service {
    let server: UnaryServer
    let logger: Logger
    /// Runs first on a shutdown signal: ends responses that would never finish on their own
    /// (`/status/events`), so the drain need not wait them out.
    var beforeDrain: @Sendable () -> Void = {}

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            logger.notice("shutdown signal received: draining client calls")
            beforeDrain()
            server.beginGracefulShutdown()
        }
    }
}
