import ByteCodec
import Testing

@testable import KVStore

/// Users, roles, permissions and admission in the state machine (KVStore+Auth.swift).
@Suite("auth")
struct AuthTests {
    static let secret = [UInt8](repeating: 7, count: 32)

    /// root (root role) and site-a (readwrite on the prefix patients/site-a/), auth enabled.
    static func siteStore() -> KVStore {
        var store = KVStore()
        for change: AuthOperation in [
            .userAdd(name: "root", passwordHash: "h-root", noPassword: false),
            .roleAdd(name: "root"),
            .userGrantRole(user: "root", role: "root"),
            .userAdd(name: "site-a", passwordHash: "h-a", noPassword: false),
            .roleAdd(name: "site-a-rw"),
            .roleGrantPermission(
                role: "site-a-rw",
                permission: AuthPermission(
                    type: .readwrite, key: b("patients/site-a/"), rangeEnd: b("patients/site-a0"))),
            .userGrantRole(user: "site-a", role: "site-a-rw"),
            .enable(tokenSecret: secret),
        ] {
            let result = store.authChange(change)
            precondition(result.error == nil, "setup \(change): \(result)")
        }
        return store
    }

    @Test("auth enable needs a root user holding the root role (etcd's errors)")
    func enableNeedsRoot() {
        var store = KVStore()
        #expect(store.authChange(.enable(tokenSecret: Self.secret)).error == .auth(.rootUserNotExist))
        store.authChange(.userAdd(name: "root", passwordHash: "h", noPassword: false))
        #expect(store.authChange(.enable(tokenSecret: Self.secret)).error == .auth(.rootRoleNotExist))
        // etcd lets the root role be granted before it exists as a role.
        #expect(store.authChange(.userGrantRole(user: "root", role: "root")).error == nil)
        #expect(store.authChange(.enable(tokenSecret: Self.secret)).error == nil)
        #expect(store.authState.isEnabled)
        #expect(store.authState.tokenSecret == Self.secret)
        #expect(store.revision == 1, "auth changes take no store revision")
    }

