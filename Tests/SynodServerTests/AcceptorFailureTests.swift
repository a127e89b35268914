import Foundation
import Testing

extension SynodProcessTests {
    @Test(
        "random replica failures (--fail-mode replica --fail-every 1500 --fail-downtime 300): 100 puts with retries are all acknowledged and the replicas agree",
        .timeLimit(.minutes(10)))
    func randomAcceptorFailures() async throws {
        // Each of the three replicas fails every 1.5 s on average (whole replica, the harsher
        // mode), leaders among them. Puts go on past the first 100 until at least ten failures
        // were logged (about 5 s): a run that happened to draw none would prove nothing.
        let puts = 100
        let crashesMin = 10
        let keys = (0..<20).map { "chaos/k\($0)" }
        let seed = try FaultSeed()
        let replay = seed.replay(filter: "randomAcceptorFailures")
        print("acceptor-failures: \(replay)")
        try await LocalCluster.with(
            name: "acceptor-failures", replicas: 3, extraArguments: ["--fail-mode", "replica", "--fail-every", "1500", "--fail-downtime", "300"],
            replicaArguments: { id, _ in seed.arguments(replica: id) }
        ) { cluster in
            let started = ContinuousClock.now
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                var requestIDs = RequestIDGenerator()
                var expected: [String: String?] = [:]
                var attempts = 0
                var lastError = "none"
                var failures: [String: Int] = [:]
                var replica = 0
                var acknowledgedPuts = 0
                for index in 0... {
                    if index >= puts, index % 10 == 0, cluster.crashesLogged() >= crashesMin { break }
                    let key = keys[index % keys.count]
                    let value = "v\(index)"
                    let requestID = requestIDs.next()
                    // One put, retried with the same request id on the next replica until
                    // acknowledged; bounded per put and by the test's overall deadline.
                    let acknowledged = await eventually(timeout: .seconds(20), interval: .milliseconds(20)) {
                        attempts += 1
                        do {
                            _ = try await connections.connections[replica].put(
                                key, value, requestID: requestID, timeout: .seconds(2))
                            return true
                        } catch {
                            failures[describe(error), default: 0] += 1
                            lastError = "\(connections.connections[replica].endpoint): \(describe(error))"
                            replica = (replica + 1) % connections.connections.count
                            return false
                        }
                    }
                    guard acknowledged else {
                        let tally = failures.sorted { $0.value > $1.value }.map { "\($0.value) × \($0.key)" }
                        cluster.fail(
                            "put #\(index) (\(key) = \(value)) not acknowledged within 20 s; last error \(lastError); "
                                + "errors so far (\(attempts) attempts):\n" + tally.joined(separator: "\n") + "\n" + replay)
                        return
                    }
                    expected[key] = value
                    acknowledgedPuts += 1
                    guard ContinuousClock.now - started < .seconds(150) else {
                        cluster.fail(
                            "\(acknowledgedPuts) puts and \(cluster.crashesLogged()) injected failures within 150 s, "
                                + "expected \(puts) and \(crashesMin); \(replay)")
                        return
                    }
                }
                print(
                    "acceptor-failures: \(acknowledgedPuts) puts acknowledged in \(ContinuousClock.now - started), "
                        + "\(attempts) attempts")
                for (failure, count) in failures.sorted(by: { $0.value > $1.value }) {
                    print("acceptor-failures: \(count) × \(failure)")
                }

                // Every replica (each of them failing at random meanwhile) comes to hold the
                // last value of every key.
                let convergeStarted = ContinuousClock.now
                let disagreements = await connections.awaitAgreement(on: expected, timeout: .seconds(30))
                print("acceptor-failures: replicas agree: \(disagreements.isEmpty) after \(ContinuousClock.now - convergeStarted)")
                cluster.expect(
                    disagreements.isEmpty,
                    "replicas did not agree on the last values within 30 s:\n" + disagreements.prefix(20).joined(separator: "\n"))
                // And a linearizable read through each replica sees them too.
                for (index, connection) in connections.connections.enumerated() {
                    for key in [keys[index], keys[keys.count - 1 - index]] {
                        let want = expected[key]!
                        let read = await readWithRetries(connection, key)
                        cluster.expect(
                            read.isValue(want),
                            "\(connection.endpoint): linearizable \(key) = \(read.shown), expected \(want ?? "absent")")
                    }
                }
            }
            print("acceptor-failures: checks done after \(ContinuousClock.now - started)")
            let crashes = cluster.crashesLogged()
            let recoveries = cluster.logged("fault injector: acceptor recovered")
            print("acceptor-failures: \(crashes) injected crashes, \(recoveries) recoveries logged")
            cluster.expect(crashes > 0, "no log line says \"fault injector: acceptor crashed\"")
            cluster.expect(recoveries > 0, "no log line says \"fault injector: acceptor recovered\"")
            cluster.expect(cluster.logged("recovered") > 0, "no log line says \"recovered\"")
            for replica in cluster.replicas where !replica.isRunning {
                cluster.fail("r\(replica.id) is not running at the end (\(replica.terminationDescription ?? "?"))")
            }
        }
    }
}

