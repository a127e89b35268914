/// The byte-level primitives of every binary format Synod writes — write-ahead log records,
/// peer envelopes, snapshot headers, state-machine commands, results and snapshots — so
/// there is one encoder and one bounds-checked decoder for all of them.
///
/// Format rules, chosen so that one format serves disk and network and decoding untrusted
/// bytes is safe:
/// - fixed-width integers are little-endian; counts, lengths and most integers are unsigned
///   LEB128 varints in their shortest form (a non-minimal or overlong varint is an error, so
///   every value has exactly one encoding); signed integers are zig-zag varints;
/// - every length and count is checked against the bytes remaining *and* a named bound
///   before anything is allocated;
/// - decoding never traps: every failure throws `DecodeError` with the byte offset.

/// The longest LEB128 varint of a `UInt64` (7 bits per byte).
public let varintBytesMax = 10

/// Why a byte sequence could not be decoded, and where.
public struct DecodeError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        /// The input ends before a field of `needed` bytes (only `available` remain).
        case truncated(needed: Int, available: Int)
        /// The leading format byte is not one this build reads.
        case unknownFormat(UInt8)
        /// An enum tag (or a flag byte that must be 0 or 1) outside its range.
        case unknownTag(field: String, tag: UInt8)
        /// A varint longer than 10 bytes or above 64 bits.
        case varintOverflow
        /// A varint not in its shortest form (every value has exactly one encoding).
        case varintNotMinimal
        /// A value too large for its field, e.g. above `UInt32.max`.
        case valueTooLarge(field: String, value: UInt64, limit: UInt64)
        /// A length or count larger than its bound or than what may follow.
        case lengthTooLarge(field: String, length: UInt64, limit: Int)
        /// Flag bits this format does not define.
        case unknownFlags(field: String, flags: UInt8)
        /// Txns nested deeper than the store's bound.
        case nestingTooDeep
        /// Bytes left over after a complete value.
        case trailingBytes(count: Int)
        /// The whole input is over its bound.
        case inputTooLarge(sizeBytes: Int)
        /// Anything else a format checks, in words (e.g. `transfer target 0 is not a replica id`).
        case invalid(String)

        public var description: String {
            switch self {
            case .truncated(let needed, let available): return "needs \(needed) bytes, \(available) remain"
            case .unknownFormat(let format): return "unknown format \(format)"
            case .unknownTag(let field, let tag): return "unknown \(field) tag \(tag)"
            case .varintOverflow: return "varint overflows 64 bits"
            case .varintNotMinimal: return "varint not in shortest form"
            case .valueTooLarge(let field, let value, let limit): return "\(field) \(value) exceeds \(limit)"
            case .lengthTooLarge(let field, let length, let limit):
                return "\(field) \(length) exceeds the bound \(limit) (or the bytes remaining)"
            case .unknownFlags(let field, let flags): return "unknown \(field) flags \(flags)"
            case .nestingTooDeep: return "txns nested too deeply"
            case .trailingBytes(let count): return "\(count) trailing bytes"
            case .inputTooLarge(let size): return "input of \(size) bytes is over the bound"
            case .invalid(let text): return text
            }
        }
    }

    public var reason: Reason
    /// The offset of the offending field from the start of the reader's range.
    public var offset: Int

    public init(_ reason: Reason, offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    /// A failure described in words.
    public init(_ text: String, offset: Int) {
        self.init(.invalid(text), offset: offset)
    }

    public var description: String { "decode error at byte \(offset): \(reason)" }
}

// MARK: - ByteWriter

