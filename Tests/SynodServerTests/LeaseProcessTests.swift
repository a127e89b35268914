import EtcdAPI
import Foundation
import Synchronization
import Testing

extension Etcdctl {
    /// Runs a command that must fail; returns its output (etcd's error text is on stderr).
    func runFull(_ arguments: [String], expectFailure: Bool) async throws -> ProgramRun {
        let result = try await ProgramRun.run(
            executable, ["--endpoints=\(endpoint)", "--command-timeout=5s", "--dial-timeout=2s"] + arguments,
            environment: ["ETCDCTL_API": "3"], timeout: .seconds(15))
        guard result.status != 0 || !expectFailure, !result.timedOut else {
            throw ProcessTestError("etcdctl \(arguments.joined(separator: " ")) did not fail: \(result.stdout)")
        }
        return result
    }
}

/// Parsing etcdctl's `simple` output of lease commands.
enum LeaseOutput {
    /// `lease 694d7a2b8c1e3f05 granted with TTL(30s)` → the id.
    static func grantedID(_ output: String) throws -> String {
        let words = output.split(separator: " ")
        guard words.count >= 3, words[0] == "lease", words[2] == "granted", Int64(words[1], radix: 16) != nil else {
            throw ProcessTestError("unexpected lease grant output: \(output)")
        }
        return String(words[1])
    }

    /// `rev=<n>` printed by the lock holder's command.
    static func lockRevision(_ output: String) -> Int64? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("rev=") }) else { return nil }
        return Int64(line.dropFirst(4))
    }
}

extension SynodProcessTests {
    /// Starts 3 replicas and waits until they can commit.
    static func withLeaseCluster(
        name: String, _ body: (LocalCluster, ClusterConnections) async throws -> Void
    ) async throws {
        try await withWritableCluster(name: name, replicas: 3, body)
    }

    @Test("etcdctl lease grant/keep-alive/timetolive/list/revoke and put --lease work against 3 replicas", .timeLimit(.minutes(5)))
    func etcdctlLeaseCommands() async throws {
        let executable = try Etcdctl.locate()
        try await Self.withLeaseCluster(name: "lease-etcdctl") { cluster, _ in
            let (r1, r2, r3) = (
                Etcdctl(executable: executable, endpoint: cluster.replica(1).clientEndpoint),
                Etcdctl(executable: executable, endpoint: cluster.replica(2).clientEndpoint),
                Etcdctl(executable: executable, endpoint: cluster.replica(3).clientEndpoint)
            )
            let id = try LeaseOutput.grantedID(try await r1.run(["lease", "grant", "30"]))
            let decimal = Int64(id, radix: 16)!
            cluster.expect(try await r2.run(["put", "--lease=\(id)", "lk1", "v1"]).contains("OK"), "put --lease")
            _ = try await r3.run(["put", "--lease=\(id)", "lk2", "v2"])
            let got = try await r3.json(["get", "lk1"])
            let kv = (got["kvs"] as? [[String: Any]])?.first
            cluster.expect(kv.flatMap { JSONField.int($0, "lease") } == decimal, "get -w json shows no lease: \(got)")
            let ttl = try await r3.run(["lease", "timetolive", id, "--keys"])
            cluster.expect(
                ttl.contains("granted with TTL(30s)") && ttl.contains("attached keys([lk1 lk2])"),
                "timetolive: \(ttl)")
            let list = try await r2.run(["lease", "list"])
            cluster.expect(list.contains("found 1 leases") && list.contains(id), "lease list: \(list)")
            for etcdctl in [r1, r2, r3] {
                let kept = try await etcdctl.run(["lease", "keep-alive", "--once", id])
                cluster.expect(kept.contains("lease \(id) keepalived with TTL(30)"), "keep-alive --once: \(kept)")
            }
            // Errors, with etcd's text.
            let unknown = try await r1.runFull(["put", "--lease=1234", "lk3", "v"], expectFailure: true)
            cluster.expect(unknown.stderr.contains("requested lease not found"), "unknown lease: \(unknown.stderr)")
            let tooLarge = try await r1.runFull(["lease", "grant", "9000000001"], expectFailure: true)
            cluster.expect(tooLarge.stderr.contains("too large lease TTL"), "TTL too large: \(tooLarge.stderr)")
            // A key put without a lease leaves the lease; revoke deletes the others at one revision.
            _ = try await r1.run(["put", "lk2", "v2-free"])
            let revoked = try await r2.run(["lease", "revoke", id])
            cluster.expect(revoked.contains("lease \(id) revoked"), "revoke: \(revoked)")
            cluster.expect(try await r3.run(["get", "lk1"]).isEmpty, "lk1 outlived its lease")
            cluster.expect(try await r3.run(["get", "lk2"]).contains("v2-free"), "lk2 (detached) was deleted")
            let expired = try await r1.run(["lease", "timetolive", id])
            cluster.expect(expired.contains("already expired"), "timetolive after revoke: \(expired)")
            let again = try await r1.runFull(["lease", "revoke", id], expectFailure: true)
            cluster.expect(again.stderr.contains("requested lease not found"), "second revoke: \(again.stderr)")
        }
    }

