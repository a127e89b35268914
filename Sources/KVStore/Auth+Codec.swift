import ByteCodec

/// The binary forms of auth operations (in commands), auth results and errors (in the session
/// table) and the auth snapshot section. Same conventions as `WriteCommand+Codec.swift`.
/// ```
/// operation := tag(16 enable secret | 17 disable | 18 userAdd name hash flags(bit0 noPassword)
///              | 19 userDelete name | 20 userChangePassword name hash | 21 userGrantRole user role
///              | 22 userRevokeRole user role | 23 roleAdd name | 24 roleDelete name
///              | 25 roleGrantPermission role permission | 26 roleRevokePermission role key rangeEnd
///              | 27 authorized user operation)
/// permission := type(0 read | 1 write | 2 readwrite) key rangeEnd
/// result   := tag 6  revision authRevision
/// error    := tag 12 authError
/// section  := tag 0x41 ("A")  length  enabled(bool) revision secret
///             userCount (name hash noPassword(bool) credentialRevision roleCount role*)*
///             roleCount (name permissionCount permission*)*      -- users and roles by name
/// ```
enum AuthOperationTag: UInt8, CaseIterable {
    case enable = 16
    case disable = 17
    case userAdd = 18
    case userDelete = 19
    case userChangePassword = 20
    case userGrantRole = 21
    case userRevokeRole = 22
    case roleAdd = 23
    case roleDelete = 24
    case roleGrantPermission = 25
    case roleRevokePermission = 26
    case authorized = 27

    /// Operation tags reserved for auth (16–31).
    static let reserved: ClosedRange<UInt8> = 16...31
}

extension AuthResponse {
    /// `WriteResult`'s tag for an auth response (after 5 compact).
    static let resultTag: UInt8 = 6
}

extension AuthError {
    /// `KVError`'s tag for an auth error (after 11 staleRequest).
    static let errorTag: UInt8 = 12
}

extension AuthState {
    /// Tag of the optional snapshot section, written only when the state is not pristine, so
    /// the snapshot of a store that never used auth is byte for byte what older builds wrote.
    static let snapshotSectionTag: UInt8 = 0x41
}

private let noPasswordFlag: UInt8 = 1

extension ByteWriter {
    mutating func writeAuthOperation(_ change: AuthOperation) {
        switch change {
        case .enable(let secret):
            writeUInt8(AuthOperationTag.enable.rawValue)
            writeLengthPrefixed(secret)
        case .disable:
            writeUInt8(AuthOperationTag.disable.rawValue)
        case .userAdd(let name, let hash, let noPassword):
            writeUInt8(AuthOperationTag.userAdd.rawValue)
            writeString(name)
            writeString(hash)
            writeUInt8(noPassword ? noPasswordFlag : 0)
        case .userDelete(let name):
            writeUInt8(AuthOperationTag.userDelete.rawValue)
            writeString(name)
        case .userChangePassword(let name, let hash):
            writeUInt8(AuthOperationTag.userChangePassword.rawValue)
            writeString(name)
            writeString(hash)
        case .userGrantRole(let user, let role):
            writeUInt8(AuthOperationTag.userGrantRole.rawValue)
            writeString(user)
            writeString(role)
        case .userRevokeRole(let user, let role):
            writeUInt8(AuthOperationTag.userRevokeRole.rawValue)
            writeString(user)
            writeString(role)
        case .roleAdd(let name):
            writeUInt8(AuthOperationTag.roleAdd.rawValue)
            writeString(name)
        case .roleDelete(let name):
            writeUInt8(AuthOperationTag.roleDelete.rawValue)
            writeString(name)
        case .roleGrantPermission(let role, let permission):
            writeUInt8(AuthOperationTag.roleGrantPermission.rawValue)
            writeString(role)
            writePermission(permission)
        case .roleRevokePermission(let role, let key, let rangeEnd):
            writeUInt8(AuthOperationTag.roleRevokePermission.rawValue)
            writeString(role)
            writeLengthPrefixed(key)
            writeLengthPrefixed(rangeEnd)
        case .authorized(let user, let operation):
            writeUInt8(AuthOperationTag.authorized.rawValue)
            writeString(user)
            writeOperation(operation)
        }
    }

    mutating func writeString(_ text: String) {
        writeLengthPrefixed(Array(text.utf8))
    }

    mutating func writePermission(_ permission: AuthPermission) {
        writeUInt8(permission.type.rawValue)
        writeLengthPrefixed(permission.key)
        writeLengthPrefixed(permission.rangeEnd)
    }

    mutating func writeAuthResponse(_ response: AuthResponse) {
        writeUInt8(AuthResponse.resultTag)
        writeSigned(response.revision)
        writeVarint(response.authRevision)
    }

