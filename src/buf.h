/* buf.h — growable byte buffers and bounds-checked readers.
 *
 * Every byte that enters or leaves ferryd passes through one of these: a connection's input
 * and output, a frame being encoded. A `buf` owns its memory; a `rd` is a read cursor over
 * bytes someone else owns, which never reads past its end (a short read sets `err` and
 * returns zeros, so decoders check once at the end instead of after every field). */
#ifndef FERRY_BUF_H
#define FERRY_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct buf {
    uint8_t *data;
    size_t len; /* bytes in use, from data[off] */
    size_t off; /* bytes already consumed at the front (output buffers drain from here) */
    size_t cap;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);
/* Makes room for n more bytes after the used ones; returns a pointer to that room. */
uint8_t *buf_grow(buf *b, size_t n);
static inline uint8_t *buf_reserve(buf *b, size_t n) {
    if (b->off + b->len + n <= b->cap) /* the common case, inlined: every encoded field */
        return b->data + b->off + b->len;
    return buf_grow(b, n);
}
extern uint8_t buf_empty[1]; /* what an unallocated buffer points at (NULL + 0 is undefined) */
static inline uint8_t *buf_head(const buf *b) { return b->data ? b->data + b->off : buf_empty; }
static inline uint8_t *buf_tail(const buf *b) { return b->data ? b->data + b->off + b->len : buf_empty; }
static inline void buf_commit(buf *b, size_t n) { b->len += n; }
void buf_consume(buf *b, size_t n);
void buf_compact(buf *b);
/* Drops the storage of an empty buffer that grew large, so idle connections stay small. */
void buf_shrink_if_idle(buf *b, size_t keep);

static inline void buf_put(buf *b, const void *p, size_t n) {
    if (n == 0)
        return;
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}
static inline void buf_u8(buf *b, uint8_t v) { *buf_reserve(b, 1) = v, b->len++; }
static inline void buf_u16(buf *b, uint16_t v) {
    uint8_t *p = buf_reserve(b, 2);
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
    b->len += 2;
}
static inline void buf_u32(buf *b, uint32_t v) {
    uint8_t *p = buf_reserve(b, 4);
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
    b->len += 4;
}
static inline void buf_u64(buf *b, uint64_t v) {
    buf_u32(b, (uint32_t)(v >> 32));
    buf_u32(b, (uint32_t)v);
}
/* AMQP short string: one length octet, at most 255 bytes (longer input is truncated). */
void buf_shortstr(buf *b, const char *s, size_t n);
/* AMQP long string: four length octets. */
void buf_longstr(buf *b, const void *s, size_t n);
/* Writes v big-endian at an earlier position (for back-patching lengths). */
void buf_patch_u32(buf *b, size_t pos, uint32_t v);

/* A read cursor. */
typedef struct rd {
    const uint8_t *p;
    const uint8_t *end;
    int err; /* set once any read ran past the end or a value was malformed */
} rd;

/* A borrowed slice of bytes. */
typedef struct slice {
    const uint8_t *p;
    size_t n;
} slice;

static inline rd rd_make(const void *p, size_t n) {
    static const uint8_t empty[1];
    const uint8_t *b = p ? (const uint8_t *)p : empty; /* NULL + 0 is undefined in C */
    rd r = {b, b + n, 0};
    return r;
}
static inline size_t rd_left(const rd *r) { return (size_t)(r->end - r->p); }
static inline int rd_need(rd *r, size_t n) {
    if (r->err || rd_left(r) < n) {
        r->err = 1;
        return 0;
    }
    return 1;
}
static inline uint8_t rd_u8(rd *r) { return rd_need(r, 1) ? *r->p++ : 0; }
static inline uint16_t rd_u16(rd *r) {
    if (!rd_need(r, 2))
        return 0;
    uint16_t v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    return v;
}
static inline uint32_t rd_u32(rd *r) {
    if (!rd_need(r, 4))
        return 0;
    uint32_t v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) | ((uint32_t)r->p[2] << 8) | r->p[3];
    r->p += 4;
    return v;
}
static inline uint64_t rd_u64(rd *r) {
    uint64_t hi = rd_u32(r);
    return (hi << 32) | rd_u32(r);
}
static inline slice rd_bytes(rd *r, size_t n) {
    slice s = {NULL, 0};
    if (rd_need(r, n)) {
        s.p = r->p, s.n = n;
        r->p += n;
    }
    return s;
}
static inline slice rd_shortstr(rd *r) { return rd_bytes(r, rd_u8(r)); }
static inline slice rd_longstr(rd *r) { return rd_bytes(r, rd_u32(r)); }

static inline int slice_eq(slice a, slice b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }
static inline int slice_eqs(slice a, const char *s) {
    size_t n = strlen(s);
    return a.n == n && memcmp(a.p, s, n) == 0;
}
static inline slice slice_str(const char *s) {
    slice r = {(const uint8_t *)s, strlen(s)};
    return r;
}
static inline int slice_prefix(slice a, const char *s) {
    size_t n = strlen(s);
    return a.n >= n && memcmp(a.p, s, n) == 0;
}

#endif
