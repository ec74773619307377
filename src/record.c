/* record.c — record framing, checksums, salts and the payloads of message records (see
 * record.h). Pure bytes: the layers above decide what a record means. */
#include "record.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "crc32c.h"
#include "storeio.h"
#include "util.h"

/* Starts a record: its header with length and checksum left 0 (rec_end fills them in). */
size_t rec_begin(buf *b, uint8_t type) {
    size_t at = b->len;
    buf_u32(b, REC_MAGIC);
    buf_u32(b, 0);
    buf_u32(b, 0);
    buf_u8(b, type);
    return at;
}

/* A record's checksum is seeded with its file's salt: a random number in the file's header
 * that no publisher knows, so bytes inside a message body can never pass for a record when
 * recovery searches past a damaged one. */
static uint32_t rec_crc(const uint8_t *from, size_t n, uint64_t salt) {
    uint8_t sb[8];
    for (int i = 0; i < 8; i++)
        sb[i] = (uint8_t)(salt >> (56 - 8 * i));
    return crc32c(salt ? crc32c(0, sb, 8) : 0, from, n);
}

/* Fills in the length and checksum of the record started at `at` (ending at b's end). */
void rec_end(buf *b, size_t at, uint64_t salt) {
    assert(b->len >= at + REC_HEADER);
    uint32_t len = (uint32_t)(b->len - at - REC_HEADER);
    buf_patch_u32(b, at + 8, len);
    buf_patch_u32(b, at + 4, rec_crc(buf_head(b) + at + 8, len + 5, salt));
}

/* Validates a record at p (n bytes available): its total size, or 0 if it is not one. */
size_t rec_check(const uint8_t *p, size_t n, uint64_t salt) {
    if (n < REC_HEADER)
        return 0;
    rd r = rd_make(p, n);
    uint32_t magic = rd_u32(&r), crc = rd_u32(&r), len = rd_u32(&r);
    if (magic != REC_MAGIC || len > n - REC_HEADER)
        return 0;
    if (rec_crc(p + 8, (size_t)len + 5, salt) != crc)
        return 0;
    return REC_HEADER + (size_t)len;
}

/* A random salt from the kernel (or, failing that, the clock); never 0, which means "none". */
uint64_t rec_new_salt(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = now_us() * 0x9E3779B97F4A7C15ULL;
    return v ? v : 1;
}

/* Every file starts with two copies of its header (the salt), so that one damaged byte
 * there cannot make the whole file unverifiable. Headers are checksummed without salt. */
void rec_put_headers(buf *b, uint64_t salt) {
    for (int i = 0; i < 2; i++) {
        size_t at = rec_begin(b, R_HEADER);
        buf_u64(b, salt);
        rec_end(b, at, 0);
    }
}

/* Reads a file's salt from the first good copy of its header; 0 if neither is readable. */
uint64_t rec_read_salt(const uint8_t *p, size_t n) {
    for (size_t at = 0; at <= REC_FILE_HEADER; at += REC_FILE_HEADER) {
        if (at < n && rec_check(p + at, n - at, 0) == REC_FILE_HEADER && p[at + 12] == R_HEADER) {
            rd r = rd_make(p + at + REC_HEADER, 8);
            return rd_u64(&r);
        }
    }
    return 0;
}

/* Walks one file's records. A bad record in the middle is skipped (the next good record is
 * found by scanning); a bad tail is reported. Returns where the good data ends. */
size_t rec_scan(const char *path, const uint8_t *p, size_t n, int last, rec_apply_fn apply, void *ctx,
                uint64_t *corrupt) {
    uint64_t salt = rec_read_salt(p, n);
    if (!salt) {
        if (n > 0) {
            (*corrupt)++;
            log_error("store: %s: both headers are unreadable; its %zu bytes of records cannot be verified and "
                      "are not used",
                      path, n);
        }
        return 0;
    }
    size_t pos = MIN(2 * REC_FILE_HEADER, n), good_end = pos;
    if (n >= 2 * REC_FILE_HEADER && rec_check(p + REC_FILE_HEADER, n - REC_FILE_HEADER, 0) != REC_FILE_HEADER)
        pos = good_end = REC_FILE_HEADER; /* the second copy is the damaged one: skipped below */
    while (pos < n) {
        size_t len = rec_check(p + pos, n - pos, salt);
        if (len) {
            apply(ctx, p + pos, len);
            pos += len;
            good_end = pos;
            continue;
        }
        size_t next = pos + 1;
        while (next < n && !rec_check(p + next, n - next, salt))
            next++;
        if (next >= n) {
            if (last)
                log_warn("store: %s: cutting a torn tail of %zu bytes at offset %zu", path, n - pos, pos);
            else
                log_warn("store: %s: %zu unreadable bytes at the end (offset %zu) skipped", path, n - pos, pos);
            break;
        }
        (*corrupt)++;
        log_warn("store: %s: corrupt record at offset %zu (bad checksum or framing), %zu bytes skipped", path, pos,
                 next - pos);
        pos = next;
    }
    return good_end;
}

