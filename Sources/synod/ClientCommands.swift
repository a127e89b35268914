import ArgumentParser
import Foundation
import KVStore
import SynodClient

// `synod put/get/del/txn/status/members`: etcdctl's simple output format, so people feel at
// home. Errors are one line on stderr ("Error: …") and a non-zero exit.

/// The default endpoints: the five client ports `synod cluster` opens (2379 + 2·i).
enum ClientDefaults {
    static let endpoints = "127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383,127.0.0.1:2385,127.0.0.1:2387"
}

/// Options every client command takes.
struct ClientConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Comma-separated host:port client endpoints of the cluster.")
    var endpoints: String = ClientDefaults.endpoints

    @Option(name: .long, help: "Deadline of one attempt of a request (e.g. 5s, 500ms).")
    var timeout: DurationArgument = DurationArgument(.seconds(5))

    @Option(name: .long, help: "Retries on another endpoint after a timeout or an unavailable endpoint.")
    var retries: Int = 5

    @Option(name: .long, help: "name:password of a user, for a cluster with auth enabled (as etcdctl's --user).")
    var user: String?
    @OptionGroup var tls: ClientTLSOptions

    func validate() throws {
        if let user { do { _ = try SynodCredentials(parsing: user) } catch { throw ValidationError("\(error)") } }
        guard timeout.duration > .zero else { throw ValidationError("--timeout must be positive") }
        guard (0...SynodClientOptions.retriesMaxLimit).contains(retries) else {
            throw ValidationError("--retries must be in 0...\(SynodClientOptions.retriesMaxLimit)")
        }
        do { _ = try SynodEndpoint.parseList(endpoints) } catch { throw ValidationError("--endpoints: \(error)") }
    }

    func makeClient() throws -> SynodClient {
        var options = SynodClientOptions()
        options.requestTimeout = timeout.duration
        options.retriesMax = retries
        options.credentials = try user.map { try SynodCredentials(parsing: $0) }
        options.tls = try tls.files(endpoints: endpoints)
        return try SynodClient(endpoints: SynodEndpoint.parseList(endpoints), options: options)
    }

    /// Runs `body` with a client, closes it, and turns a client error into one line on stderr
    /// and exit code 1.
    func withClient(_ body: (SynodClient) async throws -> Void) async throws {
        let client: SynodClient
        do { client = try makeClient() } catch { throw CommandFailure.report("\(error)") }
        do {
            try await body(client)
            await client.close()
        } catch let error as SynodClientError {
            await client.close()
            throw CommandFailure.report(error.description)
        } catch {
            await client.close()
            throw error
        }
    }
}

/// Prints `Error: message` to stderr and exits with 1.
enum CommandFailure {
    static func report(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
        return ExitCode(1)
    }
}

/// A duration argument: `10s`, `500ms`, `250us`, `2m`, `1.5s`; a bare number is seconds.
struct DurationArgument: ExpressibleByArgument, Sendable, CustomStringConvertible {
    var duration: Duration

    init(_ duration: Duration) { self.duration = duration }

