import ArgumentParser
import SynodTLS

/// etcdctl's TLS flags, taken by every client command (`put`, `get`, `watch`, `bench`, …).
/// Any of them, or an `https://` endpoint, turns TLS on.
struct ClientTLSOptions: ParsableArguments {
    @Option(name: .long, help: "Verify the servers' certificates with this CA (PEM); turns TLS on.")
    var cacert: String?

    @Option(name: .long, help: "Client certificate (PEM), for servers with --client-cert-auth; with --key.")
    var cert: String?

    @Option(name: .long, help: "Private key (PEM) of --cert.")
    var key: String?

    func validate() throws {
        do { _ = try ClientTLSFiles.from(cacert: cacert, cert: cert, key: key) } catch { throw ValidationError(error.description) }
    }

    /// The files, nil for plaintext; `endpoints` as given on the command line (an `https://`
    /// endpoint asks for TLS with the system's roots).
    func files(endpoints: String) throws -> ClientTLSFiles? {
        if let files = try ClientTLSFiles.from(cacert: cacert, cert: cert, key: key) { return files }
        return endpoints.contains("https://") ? ClientTLSFiles() : nil
    }
}
