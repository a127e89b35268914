/// Something stored in an `OrderedIndex` under its key.
protocol IndexEntry: Sendable, Equatable {
    var key: [UInt8] { get }
}

extension KeyValue: IndexEntry {}

/// The live keys in byte order.
typealias KeyIndex = OrderedIndex<KeyValue>

/// A key's first 16 bytes, zero-padded, as two big-endian words, kept next to the entries so
/// a search compares two integers instead of following a pointer to each key's bytes.
///
/// When two prefixes differ they order their keys: at the first differing byte either both
/// keys have a byte (so it decides), or the smaller prefix has padding there, and then its
/// key is a proper prefix of the other. Equal prefixes decide nothing ("a" and "a\0" have
/// the same one): the keys themselves are compared.
struct KeyPrefix: Sendable, Equatable {
    var high: UInt64
    var low: UInt64

    init(_ key: [UInt8]) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        key.withUnsafeBufferPointer { bytes in
            let count = Swift.min(bytes.count, 16)
            var index = 0
            while index < count {
                if index < 8 {
                    high |= UInt64(bytes[index]) << (56 - 8 * UInt64(index))
                } else {
                    low |= UInt64(bytes[index]) << (56 - 8 * UInt64(index - 8))
                }
                index += 1
            }
        }
        self.high = high
        self.low = low
    }

    /// -1 or 1 when the prefixes order their keys, 0 when the keys must be compared.
    @inline(__always)
    func order(_ other: KeyPrefix) -> Int {
        if high != other.high { return high < other.high ? -1 : 1 }
        if low != other.low { return low < other.low ? -1 : 1 }
        return 0
    }
}

/// An ordered key space: a sorted sequence of entries split into chunks of at most
/// `KVLimits.keyIndexChunkEntriesMax` entries (a two-level B-tree without the height).
///
/// Lookup is a binary search over the chunks' last keys, then inside one chunk: O(log n).
/// Both searches run over `KeyPrefix`es stored contiguously (one per chunk's last key, one
/// per entry) and touch a key's own bytes only when two prefixes are equal: with 100k keys,
/// a put's lookup used to chase ≈ 18 pointers into cold memory and took 9 % of a replica's CPU.
/// An insert shifts at most one chunk (O(chunk)) and splits it when full; a range visits
/// O(log n + k) entries. Copying the index is O(1) (copy on write) and a later mutation
/// copies only the outer arrays and the touched chunk, which is how a txn keeps its
/// pre-txn view cheaply.
///
/// Invariants (checked by `checkInvariants`): no chunk is empty or over the maximum, keys
/// strictly ascend across the whole sequence, every prefix is its key's, `count` is the
/// number of entries.
struct OrderedIndex<Entry: IndexEntry>: Sendable {
    struct Chunk: Sendable {
        var entries: [Entry]
        /// `prefixes[i]` is `KeyPrefix(entries[i].key)`.
        var prefixes: [KeyPrefix]

        init(_ entries: [Entry]) {
            self.init(entries: entries, prefixes: entries.map { KeyPrefix($0.key) })
        }

        init(entries: [Entry], prefixes: [KeyPrefix]) {
            self.entries = entries
            self.prefixes = prefixes
        }

        var count: Int { entries.count }
    }

    private(set) var chunks: [Chunk] = []
    /// `lastPrefixes[c]` is the prefix of `chunks[c]`'s last key.
    private var lastPrefixes: [KeyPrefix] = []
    private(set) var count = 0

    /// A place between entries: `entry` indexes into `chunks[chunk]`; the end is
    /// `(chunks.count, 0)`. Every position handed out is either the end or a valid entry.
    struct Position: Sendable, Hashable {
        var chunk: Int
        var entry: Int
    }

    init() {}

    /// Builds the index from entries already in strictly ascending key order.
    init(sortedEntries: [Entry]) {
        let chunkSize = Swift.max(1, KVLimits.keyIndexChunkEntriesMax / 2)
        var start = 0
        while start < sortedEntries.count {
            let stop = Swift.min(start + chunkSize, sortedEntries.count)
            let chunk = Chunk(Array(sortedEntries[start..<stop]))
            chunks.append(chunk)
            lastPrefixes.append(chunk.prefixes[chunk.count - 1])
            start = stop
        }
        count = sortedEntries.count
    }

    var endPosition: Position { Position(chunk: chunks.count, entry: 0) }

    subscript(position: Position) -> Entry {
        chunks[position.chunk].entries[position.entry]
    }