    init?(argument: String) {
        // Longer suffixes first: "ms" before "s" and "m".
        let units: [(String, Double)] = [
            ("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1), ("m", 60), ("h", 3600),
        ]
        var number = Substring(argument)
        var scale = 1.0
        for (suffix, factor) in units where argument.hasSuffix(suffix) {
            number = argument.dropLast(suffix.count)
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
        duration = .nanoseconds(Int64((value * scale * 1e9).rounded()))
    }

    var seconds: Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    var description: String {
        let seconds = self.seconds
        if seconds >= 1 || seconds == 0 { return "\(formatNumber(seconds))s" }
        return "\(formatNumber(seconds * 1000))ms"
    }

    var defaultValueDescription: String { description }

    private func formatNumber(_ value: Double) -> String {
        value == value.rounded() ? String(Int64(value)) : String(value)
    }
}

/// Output as etcdctl writes it: raw bytes of keys and values, one per line.
struct OutputBuffer {
    var bytes: [UInt8] = []

    mutating func line(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        bytes.append(0x0A)
    }

    mutating func line(bytes value: [UInt8]) {
        bytes.append(contentsOf: value)
        bytes.append(0x0A)
    }

    /// etcdctl's simple form of key-value pairs: key line, value line (keys only: key, blank).
    mutating func keyValues(_ kvs: [KeyValue], keysOnly: Bool) {
        for kv in kvs {
            line(bytes: kv.key)
            line(bytes: keysOnly ? [] : kv.value)
        }
    }

    func flush() {
        FileHandle.standardOutput.write(Data(bytes))
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case simple
    case json
}

// MARK: - put

struct PutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Set a key to a value (exactly once, even when retried)."
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Argument(help: "The key.")
    var key: String

    @Argument(help: "The value.")
    var value: String

    @Flag(name: .customLong("prev-kv"), help: "Print the previous key-value pair.")
    var prevKV = false

    func run() async throws {
        try await connection.withClient { client in
            let response = try await client.put(key: key, value: value, prevKV: prevKV)
            var output = OutputBuffer()
            output.line("OK")
            if let previous = response.prevKV { output.keyValues([previous], keysOnly: false) }
            output.flush()
        }
    }
}

// MARK: - get

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Read a key, or every key with a prefix."
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Argument(help: "The key (or prefix with --prefix).")
    var key: String

    @Flag(name: .long, help: "Read every key starting with KEY.")
    var prefix = false

    @Option(name: .long, help: "At most this many keys (0: no limit).")
    var limit: Int64 = 0

    @Flag(name: .customLong("keys-only"), help: "Print keys only.")
    var keysOnly = false

    @Flag(name: .long, help: "Read locally at the contacted replica (fast, possibly stale).")
    var serializable = false

    @Option(name: [.short, .customLong("write-out")], help: "Output format: simple or json.")
    var writeOut: OutputFormat = .simple

    @Flag(
        name: .long,
        help: """
            Print every retained version instead (read from the contacted replica, oldest first per key): \
            revision, proposal time (ISO-8601, UTC), PUT or DELETE, key and value, one line each.
            """)
    var history = false

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be >= 0") }
        if history && (keysOnly || writeOut != .simple) {
            throw ValidationError("--history prints its own format: no --keys-only or --write-out")
        }
    }

    func run() async throws {
        if history { return try await runHistory() }
        try await connection.withClient { client in
            let response: SynodResponse<RangeResponse>
            if prefix {
                response = try await client.getPrefix(
                    key, limit: limit, keysOnly: keysOnly, serializable: serializable)
            } else {
                response = try await client.get(
                    key: key, limit: limit, keysOnly: keysOnly, serializable: serializable)
            }
            var output = OutputBuffer()
            switch writeOut {
            case .simple: output.keyValues(response.kvs, keysOnly: keysOnly)
            case .json: output.line(EtcdJSON.range(response))
            }
            output.flush()
        }
    }
}

extension GetCommand {
    /// `synod get KEY [--prefix] --history`: `synod history`'s output (`HistoryCommand.swift`).
    func runHistory() async throws {
        try await HistoryLine.print(key: key, prefix: prefix, limit: limit, connection: connection)
    }
}

/// One line of `synod history` (and `synod get --history`): `<revision> <time> PUT <key> <value>` or
/// `<revision> <time> DELETE <key>`; time `-` when the write carried none (older builds).
enum HistoryLine {
    static func format(_ entry: HistoryEntry) -> String {
        let key = String(decoding: entry.key, as: UTF8.self)
        let time = entry.proposedAtMilliseconds > 0 ? isoTime(milliseconds: entry.proposedAtMilliseconds) : "-"
        switch entry.type {
        case .put: return "\(entry.revision) \(time) PUT \(key) \(String(decoding: entry.value, as: UTF8.self))"
        case .delete: return "\(entry.revision) \(time) DELETE \(key)"
        }
    }