    mutating func writeAuthError(_ error: AuthError) {
        writeUInt8(AuthError.errorTag)
        writeUInt8(error.rawValue)
    }

    /// The snapshot section (nothing for a pristine state).
    mutating func writeAuthSection(_ state: AuthState) {
        guard !state.isPristine else { return }
        var body = ByteWriter()
        body.writeBool(state.isEnabled)
        body.writeVarint(state.revision)
        body.writeLengthPrefixed(state.tokenSecret)
        body.writeVarint(UInt64(state.users.count))
        for name in state.users.keys.sorted() {
            let user = state.users[name]!
            body.writeString(user.name)
            body.writeString(user.passwordHash)
            body.writeBool(user.noPassword)
            body.writeVarint(user.credentialRevision)
            body.writeVarint(UInt64(user.roles.count))
            for role in user.roles { body.writeString(role) }
        }
        body.writeVarint(UInt64(state.roles.count))
        for name in state.roles.keys.sorted() {
            let role = state.roles[name]!
            body.writeString(role.name)
            body.writeVarint(UInt64(role.permissions.count))
            for permission in role.permissions { body.writePermission(permission) }
        }
        writeUInt8(AuthState.snapshotSectionTag)
        writeLengthPrefixed(body.bytes)
    }
}

/// What `readOptionalSnapshotSections` found (each absent section at its empty value).
struct OptionalSnapshotSections {
    var auth = AuthState()
    var alarms: [AlarmMember] = []
    var leases: KVStore.RestoredLeases? = nil
}

extension ByteReader {
    /// The auth operation whose tag was just read.
    mutating func readAuthOperation(tag: UInt8, tagOffset: Int) throws(KVCodecError) -> AuthOperation {
        let limit = KVLimits.commandBytesMax
        switch AuthOperationTag(rawValue: tag) {
        case .enable: return .enable(tokenSecret: try readLengthPrefixed(max: limit, "auth.secret"))
        case .disable: return .disable
        case .userAdd:
            let name = try readString(field: "auth.user")
            let hash = try readString(field: "auth.passwordHash")
            let flags = try readUInt8()
            guard flags & ~noPasswordFlag == 0 else {
                throw KVCodecError(.unknownFlags(field: "auth.userAdd.flags", flags: flags), offset: offset - 1)
            }
            return .userAdd(name: name, passwordHash: hash, noPassword: flags & noPasswordFlag != 0)
        case .userDelete: return .userDelete(name: try readString(field: "auth.user"))
        case .userChangePassword:
            let name = try readString(field: "auth.user")
            return .userChangePassword(name: name, passwordHash: try readString(field: "auth.passwordHash"))
        case .userGrantRole:
            let user = try readString(field: "auth.user")
            return .userGrantRole(user: user, role: try readString(field: "auth.role"))
        case .userRevokeRole:
            let user = try readString(field: "auth.user")
            return .userRevokeRole(user: user, role: try readString(field: "auth.role"))
        case .roleAdd: return .roleAdd(name: try readString(field: "auth.role"))
        case .roleDelete: return .roleDelete(name: try readString(field: "auth.role"))
        case .roleGrantPermission:
            let role = try readString(field: "auth.role")
            return .roleGrantPermission(role: role, permission: try readPermission())
        case .roleRevokePermission:
            let role = try readString(field: "auth.role")
            let key = try readLengthPrefixed(max: limit, "auth.key")
            return .roleRevokePermission(
                role: role, key: key, rangeEnd: try readLengthPrefixed(max: limit, "auth.rangeEnd"))
        case .authorized:
            let user = try readString(field: "auth.user")
            let innerOffset = offset
            let operation = try readOperation()
            // One envelope only: the store never runs a command as two users.
            if case .auth(.authorized) = operation {
                throw KVCodecError(
                    .unknownTag(field: "auth.authorized.operation", tag: AuthOperationTag.authorized.rawValue),
                    offset: innerOffset)
            }
            return .authorized(user: user, operation: operation)
        case nil:
            throw KVCodecError(.unknownTag(field: "operation", tag: tag), offset: tagOffset)
        }
    }

