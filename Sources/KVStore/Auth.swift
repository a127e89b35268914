/// etcd's authentication and authorization state (etcd `auth/store.go`): users, roles, key
/// permissions, the `root` user and role, and whether auth is enabled — part of the replicated
/// state machine, changed only by `AuthOperation`s applied from the log, so every replica holds
/// the same users and roles at the same point of the command sequence.
///
/// Passwords never reach the log: the server that takes a `UserAdd` or `UserChangePassword`
/// computes a slow, salted hash and proposes that (`AuthUser.passwordHash`, opaque here), so
/// every replica stores the same hash and none ever sees the clear password.
///
/// Tokens are self-verifying (see `tokenSecret`): no token is stored, so a token from one
/// replica is accepted by every other without replicating its issuance.
public struct AuthState: Sendable, Hashable {
    /// etcd's names: the user that may always do everything and the role that grants it.
    public static let rootUser = "root"
    public static let rootRole = "root"

    public internal(set) var isEnabled = false
    /// etcd's auth revision: one more for every change that took effect; 0 while nothing ever
    /// changed (then snapshots carry no auth section). Invariant: never decreases.
    public internal(set) var revision: UInt64 = 0
    public internal(set) var users: [String: AuthUser] = [:]
    public internal(set) var roles: [String: AuthRole] = [:]
    /// The key of the tokens' MACs, chosen at random by the replica that proposed `AuthEnable`
    /// and replicated with it (so every replica verifies every replica's tokens). Empty while
    /// auth is disabled: disabling forgets it, so tokens from before never come back.
    public internal(set) var tokenSecret: [UInt8] = []

    public init() {}

    /// Whether nothing was ever changed (the state of a store that never used auth).
    public var isPristine: Bool { revision == 0 && users.isEmpty && roles.isEmpty && !isEnabled }

    /// Whether `user` holds the root role (etcd's `hasRootRole`).
    public func hasRootRole(_ user: String) -> Bool {
        users[user]?.roles.contains(Self.rootRole) ?? false
    }
}

/// etcd's `authpb.User`, with the password as the server's hash.
public struct AuthUser: Sendable, Hashable {
    public var name: String
    /// The password verifier the proposing server computed (format is the server's); empty
    /// for a user added with `noPassword`, who can only be authenticated by a certificate.
    public var passwordHash: String
    public var noPassword: Bool
    /// Granted roles, sorted, without duplicates (etcd keeps them sorted too).
    public var roles: [String]
    /// The auth revision at which the password was last set. Tokens are bound to it, so a new
    /// password — or the user deleted and added again — ends every older token (etcd
    /// invalidates a user's tokens on both).
    public var credentialRevision: UInt64

    public init(name: String, passwordHash: String, noPassword: Bool, roles: [String], credentialRevision: UInt64) {
        self.name = name
        self.passwordHash = passwordHash
        self.noPassword = noPassword
        self.roles = roles
        self.credentialRevision = credentialRevision
    }
}

/// etcd's `authpb.Role`.
public struct AuthRole: Sendable, Hashable {
    public var name: String
    /// Sorted by key, then range end; at most one per (key, range end) (etcd's rule: granting
    /// again replaces the type).
    public var permissions: [AuthPermission]

    public init(name: String, permissions: [AuthPermission]) {
        self.name = name
        self.permissions = permissions
    }
}

/// etcd's `authpb.Permission.Type`.
public enum AuthPermissionType: UInt8, Sendable, Hashable, CaseIterable {
    case read = 0
    case write = 1
    case readwrite = 2

    func grants(_ needed: AuthPermissionType) -> Bool {
        self == .readwrite || self == needed
    }
}

/// etcd's `authpb.Permission`: a type on one key (`rangeEnd` empty), the range
/// `[key, rangeEnd)`, or every key from `key` on (`rangeEnd == [0]`, etcdctl's `--from-key`).
/// `etcdctl --prefix` sends the prefix's range end.
public struct AuthPermission: Sendable, Hashable {
    public var type: AuthPermissionType
    public var key: [UInt8]
    public var rangeEnd: [UInt8]

    public init(type: AuthPermissionType, key: [UInt8], rangeEnd: [UInt8] = []) {
        self.type = type
        self.key = key
        self.rangeEnd = rangeEnd
    }

    /// Order of a role's permission list: key, then range end (byte order).
    static func precedes(_ lhs: AuthPermission, _ rhs: AuthPermission) -> Bool {
        if lhs.key != rhs.key { return lhs.key.lexicographicallyPrecedes(rhs.key) }
        return lhs.rangeEnd.lexicographicallyPrecedes(rhs.rangeEnd)
    }
}

