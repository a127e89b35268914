import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import UnaryGRPC

/// A raw TCP client: writes bytes, keeps everything it receives as text.
final class RawTestClient: Sendable {
    let channel: Channel
    let received: NIOLockedValueBox<String>

    private init(channel: Channel, received: NIOLockedValueBox<String>) {
        self.channel = channel
        self.received = received
    }

    static func connect(port: Int, group: EventLoopGroup, reads: Bool = true) async throws -> RawTestClient {
        let received = NIOLockedValueBox("")
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.autoRead, value: reads)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(received: received))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawTestClient(channel: channel, received: received)
    }

    func send(_ text: String) {
        channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
    }

    var text: String { received.withLockedValue { $0 } }

    func close() async { try? await channel.close() }

    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<String>
        init(received: NIOLockedValueBox<String>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data))
            received.withLockedValue { $0 += text }
        }
    }
}

@Suite("HTTP/1.1 beside gRPC on the same port")
struct HTTP1Tests {
    /// `/health` answers at once; `/events` streams three server-sent events then keeps the
    /// stream open until the client goes away; `/flood` writes until the queue refuses.
    final class Application: Sendable {
        let closed = NIOLockedValueBox(0)
        let floodRefused = NIOLockedValueBox<Int?>(nil)
        let floodStream = NIOLockedValueBox<HTTPBodyStream?>(nil)
        /// The largest `queuedBytes` seen right after a refusal.
        let queuedAtRefusal = NIOLockedValueBox(0)

        var handler: HTTPHandler {
            { request in
                switch request.path {
                case "/health":
                    request.responder.respond(
                        status: 200, contentType: "application/json",
                        body: Array("{\"health\":\"true\",\"uri\":\"\(request.uri)\"}".utf8),
                        headers: [("x-agent", request.header("User-Agent") ?? "-")])
                case "/events":
                    let stream = request.responder.startStream(onClose: { self.closed.withLockedValue { $0 += 1 } })
                    let queue = DispatchQueue(label: "events")
                    for index in 1...3 {
                        queue.asyncAfter(deadline: .now() + .milliseconds(20 * index)) {
                            #expect(stream.sendEvent("tick \(index)\nline two", event: "tick", id: "\(index)"))
                        }
                    }
                case "/flood":
                    let stream = request.responder.startStream(contentType: "application/octet-stream")
                    self.floodStream.withLockedValue { $0 = stream }
                    DispatchQueue.global().async {
                        let accepted = sendUntilStalled {
                            let accepted = stream.write([UInt8](repeating: 7, count: 1024))
                            if !accepted {
                                let queued = stream.queuedBytes
                                self.queuedAtRefusal.withLockedValue { $0 = max($0, queued) }
                            }
                            return accepted
                        }
                        self.floodRefused.withLockedValue { $0 = accepted }
                    }
                default:
                    request.responder.respond(status: 404, contentType: "text/plain", body: Array("no \(request.path)\n".utf8))
                }
            }
        }
    }

    func withServer(
        http: HTTPHandler?, options: UnaryServer.Options = UnaryServer.Options(),
        _ body: (Int, EventLoopGroup) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: group, methods: UnaryRoundTripTests.methods, http: http, options: options)
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

