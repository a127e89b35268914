import EtcdAPI
import EtcdGRPC
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

// A deliberately thin etcd v3 client for the process tests: one gRPC connection per
// replica, no retries of its own (the tests decide when and where to retry), so that what
// the tests observe is what the server did.

/// One gRPC connection to one replica's client port.
final class ReplicaConnection: Sendable {
    let endpoint: String
    let grpc: GRPCClient<HTTP2ClientTransport.Posix>
    let kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>
    let maintenance: Etcdserverpb_Maintenance.Client<HTTP2ClientTransport.Posix>
    let cluster: Etcdserverpb_Cluster.Client<HTTP2ClientTransport.Posix>

    init(host: String = "127.0.0.1", port: Int) throws {
        endpoint = "\(host):\(port)"
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port), transportSecurity: .plaintext,
            config: .defaults { config in
                // Replicas are killed and restarted all the time here: reconnect quickly.
                config.backoff = .init(initial: .milliseconds(50), max: .milliseconds(300), multiplier: 1.6, jitter: 0.2)
            })
        grpc = GRPCClient(transport: transport)
        kv = Etcdserverpb_KV.Client(wrapping: grpc)
        maintenance = Etcdserverpb_Maintenance.Client(wrapping: grpc)
        cluster = Etcdserverpb_Cluster.Client(wrapping: grpc)
    }

    static func options(timeout: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        // Fail at once while the replica is down instead of waiting out the deadline.
        options.waitForReady = false
        return options
    }

    static func metadata(requestID: String?) -> Metadata {
        var metadata = Metadata()
        if let requestID { metadata.addString(requestID, forKey: "synod-request-id") }
        return metadata
    }

    func put(
        _ key: String, _ value: String, requestID: String? = nil, timeout: Duration = .seconds(2)
    ) async throws -> Etcdserverpb_PutResponse {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        return try await kv.put(request, metadata: Self.metadata(requestID: requestID), options: Self.options(timeout: timeout))
    }

    func get(_ key: String, serializable: Bool = false, timeout: Duration = .seconds(2)) async throws
        -> Etcdserverpb_RangeResponse
    {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        request.serializable = serializable
        return try await kv.range(request, options: Self.options(timeout: timeout))
    }

    /// The value of `key` as a string, nil when absent.
    func value(_ key: String, serializable: Bool = false, timeout: Duration = .seconds(2)) async throws -> String? {
        let response = try await get(key, serializable: serializable, timeout: timeout)
        return response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
    }

    func delete(_ key: String, requestID: String? = nil, timeout: Duration = .seconds(2)) async throws
        -> Etcdserverpb_DeleteRangeResponse
    {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(key.utf8)
        return try await kv.deleteRange(
            request, metadata: Self.metadata(requestID: requestID), options: Self.options(timeout: timeout))
    }

    /// Compare-and-swap as a txn: if `key`'s value is `expected` (or, for nil, the key is
    /// absent: version == 0), put `new`.
    func compareAndSwap(
        _ key: String, expected: String?, new: String, requestID: String? = nil, timeout: Duration = .seconds(2)
    ) async throws -> Etcdserverpb_TxnResponse {
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        compare.result = .equal
        if let expected {
            compare.target = .value
            compare.value = Data(expected.utf8)
        } else {
            compare.target = .version
            compare.version = 0
        }
        var put = Etcdserverpb_PutRequest()
        put.key = Data(key.utf8)
        put.value = Data(new.utf8)
        var success = Etcdserverpb_RequestOp()
        success.request = .requestPut(put)
        var request = Etcdserverpb_TxnRequest()
        request.compare = [compare]
        request.success = [success]
        return try await kv.txn(request, metadata: Self.metadata(requestID: requestID), options: Self.options(timeout: timeout))
    }

    func status(timeout: Duration = .seconds(2)) async throws -> Etcdserverpb_StatusResponse {
        try await maintenance.status(Etcdserverpb_StatusRequest(), options: Self.options(timeout: timeout))
    }
}

/// Connections to every replica of a cluster, run for the duration of a closure.
struct ClusterConnections: Sendable {
    let connections: [ReplicaConnection]

    /// The connection to replica `id` (1-based).
    func replica(_ id: Int) -> ReplicaConnection { connections[id - 1] }