    static func isoTime(milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1_000))
    }
}

// MARK: - del

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Delete a key, or every key with a prefix; prints how many were deleted."
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Argument(help: "The key (or prefix with --prefix).")
    var key: String

    @Flag(name: .long, help: "Delete every key starting with KEY.")
    var prefix = false

    @Flag(name: .customLong("prev-kv"), help: "Print the deleted key-value pairs.")
    var prevKV = false

    func run() async throws {
        try await connection.withClient { client in
            let response = prefix
                ? try await client.deletePrefix(key, prevKV: prevKV)
                : try await client.delete(key: key, prevKV: prevKV)
            var output = OutputBuffer()
            output.line(String(response.deleted))
            output.keyValues(response.prevKVs, keysOnly: false)
            output.flush()
        }
    }
}

// MARK: - txn

struct TxnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txn",
        abstract: "Run a compare-and-swap transaction read from stdin, as etcdctl txn.",
        discussion: """
            Reads three blocks separated by blank lines: compares, success operations, failure \
            operations. Compares: value("k") = "v", version("k") = 0, create("k") = 0, \
            mod("k") > 3 (operators = != < >). Operations: put k v, get k, del k (quote values \
            with spaces, add --prefix to get/del for a range).
            """
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Option(name: [.short, .customLong("write-out")], help: "Output format: simple or json.")
    var writeOut: OutputFormat = .simple

    func run() async throws {
        let interactive = isatty(STDIN_FILENO) != 0
        let parsed: TxnRequest
        do {
            let prompt: ((String) -> Void)? = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
            parsed = try TxnScript.read(prompt: interactive ? prompt : nil)
        } catch {
            throw CommandFailure.report("\(error)")
        }
        try await connection.withClient { client in
            let response = try await client.txn(
                compare: parsed.compare, success: parsed.success, failure: parsed.failure)
            var output = OutputBuffer()
            switch writeOut {
            case .json:
                output.line(EtcdJSON.txn(response))
            case .simple:
                output.line(response.succeeded ? "SUCCESS" : "FAILURE")
                for operation in response.responses {
                    output.line("")
                    switch operation {
                    case .put(let put):
                        output.line("OK")
                        if let previous = put.prevKV { output.keyValues([previous], keysOnly: false) }
                    case .range(let range):
                        output.keyValues(range.kvs, keysOnly: false)
                    case .deleteRange(let delete):
                        output.line(String(delete.deleted))
                        output.keyValues(delete.prevKVs, keysOnly: false)
                    case .txn:
                        output.line("(nested txn)")
                    }
                }
            }
            output.flush()
        }
    }
}

/// The etcdctl txn input language (a subset; see `TxnCommand`).
enum TxnScript {
    struct ParseError: Error, CustomStringConvertible {
        var line: String
        var reason: String
        var description: String { "txn: \(reason): \(line)" }
    }

    /// Bound on lines read, so a runaway pipe cannot grow the request without limit.
    static let linesMax = 10_000

    /// Reads compares, success ops and failure ops, each block ended by a blank line or EOF.
    static func read(prompt: ((String) -> Void)?) throws -> TxnRequest {
        var blocks: [[String]] = [[], [], []]
        let prompts = ["compares:", "success requests (get, put, del):", "failure requests (get, put, del):"]
        var block = 0
        var linesRead = 0
        prompt?(prompts[0])
        while block < 3, let line = readLine(strippingNewline: true) {
            linesRead += 1
            guard linesRead <= linesMax else { throw ParseError(line: "", reason: "more than \(linesMax) lines") }
            if line.trimmingCharacters(in: .whitespaces).isEmpty {
                block += 1
                if block < 3 { prompt?(prompts[block]) }
                continue
            }
            blocks[block].append(line)
        }
        return try parse(compares: blocks[0], success: blocks[1], failure: blocks[2])
    }

