import Foundation
import Testing

/// A headless Chromium for the status page test: Debian's `chromium` (scripts/test installs
/// it when missing), or `$SYNOD_CHROMIUM`.
enum HeadlessChromium {
    static var path: String? {
        if let path = ProcessInfo.processInfo.environment["SYNOD_CHROMIUM"], !path.isEmpty { return path }
        return ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// The page's DOM after its scripts ran for `virtualMilliseconds` of virtual time (which
    /// waits for the page's fetches).
    static func dumpDOM(url: String, virtualMilliseconds: Int = 5_000) async throws -> ProgramRun {
        guard let path else { throw ProcessTestError("chromium not found") }
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("synod-chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        return try await ProgramRun.run(
            path,
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(profile.path)", "--virtual-time-budget=\(virtualMilliseconds)", "--dump-dom", url,
            ], timeout: .seconds(90))
    }
}

extension SynodProcessTests {
    @Test(
        "status page: headless Chromium shows every replica, its role and the leader, and the new leader after a kill",
        .enabled(if: HeadlessChromium.path != nil, "chromium is not installed (scripts/test installs Debian's chromium)"),
        .timeLimit(.minutes(5)))
    func statusPageInBrowser() async throws {
        try await Self.withWritableCluster(name: "status-page", replicas: 3) { cluster, connections in
            guard let leader = await connections.awaitLeader(timeout: .seconds(20)) else {
                cluster.fail("the replicas did not agree on a leader within 20 s")
                return
            }
            let url = "http://127.0.0.1:\(cluster.replica(1).clientPort)/status"
            let run = try await HeadlessChromium.dumpDOM(url: url)
            cluster.expect(!run.timedOut, "chromium did not finish within 90 s")
            let dom = run.stdout
            guard dom.contains("<table") else {
                cluster.fail("chromium printed no page (status \(run.status)):\n\(run.stderr.suffix(2_000))")
                return
            }
            for replica in cluster.replicas {
                cluster.expect(dom.contains("id=\"row-\(replica.id)\""), "the page has no row for r\(replica.id)")
                cluster.expect(dom.contains(">r\(replica.id)"), "the page does not name r\(replica.id)")
            }
            cluster.expect(
                dom.contains("id=\"leader\" class=\"leader\">r\(leader)<"),
                "the page does not name r\(leader) as the leader:\n\(dom.prefix(3_000))")
            // The script asked every replica: each row shows a role, not a placeholder.
            let roles = ["leader", "follower"].map { dom.components(separatedBy: "class=\"role \($0)\"").count - 1 }
            cluster.expect(
                roles[0] == 1 && roles[1] == 2,
                "expected 1 leader row and 2 follower rows, saw \(roles[0]) and \(roles[1]):\n\(dom.prefix(3_000))")
            cluster.expect(dom.contains("(updated "), "the page's script never completed a refresh")

            // The page changes when the leader is killed: served by a survivor, it names
            // the new leader and shows the old one unreachable.
            await cluster.replica(leader).kill9()
            let survivors = cluster.replicas.map(\.id).filter { $0 != leader }
            guard let newLeader = await connections.awaitLeader(among: survivors, timeout: .seconds(20)) else {
                cluster.fail("no new leader among \(survivors) within 20 s")
                return
            }
            let after = try await HeadlessChromium.dumpDOM(
                url: "http://127.0.0.1:\(cluster.replica(survivors[0]).clientPort)/status")
            cluster.expect(
                after.stdout.contains("id=\"leader\" class=\"leader\">r\(newLeader)<"),
                "after killing r\(leader) the page does not name r\(newLeader) as the leader:\n\(after.stdout.prefix(3_000))")
            let leaderRows = after.stdout.components(separatedBy: "class=\"role leader\"").count - 1
            cluster.expect(leaderRows == 1, "after the kill the page shows \(leaderRows) leader rows")
        }
    }
}
