import Foundation
import Testing

extension SynodProcessTests {
    /// `synod bench --watchers`: the watch streams see the measured puts and the report
    /// carries the put-answer-to-event delay.
    @Test("synod bench --watchers reports the delay from a put's answer to its event", .timeLimit(.minutes(5)))
    func benchWithWatchers() async throws {
        let binary = try SynodBinary.locate()
        try await Self.withWritableCluster(name: "bench-watchers", replicas: 3) { cluster, _ in
            guard
                let report = try await runBench(
                    binary, cluster,
                    ["--workload", "put", "--keys", "100", "--concurrency", "8", "--duration", "2s", "--warmup", "1s", "--watchers", "6"]),
                let watch = report["watch"] as? [String: Any], let delays = watch["delayMicroseconds"] as? [String: Any]
            else {
                Issue.record("no watch section in the report")
                return
            }
            let succeeded = JSONField.int(report, "succeeded") ?? 0
            let sampled = JSONField.int(watch, "sampledEvents") ?? 0
            #expect(JSONField.int(watch, "watchers") == 6)
            #expect(JSONField.int(watch, "failures") == 0, "\(report)")
            // About one put in four is sampled, and each reaches all six watchers.
            #expect(sampled > 0 && sampled >= succeeded / 8, "\(sampled) sampled events for \(succeeded) puts: \(report)")
            #expect((JSONField.int(delays, "p99") ?? -1) >= (JSONField.int(delays, "p50") ?? 0), "\(delays)")
        }
    }
}

extension SynodProcessTests {
    /// Runs `synod bench --json` against every replica of `cluster` with `arguments`; the
    /// report, or nil (recorded as an issue) when it did not run or printed no JSON object.
    /// 2 s of round-robin puts over 1,000 keys and 16 connections, `concurrency` in flight.
    func runRoundRobinPuts(_ binary: String, _ cluster: LocalCluster, concurrency: Int) async throws -> [String: Any]? {
        try await runBench(
            binary, cluster,
            [
                "--round-robin", "--workload", "put", "--keys", "1000", "--concurrency", String(concurrency),
                "--connections", "16", "--duration", "2s", "--warmup", "0s", "--timeout", "10s",
            ])
    }

    func runBench(_ binary: String, _ cluster: LocalCluster, _ arguments: [String]) async throws -> [String: Any]? {
        let run = try await ProgramRun.run(
            binary, ["bench", "--endpoints", cluster.endpoints.joined(separator: ",")] + arguments + ["--json"],
            timeout: .seconds(60))
        #expect(run.status == 0, "synod bench exited \(run.status): \(run.stderr)")
        guard let report = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any] else {
            Issue.record("synod bench printed no report: \(run.stdout) \(run.stderr)")
            return nil
        }
        return report
    }
}
