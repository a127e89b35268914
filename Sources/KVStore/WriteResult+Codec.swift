import ByteCodec

/// The binary form of a `WriteResult`, used only inside snapshots (the session table keeps
/// each client's last result) and for the session part of the state digest.
///
/// ```
/// result   := tag(1 put | 2 deleteRange | 3 txn | 4 failure | 5 compact | 6 auth | 7 alarm
///             | 8 lease) body
/// response := tag(0 range | 1 put | 2 deleteRange | 3 txn) body
/// keyValue := key value createRevision modRevision version
/// ```

private enum ResultTag {
    static let put: UInt8 = 1
    static let deleteRange: UInt8 = 2
    static let txn: UInt8 = 3
    static let failure: UInt8 = 4
    static let compact: UInt8 = 5
    /// Body in `Leases+Codec.swift`.
    static let lease: UInt8 = 8
}

private enum ErrorTag: UInt8 {
    case emptyKey = 0
    case keyTooLarge = 1
    case requestTooLarge = 2
    case tooManyOperations = 3
    case duplicateKey = 4
    case valueProvided = 5
    case keyNotFound = 6
    case compacted = 7
    case futureRevision = 8
    case txnNestingTooDeep = 9
    case txnTooManyOperationsTotal = 10
    case staleRequest = 11
    case noSpace = 13  // 12 is AuthError.errorTag (Auth+Codec.swift)
    /// Body in `Leases+Codec.swift`.
    case lease = 40
}

/// Smallest encoded `KeyValue` (five one-byte fields) and response op.
private let keyValueBytesMin = 5
private let responseOpBytesMin = 3

extension ByteWriter {
    mutating func writeKeyValue(_ kv: KeyValue) {
        writeLengthPrefixed(kv.key)
        writeLengthPrefixed(kv.value)
        writeSigned(kv.createRevision)
        writeSigned(kv.modRevision)
        writeSigned(kv.version)
    }

    mutating func writeResult(_ result: WriteResult) {
        switch result {
        case .put(let response):
            writeUInt8(ResultTag.put)
            writePutResponse(response)
        case .deleteRange(let response):
            writeUInt8(ResultTag.deleteRange)
            writeDeleteRangeResponse(response)
        case .txn(let response):
            writeUInt8(ResultTag.txn)
            writeTxnResponse(response)
        case .failure(let error, let revision):
            writeUInt8(ResultTag.failure)
            writeSigned(revision)
            writeError(error)
        case .compact(let response):
            writeUInt8(ResultTag.compact)
            writeSigned(response.revision)
        case .auth(let response):
            writeAuthResponse(response)
        case .alarm(let response):
            writeUInt8(AlarmCodec.resultTag)
            writeAlarmResponse(response)
        case .lease(let response):
            writeUInt8(ResultTag.lease)
            writeLeaseResponse(response)
        }
    }

    mutating func writeResponseOp(_ op: ResponseOp) {
        switch op {
        case .range(let response):
            writeUInt8(OperationTag.range.rawValue)
            writeSigned(response.revision)
            writeVarint(UInt64(response.kvs.count))
            for kv in response.kvs { writeKeyValue(kv) }
            writeBool(response.more)
            writeSigned(response.count)
        case .put(let response):
            writeUInt8(OperationTag.put.rawValue)
            writePutResponse(response)
        case .deleteRange(let response):
            writeUInt8(OperationTag.deleteRange.rawValue)
            writeDeleteRangeResponse(response)
        case .txn(let response):
            writeUInt8(OperationTag.txn.rawValue)
            writeTxnResponse(response)
        }
    }

    mutating func writePutResponse(_ response: PutResponse) {
        writeSigned(response.revision)
        if let prevKV = response.prevKV {
            writeBool(true)
            writeKeyValue(prevKV)
        } else {
            writeBool(false)
        }
    }

    mutating func writeDeleteRangeResponse(_ response: DeleteRangeResponse) {
        writeSigned(response.revision)
        writeSigned(response.deleted)
        writeVarint(UInt64(response.prevKVs.count))
        for kv in response.prevKVs { writeKeyValue(kv) }
    }

