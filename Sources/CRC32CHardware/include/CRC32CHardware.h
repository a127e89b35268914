#ifndef SYNOD_CRC32C_HARDWARE_H
#define SYNOD_CRC32C_HARDWARE_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU computes CRC-32C in hardware (x86-64: SSE 4.2's crc32 instruction;
/// AArch64: the CRC32 extension). Checked at run time, once, by the caller.
int synod_crc32c_hardware_available(void);

/// Continues the CRC-32C register `crc` over `length` bytes at `data` with the CPU's
/// instruction: the raw register in and out, without the initial and final inversion.
/// Call only when `synod_crc32c_hardware_available()` said yes.
uint32_t synod_crc32c_hardware_update(uint32_t crc, const void *data, size_t length);

#endif
