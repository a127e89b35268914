import Foundation
import Testing

extension SynodProcessTests {
    /// A leader stopped with SIGTERM hands leadership over first, and `etcdctl move-leader`
    /// moves it on request: in neither case is there an election timeout to wait out.
    @Test("SIGTERM of the leader and etcdctl move-leader hand leadership over without an election", .timeLimit(.minutes(5)))
    func plannedLeaderChanges() async throws {
        // A long election timeout (2 s), so that a handover is told apart from an election.
        try await LocalCluster.with(
            name: "planned-leader", replicas: 3, extraArguments: ["--election-timeout", "2000", "--heartbeat-interval", "100"]
        ) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)),
                    let leader = await connections.awaitLeader(timeout: .seconds(20))
                else {
                    cluster.fail("no leader within 30 s")
                    return
                }
                // etcdctl move-leader, sent to the leader's endpoint (as etcdctl requires).
                let target = (1...3).first { $0 != leader }!
                let etcdctl = Etcdctl(executable: try Etcdctl.locate(), endpoint: cluster.replica(leader).clientEndpoint)
                let moved = try await etcdctl.runFull(["move-leader", String(target, radix: 16)])
                print("planned-leader: \(moved.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
                let afterMove = await connections.awaitLeader(timeout: .seconds(5))
                cluster.expect(afterMove == target, "after move-leader the leader is \(afterMove.map { "r\($0)" } ?? "unknown"), not r\(target)")

                // SIGTERM of the (new) leader: the others lead and take writes well within the
                // 2 s election timeout.
                let current = afterMove ?? target
                var requestIDs = RequestIDGenerator()
                let stopped = ContinuousClock.now
                await cluster.replica(current).terminate()
                let survivors = (1...3).filter { $0 != current }
                let requestID = requestIDs.next()
                var attempt = 0
                let written = await eventually(timeout: .seconds(10), interval: .milliseconds(20)) {
                    let id = survivors[attempt % survivors.count]
                    attempt += 1
                    return (try? await connections.replica(id).put("planned/after", "v", requestID: requestID, timeout: .seconds(1))) != nil
                }
                let gap = ContinuousClock.now - stopped
                print("planned-leader: first write after SIGTERM of r\(current) after \(gap)")
                cluster.expect(written, "no write succeeded after SIGTERM of the leader")
                let log = cluster.replica(current).log()
                cluster.expect(log.contains("leadership handed over to r"), "r\(current) did not log a handover:\n\(cluster.replica(current).logTail())")
                cluster.expect(gap < .milliseconds(1_900), "the first write after SIGTERM took \(gap): an election, not a handover")
            }
        }
    }
}
