import EtcdAPI
import Foundation
import KVStore
import SynodClient
import Testing

extension SynodProcessTests {
    @Test("SynodClient.watch: history replay, then live events in revision order; compacted start ends with OutOfRange", .timeLimit(.minutes(5)))
    func clientWatch() async throws {
        try await Self.withWritableCluster(name: "client-watch", replicas: 3) { cluster, connections in
            let first = try await connections.replica(1).put("cw/a", "1").header.revision
            _ = try await connections.replica(1).put("cw/b", "2")
            let client = try SynodClient(endpoints: [SynodEndpoint(parsing: cluster.replica(3).clientEndpoint)])
            let collected = Task { () -> [String] in
                var seen: [String] = []
                for try await event in client.watchPrefix("cw/", startRevision: first, prevKV: true) {
                    let key = String(decoding: event.kv.key, as: UTF8.self)
                    let previous = event.prevKV.map { String(decoding: $0.value, as: UTF8.self) } ?? "-"
                    seen.append(
                        "\(event.type == .put ? "PUT" : "DELETE") \(key) \(String(decoding: event.kv.value, as: UTF8.self)) prev=\(previous) @\(event.revision)")
                    if key == "cw/done" { break }
                }
                return seen
            }
            let third = try await connections.replica(2).put("cw/a", "3").header.revision
            let deleted = try await connections.replica(1).delete("cw/b").header.revision
            let done = try await connections.replica(2).put("cw/done", "x").header.revision
            let timeout = Task {
                try await Task.sleep(for: .seconds(15))
                collected.cancel()
            }
            let seen = try await collected.value
            timeout.cancel()
            #expect(
                seen == [
                    "PUT cw/a 1 prev=- @\(first)", "PUT cw/b 2 prev=- @\(first + 1)", "PUT cw/a 3 prev=1 @\(third)",
                    "DELETE cw/b  prev=2 @\(deleted)", "PUT cw/done x prev=- @\(done)",
                ], "\(seen)")

            // A compacted start revision ends the sequence with OutOfRange.
            var compact = Etcdserverpb_CompactionRequest()
            compact.revision = done
            _ = try await connections.replica(1).kv.compact(compact)
            let compactedError = await eventually(timeout: .seconds(10)) {
                do {
                    for try await _ in client.watch(key: "cw/a", startRevision: first) {}
                    return false
                } catch SynodClientError.rejected(let code, _, _) {
                    return code == .outOfRange
                } catch {
                    return false
                }
            }
            #expect(compactedError, "a watch from a compacted revision did not end with OutOfRange")
            await client.close()
        }
    }
}
