/* store.c — durable storage: definitions in meta.log, messages in an append-only log.
 *
 * Layout of the data directory:
 *   VERSION                    "ferry-store 1": anything else is refused, never rewritten
 *   meta.log                   durable exchanges, queues and bindings (compacted at start)
 *   segments/<16 hex>.seg      the message log, in segments of about segment-size bytes
 *
 * Every record is framed the same way, in both files:
 *   magic u32 'FERR' | crc32c u32 (of length, type and payload) | length u32 | type u8 | payload
 * so recovery can tell a torn tail (cut) from a corrupt record in the middle (logged with its
 * position and skipped: the next record is found by its magic and a good checksum).
 *
 * Message records: PUBLISH (one per message, naming every durable queue it went to, with
 * that queue's sequence number), SETTLE (a queue's copy is gone: acked, rejected, expired,
 * dropped, purged) and DELIVERED (so that recovery marks it redelivered). Segments are
 * deleted oldest first once every copy published in them is settled, so a drained queue
 * leaves about one segment behind.
 *
 * Group commit: the loop thread appends records to the pending batch; when the writer thread
 * is idle, the pending batch is handed over and the writer writes and fdatasyncs it, then
 * signals an eventfd. Everything that arrived while one fsync ran goes into the next one.
 * The broker confirms a batch's publishes only when it comes back synced (broker.c). */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "crc32c.h"
#include "storeio.h"
#include "util.h"

#define STORE_VERSION "ferry-store 1"
#define MAGIC 0x46455252u /* "FERR" */
#define REC_HEADER 13

enum { R_PUBLISH = 1, R_SETTLE = 2, R_DELIVERED = 3, R_DELAYED = 4, R_DELAYED_DONE = 5, R_HEADER = 9 };
#define HEADER_SIZE (REC_HEADER + 8)
enum { M_EXCHANGE = 10, M_EXCHANGE_DEL = 11, M_QUEUE = 12, M_QUEUE_DEL = 13, M_BIND = 14, M_UNBIND = 15 };

typedef struct seg {
    uint32_t id;
    uint64_t salt;  /* seeds its records' checksums (rec_crc) */
    uint64_t live;  /* stored queue copies published in it and not yet settled */
    uint64_t bytes; /* as appended (for rollover) */
} seg;

typedef struct piece { /* a run of records for one segment */
    uint32_t seg;
    uint64_t salt; /* the segment's (the writer puts the headers in an empty file) */
    buf data;
    uint64_t off; /* set by the writer: where in the segment it was written */
} piece;

typedef struct precord { /* paging: a message record in this batch, told its place once written */
    message *m; /* holds a reference */
    uint32_t piece, rel, len;
} precord;

typedef struct wbatch {
    uint64_t gen;
    piece *pieces;
    size_t npieces, cap;
    uint32_t *unlinks; /* segments to delete once this batch is written */
    size_t nunlinks, capunlinks;
    precord *precs; /* paging: message records, so their offsets are known once written */
    size_t nprecs, capprecs;
    int err; /* the writer's result: 0 or -errno */
} wbatch;

struct store {
    broker *b;
    char dir[512];
    char segdir[600];
    sio_file *meta;
    uint64_t meta_size;
    uint64_t meta_salt;
    uint32_t next_qid;
    seg *segs; /* oldest first; the last one is being appended to */
    size_t nsegs, capsegs;
    uint32_t next_seg;
    wbatch *pending, *inflight;
    sio_file *rfile; /* paging: the segment last read back (loop thread) */
    uint32_t rseg;
    uint64_t rsalt;
    uint64_t gen_next;
    int disk_alarm;
    uint64_t enospc_need; /* after ENOSPC: free bytes needed before writing is tried again */
    uint64_t appended;   /* message records appended (publish, delayed) */
    uint64_t next_delay; /* ids of delayed records */
    /* the writer thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wbatch *todo;
    int stop;
    int efd;
    io_handler io;
    sio_file *wfile; /* writer-owned: the open segment */
    uint32_t wseg;
    uint64_t woff;
};

static void on_synced(io_handler *h, uint32_t events);
static void page_synced(store *s, wbatch *w);
static void page_note(store *s, message *m, size_t at);

/* ---- records ---- */

