/* store.c — the store's facade, in records only: opening and closing the data directory,
 * the pending batch and the writer's results, message and definition records given their
 * fields (slices, queue ids, sequence numbers, segment ids), compaction's bookkeeping and
 * paging by location. It knows no broker object and includes no broker header: the broker
 * turns its exchanges, queues, bindings and queue entries into these calls (persist.c), and
 * hears back through store_owner (batch results, disk alarm, its definitions for meta.log
 * compaction) and recover_sink (what recovery finds).
 *
 * Layout of the data directory:
 *   VERSION                    "ferry-store 1": anything else is refused, never rewritten
 *   meta.log                   durable exchanges, queues and bindings (compacted at start)
 *   segments/<16 hex>.seg      the message log, in segments of about segment-size bytes
 *   clean-shutdown             written by a clean close, removed (durably) at open
 *
 * Message records: PUBLISH (one per message, naming every durable queue it went to, with
 * that queue's sequence number), SETTLE (a queue's copy is gone: acked, rejected, expired,
 * dropped, purged) and DELIVERED (so that recovery marks it redelivered). Segments are
 * deleted oldest first once every copy published in them is settled, so a drained queue
 * leaves about one segment behind. The broker confirms a batch's publishes only when it
 * comes back synced (store_owner.synced). */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "crc32c.h"
#include "memacct.h"
#include "meta.h"
#include "paging.h"
#include "record.h"
#include "storeio.h"
#include "streamlog.h"
#include "util.h"
#include "writer.h"

struct store {
    store_owner owner;
    uint64_t disk_free_limit;
    char dir[512];
    meta meta;
    mlog log; /* the segment set and the pending batch */
    writer wr;
    pager pg;
    helpers hp;          /* the helper thread: paged bodies read back */
    slogs *streams;      /* streams' own logs (streamlog.c) */
    uint64_t meta_count; /* meta.log records appended (each waits for its batch's sync) */
    uint64_t gen_next;
    int disk_alarm;
    uint64_t enospc_need; /* after ENOSPC: free bytes needed before writing is tried again */
    uint64_t appended;    /* message records appended (publish, delayed) */
    uint64_t next_delay;  /* ids of delayed records */
    uint64_t inflight_bytes; /* record bytes of the batch the writer has (memacct) */
    /* compaction (compact.c drives it) */
    int compact_due;        /* a tick passed, a segment was added or a step is done: look again */
    size_t compact_nsegs;   /* segments when last looked */
    uint32_t blocked_seg;   /* the oldest segment, found not movable at this live count */
    uint64_t blocked_live;
    int write_failed;     /* a batch failed in this run: its delivered records may be lost */
    uint32_t redelivered_upto; /* copies in segments up to this id may have been delivered */
};

static void compact_synced(store *s, uint64_t gen, int err);

/* ---- the writer's results ---- */

/* A batch came back from the writer (loop thread): on failure its bytes are not in their
 * segments and a full disk raises the alarm at once; its publishes are then confirmed (or
 * nacked) and the next batch starts. */