    mutating func writeTxnResponse(_ response: TxnResponse) {
        writeSigned(response.revision)
        writeBool(response.succeeded)
        writeVarint(UInt64(response.responses.count))
        for op in response.responses { writeResponseOp(op) }
    }

    mutating func writeError(_ error: KVError) {
        switch error {
        case .emptyKey: writeUInt8(ErrorTag.emptyKey.rawValue)
        case .keyTooLarge(let size):
            writeUInt8(ErrorTag.keyTooLarge.rawValue)
            writeSigned(Int64(size))
        case .requestTooLarge(let size):
            writeUInt8(ErrorTag.requestTooLarge.rawValue)
            writeSigned(Int64(size))
        case .tooManyOperations: writeUInt8(ErrorTag.tooManyOperations.rawValue)
        case .duplicateKey: writeUInt8(ErrorTag.duplicateKey.rawValue)
        case .valueProvided: writeUInt8(ErrorTag.valueProvided.rawValue)
        case .keyNotFound: writeUInt8(ErrorTag.keyNotFound.rawValue)
        case .noSpace: writeUInt8(ErrorTag.noSpace.rawValue)
        case .compacted(let revision):
            writeUInt8(ErrorTag.compacted.rawValue)
            writeSigned(revision)
        case .futureRevision(let revision):
            writeUInt8(ErrorTag.futureRevision.rawValue)
            writeSigned(revision)
        case .txnNestingTooDeep(let depth):
            writeUInt8(ErrorTag.txnNestingTooDeep.rawValue)
            writeSigned(Int64(depth))
        case .txnTooManyOperationsTotal(let count):
            writeUInt8(ErrorTag.txnTooManyOperationsTotal.rawValue)
            writeSigned(Int64(count))
        case .staleRequest(let id, let lastSequence):
            writeUInt8(ErrorTag.staleRequest.rawValue)
            writeVarint(id.clientID)
            writeVarint(id.sequence)
            writeVarint(lastSequence)
        case .malformedCommand:
            // Invariant: a command that did not decode has no request id, so its result never
            // reaches the session table, the only place results are encoded.
            preconditionFailure("malformedCommand results are never stored in the session table")
        case .auth(let error):
            writeAuthError(error)
        case .lease(let error):
            writeUInt8(ErrorTag.lease.rawValue)
            writeLeaseError(error)
        }
    }
}

extension ByteReader {
    mutating func readKeyValue() throws(KVCodecError) -> KeyValue {
        let key = try readLengthPrefixed(max: Int.max, "keyValue.key")
        let value = try readLengthPrefixed(max: Int.max, "keyValue.value")
        let createRevision = try readSigned()
        let modRevision = try readSigned()
        let version = try readSigned()
        return KeyValue(
            key: key,
            value: value,
            createRevision: createRevision,
            modRevision: modRevision,
            version: version
        )
    }

    private mutating func readKeyValues(field: String) throws(KVCodecError) -> [KeyValue] {
        let count = try readCount(max: Int.max, minimumElementBytes: keyValueBytesMin, field)
        var kvs: [KeyValue] = []
        kvs.reserveCapacity(count)
        for _ in 0..<count { kvs.append(try readKeyValue()) }
        return kvs
    }

    mutating func readResult() throws(KVCodecError) -> WriteResult {
        let tagOffset = offset
        let tag = try readUInt8()
        switch tag {
        case ResultTag.put: return .put(try readPutResponse())
        case ResultTag.deleteRange: return .deleteRange(try readDeleteRangeResponse())
        case ResultTag.txn: return .txn(try readTxnResponse(depth: 1))
        case ResultTag.failure:
            let revision = try readSigned()
            return .failure(try readError(), revision: revision)
        case ResultTag.compact: return .compact(CompactionResponse(revision: try readSigned()))
        case AuthResponse.resultTag: return .auth(try readAuthResponse())
        case AlarmCodec.resultTag: return .alarm(try readAlarmResponse())
        case ResultTag.lease: return .lease(try readLeaseResponse())
        default: throw KVCodecError(.unknownTag(field: "result", tag: tag), offset: tagOffset)
        }
    }

