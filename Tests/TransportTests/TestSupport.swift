import Foundation
import Logging
import NIOCore
import NIOPosix
import Paxos
import Storage
import Storage
import Synchronization

@testable import Transport

/// SplitMix64 (the core's), so every random case is a function of its printed seed.
typealias SeededRandom = SplitMix64

/// Envelopes of every message kind with random contents.
struct EnvelopeGenerator {
    var random: SeededRandom

    init(seed: UInt64) { random = SeededRandom(seed: seed) }

    mutating func integer() -> UInt64 {
        // Every magnitude, so varints of every length appear.
        let bits = UInt64.random(in: 0...64, using: &random)
        return bits == 64 ? random.next() : random.next() & ((1 << bits) - 1)
    }

    mutating func ballot() -> Ballot {
        Ballot(round: integer(), replica: UInt32.random(in: 1...7, using: &random))
    }

    mutating func command() -> Command {
        let count = Int.random(in: 0...64, using: &random)
        return Command((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
    }

    mutating func value() -> Value {
        Bool.random(using: &random) ? .noop : .batch((0..<Int.random(in: 0...5, using: &random)).map { _ in command() })
    }

    mutating func entries() -> [SlotEntry] {
        (0..<Int.random(in: 0...4, using: &random)).map { _ in
            SlotEntry(slot: integer(), entry: LogEntry(ballot: ballot(), value: value()))
        }
    }

    /// Message kind `index % 13`, so cycling through indexes covers every kind.
    mutating func message(kind index: Int) -> Message {
        switch index % 13 {
        case 0: return .prepare(ballot: ballot(), fromSlot: integer())
        case 1: return .promise(ballot: ballot(), entries: entries(), chosenThrough: integer(), more: integer() % 2 == 0)
        case 2: return .accept(ballot: ballot(), slot: integer(), value: value(), chosenThrough: integer())
        case 3: return .accepted(ballot: ballot(), slot: integer())
        case 4: return .reject(promised: ballot())
        case 5: return .heartbeat(ballot: ballot(), chosenThrough: integer(), readRound: integer())
        case 6: return .heartbeatAck(ballot: ballot(), readRound: integer(), chosenThrough: integer())
        case 7: return .learn(ballot: ballot(), entries: entries(), chosenThrough: integer())
        case 8: return .learnRequest(fromSlot: integer())
        case 9: return .forward(commands: (0..<Int.random(in: 0...3, using: &random)).map { _ in command() })
        case 10: return .readIndexRequest(requestID: integer())
        case 11: return .transferLeadership(ballot: ballot(), target: ReplicaID(truncatingIfNeeded: integer()))
        default: return .readIndexResponse(requestID: integer(), ballot: ballot(), readIndex: integer())
        }
    }
}

/// A thread-safe list that callbacks append to and tests poll.
final class Collector<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])

    func append(_ item: Element) { items.withLock { $0.append(item) } }
    var all: [Element] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; true if it held.
/// Sleeps without holding a thread: the test process shares Swift's cooperative threads
/// (one per core) among all tests running at once, and a test that blocks one freezes the
/// timed process tests beside it.
func waitUntil(timeout: TimeInterval = 10, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}

/// Sends a marked heartbeat from `sender` to `receiver` until one arrives, for up to
/// `timeout` seconds; true if one did. Frames keep their order, so every frame queued
/// before it has been delivered too.
func reaches(_ sender: Node, _ receiver: Node, timeout: TimeInterval = 10) async -> Bool {
    let marker = UInt64.random(in: 1...UInt64.max)
    let heartbeat = Envelope(
        from: sender.id, to: receiver.id, message: .heartbeat(ballot: .zero, chosenThrough: 0, readRound: marker))
    return await waitUntil(timeout: timeout) {
        sender.transport.send([heartbeat])
        return await waitUntil(timeout: 0.2) { receiver.received.all.contains(heartbeat) }
    }
}

/// A log handler that keeps every line, so tests can check what was logged.
struct CapturingLogHandler: LogHandler {
    let lines: Collector<String>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.append("\(event.level) \(event.message)")
    }
}

/// One transport under test with what it received and logged.
final class Node: Sendable {
    let id: ReplicaID
    let transport: PeerTransport
    let received = Collector<Envelope>()
    let chunks = Collector<(ReplicaID, SnapshotChunk)>()
    let logLines = Collector<String>()