    static func parse(compares: [String], success: [String], failure: [String]) throws -> TxnRequest {
        TxnRequest(
            compare: try compares.map(parseCompare),
            success: try success.map(parseOperation),
            failure: try failure.map(parseOperation)
        )
    }

    /// `target("key") op value`, value quoted or bare.
    static func parseCompare(_ line: String) throws -> Compare {
        let text = line.trimmingCharacters(in: .whitespaces)
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"), open < close else {
            throw ParseError(line: line, reason: "expected target(\"key\") op value")
        }
        let target = text[..<open].trimmingCharacters(in: .whitespaces).lowercased()
        let keyTokens = try tokenize(String(text[text.index(after: open)..<close]), line: line)
        guard keyTokens.count == 1 else { throw ParseError(line: line, reason: "expected one key") }
        let key = Array(keyTokens[0].utf8)
        let rest = try tokenize(String(text[text.index(after: close)...]), line: line)
        guard rest.count == 2 else { throw ParseError(line: line, reason: "expected an operator and a value") }
        let result: CompareResult
        switch rest[0] {
        case "=", "==": result = .equal
        case "!=": result = .notEqual
        case ">": result = .greater
        case "<": result = .less
        default: throw ParseError(line: line, reason: "unknown operator '\(rest[0])'")
        }
        let operand = rest[1]
        func number() throws -> Int64 {
            guard let value = Int64(operand) else {
                throw ParseError(line: line, reason: "'\(operand)' is not an integer")
            }
            return value
        }
        switch target {
        case "value", "val": return Compare(key: key, result: result, target: .value(Array(operand.utf8)))
        case "version", "ver": return Compare(key: key, result: result, target: .version(try number()))
        case "create", "c": return Compare(key: key, result: result, target: .createRevision(try number()))
        case "mod", "m": return Compare(key: key, result: result, target: .modRevision(try number()))
        case "lease": return Compare(key: key, result: result, target: .lease(try number()))
        default: throw ParseError(line: line, reason: "unknown compare target '\(target)'")
        }
    }

    /// `put k v`, `get k [--prefix]`, `del k [--prefix]`.
    static func parseOperation(_ line: String) throws -> RequestOp {
        var tokens = try tokenize(line, line: line)
        let prefix = tokens.contains("--prefix")
        let prevKV = tokens.contains("--prev-kv")
        tokens.removeAll { $0 == "--prefix" || $0 == "--prev-kv" }
        guard let verb = tokens.first else { throw ParseError(line: line, reason: "empty operation") }
        let arguments = Array(tokens.dropFirst())
        switch verb.lowercased() {
        case "put":
            guard arguments.count == 2, !prefix else { throw ParseError(line: line, reason: "expected put KEY VALUE") }
            return .put(arguments[0], arguments[1], prevKV: prevKV)
        case "get":
            guard arguments.count == 1 else { throw ParseError(line: line, reason: "expected get KEY") }
            return .get(arguments[0], rangeEnd: prefix ? KVBytes.prefixRangeEnd(Array(arguments[0].utf8)) : [])
        case "del", "delete":
            guard arguments.count == 1 else { throw ParseError(line: line, reason: "expected del KEY") }
            return .delete(
                arguments[0],
                rangeEnd: prefix ? KVBytes.prefixRangeEnd(Array(arguments[0].utf8)) : [],
                prevKV: prevKV
            )
        default:
            throw ParseError(line: line, reason: "unknown operation '\(verb)' (expected put, get or del)")
        }
    }

    /// Splits on spaces; double quotes group and `\"` escapes, as etcdctl's argument parser.
    static func tokenize(_ text: String, line: String) throws -> [String] {
        var tokens: [String] = []
        var current = ""
        var inToken = false
        var quoted = false
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            if quoted {
                if character == "\\", let next = iterator.next() {
                    current.append(next)
                } else if character == "\"" {
                    quoted = false
                } else {
                    current.append(character)
                }
            } else if character == "\"" {
                quoted = true
                inToken = true
            } else if character.isWhitespace {
                if inToken { tokens.append(current) }
                current = ""
                inToken = false
            } else {
                current.append(character)
                inToken = true
            }
        }
        guard !quoted else { throw ParseError(line: line, reason: "unterminated quote") }
        if inToken { tokens.append(current) }
        return tokens
    }
}