static void on_written(void *ctx, wbatch *w) {
    store *s = ctx;
    uint64_t gen = w->gen;
    int err = w->err;
    if (err) {
        log_error("store: writing the message log failed: %s; publishes in this batch are nacked", strerror(-err));
        uint64_t failed = 0;
        for (size_t i = 0; i < w->npieces; i++) { /* the failed bytes are not in the segment */
            seg *sg = segset_find(&s->log.segs, w->pieces[i].seg);
            if (sg)
                sg->bytes -= MIN(sg->bytes, w->pieces[i].data.len);
            failed += w->pieces[i].data.len;
        }
        if (err == -ENOSPC || err == -EDQUOT) {
            /* Publishers are blocked at once (not at the next tick) and stay blocked until
             * there is room for what failed and more. */
            s->disk_alarm = 1;
            s->enospc_need = failed + (64u << 10);
            s->owner.disk_alarm(s->owner.ctx, 1);
        }
        /* The writer abandons a segment after a failure (writer.c, abandon_segment): new
         * records go to a fresh one. */
        if (segset_active(&s->log.segs)->bytes > 0)
            segset_add(&s->log.segs, s->log.segs.next_id, rec_new_salt(), 0);
        s->write_failed = 1;
    }
    paging_synced(w);
    swrite_done(s->streams, w->sw, err); /* streams' committed offsets move, before confirms */
    if (err)
        swrite_doom(s->streams, s->log.pending->sw);
    int had_meta = w->meta.len > 0, meta_ok = w->meta_err == 0;
    if (wbatch_empty(s->log.pending))
        buf_free(&s->log.spare); /* nothing came meanwhile: an idle log keeps no spare room */
    else
        wbatch_keep_spare(w, &s->log.spare);
    wbatch_free(w);
    s->inflight_bytes = 0;
    compact_synced(s, gen, err);
    if (had_meta) /* declares, binds, deletes waiting for this batch answer first */
        s->owner.meta_synced(s->owner.ctx, gen, meta_ok);
    s->owner.synced(s->owner.ctx, gen, err == 0);
    store_kick(s);
}

/* Bytes of record buffers a batch holds. */
static uint64_t batch_bytes(const wbatch *w) {
    uint64_t n = 0;
    for (size_t i = 0; i < w->npieces; i++)
        n += w->pieces[i].data.cap;
    return n + swrite_bytes(w->sw);
}

void store_kick(store *s) {
    if (!s)
        return;
    /* Records waiting for a slow disk count toward the memory watermark: publishers that do
     * not wait for confirms are blocked rather than growing the batch without bound. */
    memacct_set(MEM_STORE_BATCH, batch_bytes(s->log.pending) + s->inflight_bytes + s->log.spare.cap);
    if (!writer_idle(&s->wr) || wbatch_empty(s->log.pending))
        return;
    wbatch *w = s->log.pending;
    w->gen = s->gen_next++;
    s->log.pending = wbatch_new();
    s->inflight_bytes = batch_bytes(w);
    writer_submit(&s->wr, w);
}

uint64_t store_gen(const store *s) { return s->gen_next; }

slogs *store_streams(store *s) { return s ? s->streams : NULL; }

struct swrite **store_stream_batch(store *s, int append) {
    if (append)
        s->appended++; /* a publish that appended waits for this batch's sync */
    return &s->log.pending->sw;
}

int store_idle(const store *s) { return writer_idle(&s->wr) && wbatch_empty(s->log.pending); }

/* ---- definitions ---- */

static slice sl(const void *p, size_t n) { return (slice){(const uint8_t *)p, n}; }

uint64_t store_meta_salt(const store *s) { return s->meta.salt; }

uint32_t store_new_qid(store *s) { return meta_new_qid(&s->meta); }

/* Appends definition records to the pending batch: the writer thread writes them to
 * meta.log and syncs it before the batch's message records (a full disk raises the alarm
 * when the batch comes back, on_written). The owner's answer waits for meta_synced of
 * store_gen(). */
void store_meta_append(store *s, buf *b) {
    buf_put(&s->log.pending->meta, buf_head(b), b->len);
    buf_free(b);
    s->meta_count++;
}

uint64_t store_meta_count(const store *s) { return s ? s->meta_count : 0; }

/* ---- messages ---- */

uint64_t store_appended(const store *s) { return s ? s->appended : 0; }

static slice msg_ex(const message *m) { return sl(msg_exchange(m), m->exchange_len); }
static slice msg_rk(const message *m) { return sl(msg_rkey(m), m->rkey_len); }
static slice msg_pr(const message *m) { return sl(msg_props(m), m->props_len); }
static slice msg_bd(const message *m) { return sl(msg_body(m), m->body_len); }

/* Appends d's DELAYED record (d->sid set) to the active segment, which then holds it
 * (*seg); returns the record's size. */