    /// The first position whose key is `>= key`.
    func lowerBound(_ key: [UInt8]) -> Position {
        let prefix = KeyPrefix(key)
        var low = 0
        var high = chunks.count
        lastPrefixes.withUnsafeBufferPointer { lasts in
            while low < high {
                let middle = (low + high) / 2
                var order = lasts[middle].order(prefix)
                if order == 0 {
                    // Chunks are never empty, so `last` exists.
                    let entries = chunks[middle].entries
                    order = KVBytes.compare(entries[entries.count - 1].key, key)
                }
                if order < 0 {
                    low = middle + 1
                } else {
                    high = middle
                }
            }
        }
        if low == chunks.count { return endPosition }
        let chunk = chunks[low]
        var entryLow = 0
        var entryHigh = chunk.count
        chunk.prefixes.withUnsafeBufferPointer { prefixes in
            while entryLow < entryHigh {
                let middle = (entryLow + entryHigh) / 2
                var order = prefixes[middle].order(prefix)
                if order == 0 { order = KVBytes.compare(chunk.entries[middle].key, key) }
                if order < 0 {
                    entryLow = middle + 1
                } else {
                    entryHigh = middle
                }
            }
        }
        precondition(entryLow < chunk.count, "lowerBound: the chunk's last key is >= the search key")
        return Position(chunk: low, entry: entryLow)
    }

    func find(_ key: [UInt8]) -> Entry? {
        let position = lowerBound(key)
        guard position != endPosition else { return nil }
        let candidate = self[position]
        return KVBytes.compare(candidate.key, key) == 0 ? candidate : nil
    }

    func next(_ position: Position) -> Position {
        precondition(position.chunk < chunks.count, "next: past the end")
        if position.entry + 1 < chunks[position.chunk].count {
            return Position(chunk: position.chunk, entry: position.entry + 1)
        }
        return Position(chunk: position.chunk + 1, entry: 0)
    }

    func previous(_ position: Position) -> Position {
        if position.entry > 0 { return Position(chunk: position.chunk, entry: position.entry - 1) }
        precondition(position.chunk > 0, "previous: before the start")
        return Position(chunk: position.chunk - 1, entry: chunks[position.chunk - 1].count - 1)
    }

    /// The half-open span of positions holding the keys of `range`.
    func positions(of range: KeyRange) -> (lower: Position, upper: Position) {
        let lower = lowerBound(range.start)
        switch range.end {
        case .single:
            if lower != endPosition && KVBytes.compare(self[lower].key, range.start) == 0 {
                return (lower, next(lower))
            }
            return (lower, lower)
        case .unbounded:
            return (lower, endPosition)
        case .exclusive(let limit):
            if KVBytes.compare(limit, range.start) <= 0 { return (lower, lower) }
            return (lower, lowerBound(limit))
        }
    }

    /// Entries between two positions, in O(chunks spanned).
    func distance(from lower: Position, to upper: Position) -> Int {
        if lower.chunk == upper.chunk { return upper.entry - lower.entry }
        precondition(lower.chunk < upper.chunk, "distance: positions out of order")
        var total = chunks[lower.chunk].count - lower.entry
        var chunk = lower.chunk + 1
        while chunk < upper.chunk {
            total += chunks[chunk].count
            chunk += 1
        }
        return total + upper.entry
    }

    /// Visits entries in `[lower, upper)` in key order until `body` returns false.
    func forEach(from lower: Position, to upper: Position, _ body: (Entry) -> Bool) {
        var position = lower
        while position != upper {
            if !body(self[position]) { return }
            position = next(position)
        }
    }

    /// Visits entries in `[lower, upper)` in descending key order until `body` returns false.
    func forEachReversed(from lower: Position, to upper: Position, _ body: (Entry) -> Bool) {
        var position = upper
        while position != lower {
            position = previous(position)
            if !body(self[position]) { return }
        }
    }

    /// Inserts `keyValue`, or replaces the entry with the same key. Returns the replaced entry.
    @discardableResult
    mutating func upsert(_ keyValue: Entry) -> Entry? {
        upsert(key: keyValue.key) { _ in keyValue }
    }

    /// Stores `makeEntry(current entry or nil)` under `key` with one search; returns the
    /// replaced entry. The new entry must keep the key.
    @discardableResult
    mutating func upsert(key: [UInt8], _ makeEntry: (Entry?) -> Entry) -> Entry? {
        precondition(!key.isEmpty, "upsert: empty key")
        if chunks.isEmpty {
            let keyValue = makeEntry(nil)
            precondition(keyValue.key == key, "upsert: the entry changed its key")
            chunks = [Chunk([keyValue])]
            lastPrefixes = [KeyPrefix(key)]
            count = 1
            return nil
        }
        var position = lowerBound(key)
        if position == endPosition {
            position = Position(chunk: chunks.count - 1, entry: chunks[chunks.count - 1].count)
        } else if KVBytes.compare(self[position].key, key) == 0 {
            let replaced = self[position]
            let keyValue = makeEntry(replaced)
            precondition(keyValue.key == key, "upsert: the entry changed its key")
            // The same key keeps its prefix.
            chunks[position.chunk].entries[position.entry] = keyValue
            return replaced
        }
        let keyValue = makeEntry(nil)
        precondition(keyValue.key == key, "upsert: the entry changed its key")
        let prefix = KeyPrefix(key)
        chunks[position.chunk].entries.insert(keyValue, at: position.entry)
        chunks[position.chunk].prefixes.insert(prefix, at: position.entry)
        if position.entry == chunks[position.chunk].count - 1 { lastPrefixes[position.chunk] = prefix }
        count += 1
        if chunks[position.chunk].count > KVLimits.keyIndexChunkEntriesMax {
            split(chunk: position.chunk)
        }
        return nil
    }

