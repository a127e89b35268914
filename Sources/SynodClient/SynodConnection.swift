import EtcdAPI
import EtcdGRPC
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SynodTLS

/// One HTTP/2 connection to one endpoint, multiplexing every call made through it, with the
/// generated etcd clients on top. `SynodClient` keeps one per endpoint; `synod bench` uses
/// several directly. Connects lazily on the first call and reconnects with backoff.
public final class SynodConnection: Sendable {
    public typealias Transport = HTTP2ClientTransport.Posix

    public let endpoint: SynodEndpoint
    public let kv: Etcdserverpb_KV.Client<Transport>
    public let maintenance: Etcdserverpb_Maintenance.Client<Transport>
    public let cluster: Etcdserverpb_Cluster.Client<Transport>
    private let grpc: GRPCClient<Transport>
    /// Runs `grpc.runConnections()` until `close()`.
    private let runner: Task<Void, Never>

    /// Opens (lazily) a connection to `endpoint`: TLS with `options.tls`, plaintext without.
    public init(endpoint: SynodEndpoint, options: SynodClientOptions = .init()) throws(SynodClientError) {
        let config = Transport.Config.defaults { config in
            config.backoff = .init(
                initial: options.reconnectBackoffInitial,
                max: Self.reconnectBackoffMax,
                multiplier: 1.6,
                jitter: 0.2
            )
            if !options.flushCoalescing { config.connection.flushCoalescing = nil }
        }
        let transport: Transport
        do {
            transport = try Transport(
                target: endpoint.target, transportSecurity: Self.transportSecurity(options.tls), config: config)
        } catch {
            throw .invalidEndpoint("\(endpoint) (\(error))")
        }
        let grpc = GRPCClient(transport: transport)
        self.endpoint = endpoint
        self.grpc = grpc
        self.kv = Etcdserverpb_KV.Client(wrapping: grpc)
        self.maintenance = Etcdserverpb_Maintenance.Client(wrapping: grpc)
        self.cluster = Etcdserverpb_Cluster.Client(wrapping: grpc)
        self.runner = Task {
            // Returns after `beginGracefulShutdown()` once in-flight calls finish; a transport
            // failure here leaves the calls to fail with `unavailable`, which they report.
            try? await grpc.runConnections()
        }
    }

    /// A unary call whose messages are coded by the caller (Synod's own methods, which the
    /// generated etcd code does not have).
    func rawUnary(
        service: String, method: String, request: [UInt8], metadata: Metadata = [:], options: CallOptions
    ) async throws -> [UInt8] {
        try await grpc.unary(
            request: ClientRequest(message: request, metadata: metadata),
            descriptor: MethodDescriptor(fullyQualifiedService: service, method: method),
            serializer: RawBytesCoding(), deserializer: RawBytesCoding(), options: options
        ) { response in try response.message }
    }

    /// A bidirectional call whose messages are coded by the caller: `requests` are sent as
    /// they come, each response goes to `onResponse`; returns when the server ends the call.
    func rawBidirectional(
        service: String, method: String, requests: AsyncStream<[UInt8]>, metadata: Metadata = [:],
        onResponse: @escaping @Sendable ([UInt8]) throws -> Void
    ) async throws {
        try await grpc.bidirectionalStreaming(
            request: StreamingClientRequest(of: [UInt8].self, metadata: metadata) { writer in
                for await request in requests { try await writer.write(request) }
            },
            descriptor: MethodDescriptor(fullyQualifiedService: service, method: method),
            serializer: RawBytesCoding(), deserializer: RawBytesCoding(), options: .defaults
        ) { response in
            for try await message in response.messages { try onResponse(message) }
        }
    }

    /// grpc-swift's TLS from etcdctl-style files (ALPN `h2`, the server verified with its host).
    public static func transportSecurity(_ tls: ClientTLSFiles?) -> Transport.TransportSecurity {
        guard let tls else { return .plaintext }
        return .tls { config in
            if let ca = tls.trustedCAFile { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
            if let certificate = tls.certificateFile, let key = tls.keyFile {
                config.certificateChain = [.file(path: certificate, format: .pem)]
                config.privateKey = .file(path: key, format: .pem)
            }
        }
    }

    /// A failed endpoint is retried at most this long after its last attempt.
    static let reconnectBackoffMax: Duration = .seconds(2)

    /// Stops accepting calls, lets in-flight calls finish, then closes the connection.
    public func close() async {
        grpc.beginGracefulShutdown()
        await runner.value
    }
}

/// Messages passed through as bytes (`SynodConnection.rawUnary`).
struct RawBytesCoding: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}
