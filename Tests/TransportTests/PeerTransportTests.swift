import Foundation
import NIOCore
import NIOPosix
import Paxos
import Storage
import Testing

@testable import Transport

/// Real transports on 127.0.0.1. Serialized: each test opens sockets and waits on them,
/// and every wait is bounded (`waitUntil`, 10 s by default) and holds no thread.
@Suite(.serialized) struct PeerTransportTests {
    private func envelopes(from: ReplicaID, to: ReplicaID, count: Int, seed: UInt64) -> [Envelope] {
        var generator = EnvelopeGenerator(seed: seed)
        return (0..<count).map { Envelope(from: from, to: to, message: generator.message(kind: $0)) }
    }

    /// Waits until a heartbeat from `sender` reaches `receiver`: the connection is up and
    /// every frame queued before it has been delivered.
    private func warmUp(_ sender: Node, _ receiver: Node) async {
        #expect(await reaches(sender, receiver), "r\(sender.id) never reached r\(receiver.id)")
    }

    @Test func twoTransportsExchangeEveryMessageKindIntactAndInOrder() async throws {
        let nodes = try startCluster([1, 2])
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two) = (nodes[0], nodes[1])
        await warmUp(one, two)
        await warmUp(two, one)
        let base1 = two.received.count
        let base2 = one.received.count
        let oneToTwo = envelopes(from: 1, to: 2, count: 2400, seed: 11)
        let twoToOne = envelopes(from: 2, to: 1, count: 2400, seed: 12)
        // Batches of 40, as a server sends one step's output and flushes once.
        for start in stride(from: 0, to: 2400, by: 40) {
            one.transport.send(Array(oneToTwo[start..<start + 40]))
            two.transport.send(Array(twoToOne[start..<start + 40]))
        }
        #expect(await waitUntil { two.received.count == base1 + 2400 && one.received.count == base2 + 2400 })
        #expect(Array(two.received.all.dropFirst(base1)) == oneToTwo)
        #expect(Array(one.received.all.dropFirst(base2)) == twoToOne)
        let statistics = one.transport.statistics
        #expect(statistics.framesDropped == 0)
        #expect(statistics.connectionsRejected == 0)
        #expect(statistics.connectionsEstablished == 1)
        #expect(statistics.framesReceived >= 2401)  // hello + messages
    }

    @Test func threeTransportsDeliverInOrderPerSender() async throws {
        let ids: [ReplicaID] = [1, 2, 3]
        let nodes = try startCluster(ids)
        defer { nodes.forEach { $0.transport.shutdown() } }
        for sender in nodes { for receiver in nodes where receiver.id != sender.id { await warmUp(sender, receiver) } }
        let bases = nodes.map { $0.received.count }
        var sent: [ReplicaID: [ReplicaID: [Envelope]]] = [:]
        for sender in nodes {
            for receiver in nodes where receiver.id != sender.id {
                sent[receiver.id, default: [:]][sender.id] = envelopes(
                    from: sender.id, to: receiver.id, count: 600, seed: UInt64(sender.id * 10 + receiver.id))
            }
        }
        // Each step mixes both destinations in one send call.
        for start in stride(from: 0, to: 600, by: 30) {
            for sender in nodes {
                var batch: [Envelope] = []
                for receiver in ids where receiver != sender.id {
                    batch += sent[receiver]![sender.id]![start..<start + 30]
                }
                sender.transport.send(batch)
            }
        }
        #expect(await waitUntil { zip(nodes, bases).allSatisfy { $0.received.count == $1 + 1200 } })
        for (node, base) in zip(nodes, bases) {
            let received = Array(node.received.all.dropFirst(base))
            for sender in ids where sender != node.id {
                #expect(received.filter { $0.from == sender } == sent[node.id]![sender]!, "r\(sender)→r\(node.id)")
            }
        }
    }

    @Test func snapshotChunksArriveInOrder() async throws {
        let nodes = try startCluster([1, 2])
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two) = (nodes[0], nodes[1])
        await warmUp(one, two)
        let chunkBytes = one.transport.snapshotChunkBytesMax
        // A pattern that never repeats at a chunk boundary, cheap to build in a debug build.
        let snapshot = (0..<(2 * chunkBytes + 1000)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        var offset = 0
        var chunks: [SnapshotChunk] = []
        while offset < snapshot.count {
            let end = min(offset + chunkBytes, snapshot.count)
            chunks.append(
                SnapshotChunk(
                    through: 99, offset: UInt64(offset), totalBytes: UInt64(snapshot.count),
                    bytes: Array(snapshot[offset..<end]), isLast: end == snapshot.count))
            offset = end
        }
        for chunk in chunks { one.transport.sendSnapshotChunk(chunk, to: 2) }
        #expect(await waitUntil { two.chunks.count == chunks.count })
        #expect(two.chunks.all.map(\.0) == Array(repeating: 1, count: chunks.count))
        #expect(two.chunks.all.map(\.1) == chunks)
        #expect(two.chunks.all.flatMap(\.1.bytes) == snapshot)
    }

    @Test func reconnectsAfterTheReceiverRestartsOnTheSamePort() async throws {
        let nodes = try startCluster([1, 2])
        let (one, two) = (nodes[0], nodes[1])
        defer { one.transport.shutdown() }
        await warmUp(one, two)
        let port = try #require(two.transport.localPort)
        two.transport.shutdown()
        two.transport.shutdown()  // idempotent
        #expect(two.transport.localPort == nil)

        // Messages sent while r2 is down are dropped or queued, never a crash.
        for _ in 0..<20 {
            one.transport.send(envelopes(from: 1, to: 2, count: 5, seed: 1))
            try await Task.sleep(for: .milliseconds(10))
        }
        let peers: [ReplicaID: (host: String, port: Int)] = [1: ("127.0.0.1", 1), 2: ("127.0.0.1", port)]
        let restarted = Node(id: 2, port: port, peers: peers)
        try restarted.transport.start()
        defer { restarted.transport.shutdown() }
        await warmUp(one, restarted)
        let after = envelopes(from: 1, to: 2, count: 100, seed: 3)
        let base = restarted.received.count
        one.transport.send(after)
        #expect(await waitUntil { restarted.received.count == base + 100 })
        #expect(Array(restarted.received.all.dropFirst(base)) == after)
        #expect(one.transport.statistics.connectionsEstablished >= 2)
    }

    @Test func listensOnPortZeroAndReportsTheRealPort() async throws {
        let receiver = Node(id: 1, port: 0, peers: [2: ("127.0.0.1", 1)])
        try receiver.transport.start()
        defer { receiver.transport.shutdown() }
        let port = try #require(receiver.transport.localPort)
        #expect(port > 0)
        let sender = Node(id: 2, port: 0, peers: [1: ("127.0.0.1", port)])
        try sender.transport.start()
        defer { sender.transport.shutdown() }
        await warmUp(sender, receiver)
    }

    @Test func aTakenPortIsOneClearError() async throws {
        let nodes = try startCluster([1])
        defer { nodes[0].transport.shutdown() }
        let port = try #require(nodes[0].transport.localPort)
        let second = Node(id: 1, port: port, peers: [:])
        defer { second.transport.shutdown() }
        do {
            try second.transport.start()
            Issue.record("second listener on \(port) started")
        } catch let error as TransportError {
            #expect(error == .addressInUse(host: "127.0.0.1", port: port))
            #expect("\(error)" == "cannot listen on 127.0.0.1:\(port) for peers: address already in use")
        }
    }

    @Test func hostileConnectionsAreRejectedWithOneLineAndGoodPeersKeepWorking() async throws {
        var configuration = fastConfiguration()
        configuration.clusterID = 0xC0FFEE
        let nodes = try startCluster([1, 2], configuration: configuration)
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two) = (nodes[0], nodes[1])
        await warmUp(two, one)
        let port = try #require(one.transport.localPort)
        let hello = helloBytes(from: 2, to: 1, clusterID: 0xC0FFEE)
        let cases: [(name: String, bytes: [UInt8], expected: String)] = [
            ("garbage", Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "exceeds frameBytesMax"),
            ("oversized length", hello + [0x7F, 0xFF, 0xFF, 0xFF, 1, 2], "exceeds frameBytesMax"),
            ("wrong version", rawFrame(length: 14, version: 9, kind: 1, sender: 2), "frame version 9"),
            ("unknown kind", hello + rawFrame(length: 6, kind: 77, sender: 2), "unknown frame kind 77"),
            ("message before hello", rawFrame(length: 6, kind: 2, sender: 2), "expected hello"),
            ("unknown replica", helloBytes(from: 99, to: 1, clusterID: 0xC0FFEE), "unknown replica r99"),
            ("other cluster", helloBytes(from: 2, to: 1, clusterID: 1), "of cluster 1"),
            ("wrong receiver", helloBytes(from: 2, to: 3, clusterID: 0xC0FFEE), "meant for r3"),
            (
                "undecodable payload", hello + rawFrame(length: 9, kind: 2, sender: 2, payload: [1, 2, 3]),
                "does not decode"
            ),
            ("sender changes", hello + rawFrame(length: 6, kind: 2, sender: 3), "on the connection of r2"),
            (
                "envelope to someone else",
                hello
                    + Array(
                        FrameEncoder.message(Envelope(from: 2, to: 3, message: .learnRequest(fromSlot: 1)))
                            .readableBytesView),
                "arrived at r1"
            ),
            ("bad snapshot chunk", hello + rawFrame(length: 8, kind: 3, sender: 2, payload: [0, 0]), "snapshot chunk"),
            ("silence", [], "no hello"),
        ]
        for (index, hostile) in cases.enumerated() {
            let client = try await RawClient.connect(port: port)
            let clientPort = try #require(client.channel.localAddress?.port)
            if !hostile.bytes.isEmpty { client.send(hostile.bytes) }
            #expect(await waitUntil { client.isClosed }, "\(hostile.name): connection not closed")
            #expect(await waitUntil { one.rejections.count == index + 1 }, "\(hostile.name): no rejection logged")
            let lines = one.logLines.all.filter { $0.contains("127.0.0.1:\(clientPort) ") }
            #expect(lines.count == 1, "\(hostile.name): \(lines)")
            #expect(lines.first?.contains(hostile.expected) == true, "\(hostile.name): \(lines)")
            await client.close()
        }
        #expect(one.transport.statistics.connectionsRejected == cases.count)

        // The good peer's connection was never disturbed, and new ones still work.
        let after = envelopes(from: 2, to: 1, count: 200, seed: 8)
        let base = one.received.count
        two.transport.send(after)
        #expect(await waitUntil { one.received.count == base + 200 })
        #expect(Array(one.received.all.dropFirst(base)) == after)
        await warmUp(one, two)
    }

    @Test func inboundConnectionsAreBounded() async throws {
        var configuration = fastConfiguration()
        configuration.inboundConnectionsMax = 2
        let node = Node(id: 1, port: 0, peers: [2: ("127.0.0.1", 1)], configuration: configuration)
        try node.transport.start()
        defer { node.transport.shutdown() }
        let port = try #require(node.transport.localPort)
        let first = try await RawClient.connect(port: port)
        let second = try await RawClient.connect(port: port)
        #expect(await waitUntil { node.transport.statistics.connectionsAccepted == 2 })
        let third = try await RawClient.connect(port: port)
        #expect(await waitUntil { third.isClosed })
        #expect(node.rejections.count == 1)
        #expect(node.rejections.first?.contains("inboundConnectionsMax") == true)
        #expect(!first.isClosed && !second.isClosed)
        // Closing one makes room again, once the server has seen the close (on a loaded
        // machine that may take a moment: a client refused meanwhile is simply retried).
        await first.close()
        var fourth = try await RawClient.connect(port: port)
        #expect(
            await waitUntil {
                if node.transport.statistics.connectionsAccepted == 3 { return true }
                if fourth.isClosed, let retry = try? await RawClient.connect(port: port) { fourth = retry }
                return false
            })
        try await Task.sleep(for: .milliseconds(50))
        #expect(!fourth.isClosed)
        for client in [second, third, fourth] { await client.close() }
    }

    @Test func framesToAnUnreachablePeerAreBoundedAndDropped() async throws {
        var configuration = fastConfiguration()
        configuration.pendingFramesMax = 100
        // Port 1 on loopback: nothing listens there, connects are refused at once.
        let lonely = Node(id: 1, port: 0, peers: [2: ("127.0.0.1", 1)], configuration: configuration)
        try lonely.transport.start()
        defer { lonely.transport.shutdown() }
        lonely.transport.send(envelopes(from: 1, to: 2, count: 1000, seed: 4))
        lonely.transport.send([Envelope(from: 1, to: 7, message: .learnRequest(fromSlot: 1))])  // not a peer
        #expect(await waitUntil { lonely.transport.statistics.framesDropped >= 900 + 1 })
        #expect(await waitUntil { lonely.transport.statistics.connectFailures >= 2 })  // it keeps retrying
        lonely.transport.shutdown()
        let dropped = lonely.transport.statistics.framesDropped
        lonely.transport.send(envelopes(from: 1, to: 2, count: 10, seed: 4))
        #expect(await waitUntil { lonely.transport.statistics.framesDropped == dropped + 10 })
    }

    @Test func oversizedEnvelopesAreDroppedBeforeTheWire() async throws {
        var configuration = fastConfiguration()
        configuration.frameBytesMax = FrameFormat.frameBytesMaxMinimum
        let nodes = try startCluster([1, 2], configuration: configuration)
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two) = (nodes[0], nodes[1])
        await warmUp(one, two)
        let huge = Envelope(
            from: 1, to: 2, message: .forward(commands: [Command([UInt8](repeating: 1, count: 100_000))]))
        let small = Envelope(from: 1, to: 2, message: .learnRequest(fromSlot: 77))
        let base = two.received.count
        one.transport.send([huge, small])
        #expect(await waitUntil { two.received.count == base + 1 })
        #expect(two.received.all.last == small)
        #expect(one.transport.statistics.framesDropped == 1)
        #expect(two.transport.statistics.connectionsRejected == 0)
    }
}
