/// Little primitives of Synod's binary formats: LEB128 varints (zig-zag for signed),
/// length-prefixed byte strings, and a bounds-checked reader that throws `KVCodecError`
/// with the offending offset instead of trapping.

struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 64) {
        bytes.reserveCapacity(capacity)
    }

    mutating func writeByte(_ byte: UInt8) {
        bytes.append(byte)
    }

    mutating func writeRaw(_ raw: [UInt8]) {
        bytes.append(contentsOf: raw)
    }

    mutating func writeVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    /// Zig-zag so small negative numbers stay short.
    mutating func writeSigned(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    mutating func writeBool(_ value: Bool) {
        bytes.append(value ? 1 : 0)
    }

    mutating func writeBytes(_ value: [UInt8]) {
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func writeUInt32LittleEndian(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }
}

struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset: Int
    let end: Int

    init(_ bytes: [UInt8], offset: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.offset = offset
        self.end = end ?? bytes.count
        precondition(offset >= 0 && offset <= self.end && self.end <= bytes.count, "reader bounds")
    }

    var remaining: Int { end - offset }
    var isAtEnd: Bool { offset == end }

    func failure(_ reason: KVCodecError.Reason) -> KVCodecError {
        KVCodecError(reason, offset: offset)
    }

    mutating func readByte() throws(KVCodecError) -> UInt8 {
        guard offset < end else { throw failure(.truncated(needed: 1, available: 0)) }
        let byte = bytes[offset]
        offset += 1
        return byte
    }

    mutating func readVarint() throws(KVCodecError) -> UInt64 {
        let start = offset
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < end else {
                throw KVCodecError(.truncated(needed: 1, available: 0), offset: offset)
            }
            let byte = bytes[offset]
            // The tenth byte may carry only the top bit of a 64-bit value.
            if shift == 63 && byte > 1 { throw KVCodecError(.varintOverflow, offset: start) }
            result |= UInt64(byte & 0x7F) << shift
            offset += 1
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw KVCodecError(.varintOverflow, offset: start) }
        }
    }

    mutating func readSigned() throws(KVCodecError) -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    mutating func readBool(field: String) throws(KVCodecError) -> Bool {
        let byte = try readByte()
        switch byte {
        case 0: return false
        case 1: return true
        default:
            offset -= 1
            throw failure(.unknownTag(field: field, tag: byte))
        }
    }

    /// A varint length or count that must not exceed `limit` nor what is left of the input
    /// divided by `minimumElementBytes`, so a corrupt length never triggers a huge allocation.
    mutating func readCount(field: String, limit: Int, minimumElementBytes: Int = 1) throws(KVCodecError) -> Int {
        let start = offset
        let raw = try readVarint()
        let affordable = minimumElementBytes == 0 ? Int.max : remaining / minimumElementBytes
        let bound = Swift.min(limit, affordable)
        guard raw <= UInt64(bound) else {
            throw KVCodecError(.lengthTooLarge(field: field, length: raw, limit: bound), offset: start)
        }
        return Int(raw)
    }

    mutating func readBytes(field: String, limit: Int) throws(KVCodecError) -> [UInt8] {
        let count = try readCount(field: field, limit: limit)
        let value = Array(bytes[offset..<(offset + count)])
        offset += count
        return value
    }

    mutating func readRaw(count: Int) throws(KVCodecError) -> [UInt8] {
        guard count <= remaining else { throw failure(.truncated(needed: count, available: remaining)) }
        let value = Array(bytes[offset..<(offset + count)])
        offset += count
        return value
    }

    mutating func readUInt32LittleEndian() throws(KVCodecError) -> UInt32 {
        let raw = try readRaw(count: 4)
        var value: UInt32 = 0
        for index in 0..<4 { value |= UInt32(raw[index]) << UInt32(8 * index) }
        return value
    }

    func expectEnd() throws(KVCodecError) {
        guard isAtEnd else { throw failure(.trailingBytes(count: remaining)) }
    }
}
