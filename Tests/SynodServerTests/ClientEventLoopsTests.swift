import Foundation
import Testing

extension SynodProcessTests {
    /// `--client-event-loops 3`: client connections are spread over three event loops, two
    /// of which hand every request to the replica's own loop. 64 puts in flight over 16
    /// connections round-robin over the replicas all succeed, and every replica then takes
    /// a write.
    @Test("with three client event loops, every request on every replica is answered", .timeLimit(.minutes(5)))
    func clientEventLoopsServeEveryConnection() async throws {
        let binary = try SynodBinary.locate()
        try await Self.withWritableCluster(name: "client-loops", replicas: 3, extraArguments: ["--client-event-loops", "3"]) {
            cluster, connections in
            guard let report = try await runRoundRobinPuts(binary, cluster, concurrency: 64) else {
                Issue.record("no report")
                return
            }
            #expect((JSONField.int(report, "succeeded") ?? 0) > 100, "\(report)")
            #expect((JSONField.int(report, "failed") ?? -1) == 0, "\(report)")
            for id in 1...3 {
                let put = try? await connections.replica(id).put("loops/\(id)", "ok", timeout: .seconds(5))
                cluster.expect(put != nil, "r\(id) takes no write")
            }
        }
    }
}
