import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// The names a certificate carries: its subject's common name (etcd takes the user name of
/// a client from it) and its subject alternative names (the hosts it is valid for).
public struct CertificateNames: Sendable, Hashable, CustomStringConvertible {
    public var commonName: String?
    public var dnsNames: [String]
    /// In NIO's text form (`127.0.0.1`, `::1`).
    public var ipAddresses: [String]

    public init(commonName: String?, dnsNames: [String] = [], ipAddresses: [String] = []) {
        self.commonName = commonName
        self.dnsNames = dnsNames
        self.ipAddresses = ipAddresses
    }

    /// The names in `certificate`; nil when its DER does not parse.
    public init?(_ certificate: NIOSSLCertificate) {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        self.init(parsed)
    }

    public init(_ certificate: Certificate) {
        var commonName: String?
        for relativeName in certificate.subject {
            for attribute in relativeName where attribute.type == .RDNAttributeType.commonName {
                commonName = String(attribute.value) ?? attribute.value.description
            }
        }
        var dnsNames: [String] = []
        var ipAddresses: [String] = []
        if let names = try? certificate.extensions.subjectAlternativeNames {
            for name in names {
                switch name {
                case .dnsName(let dnsName):
                    dnsNames.append(dnsName)
                case .ipAddress(let octets):
                    if let text = Self.ipText(Array(octets.bytes)) { ipAddresses.append(text) }
                default:
                    break
                }
            }
        }
        self.init(commonName: commonName, dnsNames: dnsNames, ipAddresses: ipAddresses)
    }

    /// Whether the certificate is valid for `host`: an IP address must be among its IP
    /// SANs; a name among its DNS SANs (case-insensitive; `*.example.com` covers one label).
    public func covers(host: String) -> Bool {
        if let address = try? SocketAddress(ipAddress: host, port: 0), let ip = address.ipAddress {
            return ipAddresses.contains(ip)
        }
        let wanted = host.lowercased()
        return dnsNames.contains { name in
            let name = name.lowercased()
            if name == wanted { return true }
            guard name.hasPrefix("*."), let dot = wanted.firstIndex(of: ".") else { return false }
            return wanted[dot...] == name.dropFirst()
        }
    }

    /// `CN=r1, SAN=127.0.0.1,localhost`, for log lines.
    public var description: String {
        let sans = ipAddresses + dnsNames
        return "CN=\(commonName ?? "(none)"), SAN=\(sans.isEmpty ? "(none)" : sans.joined(separator: ","))"
    }

    static func ipText(_ bytes: [UInt8]) -> String? {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes)
        return (try? SocketAddress(packedIPAddress: buffer, port: 0))?.ipAddress
    }
}