static size_t put_delayed(store *s, const rec_delayed *d, uint32_t *segid) {
    buf *b = mlog_append(&s->log, rec_delayed_size(d->exchange.n, d->rkey.n, d->props.n, d->body.n));
    seg *a = segset_active(&s->log.segs);
    size_t at = b->len;
    rec_put_delayed(b, a->salt, d);
    *segid = a->id;
    a->live++;
    a->copies++;
    return b->len - at;
}

uint64_t store_delayed(store *s, rec_delayed *d, uint32_t *segid) {
    d->sid = ++s->next_delay;
    put_delayed(s, d, segid);
    s->appended++;
    return d->sid;
}

void store_delayed_done(store *s, uint64_t sid, uint32_t segid) {
    buf *b = mlog_append(&s->log, REC_DELAYED_DONE_SIZE);
    rec_put_delayed_done(b, segset_active(&s->log.segs)->salt, sid);
    mlog_release(&s->log, segid);
}

uint32_t store_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n) {
    assert(n > 0);
    s->appended++;
    buf *b = mlog_append(&s->log, rec_publish_size((uint32_t)n, m->exchange_len, m->rkey_len, m->props_len, m->body_len));
    seg *a = segset_active(&s->log.segs);
    size_t at = b->len;
    rec_put_publish(b, R_PUBLISH, a->salt, wall_ms(), m->ttl, qids, seqs, (uint32_t)n, msg_ex(m), msg_rk(m), msg_pr(m),
                    msg_bd(m));
    m->seg = a->id;
    m->in_store = 1;
    a->live += (uint64_t)n;
    a->copies += (uint64_t)n;
    paging_note(&s->log, m, at);
    return m->seg;
}

static void copy_record(store *s, uint8_t type, uint32_t qid, uint64_t seq) {
    buf *b = mlog_append(&s->log, REC_COPY_SIZE);
    rec_put_copy(b, type, segset_active(&s->log.segs)->salt, qid, seq);
}

void store_pin(store *s, uint32_t segid) {
    seg *sg = s ? segset_find(&s->log.segs, segid) : NULL;
    if (sg)
        sg->pins++;
}

void store_unpin(store *s, uint32_t segid) {
    seg *sg = s ? segset_find(&s->log.segs, segid) : NULL;
    if (!sg || !sg->pins)
        return;
    if (--sg->pins == 0 && sg == &s->log.segs.a[0])
        wbatch_reclaim(s->log.pending, &s->log.segs);
}

void store_release(store *s, uint32_t segid) { mlog_release(&s->log, segid); }

void store_settle(store *s, uint32_t qid, uint64_t seq, uint32_t segid) {
    copy_record(s, R_SETTLE, qid, seq);
    store_release(s, segid);
}

void store_delivered(store *s, uint32_t qid, uint64_t seq) { copy_record(s, R_DELIVERED, qid, seq); }

int store_tick(store *s) {
    if (!s)
        return 0;
    struct statvfs vfs;
    if (statvfs(s->log.segdir, &vfs) == 0) {
        uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        if (s->enospc_need && free_bytes >= s->enospc_need)
            s->enospc_need = 0;
        int low = free_bytes < s->disk_free_limit || s->enospc_need;
        if (low != s->disk_alarm)
            log_warn("disk alarm %s: %llu bytes free, limit %llu", low ? "set" : "cleared",
                     (unsigned long long)free_bytes, (unsigned long long)s->disk_free_limit);
        s->disk_alarm = low;
    }
    s->compact_due = 1;
    /* A release reclaims at once only when it empties the oldest segment while a later one
     * exists; one emptied while it was still the active segment (its messages consumed as
     * fast as they came) is reclaimed here, once later segments exist. */
    wbatch_reclaim(s->log.pending, &s->log.segs);
    return s->disk_alarm;
}

/* ---- compaction (see compact.c) ---- */

