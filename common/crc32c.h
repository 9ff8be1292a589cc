/*
 * crc32c: CRC-32C (Castagnoli, the polynomial of iSCSI, ext4 and btrfs
 * metadata), for checksums of small files the spool writes. Pure, no state.
 */
#ifndef PICKUPD_CRC32C_H
#define PICKUPD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC over len more bytes; start with crc = 0. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);

#endif
