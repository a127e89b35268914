import ByteCodec

/// The binary codec of Paxos's values, write-ahead log records and peer envelopes, on the
/// primitives every Synod format shares (`ByteCodec`: little-endian fixed-width integers,
/// shortest-form varints, bounded counts, `DecodeError` with the offset). Every enum case
/// is one tag byte, all tags live in `WireTag`.

/// The bounds a decoder enforces. A sender must respect them too (the encoder asserts).
public enum WireLimits {
    /// The largest client command, in bytes.
    public static let commandBytesMax = 2 * 1024 * 1024
    /// The most commands one value (one slot's batch) may hold.
    public static let commandsPerValueMax = 4096
    /// The most `SlotEntry`s one promise or learn message may carry.
    public static let entriesPerMessageMax = 4096
    /// The most commands one `forward` message may carry.
    public static let commandsPerForwardMax = commandsPerValueMax
}

/// The tag bytes of every enum case the codec writes, in one place. Tags are part of the
/// on-disk and on-wire format: never renumber one, only add.
public enum WireTag {
    // Value
    public static let valueNoop: UInt8 = 0
    public static let valueBatch: UInt8 = 1

    // Record (write-ahead log)
    public static let recordPromised: UInt8 = 1
    public static let recordAccepted: UInt8 = 2
    public static let recordChosenThrough: UInt8 = 3

    // Message (peer protocol)
    public static let messagePrepare: UInt8 = 1
    public static let messagePromise: UInt8 = 2
    public static let messageAccept: UInt8 = 3
    public static let messageAccepted: UInt8 = 4
    public static let messageReject: UInt8 = 5
    public static let messageHeartbeat: UInt8 = 6
    public static let messageHeartbeatAck: UInt8 = 7
    public static let messageLearn: UInt8 = 8
    public static let messageLearnRequest: UInt8 = 9
    public static let messageForward: UInt8 = 10
    public static let messageReadIndexRequest: UInt8 = 11
    public static let messageReadIndexResponse: UInt8 = 12
    public static let messageTransferLeadership: UInt8 = 13
    public static let messageLeaseKeepAlive: UInt8 = 14
    public static let messageLeaseKeepAliveResponse: UInt8 = 15

    /// The version byte that opens every encoded `Envelope`; a peer speaking another
    /// version is refused with a `DecodeError` instead of being misread.
    public static let envelopeVersion: UInt8 = 1
}

// MARK: - Paxos types

extension Ballot {
    public func encode(into writer: inout ByteWriter) {
        writer.writeVarint(round)
        writer.writeVarint(replica)
    }

    public static func decode(from reader: inout ByteReader) throws -> Ballot {
        let round = try reader.readVarint()
        let replica = try reader.readVarintUInt32()
        return Ballot(round: round, replica: replica)
    }
}

extension Command {
    public func encode(into writer: inout ByteWriter) {
        precondition(bytes.count <= WireLimits.commandBytesMax, "command of \(bytes.count) bytes exceeds commandBytesMax")
        writer.writeLengthPrefixed(bytes)
    }

    public static func decode(from reader: inout ByteReader) throws -> Command {
        Command(try reader.readLengthPrefixed(max: WireLimits.commandBytesMax, "command length"))
    }
}

extension Value {
    public func encode(into writer: inout ByteWriter) {
        switch self {
        case .noop:
            writer.writeUInt8(WireTag.valueNoop)
        case .batch(let commands):
            precondition(commands.count <= WireLimits.commandsPerValueMax, "batch of \(commands.count) commands")
            writer.writeUInt8(WireTag.valueBatch)
            encodeCommands(commands, into: &writer)
        }
    }

    public static func decode(from reader: inout ByteReader) throws -> Value {
        let tagOffset = reader.offset
        let tag = try reader.readUInt8()
        switch tag {
        case WireTag.valueNoop:
            return .noop
        case WireTag.valueBatch:
            return .batch(try decodeCommands(from: &reader, max: WireLimits.commandsPerValueMax))
        default:
            throw DecodeError("unknown Value tag \(tag)", offset: tagOffset)
        }
    }
}

