import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SynodTLS
import Testing

@testable import UnaryGRPC

/// The unary server over TLS with client-certificate auth: the verified certificate's common
/// name reaches the method (etcd's user name from the CN); a client without a certificate is
/// refused at the handshake and the server is told why.
@Suite("UnaryServer over TLS", .serialized)
struct UnaryTLSTests {
    static let whoAmI = "/test.Identity/WhoAmI"

    static func authority(clientCommonName: String) throws -> LocalCertificateFiles {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("synod-unary-tls-\(UUID().uuidString.prefix(8))").path
        let files = LocalCertificateFiles(directory: directory)
        try LocalCertificateAuthority.ensure(files, replicas: [1], clientCommonName: clientCommonName)
        return files
    }

    @Test("the client certificate's common name reaches the method; no certificate, no connection")
    func commonNameAndRefusal() async throws {
        let files = try Self.authority(clientCommonName: "site-a")
        defer { try? FileManager.default.removeItem(atPath: files.directory) }
        let refusals = NIOLockedValueBox<[String]>([])
        var options = UnaryServer.Options()
        let serverFiles = ServerTLSFiles(
            certificateFile: files.serverCertificate(replica: 1), keyFile: files.serverKey(replica: 1),
            trustedCAFile: files.caCertificate, clientCertificateAuth: true)
        options.tls = UnaryServer.TLS(context: try serverFiles.serverContext(applicationProtocols: ["h2", "http/1.1"])) {
            _, reason in refusals.withLockedValue { $0.append(reason) }
        }
        let server = try await UnaryServer.bind(
            host: "127.0.0.1", port: 0, group: MultiThreadedEventLoopGroup.singleton,
            methods: [
                Self.whoAmI: { call in
                    let name = call.clientCertificateCommonName ?? "(none)"
                    call.responder.respond { .success(Array(name.utf8)) }
                }
            ], options: options)
        let port = try #require(server.localAddress?.port)

        let withCertificate = ClientTLSFiles(
            trustedCAFile: files.caCertificate, certificateFile: files.clientCertificate, keyFile: files.clientKey)
        let client = try await UnaryClientConnection.connect(
            host: "127.0.0.1", port: port, group: MultiThreadedEventLoopGroup.singleton, tls: try withCertificate.context())
        let answer = try await client.call(path: Self.whoAmI, message: [], timeout: .seconds(5))
        #expect(String(decoding: answer, as: UTF8.self) == "site-a")
        // The name of the host dialled is checked too: localhost is in the certificate's SANs.
        let byName = try await UnaryClientConnection.connect(
            host: "localhost", port: port, group: MultiThreadedEventLoopGroup.singleton, tls: try withCertificate.context())
        let byNameAnswer = try await byName.call(path: Self.whoAmI, message: [], timeout: .seconds(5))
        #expect(String(decoding: byNameAnswer, as: UTF8.self) == "site-a")
        await byName.close()
        await client.close()

        // Only the CA: TLS 1.3 lets the client finish its handshake before the server has
        // looked at its (missing) certificate, so the refusal may surface at the first call.
        let withoutCertificate = ClientTLSFiles(trustedCAFile: files.caCertificate)
        var answered = false
        do {
            let anonymous = try await UnaryClientConnection.connect(
                host: "127.0.0.1", port: port, group: MultiThreadedEventLoopGroup.singleton,
                tls: try withoutCertificate.context())
            answered = (try? await anonymous.call(path: Self.whoAmI, message: [], timeout: .seconds(5))) != nil
            await anonymous.close()
        } catch {}
        #expect(!answered, "a client without a certificate was answered")
        let refused = await eventually { !refusals.withLockedValue { $0 }.isEmpty }
        #expect(refused, "the server was not told of the refusal")
        #expect(refusals.withLockedValue { $0 }.first?.contains("CERTIFICATE") == true, "\(refusals.withLockedValue { $0 })")

        // Plaintext against the TLS port gets nowhere either.
        var plaintextAnswered = false
        if let plaintext = try? await UnaryClientConnection.connect(
            host: "127.0.0.1", port: port, group: MultiThreadedEventLoopGroup.singleton)
        {
            plaintextAnswered = (try? await plaintext.call(path: Self.whoAmI, message: [], timeout: .seconds(2))) != nil
            await plaintext.close()
        }
        #expect(!plaintextAnswered)
        await server.close()
    }

    private func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<100 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }
}
