#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOPosix
import Testing

@testable import UnaryGRPC

@Suite("gRPC wire pieces")
struct GRPCWireTests {
    @Test("grpc-message percent-encoding round-trips and escapes only what it must")
    func messageEncoding() {
        let message = "héllo 100% done\nnext"
        let encoded = GRPCMessageEncoding.encode(message)
        #expect(encoded == "h%C3%A9llo 100%25 done%0Anext")
        #expect(GRPCMessageEncoding.decode(encoded) == message)
        #expect(GRPCMessageEncoding.decode("plain") == "plain")
        #expect(GRPCMessageEncoding.decode("bad %zz and %4") == "bad %zz and %4")
    }

    @Test("a unary body is exactly one uncompressed length-prefixed message")
    func unframe() throws {
        let allocator = ByteBufferAllocator()
        let good = GRPCWire.frame([1, 2, 3], allocator: allocator)
        #expect(try GRPCWire.unframe(good).get() == [1, 2, 3])
        #expect(try GRPCWire.unframe(GRPCWire.frame([], allocator: allocator)).get() == [])

        var short = ByteBuffer()
        short.writeBytes([0, 0, 0])
        #expect(failure(GRPCWire.unframe(short))?.code == GRPCStatus.internalError)

        var compressed = ByteBuffer()
        compressed.writeBytes([1, 0, 0, 0, 1, 42])
        #expect(failure(GRPCWire.unframe(compressed))?.code == GRPCStatus.unimplemented)

        var truncated = ByteBuffer()
        truncated.writeBytes([0, 0, 0, 0, 5, 1, 2])
        #expect(failure(GRPCWire.unframe(truncated))?.code == GRPCStatus.internalError)

        var twoMessages = good
        twoMessages.writeImmutableBuffer(good)
        #expect(failure(GRPCWire.unframe(twoMessages))?.code == GRPCStatus.internalError)
    }

    @Test("grpc-timeout values parse, malformed ones are ignored")
    func timeout() {
        #expect(GRPCWire.timeout("100m") == .milliseconds(100))
        #expect(GRPCWire.timeout("5S") == .seconds(5))
        #expect(GRPCWire.timeout("2M") == .seconds(120))
        #expect(GRPCWire.timeout("1H") == .seconds(3600))
        #expect(GRPCWire.timeout("7u") == .microseconds(7))
        #expect(GRPCWire.timeout("9n") == .nanoseconds(9))
        #expect(GRPCWire.timeout("12x") == nil)
        #expect(GRPCWire.timeout("m") == nil)
        #expect(GRPCWire.timeout("") == nil)
        #expect(GRPCWire.timeout("123456789m") == nil)
        #expect(GRPCWire.timeout("-1S") == nil)
        #expect(GRPCWire.timeout(GRPCWire.timeoutHeader(.seconds(3))) == .seconds(3))
        #expect(GRPCWire.timeoutHeader(.nanoseconds(1)) == "1m")
    }

    private func failure(_ result: Result<[UInt8], GRPCStatus>) -> GRPCStatus? {
        if case .failure(let status) = result { return status }
        return nil
    }
}

@Suite("UnaryServer and UnaryClientConnection over loopback")
struct UnaryRoundTripTests {
    static let echo = "/test.Echo/Echo"
    static let fail = "/test.Echo/Fail"
    static let never = "/test.Echo/Never"
    static let big = "/test.Echo/Big"
    static let header = "/test.Echo/Header"

    /// Echo, a failure with a non-ASCII message, a method that never answers, a 2 MiB
    /// answer (twice the stream window), and one that returns a request header.
    static let methods: [String: UnaryMethod] = [
        echo: { call in call.responder.respond { .success(call.payload) } },
        fail: { call in call.responder.fail(GRPCStatus(code: 9, message: "nope: ünïcode\nline")) },
        never: { _ in },
        big: { call in
            call.responder.respond { .success((0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }) }
        },
        header: { call in
            call.responder.respond { .success(Array((call.metadata.first(name: "x-test") ?? "-").utf8)) }
        },
    ]

