import Crypto
import Foundation
import SwiftASN1
import X509

/// Where a local cluster's certificates live: `<data-dir>/tls/`.
///
/// | file | what |
/// |---|---|
/// | `ca.crt`, `ca.key` | the cluster's own CA (`--trusted-ca-file`, `--peer-trusted-ca-file`, etcdctl's `--cacert`) |
/// | `r<i>.crt`, `r<i>.key` | replica i's client-API certificate (`--cert-file`, `--key-file`) |
/// | `r<i>-peer.crt`, `r<i>-peer.key` | replica i's peer certificate, CN `r<i>` (`--peer-cert-file`, `--peer-key-file`) |
/// | `client.crt`, `client.key` | a client certificate, CN `root` by default (etcdctl's `--cert`, `--key`) |
///
/// Every server certificate is valid for 127.0.0.1 and localhost.
public struct LocalCertificateFiles: Sendable, Hashable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// `<dataDirectory>/tls`.
    public init(dataDirectory: String) {
        self.init(directory: (dataDirectory as NSString).appendingPathComponent("tls"))
    }

    public var caCertificate: String { path("ca.crt") }
    public var caKey: String { path("ca.key") }
    public func serverCertificate(replica: Int) -> String { path("r\(replica).crt") }
    public func serverKey(replica: Int) -> String { path("r\(replica).key") }
    public func peerCertificate(replica: Int) -> String { path("r\(replica)-peer.crt") }
    public func peerKey(replica: Int) -> String { path("r\(replica)-peer.key") }
    public var clientCertificate: String { path("client.crt") }
    public var clientKey: String { path("client.key") }

    /// The `synod serve` flags of replica `replica`: TLS with client-certificate auth on both planes.
    public func serveArguments(replica: Int) -> [String] {
        [
            "--cert-file", serverCertificate(replica: replica), "--key-file", serverKey(replica: replica),
            "--trusted-ca-file", caCertificate, "--client-cert-auth",
            "--peer-cert-file", peerCertificate(replica: replica), "--peer-key-file", peerKey(replica: replica),
            "--peer-trusted-ca-file", caCertificate, "--peer-client-cert-auth",
        ]
    }

    /// etcdctl's (and `synod put/get/…`'s) flags for the client certificate.
    public var clientFlags: String {
        "--cacert=\(caCertificate) --cert=\(clientCertificate) --key=\(clientKey)"
    }

    private func path(_ name: String) -> String {
        (directory as NSString).appendingPathComponent(name)
    }
}

/// Generates a local cluster's CA and certificates with swift-certificates (ECDSA P-256), and
/// keeps them across restarts: what exists, parses, was signed by the CA and stays valid for
/// another `renewBefore` is reused; what is missing or stale is issued anew. A new CA means
/// new certificates for everyone.
public enum LocalCertificateAuthority {
    /// The hosts every server certificate is valid for.
    public static let hosts = ["127.0.0.1", "localhost"]
    public static let caValidity: TimeInterval = 10 * 365 * 86_400
    public static let leafValidity: TimeInterval = 365 * 86_400
    /// A certificate expiring sooner than this is issued anew at start-up.
    public static let renewBefore: TimeInterval = 30 * 86_400
    /// Backdating, so a clock a little behind still accepts a fresh certificate.
    static let backdate: TimeInterval = 3_600

