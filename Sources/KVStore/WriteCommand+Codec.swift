import ByteCodec

/// The binary form of a `WriteCommand`, the bytes that travel through the Paxos log.
///
/// Formats 1 and 2 (all integers LEB128 varints; signed ones zig-zag; byte strings
/// length-prefixed); format 2 only adds the proposal time:
/// ```
/// command   := format=0x01  clientID  sequence  operation
///            | format=0x02  clientID  sequence  proposedAtMilliseconds  operation
/// operation := tag(1 put | 2 deleteRange | 3 txn | 4 compact | 5 leaseGrant | 6 leaseRevoke
///                | 7 leaseExpire | 8 leaseEpoch | 9 alarm | 10 leaseExpireInEpoch | 16–31 auth) body
///                -- lease bodies: Leases+Codec.swift; alarm: Alarms+Codec.swift; auth: Auth+Codec.swift
/// requestOp := tag(0 range | 1 put | 2 deleteRange | 3 txn) body
/// put       := key value flags(bit0 prevKV, bit1 ignoreValue, bit2 ignoreLease, bit3 hasLease)
///              [lease, when hasLease]
/// delete    := key rangeEnd flags(bit0 prevKV)
/// compact   := revision flags(bit0 physical)
/// range     := key rangeEnd limit revision sortOrder sortTarget
///              flags(bit0 serializable, bit1 keysOnly, bit2 countOnly)
///              minMod maxMod minCreate maxCreate
/// txn       := count compare*  count requestOp*  count requestOp*
/// compare   := key rangeEnd result targetTag(0 version | 1 create | 2 mod | 3 value | 4 lease) operand
/// ```
/// A command without a proposal time (0) encodes as format 1, byte for byte as before the
/// time existed, so logs written by older builds and by newer ones read alike. The compact
/// tag is new in both formats (a build without it refuses such a command as an unknown tag).
///
/// The decoder checks every length against what is left of the input (no allocation from a
/// corrupt length), bounds nesting by `KVLimits.txnNestingDepthMax`, refuses undefined tags and
/// flag bits and trailing bytes, and throws `KVCodecError` — it never traps. Semantic limits
/// (key sizes, op counts) are the store's validation, so a decodable command that breaks them
/// is applied as a deterministic error.
extension WriteCommand {
    /// The leading byte of format 1 (no proposal time).
    public static let formatVersion: UInt8 = 1
    /// The leading byte of format 2 (with a proposal time).
    public static let formatVersionWithTime: UInt8 = 2

