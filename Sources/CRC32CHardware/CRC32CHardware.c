// CRC-32C with the CPU's own instruction, for ByteCodec's CRC32C (the WAL's frames and the
// snapshots are checksummed on every write; the table-driven code took 2–3 % of a replica's
// CPU under load). Swift has no portable way to reach the instruction, hence this file. On
// any other CPU the functions say "not available" and ByteCodec's table code runs.
#include "CRC32CHardware.h"

#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int synod_crc32c_hardware_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2")))
uint32_t synod_crc32c_hardware_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *bytes = data;
    uint64_t wide = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        wide = _mm_crc32_u64(wide, word);
        bytes += 8;
        length -= 8;
    }
    uint32_t narrow = (uint32_t)wide;
    while (length > 0) {
        narrow = _mm_crc32_u8(narrow, *bytes);
        bytes += 1;
        length -= 1;
    }
    return narrow;
}

#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif

int synod_crc32c_hardware_available(void) {
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
}

__attribute__((target("crc")))
uint32_t synod_crc32c_hardware_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *bytes = data;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        crc = __builtin_arm_crc32cd(crc, word);
        bytes += 8;
        length -= 8;
    }
    while (length > 0) {
        crc = __builtin_arm_crc32cb(crc, *bytes);
        bytes += 1;
        length -= 1;
    }
    return crc;
}

#else

int synod_crc32c_hardware_available(void) { return 0; }

uint32_t synod_crc32c_hardware_update(uint32_t crc, const void *data, size_t length) {
    (void)data;
    (void)length;
    return crc;
}

#endif
