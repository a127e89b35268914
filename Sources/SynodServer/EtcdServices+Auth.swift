import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import NIOHPACK
import Paxos
import ReplicaRuntime
import SwiftProtobuf
import UnaryGRPC

/// etcd's `Auth` service and the permission checks of every other call.
///
/// - Changes (AuthEnable/Disable, User*/Role* that write) go through the log as
///   `AuthOperation`s. With auth enabled they are proposed inside an `authorized` envelope
///   naming the caller, and every replica checks at apply that the caller holds the root role
///   (etcd's `IsAdminPermitted`). Passwords are hashed here, off the event loop, before
///   proposing (`PasswordHash`); AuthEnable carries a fresh token secret (`AuthToken`).
/// - Reads of the auth state (Authenticate, UserGet/List, RoleGet/List) first pass the read
///   index like a linearizable Range, then read the state the replica has applied, so a user
///   added through one replica can authenticate at once through another.
/// - Calls are checked on the replica that takes them, against the auth state it has applied
///   (`AuthView`): the caller is the user of the `token` metadata clientv3 sends, else the
///   certificate's common name if the connection has one (etcd 3.4's `AuthInfoFromCtx`:
///   token first, then the CN). Writes are checked again at
///   apply (KVStore+Auth.swift), so a permission revoked between the check and the apply
///   still denies the write. Reads (Range, Watch create) are checked once, when they arrive:
///   a read racing a revocation may still be served (etcd has the same window for reads).
extension EtcdFrontEnd {
    /// The metadata key clientv3 sends its token under (`rpctypes.TokenFieldNameGRPC`).
    static let tokenHeader = "token"

    // MARK: - Checks other services call

    /// The user a call acts as, on `state` (auth enabled): the token's user, else the
    /// certificate's common name. etcd's errors: no credentials → "user name is empty", a bad
    /// or expired token → "invalid auth token" (also when a certificate could have named one).
    static func resolveUser(
        token: String?, certificateCommonName: String?, state: AuthState, nowMilliseconds: Int64
    ) throws(AuthError) -> String {
        guard let token, !token.isEmpty else {
            if let certificateCommonName, !certificateCommonName.isEmpty { return certificateCommonName }
            throw .userEmpty
        }
        guard let user = AuthToken.verify(token, state: state, nowMilliseconds: nowMilliseconds) else {
            throw .invalidAuthToken
        }
        return user
    }

    /// The caller's user name, or nil while auth is disabled on this replica.
    func caller(_ metadata: HPACKHeaders, certificateCommonName: String?) throws -> (AuthState, String)? {
        guard loop.authView.isEnabled else { return nil }
        let state = loop.authView.current
        do {
            let user = try Self.resolveUser(
                token: metadata.first(name: Self.tokenHeader), certificateCommonName: certificateCommonName,
                state: state, nowMilliseconds: Self.wallClockMilliseconds())
            return (state, user)
        } catch {
            throw EtcdConversions.rpcError(auth: error)
        }
    }