/// Changes of the auth state, proposed through the log like any write (operation tags
/// 16–27), and `authorized`, the envelope in which a server proposes a client's write when
/// auth is enabled: the user it authenticated, re-checked against the auth state every
/// replica has when it applies the command.
public indirect enum AuthOperation: Sendable, Hashable {
    /// `tokenSecret`: random bytes the proposing server chose (see `AuthState.tokenSecret`).
    case enable(tokenSecret: [UInt8])
    case disable
    case userAdd(name: String, passwordHash: String, noPassword: Bool)
    case userDelete(name: String)
    case userChangePassword(name: String, passwordHash: String)
    case userGrantRole(user: String, role: String)
    case userRevokeRole(user: String, role: String)
    case roleAdd(name: String)
    case roleDelete(name: String)
    case roleGrantPermission(role: String, permission: AuthPermission)
    case roleRevokePermission(role: String, key: [UInt8], rangeEnd: [UInt8])
    /// `operation` on behalf of `user` (etcd's request header `username`; etcd refuses the
    /// request at apply when the auth revision moved since the check, Synod checks again).
    case authorized(user: String, operation: WriteOperation)
}

/// What an auth change answers: the store revision (auth changes take no store revision;
/// etcd's header revision) and the auth revision after it.
public struct AuthResponse: Sendable, Hashable {
    public var revision: Int64
    public var authRevision: UInt64

    public init(revision: Int64, authRevision: UInt64) {
        self.revision = revision
        self.authRevision = authRevision
    }
}

/// etcd's auth errors (api/v3rpc/rpctypes/error.go), with its exact messages, plus Synod's
/// bounds on the auth state.
public enum AuthError: UInt8, Error, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case rootUserNotExist = 0
    case rootRoleNotExist = 1
    case userAlreadyExist = 2
    case userEmpty = 3
    case userNotFound = 4
    case roleAlreadyExist = 5
    case roleNotFound = 6
    case roleEmpty = 7
    case authFailed = 8
    case permissionDenied = 9
    case roleNotGranted = 10
    case permissionNotGranted = 11
    case authNotEnabled = 12
    case invalidAuthToken = 13
    case invalidAuthManagement = 14
    /// Synod's bounds (`AuthLimits`).
    case tooManyUsers = 15
    case tooManyRoles = 16
    case tooManyPermissions = 17
    case nameTooLong = 18

    public var message: String {
        switch self {
        case .rootUserNotExist: return "etcdserver: root user does not exist"
        case .rootRoleNotExist: return "etcdserver: root user does not have root role"
        case .userAlreadyExist: return "etcdserver: user name already exists"
        case .userEmpty: return "etcdserver: user name is empty"
        case .userNotFound: return "etcdserver: user name not found"
        case .roleAlreadyExist: return "etcdserver: role name already exists"
        case .roleNotFound: return "etcdserver: role name not found"
        case .roleEmpty: return "etcdserver: role name is empty"
        case .authFailed: return "etcdserver: authentication failed, invalid user ID or password"
        case .permissionDenied: return "etcdserver: permission denied"
        case .roleNotGranted: return "etcdserver: role is not granted to the user"
        case .permissionNotGranted: return "etcdserver: permission is not granted to the role"
        case .authNotEnabled: return "etcdserver: authentication is not enabled"
        case .invalidAuthToken: return "etcdserver: invalid auth token"
        case .invalidAuthManagement: return "etcdserver: invalid auth management"
        case .tooManyUsers: return "synod: too many users (limit \(AuthLimits.usersMax))"
        case .tooManyRoles: return "synod: too many roles (limit \(AuthLimits.rolesMax))"
        case .tooManyPermissions:
            return "synod: too many permissions in one role (limit \(AuthLimits.permissionsPerRoleMax))"
        case .nameTooLong: return "synod: user or role name too long (limit \(AuthLimits.nameBytesMax) bytes)"
        }
    }

    /// etcd's gRPC status code for the error (numbers of `google.rpc.Code`).
    public var grpcCode: Int {
        switch self {
        case .userEmpty, .roleEmpty, .authFailed, .invalidAuthManagement: return 3  // INVALID_ARGUMENT
        case .permissionDenied: return 7  // PERMISSION_DENIED
        case .invalidAuthToken: return 16  // UNAUTHENTICATED
        case .tooManyUsers, .tooManyRoles, .tooManyPermissions: return 8  // RESOURCE_EXHAUSTED
        case .nameTooLong: return 3
        default: return 9  // FAILED_PRECONDITION
        }
    }

    public var description: String { message }
}

/// Bounds of the auth state (STYLE §9). etcd has none; these keep every snapshot and every
/// permission check small.
public enum AuthLimits {
    public static let usersMax = 10_000
    public static let rolesMax = 10_000
    public static let permissionsPerRoleMax = 1_000
    public static let nameBytesMax = 1_024
    /// The server's password hash, at most (a PHC-style string is under 200 bytes).
    public static let passwordHashBytesMax = 1_024
    /// `AuthOperation.enable`'s secret: 16 to 64 bytes.
    public static let tokenSecretBytes = 16...64
}