static size_t rec_begin(buf *b, uint8_t type) {
    size_t at = b->len;
    buf_u32(b, MAGIC);
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

static void rec_end(buf *b, size_t at, uint64_t salt) {
    uint32_t len = (uint32_t)(b->len - at - REC_HEADER);
    buf_patch_u32(b, at + 8, len);
    buf_patch_u32(b, at + 4, rec_crc(buf_head(b) + at + 8, len + 5, salt));
}

/* Validates a record at p (n bytes available): its total size, or 0 if it is not one. */
static size_t rec_check(const uint8_t *p, size_t n, uint64_t salt) {
    if (n < REC_HEADER)
        return 0;
    rd r = rd_make(p, n);
    uint32_t magic = rd_u32(&r), crc = rd_u32(&r), len = rd_u32(&r);
    if (magic != MAGIC || len > n - REC_HEADER)
        return 0;
    if (rec_crc(p + 8, (size_t)len + 5, salt) != crc)
        return 0;
    return REC_HEADER + (size_t)len;
}

static uint64_t new_salt(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = now_us() * 0x9E3779B97F4A7C15ULL;
    return v ? v : 1;
}

/* Every file starts with two copies of its header (the salt), so that one damaged byte
 * there cannot make the whole file unverifiable. */
static void put_headers(buf *b, uint64_t salt) {
    for (int i = 0; i < 2; i++) {
        size_t at = rec_begin(b, R_HEADER);
        buf_u64(b, salt);
        rec_end(b, at, 0);
    }
}

/* Reads a file's salt from its headers; 0 if neither copy is readable. */
static uint64_t read_salt(const uint8_t *p, size_t n) {
    for (size_t at = 0; at <= HEADER_SIZE; at += HEADER_SIZE) {
        if (at < n && rec_check(p + at, n - at, 0) == HEADER_SIZE && p[at + 12] == R_HEADER) {
            rd r = rd_make(p + at + REC_HEADER, 8);
            return rd_u64(&r);
        }
    }
    return 0;
}

/* ---- batches and segments ---- */

static wbatch *batch_new(void) { return xcalloc(1, sizeof(wbatch)); }

static void batch_free(wbatch *w) {
    for (size_t i = 0; i < w->nprecs; i++) {
        w->precs[i].m->pg_wait = 0;
        message_unref(w->precs[i].m);
    }
    free(w->precs);
    for (size_t i = 0; i < w->npieces; i++)
        buf_free(&w->pieces[i].data);
    free(w->pieces);
    free(w->unlinks);
    free(w);
}

static int batch_empty(const wbatch *w) { return w->npieces == 0 && w->nunlinks == 0; }

static seg *active_seg(store *s) { return &s->segs[s->nsegs - 1]; }

static seg *find_seg(store *s, uint32_t id) {
    if (!s->nsegs || id < s->segs[0].id)
        return NULL;
    size_t i = id - s->segs[0].id;
    return i < s->nsegs && s->segs[i].id == id ? &s->segs[i] : NULL;
}

static void add_seg(store *s, uint32_t id, uint64_t bytes) {
    if (s->nsegs == s->capsegs) {
        s->capsegs = s->capsegs ? s->capsegs * 2 : 16;
        s->segs = xrealloc(s->segs, s->capsegs * sizeof *s->segs);
    }
    s->segs[s->nsegs++] = (seg){id, new_salt(), 0, bytes};
}

/* The buffer that the next message record goes to, rolling to a new segment when the
 * active one is full. */
static buf *log_buf(store *s, size_t need) {
    seg *a = active_seg(s);
    if (a->bytes > 0 && a->bytes + need > s->b->cfg.segment_size) {
        add_seg(s, s->next_seg++, 0);
        a = active_seg(s);
    }
    wbatch *w = s->pending;
    if (!w->npieces || w->pieces[w->npieces - 1].seg != a->id) {
        if (w->npieces == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4;
            w->pieces = xrealloc(w->pieces, w->cap * sizeof *w->pieces);
        }
        w->pieces[w->npieces].seg = a->id;
        w->pieces[w->npieces].salt = a->salt;
        buf_init(&w->pieces[w->npieces].data);
        w->npieces++;
    }
    buf *b = &w->pieces[w->npieces - 1].data;
    if (a->bytes == 0)
        a->bytes = 2 * HEADER_SIZE; /* written by the writer (write_batch) */
    a->bytes += need;
    return b;
}

static void seg_path(const store *s, uint32_t id, char *out, size_t n) {
    snprintf(out, n, "%s/%016x.seg", s->segdir, id);
}

/* Deletes the oldest segments while nothing in them is live (never the active one). */
static void reclaim(store *s) {
    size_t k = 0;
    while (k + 1 < s->nsegs && s->segs[k].live == 0)
        k++;
    if (!k)
        return;
    wbatch *w = s->pending;
    for (size_t i = 0; i < k; i++) {
        if (w->nunlinks == w->capunlinks) {
            w->capunlinks = w->capunlinks ? w->capunlinks * 2 : 8;
            w->unlinks = xrealloc(w->unlinks, w->capunlinks * sizeof *w->unlinks);
        }
        w->unlinks[w->nunlinks++] = s->segs[i].id;
    }
    memmove(s->segs, s->segs + k, (s->nsegs - k) * sizeof *s->segs);
    s->nsegs -= k;
}

/* ---- the writer thread ---- */

/* Writes one batch: every piece appended to its segment, each file synced, new files made
 * durable in the directory, then the segments no longer needed deleted. A failed write is
 * cut back so that the segment ends on a whole record. */
static int write_batch(store *s, wbatch *w) {
    int dirty_dir = 0, err = 0;
    for (size_t i = 0; i < w->npieces && !err; i++) {
        piece *p = &w->pieces[i];
        if (!s->wfile || p->seg != s->wseg) {
            if (s->wfile) {
                err = sio_sync(s->wfile);
                sio_close(s->wfile);
                s->wfile = NULL;
                if (err)
                    break;
            }
            char path[700];
            seg_path(s, p->seg, path, sizeof path);
            s->wfile = sio_open(path, 1);
            if (!s->wfile) {
                err = -errno;
                break;
            }
            int64_t size = sio_size(s->wfile);
            s->wseg = p->seg;
            s->woff = size > 0 ? (uint64_t)size : 0;
            dirty_dir = 1;
        }
        if (s->woff == 0) {
            /* An empty segment (new, or cut back after a failed first write) starts with its
             * headers; the writer puts them there so that no failure can leave them out. */
            buf h;
            buf_init(&h);
            put_headers(&h, p->salt);
            err = sio_pwrite(s->wfile, buf_head(&h), h.len, 0);
            if (!err)
                s->woff = h.len;
            buf_free(&h);
        }
        if (!err)
            err = sio_pwrite(s->wfile, buf_head(&p->data), p->data.len, s->woff);
        p->off = s->woff; /* where its records are (paging), if it was written */
        if (err) {
            sio_truncate(s->wfile, s->woff);
            break;
        }
        s->woff += p->data.len;
    }
    if (!err && s->wfile)
        err = sio_sync(s->wfile);
    if (!err && dirty_dir)
        err = sio_sync_dir(s->segdir);
    for (size_t i = 0; i < w->nunlinks; i++) {
        if (s->wfile && w->unlinks[i] == s->wseg)
            continue;
        char path[700];
        seg_path(s, w->unlinks[i], path, sizeof path);
        sio_unlink(path);
    }
    return err;
}

static void *writer_main(void *arg) {
    store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->todo && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        wbatch *w = s->todo;
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (!w && stop)
            return NULL;
        w->err = write_batch(s, w);
        pthread_mutex_lock(&s->mu);
        s->todo = NULL;
        pthread_mutex_unlock(&s->mu);
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof one) < 0) {
        }
    }
}