extension SynodProcessTests {
    @Test("--seed repeats a replica's injected failures: the same downtimes in the same order, others with another seed")
    func faultSeedRepeats() async throws {
        func downtimes(seed: UInt64) async throws -> [String] {
            try await LocalCluster.with(
                name: "fault-seed", replicas: 1,
                extraArguments: ["--fail-every", "50", "--fail-downtime", "100", "--seed", "\(seed)"]
            ) { cluster in
                var found: [String] = []
                _ = await eventually(timeout: .seconds(20), interval: .milliseconds(50)) {
                    found = cluster.replicas[0].log().split(separator: "\n")
                        .filter { $0.contains("fault injector: acceptor crashed") }
                        .compactMap { line in line.firstMatch(of: /down for \d+ ms/).map { String($0.output) } }
                    return found.count >= 6
                }
                cluster.expect(found.count >= 6, "only \(found.count) injected failures logged in 20 s")
                cluster.expect(
                    cluster.logged("random seed \(seed) (--seed)") == 1, "the log does not name the seed \(seed)")
                return Array(found.prefix(6))
            }
        }
        let first = try await downtimes(seed: 42)
        let again = try await downtimes(seed: 42)
        let other = try await downtimes(seed: 43)
        #expect(first == again, "seed 42 drew \(first), then \(again)")
        #expect(first != other, "seeds 42 and 43 drew the same failures: \(first)")
    }
}

extension LocalCluster {
    /// How often `text` occurs in the replicas' logs so far.
    func logged(_ text: String) -> Int {
        replicas.reduce(0) { $0 + $1.log().components(separatedBy: text).count - 1 }
    }

    /// Injected failures the replicas' logs report so far.
    func crashesLogged() -> Int { logged("fault injector: acceptor crashed") }
}

/// A linearizable read, retried (bounded) while the replica is down or electing: the
/// value (nil when absent), or a description of the last error.
func readWithRetries(_ connection: ReplicaConnection, _ key: String, timeout: Duration = .seconds(15)) async
    -> Result<String?, ProcessTestError>
{
    var result = Result<String?, ProcessTestError>.failure(ProcessTestError("no read attempted"))
    _ = await eventually(timeout: timeout, interval: .milliseconds(50)) {
        do {
            result = .success(try await connection.value(key, timeout: .seconds(2)))
            return true
        } catch {
            result = .failure(ProcessTestError("\(connection.endpoint): \(describe(error))"))
            return false
        }
    }
    return result
}

extension Result<String?, ProcessTestError> {
    /// Whether the read succeeded with `value`.
    func isValue(_ value: String?) -> Bool {
        if case .success(let read) = self { return read == value }
        return false
    }

    /// The value read, for messages: `"v"`, `absent` or the error.
    var shown: String {
        switch self {
        case .success(let value?): return "\"\(value)\""
        case .success(nil): return "absent"
        case .failure(let error): return "error (\(error))"
        }
    }
}