    /// Connects to `ports`, runs `body`, then shuts every connection down (also on error).
    static func with<Result: Sendable>(
        ports: [Int], _ body: (ClusterConnections) async throws -> Result
    ) async throws -> Result {
        let connections = try ports.map { try ReplicaConnection(port: $0) }
        return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
            for connection in connections {
                group.addTask { try await connection.grpc.runConnections() }
            }
            let result: Result
            do {
                result = try await body(ClusterConnections(connections: connections))
            } catch {
                for connection in connections { connection.grpc.beginGracefulShutdown() }
                group.cancelAll()
                throw error
            }
            for connection in connections { connection.grpc.beginGracefulShutdown() }
            try await group.waitForAll()
            return result
        }
    }

    /// Waits (bounded) until every replica in `ids` answers Status naming the same leader,
    /// and returns that leader's id.
    func awaitLeader(among ids: [Int]? = nil, timeout: Duration = .seconds(20)) async -> Int? {
        let ids = ids ?? Array(1...connections.count)
        var agreed: Int?
        _ = await eventually(timeout: timeout, interval: .milliseconds(100)) {
            var leaders: Set<UInt64> = []
            for id in ids {
                guard let status = try? await replica(id).status(timeout: .seconds(1)), status.leader != 0,
                    status.errors.isEmpty
                else { return false }
                leaders.insert(status.leader)
            }
            guard leaders.count == 1, let leader = leaders.first, ids.contains(Int(leader)) else { return false }
            agreed = Int(leader)
            return true
        }
        return agreed
    }

    /// Waits until a write succeeds through replica `id` (a cluster that elected a leader
    /// and can commit) and every replica answers a local read, bounded. The second part
    /// matters to the caller's next calls: a connection refused while its replica was still
    /// starting backs off for a moment and fails calls at once meanwhile.
    func awaitWritable(through id: Int = 1, timeout: Duration = .seconds(20)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        let written = await eventually(timeout: timeout, interval: .milliseconds(200)) {
            (try? await replica(id).put("synod-test/ready", "yes", timeout: .seconds(2))) != nil
        }
        guard written else { return false }
        for connection in connections {
            let reached = await eventually(timeout: max(deadline - ContinuousClock.now, .zero), interval: .milliseconds(50)) {
                (try? await connection.get("synod-test/ready", serializable: true, timeout: .seconds(2))) != nil
            }
            guard reached else { return false }
        }
        return true
    }
}

extension ClusterConnections {
    /// Polls serializable (local) reads of every key on every replica until each has
    /// returned its expected value (nil: absent) or `timeout` passes. Once a replica returned
    /// the expected value of a key it is not asked again: no writes run meanwhile. Returns
    /// the pairs that never did, with what they returned last.
    func awaitAgreement(on expected: [String: String?], timeout: Duration) async -> [String] {
        var pending: [(connection: ReplicaConnection, key: String)] = []
        for connection in connections {
            for key in expected.keys.sorted() { pending.append((connection, key)) }
        }
        var lastSeen: [String: String] = [:]
        _ = await eventually(timeout: timeout, interval: .milliseconds(100)) {
            var stillPending: [(connection: ReplicaConnection, key: String)] = []
            for (connection, key) in pending {
                let name = "\(connection.endpoint) \(key)"
                do {
                    let read = try await connection.value(key, serializable: true, timeout: .seconds(1))
                    if read == expected[key]! { continue }
                    lastSeen[name] = "\(name) = \(read.map { "\"\($0)\"" } ?? "absent"), expected \(expected[key]!.map { "\"\($0)\"" } ?? "absent")"
                } catch {
                    lastSeen[name] = "\(name): \(describe(error))"
                }
                stillPending.append((connection, key))
            }
            pending = stillPending
            return pending.isEmpty
        }
        return pending.map { lastSeen["\($0.connection.endpoint) \($0.key)"] ?? "\($0.connection.endpoint) \($0.key): not read" }
    }
}

/// Exactly-once request ids: a random client id (high bit clear, nonzero) and a sequence
/// that moves forward by one per write.
struct RequestIDGenerator: Sendable {
    let clientID: UInt64
    private(set) var sequence: UInt64 = 0

    init() {
        clientID = UInt64.random(in: 1...(UInt64.max >> 1))
    }

    /// The id of the next write.
    mutating func next() -> String {
        sequence += 1
        return Self.format(clientID: clientID, sequence: sequence)
    }

    static func format(clientID: UInt64, sequence: UInt64) -> String {
        let hex = String(clientID, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + "-\(sequence)"
    }
}

/// A short description of an error for logs: the gRPC code and message when it is one.
func describe(_ error: any Error) -> String {
    if let rpc = error as? RPCError { return "\(rpc.code): \(rpc.message)" }
    return "\(error)"
}