private func encodeCommands(_ commands: [Command], into writer: inout ByteWriter) {
    writer.writeCount(commands.count)
    for command in commands {
        command.encode(into: &writer)
    }
}

private func decodeCommands(from reader: inout ByteReader, max: Int) throws -> [Command] {
    // Every command takes at least its one-byte length.
    let count = try reader.readCount(max: max, minimumElementBytes: 1, "command count")
    var commands: [Command] = []
    commands.reserveCapacity(count)
    for _ in 0..<count {
        commands.append(try Command.decode(from: &reader))
    }
    return commands
}

extension LogEntry {
    public func encode(into writer: inout ByteWriter) {
        ballot.encode(into: &writer)
        value.encode(into: &writer)
    }

    public static func decode(from reader: inout ByteReader) throws -> LogEntry {
        let ballot = try Ballot.decode(from: &reader)
        let value = try Value.decode(from: &reader)
        return LogEntry(ballot: ballot, value: value)
    }
}

extension SlotEntry {
    public func encode(into writer: inout ByteWriter) {
        writer.writeVarint(slot)
        entry.encode(into: &writer)
    }

    public static func decode(from reader: inout ByteReader) throws -> SlotEntry {
        let slot = try reader.readVarint()
        let entry = try LogEntry.decode(from: &reader)
        return SlotEntry(slot: slot, entry: entry)
    }
}

private func encodeEntries(_ entries: [SlotEntry], into writer: inout ByteWriter) {
    precondition(entries.count <= WireLimits.entriesPerMessageMax, "\(entries.count) entries in one message")
    writer.writeCount(entries.count)
    for entry in entries {
        entry.encode(into: &writer)
    }
}

private func decodeEntries(from reader: inout ByteReader) throws -> [SlotEntry] {
    // slot (1) + ballot (2) + value tag (1) at the least.
    let count = try reader.readCount(
        max: WireLimits.entriesPerMessageMax, minimumElementBytes: 4, "entry count")
    var entries: [SlotEntry] = []
    entries.reserveCapacity(count)
    for _ in 0..<count {
        entries.append(try SlotEntry.decode(from: &reader))
    }
    return entries
}

extension Record {
    public func encode(into writer: inout ByteWriter) {
        switch self {
        case .promised(let ballot):
            writer.writeUInt8(WireTag.recordPromised)
            ballot.encode(into: &writer)
        case .accepted(let slot, let entry):
            writer.writeUInt8(WireTag.recordAccepted)
            writer.writeVarint(slot)
            entry.encode(into: &writer)
        case .chosenThrough(let slot):
            writer.writeUInt8(WireTag.recordChosenThrough)
            writer.writeVarint(slot)
        }
    }

    public static func decode(from reader: inout ByteReader) throws -> Record {
        let tagOffset = reader.offset
        let tag = try reader.readUInt8()
        switch tag {
        case WireTag.recordPromised:
            return .promised(try Ballot.decode(from: &reader))
        case WireTag.recordAccepted:
            let slot = try reader.readVarint()
            return .accepted(slot: slot, entry: try LogEntry.decode(from: &reader))
        case WireTag.recordChosenThrough:
            return .chosenThrough(try reader.readVarint())
        default:
            throw DecodeError("unknown Record tag \(tag)", offset: tagOffset)
        }
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// Decodes exactly one record; trailing bytes are an error.
    public init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        self = try Record.decode(from: &reader)
        try reader.expectEnd()
    }
}

