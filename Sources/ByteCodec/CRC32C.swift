import CRC32CHardware

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI
/// (RFC 3720), ext4 and most write-ahead logs: Synod's WAL frames, snapshot files, the state
/// machine's snapshot and etcd's HashKV. Computed slicing-by-8: eight 256-entry
/// tables, eight input bytes per step — or, where the CPU has one, with its CRC-32C
/// instruction (`CRC32CHardware`).
public enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78

    /// Eight tables of 256 entries, flat: `table[k * 256 + b]` is the CRC register after
    /// byte `b` followed by `k` zero bytes.
    static let table: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) == 1 ? (crc >> 1) ^ polynomial : crc >> 1
            }
            table[byte] = crc
        }
        for k in 1..<8 {
            for byte in 0..<256 {
                let previous = table[(k - 1) * 256 + byte]
                table[k * 256 + byte] = (previous >> 8) ^ table[Int(previous & 0xFF)]
            }
        }
        return table
    }()

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        update(0, bytes[...])
    }

    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        update(0, bytes)
    }

    /// Continues `crc` (a finished checksum of earlier bytes) over `bytes`, so that
    /// `update(checksum(a), b[...]) == checksum(a + b)`.
    public static func update(_ crc: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { update(crc, $0) }
    }

    public static func update(_ crc: UInt32, _ buffer: UnsafeRawBufferPointer) -> UInt32 {
        guard hardware, let base = buffer.baseAddress else { return softwareUpdate(crc, buffer) }
        return ~synod_crc32c_hardware_update(~crc, base, buffer.count)
    }

    /// Whether the CPU's CRC-32C instruction does the work (SSE 4.2 on x86-64, the CRC32
    /// extension on AArch64); the tables otherwise. Same checksums either way (tested).
    public static let hardware = synod_crc32c_hardware_available() != 0

    /// `update` with the tables, whatever the CPU (the fallback, and the tests' reference).
    public static func softwareUpdate(_ crcIn: UInt32, _ buffer: UnsafeRawBufferPointer) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            var crc = ~crcIn
            var index = 0
            let count = buffer.count
            while count - index >= 8 {
                let low = UInt32(buffer[index]) | UInt32(buffer[index + 1]) << 8
                    | UInt32(buffer[index + 2]) << 16 | UInt32(buffer[index + 3]) << 24
                let high = UInt32(buffer[index + 4]) | UInt32(buffer[index + 5]) << 8
                    | UInt32(buffer[index + 6]) << 16 | UInt32(buffer[index + 7]) << 24
                let mixed = crc ^ low
                crc = t[7 * 256 + Int(mixed & 0xFF)] ^ t[6 * 256 + Int((mixed >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((mixed >> 16) & 0xFF)] ^ t[4 * 256 + Int(mixed >> 24)]
                    ^ t[3 * 256 + Int(high & 0xFF)] ^ t[2 * 256 + Int((high >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((high >> 16) & 0xFF)] ^ t[Int(high >> 24)]
                index += 8
            }
            while index < count {
                crc = (crc >> 8) ^ t[Int((crc ^ UInt32(buffer[index])) & 0xFF)]
                index += 1
            }
            return ~crc
        }
    }
}
