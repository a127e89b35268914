/// Applying auth changes (etcd `auth/store.go`) and admitting writes when auth is enabled.
///
/// Admission (`admit`), run on every replica when it applies a command, so all decide alike:
///
/// | auth      | command                         | outcome                                        |
/// |-----------|---------------------------------|------------------------------------------------|
/// | disabled  | anything                        | runs (an `authorized` envelope is unwrapped)   |
/// | enabled   | `authorized(user, op)`          | `op` runs if `check(op, user)` allows it now   |
/// | enabled   | a bare compaction               | runs: the leader's automatic compaction        |
/// | enabled   | a bare lease expiry             | runs: the leader's lease clock                 |
/// | enabled   | any other bare command          | refused, "user name is empty"                  |
///
/// So a write checked by the server before an auth change (a permission revoked, the user
/// deleted, auth enabled) is refused if the change took effect first — the window etcd closes
/// with its auth revision, closed here by checking again (and without refusing writes that
/// an unrelated auth change did not affect). A denied write changes nothing and takes no
/// revision.
extension KVStore {
    /// The auth state (users, roles, permissions, enabled flag).
    public var authState: AuthState { auth }

    /// The operation to run for `requested`, or the auth error that refuses it (see above).
    func admit(_ requested: WriteOperation) throws(KVError) -> WriteOperation {
        guard case .auth(.authorized(let user, let operation)) = requested else {
            guard auth.isEnabled else { return requested }
            // The leader's automatic compaction carries no user; anything else bare came from a
            // server that had not applied `enable` yet (etcd: no user is "user name is empty").
            if case .compact = requested { return requested }
            // Alarms need no permission (etcd); the replica raises NOSPACE without a user.
            if case .alarm = requested { return requested }
            // The leader's lease expiries and epochs carry no user either.
            if case .lease(.expire) = requested { return requested }
            if case .lease(.epoch) = requested { return requested }
            throw .auth(.userEmpty)
        }
        if let error = auth.check(operation, user: user) { throw .auth(error) }
        // etcd's checkLeasePuts: revoking a lease, or putting a key under one, deletes or may
        // later delete every key the lease holds, so it needs write permission on each.
        let leaseID: Int64
        switch operation {
        case .lease(.revoke(let id)): leaseID = id
        case .put(let put) where put.lease != 0: leaseID = put.lease
        default: return operation
        }
        for key in leases[leaseID]?.keys ?? [] {
            if let error = auth.checkKeys(user: user, type: .write, key: key, rangeEnd: []) { throw .auth(error) }
        }
        return operation
    }

    static func validate(_ change: AuthOperation) throws(KVError) {
        func name(_ text: String, empty: AuthError) throws(KVError) {
            if text.isEmpty { throw .auth(empty) }
            if text.utf8.count > AuthLimits.nameBytesMax { throw .auth(.nameTooLong) }
        }
        func hash(_ text: String) throws(KVError) {
            if text.utf8.count > AuthLimits.passwordHashBytesMax { throw .auth(.invalidAuthManagement) }
        }
        switch change {
        case .enable(let secret):
            if !AuthLimits.tokenSecretBytes.contains(secret.count) { throw .auth(.invalidAuthManagement) }
        case .disable:
            break
        case .userAdd(let user, let passwordHash, _):
            try name(user, empty: .userEmpty)
            try hash(passwordHash)
        case .userChangePassword(let user, let passwordHash):
            try name(user, empty: .userEmpty)
            try hash(passwordHash)
        case .userDelete(let user):
            try name(user, empty: .userEmpty)
        case .userGrantRole(let user, let role), .userRevokeRole(let user, let role):
            try name(user, empty: .userEmpty)
            try name(role, empty: .roleEmpty)
        case .roleAdd(let role), .roleDelete(let role):
            try name(role, empty: .roleEmpty)
        case .roleGrantPermission(let role, let permission):
            try name(role, empty: .roleEmpty)
            if permission.key.isEmpty { throw .emptyKey }
            try validateRange(RangeRequest(key: permission.key, rangeEnd: permission.rangeEnd))
        case .roleRevokePermission(let role, let key, let rangeEnd):
            try name(role, empty: .roleEmpty)
            try validateRange(RangeRequest(key: key.isEmpty ? [0] : key, rangeEnd: rangeEnd))
        case .authorized(let user, let operation):
            try name(user, empty: .userEmpty)
            if case .auth(.authorized) = operation { throw .auth(.invalidAuthManagement) }
            try validate(operation)
        }
    }

    static func payloadBytes(_ change: AuthOperation) -> Int {
        switch change {
        case .authorized(_, let operation): return payloadBytes(operation)
        case .roleGrantPermission(_, let permission): return permission.key.count + permission.rangeEnd.count
        case .roleRevokePermission(_, let key, let rangeEnd): return key.count + rangeEnd.count
        default: return 0
        }
    }

