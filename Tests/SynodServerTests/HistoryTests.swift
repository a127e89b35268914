import Foundation
import KVStore
import SynodClient
import Testing

extension SynodProcessTests {
    @Test("synod history, synod get --history and SynodClient.history: every version, the same proposal time on every replica", .timeLimit(.minutes(5)))
    func historyOnEveryReplica() async throws {
        let binary = try SynodBinary.locate()
        try await Self.withWritableCluster(name: "history", replicas: 3) { cluster, connections in
            let before = Int64(Date().timeIntervalSince1970 * 1_000)
            let first = try await connections.replica(1).put("hist/k", "one").header.revision
            let second = try await connections.replica(2).put("hist/k", "two").header.revision
            let deleted = try await connections.replica(3).delete("hist/k").header.revision
            let other = try await connections.replica(1).put("hist/z", "zed").header.revision
            let after = Int64(Date().timeIntervalSince1970 * 1_000)

            // The client API on every replica: identical entries, times within the test's clock.
            var answers: [[HistoryEntry]] = []
            for replica in cluster.replicas {
                let client = try SynodClient(endpoints: [SynodEndpoint(parsing: replica.clientEndpoint)])
                var entries: [HistoryEntry] = []
                _ = await eventually(timeout: .seconds(10)) {
                    entries = (try? await client.historyPrefix("hist/").body.entries) ?? []
                    return entries.count == 4
                }
                await client.close()
                answers.append(entries)
            }
            let entries = answers[0]
            #expect(answers.allSatisfy { $0 == entries }, "replicas disagree on the history: \(answers)")
            #expect(entries.map(\.revision) == [first, second, deleted, other], "\(entries)")
            #expect(entries.map(\.type) == [.put, .put, .delete, .put], "\(entries)")
            #expect(entries.map { String(decoding: $0.value, as: UTF8.self) } == ["one", "two", "", "zed"])
            for entry in entries {
                #expect(
                    entry.proposedAtMilliseconds >= before - 1_000 && entry.proposedAtMilliseconds <= after + 1_000,
                    "proposal time \(entry.proposedAtMilliseconds) outside [\(before), \(after)]")
            }

            // The CLI prints the same, one line per version.
            let run = try await ProgramRun.run(
                binary, ["get", "--endpoints", cluster.replica(2).clientEndpoint, "hist/k", "--history"])
            #expect(run.status == 0, "synod get --history exited \(run.status): \(run.stderr)")
            let lines = run.stdout.split(separator: "\n").map(String.init)
            let expected = entries.prefix(3).map { entry -> String in
                let time = HistoryTime.iso(entry.proposedAtMilliseconds)
                switch entry.type {
                case .put: return "\(entry.revision) \(time) PUT hist/k \(String(decoding: entry.value, as: UTF8.self))"
                case .delete: return "\(entry.revision) \(time) DELETE hist/k"
                }
            }
            #expect(lines == Array(expected), "synod get hist/k --history printed:\n\(run.stdout)")

            // `synod history` is the same listing as its own subcommand, with --prefix too.
            let history = try await ProgramRun.run(
                binary, ["history", "--endpoints", cluster.replica(3).clientEndpoint, "hist/k"])
            #expect(history.status == 0, "synod history exited \(history.status): \(history.stderr)")
            #expect(history.stdout == run.stdout, "synod history hist/k printed:\n\(history.stdout)")
            let prefixed = try await ProgramRun.run(
                binary, ["history", "--endpoints", cluster.replica(1).clientEndpoint, "hist/", "--prefix"])
            let prefixLines = prefixed.stdout.split(separator: "\n").map(String.init)
            #expect(prefixed.status == 0 && prefixLines.count == 4, "synod history hist/ --prefix:\n\(prefixed.stdout)")
            #expect(prefixLines.prefix(3) == lines[...], "\(prefixLines)")
            #expect(prefixLines.last == "\(other) \(HistoryTime.iso(entries[3].proposedAtMilliseconds)) PUT hist/z zed")
        }
    }
}

enum HistoryTime {
    static func iso(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1_000))
    }
}