extension Message {
    public func encode(into writer: inout ByteWriter) {
        switch self {
        case .prepare(let ballot, let fromSlot):
            writer.writeUInt8(WireTag.messagePrepare)
            ballot.encode(into: &writer)
            writer.writeVarint(fromSlot)
        case .promise(let ballot, let entries, let chosenThrough, let more):
            writer.writeUInt8(WireTag.messagePromise)
            ballot.encode(into: &writer)
            encodeEntries(entries, into: &writer)
            writer.writeVarint(chosenThrough)
            writer.writeUInt8(more ? 1 : 0)
        case .accept(let ballot, let slot, let value, let chosenThrough):
            writer.writeUInt8(WireTag.messageAccept)
            ballot.encode(into: &writer)
            writer.writeVarint(slot)
            value.encode(into: &writer)
            writer.writeVarint(chosenThrough)
        case .accepted(let ballot, let slot):
            writer.writeUInt8(WireTag.messageAccepted)
            ballot.encode(into: &writer)
            writer.writeVarint(slot)
        case .reject(let promised):
            writer.writeUInt8(WireTag.messageReject)
            promised.encode(into: &writer)
        case .heartbeat(let ballot, let chosenThrough, let readRound):
            writer.writeUInt8(WireTag.messageHeartbeat)
            ballot.encode(into: &writer)
            writer.writeVarint(chosenThrough)
            writer.writeVarint(readRound)
        case .heartbeatAck(let ballot, let readRound, let chosenThrough):
            writer.writeUInt8(WireTag.messageHeartbeatAck)
            ballot.encode(into: &writer)
            writer.writeVarint(readRound)
            writer.writeVarint(chosenThrough)
        case .learn(let ballot, let entries, let chosenThrough):
            writer.writeUInt8(WireTag.messageLearn)
            ballot.encode(into: &writer)
            encodeEntries(entries, into: &writer)
            writer.writeVarint(chosenThrough)
        case .learnRequest(let fromSlot):
            writer.writeUInt8(WireTag.messageLearnRequest)
            writer.writeVarint(fromSlot)
        case .forward(let commands):
            precondition(commands.count <= WireLimits.commandsPerForwardMax, "forward of \(commands.count) commands")
            writer.writeUInt8(WireTag.messageForward)
            encodeCommands(commands, into: &writer)
        case .readIndexRequest(let requestID):
            writer.writeUInt8(WireTag.messageReadIndexRequest)
            writer.writeVarint(requestID)
        case .readIndexResponse(let requestID, let ballot, let readIndex):
            writer.writeUInt8(WireTag.messageReadIndexResponse)
            writer.writeVarint(requestID)
            ballot.encode(into: &writer)
            writer.writeVarint(readIndex)
        case .transferLeadership(let ballot, let target):
            writer.writeUInt8(WireTag.messageTransferLeadership)
            ballot.encode(into: &writer)
            writer.writeVarint(UInt64(target))
        case .leaseKeepAlive(let requestID, let lease, let renew):
            writer.writeUInt8(WireTag.messageLeaseKeepAlive)
            writer.writeVarint(requestID)
            writer.writeUInt64(UInt64(bitPattern: lease))
            writer.writeUInt8(renew ? 1 : 0)
        case .leaseKeepAliveResponse(let requestID, let ttlSeconds):
            writer.writeUInt8(WireTag.messageLeaseKeepAliveResponse)
            writer.writeVarint(requestID)
            writer.writeUInt64(UInt64(bitPattern: ttlSeconds))
        }
    }