    public func encode() -> [UInt8] {
        var writer = ByteWriter()
        if proposedAtMilliseconds == 0 {
            writer.writeUInt8(Self.formatVersion)
            writer.writeVarint(requestID.clientID)
            writer.writeVarint(requestID.sequence)
        } else {
            writer.writeUInt8(Self.formatVersionWithTime)
            writer.writeVarint(requestID.clientID)
            writer.writeVarint(requestID.sequence)
            writer.writeSigned(proposedAtMilliseconds)
        }
        writer.writeOperation(operation)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(KVCodecError) -> WriteCommand {
        guard bytes.count <= KVLimits.commandBytesMax else {
            throw KVCodecError(.inputTooLarge(sizeBytes: bytes.count), offset: 0)
        }
        var reader = ByteReader(bytes)
        let format = try reader.readUInt8()
        guard format == formatVersion || format == formatVersionWithTime else {
            throw KVCodecError(.unknownFormat(format), offset: 0)
        }
        let clientID = try reader.readVarint()
        let sequence = try reader.readVarint()
        let proposedAtMilliseconds = format == formatVersionWithTime ? try reader.readSigned() : 0
        let operation = try reader.readOperation()
        try reader.expectEnd()
        return WriteCommand(
            requestID: RequestID(clientID: clientID, sequence: sequence),
            operation: operation,
            proposedAtMilliseconds: proposedAtMilliseconds
        )
    }
}

enum OperationTag: UInt8 {
    case range = 0
    case put = 1
    case deleteRange = 2
    case txn = 3
    /// Top-level operations only: a txn cannot compact (etcd's `RequestOp` has no compaction).
    case compact = 4
    /// Top-level lease operations (`Leases+Codec.swift`).
    case leaseGrant = 5
    case leaseRevoke = 6
    case leaseExpire = 7
    case leaseEpoch = 8
    case leaseExpireInEpoch = 10
}

private enum FlagBit {
    static let putPrevKV: UInt8 = 1 << 0
    static let putIgnoreValue: UInt8 = 1 << 1
    /// A put without a lease leaves bits 2 and 3 clear: it encodes as before leases existed.
    static let putIgnoreLease: UInt8 = 1 << 2
    static let putHasLease: UInt8 = 1 << 3
    static let putAll: UInt8 = putPrevKV | putIgnoreValue | putIgnoreLease | putHasLease
    static let deletePrevKV: UInt8 = 1 << 0
    static let deleteAll: UInt8 = deletePrevKV
    static let rangeSerializable: UInt8 = 1 << 0
    static let rangeKeysOnly: UInt8 = 1 << 1
    static let rangeCountOnly: UInt8 = 1 << 2
    static let rangeAll: UInt8 = rangeSerializable | rangeKeysOnly | rangeCountOnly
    static let compactPhysical: UInt8 = 1 << 0
    static let compactAll: UInt8 = compactPhysical
}

/// Smallest encodings, used to bound counts by the input left.
private enum MinimumBytes {
    static let compare = 5
    static let requestOp = 4
}

// MARK: - Encoding

extension ByteWriter {
    mutating func writeOperation(_ operation: WriteOperation) {
        switch operation {
        case .put(let put):
            writeUInt8(OperationTag.put.rawValue)
            writePut(put)
        case .deleteRange(let delete):
            writeUInt8(OperationTag.deleteRange.rawValue)
            writeDeleteRange(delete)
        case .txn(let txn):
            writeUInt8(OperationTag.txn.rawValue)
            writeTxn(txn)
        case .compact(let compact):
            writeUInt8(OperationTag.compact.rawValue)
            writeSigned(compact.revision)
            writeUInt8(compact.physical ? FlagBit.compactPhysical : 0)
        case .auth(let change):
            writeAuthOperation(change)
        case .alarm(let alarm):
            writeUInt8(AlarmCodec.operationTag)
            writeAlarmRequest(alarm)
        case .lease(let lease):
            writeLeaseOperation(lease)
        }
    }

    mutating func writeRequestOp(_ op: RequestOp) {
        switch op {
        case .range(let range):
            writeUInt8(OperationTag.range.rawValue)
            writeRange(range)
        case .put(let put):
            writeUInt8(OperationTag.put.rawValue)
            writePut(put)
        case .deleteRange(let delete):
            writeUInt8(OperationTag.deleteRange.rawValue)
            writeDeleteRange(delete)
        case .txn(let txn):
            writeUInt8(OperationTag.txn.rawValue)
            writeTxn(txn)
        }
    }

    mutating func writePut(_ put: PutRequest) {
        writeLengthPrefixed(put.key)
        writeLengthPrefixed(put.value)
        var flags: UInt8 = 0
        if put.prevKV { flags |= FlagBit.putPrevKV }
        if put.ignoreValue { flags |= FlagBit.putIgnoreValue }
        if put.ignoreLease { flags |= FlagBit.putIgnoreLease }
        if put.lease != 0 { flags |= FlagBit.putHasLease }
        writeUInt8(flags)
        if put.lease != 0 { writeSigned(put.lease) }
    }

    mutating func writeDeleteRange(_ delete: DeleteRangeRequest) {
        writeLengthPrefixed(delete.key)
        writeLengthPrefixed(delete.rangeEnd)
        writeUInt8(delete.prevKV ? FlagBit.deletePrevKV : 0)
    }

    mutating func writeRange(_ range: RangeRequest) {
        writeLengthPrefixed(range.key)
        writeLengthPrefixed(range.rangeEnd)
        writeSigned(range.limit)
        writeSigned(range.revision)
        writeUInt8(range.sortOrder.rawValue)
        writeUInt8(range.sortTarget.rawValue)
        var flags: UInt8 = 0
        if range.serializable { flags |= FlagBit.rangeSerializable }
        if range.keysOnly { flags |= FlagBit.rangeKeysOnly }
        if range.countOnly { flags |= FlagBit.rangeCountOnly }
        writeUInt8(flags)
        writeSigned(range.minModRevision)
        writeSigned(range.maxModRevision)
        writeSigned(range.minCreateRevision)
        writeSigned(range.maxCreateRevision)
    }

