import EtcdAPI
import EtcdKV
import GRPCCore
import KVStore

extension SynodClient {
    /// Sets `key` to `value` (etcd `KV.Put`), exactly once however often it is retried.
    ///
    /// - Parameter prevKV: Return the pair as it was before, in `response.prevKV`.
    @discardableResult
    public func put(
        key: some SynodBytes,
        value: some SynodBytes,
        prevKV: Bool = false
    ) async throws(SynodClientError) -> SynodResponse<PutResponse> {
        let request = Etcdserverpb_PutRequest(PutRequest(key: key.synodBytes, value: value.synodBytes, prevKV: prevKV))
        return try await performWrite { connection, metadata, callOptions in
            let message = try await connection.kv.put(request, metadata: metadata, options: callOptions)
            return (PutResponse(message), SynodResponseHeader(message.header))
        }
    }

    /// Reads `key`, or the range `[key, rangeEnd)` (etcd `KV.Range`; `rangeEnd == [0]` means every
    /// key `>= key`).
    ///
    /// - Parameters:
    ///   - limit: At most this many keys; 0 for no limit (`response.more` tells if some were cut).
    ///   - serializable: Read locally at the contacted replica; nil uses `options.consistency`.
    public func get(
        key: some SynodBytes,
        rangeEnd: [UInt8] = [],
        limit: Int64 = 0,
        keysOnly: Bool = false,
        countOnly: Bool = false,
        serializable: Bool? = nil
    ) async throws(SynodClientError) -> SynodResponse<RangeResponse> {
        try await range(
            RangeRequest(
                key: key.synodBytes,
                rangeEnd: rangeEnd,
                limit: limit,
                serializable: serializable ?? (options.consistency == .serializable),
                keysOnly: keysOnly,
                countOnly: countOnly
            )
        )
    }

    /// Reads every key starting with `prefix`, in key order.
    public func getPrefix(
        _ prefix: some SynodBytes,
        limit: Int64 = 0,
        keysOnly: Bool = false,
        countOnly: Bool = false,
        serializable: Bool? = nil
    ) async throws(SynodClientError) -> SynodResponse<RangeResponse> {
        let prefixBytes = prefix.synodBytes
        return try await get(
            key: prefixBytes.isEmpty ? [0] : prefixBytes,
            rangeEnd: KVBytes.prefixRangeEnd(prefixBytes),
            limit: limit,
            keysOnly: keysOnly,
            countOnly: countOnly,
            serializable: serializable
        )
    }

    /// etcd `KV.Range` with every field of the request.
    public func range(_ request: RangeRequest) async throws(SynodClientError) -> SynodResponse<RangeResponse> {
        let message = Etcdserverpb_RangeRequest(request)
        return try await perform { connection, metadata, callOptions in
            let response = try await connection.kv.range(message, metadata: metadata, options: callOptions)
            return (RangeResponse(response), SynodResponseHeader(response.header))
        }
    }

    /// Deletes `key`, or the range `[key, rangeEnd)` (etcd `KV.DeleteRange`), exactly once.
    @discardableResult
    public func delete(
        key: some SynodBytes,
        rangeEnd: [UInt8] = [],
        prevKV: Bool = false
    ) async throws(SynodClientError) -> SynodResponse<DeleteRangeResponse> {
        let request = Etcdserverpb_DeleteRangeRequest(
            DeleteRangeRequest(key: key.synodBytes, rangeEnd: rangeEnd, prevKV: prevKV)
        )
        return try await performWrite { connection, metadata, callOptions in
            let message = try await connection.kv.deleteRange(request, metadata: metadata, options: callOptions)
            return (DeleteRangeResponse(message), SynodResponseHeader(message.header))
        }
    }

    /// Deletes every key starting with `prefix`.
    @discardableResult
    public func deletePrefix(
        _ prefix: some SynodBytes,
        prevKV: Bool = false
    ) async throws(SynodClientError) -> SynodResponse<DeleteRangeResponse> {
        let prefixBytes = prefix.synodBytes
        return try await delete(
            key: prefixBytes.isEmpty ? [0] : prefixBytes,
            rangeEnd: KVBytes.prefixRangeEnd(prefixBytes),
            prevKV: prevKV
        )
    }

    /// If every compare holds, runs `success`, otherwise `failure` (etcd `KV.Txn`), atomically and
    /// — when it writes — exactly once. Build the parts with `Compare` / `RequestOp` from KVStore or
    /// the helpers `.value("k", .equal, "v")`, `.put("k", "v")`, …
    public func txn(
        compare: [Compare],
        success: [RequestOp],
        failure: [RequestOp] = []
    ) async throws(SynodClientError) -> SynodResponse<TxnResponse> {
        let txn = TxnRequest(compare: compare, success: success, failure: failure)
        let message = Etcdserverpb_TxnRequest(txn)
        typealias Call = @Sendable (SynodConnection, Metadata, CallOptions) async throws -> (
            TxnResponse, SynodResponseHeader
        )
        let call: Call = { connection, metadata, callOptions in
            let response = try await connection.kv.txn(message, metadata: metadata, options: callOptions)
            do {
                return (try TxnResponse(response), SynodResponseHeader(response.header))
            } catch let error as EtcdConversionError {
                throw SynodClientError.unexpectedResponse(error.message)
            }
        }
        // A txn that cannot write needs no identity, like any read.
        return txn.writes ? try await performWrite(call) : try await perform(call)
    }
}

extension TxnRequest {
    /// Whether some branch may write.
    var writes: Bool {
        (success + failure).contains { operation in
            switch operation {
            case .range: return false
            case .put, .deleteRange: return true
            case .txn(let nested): return nested.writes
            }
        }
    }
}

// MARK: - Txn building helpers

extension Compare {
    /// `value(key) <result> value`.
    public static func value(_ key: some SynodBytes, _ result: CompareResult, _ value: some SynodBytes) -> Compare {
        Compare(key: key.synodBytes, result: result, target: .value(value.synodBytes))
    }

    /// `version(key) <result> version`; version 0 means the key does not exist.
    public static func version(_ key: some SynodBytes, _ result: CompareResult, _ version: Int64) -> Compare {
        Compare(key: key.synodBytes, result: result, target: .version(version))
    }

    /// `create(key) <result> revision`.
    public static func createRevision(_ key: some SynodBytes, _ result: CompareResult, _ revision: Int64) -> Compare {
        Compare(key: key.synodBytes, result: result, target: .createRevision(revision))
    }

    /// `mod(key) <result> revision`.
    public static func modRevision(_ key: some SynodBytes, _ result: CompareResult, _ revision: Int64) -> Compare {
        Compare(key: key.synodBytes, result: result, target: .modRevision(revision))
    }
}

extension RequestOp {
    public static func put(_ key: some SynodBytes, _ value: some SynodBytes, prevKV: Bool = false) -> RequestOp {
        .put(PutRequest(key: key.synodBytes, value: value.synodBytes, prevKV: prevKV))
    }

    public static func get(_ key: some SynodBytes, rangeEnd: [UInt8] = []) -> RequestOp {
        .range(RangeRequest(key: key.synodBytes, rangeEnd: rangeEnd))
    }

    public static func delete(_ key: some SynodBytes, rangeEnd: [UInt8] = [], prevKV: Bool = false) -> RequestOp {
        .deleteRange(DeleteRangeRequest(key: key.synodBytes, rangeEnd: rangeEnd, prevKV: prevKV))
    }
}
