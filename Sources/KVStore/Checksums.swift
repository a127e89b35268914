/// Deterministic hashes (never Swift's `Hasher`, which is seeded per process).

/// CRC-32C (Castagnoli), the checksum of snapshots, as in the WAL.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var crc = UInt32(index)
        for _ in 0..<8 {
            crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        return crc
    }

    static func checksum(_ bytes: [UInt8], count: Int? = nil) -> UInt32 {
        finish(update(start, bytes, count: count))
    }

    /// Incremental use: `finish(update(update(start, a), b)) == checksum(a + b)`.
    static let start: UInt32 = 0xFFFF_FFFF

    static func finish(_ crc: UInt32) -> UInt32 { crc ^ 0xFFFF_FFFF }

    static func update(_ state: UInt32, _ bytes: [UInt8], count: Int? = nil) -> UInt32 {
        let length = count ?? bytes.count
        precondition(length <= bytes.count, "CRC length beyond input")
        var crc = state
        table.withUnsafeBufferPointer { table in
            bytes.withUnsafeBufferPointer { input in
                for index in 0..<length {
                    crc = table[Int((crc ^ UInt32(input[index])) & 0xFF)] ^ (crc >> 8)
                }
            }
        }
        return crc
    }
}

/// FNV-1a, 64 bit, fed with length-delimited fields so distinct field sequences differ.
struct FNV1a {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func combine(byte: UInt8) {
        value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }

    mutating func combine(_ word: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) {
            combine(byte: UInt8(truncatingIfNeeded: word >> UInt64(shift)))
        }
    }

    mutating func combine(_ bytes: [UInt8]) {
        combine(UInt64(bytes.count))
        for byte in bytes { combine(byte: byte) }
    }

    /// The hash with a final avalanche (SplitMix64's finalizer), so that sums of element
    /// hashes do not cancel on structured inputs.
    var finalized: UInt64 { Self.mix(value) }

    static func mix(_ input: UInt64) -> UInt64 {
        var z = input &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
