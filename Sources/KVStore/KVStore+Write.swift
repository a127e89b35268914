/// Put and delete-range: the two primitive writes, used at top level and inside txns.
extension KVStore {
    mutating func applyPut(_ put: PutRequest) -> WriteResult {
        do {
            try checkPutAgainstState(put)
        } catch {
            return .failure(error, revision: revision)
        }
        let response = writePut(put, revision: revision + 1)
        revision += 1
        return .put(response)
    }

    mutating func applyDeleteRange(_ delete: DeleteRangeRequest) -> DeleteRangeResponse {
        let response = writeDeleteRange(delete)
        if response.deleted > 0 { revision += 1 }
        return DeleteRangeResponse(revision: revision, deleted: response.deleted, prevKVs: response.prevKVs)
    }

    /// Stores the put at `newRevision` (the caller advances `revision`). The response's
    /// revision is `newRevision`.
    mutating func writePut(_ put: PutRequest, revision newRevision: Int64) -> PutResponse {
        precondition(newRevision == revision + 1, "a put takes the next revision")
        var stored: KeyValue?
        let previous = index.upsert(key: put.key) { previous in
            let value: [UInt8]
            if put.ignoreValue {
                guard let previous else { preconditionFailure("ignoreValue put of a missing key passed the checks") }
                value = previous.value
            } else {
                value = put.value
            }
            let keyValue = KeyValue(
                key: put.key,
                value: value,
                createRevision: previous?.createRevision ?? newRevision,
                modRevision: newRevision,
                version: (previous?.version ?? 0) + 1,
                lease: put.ignoreLease ? previous?.lease ?? 0 : put.lease
            )
            stored = keyValue
            return keyValue
        }
        guard let stored else { preconditionFailure("upsert did not store the entry") }
        if let previous { keysDigest &-= Self.keyDigest(previous) }
        moveLeaseAttachment(key: put.key, from: previous?.lease ?? 0, to: stored.lease)
        let storedDigest = Self.keyDigest(stored)
        keysDigest &+= storedDigest
        recordChange(WatchEvent(type: .put, kv: stored, prevKV: previous), kvDigest: storedDigest)
        return PutResponse(revision: newRevision, prevKV: put.prevKV ? previous : nil)
    }

    /// Removes the keys at `revision + 1` (the caller advances `revision` when any went); the
    /// response's revision is left 0 for the caller to fill.
    mutating func writeDeleteRange(_ delete: DeleteRangeRequest) -> DeleteRangeResponse {
        let removed = index.removeAll(in: KeyRange(key: delete.key, rangeEnd: delete.rangeEnd))
        for keyValue in removed {
            keysDigest &-= Self.keyDigest(keyValue)
            moveLeaseAttachment(key: keyValue.key, from: keyValue.lease, to: 0)
            // etcd's tombstone: the key and the deleting revision, every other field empty.
            let tombstone = KeyValue(
                key: keyValue.key, value: [], createRevision: 0, modRevision: revision + 1, version: 0)
            recordChange(WatchEvent(type: .delete, kv: tombstone, prevKV: keyValue))
        }
        return DeleteRangeResponse(revision: 0, deleted: Int64(removed.count), prevKVs: delete.prevKV ? removed : [])
    }
}
