import Crypto
import CryptoExtras
import Dispatch
import Foundation
import KVStore
import Synchronization

/// Password hashes as the server proposes them (`AuthOperation.userAdd`): PBKDF2-HMAC-SHA256
/// with a random per-user salt, written `pbkdf2-sha256$<rounds>$<salt>$<key>` (base64), so the
/// log and every replica hold only this string. The rounds are stored with each hash, so a
/// later build may raise them without breaking existing users.
enum PasswordHash {
    /// OWASP's recommendation for PBKDF2-HMAC-SHA256 (and swift-crypto's checked minimum).
    static let rounds = 210_000
    static let saltBytes = 16
    static let keyBytes = 32
    static let scheme = "pbkdf2-sha256"

    static func make(_ password: String) throws -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<saltBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let key = try derive(password, salt: salt, rounds: rounds)
        return "\(scheme)$\(rounds)$\(Data(salt).base64EncodedString())$\(Data(key).base64EncodedString())"
    }

    /// Whether `password` matches `stored` (false for anything that does not parse).
    static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == scheme, let rounds = Int(parts[1]), rounds >= 1, rounds <= 10_000_000,
            let salt = Data(base64Encoded: String(parts[2])), let expected = Data(base64Encoded: String(parts[3])),
            expected.count == keyBytes,
            let key = try? derive(password, salt: Array(salt), rounds: rounds)
        else { return false }
        return constantTimeEqual(key, Array(expected))
    }

    private static func derive(_ password: String, salt: [UInt8], rounds: Int) throws -> [UInt8] {
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: Array(password.utf8), salt: salt, using: .sha256, outputByteCount: keyBytes,
            unsafeUncheckedRounds: rounds)
        return key.withUnsafeBytes { Array($0) }
    }
}

func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}

/// Synod's simple tokens: `synod1.<user>.<issued ms>.<mac>` (user and MAC base64url), the MAC
/// an HMAC-SHA256 under the cluster's token secret (`AuthState.tokenSecret`, replicated with
/// `AuthEnable`) over the user, the time of issue and the user's credential revision.
///
/// Why self-verifying rather than etcd's random strings kept by the issuing member: any
/// replica verifies any replica's token with no replicated token table and no log entry per
/// `Authenticate`. Like etcd's simple tokens they expire (`ttlMilliseconds`, etcd's
/// `--auth-token-ttl` default); unlike them the TTL is not extended by use — clientv3 and
/// etcdctl authenticate again on "invalid auth token". Disabling auth (the secret is
/// forgotten), a new password and deleting the user end a token before its TTL.
enum AuthToken {
    static let version = "synod1"
    static let ttlMilliseconds: Int64 = 300_000
    /// Clock skew tolerated between the issuing and the verifying replica.
    static let skewMilliseconds: Int64 = 60_000
    static let tokenBytesMax = 4_096

    static func issue(for user: AuthUser, secret: [UInt8], nowMilliseconds: Int64) -> String {
        let mac = self.mac(
            user: user.name, issued: nowMilliseconds, credentialRevision: user.credentialRevision, secret: secret)
        return [version, base64URL(Array(user.name.utf8)), String(nowMilliseconds), base64URL(mac)].joined(
            separator: ".")
    }

    /// The user `token` speaks for, or nil if it is not a valid, unexpired token of this state.
    static func verify(_ token: String, state: AuthState, nowMilliseconds: Int64) -> String? {
        guard state.isEnabled, token.utf8.count <= tokenBytesMax else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == version, let nameBytes = fromBase64URL(parts[1]),
            let name = String(validating: nameBytes, as: UTF8.self), let issued = Int64(parts[2]),
            let presented = fromBase64URL(parts[3]), let user = state.users[name]
        else { return nil }
        guard issued <= nowMilliseconds + skewMilliseconds, nowMilliseconds - issued <= ttlMilliseconds else {
            return nil
        }
        let expected = mac(
            user: name, issued: issued, credentialRevision: user.credentialRevision, secret: state.tokenSecret)
        return constantTimeEqual(expected, presented) ? name : nil
    }

    private static func mac(user: String, issued: Int64, credentialRevision: UInt64, secret: [UInt8]) -> [UInt8] {
        var message = Array("synod-token-v1\n".utf8)
        message += Array(user.utf8) + [0]
        message += Array(String(issued).utf8) + [0]
        message += Array(String(credentialRevision).utf8)
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: secret))
        return Array(code)
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func fromBase64URL(_ text: Substring) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map { Array($0) }
    }

    /// A new secret for `AuthEnable`.
    static func newSecret() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}

/// The auth state the replica has applied, published by the loop thread after every turn that
/// changed it, read by the connections' event loops to check calls without a hop to the loop.
final class AuthView: Sendable {
    private let state = Mutex(AuthState())
    private let enabled = Atomic<Bool>(false)
    private let publishedRevision = Atomic<UInt64>(0)

    /// On the loop thread (and before it starts): publishes `auth` if it changed.
    func refresh(_ auth: AuthState) {
        guard auth.revision != publishedRevision.load(ordering: .acquiring) else { return }
        state.withLock { $0 = auth }
        enabled.store(auth.isEnabled, ordering: .releasing)
        publishedRevision.store(auth.revision, ordering: .releasing)
    }

    var isEnabled: Bool { enabled.load(ordering: .acquiring) }
    var current: AuthState { state.withLock { $0 } }
}

/// Runs password hashing (hundreds of milliseconds of CPU each) off the event loops and the
/// replica loop, at most `inFlightMax` at a time; more is refused ("too many requests").
final class PasswordWork: Sendable {
    static let shared = PasswordWork()
    static let inFlightMax = 8
    private let inFlight = Atomic<Int>(0)
    private let queue = DispatchQueue(label: "synod-password-hashing", attributes: .concurrent)

    /// Runs `body` on the hashing queue; false (not run) when `inFlightMax` already run.
    func run(_ body: @escaping @Sendable () -> Void) -> Bool {
        let (admitted, _) = inFlight.wrappingAdd(1, ordering: .relaxed)
        guard admitted < Self.inFlightMax else {
            inFlight.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        queue.async { [self] in
            body()
            inFlight.wrappingSubtract(1, ordering: .relaxed)
        }
        return true
    }
}
