import ArgumentParser
import KVStore
import SynodClient

/// `synod watch KEY [--prefix] [--rev N] [--prev-kv]`: etcdctl's watch output (PUT or
/// DELETE, the key, the value; with --prev-kv the previous pair before the new one), one
/// event after another until interrupted, through `SynodClient.watch`.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print every change of a key, or of every key with a prefix, until interrupted."
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Argument(help: "The key (or prefix with --prefix).")
    var key: String

    @Flag(name: .long, help: "Watch every key starting with KEY.")
    var prefix = false

    @Option(name: .long, help: "Start at this revision (replayed from history); 0: from now.")
    var rev: Int64 = 0

    @Flag(name: .customLong("prev-kv"), help: "Print the previous pair before each new one.")
    var prevKV = false

    func validate() throws {
        guard rev >= 0 else { throw ValidationError("--rev must be >= 0") }
    }

    func run() async throws {
        try await connection.withClient { client in
            let events =
                prefix
                ? client.watchPrefix(key, startRevision: rev, prevKV: prevKV)
                : client.watch(key: key, startRevision: rev, prevKV: prevKV)
            for try await event in events {
                var output = OutputBuffer()
                output.line(event.type == .put ? "PUT" : "DELETE")
                if prevKV, let previous = event.prevKV {
                    output.line(bytes: previous.key)
                    output.line(bytes: previous.value)
                }
                output.line(bytes: event.kv.key)
                if event.type == .put { output.line(bytes: event.kv.value) }
                output.flush()
            }
        }
    }
}