static int read_once(const char *path, uint8_t **data, size_t *cap, size_t *len);

/* Reads a whole file into memory (one extra byte allocated, so an empty file is fine). An
 * error other than "no such file" is tried three times (EMFILE, a transient EIO) before it
 * is returned: the callers refuse to start without the file rather than lose its records. */
static int read_retried(const char *path, uint8_t **data, size_t *cap, size_t *len) {
    int err = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((err = read_once(path, data, cap, len)) == 0 || err == -ENOENT)
            break;
        usleep(10000);
    }
    return err;
}

int rec_read_file(const char *path, uint8_t **data, size_t *len) { return read_retried(path, data, NULL, len); }

int rec_read_file_reuse(const char *path, uint8_t **buf, size_t *cap, size_t *len) {
    return read_retried(path, buf, cap, len);
}

/* Reads the file into *data: a new buffer when cap is NULL, else *data is reused (grown
 * when too small; *cap is its size) so a loop over many files does not map and fault in
 * fresh pages for each one (recovery: a quarter of its time went to page faults). */
static int read_once(const char *path, uint8_t **data, size_t *cap, size_t *len) {
    sio_file *f = sio_open(path, 0);
    if (!f)
        return -errno;
    int64_t size = sio_size(f);
    if (size < 0) {
        sio_close(f);
        return (int)size;
    }
    if (!cap) {
        *data = xmalloc((size_t)size + 1);
    } else if (*cap < (size_t)size + 1) {
        free(*data); /* not realloc: the old bytes are not needed */
        *data = xmalloc((size_t)size + 1);
        *cap = (size_t)size + 1;
    }
    ssize_t got = size ? sio_pread(f, *data, (size_t)size, 0) : 0;
    sio_close(f);
    if (got < 0) {
        if (!cap) {
            free(*data);
            *data = NULL;
        }
        return (int)got;
    }
    *len = (size_t)got;
    return 0;
}

/* ---- message payloads ---- */

/* The message itself, as PUBLISH, PAGE and DELAYED records carry it. */
static size_t message_size(size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len) {
    return 2 + exchange_len + rkey_len + 4 + props_len + 8 + body_len;
}

static void put_message(buf *b, slice ex, slice rk, slice props, slice body) {
    buf_shortstr(b, (const char *)ex.p, ex.n);
    buf_shortstr(b, (const char *)rk.p, rk.n);
    buf_longstr(b, props.p, props.n);
    buf_u64(b, body.n);
    buf_put(b, body.p, body.n);
}

/* Reads what put_message wrote; -1 if it runs past the record. */
static int read_message(rd *r, slice *ex, slice *rk, slice *props, slice *body) {
    *ex = rd_shortstr(r);
    *rk = rd_shortstr(r);
    *props = rd_longstr(r);
    uint64_t blen = rd_u64(r);
    *body = rd_bytes(r, blen);
    return r->err ? -1 : 0;
}

size_t rec_publish_size(uint32_t n, size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len) {
    return REC_HEADER + 8 + 8 + (n > UINT16_MAX ? 4 : 2) + (size_t)n * 12 +
           message_size(exchange_len, rkey_len, props_len, body_len);
}

/* The payload of a PUBLISH, MOVE or PAGE record, up to the end of the message: the queue
 * count takes 32 bits in R_PUBLISH_WIDE (more than 65,535 queues), 16 otherwise. */
static void put_publish_payload(buf *b, uint64_t published, int64_t ttl, const uint32_t *qids, const uint64_t *seqs,
                                uint32_t n, slice ex, slice rk, slice props, slice body) {
    int wide = n > UINT16_MAX;
    buf_u64(b, published); /* publish time, for TTLs across restarts */
    buf_u64(b, (uint64_t)ttl);
    if (wide)
        buf_u32(b, n);
    else
        buf_u16(b, (uint16_t)n);
    for (uint32_t i = 0; i < n; i++) {
        buf_u32(b, qids[i]);
        buf_u64(b, seqs[i]);
    }
    put_message(b, ex, rk, props, body);
}

void rec_put_publish(buf *b, uint8_t type, uint64_t salt, uint64_t published, int64_t ttl, const uint32_t *qids,
                     const uint64_t *seqs, uint32_t n, slice ex, slice rk, slice props, slice body) {
    assert(type == R_PUBLISH || (type == R_PAGE && n == 0));
    size_t at = rec_begin(b, n > UINT16_MAX ? R_PUBLISH_WIDE : type);
    put_publish_payload(b, published, ttl, qids, seqs, n, ex, rk, props, body);
    rec_end(b, at, salt);
}

size_t rec_move_size(uint32_t n, size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len) {
    return rec_publish_size(n, exchange_len, rkey_len, props_len, body_len) + (size_t)n * 2;
}

