import NIOCore

extension PeerTransport {
    /// The limits and timings of the peer transport. Every queue and frame is bounded
    /// (STYLE 9); `validate()` checks how the bounds relate, and `start()` calls it.
    public struct Configuration: Hashable, Sendable {
        /// A hash of the cluster's name, exchanged in the hello: a replica of another
        /// cluster that reaches this port by mistake is refused. 0 when unset.
        public var clusterID: UInt32 = 0
        /// The bound on a frame's length field (everything after the 4-byte prefix).
        /// Every replica of a cluster must use the same value: a frame over the
        /// receiver's bound closes the connection.
        public var frameBytesMax: Int = FrameFormat.frameBytesMaxDefault
        /// Frames kept per peer while its connection is being established or backing off;
        /// beyond it the oldest frame is dropped.
        public var pendingFramesMax: Int = 1024
        /// The same queue bounded in bytes; must hold at least one maximal frame.
        public var pendingBytesMax: Int = 16 * 1024 * 1024
        /// The outbound socket buffer (NIO's high write watermark) per peer. While a peer
        /// reads slower than this replica writes and the buffer is full, frames to it are
        /// dropped rather than queued without bound.
        public var outboundBufferBytesMax: Int = 16 * 1024 * 1024
        /// The first reconnect delay; it doubles per failed attempt up to `backoffMax`,
        /// each delay drawn uniformly from its upper half (jitter).
        public var backoffInitial: TimeAmount = .milliseconds(50)
        public var backoffMax: TimeAmount = .seconds(2)
        /// A connection that stayed up this long resets the backoff when it ends; one
        /// that a peer closes sooner (say, it refuses our hello) keeps backing off, so a
        /// refusing peer is not redialled 20 times a second.
        public var connectionStableAfter: TimeAmount = .seconds(1)
        /// How long one connect attempt may take.
        public var connectTimeout: TimeAmount = .seconds(1)
        /// How long an inbound connection may stay open without a hello.
        public var helloTimeout: TimeAmount = .seconds(5)
        /// Inbound connections open at once; more are closed on accept.
        public var inboundConnectionsMax: Int = 64

        public init() {}

        /// Throws `TransportError.invalidConfiguration` naming the first broken relation.
        public func validate() throws(TransportError) {
            func require(_ condition: Bool, _ reason: @autoclosure () -> String) throws(TransportError) {
                if !condition { throw .invalidConfiguration(reason()) }
            }
            try require(
                frameBytesMax >= FrameFormat.frameBytesMaxMinimum,
                "frameBytesMax \(frameBytesMax) is below the minimum \(FrameFormat.frameBytesMaxMinimum)")
            try require(
                frameBytesMax <= Int(UInt32.max), "frameBytesMax \(frameBytesMax) does not fit the u32 length field")
            try require(pendingFramesMax >= 1, "pendingFramesMax \(pendingFramesMax) must be at least 1")
            try require(
                pendingBytesMax >= frameBytesMax + FrameFormat.lengthFieldBytes,
                "pendingBytesMax \(pendingBytesMax) cannot hold one frame of frameBytesMax \(frameBytesMax)")
            try require(
                outboundBufferBytesMax >= frameBytesMax + FrameFormat.lengthFieldBytes,
                "outboundBufferBytesMax \(outboundBufferBytesMax) cannot hold one frame of frameBytesMax "
                    + "\(frameBytesMax)")
            try require(backoffInitial > .zero, "backoffInitial must be positive")
            try require(
                backoffInitial <= backoffMax, "backoffInitial \(backoffInitial) exceeds backoffMax \(backoffMax)")
            try require(connectTimeout > .zero, "connectTimeout must be positive")
            try require(helloTimeout > .zero, "helloTimeout must be positive")
            try require(inboundConnectionsMax >= 1, "inboundConnectionsMax \(inboundConnectionsMax) must be at least 1")
        }
    }
}
