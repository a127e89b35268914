// swift-tools-version: 6.1
import PackageDescription

/// Module layout (see docs/ARCHITECTURE.md). Imports point one way:
/// synod → SynodServer → {Transport, EtcdAPI} → {Paxos, KVStore, Storage}.
/// Paxos and KVStore import only the standard library; the simulator and the
/// linearizability checker are library targets shared by the tests and `synod simulate`.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "Synod",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "synod", targets: ["synod"]),
        .library(name: "Paxos", targets: ["Paxos"]),
        .library(name: "KVStore", targets: ["KVStore"]),
        .library(name: "Storage", targets: ["Storage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "Paxos", swiftSettings: strictSettings),
        .target(name: "KVStore", swiftSettings: strictSettings),
        .target(name: "Storage", dependencies: ["Paxos"], swiftSettings: strictSettings),
        .target(name: "Linearizability", swiftSettings: strictSettings),
        .target(
            name: "SynodSimulation",
            dependencies: ["Paxos", "KVStore", "Storage", "Linearizability"],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "synod",
            dependencies: [
                "SynodSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "PaxosTests", dependencies: ["Paxos"], swiftSettings: strictSettings),
        .testTarget(name: "KVStoreTests", dependencies: ["KVStore"], swiftSettings: strictSettings),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "Paxos"], swiftSettings: strictSettings),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"], swiftSettings: strictSettings),
        .testTarget(
            name: "SynodSimulationTests",
            dependencies: ["SynodSimulation", "Paxos", "KVStore", "Storage", "Linearizability"],
            swiftSettings: strictSettings
        ),
    ]
)