    public static func decode(from reader: inout ByteReader) throws -> Message {
        let tagOffset = reader.offset
        let tag = try reader.readUInt8()
        switch tag {
        case WireTag.messagePrepare:
            let ballot = try Ballot.decode(from: &reader)
            return .prepare(ballot: ballot, fromSlot: try reader.readVarint())
        case WireTag.messagePromise:
            let ballot = try Ballot.decode(from: &reader)
            let entries = try decodeEntries(from: &reader)
            let chosenThrough = try reader.readVarint()
            let moreOffset = reader.offset
            let more = try reader.readUInt8()
            guard more <= 1 else { throw DecodeError("promise 'more' flag \(more) is neither 0 nor 1", offset: moreOffset) }
            return .promise(ballot: ballot, entries: entries, chosenThrough: chosenThrough, more: more == 1)
        case WireTag.messageAccept:
            let ballot = try Ballot.decode(from: &reader)
            let slot = try reader.readVarint()
            let value = try Value.decode(from: &reader)
            return .accept(ballot: ballot, slot: slot, value: value, chosenThrough: try reader.readVarint())
        case WireTag.messageAccepted:
            let ballot = try Ballot.decode(from: &reader)
            return .accepted(ballot: ballot, slot: try reader.readVarint())
        case WireTag.messageReject:
            return .reject(promised: try Ballot.decode(from: &reader))
        case WireTag.messageHeartbeat:
            let ballot = try Ballot.decode(from: &reader)
            let chosenThrough = try reader.readVarint()
            return .heartbeat(ballot: ballot, chosenThrough: chosenThrough, readRound: try reader.readVarint())
        case WireTag.messageHeartbeatAck:
            let ballot = try Ballot.decode(from: &reader)
            let readRound = try reader.readVarint()
            return .heartbeatAck(ballot: ballot, readRound: readRound, chosenThrough: try reader.readVarint())
        case WireTag.messageLearn:
            let ballot = try Ballot.decode(from: &reader)
            let entries = try decodeEntries(from: &reader)
            return .learn(ballot: ballot, entries: entries, chosenThrough: try reader.readVarint())
        case WireTag.messageLearnRequest:
            return .learnRequest(fromSlot: try reader.readVarint())
        case WireTag.messageForward:
            return .forward(commands: try decodeCommands(from: &reader, max: WireLimits.commandsPerForwardMax))
        case WireTag.messageReadIndexRequest:
            return .readIndexRequest(requestID: try reader.readVarint())
        case WireTag.messageReadIndexResponse:
            let requestID = try reader.readVarint()
            let ballot = try Ballot.decode(from: &reader)
            return .readIndexResponse(requestID: requestID, ballot: ballot, readIndex: try reader.readVarint())
        case WireTag.messageTransferLeadership:
            let ballot = try Ballot.decode(from: &reader)
            let targetOffset = reader.offset
            let target = try reader.readVarint()
            guard target <= UInt64(UInt32.max) else {
                throw DecodeError("transfer target \(target) is not a replica id", offset: targetOffset)
            }
            return .transferLeadership(ballot: ballot, target: ReplicaID(target))
        case WireTag.messageLeaseKeepAlive:
            let requestID = try reader.readVarint()
            let lease = Int64(bitPattern: try reader.readUInt64())
            let renewOffset = reader.offset
            let renew = try reader.readUInt8()
            guard renew <= 1 else { throw DecodeError("keep-alive 'renew' flag \(renew) is neither 0 nor 1", offset: renewOffset) }
            return .leaseKeepAlive(requestID: requestID, lease: lease, renew: renew == 1)
        case WireTag.messageLeaseKeepAliveResponse:
            let requestID = try reader.readVarint()
            return .leaseKeepAliveResponse(requestID: requestID, ttlSeconds: Int64(bitPattern: try reader.readUInt64()))
        default:
            throw DecodeError("unknown Message tag \(tag)", offset: tagOffset)
        }
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// Decodes exactly one message; trailing bytes are an error.
    public init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        self = try Message.decode(from: &reader)
        try reader.expectEnd()
    }
}

extension Envelope {
    /// `[version u8][from varint][to varint][message]`. The transport frames it with a
    /// length prefix of its own.
    public func encode(into writer: inout ByteWriter) {
        Self.encodeHeader(from: from, to: to, into: &writer)
        message.encode(into: &writer)
    }

    /// What precedes the message: an envelope's encoding is this followed by
    /// `message.encode(into:)`, so one message sent to many peers is encoded once.
    public static func encodeHeader(from: ReplicaID, to: ReplicaID, into writer: inout ByteWriter) {
        writer.writeUInt8(WireTag.envelopeVersion)
        writer.writeVarint(from)
        writer.writeVarint(to)
    }

    public static func decode(from reader: inout ByteReader) throws -> Envelope {
        let versionOffset = reader.offset
        let version = try reader.readUInt8()
        guard version == WireTag.envelopeVersion else {
            throw DecodeError(
                "envelope version \(version), this replica speaks \(WireTag.envelopeVersion)", offset: versionOffset)
        }
        let from = try reader.readVarintUInt32()
        let to = try reader.readVarintUInt32()
        let message = try Message.decode(from: &reader)
        return Envelope(from: from, to: to, message: message)
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// Decodes exactly one envelope; trailing bytes are an error.
    public init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        self = try Envelope.decode(from: &reader)
        try reader.expectEnd()
    }
}
