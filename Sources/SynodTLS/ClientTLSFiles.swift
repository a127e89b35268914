import NIOSSL

/// A client's TLS files, as etcdctl's flags name them: `--cacert` (the CA that signed the
/// servers' certificates; the system's roots without it), `--cert` and `--key` (the client
/// certificate, for servers with `--client-cert-auth`).
public struct ClientTLSFiles: Sendable, Hashable {
    public var trustedCAFile: String?
    public var certificateFile: String?
    public var keyFile: String?

    public init(trustedCAFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.trustedCAFile = trustedCAFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// The files from etcdctl's flags, nil when none is given (plaintext).
    public static func from(cacert: String?, cert: String?, key: String?) throws(TLSSetupError) -> ClientTLSFiles? {
        if cacert == nil && cert == nil && key == nil { return nil }
        let files = ClientTLSFiles(trustedCAFile: cacert, certificateFile: cert, keyFile: key)
        try files.validate()
        return files
    }

    /// Loads every file once: each must exist and parse, `--cert` and `--key` go together
    /// and match.
    public func validate() throws(TLSSetupError) {
        _ = try load()
    }

    func load() throws(TLSSetupError) -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey?, roots: [NIOSSLCertificate]?) {
        var chain: [NIOSSLCertificate] = []
        var key: NIOSSLPrivateKey?
        switch (certificateFile, keyFile) {
        case (nil, nil): break
        case (.some, nil): throw TLSSetupError("--cert needs --key (the certificate's private key)")
        case (nil, .some): throw TLSSetupError("--key needs --cert (the key's certificate)")
        case (.some(let certificateFile), .some(let keyFile)):
            chain = try TLSMaterial.certificates(certificateFile, flag: "--cert")
            key = try TLSMaterial.privateKey(keyFile, flag: "--key")
            try TLSMaterial.requireMatch(
                certificate: chain[0], certificateFlag: "--cert", certificatePath: certificateFile, keyPath: keyFile,
                keyFlag: "--key")
        }
        let roots = try trustedCAFile.map { path throws(TLSSetupError) in
            try TLSMaterial.certificates(path, flag: "--cacert")
        }
        return (chain, key, roots)
    }

    /// A client context: verifies the server's certificate (host or IP address included)
    /// against `--cacert`, presents `--cert` when given, offers `applicationProtocols` (gRPC
    /// needs `h2`).
    public func context(applicationProtocols: [String] = ["h2"]) throws(TLSSetupError) -> NIOSSLContext {
        let (chain, key, roots) = try load()
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.shutdownTimeout = TLSMaterial.shutdownTimeout
        configuration.applicationProtocols = applicationProtocols
        configuration.certificateVerification = .fullVerification
        if let roots { configuration.trustRoots = .certificates(roots) }
        if let key {
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(key)
        }
        return try TLSMaterial.context(configuration, what: "the client")
    }
}
