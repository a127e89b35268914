import SynodTLS

/// Read consistency (DESIGN §3 "Reads").
public enum SynodConsistency: String, Sendable, Hashable, CaseIterable {
    /// Served after the leader confirms its ballot with a majority: never stale.
    case linearizable
    /// Served from the contacted replica's state: fast, possibly stale.
    case serializable
}

/// Configuration of a `SynodClient`; validated by `SynodClient.init`.
public struct SynodClientOptions: Sendable {
    /// Deadline of one attempt of a request; a retry gets a fresh one.
    public var requestTimeout: Duration
    /// Retries after the first attempt, for errors that are not the request's fault
    /// (`unavailable`, `deadlineExceeded`, connection failures). Invariant: `0...retriesMaxLimit`.
    public var retriesMax: Int
    /// Pause before the second retry; doubled per further retry up to `retryBackoffMax`. The first
    /// retry goes to the next endpoint at once.
    public var retryBackoffInitial: Duration
    public var retryBackoffMax: Duration
    /// Consistency of reads that do not say otherwise.
    public var consistency: SynodConsistency
    /// This client's identity for exactly-once writes; random by default, never 0. Concurrent
    /// writes use `clientID`, `clientID &+ 1`, … (one write in flight per identity; see
    /// `SynodRequestID`), so two clients need IDs further apart than their write concurrency.
    public var clientID: UInt64
    /// Delay the first reconnect to a failed endpoint by this much (then back off up to 2 s).
    public var reconnectBackoffInitial: Duration
    /// Coalesce HTTP/2 flushes (grpc-swift's default): fewer syscalls under load, up to ~0.1 ms
    /// more latency per call when lightly loaded.
    public var flushCoalescing: Bool
    /// A user and password for a cluster with auth enabled (etcdctl's `--user`): the client
    /// authenticates on first use and sends the token with every call (SynodClient+Auth.swift).
    public var credentials: SynodCredentials? = nil
    /// TLS to every endpoint, as etcdctl's `--cacert`, `--cert`, `--key`: the server's
    /// certificate is verified against the CA (the system's roots without one) and must name the
    /// endpoint's host; the client certificate is presented to servers with
    /// `--client-cert-auth`. nil: plaintext.
    public var tls: ClientTLSFiles?

    /// Client IDs at or above this leave room for the identity pool below 2^63: the server treats
    /// an ID with the high bit set as having no session.
    public static let clientIDLimit: UInt64 = 1 << 62

    /// Bound on `retriesMax`, so a misconfiguration cannot retry forever (STYLE §9).
    public static let retriesMaxLimit = 100

    public init(
        requestTimeout: Duration = .seconds(5),
        retriesMax: Int = 5,
        retryBackoffInitial: Duration = .milliseconds(50),
        retryBackoffMax: Duration = .seconds(1),
        consistency: SynodConsistency = .linearizable,
        clientID: UInt64 = SynodClientOptions.randomClientID(),
        reconnectBackoffInitial: Duration = .milliseconds(100),
        flushCoalescing: Bool = false,
        tls: ClientTLSFiles? = nil
    ) {
        self.requestTimeout = requestTimeout
        self.retriesMax = retriesMax
        self.retryBackoffInitial = retryBackoffInitial
        self.retryBackoffMax = retryBackoffMax
        self.consistency = consistency
        self.clientID = clientID
        self.reconnectBackoffInitial = reconnectBackoffInitial
        self.flushCoalescing = flushCoalescing
        self.tls = tls
    }

    /// A random non-zero identity (0 means "no session" to the server) with the two high bits
    /// clear: the server treats a client id with the high bit set as having no exactly-once
    /// session, and the pool of identities counts up from this one.
    public static func randomClientID() -> UInt64 {
        UInt64.random(in: 1..<clientIDLimit)
    }

    func validate() throws(SynodClientError) {
        guard requestTimeout > .zero else { throw .invalidOptions("requestTimeout must be positive") }
        guard (0...Self.retriesMaxLimit).contains(retriesMax) else {
            throw .invalidOptions("retriesMax must be in 0...\(Self.retriesMaxLimit), not \(retriesMax)")
        }
        guard retryBackoffInitial >= .zero, retryBackoffMax >= retryBackoffInitial else {
            throw .invalidOptions("need 0 <= retryBackoffInitial <= retryBackoffMax")
        }
        guard clientID != 0 else { throw .invalidOptions("clientID 0 is reserved for writes without a session") }
        guard clientID < Self.clientIDLimit else {
            throw .invalidOptions("clientID must be below 2^62 (high bits mean no exactly-once session)")
        }
        guard reconnectBackoffInitial > .zero else { throw .invalidOptions("reconnectBackoffInitial must be positive") }
        do {
            try tls?.validate()
        } catch {
            throw .invalidOptions(error.description)
        }
    }
}