    func withServer(
        requestBytesMax: Int = 8 << 20,
        connectionBufferedBytesMax: Int = 64 << 20,
        _ body: (UnaryServer, UnaryClientConnection) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var options = UnaryServer.Options()
        options.requestBytesMax = requestBytesMax
        options.connectionBufferedBytesMax = connectionBufferedBytesMax
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: group, methods: Self.methods, options: options)
        let port = try #require(server.localAddress?.port)
        let client = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
        do {
            try await body(server, client)
        } catch {
            await client.close()
            await server.close()
            try await group.shutdownGracefully()
            throw error
        }
        await client.close()
        await server.close()
        try await group.shutdownGracefully()
    }

    func status(of body: () async throws -> [UInt8]) async -> GRPCStatus? {
        do {
            _ = try await body()
            return nil
        } catch {
            return error as? GRPCStatus
        }
    }

    @Test("calls succeed, fail with their status, and time out", .timeLimit(.minutes(1)))
    func basics() async throws {
        try await withServer { _, client in
            #expect(try await client.call(path: Self.echo, message: [1, 2, 3], timeout: .seconds(5)) == [1, 2, 3])
            #expect(try await client.call(path: Self.echo, message: [], timeout: .seconds(5)) == [])
            let header = try await client.call(
                path: Self.header, message: [], metadata: [("x-test", "value-1")], timeout: .seconds(5))
            #expect(String(decoding: header, as: UTF8.self) == "value-1")

            let failed = await status { try await client.call(path: Self.fail, message: [], timeout: .seconds(5)) }
            #expect(failed == GRPCStatus(code: 9, message: "nope: ünïcode\nline"))

            let unknown = await status { try await client.call(path: "/test.Echo/Nope", message: [], timeout: .seconds(5)) }
            #expect(unknown?.code == GRPCStatus.unimplemented)
            #expect(unknown?.message.contains("/test.Echo/Nope") == true)

            let slow = await status { try await client.call(path: Self.never, message: [], timeout: .milliseconds(200)) }
            #expect(slow?.code == GRPCStatus.deadlineExceeded)

            // The connection is still good after all of that.
            #expect(try await client.call(path: Self.echo, message: [9], timeout: .seconds(5)) == [9])
        }
    }

    @Test("hundreds of calls in flight on one connection, above HTTP/2's usual 100 streams", .timeLimit(.minutes(1)))
    func manyInFlight() async throws {
        try await withServer { _, client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<600 {
                    group.addTask {
                        let payload = Array(String(index).utf8)
                        let answer = try await client.call(path: Self.echo, message: payload, timeout: .seconds(20))
                        #expect(answer == payload)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("bodies larger than the flow-control windows arrive whole, both ways", .timeLimit(.minutes(1)))
    func flowControl() async throws {
        try await withServer { _, client in
            let request = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            #expect(try await client.call(path: Self.echo, message: request, timeout: .seconds(20)) == request)
            let big = try await client.call(path: Self.big, message: [], timeout: .seconds(20))
            #expect(big == (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            // Enough round trips that the connection window must have been replenished.
            for _ in 0..<4 {
                let answer = try await client.call(path: Self.echo, message: request, timeout: .seconds(20))
                #expect(answer.count == request.count)
            }
        }
    }

    @Test("a request above the server's limit gets RESOURCE_EXHAUSTED; the connection lives on", .timeLimit(.minutes(1)))
    func tooLarge() async throws {
        try await withServer(requestBytesMax: 1024) { _, client in
            let tooLarge = await status {
                try await client.call(path: Self.echo, message: [UInt8](repeating: 7, count: 300_000), timeout: .seconds(5))
            }
            #expect(tooLarge?.code == GRPCStatus.resourceExhausted)
            #expect(tooLarge?.message.contains("1024") == true)
            let atLimit = try await client.call(
                path: Self.echo, message: [UInt8](repeating: 1, count: 1024), timeout: .seconds(5))
            #expect(atLimit.count == 1024)
        }
    }

    @Test("concurrent large requests beyond the connection's buffer bound are refused, never stalled", .timeLimit(.minutes(1)))
    func connectionBufferBound() async throws {
        try await withServer(requestBytesMax: 1 << 20, connectionBufferedBytesMax: 3 << 19) { _, client in
            let request = [UInt8](repeating: 3, count: (1 << 20) - 64)
            let outcomes = try await withThrowingTaskGroup(of: GRPCStatus?.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        do {
                            let answer = try await client.call(path: Self.echo, message: request, timeout: .seconds(20))
                            #expect(answer == request)
                            return nil
                        } catch let status as GRPCStatus {
                            return status
                        }
                    }
                }
                var outcomes: [GRPCStatus?] = []
                for try await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            #expect(outcomes.count == 8)
            for case let status? in outcomes {
                #expect(status.code == GRPCStatus.resourceExhausted)
                #expect(status.message.contains("at once"))
            }
            // Alone, the same request fits; the connection is intact.
            #expect(try await client.call(path: Self.echo, message: request, timeout: .seconds(20)) == request)
        }
    }

    @Test("a graceful shutdown lets calls in flight finish and refuses new connections", .timeLimit(.minutes(1)))
    func gracefulShutdown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let gate = AnswerGate()
        let methods: [String: UnaryMethod] = ["/test.Echo/Held": { call in gate.hold(call) }]
        // The drain ends when the held call is answered; the timeout only has to outlast this
        // task's waits, which on a loaded machine may take seconds each.
        var options = UnaryServer.Options()
        options.drainTimeout = .seconds(50)
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: group, methods: methods, options: options)
        let port = try #require(server.localAddress?.port)
        let client = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
        async let answer = client.call(path: "/test.Echo/Held", message: [5], timeout: .seconds(10))
        async let stopped: Void = server.run()
        while gate.count == 0 { try await Task.sleep(for: .milliseconds(10)) }
        server.beginGracefulShutdown()
        try await Task.sleep(for: .milliseconds(100))
        gate.releaseAll()
        #expect(try await answer == [5])
        try await stopped
        await #expect(throws: (any Error).self) {
            _ = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
        }
        await client.close()
        try await group.shutdownGracefully()
    }
}

