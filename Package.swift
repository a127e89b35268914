// swift-tools-version: 6.1
import PackageDescription

/// Module layout (see docs/ARCHITECTURE.md). Imports point one way:
/// synod → SynodServer → {Transport, EtcdAPI} → {Paxos, KVStore, Storage}.
/// Paxos and KVStore import only the standard library; the simulator and the
/// linearizability checker are library targets shared by the tests and `synod simulate`.
/// Only EtcdAPI, SynodServer, SynodClient and the executable pay for gRPC's build, so the
/// core's tests build in about a minute.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcPosix = Target.Dependency.product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let swiftProtobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioHTTP2 = Target.Dependency.product(name: "NIOHTTP2", package: "swift-nio-http2")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")

let package = Package(
    name: "Synod",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "synod", targets: ["synod"]),
        .library(name: "Paxos", targets: ["Paxos"]),
        .library(name: "KVStore", targets: ["KVStore"]),
        .library(name: "Storage", targets: ["Storage"]),
        .library(name: "SynodClient", targets: ["SynodClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // TLS on both planes (BoringSSL through swift-nio-ssl) and local certificate
        // generation (swift-certificates, no openssl).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        // Monitoring: Prometheus text exposition for `/metrics` (swift-prometheus 2.x builds on
        // swift-metrics' CoreMetrics).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // The pure core: no dependencies beyond the standard library. ByteCodec: the one byte
        // encoder and bounds-checked decoder of every binary format (log, wire, snapshots).
        .target(name: "ByteCodec", dependencies: ["CRC32CHardware"], swiftSettings: strictSettings),
        // CRC-32C with the CPU's instruction where it has one (ByteCodec falls back to tables).
        .target(name: "CRC32CHardware"),
        .target(name: "Paxos", dependencies: ["ByteCodec"], swiftSettings: strictSettings),
        .target(name: "KVStore", dependencies: ["ByteCodec"], swiftSettings: strictSettings),
        .target(name: "Storage", dependencies: ["Paxos", "ByteCodec"], swiftSettings: strictSettings),
        // The simulated file system (crashes, torn writes) and the storage benchmark: tools
        // over Storage, kept out of the production module.
        .target(name: "StorageTools", dependencies: ["Storage", "Paxos"], swiftSettings: strictSettings),
        .target(name: "Linearizability", swiftSettings: strictSettings),
        // The replica runtime: carries out the core's outputs over storage, answers clients,
        // snapshots, compacts, bounds queues, injects faults — the one type the server runs
        // and the simulator proves. No network, no clock of its own.
        .target(name: "ReplicaRuntime", dependencies: ["Paxos", "KVStore", "Storage"], swiftSettings: strictSettings),
        .target(
            name: "SynodSimulation",
            dependencies: ["Paxos", "KVStore", "Storage", "StorageTools", "Linearizability", "ReplicaRuntime"],
            swiftSettings: strictSettings
        ),
        // TLS files, contexts, certificate names and local certificate generation, shared
        // by both planes, the clients and `synod cluster --tls`.
        .target(
            name: "SynodTLS",
            dependencies: [
                nioCore, nioSSL, .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // The network: peer frames on SwiftNIO, the etcd v3 API on grpc-swift-2.
        .target(
            name: "Transport", dependencies: ["Paxos", "ByteCodec", "Storage", "SynodTLS", nioCore, nioPosix, nioSSL, logging],
            swiftSettings: strictSettings),
        // Unary gRPC straight on swift-nio-http2 frames: the client API's hot path
        // (grpc-swift-2's server costs ~300 µs of CPU per call here; docs/BENCHMARKS.md).
        .target(
            name: "UnaryGRPC",
            dependencies: [nioCore, nioPosix, nioHTTP2, nioSSL, "SynodTLS", .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        // Starting and supervising local `synod serve` processes: `synod cluster`, `synod demo`
        // and the process tests share it. Foundation only.
        .target(name: "ClusterLauncher", swiftSettings: strictSettings),
        // etcd's v3 messages (generated); the server, the client and the conversions share them.
        .target(name: "EtcdAPI", dependencies: [swiftProtobuf], swiftSettings: strictSettings),
        // grpc-swift-2's client stubs for them (generated): Synod's Swift client and the tests only.
        .target(name: "EtcdGRPC", dependencies: ["EtcdAPI", grpcCore, grpcProtobuf], swiftSettings: strictSettings),
        // etcd's messages ⇄ KVStore's types, both directions: one place for server and client.
        .target(name: "EtcdKV", dependencies: ["EtcdAPI", "KVStore", swiftProtobuf], swiftSettings: strictSettings),
        .target(
            name: "SynodServer",
            dependencies: [
                "Paxos", "KVStore", "Storage", "ReplicaRuntime", "Transport", "EtcdAPI", "EtcdKV", "UnaryGRPC", "SynodTLS", grpcCore,
                swiftProtobuf, nioCore, nioPosix, nioSSL, logging,
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                // PBKDF2 for users' password hashes (auth).
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "SynodClient",
            dependencies: ["EtcdAPI", "EtcdGRPC", "EtcdKV", "KVStore", "SynodTLS", grpcCore, grpcPosix, grpcProtobuf, nioCore],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "synod",
            dependencies: [
                "SynodSimulation", "SynodServer", "SynodClient", "Storage", "StorageTools", "KVStore", "Linearizability", "EtcdAPI", "EtcdGRPC", "Paxos",
                "ClusterLauncher", "SynodTLS",
                "UnaryGRPC", grpcCore, grpcPosix, swiftProtobuf, nioCore, nioPosix, nioSSL,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                logging,
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "PaxosTests", dependencies: ["Paxos", "ByteCodec"], swiftSettings: strictSettings),
        // Also the etcd ⇄ KVStore conversions (EtcdKV), on the same random requests.
        .testTarget(name: "KVStoreTests", dependencies: ["KVStore", "ByteCodec", "EtcdKV", "EtcdAPI", swiftProtobuf], swiftSettings: strictSettings),
        .testTarget(
            name: "ReplicaRuntimeTests", dependencies: ["ReplicaRuntime", "Paxos", "KVStore", "Storage", "StorageTools"],
            swiftSettings: strictSettings),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "StorageTools", "Paxos", "ByteCodec"], swiftSettings: strictSettings),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"], swiftSettings: strictSettings),
        .testTarget(
            name: "SynodSimulationTests",
            dependencies: ["SynodSimulation", "ReplicaRuntime", "Paxos", "KVStore", "Storage", "Linearizability"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "UnaryGRPCTests",
            dependencies: [
                "UnaryGRPC", "SynodTLS", nioCore, nioPosix, nioHTTP2, nioSSL,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "TransportTests",
            dependencies: ["Transport", "SynodTLS", "Paxos", "ByteCodec", "Storage", nioCore, nioPosix, nioSSL, logging],
            swiftSettings: strictSettings),
        .testTarget(
            name: "SynodServerTests",
            dependencies: ["SynodServer", "SynodClient", "EtcdGRPC", "Linearizability", "KVStore", "Paxos", "ClusterLauncher", "SynodTLS"],
            swiftSettings: strictSettings
        ),
    ]
)