void store_kick(store *s) {
    if (!s || s->inflight || batch_empty(s->pending))
        return;
    s->inflight = s->pending;
    s->inflight->gen = s->gen_next++;
    s->pending = batch_new();
    pthread_mutex_lock(&s->mu);
    s->todo = s->inflight;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void broker_store_synced(broker *b, uint64_t gen, int ok);

static void on_synced(io_handler *h, uint32_t events) {
    (void)events;
    store *s = (store *)((char *)h - offsetof(store, io));
    uint64_t v;
    if (read(s->efd, &v, sizeof v) < 0)
        return;
    wbatch *w = s->inflight;
    if (!w)
        return;
    pthread_mutex_lock(&s->mu);
    int done = s->todo == NULL;
    pthread_mutex_unlock(&s->mu);
    if (!done)
        return;
    s->inflight = NULL;
    uint64_t gen = w->gen;
    int err = w->err;
    if (err) {
        log_error("store: writing the message log failed: %s; publishes in this batch are nacked",
                  strerror(-err));
        uint64_t failed = 0;
        for (size_t i = 0; i < w->npieces; i++) { /* the failed bytes are not in the segment */
            seg *sg = find_seg(s, w->pieces[i].seg);
            if (sg)
                sg->bytes -= MIN(sg->bytes, w->pieces[i].data.len);
            failed += w->pieces[i].data.len;
        }
        if (err == -ENOSPC || err == -EDQUOT) {
            /* Publishers are blocked at once (not at the next tick) and stay blocked until
             * there is room for what failed and more. */
            s->disk_alarm = 1;
            s->enospc_need = failed + (64u << 10);
            broker_set_alarm(s->b, ALARM_DISK, 1);
        }
    }
    page_synced(s, w);
    batch_free(w);
    broker_store_synced(s->b, gen, err == 0);
    store_kick(s);
}

/* ---- definitions ---- */

static int meta_write(store *s, buf *b) {
    if (!s->meta || !b->len)
        return 0;
    int err = sio_pwrite(s->meta, buf_head(b), b->len, s->meta_size);
    if (!err)
        err = sio_sync(s->meta);
    if (err) {
        log_error("store: cannot write definitions: %s", strerror(-err));
        sio_truncate(s->meta, s->meta_size);
        if (err == -ENOSPC)
            s->disk_alarm = 1;
        return -1;
    }
    s->meta_size += b->len;
    return 0;
}

static void put_exchange(buf *b, const exchange *x, uint64_t salt) {
    size_t at = rec_begin(b, M_EXCHANGE);
    buf_shortstr(b, x->name, x->name_len);
    buf_u8(b, (uint8_t)x->type);
    buf_u8(b, (uint8_t)(x->durable | x->auto_delete << 1 | x->internal << 2));
    buf_longstr(b, x->args, x->args_len);
    rec_end(b, at, salt);
}

static void put_queue(buf *b, const queue *q, uint64_t salt) {
    size_t at = rec_begin(b, M_QUEUE);
    buf_u32(b, q->qid);
    buf_shortstr(b, q->name, q->name_len);
    buf_u8(b, q->auto_delete);
    buf_longstr(b, q->args, q->args_len);
    rec_end(b, at, salt);
}

static int binding_durable(const binding *bd) {
    return bd->src->durable && (bd->q ? bd->q->qid != 0 : bd->dstx->durable);
}

static void put_binding(buf *b, const binding *bd, int add, uint64_t salt) {
    size_t at = rec_begin(b, add ? M_BIND : M_UNBIND);
    buf_shortstr(b, bd->src->name, bd->src->name_len);
    buf_u8(b, bd->q ? 0 : 1);
    if (bd->q)
        buf_shortstr(b, bd->q->name, bd->q->name_len);
    else
        buf_shortstr(b, bd->dstx->name, bd->dstx->name_len);
    buf_shortstr(b, bd->key, bd->key_len);
    buf_longstr(b, bd->args, bd->args_len);
    rec_end(b, at, salt);
}

int store_exchange(store *s, exchange *x, int add) {
    if (!s || !x->durable || x->builtin)
        return 0;
    buf b;
    buf_init(&b);
    if (add) {
        put_exchange(&b, x, s->meta_salt);
    } else {
        size_t at = rec_begin(&b, M_EXCHANGE_DEL);
        buf_shortstr(&b, x->name, x->name_len);
        rec_end(&b, at, s->meta_salt);
    }
    int rc = meta_write(s, &b);
    buf_free(&b);
    return rc;
}

int store_queue(store *s, queue *q, int add) {
    if (!s || (add && (!q->durable || q->exclusive)) || (!add && !q->qid))
        return 0;
    buf b;
    buf_init(&b);
    if (add) {
        q->qid = s->next_qid++;
        put_queue(&b, q, s->meta_salt);
    } else {
        size_t at = rec_begin(&b, M_QUEUE_DEL);
        buf_u32(&b, q->qid);
        rec_end(&b, at, s->meta_salt);
    }
    int rc = meta_write(s, &b);
    buf_free(&b);
    if (rc < 0 && add)
        q->qid = 0;
    return rc;
}

int store_binding(store *s, binding *bd, int add) {
    if (!s || !binding_durable(bd))
        return 0;
    buf b;
    buf_init(&b);
    put_binding(&b, bd, add, s->meta_salt);
    int rc = meta_write(s, &b);
    buf_free(&b);
    return rc;
}

/* ---- messages ---- */

/* The message itself, as PUBLISH and DELAYED records carry it. */
static size_t message_size(const message *m) {
    return 2 + m->exchange_len + m->rkey_len + 4 + m->props_len + 8 + m->body_len;
}

static void put_message(buf *b, const message *m) {
    buf_shortstr(b, msg_exchange(m), m->exchange_len);
    buf_shortstr(b, msg_rkey(m), m->rkey_len);
    buf_longstr(b, msg_props(m), m->props_len);
    buf_u64(b, m->body_len);
    buf_put(b, msg_body(m), m->body_len);
}

/* Reads what put_message wrote; NULL if malformed. */
static message *read_message(rd *r) {
    slice ex = rd_shortstr(r), rk = rd_shortstr(r), props = rd_longstr(r);
    uint64_t blen = rd_u64(r);
    slice body = rd_bytes(r, blen);
    props_view pv;
    if (r->err || props_parse(props, &pv) < 0)
        return NULL;
    message *m = message_new(ex, rk, props, blen);
    if (blen)
        memcpy(msg_body(m), body.p, blen);
    m->persistent = 1;
    m->priority = pv.priority;
    return m;
}

uint64_t store_appended(const store *s) { return s ? s->appended : 0; }

void store_delayed(store *s, delayed_entry *e) {
    buf *b = log_buf(s, REC_HEADER + 8 + 8 + 1 + 256 + message_size(e->m));
    size_t at = rec_begin(b, R_DELAYED);
    e->sid = ++s->next_delay;
    buf_u64(b, e->sid);
    buf_u64(b, e->due);
    if (e->q) {
        buf_u8(b, 1);
        buf_u32(b, e->q->qid);
    } else {
        buf_u8(b, 0);
        buf_shortstr(b, e->x->name, e->x->name_len);
    }
    put_message(b, e->m);
    rec_end(b, at, active_seg(s)->salt);
    e->seg = active_seg(s)->id;
    active_seg(s)->live++;
    s->appended++;
}

void store_delayed_done(store *s, const delayed_entry *e) {
    if (!s || !e->sid)
        return;
    buf *b = log_buf(s, REC_HEADER + 8);
    size_t at = rec_begin(b, R_DELAYED_DONE);
    buf_u64(b, e->sid);
    rec_end(b, at, active_seg(s)->salt);
    seg *sg = find_seg(s, e->seg);
    if (sg && sg->live)
        sg->live--;
    if (sg == &s->segs[0])
        reclaim(s);
}

void store_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n) {
    s->appended++;
    size_t need = REC_HEADER + 8 + 8 + 2 + (size_t)n * 12 + 2 + m->exchange_len + m->rkey_len + 4 + m->props_len + 8 +
                  m->body_len;
    buf *b = log_buf(s, need);
    size_t at = rec_begin(b, R_PUBLISH);
    buf_u64(b, wall_ms()); /* publish time, for TTLs across restarts */
    buf_u64(b, (uint64_t)m->ttl);
    buf_u16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        buf_u32(b, qids[i]);
        buf_u64(b, seqs[i]);
    }
    buf_shortstr(b, msg_exchange(m), m->exchange_len);
    buf_shortstr(b, msg_rkey(m), m->rkey_len);
    buf_longstr(b, msg_props(m), m->props_len);
    buf_u64(b, m->body_len);
    buf_put(b, msg_body(m), m->body_len);
    rec_end(b, at, active_seg(s)->salt);
    m->seg = active_seg(s)->id;
    m->in_store = 1;
    active_seg(s)->live += (uint64_t)n;
    page_note(s, m, at);
}

static void small_record(store *s, uint8_t type, uint32_t qid, uint64_t seq) {
    buf *b = log_buf(s, REC_HEADER + 12);
    size_t at = rec_begin(b, type);
    buf_u32(b, qid);
    buf_u64(b, seq);
    rec_end(b, at, active_seg(s)->salt);
}

