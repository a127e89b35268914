import NIOCore
import NIOSSL
import Paxos
import SynodTLS

extension PeerTransport {
    /// TLS between replicas (etcd's `--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`, `--peer-client-cert-auth`).
    ///
    /// Every connection is TLS both ways. A replica dials with its peer certificate as client
    /// certificate and verifies the dialled peer's against the trusted CA; it accepts with the
    /// same certificate and, with `verifiesInboundPeers`, requires a certificate signed by the
    /// trusted CA. Beyond the CA, a certificate must name its replica (`PeerIdentity`), checked
    /// when dialling (before any frame is written) and at the hello of an inbound connection.
    public struct TLS: Sendable {
        /// Accepts inbound peer connections (`ServerTLSFiles.serverContext()`).
        public var serverContext: NIOSSLContext
        /// Dials the peers (`ServerTLSFiles.dialingContext()`).
        public var dialingContext: NIOSSLContext
        /// `--peer-client-cert-auth`: inbound peers must present a certificate of the trusted
        /// CA that names them.
        public var verifiesInboundPeers: Bool

        public init(serverContext: NIOSSLContext, dialingContext: NIOSSLContext, verifiesInboundPeers: Bool) {
            self.serverContext = serverContext
            self.dialingContext = dialingContext
            self.verifiesInboundPeers = verifiesInboundPeers
        }

        /// The contexts for `files` (the peer plane's flags).
        public init(files: ServerTLSFiles) throws(TLSSetupError) {
            self.init(
                serverContext: try files.serverContext(), dialingContext: try files.dialingContext(),
                verifiesInboundPeers: files.clientCertificateAuth)
        }
    }
}

/// Which certificate identifies which replica: the CA vouches that a certificate is one of
/// the cluster's; this says whose. A peer certificate must
///
/// - have the common name `r<id>` (`r2` for replica 2): on one host, as in a local cluster,
///   the address alone cannot tell replicas apart, and
/// - be valid for the replica's host in the peer table (`--peers`): an IP address among its
///   IP SANs, a name among its DNS SANs.
///
/// `LocalCertificateAuthority` issues such certificates; with openssl, `-subj /CN=r2` and
/// `subjectAltName=IP:10.0.0.2`.
enum PeerIdentity {
    /// Why `certificate` does not identify replica `replica` at `host`; nil when it does.
    static func mismatch(_ certificate: NIOSSLCertificate?, replica: ReplicaID, host: String?) -> String? {
        guard let certificate else { return "r\(replica) sent no certificate" }
        guard let names = CertificateNames(certificate) else { return "the certificate of r\(replica) does not parse" }
        guard names.commonName == "r\(replica)" else {
            return "the certificate (\(names)) does not name r\(replica): a peer certificate's common name must be r\(replica)"
        }
        if let host, !names.covers(host: host) {
            return "the certificate (\(names)) of r\(replica) is not valid for its host \(host) in the peer table"
        }
        return nil
    }
}
