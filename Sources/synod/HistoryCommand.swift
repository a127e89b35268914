import ArgumentParser
import SynodClient

/// `synod history KEY [--prefix] [--limit N]`: every retained version of a key (or of every
/// key with a prefix), oldest first per key, one line each — revision, the leader's
/// proposal time (ISO-8601, UTC), PUT or DELETE, key and value: the change history a
/// validated system must keep. The same output as `synod get KEY --history`.
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Print every retained version of a key, or of every key with a prefix (an audit trail).",
        discussion: """
            Each line: <revision> <time> PUT <key> <value>, or <revision> <time> DELETE <key>; time is - \
            for writes made by builds that did not record it. Read from the contacted replica. Versions \
            before the last compaction are gone (see --auto-compaction-* on `synod serve`).
            """
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Argument(help: "The key (or prefix with --prefix).")
    var key: String

    @Flag(name: .long, help: "Every key starting with KEY.")
    var prefix = false

    @Option(name: .long, help: "At most this many versions (0: the server's limit).")
    var limit: Int64 = 0

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be >= 0") }
    }

    func run() async throws {
        try await HistoryLine.print(key: key, prefix: prefix, limit: limit, connection: connection)
    }
}

extension HistoryLine {
    /// Reads the history through `SynodClient.history` (Synod's own `/synodpb.History/History`
    /// call: a serializable read of the store's history) and prints it, one line per version.
    static func print(key: String, prefix: Bool, limit: Int64, connection: ClientConnectionOptions) async throws {
        try await connection.withClient { client in
            let response =
                prefix
                ? try await client.historyPrefix(key, limit: limit)
                : try await client.history(key: key, limit: limit)
            var output = OutputBuffer()
            for entry in response.entries { output.line(format(entry)) }
            if response.more { output.line("(more versions: raise --limit)") }
            output.flush()
        }
    }
}
