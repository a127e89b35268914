import EtcdAPI
import GRPCCore
import KVStore
import Synchronization

/// A client of a Synod cluster — or of etcd: it speaks the etcd v3 gRPC API.
///
/// - One HTTP/2 connection per endpoint, opened on first use and shared by all calls.
/// - Calls go to a preferred endpoint, first chosen at random; when it is down, slow or without
///   a leader (`unavailable`, `deadlineExceeded`, a broken connection) the call moves on to the
///   next endpoint and retries, up to `options.retriesMax` times with backoff. Errors that are
///   the request's fault are not retried: they surface as `SynodClientError.rejected`.
/// - Every write carries a `SynodRequestID` in the `synod-request-id` header and its retries
///   carry the same one, so Synod applies it exactly once.
///
/// ```swift
/// let client = try SynodClient(endpoints: ["127.0.0.1:2379", "127.0.0.1:2381"])
/// defer { Task { await client.close() } }
/// try await client.put(key: "greeting", value: "hello")
/// let response = try await client.get(key: "greeting")
/// print(response.kvs.first?.value, response.servedBy, response.header.revision)
/// ```
public final class SynodClient: Sendable {
    public let endpoints: [SynodEndpoint]
    public let options: SynodClientOptions
    private let state: Mutex<State>
    /// The auth token for `options.credentials` (SynodClient+Auth.swift).
    let authTokenCache = Mutex<String?>(nil)

    private struct State: ~Copyable {
        var connections: [SynodConnection?]
        /// Index into `endpoints` of the endpoint new attempts go to.
        var preferred: Int
        var sessions: WriteSessionPool
        var closed = false
    }

    public convenience init(endpoints: [String], options: SynodClientOptions = .init()) throws(SynodClientError) {
        var parsed: [SynodEndpoint] = []
        for text in endpoints { parsed.append(try SynodEndpoint(parsing: text)) }
        try self.init(endpoints: parsed, options: options)
    }

    public init(endpoints: [SynodEndpoint], options: SynodClientOptions = .init()) throws(SynodClientError) {
        guard !endpoints.isEmpty else { throw .noEndpoints }
        try options.validate()
        self.endpoints = endpoints
        self.options = options
        self.state = Mutex(
            State(
                connections: Array(repeating: nil, count: endpoints.count),
                preferred: Int.random(in: 0..<endpoints.count),
                sessions: WriteSessionPool(baseClientID: options.clientID)
            )
        )
    }

    /// Closes every connection after its in-flight calls finish. Later calls fail with `.closed`.
    public func close() async {
        let connections = state.withLock { state in
            state.closed = true
            let open = state.connections.compactMap { $0 }
            state.connections = Array(repeating: nil, count: state.connections.count)
            return open
        }
        for connection in connections { await connection.close() }
    }

    /// The endpoint the next call goes to first.
    public var preferredEndpoint: SynodEndpoint {
        endpoints[state.withLock { $0.preferred }]
    }

    // MARK: - Plumbing shared by the calls

    /// The endpoint calls go to now (it moves on after failures).
    var preferredIndex: Int { state.withLock { $0.preferred } }

    /// The connection to `endpoints[index]`, opened on first use.
    func connection(at index: Int) throws(SynodClientError) -> SynodConnection {
        try state.withLock { state throws(SynodClientError) -> SynodConnection in
            guard !state.closed else { throw .closed }
            if let connection = state.connections[index] { return connection }
            let connection = try SynodConnection(endpoint: endpoints[index], options: options)
            state.connections[index] = connection
            return connection
        }
    }

    /// After a failure at `index`, later attempts go to the next endpoint — unless another call
    /// already moved on.
    private func failOver(from index: Int) {
        state.withLock { state in
            if state.preferred == index { state.preferred = (index + 1) % endpoints.count }
        }
    }

    var callOptions: CallOptions {
        var callOptions = CallOptions.defaults
        callOptions.timeout = options.requestTimeout
        callOptions.waitForReady = false
        return callOptions
    }

    /// Runs `call` with retries and failover (see the type's documentation).
    ///
    /// - Parameters:
    ///   - fixedEndpoint: Only this endpoint (no failover), for per-endpoint calls like status.
    ///   - requestID: Sent on every attempt as `synod-request-id`.
    func perform<Body: Sendable>(
        fixedEndpoint: Int? = nil,
        requestID: SynodRequestID? = nil,
        retriesMax: Int? = nil,
        _ call: @Sendable (SynodConnection, Metadata, CallOptions) async throws -> (Body, SynodResponseHeader)
    ) async throws(SynodClientError) -> SynodResponse<Body> {
        var metadata: Metadata = [:]
        if let requestID { metadata.addString(requestID.description, forKey: SynodRequestID.metadataKey) }
        try await addAuthToken(to: &metadata)
        var tokenRefreshed = false
        let callOptions = self.callOptions
        let attemptsMax = 1 + (retriesMax ?? options.retriesMax)
        var backoff = options.retryBackoffInitial
        var attempt = 0
        while true {
            attempt += 1
            let index = fixedEndpoint ?? state.withLock { $0.preferred }
            let connection = try self.connection(at: index)
            let code: RPCError.Code
            let message: String
            do {
                let (body, header) = try await call(connection, metadata, callOptions)
                return SynodResponse(body: body, header: header, servedBy: endpoints[index], attempts: attempt)
            } catch let error as RPCError {
                code = error.code
                message = error.message
            } catch let error as SynodClientError {
                throw error
            } catch is CancellationError {
                throw .cancelled
            } catch {
                // RuntimeError from a client that is shutting down, or anything unforeseen.
                if state.withLock({ $0.closed }) { throw .closed }
                code = .unknown
                message = "\(error)"
            }
            if Task.isCancelled { throw .cancelled }
            // An expired or revoked token: authenticate again once, as clientv3 does.
            if code == .unauthenticated, options.credentials != nil, !tokenRefreshed {
                tokenRefreshed = true
                authTokenCache.withLock { $0 = nil }
                try await addAuthToken(to: &metadata)
                continue
            }
            let disposition = FailureDisposition(code)
            guard disposition != .surface else {
                throw .rejected(code: code, message: message, endpoint: endpoints[index])
            }
            guard attempt < attemptsMax else {
                throw .unavailable(attempts: attempt, endpoint: endpoints[index], lastCode: code, lastError: message)
            }
            if disposition == .failOver && fixedEndpoint == nil { failOver(from: index) }
            // The first failover is immediate: the next endpoint is likely fine.
            if attempt > 1 || disposition == .backOff || fixedEndpoint != nil {
                let jittered = backoff * Double.random(in: 0.8...1.2)
                do { try await Task.sleep(for: jittered) } catch { throw .cancelled }
                backoff = min(backoff * 2, options.retryBackoffMax)
            }
        }
    }

    /// Runs a write under a fresh request ID, returned to the pool when the write is finished.
    func performWrite<Body: Sendable>(
        _ call: @Sendable (SynodConnection, Metadata, CallOptions) async throws -> (Body, SynodResponseHeader)
    ) async throws(SynodClientError) -> SynodResponse<Body> {
        let requestID = state.withLock { $0.sessions.acquire() }
        defer { state.withLock { $0.sessions.release(requestID) } }
        return try await perform(requestID: requestID, call)
    }
}