    mutating func readString(field: String) throws(KVCodecError) -> String {
        let start = offset
        let bytes = try readLengthPrefixed(max: KVLimits.commandBytesMax, field)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KVCodecError(.unknownTag(field: field + " (not UTF-8)", tag: bytes.first ?? 0), offset: start)
        }
        return text
    }

    mutating func readPermission() throws(KVCodecError) -> AuthPermission {
        let typeOffset = offset
        let typeTag = try readUInt8()
        guard let type = AuthPermissionType(rawValue: typeTag) else {
            throw KVCodecError(.unknownTag(field: "auth.permission.type", tag: typeTag), offset: typeOffset)
        }
        let key = try readLengthPrefixed(max: KVLimits.commandBytesMax, "auth.permission.key")
        let rangeEnd = try readLengthPrefixed(max: KVLimits.commandBytesMax, "auth.permission.rangeEnd")
        return AuthPermission(type: type, key: key, rangeEnd: rangeEnd)
    }

    /// After `AuthResponse.resultTag`.
    mutating func readAuthResponse() throws(KVCodecError) -> AuthResponse {
        let revision = try readSigned()
        return AuthResponse(revision: revision, authRevision: try readVarint())
    }

    /// After `AuthError.errorTag`.
    mutating func readAuthError() throws(KVCodecError) -> AuthError {
        let tagOffset = offset
        let tag = try readUInt8()
        guard let error = AuthError(rawValue: tag) else {
            throw KVCodecError(.unknownTag(field: "auth.error", tag: tag), offset: tagOffset)
        }
        return error
    }

    /// The tagged sections after a snapshot's sessions, in any order: auth, alarms, leases; a
    /// section this build does not know is refused as malformed.
    mutating func readOptionalSnapshotSections() throws(KVCodecError) -> OptionalSnapshotSections {
        var sections = OptionalSnapshotSections()
        while !isAtEnd {
            let tagOffset = offset
            let tag = try readUInt8()
            switch tag {
            case AuthState.snapshotSectionTag:
                let body = try readLengthPrefixed(max: Int.max, "snapshot.auth")
                var section = ByteReader(body)
                sections.auth = try section.readAuthSection()
                try section.expectEnd()
            case AlarmCodec.snapshotSectionTag:
                sections.alarms = try readAlarmsSectionBody()
            case KVStore.leaseSectionTag:
                sections.leases = try KVStore.readLeaseSectionBody(&self)
            default:
                throw KVCodecError(.unknownTag(field: "snapshot.section", tag: tag), offset: tagOffset)
            }
        }
        return sections
    }

    private mutating func readAuthSection() throws(KVCodecError) -> AuthState {
        var state = AuthState()
        state.isEnabled = try readBool("auth.enabled")
        state.revision = try readVarint()
        state.tokenSecret = try readLengthPrefixed(max: Int.max, "auth.secret")
        let userCount = try readCount(max: AuthLimits.usersMax, minimumElementBytes: 5, "auth.users")
        for _ in 0..<userCount {
            let name = try readString(field: "auth.user")
            let hash = try readString(field: "auth.passwordHash")
            let noPassword = try readBool("auth.noPassword")
            let credentialRevision = try readVarint()
            let roleCount = try readCount(max: AuthLimits.rolesMax, "auth.user.roles")
            var roles: [String] = []
            for _ in 0..<roleCount { roles.append(try readString(field: "auth.user.role")) }
            state.users[name] = AuthUser(
                name: name, passwordHash: hash, noPassword: noPassword, roles: roles,
                credentialRevision: credentialRevision)
        }
        let roleCount = try readCount(max: AuthLimits.rolesMax, minimumElementBytes: 2, "auth.roles")
        for _ in 0..<roleCount {
            let name = try readString(field: "auth.role")
            let count = try readCount(max: AuthLimits.permissionsPerRoleMax, minimumElementBytes: 3, "auth.permissions")
            var permissions: [AuthPermission] = []
            for _ in 0..<count { permissions.append(try readPermission()) }
            state.roles[name] = AuthRole(name: name, permissions: permissions)
        }
        return state
    }
}

extension AuthState {
    /// What a restored auth section must satisfy; nil when it does.
    func restoredStateProblem() -> String? {
        if isEnabled {
            guard let root = users[Self.rootUser], root.roles.contains(Self.rootRole) else {
                return "auth enabled without a root user holding the root role"
            }
            if !AuthLimits.tokenSecretBytes.contains(tokenSecret.count) { return "auth enabled without a token secret" }
        }
        for (name, user) in users {
            if user.name != name || name.isEmpty { return "user entry \(name) names \(user.name)" }
            if user.roles != user.roles.sorted() || Set(user.roles).count != user.roles.count {
                return "roles of user \(name) not sorted and unique"
            }
            if user.credentialRevision > revision { return "user \(name) set after the auth revision" }
        }
        for (name, role) in roles {
            if role.name != name || name.isEmpty { return "role entry \(name) names \(role.name)" }
            for position in role.permissions.indices.dropFirst()
            where !AuthPermission.precedes(role.permissions[position - 1], role.permissions[position]) {
                return "permissions of role \(name) not sorted and unique"
            }
        }
        return nil
    }

    /// A fingerprint of the state for `stateDigest()` (0 while pristine, so stores that never
    /// used auth keep their digests).
    func digest() -> UInt64 {
        guard !isPristine else { return 0 }
        var writer = ByteWriter()
        writer.writeAuthSection(self)
        var hasher = FNV1a()
        hasher.combine(writer.bytes)
        return hasher.finalized
    }
}
