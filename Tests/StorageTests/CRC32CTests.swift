import ByteCodec
import Testing

@testable import Storage

@Suite("CRC32C")
struct CRC32CTests {
    /// RFC 3720 (iSCSI) appendix B.4 and the common check value.
    @Test("RFC 3720 test vectors")
    func vectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum([]) == 0)
    }

    /// The slicing-by-8 code against the bit-at-a-time definition, at every alignment.
    @Test("slicing-by-8 matches the bitwise definition; update chains")
    func matchesNaive() {
        var random = TestRandom(seed: 42)
        for length in 0..<70 {
            let bytes = random.bytes(length)
            #expect(CRC32C.checksum(bytes) == naive(bytes), "length \(length)")
            let split = length / 3
            let chained = CRC32C.update(CRC32C.checksum(bytes[0..<split]), bytes[split...])
            #expect(chained == naive(bytes), "length \(length) split \(split)")
        }
    }

    /// The CPU's instruction (where this machine has it) and the tables give the same
    /// checksums, at every length and alignment, and chain alike.
    @Test("the hardware path matches the tables")
    func hardwareMatchesTables() {
        var random = TestRandom(seed: 7)
        let bytes = random.bytes(4_200)
        for start in 0..<9 {
            for length in [0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1_000, 4_096] where start + length <= bytes.count {
                let slice = bytes[start..<(start + length)]
                let soft = slice.withUnsafeBytes { CRC32C.softwareUpdate(0, $0) }
                #expect(CRC32C.checksum(slice) == soft, "start \(start) length \(length)")
                #expect(soft == naive(Array(slice)), "start \(start) length \(length)")
                let chained = slice.withUnsafeBytes { CRC32C.update(0x1234_5678, $0) }
                let chainedSoft = slice.withUnsafeBytes { CRC32C.softwareUpdate(0x1234_5678, $0) }
                #expect(chained == chainedSoft, "start \(start) length \(length)")
            }
        }
        #if arch(x86_64)
            // Every x86-64 machine Synod runs on has SSE 4.2; without it this test would
            // compare the tables with themselves.
            #expect(CRC32C.hardware)
        #endif
    }

    private func naive(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
}