void store_pin(store *s, uint32_t segid) {
    seg *sg = s ? find_seg(s, segid) : NULL;
    if (sg)
        sg->live++;
}

void store_unpin(store *s, uint32_t segid) {
    seg *sg = s ? find_seg(s, segid) : NULL;
    if (sg && sg->live)
        sg->live--;
    if (sg && sg == &s->segs[0])
        reclaim(s);
}

void store_forget(store *s, const qmsg *qm) {
    if (!s || !qm->stored)
        return;
    seg *sg = find_seg(s, qmsg_seg(qm));
    if (sg && sg->live)
        sg->live--;
    if (sg == &s->segs[0])
        reclaim(s);
}

void store_settle(store *s, const queue *q, const qmsg *qm) {
    if (!s || !qm->stored)
        return;
    small_record(s, R_SETTLE, q->qid, qm->seq);
    store_forget(s, qm);
}

/* The first delivery is logged (so recovery sets redelivered); on queues with a delivery
 * limit every delivery is, so that x-delivery-count survives a restart. */
void store_delivered(store *s, const queue *q, const qmsg *qm) {
    if (s && qm->stored && (qm->deliveries == 0 || q->delivery_limit >= 0))
        small_record(s, R_DELIVERED, q->qid, qm->seq);
}

uint64_t store_gen(const store *s) { return s->gen_next; }

int store_tick(store *s) {
    if (!s)
        return 0;
    struct statvfs vfs;
    if (statvfs(s->segdir, &vfs) == 0) {
        uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        if (s->enospc_need && free_bytes >= s->enospc_need)
            s->enospc_need = 0;
        int low = free_bytes < s->b->cfg.disk_free_limit || s->enospc_need;
        if (low != s->disk_alarm)
            log_warn("disk alarm %s: %llu bytes free, limit %llu", low ? "set" : "cleared",
                     (unsigned long long)free_bytes, (unsigned long long)s->b->cfg.disk_free_limit);
        s->disk_alarm = low;
    }
    return s->disk_alarm;
}

/* ---- recovery ---- */

typedef struct rvec { /* one queue's recovered copies, in seq order */
    qmsg *a;
    size_t n, cap;
    uint64_t max_seq;
} rvec;

