import GRPCCore

/// Operating errors of the client (STYLE §6): typed, with the evidence a user needs.
public enum SynodClientError: Error, Sendable, CustomStringConvertible {
    /// An endpoint that is not `host:port`.
    case invalidEndpoint(String)
    /// An empty endpoint list.
    case noEndpoints
    /// Options that fail `SynodClientOptions.validate()`.
    case invalidOptions(String)
    /// The client was closed before or during the call.
    case closed
    /// The calling task was cancelled.
    case cancelled
    /// The server refused the request itself (`invalidArgument`, `outOfRange`,
    /// `failedPrecondition`, …): not retried. `message` is the server's, e.g. etcd's
    /// "etcdserver: key is not provided".
    case rejected(code: RPCError.Code, message: String, endpoint: SynodEndpoint)
    /// Every attempt failed with an error worth retrying; `lastError` is the last one's text.
    /// A write in this state may or may not have been applied (at most once).
    case unavailable(attempts: Int, endpoint: SynodEndpoint, lastCode: RPCError.Code, lastError: String)
    /// A response that does not have what the request asked for.
    case unexpectedResponse(String)

    public var description: String {
        switch self {
        case .invalidEndpoint(let text):
            return "invalid endpoint '\(text)': expected host:port"
        case .noEndpoints:
            return "no endpoints given"
        case .invalidOptions(let reason):
            return "invalid client options: \(reason)"
        case .closed:
            return "the client is closed"
        case .cancelled:
            return "cancelled"
        case .rejected(_, let message, _):
            return message
        case .unavailable(let attempts, let endpoint, let code, let lastError):
            let tries = attempts == 1 ? "1 attempt" : "\(attempts) attempts"
            return "no endpoint answered after \(tries) (last: \(endpoint): \(code): \(lastError))"
        case .unexpectedResponse(let what):
            return "unexpected response: \(what)"
        }
    }

    /// The gRPC status code behind the error, where there is one.
    public var code: RPCError.Code? {
        switch self {
        case .rejected(let code, _, _): return code
        case .unavailable(_, _, let code, _): return code
        case .closed, .cancelled: return .cancelled
        default: return nil
        }
    }
}

/// How the retry loop treats a failed attempt.
enum FailureDisposition: Equatable {
    /// The request's fault: surface it.
    case surface
    /// The endpoint's fault (down, partitioned, no leader, slow): try the next endpoint.
    case failOver
    /// The server is overloaded: back off and retry on the same endpoint.
    case backOff

    init(_ code: RPCError.Code) {
        switch code {
        case .unavailable, .deadlineExceeded, .unknown, .internalError, .aborted, .cancelled:
            // etcd answers `unavailable` for "leader changed" / "no leader" and on shutdown; a
            // dropped connection surfaces as `unavailable` or, mid-call, `unknown`/`internalError`.
            self = .failOver
        case .resourceExhausted:
            self = .backOff
        default:
            self = .surface
        }
    }
}
