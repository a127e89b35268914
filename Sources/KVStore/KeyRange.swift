/// etcd's `(key, rangeEnd)` pair resolved once: empty `rangeEnd` is the single key `key`,
/// `rangeEnd == [0]` is every key `>= key`, anything else the half-open `[key, rangeEnd)`
/// (empty when `rangeEnd <= key`).
struct KeyRange: Sendable, Hashable {
    enum End: Sendable, Hashable {
        case single
        case unbounded
        case exclusive([UInt8])
    }

    let start: [UInt8]
    let end: End

    init(key: [UInt8], rangeEnd: [UInt8]) {
        start = key
        if rangeEnd.isEmpty {
            end = .single
        } else if rangeEnd == [0] {
            end = .unbounded
        } else {
            end = .exclusive(rangeEnd)
        }
    }

    func contains(_ key: [UInt8]) -> Bool {
        switch end {
        case .single:
            return KVBytes.compare(key, start) == 0
        case .unbounded:
            return KVBytes.compare(key, start) >= 0
        case .exclusive(let limit):
            return KVBytes.compare(key, start) >= 0 && KVBytes.compare(key, limit) < 0
        }
    }
}
