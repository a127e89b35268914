import NIOSSL

/// One plane's TLS files, as etcd's flags name them: `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth` for the client API, the same with `--peer-` for
/// the peer transport.
///
/// - The certificate and key identify this replica (they are its server certificate, and on
///   the peer plane also the client certificate it presents when dialling a peer).
/// - With `clientCertificateAuth` a connection must present a certificate signed by the
///   trusted CA, or the handshake fails (etcd's `RequireAndVerifyClientCert`).
/// - On the peer plane the trusted CA also verifies the certificates of the peers this
///   replica dials (the system's roots when no CA file is given).
public struct ServerTLSFiles: Sendable, Hashable {
    public var certificateFile: String
    public var keyFile: String
    public var trustedCAFile: String?
    public var clientCertificateAuth: Bool
    /// `""` for the client API, `"peer-"` for the peer transport: how messages name the flags.
    public var flagPrefix: String

    public init(
        certificateFile: String, keyFile: String, trustedCAFile: String? = nil, clientCertificateAuth: Bool = false,
        flagPrefix: String = ""
    ) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.trustedCAFile = trustedCAFile
        self.clientCertificateAuth = clientCertificateAuth
        self.flagPrefix = flagPrefix
    }

    /// The files from the flags, nil when none is given (plaintext); throws for flags that
    /// do not go together, naming them.
    public static func from(
        certificateFile: String?, keyFile: String?, trustedCAFile: String?, clientCertificateAuth: Bool,
        flagPrefix: String
    ) throws(TLSSetupError) -> ServerTLSFiles? {
        let cert = "--\(flagPrefix)cert-file"
        let key = "--\(flagPrefix)key-file"
        let ca = "--\(flagPrefix)trusted-ca-file"
        let auth = "--\(flagPrefix)client-cert-auth"
        switch (certificateFile, keyFile) {
        case (nil, nil):
            if clientCertificateAuth { throw TLSSetupError("\(auth) needs TLS: give \(cert) and \(key) too") }
            if trustedCAFile != nil { throw TLSSetupError("\(ca) needs TLS: give \(cert) and \(key) too") }
            return nil
        case (.some, nil): throw TLSSetupError("\(cert) needs \(key) (the certificate's private key)")
        case (nil, .some): throw TLSSetupError("\(key) needs \(cert) (the key's certificate)")
        case (.some(let certificateFile), .some(let keyFile)):
            if clientCertificateAuth && trustedCAFile == nil {
                throw TLSSetupError("\(auth) needs \(ca) (the CA that signs the certificates to accept)")
            }
            return ServerTLSFiles(
                certificateFile: certificateFile, keyFile: keyFile, trustedCAFile: trustedCAFile,
                clientCertificateAuth: clientCertificateAuth, flagPrefix: flagPrefix)
        }
    }

    var certificateFlag: String { "--\(flagPrefix)cert-file" }
    var keyFlag: String { "--\(flagPrefix)key-file" }
    var trustedCAFlag: String { "--\(flagPrefix)trusted-ca-file" }

    /// Loads and checks every file: this plane's certificate chain, its key, the trusted CA.
    func load() throws(TLSSetupError) -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, roots: [NIOSSLCertificate]?) {
        let chain = try TLSMaterial.certificates(certificateFile, flag: certificateFlag)
        let key = try TLSMaterial.privateKey(keyFile, flag: keyFlag)
        try TLSMaterial.requireMatch(
            certificate: chain[0], certificateFlag: certificateFlag, certificatePath: certificateFile, keyPath: keyFile,
            keyFlag: keyFlag)
        let roots = try trustedCAFile.map { path throws(TLSSetupError) in
            try TLSMaterial.certificates(path, flag: trustedCAFlag)
        }
        return (chain, key, roots)
    }

    /// The context that accepts connections: offers `applicationProtocols` (ALPN, most
    /// preferred first) and, with `clientCertificateAuth`, requires a certificate signed by
    /// the trusted CA.
    public func serverContext(applicationProtocols: [String] = []) throws(TLSSetupError) -> NIOSSLContext {
        let (chain, key, roots) = try load()
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.shutdownTimeout = TLSMaterial.shutdownTimeout
        configuration.applicationProtocols = applicationProtocols
        if clientCertificateAuth, let roots {
            // Verified against the CA; the host name of a client means nothing.
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(roots)
            configuration.sendCANameList = true
        }
        return try TLSMaterial.context(configuration, what: "\(certificateFlag) \(certificateFile)")
    }

    /// The context this replica dials its peers with: it presents this plane's certificate
    /// and verifies the peer's against the trusted CA (the system's roots without one), host
    /// or IP address included.
    public func dialingContext() throws(TLSSetupError) -> NIOSSLContext {
        let (chain, key, roots) = try load()
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.shutdownTimeout = TLSMaterial.shutdownTimeout
        configuration.certificateChain = chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(key)
        configuration.certificateVerification = .fullVerification
        if let roots { configuration.trustRoots = .certificates(roots) }
        return try TLSMaterial.context(configuration, what: "dialling with \(certificateFlag) \(certificateFile)")
    }
}