    mutating func writeTxn(_ txn: TxnRequest) {
        writeVarint(UInt64(txn.compare.count))
        for compare in txn.compare { writeCompare(compare) }
        writeVarint(UInt64(txn.success.count))
        for op in txn.success { writeRequestOp(op) }
        writeVarint(UInt64(txn.failure.count))
        for op in txn.failure { writeRequestOp(op) }
    }

    mutating func writeCompare(_ compare: Compare) {
        writeLengthPrefixed(compare.key)
        writeLengthPrefixed(compare.rangeEnd)
        writeUInt8(compare.result.rawValue)
        switch compare.target {
        case .version(let version):
            writeUInt8(0)
            writeSigned(version)
        case .createRevision(let revision):
            writeUInt8(1)
            writeSigned(revision)
        case .modRevision(let revision):
            writeUInt8(2)
            writeSigned(revision)
        case .value(let value):
            writeUInt8(3)
            writeLengthPrefixed(value)
        case .lease(let lease):
            writeUInt8(4)
            writeSigned(lease)
        }
    }
}

// MARK: - Decoding

extension ByteReader {
    private var byteStringLimit: Int { KVLimits.commandBytesMax }

    mutating func readOperation() throws(KVCodecError) -> WriteOperation {
        let tagOffset = offset
        let tag = try readUInt8()
        switch OperationTag(rawValue: tag) {
        case .put: return .put(try readPut())
        case .deleteRange: return .deleteRange(try readDeleteRange())
        case .txn: return .txn(try readTxn(depth: 1))
        case .compact:
            let revision = try readSigned()
            let flags = try readFlags(field: "compact.flags", allowed: FlagBit.compactAll)
            return .compact(CompactionRequest(revision: revision, physical: flags & FlagBit.compactPhysical != 0))
        case nil where AuthOperationTag.reserved.contains(tag):
            return .auth(try readAuthOperation(tag: tag, tagOffset: tagOffset))
        case nil where tag == AlarmCodec.operationTag: return .alarm(try readAlarmRequest())
        case .leaseGrant, .leaseRevoke, .leaseExpire, .leaseEpoch, .leaseExpireInEpoch:
            return .lease(try readLeaseOperation(tag: tag))
        case .range, nil:
            throw KVCodecError(.unknownTag(field: "operation", tag: tag), offset: tagOffset)
        }
    }

    mutating func readRequestOp(depth: Int) throws(KVCodecError) -> RequestOp {
        let tagOffset = offset
        let tag = try readUInt8()
        switch OperationTag(rawValue: tag) {
        case .range: return .range(try readRange())
        case .put: return .put(try readPut())
        case .deleteRange: return .deleteRange(try readDeleteRange())
        case .txn: return .txn(try readTxn(depth: depth + 1))
        case .compact, .leaseGrant, .leaseRevoke, .leaseExpire, .leaseEpoch, .leaseExpireInEpoch, nil:
            throw KVCodecError(.unknownTag(field: "requestOp", tag: tag), offset: tagOffset)
        }
    }

    mutating func readFlags(field: String, allowed: UInt8) throws(KVCodecError) -> UInt8 {
        let flagsOffset = offset
        let flags = try readUInt8()
        guard flags & ~allowed == 0 else {
            throw KVCodecError(.unknownFlags(field: field, flags: flags), offset: flagsOffset)
        }
        return flags
    }

    mutating func readPut() throws(KVCodecError) -> PutRequest {
        let key = try readLengthPrefixed(max: byteStringLimit, "put.key")
        let value = try readLengthPrefixed(max: byteStringLimit, "put.value")
        let flags = try readFlags(field: "put.flags", allowed: FlagBit.putAll)
        let lease = flags & FlagBit.putHasLease != 0 ? try readSigned() : 0
        return PutRequest(
            key: key,
            value: value,
            prevKV: flags & FlagBit.putPrevKV != 0,
            ignoreValue: flags & FlagBit.putIgnoreValue != 0,
            lease: lease,
            ignoreLease: flags & FlagBit.putIgnoreLease != 0
        )
    }

