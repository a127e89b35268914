/// Permission checks (etcd `auth/range_perm_cache.go`, `etcdserver/apply_auth.go`): what a
/// user may do with a request, decided from the auth state alone, the same way on the server
/// that takes the call (to refuse early) and on every replica that applies the command.
extension AuthState {
    /// Whether `operation` may run on behalf of `user`; nil when it may, else etcd's error.
    /// Auth disabled: everything may run.
    ///
    /// Root may do anything. Otherwise (etcd's rules): a put needs write on its key (and read
    /// with `prevKV`); a delete needs write on its range (and read with `prevKV`); a txn needs
    /// read on every compare's range and the permission of every op of both branches, nested
    /// txns included; a compaction and every auth change need the root role. Alarms need
    /// nothing (etcd checks no permission on `Maintenance.Alarm`; a replica raises NOSPACE itself).
    public func check(_ operation: WriteOperation, user: String) -> AuthError? {
        guard isEnabled else { return nil }
        if case .alarm = operation { return nil }
        guard !user.isEmpty else { return .userEmpty }
        switch operation {
        case .alarm:
            return nil
        case .compact:
            return checkAdmin(user: user)
        case .auth(let change):
            if case .authorized = change { return .invalidAuthManagement }
            return checkAdmin(user: user)
        case .lease:
            // etcd checks no key for a grant; a revoke needs write permission on every key the
            // lease holds, which only the store knows (`KVStore.admit`).
            return nil
        case .put, .deleteRange, .txn:
            break
        }
        guard let account = users[user] else { return .permissionDenied }
        if account.roles.contains(Self.rootRole) { return nil }
        let permissions = UserPermissions(self, account)
        let permitted: Bool
        switch operation {
        case .put(let put): permitted = permissions.allows(RequestOp.put(put))
        case .deleteRange(let delete): permitted = permissions.allows(RequestOp.deleteRange(delete))
        case .txn(let txn): permitted = permissions.allows(RequestOp.txn(txn))
        case .compact, .auth, .alarm, .lease: preconditionFailure("handled above")
        }
        return permitted ? nil : .permissionDenied
    }

    /// Whether `user` may read `request`'s range; nil when it may (auth disabled: always).
    public func check(_ request: RangeRequest, user: String) -> AuthError? {
        guard isEnabled else { return nil }
        return checkKeys(user: user, type: .read, key: request.key, rangeEnd: request.rangeEnd)
    }

    /// Whether `user` may `type` (read or write) the keys `key`/`rangeEnd` (etcd's range
    /// convention): the check of a watch (read) and the lease hooks (write on attached keys).
    public func checkKeys(user: String, type: AuthPermissionType, key: [UInt8], rangeEnd: [UInt8]) -> AuthError? {
        guard isEnabled else { return nil }
        guard !user.isEmpty else { return .userEmpty }
        guard let account = users[user] else { return .permissionDenied }
        if account.roles.contains(Self.rootRole) { return nil }
        return UserPermissions(self, account).covers(type, key: key, rangeEnd: rangeEnd) ? nil : .permissionDenied
    }

    /// etcd's `IsAdminPermitted`: the user exists and holds the root role.
    public func checkAdmin(user: String) -> AuthError? {
        guard isEnabled else { return nil }
        guard !user.isEmpty else { return .userEmpty }
        guard let account = users[user] else { return .userNotFound }
        return account.roles.contains(Self.rootRole) ? nil : .permissionDenied
    }
}

/// One user's permissions merged over its roles, as etcd's `unifiedRangePermissions`:
/// sorted intervals per type, a request allowed when the union covers its whole range.
struct UserPermissions {
    /// `[start, end)`, `end == nil` meaning unbounded; sorted by start.
    typealias Interval = (start: [UInt8], end: [UInt8]?)
    let read: [Interval]
    let write: [Interval]

    init(_ state: AuthState, _ user: AuthUser) {
        var read: [Interval] = []
        var write: [Interval] = []
        for roleName in user.roles {
            guard let role = state.roles[roleName] else { continue }
            for permission in role.permissions {
                let interval = Self.interval(key: permission.key, rangeEnd: permission.rangeEnd)
                if permission.type.grants(.read) { read.append(interval) }
                if permission.type.grants(.write) { write.append(interval) }
            }
        }
        let byStart: (Interval, Interval) -> Bool = { KVBytes.compare($0.start, $1.start) < 0 }
        self.read = read.sorted(by: byStart)
        self.write = write.sorted(by: byStart)
    }

    /// etcd's range convention as an interval: a single key is `[key, key + 0x00)`.
    static func interval(key: [UInt8], rangeEnd: [UInt8]) -> Interval {
        if rangeEnd.isEmpty { return (key, key + [0]) }
        if rangeEnd == [0] { return (key, nil) }
        return (key, rangeEnd)
    }

    /// Whether the union of the `type` intervals covers `key`/`rangeEnd`. An empty range
    /// (`rangeEnd <= key`) is checked as its first key, never allowed for free.
    func covers(_ type: AuthPermissionType, key: [UInt8], rangeEnd: [UInt8]) -> Bool {
        var wanted = Self.interval(key: key, rangeEnd: rangeEnd)
        if let end = wanted.end, KVBytes.compare(end, key) <= 0 { wanted = Self.interval(key: key, rangeEnd: []) }
        var reached = wanted.start
        for interval in type == .write ? write : read {
            if KVBytes.compare(interval.start, reached) > 0 { return false }  // a gap before it
            guard let end = interval.end else { return true }
            if KVBytes.compare(end, reached) > 0 { reached = end }
            if let wantedEnd = wanted.end, KVBytes.compare(reached, wantedEnd) >= 0 { return true }
        }
        return false
    }

    /// etcd's `checkTxnReqsPermission` and the put/delete rules of `authApplierV3`.
    func allows(_ op: RequestOp) -> Bool {
        switch op {
        case .range(let range):
            return covers(.read, key: range.key, rangeEnd: range.rangeEnd)
        case .put(let put):
            return covers(.write, key: put.key, rangeEnd: [])
                && (!put.prevKV || covers(.read, key: put.key, rangeEnd: []))
        case .deleteRange(let delete):
            return covers(.write, key: delete.key, rangeEnd: delete.rangeEnd)
                && (!delete.prevKV || covers(.read, key: delete.key, rangeEnd: delete.rangeEnd))
        case .txn(let txn):
            return txn.compare.allSatisfy { covers(.read, key: $0.key, rangeEnd: $0.rangeEnd) }
                && txn.success.allSatisfy(allows) && txn.failure.allSatisfy(allows)
        }
    }
}
