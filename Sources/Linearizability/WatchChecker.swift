/// A checker for etcd watch streams, after etcd's API guarantees for Watch and the checks its
/// robustness tests run on watch responses. Used by the simulator and by the process test
/// with kills.
///
/// One *watcher* is a client's logical watch of a key range from a start revision; it may
/// span several streams (it resumes from its last delivered revision + 1 after its replica
/// dies, on the same or another replica). What it received, in arrival order, is checked
/// against the *reference*: for every revision, the changes it made in the watched range, as
/// established independently of the watch code (by the caller: e.g. from historical reads).
///
/// Checked, per watcher:
/// - ordered and unique: revisions strictly increase across responses (within a response
///   events of one revision may repeat the revision);
/// - atomic: a revision's events arrive in one response (a revision seen again in a later
///   response is reported as split or duplicated);
/// - exact: a revision delivered carries exactly the reference's events of that revision
///   (as a multiset; etcd keeps a txn's order, which the reference does not know);
/// - reliable (no gaps): when revision r is delivered, every earlier reference revision from
///   the start has been delivered;
/// - bookmarkable: a progress notification at revision R arrives only once every reference
///   revision up to R was delivered;
/// - resumable: a resume starts at the last delivered revision + 1;
/// - complete: at the end, every reference revision up to the watcher's final revision was
///   delivered.
/// And for the whole run: every acknowledged write is in the reference at its revision.
public struct WatchChecker: Sendable {
    /// One change as a watcher sees it.
    public struct Event: Hashable, Sendable, Comparable, CustomStringConvertible {
        public var revision: Int64
        public var isDelete: Bool
        public var key: [UInt8]
        /// Empty for a delete.
        public var value: [UInt8]

        public init(revision: Int64, isDelete: Bool, key: [UInt8], value: [UInt8]) {
            self.revision = revision
            self.isDelete = isDelete
            self.key = key
            self.value = isDelete ? [] : value
        }

        public static func < (lhs: Event, rhs: Event) -> Bool {
            if lhs.revision != rhs.revision { return lhs.revision < rhs.revision }
            if lhs.key != rhs.key { return lhs.key.lexicographicallyPrecedes(rhs.key) }
            if lhs.isDelete != rhs.isDelete { return !lhs.isDelete }
            return lhs.value.lexicographicallyPrecedes(rhs.value)
        }

        public var description: String {
            let key = String(decoding: key, as: UTF8.self)
            return isDelete ? "DELETE \(key)@\(revision)" : "PUT \(key)=\(String(decoding: value, as: UTF8.self))@\(revision)"
        }
    }

    /// What a watcher received, in arrival order.
    public enum Item: Sendable, Hashable {
        /// A new stream was opened (or the first one) with this start revision.
        case opened(startRevision: Int64)
        /// One response's events.
        case events([Event])
        /// A progress notification (a response without events) at this header revision.
        case progress(revision: Int64)
    }

    /// The reference: each revision's changes in the watched range (revisions without any
    /// change in the range are absent).
    public let reference: [Int64: [Event]]
    let referenceRevisions: [Int64]

    public init(reference: [Int64: [Event]]) {
        self.reference = reference.mapValues { $0.sorted() }
        referenceRevisions = reference.keys.sorted()
    }

    /// Reference revisions in `lower...upper`.
    func revisions(from lower: Int64, through upper: Int64) -> ArraySlice<Int64> {
        guard lower <= upper else { return [] }
        let start = referenceRevisions.partitioningIndex { $0 >= lower }
        let end = referenceRevisions.partitioningIndex { $0 > upper }
        return referenceRevisions[start..<end]
    }

    /// The violations of one watcher that started at `startRevision` and had to reach
    /// `finalRevision` (nil: no completeness check).
    public func check(watcher name: String, startRevision: Int64, items: [Item], finalRevision: Int64?) -> [String] {
        var violations: [String] = []
        func report(_ text: String) {
            if violations.count < 20 { violations.append("watcher \(name): \(text)") }
        }
        // Every revision below `next` was delivered (or has no change in range).
        var next = startRevision
        var lastDelivered: Int64 = startRevision - 1
        for item in items {
            switch item {
            case .opened(let start):
                if start != lastDelivered + 1 {
                    report("resumed at revision \(start), but the last delivered revision was \(lastDelivered)")
                }
            case .progress(let revision):
                if let missing = revisions(from: next, through: revision).first {
                    report(
                        "progress notification at revision \(revision) before revision \(missing)'s events "
                            + "\(reference[missing] ?? []) were delivered")
                }
            case .events(let events):
                guard !events.isEmpty else {
                    report("an empty event response")
                    continue
                }
                var index = 0
                while index < events.count {
                    let revision = events[index].revision
                    var end = index
                    while end < events.count && events[end].revision == revision { end += 1 }
                    let delivered = Array(events[index..<end]).sorted()
                    index = end
                    if revision <= lastDelivered {
                        report(
                            revision == lastDelivered
                                ? "revision \(revision) split across responses or delivered twice: \(delivered)"
                                : "revision \(revision) delivered after revision \(lastDelivered) (out of order or duplicate)")
                        continue
                    }
                    if let missing = revisions(from: next, through: revision - 1).first {
                        report("gap: revision \(missing)'s events \(reference[missing] ?? []) skipped before revision \(revision)")
                    }
                    let expected = reference[revision] ?? []
                    if delivered != expected {
                        report("revision \(revision) delivered \(delivered), but its changes are \(expected)")
                    }
                    lastDelivered = revision
                    next = revision + 1
                }
            }
        }
        if let finalRevision, let missing = revisions(from: next, through: finalRevision).first {
            report(
                "incomplete: revision \(missing)'s events \(reference[missing] ?? []) never delivered "
                    + "(the watcher had to reach \(finalRevision))")
        }
        return violations
    }

    /// Acknowledged writes (each event at the revision its write answered with) missing from
    /// the reference: the reference itself is wrong, or a write acknowledged was lost.
    public func checkAcknowledged(_ acknowledged: [Event]) -> [String] {
        var violations: [String] = []
        for event in acknowledged where !(reference[event.revision] ?? []).contains(event) {
            if violations.count < 20 {
                violations.append("acknowledged \(event) is not among revision \(event.revision)'s changes \(reference[event.revision] ?? [])")
            }
        }
        return violations
    }

    /// The reference from the watched range's state at consecutive revisions (e.g. historical
    /// reads): `states[r]` maps each live key to its (value, modRevision) at revision r, for
    /// every r in `first - 1 ... last`. A put at r is a key whose modRevision is r; a delete
    /// at r is a key live at r - 1 and gone at r.
    public static func reference(
        fromStates states: [Int64: [[UInt8]: (value: [UInt8], modRevision: Int64)]], first: Int64, last: Int64
    ) -> [Int64: [Event]] {
        var reference: [Int64: [Event]] = [:]
        guard first <= last else { return reference }
        for revision in first...last {
            guard let before = states[revision - 1], let after = states[revision] else { continue }
            var events: [Event] = []
            for (key, entry) in after where entry.modRevision == revision {
                events.append(Event(revision: revision, isDelete: false, key: key, value: entry.value))
            }
            for key in before.keys where after[key] == nil {
                events.append(Event(revision: revision, isDelete: true, key: key, value: []))
            }
            if !events.isEmpty { reference[revision] = events.sorted() }
        }
        return reference
    }
}

extension Array {
    /// The first index whose element satisfies `predicate`, for a predicate false then true
    /// along the array (binary search).
    func partitioningIndex(where predicate: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if predicate(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
