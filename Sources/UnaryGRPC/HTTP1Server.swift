import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One HTTP/1.1 request on the gRPC port (etcd serves `/metrics`, `/health`, `/version`
/// there). The body, if any, is dropped. Answer exactly once through `responder`, from any
/// thread: with `respond`, or with `startStream` for a response written over time.
public struct HTTPRequest: Sendable {
    /// `GET`, `POST`, …
    public let method: String
    /// The request target as sent (`/metrics?x=1`).
    public let uri: String
    public let headers: [(name: String, value: String)]
    public let responder: HTTPResponder

    /// `uri` without its query.
    public var path: Substring { uri.prefix { $0 != "?" } }

    /// The first value of the header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// Serves HTTP/1.1 requests; runs on the connection's event loop and must not block it.
public typealias HTTPHandler = @Sendable (HTTPRequest) -> Void

/// Bounds of the HTTP/1.1 side.
public struct HTTPLimits: Sendable {
    /// Bytes a streamed response (`HTTPBodyStream`) may hold that the socket has not taken.
    public var streamQueuedBytesMax = 1 << 20

    public init() {}
}

/// Answers one HTTP/1.1 request. Only its first answer counts; answers to a request the
/// connection no longer waits on (closed meanwhile) are dropped.
public final class HTTPResponder: Sendable {
    let handler: NIOLoopBound<HTTP1ServerHandler>
    let requestNumber: Int
    let limits: HTTPLimits
    let answered = NIOLockedValueBox(false)

    init(handler: NIOLoopBound<HTTP1ServerHandler>, requestNumber: Int, limits: HTTPLimits) {
        self.handler = handler
        self.requestNumber = requestNumber
        self.limits = limits
    }

    public var eventLoop: EventLoop { handler.eventLoop }

    /// The whole response: `status` (200, 404, …), `Content-Type` and body.
    public func respond(
        status: Int, contentType: String, body: [UInt8], headers: [(name: String, value: String)] = []
    ) {
        guard claim() else { return }
        let handler = self.handler
        let requestNumber = self.requestNumber
        handler.eventLoop.execute {
            handler.value.respond(
                requestNumber, status: status, contentType: contentType, body: body, headers: headers)
        }
    }

    /// Starts a response whose body is written over time (chunked), e.g. server-sent events
    /// (`text/event-stream`). `onClose` runs on the event loop once the client went away
    /// before `finish` (not after it).
    public func startStream(
        status: Int = 200, contentType: String = "text/event-stream",
        onClose: @escaping @Sendable () -> Void = {}
    ) -> HTTPBodyStream {
        let stream = HTTPBodyStream(handler: handler, queuedBytesMax: limits.streamQueuedBytesMax, onClose: onClose)
        guard claim() else {
            stream.close()
            return stream
        }
        let handler = self.handler
        let requestNumber = self.requestNumber
        handler.eventLoop.execute {
            handler.value.startStream(requestNumber, status: status, contentType: contentType, stream: stream)
        }
        return stream
    }

    private func claim() -> Bool {
        answered.withLockedValue { answered in
            defer { answered = true }
            return !answered
        }
    }
}

/// A response body written over time, from any thread. Bounded: `write` returns false (and
/// drops the bytes) when `queuedBytes` would exceed `HTTPLimits.streamQueuedBytesMax`, or
/// once the stream is over (finished, or the client went away).
public final class HTTPBodyStream: Sendable {
    let handler: NIOLoopBound<HTTP1ServerHandler>
    let queuedBytesMax: Int
    let onClose: @Sendable () -> Void
    let state = NIOLockedValueBox(State())

    struct State {
        var queue: [[UInt8]] = []
        /// Accepted by `write`, not yet taken by the socket.
        var queuedBytes = 0
        var finishRequested = false
        var closed = false
        var scheduled = false
    }

    init(handler: NIOLoopBound<HTTP1ServerHandler>, queuedBytesMax: Int, onClose: @escaping @Sendable () -> Void) {
        self.handler = handler
        self.queuedBytesMax = queuedBytesMax
        self.onClose = onClose
    }

    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        let (accepted, schedule) = state.withLockedValue { state -> (Bool, Bool) in
            guard !state.closed && !state.finishRequested,
                state.queuedBytes == 0 || state.queuedBytes + bytes.count <= queuedBytesMax
            else { return (false, false) }
            state.queue.append(bytes)
            state.queuedBytes += bytes.count
            defer { state.scheduled = true }
            return (true, !state.scheduled)
        }
        if schedule { post() }
        return accepted
    }

    /// One server-sent event: `event:` and `id:` lines if given, a `data:` line per line of
    /// `data`, and the blank line that ends it.
    @discardableResult
    public func sendEvent(_ data: String, event: String? = nil, id: String? = nil) -> Bool {
        var text = ""
        if let event { text += "event: \(event)\n" }
        if let id { text += "id: \(id)\n" }
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) { text += "data: \(line)\n" }
        text += "\n"
        return write(Array(text.utf8))
    }

    /// Ends the response after what is queued.
    public func finish() {
        let schedule = state.withLockedValue { state -> Bool in
            guard !state.closed && !state.finishRequested else { return false }
            state.finishRequested = true
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule { post() }
    }

    public var queuedBytes: Int { state.withLockedValue { $0.queuedBytes } }

    /// False once the client went away or the stream finished.
    public var isOpen: Bool { state.withLockedValue { !$0.closed && !$0.finishRequested } }

    /// Refuses further writes and forgets what the socket was not given; returns whether
    /// the stream was open.
    @discardableResult
    func close() -> Bool {
        state.withLockedValue { state in
            defer {
                state.closed = true
                for chunk in state.queue { state.queuedBytes -= chunk.count }
                state.queue.removeAll()
            }
            return !state.closed
        }
    }

    private func post() {
        let handler = self.handler
        handler.eventLoop.execute { handler.value.pump(self) }
    }
}

/// The HTTP/1.1 side of a connection, behind NIOHTTP1's server pipeline (which hands over
/// one request at a time): calls the application's handler, writes its answer.
final class HTTP1ServerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    enum State {
        case idle
        case reading(HTTPRequestHead)
        /// The application has the request numbered `requestNumber`.
        case waiting(keepAlive: Bool)
        case streaming(HTTPBodyStream, keepAlive: Bool)
    }

    let application: HTTPHandler?
    let limits: HTTPLimits
    private var state = State.idle
    /// Numbers requests on this connection, so a late answer cannot answer a later request.
    private var requestNumber = 0
    private var context: ChannelHandlerContext?
    private var draining = false
    /// The request being answered is a HEAD: headers only (RFC 9110 §9.3.2).
    private var answeringHead = false

    init(application: HTTPHandler?, limits: HTTPLimits) {
        self.application = application
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeStream()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeStream()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            state = .reading(head)
        case .body:
            break
        case .end:
            guard case .reading(let head) = state else { return }
            requestNumber += 1
            state = .waiting(keepAlive: head.isKeepAlive && !draining)
            answeringHead = head.method == .HEAD
            guard let application else {
                return respond(
                    requestNumber, status: 404, contentType: "text/plain; charset=utf-8",
                    body: Array("no HTTP/1.1 service on this port; it speaks gRPC (HTTP/2)\n".utf8), headers: [])
            }
            let responder = HTTPResponder(
                handler: NIOLoopBound(self, eventLoop: context.eventLoop), requestNumber: requestNumber, limits: limits)
            application(
                HTTPRequest(
                    method: head.method.rawValue, uri: head.uri,
                    headers: head.headers.map { (name: $0.name, value: $0.value) }, responder: responder))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is UnaryServerHandler.Drain else { return context.fireUserInboundEventTriggered(event) }
        draining = true
        switch state {
        case .idle, .reading: context.close(promise: nil)
        case .waiting, .streaming: break  // closes after the response
        }
    }

    func respond(
        _ number: Int, status: Int, contentType: String, body: [UInt8], headers: [(name: String, value: String)]
    ) {
        guard let context, number == requestNumber, case .waiting(let keepAlive) = state else { return }
        var head = responseHead(status: status, contentType: contentType, keepAlive: keepAlive)
        head.headers.add(name: "content-length", value: String(body.count))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !answeringHead {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        end(keepAlive: keepAlive, context: context)
    }

    func startStream(_ number: Int, status: Int, contentType: String, stream: HTTPBodyStream) {
        guard let context, number == requestNumber, case .waiting(let keepAlive) = state else {
            stream.close()
            return
        }
        var head = responseHead(status: status, contentType: contentType, keepAlive: keepAlive)
        head.headers.add(name: "cache-control", value: "no-cache")
        if answeringHead {
            stream.close()
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            return end(keepAlive: keepAlive, context: context)
        }
        state = .streaming(stream, keepAlive: keepAlive)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        pump(stream)
    }

    /// Writes what `stream` queued; each chunk stays counted until the socket took it.
    func pump(_ stream: HTTPBodyStream) {
        guard let context, case .streaming(let current, let keepAlive) = state, current === stream else { return }
        let (chunks, finish) = stream.state.withLockedValue { state in
            state.scheduled = false
            defer { state.queue.removeAll() }
            return (state.queue, state.finishRequested)
        }
        for chunk in chunks {
            var buffer = context.channel.allocator.buffer(capacity: chunk.count)
            buffer.writeBytes(chunk)
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: promise)
            promise.futureResult.whenComplete { _ in stream.state.withLockedValue { $0.queuedBytes -= chunk.count } }
        }
        if finish {
            stream.state.withLockedValue { $0.closed = true }
            end(keepAlive: keepAlive, context: context)
        } else {
            context.flush()
        }
    }

    private func end(keepAlive: Bool, context: ChannelHandlerContext) {
        state = .idle
        let closes = !keepAlive || draining
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if closes { channel.close(promise: nil) }
        }
    }

    private func responseHead(status: Int, contentType: String, keepAlive: Bool) -> HTTPResponseHead {
        var headers = HTTPHeaders([("content-type", contentType)])
        if !keepAlive { headers.add(name: "connection", value: "close") }
        return HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
    }

    /// The client went away: a stream in progress learns it.
    private func closeStream() {
        guard case .streaming(let stream, _) = state else { return }
        state = .idle
        if stream.close() { stream.onClose() }
    }
}
