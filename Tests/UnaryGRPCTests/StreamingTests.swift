import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Testing

@testable import UnaryGRPC

/// What a streaming method saw, for the test to check.
final class CallLog: Sendable {
    struct Events {
        var messages: [[UInt8]] = []
        var halfClosed = false
        var cancelled: GRPCStatus?
        /// When `onCancel` ran.
        var cancelledAt: ContinuousClock.Instant?
        var writable = 0
        var responder: StreamingResponder?
    }

    private let events = NIOLockedValueBox(Events())

    var snapshot: Events { events.withLockedValue { $0 } }

    func update(_ change: (inout Events) -> Void) { events.withLockedValue { change(&$0) } }

    /// An observer recording everything, then calling `onMessage` with the message index.
    func observer(
        _ responder: StreamingResponder, onMessage: @escaping @Sendable (Int, [UInt8]) -> Void = { _, _ in },
        onHalfClose: @escaping @Sendable () -> Void = {}
    ) -> StreamingObserver {
        update { $0.responder = responder }
        return StreamingObserver(
            onMessage: { message in
                let index = self.events.withLockedValue {
                    $0.messages.append(message)
                    return $0.messages.count - 1
                }
                onMessage(index, message)
            },
            onHalfClose: {
                self.update { $0.halfClosed = true }
                onHalfClose()
            },
            onCancel: { status in
                self.update {
                    $0.cancelled = status
                    $0.cancelledAt = .now
                }
            },
            onWritable: { self.update { $0.writable += 1 } })
    }
}

/// `payload` as gRPC's length-prefixed message bytes.
func framed(_ payload: [UInt8]) -> [UInt8] {
    Array(GRPCWire.frame(payload, allocator: ByteBufferAllocator()).readableBytesView)
}

/// Calls `send` until it has refused for 200 ms in a row (the consumer is stalled, not
/// just slower than this thread); returns how many it accepted.
func sendUntilStalled(_ send: () -> Bool) -> Int {
    var accepted = 0
    var refusedInARow = 0
    while refusedInARow < 40 && accepted < 1_000_000 {
        if send() {
            accepted += 1
            refusedInARow = 0
        } else {
            refusedInARow += 1
            usleep(5_000)
        }
    }
    return accepted
}

@Suite("Streaming calls over loopback")
struct StreamingTests {
    static let path = "/test.Stream/Bidi"

