/*
 * Purpose: CRC-32C of a byte string, for the envelope file's checksum line.
 * spool/ links only libc and common/, so neither zlib (whose crc32 is the
 * other polynomial anyway) nor OpenSSL is at hand; a CRC rather than a hash
 * like FNV because a CRC is guaranteed to catch every error of up to 32
 * consecutive bits, and envelopes are small (a nibble table is fast enough).
 * Owns: nothing. Invariants: crc32c_update(0, "123456789", 9) == 0xE3069283.
 */
#include "common/crc32c.h"

/* The reflected polynomial 0x82F63B78 applied to each nibble value. */
static const uint32_t nibble[16] = {
    0x00000000, 0x105EC76F, 0x20BD8EDE, 0x30E349B1, 0x417B1DBC, 0x5125DAD3, 0x61C69362, 0x7198540D,
    0x82F63B78, 0x92A8FC17, 0xA24BB5A6, 0xB21572C9, 0xC38D26C4, 0xD3D3E1AB, 0xE330A81A, 0xF36E6F75,
};

uint32_t crc32c_update(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	crc = ~crc;
	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		crc = (crc >> 4) ^ nibble[crc & 15];
		crc = (crc >> 4) ^ nibble[crc & 15];
	}
	return ~crc;
}