uint32_t store_compact_pick(store *s, uint64_t *live) {
    if (s->log.segs.n != s->compact_nsegs) { /* a segment was added (or reclaimed) */
        s->compact_nsegs = s->log.segs.n;
        s->compact_due = 1;
    }
    if (!s->compact_due)
        return 0;
    s->compact_due = 0;
    seg *sg = segset_compact_pick(&s->log.segs, s->log.segment_size);
    if (!sg || (sg->id == s->blocked_seg && sg->live == s->blocked_live))
        return 0;
    *live = sg->live;
    return sg->id;
}

void store_compact_wake(store *s) { s->compact_due = 1; }

void store_compact_blocked(store *s, uint32_t segid, uint64_t live, uint64_t found, uint64_t immovable) {
    if (segid != s->blocked_seg)
        log_info("store: segment %08x cannot be compacted yet: of its %llu live records %llu are paged-out or "
                 "unreadable copies and %llu are held by something compaction does not move (it waits)",
                 segid, (unsigned long long)live, (unsigned long long)immovable,
                 (unsigned long long)(live > found ? live - found : 0));
    s->blocked_seg = segid;
    s->blocked_live = live;
}

size_t store_move(store *s, message *m, uint64_t published, const uint32_t *qids, const uint64_t *seqs,
                  const uint16_t *deliveries, uint32_t n) {
    uint32_t from = m->seg;
    size_t bytes = 0;
    for (uint32_t i = 0; i < n;) { /* one record names at most 65535 copies */
        uint32_t k = MIN(n - i, UINT16_MAX);
        buf *b = mlog_append(&s->log, rec_move_size(k, m->exchange_len, m->rkey_len, m->props_len, m->body_len));
        seg *a = segset_active(&s->log.segs);
        size_t at = b->len;
        rec_put_move(b, a->salt, published, m->ttl, qids + i, seqs + i, deliveries + i, k, msg_ex(m), msg_rk(m),
                     msg_pr(m), msg_bd(m));
        assert(a->id != from);
        a->live += k;
        a->copies += k;
        m->seg = a->id;
        paging_note(&s->log, m, at); /* where its record is, once written */
        bytes += b->len - at;
        i += k;
    }
    seg *old = segset_find(&s->log.segs, from);
    assert(old && old->live >= n);
    old->live -= n;
    return bytes;
}

size_t store_move_delayed(store *s, const rec_delayed *d, uint32_t *segid) {
    uint32_t from = *segid;
    size_t bytes = put_delayed(s, d, segid);
    seg *old = segset_find(&s->log.segs, from);
    assert(old && old->live > 0 && *segid != from);
    old->live--;
    return bytes;
}

void store_compact_hold(store *s, uint32_t segid, size_t moved, size_t bytes) {
    seg *sg = segset_find(&s->log.segs, segid);
    assert(sg && !sg->hold);
    sg->hold = s->gen_next; /* the batch the moves were appended to */
    log_info("store: compacted segment %08x: %zu live records (%zu bytes) moved to segment %08x, %llu left", segid,
             moved, bytes, segset_active(&s->log.segs)->id, (unsigned long long)sg->live);
}

/* A batch came back: segments whose moves it carried may go once it is synced. If it failed,
 * the moved records may not be on disk: the old segment stays until the next start. */
static void compact_synced(store *s, uint64_t gen, int err) {
    int freed = 0;
    for (size_t i = 0; i < s->log.segs.n; i++) {
        seg *sg = &s->log.segs.a[i];
        if (!sg->hold || sg->hold == SEG_HOLD_FAILED || sg->hold > gen)
            continue;
        if (err) {
            sg->hold = SEG_HOLD_FAILED;
            log_error("store: the batch moving segment %08x's live records failed (%s): the segment is kept and "
                      "compaction stops until the next start",
                      sg->id, strerror(-err));
        } else {
            sg->hold = 0;
            freed = 1;
        }
    }
    if (freed) {
        s->compact_due = 1;
        wbatch_reclaim(s->log.pending, &s->log.segs);
    }
}

/* ---- paging ---- */

int store_page_out(store *s, message *m, uint64_t *loc, uint32_t *len) {
    return s ? paging_out(&s->log, s->disk_alarm, m, loc, len) : 0;
}