    init(
        id: ReplicaID, port: Int, peers: [ReplicaID: (host: String, port: Int)],
        configuration: PeerTransport.Configuration = fastConfiguration(), tls: PeerTransport.TLS? = nil
    ) {
        self.id = id
        let received = self.received
        let chunks = self.chunks
        let logLines = self.logLines
        var logger = Logger(label: "r\(id)") { _ in CapturingLogHandler(lines: logLines) }
        logger.logLevel = .info
        transport = PeerTransport(
            localID: id, listenHost: "127.0.0.1", listenPort: port, peers: peers,
            group: MultiThreadedEventLoopGroup.singleton, logger: logger, configuration: configuration, tls: tls,
            onMessage: { received.append($0) },
            onSnapshotChunk: { chunks.append(($0, $1)) })
    }

    var rejections: [String] { logLines.all.filter { $0.contains("rejected") } }
}

/// Short timings so reconnect tests stay fast.
func fastConfiguration() -> PeerTransport.Configuration {
    var configuration = PeerTransport.Configuration()
    configuration.backoffInitial = .milliseconds(10)
    configuration.backoffMax = .milliseconds(200)
    configuration.helloTimeout = .seconds(2)
    return configuration
}

/// Starts transports for `ids` on 127.0.0.1, on random ports in 20000–29999 (below
/// Linux's ephemeral range, where a listener could collide with the local port of an
/// outgoing connection); on a port already in use, everything is retried on new ports.
func startCluster(
    _ ids: [ReplicaID], configuration: PeerTransport.Configuration = fastConfiguration(),
    tls: (ReplicaID) throws -> PeerTransport.TLS? = { _ in nil }
) throws -> [Node] {
    var random = SystemRandomNumberGenerator()
    for _ in 0..<20 {
        var ports: [ReplicaID: Int] = [:]
        while Set(ports.values).count < ids.count {
            ports = Dictionary(uniqueKeysWithValues: ids.map { ($0, Int.random(in: 20000...29999, using: &random)) })
        }
        let peers = ports.mapValues { (host: "127.0.0.1", port: $0) }
        var nodes: [Node] = []
        do {
            for id in ids {
                let node = Node(id: id, port: ports[id]!, peers: peers, configuration: configuration, tls: try tls(id))
                nodes.append(node)
                try node.transport.start()
            }
            return nodes
        } catch TransportError.addressInUse {
            for node in nodes { node.transport.shutdown() }
        }
    }
    throw TransportError.invalidConfiguration("no free ports found in 20000-29999")
}

/// A raw TCP client that writes chosen bytes and notices when the server closes.
final class RawClient: Sendable {
    let channel: Channel
    private let closed = Collector<Bool>()

    private init(channel: Channel) {
        self.channel = channel
        let closed = self.closed
        channel.closeFuture.whenComplete { _ in closed.append(true) }
    }

    static func connect(port: Int) async throws -> RawClient {
        RawClient(
            channel: try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .connect(host: "127.0.0.1", port: port).get())
    }

    func send(_ bytes: [UInt8]) {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        channel.writeAndFlush(buffer, promise: nil)
    }

    func send(_ buffer: ByteBuffer) {
        channel.writeAndFlush(buffer, promise: nil)
    }

    var isClosed: Bool { closed.count > 0 }

    func close() async { try? await channel.close().get() }
}

/// Bytes of one frame with an arbitrary header, for hostile inputs.
func rawFrame(length: UInt32, version: UInt8 = 1, kind: UInt8, sender: UInt32, payload: [UInt8] = []) -> [UInt8] {
    var buffer = ByteBuffer()
    buffer.writeInteger(length, endianness: .big)
    buffer.writeInteger(version)
    buffer.writeInteger(kind)
    buffer.writeInteger(sender, endianness: .big)
    buffer.writeBytes(payload)
    return Array(buffer.readableBytesView)
}

func helloBytes(from sender: ReplicaID, to receiver: ReplicaID, clusterID: UInt32 = 0) -> [UInt8] {
    Array(FrameEncoder.hello(sender: sender, Hello(clusterID: clusterID, receiver: receiver)).readableBytesView)
}