void rec_put_move(buf *b, uint64_t salt, uint64_t published, int64_t ttl, const uint32_t *qids, const uint64_t *seqs,
                  const uint16_t *deliveries, uint32_t n, slice ex, slice rk, slice props, slice body) {
    assert(n > 0 && n <= UINT16_MAX); /* store_move splits a larger set of copies */
    size_t at = rec_begin(b, R_MOVE);
    put_publish_payload(b, published, ttl, qids, seqs, n, ex, rk, props, body);
    for (uint32_t i = 0; i < n; i++)
        buf_u16(b, deliveries[i]);
    rec_end(b, at, salt);
}

int rec_publish_read(const uint8_t *rec, size_t len, rec_publish *out) {
    uint8_t type = rec_type(rec);
    if (!rec_is_publish(type) && type != R_PAGE)
        return -1;
    rd r = rd_make(rec + REC_HEADER, len - REC_HEADER);
    out->published = rd_u64(&r);
    out->ttl = (int64_t)rd_u64(&r);
    out->nq = type == R_PUBLISH_WIDE ? rd_u32(&r) : rd_u16(&r);
    out->qlist = r.p;
    out->dlist = NULL;
    rd_bytes(&r, (size_t)out->nq * 12);
    if (read_message(&r, &out->exchange, &out->rkey, &out->props, &out->body) < 0)
        return -1;
    if (rec_is_move(type)) {
        out->dlist = r.p;
        rd_bytes(&r, (size_t)out->nq * 2);
    }
    return r.err ? -1 : 0;
}

uint16_t rec_publish_deliveries(const rec_publish *p, uint32_t i) {
    assert(i < p->nq);
    if (!p->dlist)
        return 0;
    rd r = rd_make(p->dlist + (size_t)i * 2, 2);
    return rd_u16(&r);
}

void rec_publish_queue(const rec_publish *p, uint32_t i, uint32_t *qid, uint64_t *seq) {
    assert(i < p->nq);
    rd r = rd_make(p->qlist + (size_t)i * 12, 12);
    *qid = rd_u32(&r);
    *seq = rd_u64(&r);
}

void rec_put_copy(buf *b, uint8_t type, uint64_t salt, uint32_t qid, uint64_t seq) {
    assert(type == R_SETTLE || type == R_DELIVERED);
    size_t at = rec_begin(b, type);
    buf_u32(b, qid);
    buf_u64(b, seq);
    rec_end(b, at, salt);
}

int rec_copy_read(const uint8_t *rec, size_t len, uint32_t *qid, uint64_t *seq) {
    rd r = rd_make(rec + REC_HEADER, len - REC_HEADER);
    *qid = rd_u32(&r);
    *seq = rd_u64(&r);
    return r.err ? -1 : 0;
}

size_t rec_delayed_size(size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len) {
    return REC_HEADER + 8 + 8 + 1 + 256 + 256 + message_size(exchange_len, rkey_len, props_len, body_len);
}

void rec_put_delayed(buf *b, uint64_t salt, const rec_delayed *d) {
    size_t at = rec_begin(b, R_DELAYED);
    buf_u64(b, d->sid);
    buf_u64(b, d->due);
    if (d->to_queue) { /* 1: a queue by id (ids are unique across vhosts) */
        buf_u8(b, 1);
        buf_u32(b, d->qid);
    } else if (d->vhost.n && !(d->vhost.n == 1 && d->vhost.p[0] == '/')) { /* 2: vhost, exchange */
        buf_u8(b, 2);
        buf_shortstr(b, (const char *)d->vhost.p, d->vhost.n);
        buf_shortstr(b, (const char *)d->target.p, d->target.n);
    } else { /* 0: an exchange of "/" */
        buf_u8(b, 0);
        buf_shortstr(b, (const char *)d->target.p, d->target.n);
    }
    put_message(b, d->exchange, d->rkey, d->props, d->body);
    rec_end(b, at, salt);
}

int rec_delayed_read(const uint8_t *rec, size_t len, rec_delayed *out) {
    rd r = rd_make(rec + REC_HEADER, len - REC_HEADER);
    out->sid = rd_u64(&r);
    out->due = rd_u64(&r);
    uint8_t kind = rd_u8(&r);
    out->to_queue = kind == 1;
    out->qid = 0;
    out->target = out->vhost = (slice){0};
    if (kind > 2)
        return -1;
    if (kind == 1)
        out->qid = rd_u32(&r);
    else if (kind == 2)
        out->vhost = rd_shortstr(&r);
    if (kind != 1)
        out->target = rd_shortstr(&r);
    return read_message(&r, &out->exchange, &out->rkey, &out->props, &out->body);
}

void rec_put_delayed_done(buf *b, uint64_t salt, uint64_t sid) {
    size_t at = rec_begin(b, R_DELAYED_DONE);
    buf_u64(b, sid);
    rec_end(b, at, salt);
}

int rec_delayed_sid(const uint8_t *rec, size_t len, uint64_t *sid) {
    rd r = rd_make(rec + REC_HEADER, len - REC_HEADER);
    *sid = rd_u64(&r);
    return r.err ? -1 : 0;
}