    mutating func readDeleteRange() throws(KVCodecError) -> DeleteRangeRequest {
        let key = try readLengthPrefixed(max: byteStringLimit, "deleteRange.key")
        let rangeEnd = try readLengthPrefixed(max: byteStringLimit, "deleteRange.rangeEnd")
        let flags = try readFlags(field: "deleteRange.flags", allowed: FlagBit.deleteAll)
        return DeleteRangeRequest(key: key, rangeEnd: rangeEnd, prevKV: flags & FlagBit.deletePrevKV != 0)
    }

    mutating func readRange() throws(KVCodecError) -> RangeRequest {
        let key = try readLengthPrefixed(max: byteStringLimit, "range.key")
        let rangeEnd = try readLengthPrefixed(max: byteStringLimit, "range.rangeEnd")
        let limit = try readSigned()
        let revision = try readSigned()
        let orderOffset = offset
        let orderTag = try readUInt8()
        guard let sortOrder = SortOrder(rawValue: orderTag) else {
            throw KVCodecError(.unknownTag(field: "range.sortOrder", tag: orderTag), offset: orderOffset)
        }
        let targetOffset = offset
        let targetTag = try readUInt8()
        guard let sortTarget = SortTarget(rawValue: targetTag) else {
            throw KVCodecError(.unknownTag(field: "range.sortTarget", tag: targetTag), offset: targetOffset)
        }
        let flags = try readFlags(field: "range.flags", allowed: FlagBit.rangeAll)
        let minMod = try readSigned()
        let maxMod = try readSigned()
        let minCreate = try readSigned()
        let maxCreate = try readSigned()
        return RangeRequest(
            key: key,
            rangeEnd: rangeEnd,
            limit: limit,
            revision: revision,
            sortOrder: sortOrder,
            sortTarget: sortTarget,
            serializable: flags & FlagBit.rangeSerializable != 0,
            keysOnly: flags & FlagBit.rangeKeysOnly != 0,
            countOnly: flags & FlagBit.rangeCountOnly != 0,
            minModRevision: minMod,
            maxModRevision: maxMod,
            minCreateRevision: minCreate,
            maxCreateRevision: maxCreate
        )
    }

    mutating func readTxn(depth: Int) throws(KVCodecError) -> TxnRequest {
        guard depth <= KVLimits.txnNestingDepthMax else { throw error(.nestingTooDeep) }
        let compareCount = try readCount(max: Int.max, minimumElementBytes: MinimumBytes.compare, "txn.compare")
        var compares: [Compare] = []
        compares.reserveCapacity(compareCount)
        for _ in 0..<compareCount { compares.append(try readCompare()) }
        let success = try readRequestOps(field: "txn.success", depth: depth)
        let failure = try readRequestOps(field: "txn.failure", depth: depth)
        return TxnRequest(compare: compares, success: success, failure: failure)
    }

    private mutating func readRequestOps(field: String, depth: Int) throws(KVCodecError) -> [RequestOp] {
        let count = try readCount(max: Int.max, minimumElementBytes: MinimumBytes.requestOp, field)
        var ops: [RequestOp] = []
        ops.reserveCapacity(count)
        for _ in 0..<count { ops.append(try readRequestOp(depth: depth)) }
        return ops
    }

    mutating func readCompare() throws(KVCodecError) -> Compare {
        let key = try readLengthPrefixed(max: byteStringLimit, "compare.key")
        let rangeEnd = try readLengthPrefixed(max: byteStringLimit, "compare.rangeEnd")
        let resultOffset = offset
        let resultTag = try readUInt8()
        guard let result = CompareResult(rawValue: resultTag) else {
            throw KVCodecError(.unknownTag(field: "compare.result", tag: resultTag), offset: resultOffset)
        }
        let targetOffset = offset
        let targetTag = try readUInt8()
        let target: CompareTarget
        switch targetTag {
        case 0: target = .version(try readSigned())
        case 1: target = .createRevision(try readSigned())
        case 2: target = .modRevision(try readSigned())
        case 3: target = .value(try readLengthPrefixed(max: byteStringLimit, "compare.value"))
        case 4: target = .lease(try readSigned())
        default: throw KVCodecError(.unknownTag(field: "compare.target", tag: targetTag), offset: targetOffset)
        }
        return Compare(key: key, rangeEnd: rangeEnd, result: result, target: target)
    }
}
