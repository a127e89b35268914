/// One live key with etcd's per-key metadata (`mvccpb.KeyValue`).
///
/// Invariant: `2 <= createRevision <= modRevision <= store revision`, `version >= 1`.
public struct KeyValue: Sendable, Hashable, CustomStringConvertible {
    public var key: [UInt8]
    public var value: [UInt8]
    /// Revision of the put that created this incarnation of the key (a delete ends it).
    public var createRevision: Int64
    /// Revision of the latest put to the key.
    public var modRevision: Int64
    /// 1 on create, +1 per put; a delete resets it (the key disappears).
    public var version: Int64
    /// The lease the key is attached to, 0 for none (etcd's `lease`). Carried by the live keys
    /// only: history versions, change events and remembered session results hold 0 (see
    /// `KVStore+Leases.swift`).
    public var lease: Int64

    public init(
        key: [UInt8], value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    public var description: String {
        "\(KVBytes.describe(key))=\(KVBytes.describe(value)) c=\(createRevision) m=\(modRevision) v=\(version)"
    }
}

/// Identifies one client write for exactly-once application.
///
/// `clientID == 0`, or a client id with its high bit set (`untrackedBit`), means "no
/// session": the command is always applied and nothing is remembered. A server uses the
/// latter to tag writes of clients that send no request id of their own (such as
/// etcdctl), so it can match each applied command to its waiting request.
public struct RequestID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var clientID: UInt64
    public var sequence: UInt64

    /// Marks a client id that has no exactly-once session.
    public static let untrackedBit: UInt64 = 1 << 63

    /// Whether the store remembers this client's last result (exactly-once).
    public var hasSession: Bool { clientID != 0 && clientID & Self.untrackedBit == 0 }

    public init(clientID: UInt64, sequence: UInt64) {
        self.clientID = clientID
        self.sequence = sequence
    }

    /// A request outside any session.
    public static let none = RequestID(clientID: 0, sequence: 0)

    public static func < (lhs: RequestID, rhs: RequestID) -> Bool {
        if lhs.clientID != rhs.clientID { return lhs.clientID < rhs.clientID }
        return lhs.sequence < rhs.sequence
    }

    public var description: String { "\(clientID)#\(sequence)" }
}

/// Byte-string helpers shared by the module.
/// Bytes as a hash-map key, hashed as one run: `[UInt8]`'s own `hash(into:)` feeds the
/// hasher a byte at a time, which showed in a put's profile (the history's chain map).
struct HashedBytes: Hashable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.count)
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (lhs: HashedBytes, rhs: HashedBytes) -> Bool { lhs.bytes == rhs.bytes }
}

public enum KVBytes {
    /// Byte-wise lexicographic order, etcd's `bytes.Compare`: -1, 0 or 1.
    @inlinable
    public static func compare(_ lhs: [UInt8], _ rhs: [UInt8]) -> Int {
        lhs.withUnsafeBufferPointer { left in
            rhs.withUnsafeBufferPointer { right in
                let shared = Swift.min(left.count, right.count)
                var index = 0
                while index < shared {
                    let a = left[index]
                    let b = right[index]
                    if a != b { return a < b ? -1 : 1 }
                    index += 1
                }
                if left.count == right.count { return 0 }
                return left.count < right.count ? -1 : 1
            }
        }
    }

    /// The smallest key strictly greater than every key with this prefix, as etcd's
    /// `clientv3.GetPrefixRangeEnd`: `[0]` (all keys) when no such key exists.
    public static func prefixRangeEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    /// Printable form for traces: UTF-8 text when printable ASCII, otherwise hex.
    public static func describe(_ bytes: [UInt8]) -> String {
        let limit = 32
        let shown = bytes.prefix(limit)
        let suffix = bytes.count > limit ? "…(\(bytes.count) bytes)" : ""
        if shown.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            return String(decoding: shown, as: UTF8.self) + suffix
        }
        let digits: [Character] = Array("0123456789abcdef")
        var text = "0x"
        for byte in shown {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return text + suffix
    }
}
