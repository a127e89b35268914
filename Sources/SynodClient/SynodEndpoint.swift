import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// One replica's client address, `host:port` (an `http://` or `https://` prefix, as etcdctl
/// accepts, is dropped).
public struct SynodEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port`, `http://host:port` or `https://host:port` (TLS is
    /// `SynodClientOptions.tls`'s business, not the endpoint's).
    public init(parsing text: String) throws(SynodClientError) {
        var rest = Substring(text.trimmingWhitespace())
        if rest.hasPrefix("http://") { rest = rest.dropFirst("http://".count) }
        if rest.hasPrefix("https://") { rest = rest.dropFirst("https://".count) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":") else { throw .invalidEndpoint(text) }
        var host = rest[..<colon]
        let portText = rest[rest.index(after: colon)...]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, let port = Int(portText), (1...65_535).contains(port) else {
            throw .invalidEndpoint(text)
        }
        self.init(host: String(host), port: port)
    }

    /// Parses a comma-separated list, as `--endpoints` takes it. Duplicates are dropped.
    public static func parseList(_ text: String) throws(SynodClientError) -> [SynodEndpoint] {
        var endpoints: [SynodEndpoint] = []
        for part in text.split(separator: ",") where !part.trimmingWhitespace().isEmpty {
            let endpoint = try SynodEndpoint(parsing: String(part))
            if !endpoints.contains(endpoint) { endpoints.append(endpoint) }
        }
        guard !endpoints.isEmpty else { throw .noEndpoints }
        return endpoints
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The gRPC target: an IP literal directly, anything else through DNS.
    var target: any ResolvableTarget {
        if host.contains(":") { return ResolvableTargets.IPv6.ipv6(address: host, port: port) }
        if host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." }) {
            return ResolvableTargets.IPv4.ipv4(address: host, port: port)
        }
        return ResolvableTargets.DNS.dns(host: host, port: port)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> SubSequence {
        var text = self[...]
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return text
    }
}