    /// Applies one auth change (never `authorized`, which `admit` unwrapped). Auth changes
    /// take no store revision; every one that takes effect takes the next auth revision.
    mutating func applyAuth(_ change: AuthOperation) -> WriteResult {
        let outcome = auth.apply(change)
        switch outcome {
        case .failure(let error): return .failure(.auth(error), revision: revision)
        case .changed: auth.revision += 1
        case .unchanged: break
        }
        return .auth(AuthResponse(revision: revision, authRevision: auth.revision))
    }
}

enum AuthChangeOutcome {
    case changed
    /// etcd answers success without a change (enable when enabled, a role granted twice).
    case unchanged
    case failure(AuthError)
}

extension AuthState {
    /// etcd's rules for each change (auth/store.go); the caller bumps the revision.
    mutating func apply(_ change: AuthOperation) -> AuthChangeOutcome {
        let nextRevision = revision + 1
        switch change {
        case .enable(let secret):
            if isEnabled { return .unchanged }
            guard let root = users[Self.rootUser] else { return .failure(.rootUserNotExist) }
            guard root.roles.contains(Self.rootRole) else { return .failure(.rootRoleNotExist) }
            isEnabled = true
            tokenSecret = secret
        case .disable:
            if !isEnabled { return .unchanged }
            isEnabled = false
            tokenSecret = []
        case .userAdd(let name, let passwordHash, let noPassword):
            if users[name] != nil { return .failure(.userAlreadyExist) }
            if users.count >= AuthLimits.usersMax { return .failure(.tooManyUsers) }
            users[name] = AuthUser(
                name: name, passwordHash: noPassword ? "" : passwordHash, noPassword: noPassword, roles: [],
                credentialRevision: nextRevision)
        case .userDelete(let name):
            if isEnabled && name == Self.rootUser { return .failure(.invalidAuthManagement) }
            if users.removeValue(forKey: name) == nil { return .failure(.userNotFound) }
        case .userChangePassword(let name, let passwordHash):
            guard var user = users[name] else { return .failure(.userNotFound) }
            user.passwordHash = passwordHash
            user.noPassword = false
            user.credentialRevision = nextRevision
            users[name] = user
        case .userGrantRole(let name, let role):
            guard var user = users[name] else { return .failure(.userNotFound) }
            // etcd lets root be granted before the root role exists.
            if role != Self.rootRole && roles[role] == nil { return .failure(.roleNotFound) }
            if user.roles.contains(role) { return .unchanged }
            user.roles.append(role)
            user.roles.sort()
            users[name] = user
        case .userRevokeRole(let name, let role):
            if isEnabled && name == Self.rootUser && role == Self.rootRole { return .failure(.invalidAuthManagement) }
            guard var user = users[name] else { return .failure(.userNotFound) }
            guard let position = user.roles.firstIndex(of: role) else { return .failure(.roleNotGranted) }
            user.roles.remove(at: position)
            users[name] = user
        case .roleAdd(let name):
            if roles[name] != nil { return .failure(.roleAlreadyExist) }
            if roles.count >= AuthLimits.rolesMax { return .failure(.tooManyRoles) }
            roles[name] = AuthRole(name: name, permissions: [])
        case .roleDelete(let name):
            if isEnabled && name == Self.rootRole { return .failure(.invalidAuthManagement) }
            if roles.removeValue(forKey: name) == nil { return .failure(.roleNotFound) }
            // Sorted so the change is the same whatever the dictionary's order.
            for userName in users.keys.sorted() {
                guard var user = users[userName], let position = user.roles.firstIndex(of: name) else { continue }
                user.roles.remove(at: position)
                users[userName] = user
            }
        case .roleGrantPermission(let name, let permission):
            guard var role = roles[name] else { return .failure(.roleNotFound) }
            if let position = role.permissions.firstIndex(where: {
                $0.key == permission.key && $0.rangeEnd == permission.rangeEnd
            }) {
                role.permissions[position].type = permission.type
            } else {
                if role.permissions.count >= AuthLimits.permissionsPerRoleMax { return .failure(.tooManyPermissions) }
                role.permissions.append(permission)
                role.permissions.sort(by: AuthPermission.precedes)
            }
            roles[name] = role
        case .roleRevokePermission(let name, let key, let rangeEnd):
            guard var role = roles[name] else { return .failure(.roleNotFound) }
            guard let position = role.permissions.firstIndex(where: { $0.key == key && $0.rangeEnd == rangeEnd }) else {
                return .failure(.permissionNotGranted)
            }
            role.permissions.remove(at: position)
            roles[name] = role
        case .authorized:
            preconditionFailure("an authorized envelope reached applyAuth (admit unwraps it)")
        }
        return .changed
    }
}
