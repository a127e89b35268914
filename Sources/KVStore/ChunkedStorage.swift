/// Containers whose copies are cheap to make and cheap to write to afterwards.
///
/// The store is a value: a snapshot takes a copy (`let image = kv`) and encodes it off the
/// loop while the replica goes on writing. A write then copies every flat container it
/// touches — the whole change log, every compaction candidate, every key's chain — before
/// it can change it: with a few hundred thousand revisions that first write after a
/// snapshot held the replica's loop for 30–60 ms (measured), and a flat hash map's growth
/// stalled every replica at the same revision. These containers keep their elements in
/// fixed-size pieces, so a copy shares the pieces and a write copies only the piece it
/// touches.

/// An append-mostly array kept in chunks of `chunkCapacity` elements: appending after a
/// copy copies the last chunk only; dropping from the front drops whole chunks.
struct ChunkedArray<Element>: RandomAccessCollection {
    static var chunkCapacity: Int { 4_096 }

    private var chunks: [[Element]] = []
    /// Elements dropped from the front of `chunks[0]` (less than a chunk).
    private var head = 0
    private(set) var count = 0

    init() {}

    init<Elements: Sequence<Element>>(_ elements: Elements) {
        for element in elements { append(element) }
    }

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(position: Int) -> Element {
        precondition(position >= 0 && position < count, "index \(position) out of 0..<\(count)")
        let absolute = position + head
        return chunks[absolute / Self.chunkCapacity][absolute % Self.chunkCapacity]
    }

    mutating func append(_ element: Element) {
        if chunks.isEmpty || chunks[chunks.count - 1].count == Self.chunkCapacity {
            var chunk: [Element] = []
            chunk.reserveCapacity(Self.chunkCapacity)
            chunk.append(element)
            chunks.append(chunk)
        } else {
            chunks[chunks.count - 1].append(element)
        }
        count += 1
    }

    /// Changes the last element in place (its chunk is copied first if shared).
    mutating func modifyLast<Result>(_ body: (inout Element) -> Result) -> Result {
        precondition(count > 0, "modifyLast of an empty array")
        let last = chunks.count - 1
        return body(&chunks[last][chunks[last].count - 1])
    }

    /// Drops the first `dropped` elements: O(chunks), and no element is copied.
    mutating func removeFirst(_ dropped: Int) {
        precondition(dropped >= 0 && dropped <= count, "removing \(dropped) of \(count) elements")
        guard dropped > 0 else { return }
        if dropped == count {
            self = ChunkedArray()
            return
        }
        count -= dropped
        head += dropped
        let whole = head / Self.chunkCapacity
        if whole > 0 {
            chunks.removeFirst(whole)
            head -= whole * Self.chunkCapacity
        }
    }
}

extension ChunkedArray: Sendable where Element: Sendable {}

extension ChunkedArray: Equatable where Element: Equatable {
    static func == (lhs: ChunkedArray, rhs: ChunkedArray) -> Bool {
        lhs.count == rhs.count && lhs.elementsEqual(rhs)
    }
}

/// A hash map from byte strings split into `shardCount` maps by a hash of the key: a copy
/// shares the shards, and a write copies (or grows) only its key's shard. Looked up, never
/// iterated in hash order (only `keys`, which callers sort).
struct ShardedBytesMap<Value> {
    static var shardCount: Int { 256 }

    private var shards: [[HashedBytes: Value]] = Array(repeating: [:], count: Self.shardCount)

    /// O(shards).
    var count: Int { shards.reduce(0) { $0 + $1.count } }

    init() {}

    /// The shard of `key`: FNV-1a of its bytes — not the maps' own per-process seeded hash,
    /// and cheap for the short keys etcd users write.
    private static func shard(_ key: [UInt8]) -> Int {
        var hash: UInt32 = 2_166_136_261
        for byte in key { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return Int(hash % UInt32(shardCount))
    }

    subscript(key: [UInt8]) -> Value? {
        get { shards[Self.shard(key)][HashedBytes(key)] }
        set { shards[Self.shard(key)][HashedBytes(key)] = newValue }
    }

    /// Changes `key`'s value in place, starting from `defaultValue` if it has none.
    mutating func modify<Result>(_ key: [UInt8], default defaultValue: @autoclosure () -> Value, _ body: (inout Value) -> Result) -> Result {
        body(&shards[Self.shard(key)][HashedBytes(key), default: defaultValue()])
    }

    /// Every key, in no particular order.
    var keys: [[UInt8]] {
        var keys: [[UInt8]] = []
        for shard in shards { keys.append(contentsOf: shard.keys.lazy.map(\.bytes)) }
        return keys
    }

    mutating func reserveCapacity(_ capacity: Int) {
        let perShard = (capacity + Self.shardCount - 1) / Self.shardCount
        for index in shards.indices { shards[index].reserveCapacity(perShard) }
    }
}

extension ShardedBytesMap: Sendable where Value: Sendable {}

extension ShardedBytesMap: Equatable where Value: Equatable {
    static func == (lhs: ShardedBytesMap, rhs: ShardedBytesMap) -> Bool {
        lhs.shards == rhs.shards
    }
}
