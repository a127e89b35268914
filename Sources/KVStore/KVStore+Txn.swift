/// Txn execution, following etcd's `Txn`: (1) evaluate every compare of the txn and its
/// nested txns against the pre-txn state (`compareToPath`); (2) check the ops on the chosen
/// path against that state (`checkRequests`: ignoreValue puts need an existing key, ranges
/// need a readable revision) so that a failing txn changes nothing; (3) run the ops in order,
/// all writes at `beginRevision + 1`, each op seeing the writes before it. A range at an
/// older revision reads the history, which the txn's own writes (all later) do not touch.
extension KVStore {
    /// The outcome of the compares of one txn and, in order, of its nested txns on the
    /// chosen branch.
    struct TxnPlan {
        var succeeded: Bool
        var nested: [TxnPlan]
    }

    /// State of a running txn.
    struct TxnExecution {
        let beginRevision: Int64
        var hasChanges = false
        /// The state before the txn, kept (copy on write) when a range reads at `beginRevision`.
        let preTxnIndex: KeyIndex?

        /// etcd's `storeTxnWrite` revision: the begin revision, plus one once anything changed.
        var currentRevision: Int64 { hasChanges ? beginRevision + 1 : beginRevision }
    }

    mutating func applyTxn(_ txn: TxnRequest) -> WriteResult {
        let plan = Self.plan(txn, in: index)
        let needsPreTxnView: Bool
        do {
            needsPreTxnView = try checkPlannedOps(txn, plan: plan)
        } catch {
            return .failure(error, revision: revision)
        }
        var execution = TxnExecution(beginRevision: revision, preTxnIndex: needsPreTxnView ? index : nil)
        let response = execute(txn, plan: plan, execution: &execution)
        revision = execution.currentRevision
        return .txn(TxnResponse(revision: revision, succeeded: response.succeeded, responses: response.responses))
    }

    static func plan(_ txn: TxnRequest, in index: KeyIndex) -> TxnPlan {
        let succeeded = txn.compare.allSatisfy { evaluate($0, in: index) }
        var nested: [TxnPlan] = []
        for op in succeeded ? txn.success : txn.failure {
            if case .txn(let nestedTxn) = op { nested.append(plan(nestedTxn, in: index)) }
        }
        return TxnPlan(succeeded: succeeded, nested: nested)
    }

    /// etcd's `applyCompare`: holds when it holds for every key in the range; with no key,
    /// version/create/mod/lease compare against 0 and a value compare fails.
    static func evaluate(_ compare: Compare, in index: KeyIndex) -> Bool {
        let (lower, upper) = index.positions(of: KeyRange(key: compare.key, rangeEnd: compare.rangeEnd))
        if lower == upper {
            if case .value = compare.target { return false }
            return holds(compare, for: nil)
        }
        var holdsForAll = true
        index.forEach(from: lower, to: upper) { entry in
            holdsForAll = holds(compare, for: entry)
            return holdsForAll
        }
        return holdsForAll
    }

    /// etcd's `compareKV`; a missing key reads as all zeroes.
    static func holds(_ compare: Compare, for entry: KeyValue?) -> Bool {
        func order(_ lhs: Int64, _ rhs: Int64) -> Int { lhs == rhs ? 0 : (lhs < rhs ? -1 : 1) }
        let ordering: Int
        switch compare.target {
        case .version(let version): ordering = order(entry?.version ?? 0, version)
        case .createRevision(let revision): ordering = order(entry?.createRevision ?? 0, revision)
        case .modRevision(let revision): ordering = order(entry?.modRevision ?? 0, revision)
        case .value(let value): ordering = KVBytes.compare(entry?.value ?? [], value)
        case .lease(let lease): ordering = order(entry?.lease ?? 0, lease)
        }
        switch compare.result {
        case .equal: return ordering == 0
        case .notEqual: return ordering != 0
        case .greater: return ordering > 0
        case .less: return ordering < 0
        }
    }

    /// etcd's `checkRequests` over the chosen path, against the pre-txn state. Returns whether
    /// some range reads at the pre-txn revision (and so needs the pre-txn view kept).
    private func checkPlannedOps(_ txn: TxnRequest, plan: TxnPlan) throws(KVError) -> Bool {
        var needsPreTxnView = false
        var nestedPlans = plan.nested.makeIterator()
        for op in plan.succeeded ? txn.success : txn.failure {
            switch op {
            case .range(let range):
                // etcd's `checkRange`: 0 reads the txn's view, others need a retained revision.
                if range.revision == 0 { continue }
                if range.revision > revision { throw .futureRevision(revision: range.revision) }
                if range.revision < compactedRevision { throw .compacted(revision: compactedRevision) }
                if range.revision == revision { needsPreTxnView = true }
            case .put(let put):
                try checkPutAgainstState(put)
            case .deleteRange:
                continue
            case .txn(let nested):
                guard let nestedPlan = nestedPlans.next() else { preconditionFailure("txn plan lost a nested txn") }
                if try checkPlannedOps(nested, plan: nestedPlan) { needsPreTxnView = true }
            }
        }
        return needsPreTxnView
    }

    private mutating func execute(_ txn: TxnRequest, plan: TxnPlan, execution: inout TxnExecution) -> TxnResponse {
        var responses: [ResponseOp] = []
        var nestedPlans = plan.nested.makeIterator()
        let writeRevision = execution.beginRevision + 1
        for op in plan.succeeded ? txn.success : txn.failure {
            switch op {
            case .range(let range):
                let view: KeyIndex
                if range.revision == 0 {
                    view = index
                } else if range.revision == execution.beginRevision {
                    guard let preTxnIndex = execution.preTxnIndex else { preconditionFailure("pre-txn view not kept") }
                    view = preTxnIndex
                } else {
                    precondition(range.revision < execution.beginRevision, "range revision passed the checks")
                    view = index(at: range.revision, of: KeyRange(key: range.key, rangeEnd: range.rangeEnd))
                }
                let response = Self.executeRange(range, in: view, headerRevision: execution.currentRevision)
                responses.append(.range(response))
            case .put(let put):
                responses.append(.put(writePut(put, revision: writeRevision)))
                execution.hasChanges = true
            case .deleteRange(let delete):
                var response = writeDeleteRange(delete)
                if response.deleted > 0 { execution.hasChanges = true }
                response.revision = execution.currentRevision
                responses.append(.deleteRange(response))
            case .txn(let nested):
                guard let nestedPlan = nestedPlans.next() else { preconditionFailure("txn plan lost a nested txn") }
                responses.append(.txn(execute(nested, plan: nestedPlan, execution: &execution)))
            }
        }
        return TxnResponse(revision: execution.currentRevision, succeeded: plan.succeeded, responses: responses)
    }
}