static qmsg *rvec_find(rvec *v, uint64_t seq) {
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->a[mid].seq == seq)
            return &v->a[mid];
        if (v->a[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

typedef struct recovery {
    store *s;
    queue **byqid; /* qid -> queue */
    rvec *vecs;    /* qid -> copies */
    uint32_t nqid;
    uint64_t records, corrupt, messages;
    uint32_t max_qid; /* the highest queue id in the log: never reused for a new queue */
    int meta_damaged;  /* meta.log had a corrupt record: keep messages of unknown queues */
    struct rdelayed {  /* delayed entries, in sid order */
        uint64_t sid, due;
        uint32_t qid, seg;
        char *exchange; /* or NULL for a queue target */
        message *m;     /* NULL once done */
    } *delayed;
    size_t ndelayed, capdelayed;
    uint64_t pinned;   /* such messages in the segment being scanned */
    uint64_t orphans;  /* and in all */
    const uint8_t *base; /* paging: the segment being scanned, and the record being applied */
    size_t cur_off, cur_len;
} recovery;

static queue *qid_queue(recovery *rc, uint32_t qid) { return qid < rc->nqid ? rc->byqid[qid] : NULL; }

/* The message of a PUBLISH record being recovered (built once, on first need). */
static message *recovered_message(recovery *rc, uint32_t segid, slice ex, slice rk, slice props, uint64_t blen,
                                  slice body, const props_view *pv, int64_t ttl) {
    message *m = message_new(ex, rk, props, blen);
    if (blen)
        memcpy(msg_body(m), body.p, blen);
    m->persistent = 1;
    m->priority = pv->priority;
    m->ttl = ttl;
    m->seg = segid;
    m->in_store = 1;
    if (rc->cur_off <= UINT32_MAX && rc->cur_len <= UINT32_MAX) { /* paging can point at it */
        m->doff = (uint32_t)rc->cur_off;
        m->dlen = (uint32_t)rc->cur_len;
        m->on_disk = 1;
    }
    return m;
}

static void apply_publish(recovery *rc, uint32_t segid, rd *r) {
    uint64_t published = rd_u64(r);
    int64_t ttl = (int64_t)rd_u64(r);
    uint16_t n = rd_u16(r);
    const uint8_t *qlist = r->p;
    rd_bytes(r, (size_t)n * 12);
    slice ex = rd_shortstr(r), rk = rd_shortstr(r), props = rd_longstr(r);
    uint64_t blen = rd_u64(r);
    slice body = rd_bytes(r, blen);
    props_view pv;
    if (r->err || props_parse(props, &pv) < 0)
        return;
    /* Paging: beyond the memory budget, a copy is recovered paged out (its body stays in the
     * log; queue_recover) rather than as a message. */
    int can_page = rc->cur_off <= UINT32_MAX && rc->cur_len <= UINT32_MAX;
    int page = can_page && ttl < 0 && message_bytes() > rc->s->b->cfg.memory_budget;
    message *m = NULL;
    rd q = rd_make(qlist, (size_t)n * 12);
    for (uint16_t i = 0; i < n; i++) {
        uint32_t qid = rd_u32(&q);
        uint64_t seq = rd_u64(&q);
        if (qid > rc->max_qid)
            rc->max_qid = qid;
        if (!qid_queue(rc, qid)) {
            /* A queue we do not know: deleted, or its definition was damaged. In the second
             * case its messages must stay on disk for a person to recover. */
            if (rc->meta_damaged) {
                rc->pinned++;
                rc->orphans++;
            }
            continue;
        }
        rvec *v = &rc->vecs[qid];
        if (v->n && seq <= v->a[v->n - 1].seq)
            continue; /* out of order: cannot happen in a log we wrote */
        queue *dq = qid_queue(rc, qid);
        uint64_t wall = wall_ms();
        if (dq->dedup_window > 0 && published + (uint64_t)dq->dedup_window > wall) {
            /* still in the window: the id is remembered, and pins this segment */
            uint64_t age = wall > published ? wall - published : 0, mono = now_ms();
            if (!m)
                m = recovered_message(rc, segid, ex, rk, props, blen, body, &pv, ttl);
            dedup_restore(dq, m, mono > age ? mono - age : 0, segid);
            rc->pinned++;
        }
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 64;
            v->a = xrealloc(v->a, v->cap * sizeof *v->a);
        }
        /* expires_at holds the publish time (wall ms) until the queue is rebuilt */
        qmsg e = {.seq = seq, .expires_at = published, .stored = 1};
        if (page && qid_queue(rc, qid)->max_bytes < 0) {
            e.loc = (uint64_t)segid << 32 | rc->cur_off;
            e.paged = PAGED_OUT;
            e.pg_size = pg_size_encode((uint32_t)rc->cur_len);
            e.returns = pv.priority; /* its level, until the queue is rebuilt (queue_recover) */
        } else {
            if (!m)
                m = recovered_message(rc, segid, ex, rk, props, blen, body, &pv, ttl);
            e.m = message_ref(m);
        }
        v->a[v->n++] = e;
        if (seq > v->max_seq)
            v->max_seq = seq;
    }
    message_unref(m);
}

static struct rdelayed *find_delayed(recovery *rc, uint64_t sid) {
    size_t lo = 0, hi = rc->ndelayed;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rc->delayed[mid].sid == sid)
            return &rc->delayed[mid];
        if (rc->delayed[mid].sid < sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void apply_delayed(recovery *rc, uint32_t segid, rd *r, int done) {
    uint64_t sid = rd_u64(r);
    if (sid > rc->s->next_delay)
        rc->s->next_delay = sid;
    if (done) {
        struct rdelayed *d = r->err ? NULL : find_delayed(rc, sid);
        if (d && d->m) {
            message_unref(d->m);
            d->m = NULL;
        }
        return;
    }
    struct rdelayed d = {sid, rd_u64(r), 0, segid, NULL, NULL};
    uint8_t kind = rd_u8(r);
    slice xname = {0};
    if (kind == 1)
        d.qid = rd_u32(r);
    else
        xname = rd_shortstr(r);
    message *m = read_message(r);
    if (!m)
        return;
    if (rc->ndelayed && sid <= rc->delayed[rc->ndelayed - 1].sid) {
        message_unref(m);
        return;
    }
    d.m = m;
    if (kind != 1)
        d.exchange = xstrndup((const char *)xname.p, xname.n);
    if (rc->ndelayed == rc->capdelayed) {
        rc->capdelayed = rc->capdelayed ? rc->capdelayed * 2 : 64;
        rc->delayed = xrealloc(rc->delayed, rc->capdelayed * sizeof *rc->delayed);
    }
    rc->delayed[rc->ndelayed++] = d;
}

/* Delayed messages still pending go back to the timer heap, to their exchange or queue. */
static size_t restore_delayed(store *s, recovery *rc) {
    size_t n = 0;
    for (size_t i = 0; i < rc->ndelayed; i++) {
        struct rdelayed *d = &rc->delayed[i];
        if (d->m) {
            exchange *x = d->exchange ? broker_exchange(s->b, slice_str(d->exchange)) : NULL;
            queue *q = d->exchange ? NULL : qid_queue(rc, d->qid);
            seg *sg = find_seg(s, d->seg);
            if (x || q) {
                if (sg)
                    sg->live++;
                if (q)
                    q->refs++;
                delayed_restore(s->b, (delayed_entry){d->due, 0, d->m, x, q, d->sid, d->seg});
                n++;
            } else {
                message_unref(d->m);
            }
        }
        free(d->exchange);
    }
    free(rc->delayed);
    return n;
}

static void apply_record(recovery *rc, uint32_t segid, const uint8_t *p, size_t n) {
    rd r = rd_make(p + REC_HEADER, n - REC_HEADER);
    uint8_t type = p[12];
    rc->records++;
    if (type == R_PUBLISH) {
        rc->cur_off = rc->base ? (size_t)(p - rc->base) : SIZE_MAX;
        rc->cur_len = n;
        apply_publish(rc, segid, &r);
        return;
    }
    if (type == R_DELAYED || type == R_DELAYED_DONE) {
        apply_delayed(rc, segid, &r, type == R_DELAYED_DONE);
        return;
    }
    if (type != R_SETTLE && type != R_DELIVERED)
        return;
    uint32_t qid = rd_u32(&r);
    uint64_t seq = rd_u64(&r);
    if (!r.err && qid > rc->max_qid)
        rc->max_qid = qid;
    if (r.err || !qid_queue(rc, qid))
        return;
    rvec *v = &rc->vecs[qid];
    if (seq > v->max_seq)
        v->max_seq = seq;
    qmsg *qm = rvec_find(v, seq);
    if (!qm || !qm->m)
        return;
    if (type == R_DELIVERED) {
        qm->deliveries = count_up(qm->deliveries);
    } else {
        if (!qm->paged)
            message_unref(qm->m);
        qm->paged = PAGED_NO;
        qm->m = NULL;
    }
}

static int read_file(const char *path, uint8_t **data, size_t *len) {
    sio_file *f = sio_open(path, 0);
    if (!f)
        return -errno;
    int64_t size = sio_size(f);
    if (size < 0) {
        sio_close(f);
        return (int)size;
    }
    *data = xmalloc((size_t)size + 1);
    ssize_t got = size ? sio_pread(f, *data, (size_t)size, 0) : 0;
    sio_close(f);
    if (got < 0) {
        free(*data);
        return (int)got;
    }
    *len = (size_t)got;
    return 0;
}

/* Walks one file's records. A bad record in the middle is skipped (the next good record is
 * found by scanning); a bad tail of the last file is cut. Returns where the good data ends. */
static size_t scan(recovery *rc, const char *path, const uint8_t *p, size_t n, int last,
                   void (*apply)(recovery *, uint32_t, const uint8_t *, size_t), uint32_t segid) {
    uint64_t salt = read_salt(p, n);
    if (!salt) {
        if (n > 0) {
            rc->corrupt++;
            log_error("store: %s: both headers are unreadable; its %zu bytes of records cannot be verified and "
                      "are not used",
                      path, n);
        }
        return 0;
    }
    size_t pos = MIN(2 * HEADER_SIZE, n), good_end = pos;
    if (n >= 2 * HEADER_SIZE && rec_check(p + HEADER_SIZE, n - HEADER_SIZE, 0) != HEADER_SIZE)
        pos = good_end = HEADER_SIZE; /* the second copy is the damaged one: skipped below */
    while (pos < n) {
        size_t len = rec_check(p + pos, n - pos, salt);
        if (len) {
            apply(rc, segid, p + pos, len);
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
        rc->corrupt++;
        log_warn("store: %s: corrupt record at offset %zu (bad checksum or framing), %zu bytes skipped", path, pos,
                 next - pos);
        pos = next;
    }
    return good_end;
}

static void meta_apply(recovery *rc, uint32_t segid, const uint8_t *p, size_t n) {
    (void)segid;
    store *s = rc->s;
    broker *b = s->b;
    rd r = rd_make(p + REC_HEADER, n - REC_HEADER);
    switch (p[12]) {
    case M_EXCHANGE: {
        slice name = rd_shortstr(&r);
        uint8_t type = rd_u8(&r), flags = rd_u8(&r);
        slice args = rd_longstr(&r);
        if (r.err || type > EX_DELAYED || broker_exchange(b, name))
            return;
        exchange *x = exchange_new(b, name, type, flags & 1, (flags >> 1) & 1, (flags >> 2) & 1, args);
        fval dt;
        int sub;
        if (type == EX_DELAYED && table_get(args, "x-delayed-type", &dt) && fval_is_str(&dt) &&
            exchange_type_parse(dt.s, &sub) == 0 && sub != EX_DELAYED)
            x->subtype = sub; /* as exchange.declare set it */
        map_put(&b->exchanges, x->name, x->name_len, x);
        return;
    }
    case M_EXCHANGE_DEL: {
        exchange *x = broker_exchange(b, rd_shortstr(&r));
        if (!r.err && x && !x->builtin)
            broker_remove_exchange(b, x);
        return;
    }
    case M_QUEUE: {
        uint32_t qid = rd_u32(&r);
        slice name = rd_shortstr(&r);
        uint8_t flags = rd_u8(&r);
        slice args = rd_longstr(&r);
        if (r.err || qid == 0)
            return;
        queue *old = broker_queue(b, name);
        if (old)
            queue_delete(old);
        queue *q = queue_new(b, name, 1, 0, flags & 1, NULL, args);
        q->qid = qid;
        map_put(&b->queues, q->name, q->name_len, q);
        if (qid >= s->next_qid)
            s->next_qid = qid + 1;
        return;
    }
    case M_QUEUE_DEL: {
        uint32_t qid = rd_u32(&r);
        size_t i = 0;
        map_entry *e;
        while (!r.err && map_iter(&b->queues, &i, &e)) {
            queue *q = e->val;
            if (q->qid == qid) {
                queue_delete(q);
                break;
            }
        }
        return;
    }
    case M_BIND:
    case M_UNBIND: {
        slice src = rd_shortstr(&r);
        uint8_t kind = rd_u8(&r);
        slice dst = rd_shortstr(&r), key = rd_shortstr(&r), args = rd_longstr(&r);
        exchange *x = broker_exchange(b, src);
        queue *q = kind == 0 ? broker_queue(b, dst) : NULL;
        exchange *dx = kind == 1 ? broker_exchange(b, dst) : NULL;
        if (r.err || !x || (!q && !dx))
            return;
        binding *bd = binding_find(x, q, dx, key, args);
        if (p[12] == M_BIND && !bd)
            binding_add(x, q, dx, key, args);
        else if (p[12] == M_UNBIND && bd)
            binding_remove(bd);
        return;
    }
    }
}

/* Rewrites meta.log with just the current durable definitions (atomically: tmp + rename). */
static int meta_compact(store *s) {
    broker *b = s->b;
    buf out;
    buf_init(&out);
    uint64_t salt = new_salt();
    put_headers(&out, salt);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->exchanges, &i, &e)) {
        exchange *x = e->val;
        if (x->durable && !x->builtin)
            put_exchange(&out, x, salt);
    }
    i = 0;
    while (map_iter(&b->queues, &i, &e)) {
        queue *q = e->val;
        if (q->qid)
            put_queue(&out, q, salt);
    }
    i = 0;
    while (map_iter(&b->exchanges, &i, &e)) {
        exchange *x = e->val;
        for (size_t k = 0; k < x->nbindings; k++)
            if (binding_durable(x->bindings[k]))
                put_binding(&out, x->bindings[k], 1, salt);
    }
    char tmp[600], path[600];
    snprintf(tmp, sizeof tmp, "%s/meta.log.tmp", s->dir);
    snprintf(path, sizeof path, "%s/meta.log", s->dir);
    sio_file *f = sio_open(tmp, 1);
    int err = f ? sio_truncate(f, 0) : -errno;
    if (!err)
        err = sio_pwrite(f, buf_head(&out), out.len, 0);
    if (!err)
        err = sio_sync(f);
    if (f)
        sio_close(f);
    if (!err)
        err = sio_rename(tmp, path);
    if (!err)
        err = sio_sync_dir(s->dir);
    if (!err) {
        s->meta = sio_open(path, 1);
        s->meta_size = out.len;
        s->meta_salt = salt;
        if (!s->meta)
            err = -errno;
    }
    buf_free(&out);
    return err;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists segment ids in the segments directory, sorted. */
static uint32_t *list_segments(const char *segdir, size_t *n) {
    DIR *d = opendir(segdir);
    uint32_t *ids = NULL;
    size_t cap = 0;
    *n = 0;
    if (!d)
        return NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        if (strlen(de->d_name) != 20 || strcmp(de->d_name + 16, ".seg") != 0)
            continue;
        unsigned long long id = strtoull(de->d_name, &end, 16);
        if (end != de->d_name + 16 || id > UINT32_MAX)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        ids[(*n)++] = (uint32_t)id;
    }
    closedir(d);
    if (*n)
        qsort(ids, *n, sizeof *ids, cmp_u32);
    return ids;
}

static int check_version(store *s, char *err, size_t errlen) {
    char path[600];
    snprintf(path, sizeof path, "%s/VERSION", s->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[128] = "";
        if (!fgets(line, sizeof line, f))
            line[0] = 0;
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, STORE_VERSION) != 0) {
            snprintf(err, errlen,
                     "data directory %s has format '%s', this ferryd reads '%s'; refusing to touch it", s->dir,
                     line, STORE_VERSION);
            return -1;
        }
        return 0;
    }
    char metap[600];
    snprintf(metap, sizeof metap, "%s/meta.log", s->dir);
    struct stat st;
    if (stat(metap, &st) == 0 || stat(s->segdir, &st) == 0) {
        snprintf(err, errlen, "data directory %s has store files but no VERSION; refusing to touch it", s->dir);
        return -1;
    }
    sio_file *vf = sio_open(path, 1);
    int rc = vf ? sio_pwrite(vf, STORE_VERSION "\n", strlen(STORE_VERSION) + 1, 0) : -errno;
    if (!rc)
        rc = sio_sync(vf);
    if (vf)
        sio_close(vf);
    if (!rc)
        rc = sio_sync_dir(s->dir);
    if (rc) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        return -1;
    }
    return 0;
}

