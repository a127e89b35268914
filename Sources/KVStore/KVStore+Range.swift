/// The read path (not through the log) and the range op inside txns, following etcd's
/// `executeRange`: `count` is every key in the range; the min/max revision filters, the sort
/// and the limit apply to the returned pairs only.
extension KVStore {
    /// Reads the store as it was at `request.revision` (`<= 0`: the current state), with etcd's
    /// errors below the compacted revision and above the current one. The header revision is
    /// the current one, as etcd's.
    public func range(_ request: RangeRequest) throws(KVError) -> RangeResponse {
        try Self.validateRange(request)
        try checkReadable(request.revision)
        if request.revision <= 0 || request.revision == revision {
            return Self.executeRange(request, in: index, headerRevision: revision)
        }
        let view = index(at: request.revision, of: KeyRange(key: request.key, rangeEnd: request.rangeEnd))
        return Self.executeRange(request, in: view, headerRevision: revision)
    }

    static func executeRange(_ request: RangeRequest, in index: KeyIndex, headerRevision: Int64) -> RangeResponse {
        let (lower, upper) = index.positions(of: KeyRange(key: request.key, rangeEnd: request.rangeEnd))
        let total = index.distance(from: lower, to: upper)
        if request.countOnly {
            return RangeResponse(revision: headerRevision, kvs: [], more: false, count: Int64(total))
        }
        let limit = request.limit > 0 ? Int(request.limit) : 0
        let filtered =
            request.minModRevision != 0 || request.maxModRevision != 0
            || request.minCreateRevision != 0 || request.maxCreateRevision != 0
        // etcd's defaults: a non-key target sorts ascending; ascending by key is the index order.
        var order = request.sortOrder
        if request.sortTarget != .key && order == .none {
            order = .ascend
        } else if request.sortTarget == .key && order == .ascend {
            order = .none
        }
        let keyOrdered = order == .none || request.sortTarget == .key
        // Without filters, key order needs at most limit + 1 pairs (the extra one sets `more`).
        let fetch = (keyOrdered && !filtered && limit > 0 && limit < total) ? limit + 1 : total
        var kvs: [KeyValue] = []
        kvs.reserveCapacity(fetch)
        let collect: (KeyValue) -> Bool = { entry in
            if filtered && !Self.passesFilters(entry, request) { return true }
            kvs.append(entry)
            return kvs.count < fetch
        }
        if fetch > 0 {
            if order == .descend && request.sortTarget == .key {
                index.forEachReversed(from: lower, to: upper, collect)
            } else {
                index.forEach(from: lower, to: upper, collect)
            }
        }
        if !keyOrdered { sortPairs(&kvs, target: request.sortTarget, order: order) }
        var more = false
        if limit > 0 && kvs.count > limit {
            kvs.removeSubrange(limit...)
            more = true
        }
        if request.keysOnly {
            for position in kvs.indices { kvs[position].value = [] }
        }
        return RangeResponse(revision: headerRevision, kvs: kvs, more: more, count: Int64(total))
    }

    private static func passesFilters(_ entry: KeyValue, _ request: RangeRequest) -> Bool {
        if request.maxModRevision != 0 && entry.modRevision > request.maxModRevision { return false }
        if request.minModRevision != 0 && entry.modRevision < request.minModRevision { return false }
        if request.maxCreateRevision != 0 && entry.createRevision > request.maxCreateRevision { return false }
        if request.minCreateRevision != 0 && entry.createRevision < request.minCreateRevision { return false }
        return true
    }

    /// Sorts by a non-key target. etcd's sort is unstable; Synod breaks ties by key (ascending
    /// for `.ascend`, descending for `.descend`) so every replica answers alike.
    private static func sortPairs(_ kvs: inout [KeyValue], target: SortTarget, order: SortOrder) {
        precondition(target != .key && order != .none, "key order needs no sort")
        let ascending: (KeyValue, KeyValue) -> Bool = { lhs, rhs in
            let ordering: Int
            switch target {
            case .key: ordering = 0
            case .version: ordering = lhs.version == rhs.version ? 0 : (lhs.version < rhs.version ? -1 : 1)
            case .create:
                ordering =
                    lhs.createRevision == rhs.createRevision ? 0 : (lhs.createRevision < rhs.createRevision ? -1 : 1)
            case .mod:
                ordering = lhs.modRevision == rhs.modRevision ? 0 : (lhs.modRevision < rhs.modRevision ? -1 : 1)
            case .value: ordering = KVBytes.compare(lhs.value, rhs.value)
            }
            if ordering != 0 { return ordering < 0 }
            return KVBytes.compare(lhs.key, rhs.key) < 0
        }
        if order == .ascend {
            kvs.sort(by: ascending)
        } else {
            kvs.sort { ascending($1, $0) }
        }
    }
}
