import Foundation
import Testing

extension SynodProcessTests {
    /// Promises, forwards and learn messages stay below the transport's frame bound (4 MiB)
    /// however large the values: a new leader must be elected after the leader dies while
    /// many 1 MiB writes are in flight (a promise then carries every accepted entry the
    /// candidate lacks — once 6 MB in one frame, dropped on every resend, so no leader was
    /// ever elected again).
    @Test("1 MiB values: the cluster keeps electing leaders after the leader is killed under load", .timeLimit(.minutes(5)))
    func largeValuesSurviveLeaderKills() async throws {
        let value = String(repeating: "v", count: 1 << 20)
        try await LocalCluster.with(name: "large-values", replicas: 3) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("the cluster never became writable")
                    return
                }
                var acknowledged: Set<String> = []
                for round in 0..<2 {
                    guard let leader = await connections.awaitLeader(timeout: .seconds(30)) else {
                        cluster.fail("round \(round): no leader elected within 30 s")
                        return
                    }
                    let survivors = (1...3).filter { $0 != leader }
                    // 12 writers of 1 MiB values, through the followers; the leader dies mid-load.
                    let keys = try await withThrowingTaskGroup(of: String?.self, returning: [String].self) { group in
                        for writer in 0..<12 {
                            let connection = connections.replica(survivors[writer % 2])
                            let key = "large/\(round)/\(writer)"
                            group.addTask {
                                var ids = RequestIDGenerator()
                                let id = ids.next()
                                for _ in 0..<20 {
                                    if (try? await connection.put(key, value, requestID: id, timeout: .seconds(3))) != nil {
                                        return key
                                    }
                                    try await Task.sleep(for: .milliseconds(100))
                                }
                                return nil
                            }
                        }
                        try await Task.sleep(for: .milliseconds(150))
                        await cluster.replica(leader).kill9()
                        var done: [String] = []
                        for try await key in group { if let key { done.append(key) } }
                        return done
                    }
                    acknowledged.formUnion(keys)
                    cluster.expect(
                        keys.count == 12, "round \(round): only \(keys.count) of 12 1 MiB writes acknowledged after the leader was killed")
                    try cluster.replica(leader).start()
                    guard await connections.awaitLeader(timeout: .seconds(30)) != nil else {
                        cluster.fail("round \(round): no leader after restarting r\(leader)")
                        return
                    }
                }
                let expected = Dictionary(uniqueKeysWithValues: acknowledged.map { ($0, Optional(value)) })
                let disagreements = await connections.awaitAgreement(on: expected, timeout: .seconds(60))
                cluster.expect(disagreements.isEmpty, "acknowledged 1 MiB writes missing:\n" + disagreements.prefix(5).joined(separator: "\n"))
            }
        }
    }
}
