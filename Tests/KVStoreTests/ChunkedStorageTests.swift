import Testing

@testable import KVStore

@Suite("Chunked storage")
struct ChunkedStorageTests {
    /// Random appends, in-place changes of the last element and drops from the front, across
    /// chunk boundaries, against a plain array; a copy taken midway keeps its elements.
    @Test("ChunkedArray behaves as an array, and a copy is unaffected by later writes")
    func chunkedArrayMatchesArray() {
        let chunk = ChunkedArray<Int>.chunkCapacity
        for seed in testSeeds {
            var random = SeededGenerator(seed: seed)
            var chunked = ChunkedArray<Int>()
            var model: [Int] = []
            var copies: [(ChunkedArray<Int>, [Int])] = []
            for step in 0..<(3 * chunk) {
                switch Int.random(in: 0..<100, using: &random) {
                case 0..<80:
                    let value = Int.random(in: 0..<1_000_000, using: &random)
                    chunked.append(value)
                    model.append(value)
                case 80..<90 where !model.isEmpty:
                    let added = Int.random(in: 1..<10, using: &random)
                    chunked.modifyLast { $0 += added }
                    model[model.count - 1] += added
                case 90..<99 where !model.isEmpty:
                    let dropped = Int.random(in: 0...min(model.count, chunk + 7), using: &random)
                    chunked.removeFirst(dropped)
                    model.removeFirst(dropped)
                default:
                    copies.append((chunked, model))
                }
                #expect(chunked.count == model.count, "seed \(seed) step \(step)")
            }
            #expect(Array(chunked) == model, "seed \(seed)")
            #expect(chunked == ChunkedArray(model), "seed \(seed)")
            #expect(chunked.first == model.first && chunked.last == model.last, "seed \(seed)")
            for (index, (copy, expected)) in copies.enumerated() {
                #expect(Array(copy) == expected, "seed \(seed) copy \(index)")
            }
            chunked.removeFirst(chunked.count)
            #expect(chunked.isEmpty, "seed \(seed)")
        }
    }

    /// Random sets, removals and in-place changes against a dictionary; a copy is unaffected.
    @Test("ShardedBytesMap behaves as a dictionary, and a copy is unaffected by later writes")
    func shardedMapMatchesDictionary() {
        for seed in testSeeds {
            var random = SeededGenerator(seed: seed)
            var sharded = ShardedBytesMap<[Int]>()
            var model: [[UInt8]: [Int]] = [:]
            var copy: (ShardedBytesMap<[Int]>, [[UInt8]: [Int]])?
            for step in 0..<5_000 {
                let key = Array("k\(Int.random(in: 0..<700, using: &random))".utf8)
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<5:
                    sharded.modify(key, default: []) { $0.append(step) }
                    model[key, default: []].append(step)
                case 5..<7:
                    sharded[key] = [step]
                    model[key] = [step]
                case 7..<9:
                    sharded[key] = nil
                    model[key] = nil
                default:
                    if copy == nil { copy = (sharded, model) }
                }
                #expect(sharded[key] == model[key], "seed \(seed) step \(step)")
            }
            #expect(sharded.count == model.count, "seed \(seed)")
            #expect(Set(sharded.keys) == Set(model.keys), "seed \(seed)")
            for (key, value) in model { #expect(sharded[key] == value, "seed \(seed)") }
            if let (before, expected) = copy {
                #expect(before.count == expected.count, "seed \(seed)")
                for (key, value) in expected { #expect(before[key] == value, "seed \(seed) copy") }
                #expect(before != sharded || expected == model, "seed \(seed)")
            }
        }
    }
}