void store_page_release(store *s, uint64_t loc) {
    if (s)
        paging_release(&s->log, loc);
}

void store_page_read(store *s, page_req *reqs, size_t n) { paging_read(&s->pg, &s->log, reqs, n); }

int store_page_read_async(store *s, page_req *reqs, size_t n, void (*done)(void *ctx, page_req *reqs, size_t n),
                          void *ctx) {
    return s ? paging_read_async(&s->hp, &s->log, reqs, n, done, ctx) : -1;
}

/* ---- open and close ---- */

/* ---- the clean-shutdown marker ----
 *
 * DELIVERED records are not synced before the delivery (an fsync per delivery would cost
 * too much), so after a crash the log cannot say what was delivered. A clean close writes
 * "clean-shutdown" once everything is synced; open removes it durably before anything is
 * delivered. Without it, every copy in the segments that exist is handed over as possibly
 * delivered (RabbitMQ's redelivered: "may have been delivered"). That bound (a segment id)
 * is carried forward in the marker, so those copies keep the flag across later clean
 * restarts; a run in which a batch failed (its DELIVERED records may be gone) raises it to
 * every segment of the run. */

#define MARKER "clean-shutdown"

/* The bound a clean shutdown left: 1 and *upto, or 0 if the last shutdown was not clean
 * (no marker, or one that cannot be read or is not whole). */
static int marker_read(const char *dir, uint32_t *upto) {
    char path[600], text[64];
    snprintf(path, sizeof path, "%s/" MARKER, dir);
    uint8_t *data;
    size_t len;
    if (rec_read_file(path, &data, &len) < 0)
        return 0;
    snprintf(text, sizeof text, "%.*s", (int)MIN(len, sizeof text - 1), (const char *)data);
    free(data);
    unsigned long v;
    int n = 0;
    if (sscanf(text, "ferry-clean %lu%n", &v, &n) != 1 || (size_t)n + 1 != len || text[n] != '\n' || v > UINT32_MAX)
        return 0;
    *upto = (uint32_t)v;
    return 1;
}

/* Removes the marker durably (a crash from now on must not look clean). 0 or -errno. */
static int marker_remove(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/" MARKER, dir);
    int rc = sio_unlink(path);
    if (rc == -ENOENT)
        return 0;
    return rc < 0 ? rc : sio_sync_dir(dir);
}

/* Writes the marker durably; a failure leaves the next start unclean (logged). */
static void marker_write(const char *dir, uint32_t upto) {
    char path[600], text[64];
    snprintf(path, sizeof path, "%s/" MARKER, dir);
    int n = snprintf(text, sizeof text, "ferry-clean %lu\n", (unsigned long)upto);
    sio_file *f = sio_open(path, 1);
    int rc = f ? sio_pwrite(f, text, (size_t)n, 0) : -errno;
    if (!rc)
        rc = sio_sync(f);
    if (f)
        sio_close(f);
    if (!rc)
        rc = sio_sync_dir(dir);
    if (rc)
        log_warn("store: cannot write %s: %s (the next start marks every message redelivered)", path, strerror(-rc));
}