static void recover_messages(store *s, recovery *rc) {
    size_t nids;
    uint32_t *ids = list_segments(s->segdir, &nids);
    for (size_t k = 0; k < nids; k++) {
        char path[700];
        seg_path(s, ids[k], path, sizeof path);
        uint8_t *data;
        size_t len;
        if (read_file(path, &data, &len) < 0) {
            log_error("store: cannot read %s: %s", path, strerror(errno));
            continue;
        }
        rc->base = data;
        size_t end = scan(rc, path, data, len, k + 1 == nids, apply_record, ids[k]);
        rc->base = NULL;
        free(data);
        if (end < len && k + 1 == nids) { /* cut the torn tail so appends continue cleanly */
            sio_file *f = sio_open(path, 0);
            if (f) {
                sio_truncate(f, end);
                sio_sync(f);
                sio_close(f);
            }
        }
        add_seg(s, ids[k], end);
        s->segs[s->nsegs - 1].live += rc->pinned; /* never reclaimed */
        rc->pinned = 0;
    }
    s->next_seg = nids ? ids[nids - 1] + 1 : 1;
    free(ids);
    /* Rebuild each queue in order; count what is live in each segment. */
    uint64_t now_wall = wall_ms(), now_mono = now_ms();
    for (uint32_t qid = 0; qid < rc->nqid; qid++) {
        queue *q = rc->byqid[qid];
        rvec *v = &rc->vecs[qid];
        if (!q) {
            free(v->a);
            continue;
        }
        for (size_t i = 0; i < v->n; i++) {
            qmsg qm = v->a[i];
            if (!qm.m)
                continue;
            seg *sg = find_seg(s, qmsg_seg(&qm));
            if (sg)
                sg->live += qm.paged ? 2 : 1; /* a paged copy holds its segment once more */
            int64_t ttl = q->message_ttl, mttl = qm.paged ? -1 : qm.m->ttl;
            if (mttl >= 0 && (ttl < 0 || mttl < ttl))
                ttl = mttl;
            if (ttl >= 0) {
                uint64_t due = qm.expires_at + (uint64_t)ttl;
                qm.expires_at = due > now_wall ? now_mono + (due - now_wall) : 1;
            } else {
                qm.expires_at = 0;
            }
            /* Each delivery before the restart ended in a return (explicit, or the crash). */
            if (q->delivery_limit >= 0)
                qm.returns = qm.deliveries;
            queue_recover(q, qm);
            rc->messages++;
        }
        if (v->n || v->max_seq)
            q->next_seq = MAX(q->next_seq, v->max_seq + 1);
        free(v->a);
    }
}

