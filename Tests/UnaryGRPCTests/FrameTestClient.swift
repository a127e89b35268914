import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Testing

@testable import UnaryGRPC

/// A gRPC client at the HTTP/2 frame level, for streaming tests: the test chooses every
/// frame (messages split across DATA frames or several in one, resets, half-closes) and
/// whether flow-control credit is returned at all (a client that does not read).
final class FrameTestClient: Sendable {
    let channel: Channel
    let recorder: FrameRecorder

    private init(channel: Channel, recorder: FrameRecorder) {
        self.channel = channel
        self.recorder = recorder
    }

    /// Connects with prior knowledge. `streamWindowBytes` is the client's initial stream
    /// window; with `returnsCredit` false no WINDOW_UPDATE is ever sent, so the server can
    /// send at most 65,535 bytes (the connection's initial window).
    static func connect(
        port: Int, group: EventLoopGroup, streamWindowBytes: Int = 1 << 20, returnsCredit: Bool = true
    ) async throws -> FrameTestClient {
        let recorder = FrameRecorder(returnsCredit: returnsCredit)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    var connection = NIOHTTP2Handler.ConnectionConfiguration()
                    connection.initialSettings = [
                        HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
                        HTTP2Setting(parameter: .initialWindowSize, value: streamWindowBytes),
                    ]
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOHTTP2Handler(mode: .client, connectionConfiguration: connection, streamConfiguration: .init()))
                    try sync.addHandler(FrameRecorderHandler(recorder: recorder))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return FrameTestClient(channel: channel, recorder: recorder)
    }

    func open(_ streamID: Int, path: String, metadata: [(String, String)] = [], endStream: Bool = false) {
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": path, ":authority": "localhost",
            "content-type": GRPCWire.contentType, "te": "trailers",
        ]
        for (name, value) in metadata { headers.add(name: name, value: value) }
        write(HTTP2Frame(streamID: HTTP2StreamID(streamID), payload: .headers(.init(headers: headers, endStream: endStream))))
    }

    /// One DATA frame with exactly `bytes` (the test frames messages itself).
    func data(_ streamID: Int, _ bytes: [UInt8], endStream: Bool = false) {
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes)
        write(HTTP2Frame(streamID: HTTP2StreamID(streamID), payload: .data(.init(data: .byteBuffer(buffer), endStream: endStream))))
    }

    func reset(_ streamID: Int) {
        write(HTTP2Frame(streamID: HTTP2StreamID(streamID), payload: .rstStream(.cancel)))
    }

    /// Opens the windows wide and returns credit from now on.
    func startReading() {
        recorder.returnsCredit.withLockedValue { $0 = true }
        write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: 64 << 20)))
        for streamID in recorder.streamIDs() {
            write(HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: 64 << 20)))
        }
    }

    func write(_ frame: HTTP2Frame) {
        channel.writeAndFlush(frame, promise: nil)
    }

    /// The messages the server sent on `streamID` so far.
    func messages(_ streamID: Int) -> [[UInt8]] {
        var body = recorder.body(HTTP2StreamID(streamID))
        var messages: [[UInt8]] = []
        while case .success(let message?) = GRPCWire.nextMessage(&body, messageBytesMax: .max) { messages.append(message) }
        return messages
    }

    /// The headers of the frame that ended `streamID` from the server's side, if it came.
    func trailers(_ streamID: Int) -> HPACKHeaders? { recorder.trailers(HTTP2StreamID(streamID)) }

    func wasReset(_ streamID: Int) -> HTTP2ErrorCode? { recorder.resets(HTTP2StreamID(streamID)) }

    func status(_ streamID: Int) -> Int? { trailers(streamID)?.first(name: "grpc-status").flatMap { Int($0) } }

    func close() async { try? await channel.close() }
}

/// Polls `condition` until it holds (or fails the test after `timeout`).
func eventually(
    _ what: String, timeout: Duration = .seconds(10), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting for \(what)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// What the client received, per stream.
final class FrameRecorder: Sendable {
    struct Received {
        var body = ByteBuffer()
        var trailers: HPACKHeaders?
        var reset: HTTP2ErrorCode?
    }

    let returnsCredit: NIOLockedValueBox<Bool>
    private let streams = NIOLockedValueBox<[HTTP2StreamID: Received]>([:])

    init(returnsCredit: Bool) {
        self.returnsCredit = NIOLockedValueBox(returnsCredit)
    }

    func record(_ frame: HTTP2Frame) {
        streams.withLockedValue { streams in
            switch frame.payload {
            case .headers(let headers) where headers.endStream:
                streams[frame.streamID, default: Received()].trailers = headers.headers
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { streams[frame.streamID, default: Received()].body.writeImmutableBuffer(bytes) }
            case .rstStream(let code):
                streams[frame.streamID, default: Received()].reset = code
            default:
                break
            }
        }
    }

    func body(_ streamID: HTTP2StreamID) -> ByteBuffer { streams.withLockedValue { $0[streamID]?.body ?? ByteBuffer() } }
    func trailers(_ streamID: HTTP2StreamID) -> HPACKHeaders? { streams.withLockedValue { $0[streamID]?.trailers } }
    func resets(_ streamID: HTTP2StreamID) -> HTTP2ErrorCode? { streams.withLockedValue { $0[streamID]?.reset } }
    func streamIDs() -> [HTTP2StreamID] { streams.withLockedValue { $0.keys.sorted() } }
}

final class FrameRecorderHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    let recorder: FrameRecorder

    init(recorder: FrameRecorder) {
        self.recorder = recorder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        recorder.record(frame)
        if case .data(let data) = frame.payload, recorder.returnsCredit.withLockedValue({ $0 }) {
            let bytes = data.data.readableBytes + (data.paddingBytes ?? 0)
            if bytes > 0 {
                context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: bytes))), promise: nil)
                if !data.endStream {
                    context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .windowUpdate(windowSizeIncrement: bytes))), promise: nil)
                }
                context.flush()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Stream-level errors (a frame on a stream the server closed) are expected in tests.
    }
}
