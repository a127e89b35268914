/// Where the monitoring endpoints are served besides the client port.
public struct MonitoringOptions: Sendable, Equatable {
    /// etcd's `--listen-metrics-urls`: plain HTTP/1.1 listeners serving `/metrics`, `/health`,
    /// `/livez`, `/readyz` and `/status` (no gRPC).
    public var metricsListeners: [Endpoint]

    public init(metricsListeners: [Endpoint] = []) {
        self.metricsListeners = metricsListeners
    }

    /// The most `--listen-metrics-urls` entries.
    public static let metricsListenersMax = 8

    /// Parses etcd's `--listen-metrics-urls`: comma-separated `http://host:port` URLs.
    /// `https` is refused (no TLS here), as is anything with a path.
    public static func parseMetricsURLs(_ text: String) throws(ServerConfigurationError) -> [Endpoint] {
        var endpoints: [Endpoint] = []
        for item in text.split(separator: ",") where !item.isEmpty {
            let url = String(item)
            guard url.hasPrefix("http://") else {
                throw .invalid("--listen-metrics-urls entry '\(url)' is not http://host:port (only plain http is served)")
            }
            var rest = url.dropFirst("http://".count)
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            guard !rest.contains("/") else {
                throw .invalid("--listen-metrics-urls entry '\(url)' has a path; give http://host:port")
            }
            endpoints.append(try Endpoint(parsing: String(rest), what: "--listen-metrics-urls entry"))
        }
        guard !endpoints.isEmpty else { throw .invalid("--listen-metrics-urls is empty") }
        guard endpoints.count <= metricsListenersMax else {
            throw .invalid("--listen-metrics-urls names \(endpoints.count) URLs; at most \(metricsListenersMax)")
        }
        return endpoints
    }
}