static int damaged_copy_exists(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    while (d && (de = readdir(d)))
        found |= strncmp(de->d_name, "meta.log.damaged-", 17) == 0;
    if (d)
        closedir(d);
    return found;
}

int store_open(broker *b, const char *dir, char *err, size_t errlen) {
    uint64_t t0 = now_ms();
    crc32c(0, "", 0);
    store *s = xcalloc(1, sizeof *s);
    s->b = b;
    s->efd = -1;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->segdir, sizeof s->segdir, "%s/segments", dir);
    if (check_version(s, err, errlen) < 0) {
        free(s);
        return -1;
    }
    if (mkdir(s->segdir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", s->segdir, strerror(errno));
        free(s);
        return -1;
    }
    s->next_qid = 1;
    recovery rc = {.s = s};
    char metap[600];
    snprintf(metap, sizeof metap, "%s/meta.log", dir);
    uint8_t *data;
    size_t len;
    int meta_bad_tail = 0;
    if (read_file(metap, &data, &len) == 0) {
        meta_bad_tail = scan(&rc, metap, data, len, 1, meta_apply, 0) < len;
        free(data);
    }
    /* Compaction would make damage to meta.log permanent (and the queue's messages
     * reclaimable on the next start): a damaged meta.log is kept, renamed, for a person. */
    rc.meta_damaged = rc.corrupt > 0 || meta_bad_tail;
    if (!rc.meta_damaged && damaged_copy_exists(dir)) {
        /* Damage found on an earlier start: keep pinning until a person removes the copy. */
        rc.meta_damaged = 1;
        log_warn("store: %s holds a meta.log.damaged-* copy: messages of unknown queues are kept on disk "
                 "until it is removed", dir);
    } else if (rc.meta_damaged) {
        char keep[700];
        snprintf(keep, sizeof keep, "%s/meta.log.damaged-%llu", dir, (unsigned long long)wall_seconds());
        if (link(metap, keep) == 0)
            log_error("store: meta.log is damaged; a copy is kept as %s, and messages of queues it no "
                      "longer defines stay on disk",
                      keep);
    }
    if (meta_compact(s) < 0) {
        snprintf(err, errlen, "cannot write %s/meta.log: %s", dir, strerror(errno));
        free(s);
        return -1;
    }
    rc.nqid = s->next_qid;
    rc.byqid = xcalloc(rc.nqid, sizeof *rc.byqid);
    rc.vecs = xcalloc(rc.nqid, sizeof *rc.vecs);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->queues, &i, &e)) {
        queue *q = e->val;
        if (q->qid && q->qid < rc.nqid)
            rc.byqid[q->qid] = q;
    }
    recover_messages(s, &rc);
    size_t ndelayed = restore_delayed(s, &rc);
    if (ndelayed)
        log_info("store: recovered %zu delayed messages", ndelayed);
    if (rc.orphans)
        log_error("store: %llu messages belong to queues missing from meta.log; their segments are kept",
                  (unsigned long long)rc.orphans);
    if (rc.max_qid >= s->next_qid)
        s->next_qid = rc.max_qid + 1;
    free(rc.byqid);
    free(rc.vecs);
    add_seg(s, s->next_seg++, 0); /* new writes start a fresh segment */
    s->pending = batch_new();
    s->gen_next = 1;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (s->efd < 0 || pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the store writer: %s", strerror(errno));
        return -1;
    }
    s->io.fn = on_synced;
    loop_add(b->loop, s->efd, EPOLLIN, &s->io);
    b->store = s;
    reclaim(s);
    log_info("store: recovered %llu messages in %zu queues from %zu segments in %llu ms (%llu records, %llu corrupt)",
             (unsigned long long)rc.messages, b->queues.count, s->nsegs - 1, (unsigned long long)(now_ms() - t0),
             (unsigned long long)rc.records, (unsigned long long)rc.corrupt);
    return 0;
}

/* Writes what is pending, waits for the writer, and stops it. */
void store_close(store *s) {
    if (!s)
        return;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int busy = s->todo != NULL;
        pthread_mutex_unlock(&s->mu);
        if (!busy) {
            if (s->inflight) {
                batch_free(s->inflight);
                s->inflight = NULL;
            }
            if (batch_empty(s->pending))
                break;
            store_kick(s);
            continue;
        }
        usleep(1000);
    }
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    if (s->wfile)
        sio_close(s->wfile);
    if (s->rfile)
        sio_close(s->rfile);
    if (s->meta)
        sio_close(s->meta);
    loop_del(s->b->loop, s->efd);
    close(s->efd);
    batch_free(s->pending);
    free(s->segs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    s->b->store = NULL;
    free(s);
}

/* ---- paging: bodies of deep queues live only in the log ----
 *
 * A queue copy is paged out by pointing it at a record of its message that is written and
 * synced: the PUBLISH record of a persistent message, or a PAGE record (the same layout,
 * no queues; recovery ignores it) written for any other message. Each paged copy holds one
 * live count on its record's segment, so the segment is not reclaimed under it; reading the
 * copy back (or dropping it) gives the count back. The loop thread knows where a record is
 * only once the writer has written its batch (page_synced): until then a message is not
 * paged, and a record in a batch that failed is never pointed at. */

enum { R_PAGE = 40 }; /* a body written only to free memory: recovery ignores it */

/* Remembers that m's record starts at `at` in the last piece of the pending batch. */
static void page_note(store *s, message *m, size_t at) {
    wbatch *w = s->pending;
    if (w->nprecs == w->capprecs) {
        w->capprecs = w->capprecs ? w->capprecs * 2 : 64;
        w->precs = xrealloc(w->precs, w->capprecs * sizeof *w->precs);
    }
    piece *p = &w->pieces[w->npieces - 1];
    w->precs[w->nprecs++] = (precord){message_ref(m), (uint32_t)(w->npieces - 1), (uint32_t)at,
                                      (uint32_t)(p->data.len - at)};
    m->on_disk = 0;
    m->pg_wait = 1;
}

/* A batch came back: its message records are now on disk at known offsets (or, if it
 * failed, not at all: such a message is never paged from that record). */
