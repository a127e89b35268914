import KVStore
import Testing

@testable import ReplicaRuntime
@testable import SynodSimulation

/// The simulator with auth (Simulation+Auth.swift): users and roles set up through the log,
/// writes checked at apply, guest writes denied and never in any store.
@Suite("Deterministic simulation with auth")
struct SimulationAuthTests {
    static func options(seed: UInt64) -> SimulationOptions {
        var options = SimulationOptions(seed: seed, replicaCount: seed % 2 == 0 ? 5 : 3, operationCount: 80)
        options.auth = true
        return options
    }

    @Test("100 seeds with faults and auth: no violation, guest writes denied")
    func manySeeds() async {
        await offThePool {
            var denied = 0
            var enabledRuns = 0
            for seed: UInt64 in 1...100 {
                let simulation = Simulation(options: Self.options(seed: seed))
                let result = simulation.run()
                #expect(result.violations.isEmpty, "\(result.report)")
                denied += simulation.authModel.guestWritesDenied
                if simulation.authModel.isEnabled { enabledRuns += 1 }
            }
            // The checks are not vacuous: most runs enable auth and guests keep trying.
            #expect(enabledRuns >= 75, "auth was enabled in only \(enabledRuns) of 100 runs")
            #expect(denied >= 100, "only \(denied) guest writes were answered 'permission denied'")
        }
    }

    @Test("Same seed, same run with auth")
    func deterministic() async {
        await offThePool {
            let first = Simulation(options: Self.options(seed: 7)).run()
            let second = Simulation(options: Self.options(seed: 7)).run()
            #expect(first.traceDigest == second.traceDigest)
            #expect(first.replayArguments.hasSuffix("--auth"))
        }
    }

    @Test("The denied-write checker catches a guest value that reached a store")
    func checkerCatchesLeak() async {
        await offThePool {
            let simulation = Simulation(options: Self.options(seed: 3))
            let result = simulation.run()
            #expect(result.violations.isEmpty, "\(result.report)")
            guard let runtime = simulation.nodes.first(where: { $0.runtime != nil })?.runtime else {
                Issue.record("no replica up at the end of seed 3")
                return
            }
            // What a store that skipped the check at apply would hold (written as root, allowed).
            let leaked = WriteOperation.put(PutRequest(key: Array("k0".utf8), value: Array("denied.c9.9".utf8)))
            let applied = runtime.kv.apply(
                WriteCommand(
                    requestID: RequestID(clientID: 0, sequence: 0),
                    operation: .auth(.authorized(user: "root", operation: leaked))))
            #expect(applied.error == nil)
            simulation.checkDeniedWrites()
            #expect(simulation.violations.contains { $0.contains("holds a denied write") }, "\(simulation.violations)")
        }
    }
}
