/* crc32c.c — CRC-32C: a table-driven fallback and the SSE4.2 crc32 instruction, picked at
 * run time. The same polynomial as iSCSI, ext4 and LevelDB, so tools can verify records. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[8][256];
static int hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256
static uint32_t shift_long[4][256], shift_short[4][256];
static void shift_table(uint32_t t[4][256], size_t len);
#endif

static void init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    hw = __builtin_cpu_supports("sse4.2");
    if (hw) {
        shift_table(shift_long, LONG_BLOCK);
        shift_table(shift_short, SHORT_BLOCK);
    }
#endif
}

static uint32_t sw(uint32_t crc, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* little-endian host assumed (x86-64, arm64) */
        v ^= crc;
        crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
              table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
              table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
/* The crc32 instruction takes 3 cycles but a new one can start every cycle: three
 * independent CRCs over three adjacent blocks run at about three times the speed of one,
 * and are joined by shifting a CRC over the length of a block of zeros (shift tables, Mark
 * Adler's method), which is exact because a CRC register is linear in its input. */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* The operator that runs a CRC register over len zero bytes (len a power of two). */
static void zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = 0x82F63B78u; /* one zero bit */
    for (uint32_t n = 1, row = 1; n < 32; n++, row <<= 1)
        odd[n] = row;
    gf2_square(even, odd); /* two zero bits */
    gf2_square(odd, even); /* four */
    for (;;) {             /* one zero byte in even, then two in odd, ... */
        gf2_square(even, odd);
        len >>= 1;
        if (!len)
            return;
        gf2_square(odd, even);
        len >>= 1;
        if (!len)
            break;
    }
    memcpy(even, odd, sizeof odd);
}

static void shift_table(uint32_t t[4][256], size_t len) {
    uint32_t op[32];
    zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++)
            t[k][n] = gf2_times(op, n << (8 * k));
}

static uint32_t shift(uint32_t t[4][256], uint32_t crc) {
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Three CRCs at once over blocks of len bytes while three such blocks remain. */
__attribute__((target("sse4.2"))) static uint64_t hw_three(uint64_t c0, const uint8_t **pp, size_t *np, size_t len,
                                                            uint32_t t[4][256]) {
    const uint8_t *p = *pp;
    while (*np >= 3 * len) {
        uint64_t c1 = 0, c2 = 0;
        for (const uint8_t *end = p + len; p < end; p += 8) {
            c0 = __builtin_ia32_crc32di(c0, load64(p));
            c1 = __builtin_ia32_crc32di(c1, load64(p + len));
            c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * len));
        }
        c0 = shift(t, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(t, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * len;
        *np -= 3 * len;
    }
    *pp = p;
    return c0;
}

__attribute__((target("sse4.2"))) static uint32_t hw_crc(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    c = hw_three(c, &p, &n, LONG_BLOCK, shift_long);
    c = hw_three(c, &p, &n, SHORT_BLOCK, shift_short);
    for (; n >= 8; p += 8, n -= 8)
        c = __builtin_ia32_crc32di(c, load64(p));
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t crc32c_portable(uint32_t crc, const void *p, size_t n) {
    pthread_once(&once, init);
    return ~sw(~crc, p, n);
}

uint32_t crc32c(uint32_t crc, const void *p, size_t n) {
    pthread_once(&once, init);
    crc = ~crc;
#if defined(__x86_64__)
    if (hw)
        return ~hw_crc(crc, p, n);
#endif
    return ~sw(crc, p, n);
}