    mutating func readResponseOp(depth: Int) throws(KVCodecError) -> ResponseOp {
        let tagOffset = offset
        let tag = try readUInt8()
        switch OperationTag(rawValue: tag) {
        case .range:
            let revision = try readSigned()
            let kvs = try readKeyValues(field: "range.kvs")
            let more = try readBool("range.more")
            let count = try readSigned()
            return .range(RangeResponse(revision: revision, kvs: kvs, more: more, count: count))
        case .put: return .put(try readPutResponse())
        case .deleteRange: return .deleteRange(try readDeleteRangeResponse())
        case .txn: return .txn(try readTxnResponse(depth: depth + 1))
        case .compact, .leaseGrant, .leaseRevoke, .leaseExpire, .leaseEpoch, .leaseExpireInEpoch, nil:
            throw KVCodecError(.unknownTag(field: "responseOp", tag: tag), offset: tagOffset)
        }
    }

    mutating func readPutResponse() throws(KVCodecError) -> PutResponse {
        let revision = try readSigned()
        let hasPrevious = try readBool("put.hasPrevKV")
        return PutResponse(revision: revision, prevKV: hasPrevious ? try readKeyValue() : nil)
    }

    mutating func readDeleteRangeResponse() throws(KVCodecError) -> DeleteRangeResponse {
        let revision = try readSigned()
        let deleted = try readSigned()
        let prevKVs = try readKeyValues(field: "deleteRange.prevKVs")
        return DeleteRangeResponse(revision: revision, deleted: deleted, prevKVs: prevKVs)
    }

    mutating func readTxnResponse(depth: Int) throws(KVCodecError) -> TxnResponse {
        guard depth <= KVLimits.txnNestingDepthMax else { throw error(.nestingTooDeep) }
        let revision = try readSigned()
        let succeeded = try readBool("txn.succeeded")
        let count = try readCount(max: Int.max, minimumElementBytes: responseOpBytesMin, "txn.responses")
        var responses: [ResponseOp] = []
        responses.reserveCapacity(count)
        for _ in 0..<count { responses.append(try readResponseOp(depth: depth)) }
        return TxnResponse(revision: revision, succeeded: succeeded, responses: responses)
    }

    mutating func readError() throws(KVCodecError) -> KVError {
        let tagOffset = offset
        let tag = try readUInt8()
        if tag == AuthError.errorTag { return .auth(try readAuthError()) }
        guard let errorTag = ErrorTag(rawValue: tag) else {
            throw KVCodecError(.unknownTag(field: "error", tag: tag), offset: tagOffset)
        }
        switch errorTag {
        case .emptyKey: return .emptyKey
        case .keyTooLarge: return .keyTooLarge(sizeBytes: Int(truncatingIfNeeded: try readSigned()))
        case .requestTooLarge: return .requestTooLarge(sizeBytes: Int(truncatingIfNeeded: try readSigned()))
        case .tooManyOperations: return .tooManyOperations
        case .duplicateKey: return .duplicateKey
        case .valueProvided: return .valueProvided
        case .keyNotFound: return .keyNotFound
        case .noSpace: return .noSpace
        case .compacted: return .compacted(revision: try readSigned())
        case .futureRevision: return .futureRevision(revision: try readSigned())
        case .txnNestingTooDeep: return .txnNestingTooDeep(depth: Int(truncatingIfNeeded: try readSigned()))
        case .txnTooManyOperationsTotal:
            return .txnTooManyOperationsTotal(count: Int(truncatingIfNeeded: try readSigned()))
        case .staleRequest:
            let clientID = try readVarint()
            let sequence = try readVarint()
            let lastSequence = try readVarint()
            return .staleRequest(RequestID(clientID: clientID, sequence: sequence), lastSequence: lastSequence)
        case .lease: return .lease(try readLeaseError())
        }
    }
}