store *store_open(const store_config *cfg, const store_owner *owner, const recover_sink *sink, const char *dir,
                  store_recovered *info, char *err, size_t errlen) {
    uint64_t t0 = now_ms();
    crc32c(0, "", 0);
    store *s = xcalloc(1, sizeof *s);
    s->owner = *owner;
    s->disk_free_limit = cfg->disk_free_limit;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->log.segdir, sizeof s->log.segdir, "%s/segments", dir);
    s->log.segment_size = cfg->segment_size;
    if (meta_check_version(dir, err, errlen) < 0) {
        free(s);
        return NULL;
    }
    int rc = sio_mkdir(s->log.segdir);
    if (!rc) /* its name in the data directory is durable too */
        rc = sio_sync_dir(dir);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", s->log.segdir, strerror(-rc));
        free(s);
        return NULL;
    }
    int clean = marker_read(dir, &s->redelivered_upto);
    if ((rc = marker_remove(dir)) < 0) {
        snprintf(err, errlen, "cannot remove %s/" MARKER ": %s", dir, strerror(-rc));
        free(s);
        return NULL;
    }
    int meta_damaged = meta_load(&s->meta, dir, &sink->defs, owner->ctx);
    if (meta_damaged < 0) {
        snprintf(err, errlen, "cannot read %s/meta.log: %s", dir, strerror(-meta_damaged));
        meta_close(&s->meta);
        free(s);
        return NULL;
    }
    rc = meta_compact(&s->meta, owner->emit_definitions, owner->ctx);
    if (rc < 0) {
        snprintf(err, errlen, "cannot write %s/meta.log: %s", dir, strerror(-rc));
        meta_close(&s->meta);
        free(s);
        return NULL;
    }
    recover_stats st = {.corrupt = s->meta.corrupt, .redelivered_upto = clean ? s->redelivered_upto : UINT32_MAX};
    rc = recover_messages(&s->log.segs, s->log.segdir, cfg->memory_budget, meta_damaged, sink, owner->ctx, &st);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read the message log in %s: %s", s->log.segdir, strerror(-rc));
        meta_close(&s->meta);
        segset_free(&s->log.segs);
        free(s);
        return NULL;
    }
    if (!clean) { /* everything there now may have been delivered, from now on too */
        s->redelivered_upto = s->log.segs.next_id - 1;
        if (st.messages)
            log_warn("store: the last shutdown was not clean: the %llu recovered messages are marked redelivered",
                     (unsigned long long)st.messages);
    }
    if (st.delayed)
        log_info("store: recovered %llu delayed messages", (unsigned long long)st.delayed);
    if (st.orphans)
        log_error("store: %llu messages belong to queues missing from meta.log; their segments are kept",
                  (unsigned long long)st.orphans);
    meta_saw_qid(&s->meta, st.max_qid);
    s->next_delay = st.max_delay;
    segset_add(&s->log.segs, s->log.segs.next_id, rec_new_salt(), 0); /* new writes start a fresh segment */
    s->log.pending = wbatch_new();
    s->gen_next = 1;
    s->wr.mt = &s->meta; /* from here on, only the writer thread appends to meta.log */
    rc = writer_start(&s->wr, cfg->loop, s->log.segdir, on_written, s);
    if (rc == 0 && (rc = helpers_start(&s->hp, cfg->loop)) < 0)
        writer_stop(&s->wr);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start the store writer: %s", strerror(-rc));
        wbatch_free(s->log.pending);
        meta_close(&s->meta);
        segset_free(&s->log.segs);
        free(s);
        return NULL;
    }
    wbatch_reclaim(s->log.pending, &s->log.segs);
    s->streams = slogs_new(dir, cfg->loop);
    *info = (store_recovered){.messages = st.messages, .records = st.records, .corrupt = st.corrupt,
                              .segments = s->log.segs.n - 1, .ms = now_ms() - t0};
    return s;
}

/* Writes what is pending, waits for the writer, and stops it. */
void store_close(store *s) {
    if (!s)
        return;
    helpers_stop(&s->hp); /* reads in flight hand their messages back first */
    slogs_stop(s->streams); /* so do stream reads */
    for (;;) {
        wbatch *w = writer_wait(&s->wr);
        if (w) {
            s->write_failed |= w->err != 0;
            wbatch_free(w);
        }
        if (wbatch_empty(s->log.pending))
            break;
        store_kick(s);
    }
    writer_stop(&s->wr);
    marker_write(s->dir, s->write_failed ? segset_active(&s->log.segs)->id : s->redelivered_upto);
    paging_close(&s->pg);
    meta_close(&s->meta);
    wbatch_free(s->log.pending);
    buf_free(&s->log.spare);
    segset_free(&s->log.segs);
    slogs_free(s->streams);
    free(s);
}
