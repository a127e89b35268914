import Testing
@testable import Linearizability

@Test func stressTemp() {
    var unknown = 0
    let started = ContinuousClock.now
    for seed in UInt64(1000)...1400 {
        var generator = RandomizedHistoriesTests.generator(seed: seed, keys: 1 + Int(seed % 3), clients: 1 + Int(seed % 8))
        generator.timeoutPercent = 20
        var history = generator.generate(count: 200)
        #expect(check(history).isOK, "seed \(seed)")
        var random = SplitMix64(seed: seed)
        let reads = history.indices.filter { history[$0].input.isReadOnly && history[$0].isObserved }
        let mutated = reads[random.below(reads.count)]
        history[mutated].output = .value("impossible")
        let r = check(history)
        if case .unknown = r { unknown += 1; print("unknown seed", seed) }
        #expect(!r.isOK)
    }
    print("unknowns", unknown, ContinuousClock.now - started)
}
