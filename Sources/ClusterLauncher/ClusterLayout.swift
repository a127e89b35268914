/// Where the replicas of a local cluster listen, and the `synod serve` arguments that say so.
///
/// Replica i (1-based) serves clients on `basePort + 2·(i−1)` and peers on the port after
/// it, all on 127.0.0.1 (2379/2380, 2381/2382, … for the default base).
public struct ClusterLayout: Sendable {
    public struct Member: Sendable {
        public let id: Int
        public let clientPort: Int
        public let peerPort: Int

        public var clientEndpoint: String { "127.0.0.1:\(clientPort)" }
        public var peerEndpoint: String { "127.0.0.1:\(peerPort)" }
    }

    /// The most replicas a local cluster may have (`synod cluster --replicas`).
    public static let replicasMax = 15

    public let basePort: Int
    public let members: [Member]

    public init(replicas: Int, basePort: Int) {
        precondition((1...Self.replicasMax).contains(replicas), "a local cluster has 1…\(Self.replicasMax) replicas")
        precondition(basePort >= 1, "base port \(basePort) must be positive")
        precondition(basePort + 2 * replicas <= 65_536, "base port \(basePort) leaves no room for \(replicas) replicas")
        self.basePort = basePort
        members = (1...replicas).map { id in
            Member(id: id, clientPort: basePort + 2 * (id - 1), peerPort: basePort + 2 * (id - 1) + 1)
        }
    }

    public func member(_ id: Int) -> Member {
        precondition((1...members.count).contains(id), "no replica r\(id) in a cluster of \(members.count)")
        return members[id - 1]
    }

    /// `--peers`: `1=127.0.0.1:2380,2=127.0.0.1:2382,…`
    public var peersArgument: String {
        members.map { "\($0.id)=\($0.peerEndpoint)" }.joined(separator: ",")
    }

    /// `--client-urls`: `1=127.0.0.1:2379,2=127.0.0.1:2381,…`
    public var clientURLsArgument: String {
        members.map { "\($0.id)=\($0.clientEndpoint)" }.joined(separator: ",")
    }

    /// Every client endpoint, comma-separated, for clients (`endpoints:` line, `--endpoints`).
    public var clientEndpoints: String {
        members.map(\.clientEndpoint).joined(separator: ",")
    }

    /// The arguments of `synod serve` for replica `id` (without the supervision flag, which
    /// `ReplicaProcess` adds); `extra` goes last.
    public func serveArguments(id: Int, dataDirectory: String, extra: [String] = []) -> [String] {
        let member = member(id)
        return [
            "serve", "--id", "\(id)", "--peers", peersArgument, "--client-urls", clientURLsArgument,
            "--listen-client", member.clientEndpoint, "--listen-peer", member.peerEndpoint,
            "--data-dir", dataDirectory,
        ] + extra
    }

    /// The first port (client before peer, replica by replica) that something on this
    /// machine already listens on, described as `replica 1 client`; nil when all are free.
    public func firstPortInUse() -> (port: Int, role: String)? {
        for member in members {
            if !LoopbackPort.isFree(member.clientPort) { return (member.clientPort, "replica \(member.id) client") }
            if !LoopbackPort.isFree(member.peerPort) { return (member.peerPort, "replica \(member.id) peer") }
        }
        return nil
    }
}