// MARK: - status

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every endpoint's member ID, leader, revision, term and log index."
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Option(name: [.short, .customLong("write-out")], help: "Output format: simple (a table) or json.")
    var writeOut: OutputFormat = .simple

    func run() async throws {
        var failures = 0
        try await connection.withClient { client in
            let results = await client.statusAll()
            var output = OutputBuffer()
            var rows: [[String]] = [
                [
                    "ENDPOINT", "ID", "LEADER", "IS LEADER", "REVISION", "TERM", "RAFT INDEX", "APPLIED",
                    "VERSION", "ERRORS",
                ]
            ]
            var json: [String] = []
            for (endpoint, result) in results {
                switch result {
                case .success(let status):
                    rows.append([
                        "\(endpoint)", memberIDHex(status.memberID), memberIDHex(status.leader),
                        status.isLeader ? "true" : "false",
                        String(status.header.revision), String(status.raftTerm), String(status.raftIndex),
                        String(status.raftAppliedIndex), status.version, status.errors.joined(separator: "; "),
                    ])
                    json.append(EtcdJSON.status(status))
                case .failure(let error):
                    failures += 1
                    FileHandle.standardError.write(Data("Error: \(endpoint): \(error)\n".utf8))
                    rows.append(["\(endpoint)", "-", "-", "-", "-", "-", "-", "-", "-", "unreachable"])
                }
            }
            switch writeOut {
            case .simple: for row in TextTable.format(rows) { output.line(row) }
            case .json: output.line("[" + json.joined(separator: ",") + "]")
            }
            output.flush()
        }
        if failures > 0 { throw ExitCode(1) }
    }
}

// MARK: - members

struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members",
        abstract: "List the cluster's members (etcdctl member list)."
    )

    @OptionGroup var connection: ClientConnectionOptions

    func run() async throws {
        try await connection.withClient { client in
            let response = try await client.memberList()
            var output = OutputBuffer()
            for member in response.body {
                output.line(
                    [
                        memberIDHex(member.id), "started", member.name, member.peerURLs.joined(separator: ","),
                        member.clientURLs.joined(separator: ","), member.isLearner ? "true" : "false",
                    ].joined(separator: ", ")
                )
            }
            output.flush()
        }
    }
}

/// Member IDs as etcdctl prints them: lowercase hex, no padding.
func memberIDHex(_ value: UInt64) -> String { String(value, radix: 16) }

