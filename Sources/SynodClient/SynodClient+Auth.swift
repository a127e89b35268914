import EtcdAPI
import GRPCCore

/// A user name and password (etcdctl's `--user name:password`).
public struct SynodCredentials: Sendable, Hashable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    /// `name:password` as etcdctl takes it (the password may contain `:`).
    public init(parsing text: String) throws(SynodClientError) {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw .invalidOptions("--user must be name:password")
        }
        user = String(text[..<colon])
        password = String(text[text.index(after: colon)...])
    }
}

/// Authentication: with `options.credentials`, the client calls `Auth/Authenticate` before its
/// first call, keeps the token and sends it as the `token` metadata (clientv3's header) with
/// every call; a call refused as "invalid auth token" (an expired token) authenticates again
/// and retries once. A cluster without auth answers "authentication is not enabled": the
/// client then sends no token, as clientv3 does.
extension SynodClient {
    static let tokenMetadataKey = "token"
    static let authNotEnabledMessage = "etcdserver: authentication is not enabled"

    /// A token for `options.credentials` (nil without credentials or when the cluster has
    /// auth disabled), for tools that send requests of their own (`synod bench --user`).
    public func authToken() async throws(SynodClientError) -> String? {
        var metadata: Metadata = [:]
        try await addAuthToken(to: &metadata)
        return authTokenCache.withLock { $0 }.flatMap { $0.isEmpty ? nil : $0 }
    }

    func addAuthToken(to metadata: inout Metadata) async throws(SynodClientError) {
        guard let credentials = options.credentials else { return }
        let token: String
        if let cached = authTokenCache.withLock({ $0 }) {
            token = cached
        } else {
            token = try await authenticate(credentials)
            authTokenCache.withLock { $0 = token }
        }
        metadata.removeAllValues(forKey: Self.tokenMetadataKey)
        if !token.isEmpty { metadata.addString(token, forKey: Self.tokenMetadataKey) }
    }

    /// The token for `credentials` ("" when the cluster has auth disabled), trying each endpoint
    /// once from the preferred one.
    func authenticate(_ credentials: SynodCredentials) async throws(SynodClientError) -> String {
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = credentials.user
        request.password = credentials.password
        let bytes: [UInt8]
        do { bytes = try request.serializedBytes() } catch {
            throw .invalidOptions("cannot encode Authenticate: \(error)")
        }
        let first = preferredIndex
        var lastError: (RPCError.Code, String, SynodEndpoint)?
        for step in 0..<endpoints.count {
            let index = (first + step) % endpoints.count
            let connection = try connection(at: index)
            do {
                let answer = try await connection.rawUnary(
                    service: "etcdserverpb.Auth", method: "Authenticate", request: bytes, options: callOptions)
                return try Etcdserverpb_AuthenticateResponse(serializedBytes: answer).token
            } catch let error as RPCError {
                if error.message == Self.authNotEnabledMessage { return "" }
                guard FailureDisposition(error.code) != .surface else {
                    throw .rejected(code: error.code, message: error.message, endpoint: endpoints[index])
                }
                lastError = (error.code, error.message, endpoints[index])
            } catch is CancellationError {
                throw .cancelled
            } catch {
                lastError = (.unknown, "\(error)", endpoints[index])
            }
        }
        let (code, message, endpoint) = lastError!
        throw .unavailable(attempts: endpoints.count, endpoint: endpoint, lastCode: code, lastError: message)
    }
}
