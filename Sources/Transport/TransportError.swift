import Paxos

/// Operating errors of the peer transport; each description is one line for the user.
public enum TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Another process (or another replica of a local cluster) holds the port.
    case addressInUse(host: String, port: Int)
    /// Binding failed for another reason, e.g. an address this machine does not have.
    case cannotListen(host: String, port: Int, reason: String)
    /// A limit or timing of `PeerTransport.Configuration` is out of range.
    case invalidConfiguration(String)
    /// The peer table names this replica itself or a replica id 0.
    case invalidPeer(ReplicaID, reason: String)

    public var description: String {
        switch self {
        case .addressInUse(let host, let port):
            return "cannot listen on \(host):\(port) for peers: address already in use"
        case .cannotListen(let host, let port, let reason):
            return "cannot listen on \(host):\(port) for peers: \(reason)"
        case .invalidConfiguration(let reason):
            return "invalid peer transport configuration: \(reason)"
        case .invalidPeer(let id, let reason):
            return "invalid peer r\(id): \(reason)"
        }
    }
}