    @Test("etcdctl lock and elect: the second contender waits for the first", .timeLimit(.minutes(5)))
    func etcdctlLockAndElect() async throws {
        let executable = try Etcdctl.locate()
        try await Self.withLeaseCluster(name: "lease-lock-elect") { cluster, _ in
            let endpoints = "--endpoints=\(cluster.endpoints.joined(separator: ","))"
            let env = ["ETCDCTL_API": "3"]
            // Lock: the first holder (no command) holds until interrupted. Each contender starts
            // once the one before holds (else either may win).
            var programs: [BackgroundProgram] = []
            func start(_ name: String, _ arguments: [String]) throws -> BackgroundProgram {
                let program = try BackgroundProgram(name: name, executable, [endpoints] + arguments, environment: env)
                programs.append(program)
                return program
            }
            do {
                let first = try start("lock-1", ["lock", "mylock"])
                cluster.expect(await first.awaitOutput("mylock/", timeout: .seconds(15)), "first lock: \(first.report)")
                let second = try start("lock-2", ["lock", "mylock", "--", "sh", "-c", "echo second-holder rev=$ETCD_LOCK_REV"])
                try await Task.sleep(for: .seconds(2))
                cluster.expect(!second.stdout.contains("second-holder"), "second got the lock while the first held it")
                first.signal(SIGINT)
                cluster.expect(await second.awaitOutput("second-holder", timeout: .seconds(15)), "second lock: \(second.report)")
                cluster.expect(await second.awaitExit(timeout: .seconds(10)) && second.exitStatus == 0, "lock command: \(second.report)")
                // Election: the second candidate waits until the first resigns.
                let electFirst = try start("elect-1", ["elect", "myelection", "p1"])
                cluster.expect(await electFirst.awaitOutput("p1", timeout: .seconds(15)), "first elect: \(electFirst.report)")
                let electSecond = try start("elect-2", ["elect", "myelection", "p2"])
                try await Task.sleep(for: .seconds(2))
                cluster.expect(!electSecond.stdout.contains("p2"), "second candidate elected while the first leads")
                let leader = try await Etcdctl(executable: executable, endpoint: cluster.replica(2).clientEndpoint)
                    .run(["get", "--prefix", "myelection/"])
                cluster.expect(leader.contains("p1") && leader.contains("p2"), "candidates' keys: \(leader)")
                electFirst.signal(SIGINT)
                cluster.expect(await electSecond.awaitOutput("p2", timeout: .seconds(15)), "second elect: \(electSecond.report)")
            } catch {
                cluster.fail("\(error)")
            }
            for program in programs { await program.killAll() }
        }
    }

