/// A gRPC status: the code (0 OK … 16 UNAUTHENTICATED, as in `grpc/status.proto`) and the
/// message carried in the `grpc-status` and `grpc-message` trailers.
public struct GRPCStatus: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String

    public init(code: Int, message: String) {
        precondition((0...16).contains(code), "gRPC status code \(code) out of range")
        self.code = code
        self.message = message
    }

    public static let ok = 0
    public static let cancelled = 1
    public static let unknown = 2
    public static let invalidArgument = 3
    public static let deadlineExceeded = 4
    public static let resourceExhausted = 8
    public static let unimplemented = 12
    public static let internalError = 13
    public static let unavailable = 14

    static let names = [
        "ok", "cancelled", "unknown", "invalidArgument", "deadlineExceeded", "notFound", "alreadyExists",
        "permissionDenied", "resourceExhausted", "failedPrecondition", "aborted", "outOfRange", "unimplemented",
        "internalError", "unavailable", "dataLoss", "unauthenticated",
    ]

    /// The code's name as grpc-swift spells it (`unavailable`), for reports.
    public var codeName: String { Self.names[code] }

    public var description: String { "\(codeName): \(message)" }
}

/// The `grpc-message` encoding (gRPC over HTTP/2, "Responses"): percent-encoding of every
/// byte outside printable ASCII and of `%` itself, over the message's UTF-8.
enum GRPCMessageEncoding {
    static func encode(_ message: String) -> String {
        var out = ""
        out.reserveCapacity(message.utf8.count)
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + hexDigit(byte >> 4) + hexDigit(byte & 0xF)
            }
        }
        return out
    }

    /// Decodes what `encode` produced; a malformed escape is kept as it is (the spec asks
    /// receivers not to fail on it).
    static func decode(_ encoded: String) -> String {
        guard encoded.utf8.contains(UInt8(ascii: "%")) else { return encoded }
        let bytes = Array(encoded.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexDigit(_ value: UInt8) -> String {
        String(UnicodeScalar(value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10))
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