/// Appends encoded values to a growable byte array.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    /// Empties the writer and keeps its storage, for a writer reused across encodings.
    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
    }

    public mutating func writeUInt8(_ value: UInt8) {
        bytes.append(value)
    }

    public mutating func writeUInt16(_ value: UInt16) { writeLittleEndian(value) }
    public mutating func writeUInt32(_ value: UInt32) { writeLittleEndian(value) }
    public mutating func writeUInt64(_ value: UInt64) { writeLittleEndian(value) }

    private mutating func writeLittleEndian<Value: FixedWidthInteger>(_ value: Value) {
        for shift in stride(from: 0, to: Value.bitWidth, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> shift))
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

    /// Disfavoured, so an integer literal means the `UInt64` form.
    @_disfavoredOverload
    public mutating func writeVarint(_ value: UInt32) {
        writeVarint(UInt64(value))
    }

    /// Zig-zag, so small negative numbers stay short.
    public mutating func writeSigned(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeBool(_ value: Bool) {
        bytes.append(value ? 1 : 0)
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

    /// Replaces the four bytes at `offset` (written before, e.g. as a placeholder) with
    /// `value`, little-endian: a length or checksum known only after what follows it.
    public mutating func overwriteUInt32(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= bytes.count, "overwrite at \(offset) of \(bytes.count) bytes")
        for index in 0..<4 {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
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

    /// A failure at the current offset.
    public func error(_ reason: DecodeError.Reason) -> DecodeError {
        DecodeError(reason, offset: offset)
    }

    /// A failure at the current offset, in words.
    public func error(_ text: String) -> DecodeError {
        DecodeError(.invalid(text), offset: offset)
    }

    private func need(_ count: Int) throws(DecodeError) {
        guard count <= remaining else { throw error(.truncated(needed: count, available: remaining)) }
    }

    public mutating func readUInt8() throws(DecodeError) -> UInt8 {
        try need(1)
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func readUInt16() throws(DecodeError) -> UInt16 { try readLittleEndian() }
    public mutating func readUInt32() throws(DecodeError) -> UInt32 { try readLittleEndian() }
    public mutating func readUInt64() throws(DecodeError) -> UInt64 { try readLittleEndian() }

    private mutating func readLittleEndian<Value: FixedWidthInteger & UnsignedInteger>() throws(DecodeError) -> Value {
        let size = Value.bitWidth / 8
        try need(size)
        var value: Value = 0
        for index in 0..<size {
            value |= Value(bytes[position + index]) << (8 * index)
        }
        position += size
        return value
    }

    /// Unsigned LEB128; rejects overlong (> 64 bits) and non-minimal encodings.
    public mutating func readVarint() throws(DecodeError) -> UInt64 {
        let fieldStart = offset
        var value: UInt64 = 0
        var shift: UInt64 = 0
        for index in 0..<varintBytesMax {
            guard position < end else {
                throw DecodeError(.truncated(needed: 1, available: 0), offset: offset)
            }
            let byte = bytes[position]
            position += 1
            let payload = UInt64(byte & 0x7F)
            // The tenth byte may carry only the top bit of a 64-bit value.
            if index == varintBytesMax - 1 && payload > 1 {
                throw DecodeError(.varintOverflow, offset: fieldStart)
            }
            value |= payload << shift
            if byte & 0x80 == 0 {
                if index > 0 && payload == 0 {
                    throw DecodeError(.varintNotMinimal, offset: fieldStart)
                }
                return value
            }
            shift += 7
        }
        throw DecodeError(.varintOverflow, offset: fieldStart)
    }

    public mutating func readVarintUInt32(_ field: String = "value") throws(DecodeError) -> UInt32 {
        let fieldStart = offset
        let value = try readVarint()
        guard let narrow = UInt32(exactly: value) else {
            throw DecodeError(.valueTooLarge(field: field, value: value, limit: UInt64(UInt32.max)), offset: fieldStart)
        }
        return narrow
    }

    /// A zig-zag varint.
    public mutating func readSigned() throws(DecodeError) -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    /// One byte that must be 0 or 1.
    public mutating func readBool(_ field: String) throws(DecodeError) -> Bool {
        let fieldStart = offset
        let byte = try readUInt8()
        switch byte {
        case 0: return false
        case 1: return true
        default: throw DecodeError(.unknownTag(field: field, tag: byte), offset: fieldStart)
        }
    }

    /// A count or length, checked against `max` (a named bound) and against the bytes
    /// that remain (each counted element takes at least `minimumElementBytes`), so a
    /// hostile prefix can never make the decoder allocate.
    public mutating func readCount(max: Int, minimumElementBytes: Int = 1, _ field: String) throws(DecodeError) -> Int {
        let fieldStart = offset
        let value = try readVarint()
        let affordable = minimumElementBytes == 0 ? Int.max : remaining / minimumElementBytes
        let bound = Swift.min(max, affordable)
        guard value <= UInt64(bound) else {
            throw DecodeError(.lengthTooLarge(field: field, length: value, limit: bound), offset: fieldStart)
        }
        return Int(value)
    }

    /// Exactly `count` raw bytes.
    public mutating func readBytes(count: Int) throws(DecodeError) -> [UInt8] {
        precondition(count >= 0, "negative count")
        try need(count)
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    /// A varint length (at most `max`) followed by that many bytes.
    public mutating func readLengthPrefixed(max: Int, _ field: String) throws(DecodeError) -> [UInt8] {
        let count = try readCount(max: max, field)
        return try readBytes(count: count)
    }

    /// Throws unless every byte was consumed.
    public func expectEnd() throws(DecodeError) {
        guard isAtEnd else { throw error(.trailingBytes(count: remaining)) }
    }
}
