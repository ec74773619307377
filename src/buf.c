/* buf.c — growable byte buffers (see buf.h). */
#include "buf.h"

#include <stdlib.h>

#include "util.h"

uint8_t buf_empty[1];

void buf_init(buf *b) { memset(b, 0, sizeof *b); }

void buf_free(buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

uint8_t *buf_grow(buf *b, size_t n) {
    size_t need = b->off + b->len + n;
    if (need > b->cap) {
        /* Reclaim consumed space first: an output buffer that drains from the front would
         * otherwise grow forever. */
        if (b->off > 0 && b->len + n <= b->cap) {
            buf_compact(b);
            return buf_tail(b);
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        if (b->off > 0)
            buf_compact(b);
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    return buf_tail(b);
}

void buf_consume(buf *b, size_t n) {
    if (n >= b->len) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void buf_compact(buf *b) {
    if (b->off == 0)
        return;
    if (b->len)
        memmove(b->data, b->data + b->off, b->len);
    b->off = 0;
}

void buf_shrink_if_idle(buf *b, size_t keep) {
    if (b->len == 0 && b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = b->off = 0;
    }
}

void buf_shortstr(buf *b, const char *s, size_t n) {
    if (n > 255)
        n = 255;
    buf_u8(b, (uint8_t)n);
    buf_put(b, s, n);
}

void buf_longstr(buf *b, const void *s, size_t n) {
    buf_u32(b, (uint32_t)n);
    buf_put(b, s, n);
}

void buf_patch_u32(buf *b, size_t pos, uint32_t v) {
    uint8_t *p = b->data + b->off + pos;
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