    @Test("site-a writes its prefix; a denied write changes nothing and takes no revision")
    func siteScopedWrites() {
        var store = Self.siteStore()
        let allowed = store.apply(as: "site-a", .put(PutRequest(key: b("patients/site-a/p1"), value: b("r1"))))
        #expect(allowed.error == nil)
        #expect(store.value("patients/site-a/p1") == "r1")
        let before = store
        let denied = store.apply(as: "site-a", .put(PutRequest(key: b("patients/site-b/p1"), value: b("stolen"))))
        #expect(denied.error == .auth(.permissionDenied))
        #expect(store == before, "a denied write changed the store")
        #expect(store.stateDigest() == before.stateDigest())
        // Delete over a range wider than the permission; a txn whose compare reads site-b.
        #expect(
            store.apply(as: "site-a", .deleteRange(DeleteRangeRequest(key: b("patients/"), rangeEnd: b("patients0"))))
                .error
                == .auth(.permissionDenied))
        let sneaky = TxnRequest(
            compare: [Compare(key: b("patients/site-b/p1"), result: .equal, target: .version(0))],
            success: [.put(PutRequest(key: b("patients/site-a/p2"), value: b("x")))])
        #expect(store.apply(as: "site-a", .txn(sneaky)).error == .auth(.permissionDenied))
        let nested = TxnRequest(success: [
            .txn(TxnRequest(failure: [.deleteRange(DeleteRangeRequest(key: b("other")))]))
        ])
        #expect(store.apply(as: "site-a", .txn(nested)).error == .auth(.permissionDenied))
        #expect(store == before)
        // Root may do anything; compaction needs root.
        #expect(store.apply(as: "root", .put(PutRequest(key: b("patients/site-b/p1"), value: b("ok")))).error == nil)
        #expect(store.apply(as: "site-a", .compact(CompactionRequest(revision: 2))).error == .auth(.permissionDenied))
        #expect(store.apply(as: "root", .compact(CompactionRequest(revision: 2))).error == nil)
    }

    @Test("with auth enabled a bare write is refused (user name empty); the leader's compaction is not")
    func bareWrites() {
        var store = Self.siteStore()
        #expect(store.put("patients/site-a/x", "y").error == .auth(.userEmpty))
        #expect(store.authChange(.userAdd(name: "eve", passwordHash: "h", noPassword: false)).error == .auth(.userEmpty))
        store.apply(as: "root", .put(PutRequest(key: b("k"), value: b("v"))))
        let compaction = store.apply(
            WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: 2))))
        #expect(compaction.error == nil)
    }

    @Test("a permission revoked between the server's check and the apply still denies the write")
    func revokedBeforeApply() {
        var store = Self.siteStore()
        let checked = WriteOperation.put(PutRequest(key: b("patients/site-a/p1"), value: b("late")))
        #expect(store.authState.check(checked, user: "site-a") == nil, "the server would propose it")
        store.apply(as: "root", .auth(.userRevokeRole(user: "site-a", role: "site-a-rw")))
        #expect(store.apply(as: "site-a", checked).error == .auth(.permissionDenied))
        #expect(store.value("patients/site-a/p1") == nil)
        // A user deleted meanwhile: denied too.
        store.apply(as: "root", .auth(.userGrantRole(user: "site-a", role: "site-a-rw")))
        store.apply(as: "root", .auth(.userDelete(name: "site-a")))
        #expect(store.apply(as: "site-a", checked).error == .auth(.permissionDenied))
    }

    @Test("auth changes need root once auth is enabled; root cannot be removed")
    func adminRules() {
        var store = Self.siteStore()
        #expect(store.apply(as: "site-a", .auth(.roleAdd(name: "x"))).error == .auth(.permissionDenied))
        #expect(store.apply(as: "ghost", .auth(.roleAdd(name: "x"))).error == .auth(.userNotFound))
        #expect(store.apply(as: "root", .auth(.roleAdd(name: "x"))).error == nil)
        #expect(store.apply(as: "root", .auth(.roleAdd(name: "x"))).error == .auth(.roleAlreadyExist))
        #expect(store.apply(as: "root", .auth(.userDelete(name: "root"))).error == .auth(.invalidAuthManagement))
        #expect(store.apply(as: "root", .auth(.roleDelete(name: "root"))).error == .auth(.invalidAuthManagement))
        #expect(
            store.apply(as: "root", .auth(.userRevokeRole(user: "root", role: "root"))).error
                == .auth(.invalidAuthManagement))
        #expect(
            store.apply(as: "root", .auth(.userRevokeRole(user: "site-a", role: "x"))).error == .auth(.roleNotGranted))
        #expect(
            store.apply(as: "root", .auth(.roleRevokePermission(role: "x", key: b("a"), rangeEnd: []))).error
                == .auth(.permissionNotGranted))
        // Deleting a role takes it from every user.
        #expect(store.apply(as: "root", .auth(.roleDelete(name: "site-a-rw"))).error == nil)
        #expect(store.authState.users["site-a"]?.roles == [])
        // Disable, then anyone may write again.
        #expect(store.apply(as: "root", .auth(.disable)).error == nil)
        #expect(store.authState.tokenSecret.isEmpty)
        #expect(store.put("anything", "v").error == nil)
    }

    @Test("a password change moves the user's credential revision (ending older tokens)")
    func credentialRevision() {
        var store = Self.siteStore()
        let before = store.authState.users["site-a"]!.credentialRevision
        #expect(store.apply(as: "root", .auth(.userChangePassword(name: "site-a", passwordHash: "h2"))).error == nil)
        let after = store.authState.users["site-a"]!
        #expect(after.credentialRevision > before)
        #expect(after.passwordHash == "h2")
    }

    @Test("permission coverage: unions of ranges, single keys, from-key, gaps")
    func coverage() {
        var state = AuthState()
        state.isEnabled = true
        state.users["u"] = AuthUser(
            name: "u", passwordHash: "", noPassword: true, roles: ["a", "b"], credentialRevision: 1)
        state.roles["a"] = AuthRole(
            name: "a", permissions: [AuthPermission(type: .read, key: b("a"), rangeEnd: b("c"))])
        state.roles["b"] = AuthRole(
            name: "b",
            permissions: [
                AuthPermission(type: .readwrite, key: b("c"), rangeEnd: b("e")),
                AuthPermission(type: .write, key: b("x")),
                AuthPermission(type: .read, key: b("m"), rangeEnd: [0]),
            ])
        func read(_ key: String, _ end: [UInt8] = []) -> Bool {
            state.checkKeys(user: "u", type: .read, key: b(key), rangeEnd: end) == nil
        }
        func write(_ key: String, _ end: [UInt8] = []) -> Bool {
            state.checkKeys(user: "u", type: .write, key: b(key), rangeEnd: end) == nil
        }
        #expect(read("a", b("e")), "[a,c) and [c,e) together cover [a,e)")
        #expect(!read("a", b("f")))
        #expect(!write("a", b("d")), "write only on [c,e) and x")
        #expect(write("c", b("e")))
        #expect(write("x"))
        #expect(!write("x", b("y")), "a single-key permission does not cover a range after it")
        #expect(!write("xa"))
        #expect(read("m", [0]), "from-key covers from-key")
        #expect(read("zzz"))
        #expect(!read("l", [0]))
        #expect(state.checkKeys(user: "nobody", type: .read, key: b("a"), rangeEnd: []) == .permissionDenied)
        #expect(state.checkKeys(user: "", type: .read, key: b("a"), rangeEnd: []) == .userEmpty)
    }

    @Test("auth operations and results survive the command and result codecs")
    func codecRoundTrip() throws {
        let changes: [AuthOperation] = [
            .enable(tokenSecret: Self.secret), .disable,
            .userAdd(name: "ü", passwordHash: "pbkdf2$1$x$y", noPassword: false),
            .userAdd(name: "n", passwordHash: "", noPassword: true),
            .userDelete(name: "a"), .userChangePassword(name: "a", passwordHash: "h"),
            .userGrantRole(user: "a", role: "r"), .userRevokeRole(user: "a", role: "r"),
            .roleAdd(name: "r"), .roleDelete(name: "r"),
            .roleGrantPermission(role: "r", permission: AuthPermission(type: .write, key: b("k"), rangeEnd: [0])),
            .roleRevokePermission(role: "r", key: b("k"), rangeEnd: b("l")),
            .authorized(
                user: "a", operation: .txn(TxnRequest(success: [.put(PutRequest(key: b("k"), value: b("v")))]))),
            .authorized(user: "root", operation: .auth(.roleAdd(name: "q"))),
        ]
        for change in changes {
            let command = WriteCommand(requestID: RequestID(clientID: 9, sequence: 3), operation: .auth(change))
            #expect(try WriteCommand.decode(command.encode()) == command, "\(change)")
        }
        // Two envelopes never decode.
        let doubled = WriteCommand(
            requestID: .none,
            operation: .auth(
                .authorized(user: "a", operation: .auth(.authorized(user: "b", operation: .auth(.disable))))))
        #expect(throws: KVCodecError.self) { try WriteCommand.decode(doubled.encode()) }
        for result: WriteResult in [
            .auth(AuthResponse(revision: 4, authRevision: 9)), .failure(.auth(.permissionDenied), revision: 3),
        ] {
            var writer = ByteWriter()
            writer.writeResult(result)
            var reader = ByteReader(writer.bytes)
            #expect(try reader.readResult() == result)
        }
    }

    @Test("snapshots keep the auth state and the sessions' auth results; a store without auth writes no section")
    func snapshots() throws {
        var store = Self.siteStore()
        store.apply(as: "site-a", .put(PutRequest(key: b("patients/site-a/p"), value: b("v"))))
        _ = store.apply(
            WriteCommand(
                requestID: RequestID(clientID: 5, sequence: 1),
                operation: .auth(
                    .authorized(user: "site-a", operation: .put(PutRequest(key: b("nope"), value: b("v")))))))
        _ = store.apply(
            WriteCommand(
                requestID: RequestID(clientID: 6, sequence: 1),
                operation: .auth(.authorized(user: "root", operation: .auth(.roleAdd(name: "later"))))))
        let restored = try KVStore(snapshot: store.snapshot())
        #expect(restored == store)
        #expect(restored.authState == store.authState)
        #expect(restored.stateDigest() == store.stateDigest())
        #expect(restored.snapshot() == store.snapshot())

        var plain = KVStore()
        plain.put("k", "v")
        let bytes = plain.snapshot()
        #expect(try KVStore(snapshot: bytes).authState.isPristine)
        var withoutSection = plain
        withoutSection.authChange(.roleAdd(name: "r"))
        #expect(withoutSection.snapshot().count > bytes.count, "a non-pristine auth state adds a section")
    }

    @Test("validation: empty names, oversized names, nested envelopes, bad secrets")
    func validation() {
        #expect(throws: KVError.auth(.userEmpty)) {
            try KVStore.validate(.auth(.userAdd(name: "", passwordHash: "", noPassword: true)))
        }
        #expect(throws: KVError.auth(.roleEmpty)) { try KVStore.validate(.auth(.roleAdd(name: ""))) }
        #expect(throws: KVError.auth(.nameTooLong)) {
            try KVStore.validate(.auth(.roleAdd(name: String(repeating: "r", count: AuthLimits.nameBytesMax + 1))))
        }
        #expect(throws: KVError.auth(.invalidAuthManagement)) { try KVStore.validate(.auth(.enable(tokenSecret: [1]))) }
        #expect(throws: KVError.auth(.userEmpty)) {
            try KVStore.validate(.auth(.authorized(user: "", operation: .put(PutRequest(key: b("k"), value: [])))))
        }
        #expect(throws: KVError.emptyKey) {
            try KVStore.validate(.auth(.authorized(user: "u", operation: .put(PutRequest(key: [], value: [])))))
        }
    }

    @Test("leases under auth: revoking or attaching needs write permission on every key the lease holds; expiry needs no user")
    func leasePermissions() {
        var store = Self.siteStore()
        // root puts a site-a key and a site-b key under lease 7.
        #expect(store.apply(as: "root", .lease(.grant(id: 7, ttlSeconds: 60))).error == nil)
        #expect(store.apply(as: "root", .put(PutRequest(key: b("patients/site-a/p1"), value: b("a"), lease: 7))).error == nil)
        #expect(store.apply(as: "root", .put(PutRequest(key: b("patients/site-b/p1"), value: b("b"), lease: 7))).error == nil)
        let before = store
        // site-a may not revoke it (it would delete site-b's key), nor attach a key to it.
        #expect(store.apply(as: "site-a", .lease(.revoke(id: 7))).error == .auth(.permissionDenied))
        #expect(
            store.apply(as: "site-a", .put(PutRequest(key: b("patients/site-a/p2"), value: b("x"), lease: 7))).error
                == .auth(.permissionDenied))
        #expect(store == before, "a denied lease call changed the store")
        // Its own lease over its own keys: grant, attach, revoke.
        #expect(store.apply(as: "site-a", .lease(.grant(id: 8, ttlSeconds: 60))).error == nil)
        #expect(store.apply(as: "site-a", .put(PutRequest(key: b("patients/site-a/p3"), value: b("c"), lease: 8))).error == nil)
        #expect(store.apply(as: "site-a", .lease(.revoke(id: 8))).error == nil)
        #expect(store.value("patients/site-a/p3") == nil, "the revoke deleted the lease's key")
        // A bare command is refused ("user name is empty") except the leader's expiry.
        #expect(store.lease(.revoke(id: 7)).error == .auth(.userEmpty))
        #expect(store.lease(.expire(id: 7, epoch: nil)).error == nil)
        #expect(store.value("patients/site-b/p1") == nil && store.value("patients/site-a/p1") == nil)
    }
}

extension KVStore {
    @discardableResult
    mutating func authChange(_ change: AuthOperation) -> WriteResult {
        apply(WriteCommand(requestID: .none, operation: .auth(change)))
    }

    @discardableResult
    mutating func apply(as user: String, _ operation: WriteOperation) -> WriteResult {
        apply(WriteCommand(requestID: .none, operation: .auth(.authorized(user: user, operation: operation))))
    }
}
