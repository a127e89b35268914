import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import UnaryGRPC

/// HTTP2Codec byte for byte: a client made of raw frames on one side, a recorder of
/// what the codec passes to the gRPC layer on the other. The end-to-end behaviour (grpc-go,
/// etcdctl, swift-nio-http2's client) is covered by the other suites; these pin the protocol
/// rules and every error path.
@Suite("HTTP2Codec")
struct HTTP2CodecTests {
    struct Frame {
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32
        var payload: [UInt8]
    }

    /// What the codec handed inward.
    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        var frames: [HTTP2Frame] = []
        var closedStreams: [HTTP2StreamID] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            frames.append(unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let closed = event as? StreamClosedEvent { closedStreams.append(closed.streamID) }
        }
    }

    final class Connection {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        let errors = NIOLockedValueBox<[String]>([])
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        private var received: [UInt8] = []

        init(limits: HTTP2Codec.Limits = .init(concurrentStreamsMax: 100), handshake: Bool = true) throws {
            let errors = self.errors
            try channel.pipeline.syncOperations.addHandler(
                HTTP2Codec(limits: limits, onProtocolError: { reason in errors.withLockedValue { $0.append(reason) } }))
            try channel.pipeline.syncOperations.addHandler(recorder)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            if handshake {
                try send(HTTP2Codec.preface + Self.frame(4, 0, 0, []))
                _ = try frames()  // the server's SETTINGS, WINDOW_UPDATE and SETTINGS ack
            }
        }

        static func frame(_ type: UInt8, _ flags: UInt8, _ streamID: UInt32, _ payload: [UInt8]) -> [UInt8] {
            let length = payload.count
            return [UInt8(length >> 16), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
                + withUnsafeBytes(of: streamID.bigEndian) { Array($0) } + payload
        }

        func send(_ bytes: [UInt8]) throws {
            var buffer = channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            try channel.writeInbound(buffer)
            channel.pipeline.fireChannelReadComplete()
        }

        func send(_ type: UInt8, _ flags: UInt8, _ streamID: UInt32, _ payload: [UInt8]) throws {
            try send(Self.frame(type, flags, streamID, payload))
        }

        func headerBlock(_ headers: HPACKHeaders) throws -> [UInt8] {
            var buffer = ByteBuffer()
            try encoder.encode(headers: headers, to: &buffer)
            return Array(buffer.readableBytesView)
        }

        static let request: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": "/etcdserverpb.KV/Put", ":authority": "localhost",
            "content-type": "application/grpc", "te": "trailers",
        ]

        func open(_ streamID: UInt32, endStream: Bool = false) throws {
            try send(1, 0x4 | (endStream ? 0x1 : 0), streamID, headerBlock(Self.request))
        }

        /// The frames the server wrote since the last call.
        func frames() throws -> [Frame] {
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { received += buffer.readableBytesView }
            var frames: [Frame] = []
            while received.count >= 9 {
                let length = Int(received[0]) << 16 | Int(received[1]) << 8 | Int(received[2])
                guard received.count >= 9 + length else { break }
                let streamID = received[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF
                frames.append(Frame(type: received[3], flags: received[4], streamID: streamID, payload: Array(received[9..<9 + length])))
                received.removeFirst(9 + length)
            }
            return frames
        }

        func decode(_ block: [UInt8]) throws -> HPACKHeaders {
            var buffer = ByteBuffer()
            buffer.writeBytes(block)
            return try decoder.decodeHeaders(from: &buffer)
        }

        /// The GOAWAY the server ended with: its error code and debug text.
        func goAway() throws -> (code: UInt32, debug: String)? {
            guard let frame = try frames().last(where: { $0.type == 7 }) else { return nil }
            let code = frame.payload[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            return (code, String(decoding: frame.payload[8...], as: UTF8.self))
        }

        func respond(_ streamID: Int, body: [UInt8], trailersPromise: EventLoopPromise<Void>? = nil) {
            let id = HTTP2StreamID(streamID)
            channel.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: UnaryServerHandler.responseHeaders))), promise: nil)
            var buffer = ByteBuffer()
            buffer.writeBytes(body)
            channel.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(buffer)))), promise: nil)
            channel.write(
                HTTP2Frame(streamID: id, payload: .headers(.init(headers: UnaryServerHandler.okTrailers, endStream: true))),
                promise: trailersPromise)
            channel.flush()
        }
    }

    static func settings(_ pairs: [(UInt16, UInt32)]) -> [UInt8] {
        pairs.flatMap { identifier, value in
            withUnsafeBytes(of: identifier.bigEndian) { Array($0) } + withUnsafeBytes(of: value.bigEndian) { Array($0) }
        }
    }

    static func windowUpdate(_ increment: UInt32) -> [UInt8] { withUnsafeBytes(of: increment.bigEndian) { Array($0) } }

    @Test("the server's preface, SETTINGS acknowledged, PING answered with its payload")
    func handshake() throws {
        let connection = try Connection(handshake: false)
        let preface = try connection.frames()
        #expect(preface.map(\.type) == [4, 8])
        #expect(preface[0].payload == Self.settings([(0x3, 100), (0x4, 1 << 20), (0x6, UInt32(HPACKDecoder.defaultMaxHeaderListSize))]))
        #expect(preface[1].payload == Self.windowUpdate(UInt32((1 << 20) - 65_535)))
        try connection.send(HTTP2Codec.preface + Connection.frame(4, 0, 0, Self.settings([(0x4, 1000)])))
        #expect(try connection.frames().map { [$0.type, $0.flags] } == [[4, 1]])
        try connection.send(6, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8])
        let pong = try connection.frames()
        #expect(pong.count == 1 && pong[0].type == 6 && pong[0].flags == 1 && pong[0].payload == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(connection.channel.isActive)
    }

    @Test("a call: headers (across CONTINUATION, padded, with priority) and a padded body in; the answer out")
    func call() throws {
        let connection = try Connection()
        let block = try connection.headerBlock(Connection.request)
        // HEADERS with PADDED and PRIORITY, half the block; the rest in a CONTINUATION.
        let half = block.count / 2
        try connection.send(1, 0x8 | 0x20, 1, [3] + [0, 0, 0, 0, 16] + Array(block[..<half]) + [0, 0, 0])
        #expect(connection.recorder.frames.isEmpty)
        try connection.send(9, 0x4, 1, Array(block[half...]))
        try connection.send(0, 0x8 | 0x1, 1, [2, 0, 0, 0, 0, 1, 42, 0, 0])
        let inbound = connection.recorder.frames
        #expect(inbound.count == 2)
        guard case .headers(let headers) = inbound[0].payload, case .data(let data) = inbound[1].payload,
            case .byteBuffer(let body) = data.data
        else {
            Issue.record("unexpected frames \(inbound)")
            return
        }
        #expect(headers.headers == Connection.request && !headers.endStream)
        #expect(Array(body.readableBytesView) == [0, 0, 0, 0, 1, 42])
        #expect(data.endStream && data.paddingBytes == 3)

        connection.respond(1, body: [0, 0, 0, 0, 1, 7])
        let answer = try connection.frames()
        #expect(answer.map(\.type) == [1, 0, 1])
        #expect(answer.map(\.flags) == [0x4, 0, 0x5])
        #expect(try connection.decode(answer[0].payload) == UnaryServerHandler.responseHeaders)
        #expect(answer[1].payload == [0, 0, 0, 0, 1, 7])
        #expect(try connection.decode(answer[2].payload) == UnaryServerHandler.okTrailers)
        #expect(connection.recorder.closedStreams == [HTTP2StreamID(1)])
    }

    @Test("DATA waits for the stream's and the connection's windows and the frame size; trailers wait behind it")
    func flowControl() throws {
        let connection = try Connection()
        try connection.send(4, 0, 0, Self.settings([(0x4, 10)]))
        _ = try connection.frames()
        try connection.open(1, endStream: true)
        let written = NIOLockedValueBox(false)
        let promise = connection.channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenSuccess { written.withLockedValue { $0 = true } }
        connection.respond(1, body: Array(repeating: 7, count: 25), trailersPromise: promise)
        var frames = try connection.frames()
        #expect(frames.map(\.type) == [1, 0] && frames[1].payload.count == 10)
        #expect(!written.withLockedValue { $0 })
        try connection.send(8, 0, 1, Self.windowUpdate(10))
        frames = try connection.frames()
        #expect(frames.map(\.type) == [0] && frames[0].payload.count == 10)
        try connection.send(8, 0, 1, Self.windowUpdate(1000))
        frames = try connection.frames()
        #expect(frames.map(\.type) == [0, 1] && frames[0].payload.count == 5 && frames[1].flags == 0x5)
        #expect(written.withLockedValue { $0 })

        // The connection window (65,535 at first, 25 used) and 16 KiB frames.
        try connection.send(4, 0, 0, Self.settings([(0x4, 1 << 20)]))
        try connection.open(3, endStream: true)
        _ = try connection.frames()
        connection.respond(3, body: Array(repeating: 1, count: 70_000))
        frames = try connection.frames()
        #expect(frames.filter { $0.type == 0 }.map(\.payload.count) == [16_384, 16_384, 16_384, 16_358])
        #expect(!frames.contains { $0.flags & 0x1 != 0 })
        try connection.send(8, 0, 0, Self.windowUpdate(100_000))
        frames = try connection.frames()
        #expect(frames.map(\.type) == [0, 1] && frames[0].payload.count == 70_000 - 65_510 && frames[1].flags == 0x5)
    }

    @Test("a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS is refused and never reaches the gRPC layer")
    func refusedStream() throws {
        let connection = try Connection(limits: .init(concurrentStreamsMax: 2))
        try connection.open(1)
        try connection.open(3)
        try connection.open(5)
        let frames = try connection.frames()
        #expect(frames.map(\.type) == [3] && frames[0].streamID == 5 && frames[0].payload == [0, 0, 0, 7])
        #expect(connection.recorder.frames.map(\.streamID) == [HTTP2StreamID(1), HTTP2StreamID(3)])
        // Its DATA is dropped; the connection lives on.
        try connection.send(0, 0x1, 5, [0, 0, 0, 0, 0])
        #expect(connection.recorder.frames.count == 2 && connection.channel.isActive)
    }

    @Test("a client reset reaches the gRPC layer and fails what waited for the stream's window")
    func clientReset() throws {
        let connection = try Connection()
        try connection.send(4, 0, 0, Self.settings([(0x4, 0)]))
        try connection.open(1, endStream: true)
        let failed = NIOLockedValueBox(false)
        let promise = connection.channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { _ in failed.withLockedValue { $0 = true } }
        connection.respond(1, body: [1, 2, 3], trailersPromise: promise)
        try connection.send(3, 0, 1, [0, 0, 0, 8])
        #expect(failed.withLockedValue { $0 })
        guard case .rstStream(let code) = connection.recorder.frames.last?.payload else {
            Issue.record("no reset reached the gRPC layer")
            return
        }
        #expect(code == .cancel)
    }

    @Test("RST_STREAM(NO_ERROR) from the gRPC layer goes out after the stream's queued output")
    func resetAfterOutput() throws {
        let connection = try Connection()
        try connection.send(4, 0, 0, Self.settings([(0x4, 2)]))
        try connection.open(1)
        connection.respond(1, body: [1, 2, 3, 4])
        connection.channel.writeAndFlush(HTTP2Frame(streamID: 1, payload: .rstStream(.noError)), promise: nil)
        #expect(try connection.frames().map(\.type) == [4, 1, 0])
        try connection.send(8, 0, 1, Self.windowUpdate(10))
        #expect(try connection.frames().map(\.type) == [0, 1, 3])
    }

    /// Each case: bytes after the handshake, the GOAWAY code expected, words its debug text has.
    static let protocolErrors: [(String, [UInt8], UInt32, String)] = [
        ("DATA on stream 0", Connection.frame(0, 0, 0, [1]), 0x1, "DATA on stream 0"),
        ("DATA on an idle stream", Connection.frame(0, 0, 7, [1]), 0x1, "never opened"),
        ("a frame over 16 KiB", Connection.frame(0, 0, 1, Array(repeating: 0, count: 16_385)), 0x6, "frame size"),
        ("HEADERS on an even stream", Connection.frame(1, 0x4, 2, [0x82]), 0x1, "cannot open"),
        ("an interrupted header block", Connection.frame(1, 0, 1, [0x82]) + Connection.frame(6, 0, 0, Array(repeating: 0, count: 8)), 0x1, "interrupted"),
        ("CONTINUATION alone", Connection.frame(9, 0x4, 1, [0x82]), 0x1, "CONTINUATION without HEADERS"),
        ("a header block that does not decode", Connection.frame(1, 0x4, 1, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), 0x9, "does not decode"),
        ("PUSH_PROMISE", Connection.frame(5, 0x4, 1, [0, 0, 0, 2]), 0x1, "PUSH_PROMISE"),
        ("a PING of 4 bytes", Connection.frame(6, 0, 0, [1, 2, 3, 4]), 0x6, "PING frame of 4 bytes"),
        ("SETTINGS of 5 bytes", Connection.frame(4, 0, 0, [0, 4, 0, 0, 1]), 0x6, "SETTINGS frame of 5 bytes"),
        ("a bad MAX_FRAME_SIZE", Connection.frame(4, 0, 0, settings([(0x5, 100)])), 0x1, "MAX_FRAME_SIZE"),
        ("an INITIAL_WINDOW_SIZE over 2^31-1", Connection.frame(4, 0, 0, settings([(0x4, 1 << 31)])), 0x3, "INITIAL_WINDOW_SIZE"),
        ("a WINDOW_UPDATE of 0", Connection.frame(8, 0, 0, windowUpdate(0)), 0x1, "WINDOW_UPDATE of 0"),
        ("a connection window over 2^31-1", Connection.frame(8, 0, 0, windowUpdate(0x7FFF_FFFF)), 0x3, "2^31-1"),
        ("RST_STREAM on an idle stream", Connection.frame(3, 0, 9, [0, 0, 0, 8]), 0x1, "never opened"),
        ("GOAWAY on a stream", Connection.frame(7, 0, 1, [0, 0, 0, 0, 0, 0, 0, 0]), 0x1, "GOAWAY on stream 1"),
    ]

    @Test("protocol errors end the connection with GOAWAY saying what was wrong", arguments: 0..<protocolErrors.count)
    func protocolError(_ index: Int) throws {
        let (name, bytes, code, words) = Self.protocolErrors[index]
        let connection = try Connection()
        try connection.send(bytes)
        let goAway = try connection.goAway()
        #expect(goAway?.code == code, "\(name)")
        #expect(goAway?.debug.contains(words) == true, "\(name): \(goAway?.debug ?? "no GOAWAY")")
        #expect(connection.errors.withLockedValue { $0 } == [goAway?.debug ?? ""], "\(name)")
        #expect(!connection.channel.isActive, "\(name)")
    }

    @Test("a connection that does not start with the preface, or not with SETTINGS, is refused")
    func badStart() throws {
        let wrong = try Connection(handshake: false)
        try wrong.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try wrong.goAway()?.debug.contains("preface") == true)
        let noSettings = try Connection(handshake: false)
        try noSettings.send(HTTP2Codec.preface + Connection.frame(6, 0, 0, Array(repeating: 0, count: 8)))
        #expect(try noSettings.goAway()?.debug.contains("not followed by SETTINGS") == true)
    }

    @Test("floods of PINGs, resets or an endless header block end the connection with ENHANCE_YOUR_CALM")
    func floods() throws {
        var limits = HTTP2Codec.Limits(concurrentStreamsMax: 100)
        limits.controlFramesMax = 5
        limits.resetsMax = 3
        let pings = try Connection(limits: limits)
        // The handshake's SETTINGS was the first control frame.
        for _ in 0..<4 { try pings.send(6, 0, 0, Array(repeating: 0, count: 8)) }
        #expect(pings.channel.isActive)
        try pings.send(6, 0, 0, Array(repeating: 0, count: 8))
        #expect(try pings.goAway()?.code == 0xB)

        let resets = try Connection(limits: limits)
        for streamID in stride(from: UInt32(1), through: 7, by: 2) {
            try resets.open(streamID)
            try resets.send(3, 0, streamID, [0, 0, 0, 8])
        }
        #expect(try resets.goAway()?.code == 0xB)

        let endless = try Connection()
        try endless.send(1, 0, 1, [0x82])
        for _ in 0..<(2 * HPACKDecoder.defaultMaxHeaderListSize / 16_000 + 1) {
            try endless.send(9, 0, 1, Array(repeating: 0x82, count: 16_000))
        }
        #expect(try endless.goAway()?.code == 0xB)
    }

    @Test(
        "random damage to a valid conversation never crashes the codec; it ends with GOAWAY or carries on",
        arguments: [UInt64](1...4))
    func damagedInput(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        // One encoder for the template; every connection's decoder sees the blocks in the
        // same order, so undamaged blocks decode.
        let template = try Connection()
        var valid: [UInt8] = []
        for streamID in stride(from: UInt32(1), through: 9, by: 2) {
            valid += Connection.frame(1, 0x4, streamID, try template.headerBlock(Connection.request))
            valid += Connection.frame(0, 0x1, streamID, [0, 0, 0, 0, 2, 8, 1])
            valid += Connection.frame(8, 0, streamID, Self.windowUpdate(100))
        }
        valid += Connection.frame(6, 0, 0, Array(repeating: 9, count: 8))
        var closed = 0
        for round in 0..<50 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: 0..<bytes.count, using: &random)
                bytes[position] = UInt8.random(in: 0...255, using: &random)
            }
            let connection = try Connection()
            var offset = 0
            while offset < bytes.count {
                let step = Int.random(in: 1...64, using: &random)
                try connection.send(Array(bytes[offset..<Swift.min(offset + step, bytes.count)]))
                offset += step
            }
            let frames = try connection.frames()
            if !connection.channel.isActive {
                closed += 1
                #expect(frames.last?.type == 7, "seed \(seed), round \(round): closed without GOAWAY")
                #expect(connection.errors.withLockedValue { $0.count } == 1, "seed \(seed), round \(round)")
            }
        }
        #expect(closed > 0, "seed \(seed): no damage was ever noticed, so this test checks nothing")
    }

    // MARK: - The client role, against swift-nio-http2's server

    /// Answers every request at the frame level: response headers, the request body echoed,
    /// OK trailers.
    final class EchoServer: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        typealias OutboundOut = HTTP2Frame
        var bodies: [HTTP2StreamID: ByteBuffer] = [:]

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            guard case .data(let payload) = frame.payload, case .byteBuffer(var bytes) = payload.data else { return }
            // Frame-level swift-nio-http2 returns no credit by itself.
            if bytes.readableBytes > 0 {
                for streamID in payload.endStream ? [.rootStream] : [HTTP2StreamID.rootStream, frame.streamID] {
                    context.write(
                        wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: bytes.readableBytes))),
                        promise: nil)
                }
                context.flush()
            }
            bodies[frame.streamID, default: ByteBuffer()].writeBuffer(&bytes)
            guard payload.endStream else { return }
            let body = bodies.removeValue(forKey: frame.streamID)!
            context.write(
                wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: UnaryServerHandler.responseHeaders)))),
                promise: nil)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .data(.init(data: .byteBuffer(body))))), promise: nil)
            context.writeAndFlush(
                wrapOutboundOut(
                    HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: UnaryServerHandler.okTrailers, endStream: true)))),
                promise: nil)
        }
    }

    final class ClientPair {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        let recorder = Recorder()

        init(serverStreamsMax: Int = 100) throws {
            try client.pipeline.syncOperations.addHandler(HTTP2Codec(role: .client, limits: .init(concurrentStreamsMax: 0)))
            try client.pipeline.syncOperations.addHandler(recorder)
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: serverStreamsMax)]
            try server.pipeline.syncOperations.addHandler(
                NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: .init()))
            try server.pipeline.syncOperations.addHandler(EchoServer())
            try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try shuttle()
        }

        /// Moves bytes both ways until neither side has more to say.
        func shuttle() throws {
            var moved = true
            while moved {
                moved = false
                while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                    try server.writeInbound(bytes)
                    moved = true
                }
                server.pipeline.fireChannelReadComplete()
                while let bytes = try server.readOutbound(as: IOData.self) {
                    guard case .byteBuffer(let buffer) = bytes else { continue }
                    try client.writeInbound(buffer)
                    moved = true
                }
                client.pipeline.fireChannelReadComplete()
            }
        }

        func call(_ streamID: Int, body: [UInt8]) {
            let id = HTTP2StreamID(streamID)
            client.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: Connection.request))), promise: nil)
            var buffer = ByteBuffer()
            buffer.writeBytes(body)
            client.writeAndFlush(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(buffer), endStream: true))), promise: nil)
        }
    }

    @Test("the client codec talks to swift-nio-http2's server: calls, large bodies both ways, streams closed")
    func clientAgainstSwiftNIOHTTP2() throws {
        let pair = try ClientPair()
        pair.call(1, body: [1, 2, 3])
        let large = (0..<200_000).map { UInt8(truncatingIfNeeded: $0) }
        pair.call(3, body: large)
        try pair.shuttle()
        var bodies: [HTTP2StreamID: [UInt8]] = [:]
        var trailers: [HTTP2StreamID: HPACKHeaders] = [:]
        for frame in pair.recorder.frames {
            switch frame.payload {
            case .headers(let headers) where headers.endStream: trailers[frame.streamID] = headers.headers
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { bodies[frame.streamID, default: []] += bytes.readableBytesView }
            default: break
            }
        }
        #expect(bodies[1] == [1, 2, 3])
        let largeArrived = bodies[3] == large
        #expect(largeArrived, "\(bodies[3]?.count ?? 0) of \(large.count) bytes came back")
        #expect(trailers[1] == UnaryServerHandler.okTrailers && trailers[3] == UnaryServerHandler.okTrailers)
        #expect(Set(pair.recorder.closedStreams) == [HTTP2StreamID(1), HTTP2StreamID(3)])
        #expect(pair.client.isActive && pair.server.isActive)
    }

    @Test("the client opens no more streams than the server's SETTINGS_MAX_CONCURRENT_STREAMS; the extra call is refused at once")
    func clientStreamLimit() throws {
        let pair = try ClientPair(serverStreamsMax: 1)
        pair.call(1, body: [1])
        pair.call(3, body: [2])
        guard case .rstStream(let code) = pair.recorder.frames.last?.payload, pair.recorder.frames.last?.streamID == 3 else {
            Issue.record("stream 3 was not refused: \(pair.recorder.frames)")
            return
        }
        #expect(code == .refusedStream)
        try pair.shuttle()
        pair.call(5, body: [3])
        try pair.shuttle()
        #expect(pair.recorder.closedStreams == [HTTP2StreamID(1), HTTP2StreamID(5)])
        #expect(pair.client.isActive && pair.server.isActive)
    }

    @Test("a server that answers on a stream the client never opened breaks the protocol")
    func clientRefusesServerStreams() throws {
        let client = EmbeddedChannel()
        let errors = NIOLockedValueBox<[String]>([])
        try client.pipeline.syncOperations.addHandler(
            HTTP2Codec(role: .client, limits: .init(concurrentStreamsMax: 0), onProtocolError: { reason in errors.withLockedValue { $0.append(reason) } }))
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var sent: [UInt8] = []
        while let buffer = try client.readOutbound(as: ByteBuffer.self) { sent += buffer.readableBytesView }
        #expect(Array(sent.prefix(24)) == HTTP2Codec.preface)
        var bytes = ByteBuffer()
        bytes.writeBytes(Connection.frame(4, 0, 0, []) + Connection.frame(1, 0x4, 3, [0x88]))
        try client.writeInbound(bytes)
        #expect(errors.withLockedValue { $0 }.first?.contains("never opened") == true)
        #expect(!client.isActive)
    }
}
