import Testing

@testable import SynodSimulation

/// Simulated watchers on the shipped watch hub, checked by `WatchChecker` in every run.
@Suite("Simulated watch")
struct WatchSimulationTests {
    @Test("watchers receive events and pass the watch checker across crashes")
    func watchersPass() async {
        await offThePool {
            var responses = 0
            for seed: UInt64 in 1...20 {
                let result = Simulation(options: SimulationOptions(seed: seed, replicaCount: seed % 2 == 0 ? 5 : 3)).run()
                #expect(result.violations.isEmpty, "\(result.report)")
                responses += result.watchResponsesChecked
            }
            #expect(responses > 100, "the watchers received only \(responses) event responses in 20 seeds")
        }
    }

    @Test("drop-watch-event is caught by the watch checker")
    func droppedEventCaught() async {
        await offThePool {
            var caught: (seed: UInt64, violation: String)?
            for seed: UInt64 in 1...50 where caught == nil {
                let result = Simulation(
                    options: SimulationOptions(seed: seed, replicaCount: 3, bug: .dropWatchEvent)
                ).run()
                if let found = result.violations.first(where: { $0.contains("watch: watcher") }) { caught = (seed, found) }
            }
            #expect(caught != nil, "drop-watch-event was not caught by the watch checker in 50 seeds")
            if let caught { print("drop-watch-event caught at seed \(caught.seed): \(caught.violation)") }
        }
    }
}
