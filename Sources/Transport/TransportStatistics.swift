import Synchronization

extension PeerTransport {
    /// A snapshot of the transport's counters since `init`. Each counter is read
    /// atomically on its own; the snapshot as a whole is not one instant.
    public struct Statistics: Hashable, Sendable {
        /// Frames written to outbound connections, hellos included.
        public var framesSent: Int = 0
        /// Bytes of those frames, length prefixes included.
        public var bytesSent: Int = 0
        /// Frames accepted from inbound connections, hellos included.
        public var framesReceived: Int = 0
        /// Bytes of those frames, length prefixes included.
        public var bytesReceived: Int = 0
        /// Frames not sent: pending queue overflow, a full socket buffer, a frame over
        /// `frameBytesMax`, an unknown destination, or sent after `shutdown()`.
        public var framesDropped: Int = 0
        /// Outbound connections established.
        public var connectionsEstablished: Int = 0
        /// Outbound connect attempts that failed.
        public var connectFailures: Int = 0
        /// Inbound connections accepted by the listener.
        public var connectionsAccepted: Int = 0
        /// Inbound connections closed for breaking the protocol (bad frame, unknown
        /// replica, bad payload, no hello in time) or over `inboundConnectionsMax`.
        public var connectionsRejected: Int = 0

        public init() {}
    }
}

/// The live counters behind `PeerTransport.Statistics`: relaxed atomics, bumped from
/// any event loop without a lock.
final class TransportCounters: Sendable {
    let framesSent = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let framesReceived = Atomic<Int>(0)
    let bytesReceived = Atomic<Int>(0)
    let framesDropped = Atomic<Int>(0)
    let connectionsEstablished = Atomic<Int>(0)
    let connectFailures = Atomic<Int>(0)
    let connectionsAccepted = Atomic<Int>(0)
    let connectionsRejected = Atomic<Int>(0)

    func snapshot() -> PeerTransport.Statistics {
        var statistics = PeerTransport.Statistics()
        statistics.framesSent = framesSent.load(ordering: .relaxed)
        statistics.bytesSent = bytesSent.load(ordering: .relaxed)
        statistics.framesReceived = framesReceived.load(ordering: .relaxed)
        statistics.bytesReceived = bytesReceived.load(ordering: .relaxed)
        statistics.framesDropped = framesDropped.load(ordering: .relaxed)
        statistics.connectionsEstablished = connectionsEstablished.load(ordering: .relaxed)
        statistics.connectFailures = connectFailures.load(ordering: .relaxed)
        statistics.connectionsAccepted = connectionsAccepted.load(ordering: .relaxed)
        statistics.connectionsRejected = connectionsRejected.load(ordering: .relaxed)
        return statistics
    }
}

extension Atomic where Value == Int {
    /// Adds `amount`, relaxed: counters order nothing.
    func add(_ amount: Int) {
        wrappingAdd(amount, ordering: .relaxed)
    }
}