    @Test("GET on the gRPC port gets the application's answer; keep-alive serves a second one", .timeLimit(.minutes(1)))
    func get() async throws {
        let application = Application()
        try await withServer(http: application.handler) { port, group in
            let client = try await RawTestClient.connect(port: port, group: group)
            client.send("GET /health?serializable=true HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n")
            try await eventually("the response") { client.text.contains("\"uri\":\"/health?serializable=true\"}") }
            #expect(client.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(client.text.lowercased().contains("content-type: application/json\r\n"))
            #expect(client.text.lowercased().contains("x-agent: probe/1\r\n"))
            let body = "{\"health\":\"true\",\"uri\":\"/health?serializable=true\"}"
            #expect(client.text.lowercased().contains("content-length: \(body.utf8.count)\r\n"))
            #expect(client.text.hasSuffix("\r\n\r\n" + body))

            // HEAD: the same headers, no body (or the next response would be misread).
            let before = client.text.count
            client.send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try await eventually("the HEAD response") { client.text.count > before && client.text.hasSuffix("\r\n\r\n") }
            let headBody = "{\"health\":\"true\",\"uri\":\"/health\"}"
            #expect(String(client.text.dropFirst(before)).lowercased().contains("content-length: \(headBody.utf8.count)\r\n"))
            #expect(!client.text.dropFirst(before).contains(headBody))

            client.send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            try await eventually("the third response") { client.text.contains("no /nope\n") }
            #expect(client.text.hasSuffix("\r\n\r\nno /nope\n"))
            #expect(client.text.contains("HTTP/1.1 404 Not Found\r\n"))
            await client.close()

            // gRPC on the same port, same server.
            let grpc = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
            #expect(try await grpc.call(path: UnaryRoundTripTests.echo, message: [4, 2], timeout: .seconds(5)) == [4, 2])
            await grpc.close()
        }
    }

    @Test("without an HTTP handler, HTTP/1.1 gets a clean 404 and gRPC works", .timeLimit(.minutes(1)))
    func noHandler() async throws {
        try await withServer(http: nil) { port, group in
            let client = try await RawTestClient.connect(port: port, group: group)
            client.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try await eventually("the 404") { client.text.contains("speaks gRPC") }
            #expect(client.text.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            try await client.channel.closeFuture.get()
            let grpc = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
            #expect(try await grpc.call(path: UnaryRoundTripTests.echo, message: [1], timeout: .seconds(5)) == [1])
            await grpc.close()
        }
    }

    @Test("server-sent events arrive as they are written; the application learns when the client left", .timeLimit(.minutes(1)))
    func serverSentEvents() async throws {
        let application = Application()
        try await withServer(http: application.handler) { port, group in
            let client = try await RawTestClient.connect(port: port, group: group)
            client.send("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            try await eventually("three events") { client.text.contains("data: tick 3\n") }
            #expect(client.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(client.text.lowercased().contains("content-type: text/event-stream\r\n"))
            #expect(client.text.lowercased().contains("transfer-encoding: chunked\r\n"))
            #expect(client.text.contains("event: tick\nid: 2\ndata: tick 2\ndata: line two\n\n"))
            #expect(application.closed.withLockedValue { $0 } == 0)
            await client.close()
            try await eventually("onClose") { application.closed.withLockedValue { $0 } == 1 }
        }
    }

    @Test("a streamed response to a client that does not read stops at its queue bound", .timeLimit(.minutes(1)))
    func streamBound() async throws {
        let application = Application()
        var options = UnaryServer.Options()
        options.httpLimits.streamQueuedBytesMax = 256 << 10
        try await withServer(http: application.handler, options: options) { port, group in
            let client = try await RawTestClient.connect(port: port, group: group, reads: false)
            client.send("GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
            try await eventually("the writer to stall") { application.floodRefused.withLockedValue { $0 } != nil }
            let stream = try #require(application.floodStream.withLockedValue { $0 })
            // Refused for 200 ms in a row: the writer was stopped. What it got in went to the
            // kernel's buffers (loopback: up to 4 MiB to send, 32 MiB to receive, growing as
            // TCP autotunes them, so the queue may drain a little after the stall) or waits
            // in the queue, within its bound. Without a bound it would run to its cap.
            let accepted = try #require(application.floodRefused.withLockedValue { $0 })
            #expect(accepted * 1024 <= options.httpLimits.streamQueuedBytesMax + (40 << 20))
            #expect(stream.queuedBytes <= options.httpLimits.streamQueuedBytesMax)
            // The refusals came from the bound, not from a closed stream.
            #expect(application.queuedAtRefusal.withLockedValue { $0 } > options.httpLimits.streamQueuedBytesMax - 2048)
            #expect(stream.isOpen)
            await client.close()
            try await eventually("the stream's end") { !stream.isOpen }
            #expect(!stream.write([1]))
        }
    }
}