/// Holds calls until released, to have calls in flight at a chosen moment.
final class AnswerGate: @unchecked Sendable {
    private let lock = NIOLock()
    private var held: [UnaryCall] = []

    var count: Int { lock.withLock { held.count } }

    func hold(_ call: UnaryCall) {
        lock.withLock { held.append(call) }
    }

    func releaseAll() {
        let calls = lock.withLock { held }
        for call in calls { call.responder.respond { .success(call.payload) } }
    }
}

@Suite("UnaryServer connection bound")
struct ConnectionBoundTests {
    @Test("connections beyond connectionsMax are closed at once; the admitted ones keep working")
    func connectionsMax() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var options = UnaryServer.Options()
        options.connectionsMax = 2
        let server = try await UnaryServer.bind(host: "127.0.0.1", port: 0, group: group, methods: [:], options: options)
        let port = try #require(server.localAddress?.port)
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        for _ in 0..<3 {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(connected == 0)
            sockets.append(descriptor)
            try await Task.sleep(for: .milliseconds(100))
        }
        // The third connection was closed by the server: a read returns end of file.
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(sockets[2], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        #expect(recv(sockets[2], &byte, 1, 0) == 0, "the connection over the bound was not closed")
        // The first is still open: a read times out (no EOF).
        setsockopt(sockets[0], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        #expect(recv(sockets[0], &byte, 1, Int32(MSG_DONTWAIT)) == -1, "an admitted connection was closed")
        server.beginGracefulShutdown()
        try await server.run()
        try await group.shutdownGracefully()
    }
}