    /// Makes sure `files` holds a CA, the certificates of `replicas` and a client certificate
    /// with common name `clientCommonName`; returns the names of the files it wrote (empty
    /// when everything was reused). Keys are written 0600, every file is fsynced.
    @discardableResult
    public static func ensure(
        _ files: LocalCertificateFiles, replicas: [Int], clientCommonName: String = "root", now: Date = Date()
    ) throws(TLSSetupError) -> [String] {
        do {
            try FileManager.default.createDirectory(
                atPath: files.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw TLSSetupError("cannot create \(files.directory): \(error.localizedDescription)")
        }
        var written: [String] = []
        let (ca, caKey) = try certificateAuthority(files, now: now, written: &written)
        let caIsNew = !written.isEmpty
        func leaf(_ certificatePath: String, _ keyPath: String, commonName: String, usages: [ExtendedKeyUsage.Usage], hosts: [String])
            throws(TLSSetupError)
        {
            if !caIsNew, isReusable(certificatePath, keyPath, issuer: ca, commonName: commonName, now: now) { return }
            let key = P256.Signing.PrivateKey()
            let certificate = try issue(
                commonName: commonName, publicKey: Certificate.PublicKey(key.publicKey), usages: usages, hosts: hosts,
                issuer: ca, issuerKey: caKey, now: now)
            try SecureFile.write(key.pemRepresentation, to: keyPath, mode: 0o600)
            try SecureFile.write(pem(certificate), to: certificatePath, mode: 0o644)
            written += [(certificatePath as NSString).lastPathComponent, (keyPath as NSString).lastPathComponent]
        }
        for replica in replicas {
            try leaf(
                files.serverCertificate(replica: replica), files.serverKey(replica: replica), commonName: "r\(replica)",
                usages: [.serverAuth], hosts: hosts)
            try leaf(
                files.peerCertificate(replica: replica), files.peerKey(replica: replica), commonName: "r\(replica)",
                usages: [.serverAuth, .clientAuth], hosts: hosts)
        }
        try leaf(files.clientCertificate, files.clientKey, commonName: clientCommonName, usages: [.clientAuth], hosts: [])
        try SecureFile.syncDirectory(files.directory)
        return written
    }

    /// The CA in `files`, or a new one (written to `files`, its names appended to `written`).
    private static func certificateAuthority(_ files: LocalCertificateFiles, now: Date, written: inout [String])
        throws(TLSSetupError) -> (Certificate, Certificate.PrivateKey)
    {
        if let certificate = readCertificate(files.caCertificate),
            let keyPEM = try? String(contentsOfFile: files.caKey, encoding: .utf8),
            let key = try? Certificate.PrivateKey(pemEncoded: keyPEM),
            key.publicKey == certificate.publicKey,
            certificate.notValidAfter > now.addingTimeInterval(renewBefore)
        {
            return (certificate, key)
        }
        let key = P256.Signing.PrivateKey()
        let signingKey = Certificate.PrivateKey(key)
        let certificate: Certificate
        do {
            let name = try DistinguishedName {
                OrganizationName("Synod")
                // Unique: two clusters' CAs must not pass for each other by name.
                CommonName("Synod local cluster CA " + String(UInt32.random(in: 0...UInt32.max), radix: 16))
            }
            certificate = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: signingKey.publicKey,
                notValidBefore: now.addingTimeInterval(-backdate), notValidAfter: now.addingTimeInterval(caValidity),
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                },
                issuerPrivateKey: signingKey)
        } catch {
            throw TLSSetupError("cannot create the cluster's CA: \(error)")
        }
        try SecureFile.write(key.pemRepresentation, to: files.caKey, mode: 0o600)
        try SecureFile.write(pem(certificate), to: files.caCertificate, mode: 0o644)
        written += ["ca.crt", "ca.key"]
        return (certificate, signingKey)
    }

    /// A leaf certificate signed by `issuer`.
    static func issue(
        commonName: String, publicKey: Certificate.PublicKey, usages: [ExtendedKeyUsage.Usage], hosts: [String],
        issuer: Certificate, issuerKey: Certificate.PrivateKey, now: Date
    ) throws(TLSSetupError) -> Certificate {
        do {
            let names = hosts.map { host -> GeneralName in
                if let bytes = ipBytes(host) { return .ipAddress(ASN1OctetString(contentBytes: bytes[...])) }
                return .dnsName(host)
            }
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(usages)
                if !names.isEmpty { SubjectAlternativeNames(names) }
            }
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-backdate), notValidAfter: now.addingTimeInterval(leafValidity),
                issuer: issuer.subject, subject: try DistinguishedName { CommonName(commonName) },
                signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: issuerKey)
        } catch {
            throw TLSSetupError("cannot issue the certificate of \(commonName): \(error)")
        }
    }

    /// Whether the pair at these paths can stay: it parses, the key is the certificate's,
    /// `issuer` signed it, the common name is the one wanted and it is not about to expire.
    static func isReusable(_ certificatePath: String, _ keyPath: String, issuer: Certificate, commonName: String, now: Date) -> Bool {
        guard let certificate = readCertificate(certificatePath),
            let keyPEM = try? String(contentsOfFile: keyPath, encoding: .utf8),
            let key = try? Certificate.PrivateKey(pemEncoded: keyPEM)
        else { return false }
        return key.publicKey == certificate.publicKey
            && certificate.issuer == issuer.subject
            && issuer.publicKey.isValidSignature(certificate.signature, for: certificate)
            && CertificateNames(certificate).commonName == commonName
            && certificate.notValidAfter > now.addingTimeInterval(renewBefore)
    }

    static func readCertificate(_ path: String) -> Certificate? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return try? Certificate(pemEncoded: text)
    }

    static func pem(_ certificate: Certificate) throws(TLSSetupError) -> String {
        do {
            return try certificate.serializeAsPEM().pemString
        } catch {
            throw TLSSetupError("cannot encode a certificate: \(error)")
        }
    }

    /// The 4 or 16 bytes of an IP address literal; nil for a host name.
    static func ipBytes(_ host: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// Durable writes of small secret files: a temporary file created with the final mode (never
/// readable by others, not even for a moment), written, fsynced, renamed over the target.
enum SecureFile {
    static func write(_ text: String, to path: String, mode: mode_t) throws(TLSSetupError) {
        let temporary = path + ".tmp"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw failure("create", temporary) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let count = bytes[done...].withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let error = failure("write", temporary)
                close(descriptor)
                unlink(temporary)
                throw error
            }
            done += count
        }
        // The umask may have narrowed `mode`; a key must never end up wider than asked.
        _ = fchmod(descriptor, mode)
        guard fsync(descriptor) == 0 else {
            let error = failure("fsync", temporary)
            close(descriptor)
            throw error
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else { throw failure("rename", path) }
    }

    static func syncDirectory(_ directory: String) throws(TLSSetupError) {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure("open", directory) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure("fsync", directory) }
    }

    private static func failure(_ call: String, _ path: String) -> TLSSetupError {
        TLSSetupError("cannot \(call) \(path): \(String(cString: strerror(errno)))")
    }
}
