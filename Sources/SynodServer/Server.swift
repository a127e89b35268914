import EtcdAPI
import Foundation
import GRPCCore
import Logging
import NIOPosix
import Paxos
import ServiceLifecycle
import Transport
import UnaryGRPC

/// One Synod replica process: the replica loop, the peer transport and the etcd v3 gRPC
/// API, run until SIGTERM or SIGINT, then stopped gracefully.
public final class SynodServer: Sendable {
    public let configuration: ServerConfiguration
    let logger: Logger

    /// Asked at shutdown whether to hand leadership over first (not when the whole cluster
    /// stops with its supervisor).
    let handsOverLeadership: @Sendable () -> Bool

    public init(
        configuration: ServerConfiguration, logger: Logger, handsOverLeadership: @escaping @Sendable () -> Bool = { true }
    ) {
        self.configuration = configuration
        self.logger = logger
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
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // The client API's HTTP/2 connections get their own thread, so a burst of client
        // traffic never delays the peer messages that decide it.
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let box = LoopBox()
        var peers: [ReplicaID: (host: String, port: Int)] = [:]
        for (id, endpoint) in configuration.peers where id != configuration.replicaID {
            peers[id] = (endpoint.host, endpoint.port)
        }
        var transportConfiguration = PeerTransport.Configuration()
        transportConfiguration.clusterID = UInt32(truncatingIfNeeded: configuration.clusterID)
        let transport = PeerTransport(
            localID: configuration.replicaID, listenHost: configuration.listenPeer.host,
            listenPort: configuration.listenPeer.port, peers: peers, group: group, logger: logger,
            configuration: transportConfiguration,
            onMessage: { envelope in box.loop?.submit(.message(envelope)) },
            onSnapshotChunk: { from, chunk in box.loop?.submit(.snapshotChunk(from: from, chunk)) })
        let loop = ReplicaLoop(
            configuration: configuration, paxosConfiguration: paxos, transport: transport, logger: logger)
        box.loop = loop
        try loop.start()
        do {
            try transport.start()
        } catch {
            loop.stop()
            throw error
        }
        logger.notice(
            "replica r\(configuration.replicaID) serving clients on \(configuration.listenClient), peers on \(configuration.listenPeer), data in \(configuration.dataDirectory)")

        let frontEnd = EtcdFrontEnd(loop: loop, configuration: configuration)
        var options = UnaryServer.Options()
        // Far above etcd's limit, which the front end enforces itself with etcd's
        // InvalidArgument "request is too large"; over this bound the server answers
        // RESOURCE_EXHAUSTED and resets the stream without buffering the rest.
        options.requestBytesMax = max(8 << 20, 4 * configuration.requestBytesMax)
        let clientServer: UnaryServer
        do {
            clientServer = try await UnaryServer.bind(
                host: configuration.listenClient.host, port: configuration.listenClient.port, group: clientGroup,
                methods: frontEnd.methods.merging([
                    EtcdFrontEnd.moveLeaderPath: frontEnd.moveLeaderMethod,
                    EtcdFrontEnd.defragmentPath: frontEnd.defragmentMethod,
                ]) { own, _ in own },
                streamingMethods: frontEnd.streamingMethods.merging([EtcdFrontEnd.snapshotPath: frontEnd.snapshotMethod]) { own, _ in own },
                options: options)
        } catch {
            loop.stop()
            transport.shutdown()
            try? await group.shutdownGracefully()
            try? await clientGroup.shutdownGracefully()
            throw ServerError.clientAPIFailed("\(error)", configuration.listenClient)
        }
        let service = ClientAPIService(server: clientServer, logger: logger)
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await serviceGroup.run()
        } catch {
            logger.error("client API stopped: \(error)")
            loop.stop()
            transport.shutdown()
            try? await group.shutdownGracefully()
            try? await clientGroup.shutdownGracefully()
            throw ServerError.clientAPIFailed("\(error)", configuration.listenClient)
        }
        if handsOverLeadership(), loop.handOverLeadership() {
            logger.notice("shutting down after handing leadership over")
        }
        logger.notice("shutting down: stopping the replica loop and the peer transport")
        loop.stop()
        transport.shutdown()
        try? await group.shutdownGracefully()
        try? await clientGroup.shutdownGracefully()
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case clientAPIFailed(String, Endpoint)

    public var description: String {
        switch self {
        case .clientAPIFailed(let reason, let endpoint):
            return "cannot serve clients on \(endpoint): \(reason)"
        }
    }
}

/// Lets transport callbacks reach the loop created after the transport.
final class LoopBox: @unchecked Sendable {
    // Written once before the transport starts delivering, then only read.
    nonisolated(unsafe) var loop: ReplicaLoop?
}

/// Runs the client API as a lifecycle service: on SIGTERM/SIGINT it stops accepting
/// connections and lets the calls in flight finish.
struct ClientAPIService: Service {
    let server: UnaryServer
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            logger.notice("shutdown signal received: draining client calls")
            server.beginGracefulShutdown()
        }
    }
}