static void page_synced(store *s, wbatch *w) {
    (void)s;
    for (size_t i = 0; i < w->nprecs; i++) {
        precord *r = &w->precs[i];
        message *m = r->m;
        piece *p = &w->pieces[r->piece];
        uint64_t off = p->off + r->rel;
        if (m->seg != p->seg) /* published again since (redrive): a later record will tell */
            continue;
        if (w->err || off > UINT32_MAX) {
            m->on_disk = 0;
            if (m->in_store)
                m->pg_never = 1;
            continue;
        }
        m->doff = (uint32_t)off;
        m->dlen = r->len;
        m->on_disk = 1;
    }
}

int store_page_out(store *s, message *m, uint64_t *loc, uint32_t *len) {
    if (!s || m->pg_wait || m->pg_never)
        return 0;
    seg *sg = m->on_disk ? find_seg(s, m->seg) : NULL;
    if (sg) {
        sg->live++;
        *loc = (uint64_t)m->seg << 32 | m->doff;
        *len = m->dlen;
        return 1;
    }
    /* No record (or its segment was reclaimed since): write a page-only one, unless the disk
     * is (nearly) full: then bodies stay in memory and the memory alarm does its work. */
    if (s->disk_alarm)
        return 0;
    size_t need = REC_HEADER + 8 + 8 + 2 + 2 + m->exchange_len + m->rkey_len + 4 + m->props_len + 8 + m->body_len;
    buf *b = log_buf(s, need);
    size_t at = rec_begin(b, R_PAGE);
    buf_u64(b, wall_ms());
    buf_u64(b, (uint64_t)m->ttl);
    buf_u16(b, 0);
    buf_shortstr(b, msg_exchange(m), m->exchange_len);
    buf_shortstr(b, msg_rkey(m), m->rkey_len);
    buf_longstr(b, msg_props(m), m->props_len);
    buf_u64(b, m->body_len);
    buf_put(b, msg_body(m), m->body_len);
    rec_end(b, at, active_seg(s)->salt);
    if (!m->in_store)
        m->seg = active_seg(s)->id;
    else
        m->in_store = 0, m->seg = active_seg(s)->id; /* its publish record's segment is gone */
    page_note(s, m, at);
    return 0;
}

void store_page_release(store *s, uint64_t loc) {
    if (!s)
        return;
    seg *sg = find_seg(s, (uint32_t)(loc >> 32));
    if (sg && sg->live)
        sg->live--;
    if (sg == &s->segs[0])
        reclaim(s);
}

/* Rebuilds a message from its PUBLISH or PAGE record (already checked). */
static message *page_decode(uint32_t segid, uint32_t off, const uint8_t *p, size_t n) {
    rd r = rd_make(p + REC_HEADER, n - REC_HEADER);
    uint8_t type = p[12];
    rd_u64(&r);
    int64_t ttl = (int64_t)rd_u64(&r);
    uint16_t nq = rd_u16(&r);
    rd_bytes(&r, (size_t)nq * 12);
    slice ex = rd_shortstr(&r), rk = rd_shortstr(&r), props = rd_longstr(&r);
    uint64_t blen = rd_u64(&r);
    slice body = rd_bytes(&r, blen);
    props_view pv;
    if (r.err || (type != R_PUBLISH && type != R_PAGE) || props_parse(props, &pv) < 0)
        return NULL;
    message *m = message_new(ex, rk, props, blen);
    if (blen)
        memcpy(msg_body(m), body.p, blen);
    m->persistent = pv.delivery_mode == 2;
    m->priority = pv.priority;
    m->ttl = ttl;
    m->seg = segid;
    m->in_store = type == R_PUBLISH;
    m->doff = off;
    m->dlen = (uint32_t)n;
    m->on_disk = 1;
    return m;
}

static int cmp_qmsg_loc(const void *a, const void *b) {
    uint64_t x = (*(qmsg *const *)a)->loc, y = (*(qmsg *const *)b)->loc;
    return x < y ? -1 : x > y;
}

#define PAGE_READ_MAX (4u << 20) /* one pread covers neighbouring records up to this much */

void store_page_read(store *s, qmsg **qms, size_t n) {
    qmsg **v = xmalloc(n * sizeof *v);
    memcpy(v, qms, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_qmsg_loc);
    uint8_t *data = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n;) {
        uint32_t segid = (uint32_t)(v[i]->loc >> 32);
        uint64_t start = (uint32_t)v[i]->loc, end = start + pg_size_decode(v[i]->pg_size);
        size_t j = i + 1;
        while (j < n && (uint32_t)(v[j]->loc >> 32) == segid && (uint32_t)v[j]->loc >= start &&
               (uint32_t)v[j]->loc + pg_size_decode(v[j]->pg_size) - start <= PAGE_READ_MAX &&
               (uint32_t)v[j]->loc <= end + 65536) {
            end = MAX(end, (uint32_t)v[j]->loc + pg_size_decode(v[j]->pg_size));
            j++;
        }
        ssize_t got = -EIO;
        if (!s->rfile || s->rseg != segid) {
            if (s->rfile)
                sio_close(s->rfile);
            char path[700];
            seg_path(s, segid, path, sizeof path);
            s->rfile = sio_open(path, 0);
            s->rseg = segid;
            s->rsalt = 0;
            if (!s->rfile) {
                got = -errno;
            } else { /* the checksums' salt, from the file's own headers */
                uint8_t hdr[2 * HEADER_SIZE];
                ssize_t h = sio_pread(s->rfile, hdr, sizeof hdr, 0);
                s->rsalt = h > 0 ? read_salt(hdr, (size_t)h) : 0;
            }
        }
        if (end - start > cap) {
            cap = end - start;
            data = xrealloc(data, cap);
        }
        if (s->rfile && s->rsalt)
            got = sio_pread(s->rfile, data, end - start, start);
        for (size_t k = i; k < j; k++) {
            qmsg *qm = v[k];
            uint64_t off = (uint32_t)qm->loc, rel = off - start;
            message *m = NULL;
            /* pg_size is an upper bound: the record's header gives its length */
            size_t len = got > 0 && rel < (uint64_t)got
                             ? rec_check(data + rel, (size_t)MIN(pg_size_decode(qm->pg_size), (uint64_t)got - rel), s->rsalt)
                             : 0;
            if (len)
                m = page_decode(segid, (uint32_t)off, data + rel, len);
            if (!m) {
                log_error("store: cannot read back a paged message (segment %08x offset %llu, %u bytes): %s; "
                          "its record is kept on disk",
                          segid, (unsigned long long)off, (unsigned)pg_size_decode(qm->pg_size), got < 0 ? strerror((int)-got) : "bad record");
                qm->paged = PAGED_UNREADABLE;
                continue;
            }
            store_page_release(s, qm->loc);
            qm->m = m;
            qm->paged = PAGED_NO;
        }
        i = j;
    }
    if (s->rfile) { /* a segment may be reclaimed at any time: do not keep it open */
        sio_close(s->rfile);
        s->rfile = NULL;
    }
    free(data);
    free(v);
}
