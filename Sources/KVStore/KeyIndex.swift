/// Something stored in an `OrderedIndex` under its key.
protocol IndexEntry: Sendable, Equatable {
    var key: [UInt8] { get }
}

extension KeyValue: IndexEntry {}

/// The live keys in byte order.
typealias KeyIndex = OrderedIndex<KeyValue>

/// An ordered key space: a sorted sequence of entries split into chunks of at most
/// `KVLimits.keyIndexChunkEntriesMax` entries (a two-level B-tree without the height).
///
/// Lookup is a binary search over the chunks' last keys, then inside one chunk: O(log n).
/// An insert shifts at most one chunk (O(chunk)) and splits it when full; a range visits
/// O(log n + k) entries. Copying the index is O(1) (copy on write) and a later mutation
/// copies only the outer array and the touched chunk, which is how a txn keeps its
/// pre-txn view cheaply.
///
/// Invariants (checked by `checkInvariants`): no chunk is empty or over the maximum, keys
/// strictly ascend across the whole sequence, `count` is the number of entries.
struct OrderedIndex<Entry: IndexEntry>: Sendable {
    private(set) var chunks: [[Entry]] = []
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
            chunks.append(Array(sortedEntries[start..<stop]))
            start = stop
        }
        count = sortedEntries.count
    }

    var endPosition: Position { Position(chunk: chunks.count, entry: 0) }

    subscript(position: Position) -> Entry {
        chunks[position.chunk][position.entry]
    }

    /// The first position whose key is `>= key`.
    func lowerBound(_ key: [UInt8]) -> Position {
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            // Chunks are never empty, so `last` exists.
            if KVBytes.compare(chunks[middle][chunks[middle].count - 1].key, key) < 0 {
                low = middle + 1
            } else {
                high = middle
            }
        }
        if low == chunks.count { return endPosition }
        let entries = chunks[low]
        var entryLow = 0
        var entryHigh = entries.count
        while entryLow < entryHigh {
            let middle = (entryLow + entryHigh) / 2
            if KVBytes.compare(entries[middle].key, key) < 0 {
                entryLow = middle + 1
            } else {
                entryHigh = middle
            }
        }
        precondition(entryLow < entries.count, "lowerBound: the chunk's last key is >= the search key")
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
            chunks = [[keyValue]]
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
            chunks[position.chunk][position.entry] = keyValue
            return replaced
        }
        let keyValue = makeEntry(nil)
        precondition(keyValue.key == key, "upsert: the entry changed its key")
        chunks[position.chunk].insert(keyValue, at: position.entry)
        count += 1
        if chunks[position.chunk].count > KVLimits.keyIndexChunkEntriesMax {
            split(chunk: position.chunk)
        }
        return nil
    }

    private mutating func split(chunk: Int) {
        let half = chunks[chunk].count / 2
        let tail = Array(chunks[chunk][half...])
        chunks[chunk].removeSubrange(half...)
        chunks.insert(tail, at: chunk + 1)
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
            chunks[lower.chunk].removeSubrange(lower.entry..<upper.entry)
        } else {
            chunks[lower.chunk].removeSubrange(lower.entry...)
            if upper.chunk < chunks.count {
                chunks[upper.chunk].removeSubrange(0..<upper.entry)
            }
            if upper.chunk > lower.chunk + 1 {
                chunks.removeSubrange((lower.chunk + 1)..<upper.chunk)
            }
            // The old upper chunk now follows the lower one; only these two can be empty.
            if lower.chunk + 1 < chunks.count && chunks[lower.chunk + 1].isEmpty {
                chunks.remove(at: lower.chunk + 1)
            }
        }
        if chunks[lower.chunk].isEmpty {
            chunks.remove(at: lower.chunk)
        }
        count -= removed.count
        return removed
    }

    /// All entries in key order.
    var entries: FlattenSequence<[[Entry]]> { chunks.joined() }

    /// Verifies the structural invariants; for tests and snapshot restore.
    func checkInvariants() -> String? {
        var total = 0
        var previousKey: [UInt8]?
        for (chunkIndex, chunk) in chunks.enumerated() {
            if chunk.isEmpty { return "chunk \(chunkIndex) is empty" }
            if chunk.count > KVLimits.keyIndexChunkEntriesMax { return "chunk \(chunkIndex) is over the maximum" }
            for entry in chunk {
                if let previousKey, KVBytes.compare(previousKey, entry.key) >= 0 {
                    return "keys out of order at \(KVBytes.describe(entry.key))"
                }
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