    func withServer(
        options: UnaryServer.Options = UnaryServer.Options(),
        _ method: @escaping StreamingMethod,
        _ body: (Int, EventLoopGroup) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: group, methods: UnaryRoundTripTests.methods,
            streamingMethods: [Self.path: method], options: options)
        let port = try #require(server.localAddress?.port)
        do {
            try await body(port, group)
        } catch {
            await server.close()
            try await group.shutdownGracefully()
            throw error
        }
        await server.close()
        try await group.shutdownGracefully()
    }

    @Test("a bidi stream: many messages both ways, interleaved, sent from other threads", .timeLimit(.minutes(1)))
    func bidi() async throws {
        let log = CallLog()
        let queue = DispatchQueue(label: "sender")
        try await withServer({ call in
            log.observer(
                call.responder,
                onMessage: { index, message in
                    // Each message is answered twice, from another thread: the echo and a count.
                    queue.async {
                        #expect(call.responder.send(message))
                        #expect(call.responder.send(Array("\(index)".utf8)))
                    }
                },
                onHalfClose: { queue.async { call.responder.finish() } })
        }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            let count = 300
            for index in 0..<count {
                client.data(1, framed(Array("message \(index)".utf8)))
                // Interleaved: every 10th message waits for all answers so far.
                if index % 10 == 9 {
                    try await eventually("answers to \(index + 1) messages") { client.messages(1).count == 2 * (index + 1) }
                }
            }
            client.data(1, [], endStream: true)
            try await eventually("trailers") { client.trailers(1) != nil }
            #expect(client.status(1) == 0)
            let answers = client.messages(1)
            #expect(answers.count == 2 * count)
            for index in 0..<count where answers.count == 2 * count {
                #expect(answers[2 * index] == Array("message \(index)".utf8))
                #expect(answers[2 * index + 1] == Array("\(index)".utf8))
            }
            #expect(log.snapshot.halfClosed)
            #expect(log.snapshot.cancelled == nil)
            await client.close()
        }
    }

    @Test("messages split across DATA frames and several in one frame arrive whole and in order", .timeLimit(.minutes(1)))
    func framing() async throws {
        let log = CallLog()
        try await withServer({ call in log.observer(call.responder) }) { port, group in
            var generator = SplitMix64(seed: 42)
            let messages: [[UInt8]] = (0..<60).map { index in
                let size = index % 7 == 0 ? Int(generator.next() % 70_000) : Int(generator.next() % 300)
                return (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ index) }
            }
            let stream = messages.flatMap(framed)
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            var offset = 0
            var frames = 0
            while offset < stream.count {
                // From 1 byte (a prefix split in the middle) to several messages per frame.
                let size = min(stream.count - offset, [1, 3, 5, 17, 400, 5_000, 16_000][Int(generator.next() % 7)])
                client.data(1, Array(stream[offset..<(offset + size)]))
                offset += size
                frames += 1
            }
            try await eventually("all \(messages.count) messages") { log.snapshot.messages.count == messages.count }
            #expect(log.snapshot.messages == messages)
            #expect(frames > messages.count / 2)

            // Three whole messages in one frame.
            client.data(1, framed([1]) + framed([]) + framed([2, 3]))
            try await eventually("three more") { log.snapshot.messages.count == messages.count + 3 }
            #expect(Array(log.snapshot.messages.suffix(3)) == [[1], [], [2, 3]])
            #expect(!log.snapshot.halfClosed && log.snapshot.cancelled == nil)
            await client.close()
        }
    }

    @Test("a message above requestBytesMax ends the call with RESOURCE_EXHAUSTED, before it is buffered", .timeLimit(.minutes(1)))
    func tooLarge() async throws {
        let log = CallLog()
        var options = UnaryServer.Options()
        options.requestBytesMax = 1000
        try await withServer(options: options, { call in log.observer(call.responder) }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            client.data(1, framed([UInt8](repeating: 1, count: 1000)))
            // Only the prefix of the large message: refused on its announced length.
            client.data(1, Array(framed([UInt8](repeating: 2, count: 1001)).prefix(5)))
            try await eventually("the trailers") { client.trailers(1) != nil }
            #expect(client.status(1) == GRPCStatus.resourceExhausted)
            #expect(log.snapshot.messages.count == 1)
            #expect(log.snapshot.cancelled?.code == GRPCStatus.resourceExhausted)
            await client.close()
        }
    }

    @Test("the server finishes while the client still sends; the connection carries on", .timeLimit(.minutes(1)))
    func serverFinishes() async throws {
        let log = CallLog()
        try await withServer({ call in
            let received = NIOLockedValueBox(0)
            return log.observer(
                call.responder,
                onMessage: { _, _ in
                    if received.withLockedValue({ $0 += 1; return $0 }) == 3 {
                        call.responder.send([42])
                        call.responder.finish(GRPCStatus(code: 9, message: "enough"))
                        #expect(!call.responder.send([43]))
                    }
                })
        }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            for index in 0..<3 { client.data(1, framed([UInt8(index)])) }
            try await eventually("the trailers") { client.trailers(1) != nil }
            #expect(client.status(1) == 9)
            #expect(client.trailers(1)?.first(name: "grpc-message") == "enough")
            #expect(client.messages(1) == [[42]])
            try await eventually("RST_STREAM(NO_ERROR) after the trailers") { client.wasReset(1) != nil }
            #expect(client.wasReset(1) == .noError)
            // The client did not hear the reset yet and sends more: dropped, nothing breaks.
            for index in 0..<5 { client.data(1, framed([UInt8(index)])) }
            #expect(log.snapshot.cancelled == nil)

            // The same connection serves the next call.
            client.open(3, path: Self.path)
            client.data(3, framed([7]))
            client.data(3, framed([8]))
            client.data(3, framed([9]), endStream: true)
            try await eventually("the second call's trailers") { client.trailers(3) != nil }
            #expect(client.status(3) == 9)
            #expect(client.messages(3) == [[42]])
            await client.close()
        }
    }

    @Test("the method resets a call: queued messages are dropped, RST_STREAM(CANCEL), no callback", .timeLimit(.minutes(1)))
    func serverResets() async throws {
        let log = CallLog()
        try await withServer({ call in
            log.observer(
                call.responder,
                onMessage: { _, message in
                    if message == [0] {
                        call.responder.reset()
                        #expect(!call.responder.send([1]))
                    }
                })
        }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            client.data(1, framed([0]))
            try await eventually("the reset") { client.wasReset(1) != nil }
            #expect(client.wasReset(1) == .cancel)
            #expect(client.trailers(1) == nil)
            client.data(1, framed([5]))
            try await Task.sleep(for: .milliseconds(50))
            #expect(log.snapshot.messages == [[0]])
            #expect(log.snapshot.cancelled == nil)
            #expect(log.snapshot.responder?.queuedBytes == 0)
            await client.close()
        }
    }

    @Test("a server-streaming call: the client half-closes at once, the server sends then finishes", .timeLimit(.minutes(1)))
    func halfCloseThenServerSends() async throws {
        let log = CallLog()
        try await withServer({ call in
            if call.metadata.first(name: "x-finish-at-once") != nil {
                call.responder.finish(GRPCStatus(code: GRPCStatus.unavailable, message: "not now"))
            }
            return log.observer(
                call.responder,
                onHalfClose: {
                    DispatchQueue.global().async {
                        for index in 0..<5 { call.responder.send([UInt8(index)]) }
                        call.responder.finish()
                    }
                })
        }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            client.data(1, framed([1]), endStream: true)
            try await eventually("the trailers") { client.trailers(1) != nil }
            #expect(client.messages(1) == (0..<5).map { [UInt8($0)] })
            #expect(client.status(1) == 0)
            #expect(log.snapshot.halfClosed)
            #expect(log.snapshot.messages == [[1]])
            #expect(client.wasReset(1) == nil)

            // Trailers-only: a call finished before any message.
            client.open(3, path: Self.path, metadata: [("x-finish-at-once", "1")])
            try await eventually("the second trailers") { client.trailers(3) != nil }
            #expect(client.trailers(3)?.first(name: ":status") == "200")
            #expect(client.status(3) == GRPCStatus.unavailable)
            #expect(client.messages(3) == [])
            await client.close()
        }
    }

    @Test("a client reset and a closed connection reach the method as onCancel; sends are refused", .timeLimit(.minutes(1)))
    func cancellation() async throws {
        let logs = NIOLockedValueBox<[CallLog]>([])
        try await withServer({ call in
            let log = CallLog()
            logs.withLockedValue { $0.append(log) }
            return log.observer(call.responder)
        }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: Self.path)
            client.open(3, path: Self.path)
            client.data(1, framed([1]))
            try await eventually("both calls") { logs.withLockedValue { $0.count } == 2 }
            let (first, second) = logs.withLockedValue { ($0[0], $0[1]) }
            client.reset(1)
            try await eventually("the reset") { first.snapshot.cancelled != nil }
            #expect(first.snapshot.cancelled?.code == GRPCStatus.cancelled)
            #expect(first.snapshot.responder?.send([1]) == false)
            #expect(second.snapshot.cancelled == nil)

            await client.close()
            try await eventually("the connection's end") { second.snapshot.cancelled != nil }
            #expect(second.snapshot.cancelled?.code == GRPCStatus.unavailable)
            #expect(second.snapshot.responder?.send([1]) == false)
            #expect(second.snapshot.responder?.isWritable == false)
        }
    }

    @Test("a client that does not read: send refuses at the queue bound, onWritable after it reads", .timeLimit(.minutes(1)))
    func backpressure() async throws {
        var options = UnaryServer.Options()
        options.streamingLimits.queuedBytesMax = 256 << 10
        options.streamingLimits.queuedMessagesMax = 100_000
        let messageBytes = 1000
        let accepted = NIOLockedValueBox(0)
        let refused = NIOLockedValueBox(false)
        let log = CallLog()
        try await withServer(options: options, { call in
            DispatchQueue.global().async {
                let count = sendUntilStalled { call.responder.send([UInt8](repeating: 9, count: messageBytes)) }
                accepted.withLockedValue { $0 = count }
                refused.withLockedValue { $0 = true }
            }
            return log.observer(call.responder)
        }) { port, group in
            let client = try await FrameTestClient.connect(
                port: port, group: group, streamWindowBytes: 65_535, returnsCredit: false)
            client.open(1, path: Self.path)
            try await eventually("the sender to stall") { refused.withLockedValue { $0 } }
            // Let the server write what the window allows, then see the queue stand still.
            try await Task.sleep(for: .milliseconds(200))
            let responder = try #require(log.snapshot.responder)
            let sent = accepted.withLockedValue { $0 }
            let queued = responder.queuedBytes
            #expect(queued <= options.streamingLimits.queuedBytesMax)
            #expect(queued > options.streamingLimits.queuedBytesMax - 2 * messageBytes)
            // The queue counts a message until the socket took it: what waits for the
            // client's window stays inside the bound, and no more than the window went out.
            let delivered = client.messages(1).count
            #expect((sent - delivered) * messageBytes <= options.streamingLimits.queuedBytesMax)
            #expect(client.messages(1).count * (messageBytes + 5) <= 65_535)
            #expect(client.messages(1).count >= 60)
            #expect(!responder.send([UInt8](repeating: 1, count: messageBytes)))
            #expect(accepted.withLockedValue { $0 } == sent)
            #expect(log.snapshot.writable == 0)

            client.startReading()
            try await eventually("onWritable") { log.snapshot.writable == 1 }
            try await eventually("every accepted message") { client.messages(1).count == sent }
            #expect(responder.queuedBytes == 0)
            #expect(responder.send([1, 2, 3]))
            try await eventually("one more") { client.messages(1).count == sent + 1 }
            #expect(client.messages(1).last == [1, 2, 3])
            await client.close()
        }
    }

    @Test("a graceful shutdown waits up to drainTimeout for open streaming calls, then cancels them", .timeLimit(.minutes(1)))
    func gracefulShutdown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var options = UnaryServer.Options()
        // Far above the 200 ms the test waits, so a loaded machine cannot make it flaky; not
        // whole seconds, so it also checks the sub-second part is kept.
        options.drainTimeout = .milliseconds(2_500)
        let log = CallLog()
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: group, methods: [:],
            streamingMethods: [Self.path: { call in log.observer(call.responder) }], options: options)
        let client = try await FrameTestClient.connect(port: try #require(server.localAddress?.port), group: group)
        client.open(1, path: Self.path)
        client.data(1, framed([1]))
        try await eventually("the call") { log.snapshot.messages.count == 1 }
        // No suspension between the drain and the second message: both go to the one event
        // loop in this order, so the message arrives while draining however late this task is
        // scheduled again (on a loaded machine the test's task may wait seconds for a thread,
        // while the server's timeout runs on the event loop).
        let start = ContinuousClock.now
        server.beginGracefulShutdown()
        client.data(1, framed([2]))
        // Still served while draining.
        try await eventually("the second message") { log.snapshot.messages.count == 2 }
        try await server.run()
        #expect(ContinuousClock.now - start >= .milliseconds(2_500))
        try await eventually("onCancel") { log.snapshot.cancelled != nil }
        #expect(log.snapshot.cancelled?.code == GRPCStatus.unavailable)
        // Cancelled at the timeout, not before.
        let cancelledAt = try #require(log.snapshot.cancelledAt)
        #expect(cancelledAt - start >= .milliseconds(2_500))
        await client.close()
        try await group.shutdownGracefully()
    }

    @Test("an unknown path is answered UNIMPLEMENTED on its HEADERS, though the client never half-closes", .timeLimit(.minutes(1)))
    func unknownPathAtOnce() async throws {
        try await withServer({ call in StreamingObserver(onMessage: { _ in }) }) { port, group in
            let client = try await FrameTestClient.connect(port: port, group: group)
            client.open(1, path: "/test.Stream/Nope")
            try await eventually("the answer") { client.trailers(1) != nil }
            #expect(client.status(1) == GRPCStatus.unimplemented)
            #expect(client.trailers(1)?.first(name: "grpc-message")?.contains("Nope") == true)
            try await eventually("the reset that stops the client sending") { client.wasReset(1) != nil }
            // A unary path on the same connection still works.
            client.open(3, path: UnaryRoundTripTests.echo)
            client.data(3, framed([5]), endStream: true)
            try await eventually("the unary answer") { client.trailers(3) != nil }
            #expect(client.messages(3) == [[5]])
            await client.close()
        }
    }
}

/// SplitMix64: a small seeded generator, so the frame splits are the same every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