    /// What to propose for a client's write: the write itself while auth is disabled; else,
    /// if the caller may do it, the write in an `authorized` envelope naming the caller (the
    /// store checks it again when applying); else etcd's error.
    func authorize(_ operation: WriteOperation, call: UnaryCall) throws -> WriteOperation {
        guard let resolved = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName) else { return operation }
        let (state, user) = resolved
        if let error = state.check(operation, user: user) { throw EtcdConversions.rpcError(auth: error) }
        return .auth(.authorized(user: user, operation: operation))
    }

    /// `request` if the caller may read its range (always while auth is disabled).
    func authorized(_ request: RangeRequest, call: UnaryCall) throws -> RangeRequest {
        guard let resolved = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName) else { return request }
        let (state, user) = resolved
        if let error = state.check(request, user: user) { throw EtcdConversions.rpcError(auth: error) }
        return request
    }

    /// For maintenance calls etcd reserves to root (HashKV, Snapshot, MoveLeader, Defragment;
    /// and Synod's History, which reads every key's old values):
    /// nil if the caller may, else the status to fail the call with.
    func adminRefusal(_ metadata: HPACKHeaders, certificateCommonName: String?) -> GRPCStatus? {
        do {
            guard let resolved = try caller(metadata, certificateCommonName: certificateCommonName) else { return nil }
            let (state, user) = resolved
            guard let error = state.checkAdmin(user: user) else { return nil }
            return Self.grpcStatus(EtcdConversions.rpcError(auth: error))
        } catch {
            return Self.grpcStatus(error)
        }
    }

    /// A watch's check, on the loop thread against the applied state: nil if the stream's
    /// caller may read the watched range, else the cancel reason etcd sends.
    static func watchRefusal(
        _ create: WatchCreate, token: String?, certificateCommonName: String?, auth: AuthState
    ) -> String? {
        guard auth.isEnabled else { return nil }
        do {
            let user = try resolveUser(
                token: token, certificateCommonName: certificateCommonName, state: auth,
                nowMilliseconds: wallClockMilliseconds())
            return auth.checkKeys(user: user, type: .read, key: create.key, rangeEnd: create.rangeEnd)?.message
        } catch {
            // etcd answers "permission denied" for a missing user, its own message otherwise.
            return error == .userEmpty ? AuthError.permissionDenied.message : error.message
        }
    }

    // MARK: - The Auth service

    var authMethods: [String: UnaryMethod] {
        [
            "/etcdserverpb.Auth/AuthEnable": Self.method(
                Etcdserverpb_AuthEnableRequest.self, Etcdserverpb_AuthEnableResponse.self
            ) { [self] _, call, respond in
                // The store answers "root user does not exist" / "does not have root role" when
                // it applies the command (not from this replica's view, which may lag a grant
                // made through another replica; etcdctl reacts to the second by adding the role).
                try propose(.enable(tokenSecret: AuthToken.newSecret()), call: call, respond: respond) { header in
                    Etcdserverpb_AuthEnableResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/AuthDisable": Self.method(
                Etcdserverpb_AuthDisableRequest.self, Etcdserverpb_AuthDisableResponse.self
            ) { [self] _, call, respond in
                try propose(.disable, call: call, respond: respond) { header in
                    Etcdserverpb_AuthDisableResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/Authenticate": Self.method(
                Etcdserverpb_AuthenticateRequest.self, Etcdserverpb_AuthenticateResponse.self
            ) { [self] request, call, respond in
                try authenticate(name: request.name, password: request.password, call: call, respond: respond)
            },
            "/etcdserverpb.Auth/UserAdd": Self.method(
                Etcdserverpb_AuthUserAddRequest.self, Etcdserverpb_AuthUserAddResponse.self
            ) { [self] request, call, respond in
                if request.name.isEmpty { throw EtcdConversions.rpcError(auth: .userEmpty) }
                try precheckAdmin(call)
                let name = request.name
                if request.options.noPassword {
                    return try propose(
                        .userAdd(name: name, passwordHash: "", noPassword: true), call: call, respond: respond
                    ) { header in
                        Etcdserverpb_AuthUserAddResponse.with { $0.header = header }
                    }
                }
                try hashing(request.password, call: call) { [self] hash in
                    try propose(
                        .userAdd(name: name, passwordHash: hash, noPassword: false), call: call, respond: respond
                    ) { header in
                        Etcdserverpb_AuthUserAddResponse.with { $0.header = header }
                    }
                }
            },
            "/etcdserverpb.Auth/UserDelete": Self.method(
                Etcdserverpb_AuthUserDeleteRequest.self, Etcdserverpb_AuthUserDeleteResponse.self
            ) { [self] request, call, respond in
                try propose(.userDelete(name: request.name), call: call, respond: respond) { header in
                    Etcdserverpb_AuthUserDeleteResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/UserChangePassword": Self.method(
                Etcdserverpb_AuthUserChangePasswordRequest.self, Etcdserverpb_AuthUserChangePasswordResponse.self
            ) { [self] request, call, respond in
                if request.name.isEmpty { throw EtcdConversions.rpcError(auth: .userEmpty) }
                try precheckAdmin(call)
                let name = request.name
                try hashing(request.password, call: call) { [self] hash in
                    try propose(.userChangePassword(name: name, passwordHash: hash), call: call, respond: respond) { header in
                        Etcdserverpb_AuthUserChangePasswordResponse.with { $0.header = header }
                    }
                }
            },
            "/etcdserverpb.Auth/UserGrantRole": Self.method(
                Etcdserverpb_AuthUserGrantRoleRequest.self, Etcdserverpb_AuthUserGrantRoleResponse.self
            ) { [self] request, call, respond in
                try propose(.userGrantRole(user: request.user, role: request.role), call: call, respond: respond) {
                    header in
                    Etcdserverpb_AuthUserGrantRoleResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/UserRevokeRole": Self.method(
                Etcdserverpb_AuthUserRevokeRoleRequest.self, Etcdserverpb_AuthUserRevokeRoleResponse.self
            ) { [self] request, call, respond in
                try propose(.userRevokeRole(user: request.name, role: request.role), call: call, respond: respond) {
                    header in
                    Etcdserverpb_AuthUserRevokeRoleResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/RoleAdd": Self.method(
                Etcdserverpb_AuthRoleAddRequest.self, Etcdserverpb_AuthRoleAddResponse.self
            ) { [self] request, call, respond in
                try propose(.roleAdd(name: request.name), call: call, respond: respond) { header in
                    Etcdserverpb_AuthRoleAddResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/RoleDelete": Self.method(
                Etcdserverpb_AuthRoleDeleteRequest.self, Etcdserverpb_AuthRoleDeleteResponse.self
            ) { [self] request, call, respond in
                try propose(.roleDelete(name: request.role), call: call, respond: respond) { header in
                    Etcdserverpb_AuthRoleDeleteResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/RoleGrantPermission": Self.method(
                Etcdserverpb_AuthRoleGrantPermissionRequest.self, Etcdserverpb_AuthRoleGrantPermissionResponse.self
            ) { [self] request, call, respond in
                guard let type = AuthPermissionType(rawValue: UInt8(clamping: request.perm.permType.rawValue)),
                    request.perm.permType.rawValue >= 0
                else {
                    throw RPCError(code: .invalidArgument, message: "etcdserver: invalid permission type")
                }
                let permission = AuthPermission(
                    type: type, key: Array(request.perm.key), rangeEnd: Array(request.perm.rangeEnd))
                try propose(
                    .roleGrantPermission(role: request.name, permission: permission), call: call, respond: respond
                ) { header in
                    Etcdserverpb_AuthRoleGrantPermissionResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/RoleRevokePermission": Self.method(
                Etcdserverpb_AuthRoleRevokePermissionRequest.self, Etcdserverpb_AuthRoleRevokePermissionResponse.self
            ) { [self] request, call, respond in
                let change = AuthOperation.roleRevokePermission(
                    role: request.role, key: Array(request.key), rangeEnd: Array(request.rangeEnd))
                try propose(change, call: call, respond: respond) { header in
                    Etcdserverpb_AuthRoleRevokePermissionResponse.with { $0.header = header }
                }
            },
            "/etcdserverpb.Auth/UserGet": Self.method(
                Etcdserverpb_AuthUserGetRequest.self, Etcdserverpb_AuthUserGetResponse.self
            ) { [self] request, call, respond in
                try readAuth(call: call, respond: respond) { state, user, header in
                    // etcd: root, or the user asking about itself.
                    if let user, user != request.name, let error = state.checkAdmin(user: user) { throw error }
                    guard let found = state.users[request.name] else { throw AuthError.userNotFound }
                    return Etcdserverpb_AuthUserGetResponse.with {
                        $0.header = header
                        $0.roles = found.roles
                    }
                }
            },
            "/etcdserverpb.Auth/UserList": Self.method(
                Etcdserverpb_AuthUserListRequest.self, Etcdserverpb_AuthUserListResponse.self
            ) { [self] _, call, respond in
                try readAuth(call: call, respond: respond) { state, user, header in
                    if let user, let error = state.checkAdmin(user: user) { throw error }
                    return Etcdserverpb_AuthUserListResponse.with {
                        $0.header = header
                        $0.users = state.users.keys.sorted()
                    }
                }
            },
            "/etcdserverpb.Auth/RoleGet": Self.method(
                Etcdserverpb_AuthRoleGetRequest.self, Etcdserverpb_AuthRoleGetResponse.self
            ) { [self] request, call, respond in
                try readAuth(call: call, respond: respond) { state, user, header in
                    // etcd: root, or a user holding the role.
                    if let user, !(state.users[user]?.roles.contains(request.role) ?? false),
                        let error = state.checkAdmin(user: user)
                    {
                        throw error
                    }
                    guard let role = state.roles[request.role] else {
                        // The root role need not exist as a role entry to be granted (etcd).
                        if request.role == AuthState.rootRole {
                            return Etcdserverpb_AuthRoleGetResponse.with { $0.header = header }
                        }
                        throw AuthError.roleNotFound
                    }
                    return Etcdserverpb_AuthRoleGetResponse.with {
                        $0.header = header
                        $0.perm = role.permissions.map(Self.permissionMessage)
                    }
                }
            },
            "/etcdserverpb.Auth/RoleList": Self.method(
                Etcdserverpb_AuthRoleListRequest.self, Etcdserverpb_AuthRoleListResponse.self
            ) { [self] _, call, respond in
                try readAuth(call: call, respond: respond) { state, user, header in
                    if let user, let error = state.checkAdmin(user: user) { throw error }
                    return Etcdserverpb_AuthRoleListResponse.with {
                        $0.header = header
                        $0.roles = state.roles.keys.sorted()
                    }
                }
            },
        ]
    }

    /// `method` with the response type spelled out (the bodies below build it in nested closures).
    static func method<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ requestType: Request.Type, _ responseType: Response.Type,
        _ body:
            @escaping @Sendable (
                Request, UnaryCall, _ respond: @escaping @Sendable (@escaping @Sendable () throws -> Response) -> Void
            ) throws -> Void
    ) -> UnaryMethod {
        method(requestType, body)
    }

    static func permissionMessage(_ permission: AuthPermission) -> Etcdserverpb_Permission {
        var out = Etcdserverpb_Permission()
        out.permType = .init(rawValue: Int(permission.type.rawValue)) ?? .read
        out.key = Data(permission.key)
        out.rangeEnd = Data(permission.rangeEnd)
        return out
    }

    // MARK: - Helpers

    /// Proposes an auth change (through `write`, which wraps it for the caller when auth is
    /// enabled) and answers with `make`'s response.
    func propose<Response: SwiftProtobuf.Message>(
        _ change: AuthOperation, call: UnaryCall,
        respond: @escaping @Sendable (@escaping @Sendable () throws -> Response) -> Void,
        _ make: @escaping @Sendable (Etcdserverpb_ResponseHeader) -> Response
    ) throws {
        try write(.auth(change), call: call) { outcome in
            respond {
                let (result, position) = try Self.unwrap(outcome)
                guard case .auth = result else { throw Self.unexpected(result) }
                return make(self.header(position))
            }
        }
    }

    /// Refuses an auth change early, before hashing a password, if the caller could not make
    /// it (the store checks again when applying).
    func precheckAdmin(_ call: UnaryCall) throws {
        guard let resolved = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName) else { return }
        let (state, user) = resolved
        if let error = state.checkAdmin(user: user) { throw EtcdConversions.rpcError(auth: error) }
    }

    /// Hashes `password` on the hashing queue, then calls `then` with the hash there; failures
    /// answer the call.
    func hashing(_ password: String, call: UnaryCall, then: @escaping @Sendable (String) throws -> Void) throws {
        let started = PasswordWork.shared.run {
            do {
                try then(try PasswordHash.make(password))
            } catch {
                call.responder.fail(Self.grpcStatus(error))
            }
        }
        if !started { throw Self.rpcError(.tooManyRequests) }
    }

    /// Passes the read index (as a linearizable Range would), then runs `body` on the loop
    /// thread with the auth state applied there and the caller (nil while auth is disabled).
    /// `body` may throw an `AuthError` or an `RPCError`.
    func readAuth<Response: SwiftProtobuf.Message>(
        call: UnaryCall,
        respond: @escaping @Sendable (@escaping @Sendable () throws -> Response) -> Void,
        _ body: @escaping @Sendable (AuthState, String?, Etcdserverpb_ResponseHeader) throws -> Response
    ) throws {
        let token = call.metadata.first(name: Self.tokenHeader)
        let commonName = call.clientCertificateCommonName
        try afterReadIndex(call: call) { [self] state, position in
            respond {
                do {
                    var user: String?
                    if state.isEnabled {
                        user = try Self.resolveUser(
                            token: token, certificateCommonName: commonName, state: state,
                            nowMilliseconds: Self.wallClockMilliseconds())
                    }
                    return try body(state, user, self.header(position))
                } catch let error as AuthError {
                    throw EtcdConversions.rpcError(auth: error)
                }
            }
        }
    }

    /// Runs `body` on the loop thread once the replica has applied everything chosen before
    /// the call arrived (the read index of a linearizable read).
    func afterReadIndex(
        call: UnaryCall, _ body: @escaping @Sendable (AuthState, ReplicaPosition) -> Void
    ) throws {
        let barrier = RangeRequest(key: [0], limit: 1, countOnly: true)
        try read(barrier, call: call) { [loop] outcome in
            switch outcome {
            case .success(_, let position):
                // A task runs after the current turn: the store is at least where the read
                // index was.
                let submitted = loop.perform { runtime in
                    // Publish first: a call that follows this answer (a token's first use) is
                    // checked against at least this state.
                    loop.authView.refresh(runtime.kv.authState)
                    body(runtime.kv.authState, position)
                }
                if !submitted { call.responder.fail(Self.grpcStatus(Self.rpcError(.tooManyRequests))) }
            case .failure(let failure):
                call.responder.fail(Self.grpcStatus(Self.rpcError(failure)))
            }
        }
    }

    func authenticate(
        name: String, password: String, call: UnaryCall,
        respond: @escaping @Sendable (@escaping @Sendable () throws -> Etcdserverpb_AuthenticateResponse) -> Void
    ) throws {
        try afterReadIndex(call: call) { [self] state, position in
            let fail: @Sendable (AuthError) -> Void = { error in
                call.responder.fail(Self.grpcStatus(EtcdConversions.rpcError(auth: error)))
            }
            guard state.isEnabled else { return fail(.authNotEnabled) }
            guard let user = state.users[name], !user.noPassword, !user.passwordHash.isEmpty else {
                return fail(.authFailed)
            }
            let secret = state.tokenSecret
            let started = PasswordWork.shared.run { [self] in
                guard PasswordHash.verify(password, against: user.passwordHash) else { return fail(.authFailed) }
                let token = AuthToken.issue(for: user, secret: secret, nowMilliseconds: Self.wallClockMilliseconds())
                respond {
                    Etcdserverpb_AuthenticateResponse.with {
                        $0.header = self.header(position)
                        $0.token = token
                    }
                }
            }
            if !started { call.responder.fail(Self.grpcStatus(Self.rpcError(.tooManyRequests))) }
        }
    }
}

extension EtcdConversions {
    /// etcd's status code and message for an auth error.
    static func rpcError(auth error: AuthError) -> RPCError {
        let code: RPCError.Code
        switch error.grpcCode {
        case 3: code = .invalidArgument
        case 7: code = .permissionDenied
        case 8: code = .resourceExhausted
        case 16: code = .unauthenticated
        default: code = .failedPrecondition
        }
        return RPCError(code: code, message: error.message)
    }
}