/// Left-aligned columns separated by two spaces.
enum TextTable {
    static func format(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = Array(repeating: 0, count: columns)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            var line = ""
            for (index, cell) in row.enumerated() {
                line += cell
                if index < row.count - 1 { line += String(repeating: " ", count: widths[index] - cell.count + 2) }
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }
}

/// etcdctl's `-w json` rendering: protobuf JSON with snake_case header fields, base64 bytes,
/// zero values omitted.
enum EtcdJSON {
    static func header(_ header: SynodResponseHeader) -> String {
        var fields: [String] = []
        if header.clusterID != 0 { fields.append("\"cluster_id\":\(header.clusterID)") }
        if header.memberID != 0 { fields.append("\"member_id\":\(header.memberID)") }
        if header.revision != 0 { fields.append("\"revision\":\(header.revision)") }
        if header.raftTerm != 0 { fields.append("\"raft_term\":\(header.raftTerm)") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func keyValue(_ kv: KeyValue) -> String {
        var fields = ["\"key\":\"\(Data(kv.key).base64EncodedString())\""]
        if kv.createRevision != 0 { fields.append("\"create_revision\":\(kv.createRevision)") }
        if kv.modRevision != 0 { fields.append("\"mod_revision\":\(kv.modRevision)") }
        if kv.version != 0 { fields.append("\"version\":\(kv.version)") }
        if !kv.value.isEmpty { fields.append("\"value\":\"\(Data(kv.value).base64EncodedString())\"") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func range(_ response: SynodResponse<RangeResponse>) -> String {
        var fields = ["\"header\":\(header(response.header))"]
        if !response.kvs.isEmpty {
            fields.append("\"kvs\":[" + response.kvs.map(keyValue).joined(separator: ",") + "]")
        }
        if response.more { fields.append("\"more\":true") }
        if response.count != 0 { fields.append("\"count\":\(response.count)") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func txn(_ response: SynodResponse<TxnResponse>) -> String {
        var fields = ["\"header\":\(header(response.header))"]
        if response.succeeded { fields.append("\"succeeded\":true") }
        let operations = response.responses.map(operation)
        if !operations.isEmpty { fields.append("\"responses\":[" + operations.joined(separator: ",") + "]") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    private static func operation(_ response: ResponseOp) -> String {
        func revisionHeader(_ revision: Int64) -> String { "{\"revision\":\(revision)}" }
        switch response {
        case .put(let put):
            var fields = ["\"header\":\(revisionHeader(put.revision))"]
            if let previous = put.prevKV { fields.append("\"prev_kv\":\(keyValue(previous))") }
            return "{\"Response\":{\"ResponsePut\":{" + fields.joined(separator: ",") + "}}}"
        case .range(let range):
            var fields = ["\"header\":\(revisionHeader(range.revision))"]
            if !range.kvs.isEmpty { fields.append("\"kvs\":[" + range.kvs.map(keyValue).joined(separator: ",") + "]") }
            if range.more { fields.append("\"more\":true") }
            if range.count != 0 { fields.append("\"count\":\(range.count)") }
            return "{\"Response\":{\"ResponseRange\":{" + fields.joined(separator: ",") + "}}}"
        case .deleteRange(let delete):
            var fields = ["\"header\":\(revisionHeader(delete.revision))"]
            if delete.deleted != 0 { fields.append("\"deleted\":\(delete.deleted)") }
            if !delete.prevKVs.isEmpty {
                fields.append("\"prev_kvs\":[" + delete.prevKVs.map(keyValue).joined(separator: ",") + "]")
            }
            return "{\"Response\":{\"ResponseDeleteRange\":{" + fields.joined(separator: ",") + "}}}"
        case .txn(let txn):
            var fields = ["\"header\":\(revisionHeader(txn.revision))"]
            if txn.succeeded { fields.append("\"succeeded\":true") }
            let operations = txn.responses.map { EtcdJSON.operation($0) }
            if !operations.isEmpty { fields.append("\"responses\":[" + operations.joined(separator: ",") + "]") }
            return "{\"Response\":{\"ResponseTxn\":{" + fields.joined(separator: ",") + "}}}"
        }
    }

    static func status(_ status: SynodEndpointStatus) -> String {
        var fields = ["\"header\":\(header(status.header))", "\"version\":\"\(status.version)\""]
        fields.append("\"dbSize\":\(status.dbSizeBytes)")
        fields.append("\"leader\":\(status.leader)")
        fields.append("\"raftIndex\":\(status.raftIndex)")
        fields.append("\"raftTerm\":\(status.raftTerm)")
        fields.append("\"raftAppliedIndex\":\(status.raftAppliedIndex)")
        if status.dbSizeInUseBytes != 0 { fields.append("\"dbSizeInUse\":\(status.dbSizeInUseBytes)") }
        if !status.errors.isEmpty {
            let quoted = status.errors.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            fields.append("\"errors\":[" + quoted.joined(separator: ",") + "]")
        }
        return "{\"Endpoint\":\"\(status.endpoint)\",\"Status\":{" + fields.joined(separator: ",") + "}}"
    }
}
