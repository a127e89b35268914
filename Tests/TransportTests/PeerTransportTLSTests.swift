import Foundation
import NIOSSL
import Paxos
import SynodTLS
import Testing

@testable import Transport

/// The peer transport over TLS with peer certificates required (`--peer-client-cert-auth`):
/// certificates of the cluster's CA connect; one of another CA, or one that names another
/// replica, is refused, and the log says why. Serialized, every wait bounded.
@Suite(.serialized) struct PeerTransportTLSTests {
    /// A fresh CA with peer certificates for r1…r3, in a temporary directory.
    static func authority(_ name: String) throws -> LocalCertificateFiles {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-tls-\(name)-\(UUID().uuidString.prefix(8))").path
        let files = LocalCertificateFiles(directory: directory)
        try LocalCertificateAuthority.ensure(files, replicas: [1, 2, 3])
        return files
    }

    /// Replica `replica` presenting the peer certificate of `certificateOf` from `files`.
    static func tls(_ files: LocalCertificateFiles, certificateOf replica: Int) throws -> PeerTransport.TLS {
        try PeerTransport.TLS(
            files: ServerTLSFiles(
                certificateFile: files.peerCertificate(replica: replica), keyFile: files.peerKey(replica: replica),
                trustedCAFile: files.caCertificate, clientCertificateAuth: true, flagPrefix: "peer-"))
    }

    @Test func peersWithCertificatesOfTheClusterCAExchangeMessages() async throws {
        let files = try Self.authority("good")
        defer { try? FileManager.default.removeItem(atPath: files.directory) }
        let nodes = try startCluster([1, 2, 3]) { id in try Self.tls(files, certificateOf: Int(id)) }
        defer { nodes.forEach { $0.transport.shutdown() } }
        for sender in nodes {
            for receiver in nodes where receiver.id != sender.id {
                #expect(await reaches(sender, receiver, timeout: 10), "r\(sender.id) never reached r\(receiver.id) over TLS")
            }
        }
        for node in nodes {
            #expect(node.transport.statistics.connectionsRejected == 0, "r\(node.id): \(node.logLines.all)")
            #expect(!node.logLines.all.contains { $0.contains("TLS") && $0.hasPrefix("warning") }, "\(node.logLines.all)")
        }
    }

    @Test func aPeerWithACertificateOfAnotherCAIsRefusedAndTheLogSaysWhy() async throws {
        let cluster = try Self.authority("cluster")
        let rogue = try Self.authority("rogue")
        defer {
            try? FileManager.default.removeItem(atPath: cluster.directory)
            try? FileManager.default.removeItem(atPath: rogue.directory)
        }
        // r3 has a certificate that names it, valid for its host, from the wrong CA (and trusts that CA).
        let nodes = try startCluster([1, 2, 3]) { id in try Self.tls(id == 3 ? rogue : cluster, certificateOf: Int(id)) }
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two, three) = (nodes[0], nodes[1], nodes[2])
        #expect(await reaches(one, two, timeout: 10), "the good peers must still talk")
        #expect(!(await reaches(three, one, timeout: 2)), "the rogue's message arrived")
        #expect(!(await reaches(one, three, timeout: 2)), "a message reached the rogue")
        #expect(one.received.all.allSatisfy { $0.from != 3 })
        // r1 dialled r3 and refused its certificate; r3's hello never got through.
        let refused = one.logLines.all.filter { $0.contains("r3") && $0.contains("CERTIFICATE_VERIFY_FAILED") }
        #expect(!refused.isEmpty, "\(one.logLines.all)")
        #expect(refused.first?.hasPrefix("warning") == true, "\(refused)")
        // r1 also turned away r3's own connections at the handshake, one line each.
        #expect(
            await waitUntil { one.rejections.contains { $0.contains("TLS handshake failed") } },
            "no inbound refusal logged: \(one.logLines.all)")
        #expect(three.logLines.all.contains { $0.contains("cannot connect to peer r1") && $0.contains("TLS") })
    }

    @Test func aPeerWhoseCertificateNamesAnotherReplicaIsRefused() async throws {
        let files = try Self.authority("impostor")
        defer { try? FileManager.default.removeItem(atPath: files.directory) }
        // r2 presents r3's certificate: the right CA, the wrong name.
        let nodes = try startCluster([1, 2]) { id in try Self.tls(files, certificateOf: id == 2 ? 3 : 1) }
        defer { nodes.forEach { $0.transport.shutdown() } }
        let (one, two) = (nodes[0], nodes[1])
        #expect(!(await reaches(two, one, timeout: 2)), "the impostor's message arrived")
        #expect(!(await reaches(one, two, timeout: 2)), "a message reached the impostor")
        // Inbound: refused at the hello, one line naming the mismatch.
        #expect(
            await waitUntil { one.rejections.contains { $0.contains("hello from r2") && $0.contains("does not name r2") } },
            "\(one.logLines.all)")
        // Outbound: refused before any frame was written.
        #expect(one.logLines.all.contains { $0.contains("cannot connect to peer r2") && $0.contains("does not name r2") })
    }

    @Test func peerIdentityNeedsTheReplicasNameAndHost() throws {
        let files = try Self.authority("identity")
        defer { try? FileManager.default.removeItem(atPath: files.directory) }
        let certificate = try #require(try NIOSSLCertificate.fromPEMFile(files.peerCertificate(replica: 2)).first)
        #expect(PeerIdentity.mismatch(certificate, replica: 2, host: "127.0.0.1") == nil)
        #expect(PeerIdentity.mismatch(certificate, replica: 2, host: "localhost") == nil)
        #expect(PeerIdentity.mismatch(certificate, replica: 2, host: "LOCALHOST") == nil)
        #expect(PeerIdentity.mismatch(certificate, replica: 3, host: "127.0.0.1")?.contains("does not name r3") == true)
        #expect(PeerIdentity.mismatch(certificate, replica: 2, host: "10.0.0.2")?.contains("not valid for its host 10.0.0.2") == true)
        #expect(PeerIdentity.mismatch(certificate, replica: 2, host: "db.example.com") != nil)
        #expect(PeerIdentity.mismatch(nil, replica: 2, host: "127.0.0.1")?.contains("no certificate") == true)
    }
}
