/* crc32c.h — CRC-32C (Castagnoli), the checksum of every store record. */
#ifndef FERRY_CRC32C_H
#define FERRY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes. Uses the SSE4.2 instruction when the CPU has it. */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);
/* The same without the instruction (table-driven): what tests check crc32c against. */
uint32_t crc32c_portable(uint32_t crc, const void *p, size_t n);

#endif
