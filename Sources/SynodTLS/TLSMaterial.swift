import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// Reads certificates and keys for a TLS context, turning every failure into one line that
/// names the flag and the file.
enum TLSMaterial {
    /// How long a closing connection waits for the other side's close_notify: NIOSSL's 5 s
    /// default would hold up a replica's shutdown on a peer that no longer answers.
    static let shutdownTimeout: TimeAmount = .seconds(1)

    /// The PEM certificates in `path` (a chain: leaf first), at least one.
    static func certificates(_ path: String, flag: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
        try requireReadable(path, flag: flag)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSSetupError("\(flag) \(path): not a PEM certificate file (\(error))")
        }
        guard !certificates.isEmpty else { throw TLSSetupError("\(flag) \(path): no certificate in the file") }
        return certificates
    }

    /// The PEM private key in `path`.
    static func privateKey(_ path: String, flag: String) throws(TLSSetupError) -> NIOSSLPrivateKey {
        try requireReadable(path, flag: flag)
        do {
            return try NIOSSLPrivateKey(file: path, format: .pem)
        } catch {
            throw TLSSetupError("\(flag) \(path): not a PEM private key (an unencrypted key is needed) (\(error))")
        }
    }

    /// Throws unless the key in `keyPath` belongs to `certificate` (checked where swift-certificates
    /// reads the key; BoringSSL's own check at context creation covers the rest).
    static func requireMatch(
        certificate: NIOSSLCertificate, certificateFlag: String, certificatePath: String, keyPath: String, keyFlag: String
    ) throws(TLSSetupError) {
        guard let pem = try? String(contentsOfFile: keyPath, encoding: .utf8),
            let key = try? Certificate.PrivateKey(pemEncoded: pem),
            let der = try? certificate.toDERBytes(),
            let parsed = try? Certificate(derEncoded: der)
        else { return }
        guard key.publicKey == parsed.publicKey else {
            throw TLSSetupError(
                "\(keyFlag) \(keyPath) is not the private key of the certificate in \(certificateFlag) \(certificatePath)")
        }
    }

    private static func requireReadable(_ path: String, flag: String) throws(TLSSetupError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TLSSetupError("\(flag) \(path): no such file")
        }
        guard !isDirectory.boolValue else { throw TLSSetupError("\(flag) \(path): is a directory, not a file") }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw TLSSetupError("\(flag) \(path): not readable by this user")
        }
    }

    /// Builds the context, with the error of BoringSSL as one line.
    static func context(_ configuration: TLSConfiguration, what: String) throws(TLSSetupError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("cannot set up TLS for \(what): \(TLSFailure.describe(error))")
        }
    }
}
