import ByteCodec
import NIOCore
import Paxos
import Storage

/// What a peer frame carries: the byte after the version in every frame header.
///
/// Kinds are part of the wire format: never renumber one, only add.
public enum FrameKind: UInt8, Hashable, Sendable, CustomStringConvertible {
    /// The first frame of every connection: who is calling, for which cluster, whom.
    case hello = 1
    /// One Paxos `Envelope` in the Paxos wire codec (`Envelope.encode(into:)`).
    case message = 2
    /// One bounded piece of a state-machine snapshot (`SnapshotChunk`).
    case snapshotChunk = 3

    public var description: String {
        switch self {
        case .hello: return "hello"
        case .message: return "message"
        case .snapshotChunk: return "snapshot-chunk"
        }
    }
}

/// The peer frame layout, all integers big-endian:
///
/// ```
/// [u32 length][u8 version][u8 kind][u32 sender replica id][payload]
///  └ counts every byte after itself: 6 header bytes + the payload
/// ```
///
/// The cluster identity travels once per connection, in the hello payload
/// (`[u32 cluster id][u32 receiver replica id]`), instead of in every frame.
public enum FrameFormat {
    /// The only version this build speaks; a frame of any other version closes the connection.
    public static let version: UInt8 = 1
    /// The length prefix itself.
    public static let lengthFieldBytes = 4
    /// version + kind + sender: the part of the header the length counts.
    public static let headerBytesAfterLength = 6
    /// The whole header before the payload.
    public static let headerBytes = lengthFieldBytes + headerBytesAfterLength
    /// The default bound on the length field (payload + 6), 4 MiB. The Paxos codec's own
    /// bound on one command (`WireLimits.commandBytesMax`, 2 MiB) is lower, so a message
    /// carrying one maximal command always fits.
    public static let frameBytesMaxDefault = 4 * 1024 * 1024
    /// The smallest `frameBytesMax` a transport accepts; below it heartbeats with a
    /// modest batch would not fit.
    public static let frameBytesMaxMinimum = 64 * 1024
    /// The hello payload: cluster id (u32) + the receiver's replica id (u32).
    public static let helloPayloadBytes = 8
    /// The exact length field of a hello frame.
    public static let helloLength = headerBytesAfterLength + helloPayloadBytes
}

/// One decoded frame. `payload` is a slice of the receive buffer (no copy).
public struct Frame: Hashable, Sendable {
    public var kind: FrameKind
    public var sender: ReplicaID
    public var payload: ByteBuffer

    public init(kind: FrameKind, sender: ReplicaID, payload: ByteBuffer) {
        self.kind = kind
        self.sender = sender
        self.payload = payload
    }

    /// Bytes this frame took on the wire, length prefix included.
    public var wireBytes: Int { FrameFormat.headerBytes + payload.readableBytes }
}

/// The hello payload: the caller's cluster and the replica it means to reach, so a
/// misrouted or misconfigured connection is refused before any message is read.
public struct Hello: Hashable, Sendable {
    public var clusterID: UInt32
    public var receiver: ReplicaID

    public init(clusterID: UInt32, receiver: ReplicaID) {
        self.clusterID = clusterID
        self.receiver = receiver
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(clusterID, endianness: .big)
        buffer.writeInteger(receiver, endianness: .big)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> Hello {
        guard buffer.readableBytes == FrameFormat.helloPayloadBytes else {
            throw DecodeError(
                "hello payload of \(buffer.readableBytes) bytes, expected \(FrameFormat.helloPayloadBytes)", offset: 0)
        }
        let clusterID = buffer.readInteger(endianness: .big, as: UInt32.self)!
        let receiver = buffer.readInteger(endianness: .big, as: UInt32.self)!
        return Hello(clusterID: clusterID, receiver: receiver)
    }
}

// MARK: - Encoding

/// Builds complete frames (header + payload) ready to write to a channel.
public enum FrameEncoder {
    /// A frame whose payload is `payloadBytes` long, written by `writePayload`.
    /// The caller checks the result against its `frameBytesMax`.
    public static func frame(
        kind: FrameKind,
        sender: ReplicaID,
        payloadBytes: Int,
        allocator: ByteBufferAllocator = ByteBufferAllocator(),
        writePayload: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        precondition(payloadBytes >= 0, "negative payload size \(payloadBytes)")
        let length = FrameFormat.headerBytesAfterLength + payloadBytes
        precondition(length <= Int(UInt32.max), "frame length \(length) does not fit the u32 length field")
        var buffer = allocator.buffer(capacity: FrameFormat.lengthFieldBytes + length)
        buffer.writeInteger(UInt32(length), endianness: .big)
        buffer.writeInteger(FrameFormat.version)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(sender, endianness: .big)
        let payloadStart = buffer.writerIndex
        writePayload(&buffer)
        // Check data after writing it: the length field must describe what follows.
        precondition(buffer.writerIndex - payloadStart == payloadBytes, "payload writer wrote a different size")
        return buffer
    }

    public static func hello(
        sender: ReplicaID, _ hello: Hello, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        frame(kind: .hello, sender: sender, payloadBytes: FrameFormat.helloPayloadBytes, allocator: allocator) {
            hello.encode(into: &$0)
        }
    }

    /// A message frame; the sender is the envelope's `from`.
    public static func message(_ envelope: Envelope, allocator: ByteBufferAllocator = ByteBufferAllocator())
        -> ByteBuffer
    {
        message(from: envelope.from, to: envelope.to, messageBytes: encoded(envelope.message), allocator: allocator)
    }

    /// `message.encode(into:)`'s bytes.
    public static func encoded(_ message: Message) -> [UInt8] {
        var writer = ByteWriter(reservingCapacity: message.approximateBytes)
        message.encode(into: &writer)
        return writer.bytes
    }

    /// The frame of an envelope whose message is already encoded (`encoded(_:)`): a leader
    /// sends each accept to every follower and encodes it once.
    public static func message(
        from: ReplicaID, to: ReplicaID, messageBytes: [UInt8], allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var header = ByteWriter(reservingCapacity: 16)
        Envelope.encodeHeader(from: from, to: to, into: &header)
        let headerBytes = header.bytes
        return frame(
            kind: .message, sender: from, payloadBytes: headerBytes.count + messageBytes.count, allocator: allocator
        ) {
            $0.writeBytes(headerBytes)
            $0.writeBytes(messageBytes)
        }
    }

    public static func snapshotChunk(
        _ chunk: SnapshotChunk, sender: ReplicaID, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        frame(kind: .snapshotChunk, sender: sender, payloadBytes: chunk.encodedBytes, allocator: allocator) {
            chunk.encode(into: &$0)
        }
    }
}
