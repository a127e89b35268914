/// A minimal protobuf wire reader and writer, for the etcd messages the generated code in
/// `EtcdAPI` lacks (WatchRequest, WatchResponse, mvccpb.Event, HashKV): `proto/etcd.proto`
/// does not declare them, and regenerating is not this target's business. Field numbers
/// are etcd 3.4's (api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto); messages the
/// generated code has (ResponseHeader, KeyValue) are embedded as their serialized bytes.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 64) {
        bytes.reserveCapacity(capacity)
    }

    mutating func writeVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func writeTag(_ field: Int, wireType: UInt64) {
        writeVarint(UInt64(field) << 3 | wireType)
    }

    /// A varint field, omitted when 0 (proto3's default).
    mutating func writeInt(_ field: Int, _ value: Int64) {
        guard value != 0 else { return }
        writeTag(field, wireType: 0)
        writeVarint(UInt64(bitPattern: value))
    }

    mutating func writeUInt(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        writeTag(field, wireType: 0)
        writeVarint(value)
    }

    mutating func writeBool(_ field: Int, _ value: Bool) {
        guard value else { return }
        writeTag(field, wireType: 0)
        writeVarint(1)
    }

    /// A length-delimited field (bytes, string or embedded message), omitted when empty
    /// unless `always` (an embedded message that is present but empty).
    mutating func writeBytes<Bytes: Collection<UInt8>>(_ field: Int, _ value: Bytes, always: Bool = false) {
        guard always || !value.isEmpty else { return }
        writeTag(field, wireType: 2)
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }
}

/// What `ProtobufReader` rejects: the request is not a message of the expected type.
struct ProtobufWireError: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

struct ProtobufReader {
    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        position = 0
        end = bytes.count
    }

    private init(_ bytes: [UInt8], from start: Int, to end: Int) {
        self.bytes = bytes
        position = start
        self.end = end
    }

    var isAtEnd: Bool { position >= end }

    mutating func readVarint() throws(ProtobufWireError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw ProtobufWireError(reason: "truncated varint") }
            guard shift < 64 else { throw ProtobufWireError(reason: "varint longer than 10 bytes") }
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
    }

    /// The next field's number and wire type.
    mutating func readTag() throws(ProtobufWireError) -> (field: Int, wireType: UInt64) {
        let tag = try readVarint()
        guard tag >> 3 > 0, tag >> 3 <= UInt64(Int32.max) else { throw ProtobufWireError(reason: "bad field number") }
        return (Int(tag >> 3), tag & 7)
    }

    /// A length-delimited field's bytes.
    mutating func readLengthDelimited() throws(ProtobufWireError) -> [UInt8] {
        let range = try lengthDelimitedRange()
        return Array(bytes[range])
    }

    /// A reader over the length-delimited field that follows (an embedded message or a
    /// packed repeated field).
    mutating func readEmbedded() throws(ProtobufWireError) -> ProtobufReader {
        let range = try lengthDelimitedRange()
        return ProtobufReader(bytes, from: range.lowerBound, to: range.upperBound)
    }

    private mutating func lengthDelimitedRange() throws(ProtobufWireError) -> Range<Int> {
        let length = try readVarint()
        guard length <= UInt64(end - position) else { throw ProtobufWireError(reason: "truncated field") }
        let range = position..<(position + Int(length))
        position += Int(length)
        return range
    }

    /// Skips a field this reader does not know (proto3 keeps unknown fields; we drop them).
    mutating func skip(wireType: UInt64) throws(ProtobufWireError) {
        switch wireType {
        case 0: _ = try readVarint()
        case 1: try advance(8)
        case 2: _ = try lengthDelimitedRange()
        case 5: try advance(4)
        default: throw ProtobufWireError(reason: "unsupported wire type \(wireType)")
        }
    }

    private mutating func advance(_ count: Int) throws(ProtobufWireError) {
        guard end - position >= count else { throw ProtobufWireError(reason: "truncated fixed field") }
        position += count
    }
}
