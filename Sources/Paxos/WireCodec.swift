/// The binary codec for everything Synod writes to disk (write-ahead log records) or to
/// the network (peer envelopes).
///
/// Format rules, chosen so that one format serves both and decoding untrusted bytes is
/// safe:
/// - fixed-width integers are little-endian; counts, lengths, slots and ballots are
///   unsigned LEB128 varints in their shortest form (a non-minimal or overlong varint is
///   an error, so every value has exactly one encoding);
/// - every enum case is one tag byte, all tags live in `WireTag`;
/// - every length and count is checked against the bytes remaining *and* a named bound
///   (`WireLimits`) before anything is allocated;
/// - decoding never traps: every failure throws `DecodeError` with the byte offset.

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
    /// The longest LEB128 varint of a `UInt64` (7 bits per byte).
    public static let varintBytesMax = 10
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

/// Why a byte sequence could not be decoded, and where.
public struct DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was wrong, e.g. `length 70000 exceeds 65536 remaining bytes`.
    public var reason: String
    /// The offset of the offending field from the start of the reader's range.
    public var offset: Int

    public init(_ reason: String, offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String { "decode error at byte \(offset): \(reason)" }
}

// MARK: - ByteWriter

/// Appends encoded values to a growable byte array.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    public mutating func writeUInt8(_ value: UInt8) {
        bytes.append(value)
    }

    public mutating func writeUInt16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    public mutating func writeUInt32(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    public mutating func writeUInt64(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// Unsigned LEB128, shortest form.
    public mutating func writeVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    public mutating func writeVarint(_ value: UInt32) {
        writeVarint(UInt64(value))
    }

    /// A count or length as a varint.
    public mutating func writeCount(_ count: Int) {
        precondition(count >= 0, "negative count \(count)")
        writeVarint(UInt64(count))
    }

    /// A varint length followed by the bytes.
    public mutating func writeLengthPrefixed(_ value: [UInt8]) {
        writeCount(value.count)
        bytes.append(contentsOf: value)
    }

    /// Raw bytes with no length.
    public mutating func writeBytes(_ value: [UInt8]) {
        bytes.append(contentsOf: value)
    }

    public mutating func writeBytes(_ value: ArraySlice<UInt8>) {
        bytes.append(contentsOf: value)
    }
}

// MARK: - ByteReader

/// Reads encoded values back; every read is bounds-checked and throws `DecodeError`.
public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    private let start: Int
    private let end: Int
    /// The absolute index of the next byte in `bytes`.
    private var position: Int

    public init(_ bytes: [UInt8]) {
        self.init(bytes, range: bytes.startIndex..<bytes.endIndex)
    }

    /// Reads only `range` of `bytes` (no copy); offsets in errors are relative to its start.
    public init(_ bytes: [UInt8], range: Range<Int>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range out of bytes")
        self.bytes = bytes
        self.start = range.lowerBound
        self.end = range.upperBound
        self.position = range.lowerBound
    }

    /// Bytes read so far.
    public var offset: Int { position - start }
    public var remaining: Int { end - position }
    public var isAtEnd: Bool { position == end }

    public func error(_ reason: String) -> DecodeError {
        DecodeError(reason, offset: offset)
    }

    private mutating func need(_ count: Int, _ what: String) throws {
        guard count <= remaining else {
            throw error("\(what) needs \(count) bytes, \(remaining) remain")
        }
    }

    public mutating func readUInt8() throws -> UInt8 {
        try need(1, "UInt8")
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func readUInt16() throws -> UInt16 {
        try need(2, "UInt16")
        defer { position += 2 }
        return UInt16(bytes[position]) | UInt16(bytes[position + 1]) << 8
    }

    public mutating func readUInt32() throws -> UInt32 {
        try need(4, "UInt32")
        var value: UInt32 = 0
        for index in 0..<4 {
            value |= UInt32(bytes[position + index]) << UInt32(8 * index)
        }
        position += 4
        return value
    }

    public mutating func readUInt64() throws -> UInt64 {
        try need(8, "UInt64")
        var value: UInt64 = 0
        for index in 0..<8 {
            value |= UInt64(bytes[position + index]) << UInt64(8 * index)
        }
        position += 8
        return value
    }

    /// Unsigned LEB128; rejects overlong (> 64 bits) and non-minimal encodings.
    public mutating func readVarint() throws -> UInt64 {
        let fieldStart = offset
        var value: UInt64 = 0
        var shift: UInt64 = 0
        for index in 0..<WireLimits.varintBytesMax {
            guard position < end else {
                throw DecodeError("varint truncated after \(index) bytes", offset: fieldStart)
            }
            let byte = bytes[position]
            position += 1
            let payload = UInt64(byte & 0x7F)
            if index == WireLimits.varintBytesMax - 1 && payload > 1 {
                throw DecodeError("varint overflows 64 bits", offset: fieldStart)
            }
            value |= payload << shift
            if byte & 0x80 == 0 {
                if index > 0 && payload == 0 {
                    throw DecodeError("varint not in shortest form", offset: fieldStart)
                }
                return value
            }
            shift += 7
        }
        throw DecodeError("varint longer than \(WireLimits.varintBytesMax) bytes", offset: fieldStart)
    }

    public mutating func readVarintUInt32() throws -> UInt32 {
        let fieldStart = offset
        let value = try readVarint()
        guard let narrow = UInt32(exactly: value) else {
            throw DecodeError("value \(value) exceeds UInt32", offset: fieldStart)
        }
        return narrow
    }

    /// A count or length, checked against `max` (a named bound) and against the bytes
    /// that remain (each counted element takes at least `minimumElementBytes`), so a
    /// hostile prefix can never make the decoder allocate.
    public mutating func readCount(max: Int, minimumElementBytes: Int = 1, _ what: String) throws -> Int {
        let fieldStart = offset
        let value = try readVarint()
        guard value <= UInt64(max) else {
            throw DecodeError("\(what) \(value) exceeds the bound \(max)", offset: fieldStart)
        }
        let count = Int(value)
        guard count.multipliedReportingOverflow(by: minimumElementBytes).partialValue <= remaining else {
            throw DecodeError("\(what) \(count) exceeds the \(remaining) remaining bytes", offset: fieldStart)
        }
        return count
    }

    /// Exactly `count` raw bytes.
    public mutating func readBytes(count: Int) throws -> [UInt8] {
        precondition(count >= 0, "negative count")
        try need(count, "byte string")
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    /// A varint length (at most `max`) followed by that many bytes.
    public mutating func readLengthPrefixed(max: Int, _ what: String) throws -> [UInt8] {
        let count = try readCount(max: max, what)
        return try readBytes(count: count)
    }

    /// Throws unless every byte was consumed.
    public func expectEnd(_ what: String) throws {
        guard isAtEnd else {
            throw error("\(remaining) trailing bytes after \(what)")
        }
    }
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
        try reader.expectEnd("Record")
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
        try reader.expectEnd("Message")
    }
}

extension Envelope {
    /// `[version u8][from varint][to varint][message]`. The transport frames it with a
    /// length prefix of its own.
    public func encode(into writer: inout ByteWriter) {
        writer.writeUInt8(WireTag.envelopeVersion)
        writer.writeVarint(from)
        writer.writeVarint(to)
        message.encode(into: &writer)
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
        try reader.expectEnd("Envelope")
    }
}