    @Test("a lease of TTL 2 s not kept alive has its keys deleted on every replica within TTL + an election timeout", .timeLimit(.minutes(5)))
    func unkeptLeaseExpires() async throws {
        let executable = try Etcdctl.locate()
        try await Self.withLeaseCluster(name: "lease-expiry") { cluster, connections in
            let etcdctl = Etcdctl(executable: executable, endpoint: cluster.replica(2).clientEndpoint)
            for round in 1...2 {
                let id = try LeaseOutput.grantedID(try await etcdctl.run(["lease", "grant", "2"]))
                let granted = ContinuousClock.now
                _ = try await etcdctl.run(["put", "--lease=\(id)", "expiring-\(round)", "v"])
                // Well before the TTL every replica still has it.
                try await Task.sleep(until: granted.advanced(by: .milliseconds(1_200)))
                for replica in 1...3 {
                    let value = try await connections.replica(replica).value("expiring-\(round)", serializable: true)
                    cluster.expect(value == "v", "r\(replica) lost the key \(granted.duration(to: .now)) after the grant")
                }
                // TTL + the election timeout (150 ms), plus 300 ms for polling three replicas.
                let bound = Duration.milliseconds(2_000 + 150 + 300)
                var goneAt: [Int: Duration] = [:]
                _ = await eventually(timeout: .seconds(6), interval: .milliseconds(20)) {
                    for replica in 1...3 where goneAt[replica] == nil {
                        // A failed read (replica busy) is not an absent key.
                        guard let response = try? await connections.replica(replica).get("expiring-\(round)", serializable: true)
                        else { continue }
                        if response.kvs.isEmpty { goneAt[replica] = granted.duration(to: .now) }
                    }
                    return goneAt.count == 3
                }
                print("lease expiry round \(round): keys gone at \(goneAt.sorted { $0.key < $1.key })")
                for replica in 1...3 {
                    guard let at = goneAt[replica] else {
                        cluster.fail("r\(replica) still has the key of an expired lease")
                        continue
                    }
                    cluster.expect(at <= bound, "r\(replica) deleted the key only \(at) after the grant (bound \(bound))")
                }
                let ttl = try await etcdctl.run(["lease", "timetolive", id])
                cluster.expect(ttl.contains("already expired"), "timetolive of an expired lease: \(ttl)")
            }
        }
    }

