import KVStore
import Linearizability
import Paxos

/// Auth in the simulator (`SimulationOptions.auth`): the cluster's users, roles and the
/// enabled flag are set up through the log by client 1 before it does anything else, every
/// client's writes then go through as user `writer` (readwrite on every key `k…`), and now and
/// then a client writes as user `guest`, who may read but not write them. The checks:
///
/// - a guest write is answered "permission denied" (never a success), whatever the faults,
///   retries and leader changes it meets;
/// - no replica's store ever holds a value a guest wrote, in its live keys or in any retained
///   version (a denied write never changes the store);
/// - the writer's operations stay linearizable (the usual history check), and all replicas
///   end with equal stores, auth state included (the digest covers it).
///
/// Guest writes start only once client 1 has seen `AuthEnable` succeed, so each was issued
/// while auth was enabled (the simulation never disables it).
struct SimulationAuthModel {
    static let writer = "writer"
    static let guest = "guest"
    /// Prefix of every value a guest writes: none may ever reach a store.
    static let deniedValuePrefix = "denied."
    /// Percent of operations that are guest writes once auth is enabled.
    static let guestWritePercent: UInt64 = 10

    /// The changes client 1 makes first, in order; a step is retried until it succeeds.
    static let setup: [AuthOperation] = [
        .userAdd(name: "root", passwordHash: "sim", noPassword: false),
        .roleAdd(name: AuthState.rootRole),
        .userGrantRole(user: "root", role: AuthState.rootRole),
        .roleAdd(name: "rw"),
        .roleGrantPermission(
            role: "rw", permission: AuthPermission(type: .readwrite, key: Array("k".utf8), rangeEnd: Array("l".utf8))),
        // The lease holders' keys (Simulation+Leases.swift): revoking a lease needs write
        // permission on every key it holds.
        .roleGrantPermission(
            role: "rw",
            permission: AuthPermission(
                type: .readwrite, key: Array("lease-key-".utf8), rangeEnd: Array("lease-key.".utf8))),
        .roleAdd(name: "ro"),
        .roleGrantPermission(
            role: "ro", permission: AuthPermission(type: .read, key: Array("k".utf8), rangeEnd: Array("l".utf8))),
        .userAdd(name: writer, passwordHash: "sim", noPassword: false),
        .userGrantRole(user: writer, role: "rw"),
        .userAdd(name: guest, passwordHash: "sim", noPassword: false),
        .userGrantRole(user: guest, role: "ro"),
        .enable(tokenSecret: Array(repeating: 0x5A, count: 32)),
    ]

    /// Setup steps client 1 has seen succeed.
    var setupDone = 0
    var isEnabled: Bool { setupDone == Self.setup.count }
    /// Operation numbers (per client) of the auth operations in flight, and what each is.
    var inFlight: [Int: [Int: AuthClientOperation]] = [:]
    var guestWritesDenied = 0
}

enum AuthClientOperation {
    case setup(step: Int)
    case guestWrite(value: String)
}

extension Simulation {
    /// The write a client proposes for `operation`: as `writer` when auth is simulated (before
    /// auth is enabled the store unwraps the envelope; after, it checks it).
    func asSimulatedUser(_ operation: WriteOperation) -> WriteOperation {
        guard options.auth else { return operation }
        return .auth(.authorized(user: SimulationAuthModel.writer, operation: operation))
    }

    /// Starts a setup step or a guest write instead of a model operation, when it is time;
    /// returns whether it did.
    func startAuthOperation(client clientID: Int) -> Bool {
        guard options.auth else { return false }
        let kind: AuthClientOperation
        let operation: WriteOperation
        if !authModel.isEnabled {
            // Client 1 sets up; the others wait (their writes would be refused or unchecked).
            guard clientID == 1 else {
                schedule(.clientNext(client: clientID), after: 5 * Self.tickUnits)
                return true
            }
            let step = authModel.setupDone
            kind = .setup(step: step)
            // As root: unwrapped while auth is disabled, and a retried `enable` is then allowed.
            operation = .auth(.authorized(user: AuthState.rootUser, operation: .auth(SimulationAuthModel.setup[step])))
        } else {
            guard random.next() % 100 < SimulationAuthModel.guestWritePercent else { return false }
            operationsIssued += 1
            let key = "k\(random.next() % UInt64(options.keyCount))"
            let value =
                SimulationAuthModel.deniedValuePrefix + "c\(clientID).\(clients[clientID - 1].operationNumber + 1)"
            kind = .guestWrite(value: value)
            operation = .auth(
                .authorized(
                    user: SimulationAuthModel.guest,
                    operation: .put(PutRequest(key: Array(key.utf8), value: Array(value.utf8)))))
        }
        var client = clients[clientID - 1]
        client.operationNumber += 1
        client.sequence += 1
        let number = client.operationNumber
        let requestID = RequestID(clientID: UInt64(clientID), sequence: client.sequence)
        // A read-only placeholder input: never recorded (the reply completes it here, and a
        // given-up read-only operation is dropped).
        client.current = ClientOperation(
            number: number, input: .get(key: "_auth"),
            request: .write(
                client: clientID, operation: number, command: WriteCommand(requestID: requestID, operation: operation)),
            call: time, deadline: time + Self.operationDeadlineUnits)
        clients[clientID - 1] = client
        authModel.inFlight[clientID, default: [:]][number] = kind
        sendAttempt(client: clientID)
        return true
    }

    /// Takes the reply of an auth operation; returns false for a model operation.
    func receiveAuthReply(_ result: WriteResult, client clientID: Int, operation number: Int) -> Bool {
        guard let kind = authModel.inFlight[clientID]?.removeValue(forKey: number) else { return false }
        switch kind {
        case .setup(let step):
            // A step retried after a lost answer may find its own earlier effect.
            if result.error == nil || result.error == .auth(.userAlreadyExist)
                || result.error == .auth(.roleAlreadyExist)
            {
                precondition(step == authModel.setupDone, "setup steps run one at a time")
                authModel.setupDone += 1
                trace.note(
                    time,
                    "auth setup \(step + 1)/\(SimulationAuthModel.setup.count): \(SimulationAuthModel.setup[step])")
            } else {
                violation("auth setup step \(SimulationAuthModel.setup[step]) failed: \(result)")
            }
        case .guestWrite(let value):
            if result.error == .auth(.permissionDenied) {
                authModel.guestWritesDenied += 1
            } else {
                violation("guest write of \(value) answered \(result), not permission denied")
            }
        }
        finish(client: clientID)
        return true
    }

    /// A given-up auth operation: forget it (a setup step is retried with a new request).
    func forgetAuthOperation(client clientID: Int, operation number: Int) {
        authModel.inFlight[clientID]?.removeValue(forKey: number)
    }

    /// No replica holds a guest's value, live or in its retained history.
    func checkDeniedWrites() {
        guard options.auth else { return }
        for node in nodes {
            guard let kv = node.runtime?.kv else { continue }
            let prefix = Array(SimulationAuthModel.deniedValuePrefix.utf8)
            for entry in kv.history(key: [0], rangeEnd: [0]) where entry.value.starts(with: prefix) {
                violation(
                    "r\(node.id) holds a denied write: \(String(decoding: entry.key, as: UTF8.self)) = "
                        + "\(String(decoding: entry.value, as: UTF8.self)) at revision \(entry.revision)")
            }
            if authModel.isEnabled && !kv.authState.isEnabled {
                violation("r\(node.id) has auth disabled after client 1 saw it enabled")
            }
        }
    }
}
