import ByteCodec

/// The binary form of lease commands and results (tags in `WriteCommand+Codec.swift` and
/// `WriteResult+Codec.swift`):
/// ```
/// leaseGrant  := tag 5  id ttlSeconds        (signed varints)
/// leaseRevoke := tag 6  id
/// leaseExpire := tag 7  id                   (written by builds before lease epochs)
/// leaseEpoch  := tag 8  round leader         (unsigned varints)
/// leaseExpireInEpoch := tag 10  id round leader
/// leaseResult := revision id ttlSeconds keysDeleted
/// leaseError  := tag(0 notFound | 1 alreadyExists | 2 ttlTooLarge | 3 leaseProvided | 4 tooManyLeases)
/// ```
private enum LeaseErrorTag: UInt8 {
    case notFound = 0
    case alreadyExists = 1
    case ttlTooLarge = 2
    case leaseProvided = 3
    case tooManyLeases = 4
}

extension ByteWriter {
    mutating func writeLeaseOperation(_ operation: LeaseOperation) {
        switch operation {
        case .grant(let id, let ttlSeconds):
            writeUInt8(OperationTag.leaseGrant.rawValue)
            writeSigned(id)
            writeSigned(ttlSeconds)
        case .revoke(let id):
            writeUInt8(OperationTag.leaseRevoke.rawValue)
            writeSigned(id)
        case .expire(let id, nil):
            writeUInt8(OperationTag.leaseExpire.rawValue)
            writeSigned(id)
        case .expire(let id, let epoch?):
            writeUInt8(OperationTag.leaseExpireInEpoch.rawValue)
            writeSigned(id)
            writeLeaseEpoch(epoch)
        case .epoch(let epoch):
            writeUInt8(OperationTag.leaseEpoch.rawValue)
            writeLeaseEpoch(epoch)
        }
    }

    mutating func writeLeaseEpoch(_ epoch: LeaseEpoch) {
        writeVarint(epoch.round)
        writeVarint(epoch.leader)
    }

    mutating func writeLeaseResponse(_ response: LeaseResponse) {
        writeSigned(response.revision)
        writeSigned(response.id)
        writeSigned(response.ttlSeconds)
        writeSigned(response.keysDeleted)
    }

    mutating func writeLeaseError(_ error: LeaseError) {
        switch error {
        case .notFound: writeUInt8(LeaseErrorTag.notFound.rawValue)
        case .alreadyExists: writeUInt8(LeaseErrorTag.alreadyExists.rawValue)
        case .ttlTooLarge: writeUInt8(LeaseErrorTag.ttlTooLarge.rawValue)
        case .leaseProvided: writeUInt8(LeaseErrorTag.leaseProvided.rawValue)
        case .tooManyLeases: writeUInt8(LeaseErrorTag.tooManyLeases.rawValue)
        }
    }
}

extension ByteReader {
    /// The body of a lease operation whose tag (5, 6, 7, 8 or 10) was just read.
    mutating func readLeaseOperation(tag: UInt8) throws(KVCodecError) -> LeaseOperation {
        switch OperationTag(rawValue: tag) {
        case .leaseGrant:
            let id = try readSigned()
            return .grant(id: id, ttlSeconds: try readSigned())
        case .leaseRevoke: return .revoke(id: try readSigned())
        case .leaseExpire: return .expire(id: try readSigned(), epoch: nil)
        case .leaseExpireInEpoch:
            let id = try readSigned()
            return .expire(id: id, epoch: try readLeaseEpoch())
        case .leaseEpoch: return .epoch(try readLeaseEpoch())
        default: preconditionFailure("tag \(tag) is not a lease operation")
        }
    }

    mutating func readLeaseEpoch() throws(KVCodecError) -> LeaseEpoch {
        let round = try readVarint()
        return LeaseEpoch(round: round, leader: try readVarint())
    }

    mutating func readLeaseResponse() throws(KVCodecError) -> LeaseResponse {
        let revision = try readSigned()
        let id = try readSigned()
        let ttlSeconds = try readSigned()
        return LeaseResponse(revision: revision, id: id, ttlSeconds: ttlSeconds, keysDeleted: try readSigned())
    }

    mutating func readLeaseError() throws(KVCodecError) -> LeaseError {
        let tagOffset = offset
        let tag = try readUInt8()
        switch LeaseErrorTag(rawValue: tag) {
        case .notFound: return .notFound
        case .alreadyExists: return .alreadyExists
        case .ttlTooLarge: return .ttlTooLarge
        case .leaseProvided: return .leaseProvided
        case .tooManyLeases: return .tooManyLeases
        case nil: throw KVCodecError(.unknownTag(field: "leaseError", tag: tag), offset: tagOffset)
        }
    }
}