    @Test("a kept-alive lease survives kill -9 of the leader and a restart of the whole cluster", .timeLimit(.minutes(5)))
    func keptAliveLeaseSurvivesFailures() async throws {
        let executable = try Etcdctl.locate()
        try await Self.withLeaseCluster(name: "lease-survives") { cluster, connections in
            let etcdctl = Etcdctl(executable: executable, endpoint: cluster.replica(1).clientEndpoint)
            let id = try LeaseOutput.grantedID(try await etcdctl.run(["lease", "grant", "5"]))
            _ = try await etcdctl.run(["put", "--lease=\(id)", "kept", "alive"])
            let keeper = try BackgroundProgram(
                name: "keep-alive", executable,
                ["--endpoints=\(cluster.endpoints.joined(separator: ","))", "lease", "keep-alive", id],
                environment: ["ETCDCTL_API": "3"])
            do {
                cluster.expect(await keeper.awaitOutput("keepalived", timeout: .seconds(10)), "keep-alive: \(keeper.report)")
                guard let leader = await connections.awaitLeader() else { throw ProcessTestError("no leader") }
                await cluster.replica(leader).kill9()
                try await Task.sleep(for: .seconds(7))
                let survivors = (1...3).filter { $0 != leader }
                for replica in survivors {
                    let value = try await connections.replica(replica).value("kept", serializable: true)
                    cluster.expect(value == "alive", "r\(replica): the kept-alive key is gone after the leader died")
                }
                try cluster.replica(leader).start()
                // The whole cluster down and up again.
                try await Task.sleep(for: .seconds(2))
                await cluster.killAll()
                try cluster.startAll()
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    throw ProcessTestError("the restarted cluster accepts no write")
                }
                try await Task.sleep(for: .seconds(8))
                cluster.expect(keeper.isRunning, "etcdctl lease keep-alive gave up: \(keeper.report)")
                for replica in 1...3 {
                    let value = try await connections.replica(replica).value("kept")
                    cluster.expect(value == "alive", "r\(replica): the kept-alive key is gone after the restart")
                }
                // Once nobody keeps it alive, it goes.
                await keeper.killAll()
                let stopped = ContinuousClock.now
                let gone = await eventually(timeout: .seconds(10), interval: .milliseconds(50)) {
                    (try? await connections.replica(2).get("kept", serializable: true))?.kvs.isEmpty == true
                }
                cluster.expect(gone, "the lease outlived its keep-alives")
                print("lease survives: key gone \(stopped.duration(to: .now)) after the keep-alives stopped (TTL 5 s)")
            } catch {
                cluster.fail("\(error)")
            }
            await keeper.killAll()
        }
    }

    @Test("lock safety under pause: a SIGSTOPped holder loses the lock and the next fencing token is higher", .timeLimit(.minutes(5)))
    func pausedLockHolder() async throws {
        let executable = try Etcdctl.locate()
        try await Self.withLeaseCluster(name: "lease-pause") { cluster, _ in
            let endpoints = "--endpoints=\(cluster.endpoints.joined(separator: ","))"
            let env = ["ETCDCTL_API": "3"]
            let command = ["--", "sh", "-c", "echo rev=$ETCD_LOCK_REV; sleep 30"]
            let first = try BackgroundProgram(
                name: "holder-1", executable, [endpoints, "lock", "--ttl=2", "fenced"] + command, environment: env)
            var second: BackgroundProgram?
            do {
                guard await first.awaitOutput("rev=", timeout: .seconds(15)), let firstToken = LeaseOutput.lockRevision(first.stdout)
                else { throw ProcessTestError("first holder: \(first.report)") }
                first.signal(SIGSTOP)  // its keep-alives stop; it still believes it holds the lock
                let paused = ContinuousClock.now
                second = try BackgroundProgram(
                    name: "holder-2", executable, [endpoints, "lock", "--ttl=2", "fenced", "--", "sh", "-c", "echo rev=$ETCD_LOCK_REV"],
                    environment: env)
                guard await second!.awaitOutput("rev=", timeout: .seconds(15)), let secondToken = LeaseOutput.lockRevision(second!.stdout)
                else {
                    let state = try? await ProgramRun.run(
                        executable, [endpoints, "get", "--prefix", "fenced/", "-w", "json"], environment: env, timeout: .seconds(10))
                    let leases = try? await ProgramRun.run(executable, [endpoints, "lease", "list"], environment: env, timeout: .seconds(10))
                    throw ProcessTestError(
                        "second holder never got the lock: \(second!.report)\nkeys: \(state?.stdout ?? "?")\nleases: \(leases?.stdout ?? "?")")
                }
                let waited = paused.duration(to: .now)
                print("lock under pause: first token \(firstToken), second token \(secondToken), second got it \(waited) after the pause")
                cluster.expect(secondToken > firstToken, "fencing token \(secondToken) not above \(firstToken)")
                // The first holder's last keep-alive was at most a third of the TTL before the pause.
                cluster.expect(waited >= .milliseconds(1_000), "the second holder got the lock \(waited) after the pause, before the TTL")
            } catch {
                cluster.fail("\(error)")
            }
            await first.killAll()
            if let second { await second.killAll() }
        }
    }

    @Test(
        "clientv3 concurrency.Mutex and concurrency.Election work unchanged (Go, GOPATH mode)",
        .enabled(if: GoProgram.goPath != nil, GoProgram.skipReason), .timeLimit(.minutes(10)))
    func goConcurrencyRecipes() async throws {
        let binary = try await GoProgram.build("synodlease")
        defer { try? FileManager.default.removeItem(atPath: (binary as NSString).deletingLastPathComponent) }
        try await Self.withLeaseCluster(name: "lease-go") { cluster, _ in
            let run = try await ProgramRun.run(
                binary, [cluster.replica(1).clientEndpoint, cluster.replica(2).clientEndpoint], timeout: .seconds(120))
            print(run.stdout)
            cluster.expect(run.status == 0 && run.stdout.contains("ok done"), "synodlease: \(run.stdout)\n\(run.stderr)")
        }
    }
}
