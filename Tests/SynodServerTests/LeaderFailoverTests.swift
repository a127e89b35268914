import Foundation
import Testing

extension SynodProcessTests {
    @Test("after kill -9 of the leader, a write through another replica succeeds soon (loosely < 3 s here; the benchmark measures the 300 ms goal)", .timeLimit(.minutes(10)))
    func leaderFailover() async throws {
        try await Self.withWritableCluster(name: "failover", replicas: 3) { cluster, connections in
            guard let leader = await connections.awaitLeader(timeout: .seconds(20)) else {
                cluster.fail("the replicas did not agree on a leader within 20 s")
                return
            }
            var requestIDs = RequestIDGenerator()
            let before = try await connections.replica(leader).put("failover/before", "v1", requestID: requestIDs.next())
            cluster.expect(before.header.revision > 0, "put before the failover has revision \(before.header.revision)")

            await cluster.replica(leader).kill9()
            let killed = ContinuousClock.now
            let survivors = cluster.replicas.map(\.id).filter { $0 != leader }
            print("failover: killed leader r\(leader); writing through \(survivors.map { "r\($0)" })")

            // Retry one write (same request id) round-robin over the survivors.
            let requestID = requestIDs.next()
            var attempt = 0
            var lastError = "none"
            let written = await eventually(timeout: .seconds(10), interval: .milliseconds(50)) {
                let id = survivors[attempt % survivors.count]
                attempt += 1
                do {
                    _ = try await connections.replica(id).put("failover/after", "v2", requestID: requestID, timeout: .seconds(1))
                    return true
                } catch {
                    lastError = "r\(id): \(describe(error))"
                    return false
                }
            }
            let elapsed = ContinuousClock.now - killed
            print("failover: first write after the kill succeeded: \(written) after \(elapsed), \(attempt) attempts")
            cluster.expect(written, "no write succeeded within 10 s of killing leader r\(leader); last error \(lastError)")
            guard written else { return }
            // Election timeout 150–300 ms by default; a loaded CI machine stretches it.
            cluster.expect(elapsed < .seconds(3), "the first write after the kill took \(elapsed)")

            // Every survivor takes writes now, names a new leader, and still has the old write.
            for id in survivors {
                do {
                    _ = try await connections.replica(id).put("failover/r\(id)", "ok", requestID: requestIDs.next())
                    let old = try await connections.replica(id).value("failover/before")
                    cluster.expect(old == "v1", "r\(id) reads failover/before = \(old ?? "absent") after the failover")
                } catch {
                    cluster.fail("r\(id) failed a write or read after the failover: \(describe(error))")
                }
            }
            let newLeader = await connections.awaitLeader(among: survivors, timeout: .seconds(10))
            cluster.expect(newLeader != nil, "the survivors did not agree on a new leader")
            cluster.expect(newLeader != leader, "the survivors still name the killed r\(leader) as leader")
        }
    }
}
