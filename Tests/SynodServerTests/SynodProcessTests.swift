import Foundation
import Testing

/// Tests that run real `synod serve` processes on loopback (DESIGN §5.5). They share one
/// serialized suite: each starts up to five replicas, and on two cores several clusters
/// at once would turn election timeouts into flaky failures. Each test's functions live in
/// an extension in its own file.
@Suite("synod processes", .serialized)
struct SynodProcessTests {
    @Test("the synod executable is found next to the test bundle (or through SYNOD_BINARY) and runs")
    func locatesTheBinary() async throws {
        let binary = try SynodBinary.locate()
        let run = try await ProgramRun.run(binary, ["serve", "--help"], timeout: .seconds(20))
        #expect(run.status == 0, "synod serve --help exited \(run.status): \(run.stderr)")
        #expect(run.stdout.contains("--fail-every"), "synod serve --help does not list --fail-every:\n\(run.stdout)")
    }
}
