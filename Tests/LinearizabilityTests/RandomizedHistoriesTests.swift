import Foundation
import Testing

@testable import Linearizability

/// Histories generated from a real map: always linearizable, and no longer so once one read
/// returns a value nobody wrote. Every failure names its seed.
@Suite struct RandomizedHistoriesTests {
    static let seeds: [UInt64] = Array(1...60)

    static func generator(seed: UInt64, keys: Int, clients: Int) -> RegisterHistoryGenerator {
        var random = SplitMix64(seed: seed)
        let window = random.between(1...25)
        let timeoutPercent = random.below(15)
        let uniqueValues = random.percent(50)
        return RegisterHistoryGenerator(
            random: random,
            keys: (0..<keys).map { "k\($0)" },
            clients: clients,
            window: window,
            timeoutPercent: timeoutPercent,
            uniqueValues: uniqueValues
        )
    }

    @Test(arguments: seeds)
    func generatedHistoryIsAccepted(seed: UInt64) {
        var generator = Self.generator(seed: seed, keys: 1 + Int(seed % 3), clients: 1 + Int(seed % 6))
        let history = generator.generate(count: 150)
        let result = check(history)
        #expect(result.isOK, "seed \(seed): \(result)")
    }

    @Test(arguments: seeds)
    func readOfImpossibleValueIsRejected(seed: UInt64) throws {
        var generator = Self.generator(seed: seed, keys: 1 + Int(seed % 3), clients: 1 + Int(seed % 6))
        var history = generator.generate(count: 150)
        var random = SplitMix64(seed: seed ^ 0xDEAD_BEEF)
        let reads = history.indices.filter { history[$0].input.isReadOnly && history[$0].isObserved }
        try #require(!reads.isEmpty, "seed \(seed): generated no reads")
        let mutated = reads[random.below(reads.count)]
        history[mutated].output = .value("impossible")
        let result = check(history)
        let found = try #require(violation(result), "seed \(seed): mutated read accepted, result \(result)")
        #expect(found.partition == "key \"\(history[mutated].input.key)\"", "seed \(seed)")
    }

    /// The optimized search against the definition, on small random histories whose outputs
    /// are random too, so both verdicts occur.
    /// Half the operations with an unknown outcome exercises the pruning of their choices.
    @Test(arguments: [15, 50])
    func agreesWithNaiveCheckerOnSmallHistories(unobservedPercent: Int) {
        var verdicts = (ok: 0, illegal: 0)
        for seed in UInt64(1)...3_000 {
            let history = Self.smallRandomHistory(seed: seed, unobservedPercent: unobservedPercent)
            let expected = naiveIsLinearizable(model: KVModel(), history: history)
            let result = check(history)
            #expect(result.isOK == expected, "seed \(seed): naive says \(expected), checker \(result)")
            #expect(result.isOK || result.isIllegal, "seed \(seed): budget exhausted on \(history.count) operations")
            if expected { verdicts.ok += 1 } else { verdicts.illegal += 1 }
        }
        // Both verdicts must be well represented, or the comparison proves little.
        #expect(verdicts.ok > 300, "\(verdicts)")
        #expect(verdicts.illegal > 300, "\(verdicts)")
    }

    static func smallRandomHistory(seed: UInt64, unobservedPercent: Int) -> [KVOperation] {
        var random = SplitMix64(seed: seed)
        let values: [String?] = [nil, "a", "b"]
        let keys = ["x", "y"]
        return (0..<(2 + random.below(7))).map { _ in
            let key = keys[random.below(random.percent(80) ? 1 : 2)]
            let value = values[1 + random.below(2)]!
            let input: KVModel.Input
            let output: KVModel.Output
            switch random.below(4) {
            case 0:
                input = .put(key: key, value: value)
                output = .putOK
            case 1:
                input = .get(key: key)
                output = .value(values[random.below(3)])
            case 2:
                input = .delete(key: key)
                output = .deleted(random.percent(50))
            default:
                input = .cas(key: key, expected: values[random.below(3)], new: value)
                output = .cas(succeeded: random.percent(50))
            }
            let call = random.between(0...20)
            if random.percent(unobservedPercent) {
                return Operation(clientID: random.below(4), input: input, call: call, returned: nil, output: nil)
            }
            let returned = call + random.between(0...8)
            return Operation(clientID: random.below(4), input: input, call: call, returned: returned, output: output)
        }
    }

    /// ~2,000 operations over 5 keys from 8 clients: must finish well within the default
    /// budget (and, in practice, well under a second in release builds).
    @Test func largeHistoryChecksWithinBudget() {
        let seed: UInt64 = 20_240_601
        var random = SplitMix64(seed: seed)
        var generator = RegisterHistoryGenerator(
            random: SplitMix64(seed: random.next()),
            keys: ["a", "b", "c", "d", "e"],
            clients: 8,
            window: 30,
            timeoutPercent: 5,
            uniqueValues: false
        )
        let history = generator.generate(count: 2_000)
        let started = ContinuousClock.now
        let result = check(history, stepBudget: 2_000_000)
        let elapsed = ContinuousClock.now - started
        print("checked \(history.count) operations in \(elapsed): \(result)")
        #expect(result.isOK, "seed \(seed): \(result)")
    }
}