    private mutating func split(chunk: Int) {
        let half = chunks[chunk].count / 2
        let tail = Chunk(entries: Array(chunks[chunk].entries[half...]), prefixes: Array(chunks[chunk].prefixes[half...]))
        chunks[chunk].entries.removeSubrange(half...)
        chunks[chunk].prefixes.removeSubrange(half...)
        chunks.insert(tail, at: chunk + 1)
        lastPrefixes.insert(tail.prefixes[tail.count - 1], at: chunk + 1)
        lastPrefixes[chunk] = chunks[chunk].prefixes[half - 1]
    }

    /// Removes and returns the entries of `range`, in key order.
    mutating func removeAll(in range: KeyRange) -> [Entry] {
        let (lower, upper) = positions(of: range)
        guard lower != upper else { return [] }
        var removed: [Entry] = []
        removed.reserveCapacity(distance(from: lower, to: upper))
        forEach(from: lower, to: upper) { entry in
            removed.append(entry)
            return true
        }
        if lower.chunk == upper.chunk {
            removeEntries(lower.entry..<upper.entry, ofChunk: lower.chunk)
        } else {
            removeEntries(lower.entry..<chunks[lower.chunk].count, ofChunk: lower.chunk)
            if upper.chunk < chunks.count {
                removeEntries(0..<upper.entry, ofChunk: upper.chunk)
            }
            if upper.chunk > lower.chunk + 1 {
                chunks.removeSubrange((lower.chunk + 1)..<upper.chunk)
                lastPrefixes.removeSubrange((lower.chunk + 1)..<upper.chunk)
            }
            // The old upper chunk now follows the lower one; only these two can be empty.
            if lower.chunk + 1 < chunks.count && chunks[lower.chunk + 1].count == 0 {
                chunks.remove(at: lower.chunk + 1)
                lastPrefixes.remove(at: lower.chunk + 1)
            }
        }
        if chunks[lower.chunk].count == 0 {
            chunks.remove(at: lower.chunk)
            lastPrefixes.remove(at: lower.chunk)
        }
        count -= removed.count
        return removed
    }

    /// Removes `entries` from one chunk and refreshes its last prefix (unless the chunk
    /// emptied: the caller then removes it).
    private mutating func removeEntries(_ entries: Range<Int>, ofChunk chunk: Int) {
        chunks[chunk].entries.removeSubrange(entries)
        chunks[chunk].prefixes.removeSubrange(entries)
        if let last = chunks[chunk].prefixes.last { lastPrefixes[chunk] = last }
    }

    /// All entries in key order.
    var entries: FlattenSequence<LazyMapSequence<[Chunk], [Entry]>> { chunks.lazy.map(\.entries).joined() }

    /// Verifies the structural invariants; for tests and snapshot restore.
    func checkInvariants() -> String? {
        if lastPrefixes.count != chunks.count { return "\(lastPrefixes.count) last prefixes for \(chunks.count) chunks" }
        var total = 0
        var previousKey: [UInt8]?
        for (chunkIndex, chunk) in chunks.enumerated() {
            if chunk.count == 0 { return "chunk \(chunkIndex) is empty" }
            if chunk.count > KVLimits.keyIndexChunkEntriesMax { return "chunk \(chunkIndex) is over the maximum" }
            if chunk.prefixes.count != chunk.count { return "chunk \(chunkIndex) has \(chunk.prefixes.count) prefixes" }
            if lastPrefixes[chunkIndex] != chunk.prefixes[chunk.count - 1] {
                return "chunk \(chunkIndex)'s last prefix is stale"
            }
            for (entry, prefix) in zip(chunk.entries, chunk.prefixes) {
                if let previousKey, KVBytes.compare(previousKey, entry.key) >= 0 {
                    return "keys out of order at \(KVBytes.describe(entry.key))"
                }
                if prefix != KeyPrefix(entry.key) { return "stale prefix at \(KVBytes.describe(entry.key))" }
                previousKey = entry.key
                total += 1
            }
        }
        return total == count ? nil : "count \(count) but \(total) entries"
    }

    static func sameEntries(_ lhs: OrderedIndex, _ rhs: OrderedIndex) -> Bool {
        lhs.count == rhs.count && lhs.entries.elementsEqual(rhs.entries)
    }
}
