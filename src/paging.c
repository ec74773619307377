/* paging.c — paging queue bodies out to the log and reading them back (see paging.h). Loop
 * thread only, but for the blocking part of an asynchronous read (page_job_run), which runs
 * on the helper thread and touches nothing but its job. */
#include "paging.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "util.h"

void paging_note(mlog *l, message *m, size_t at) {
    wbatch *w = l->pending;
    if (w->nprecs == w->capprecs) {
        w->capprecs = w->capprecs ? w->capprecs * 2 : 64;
        w->precs = xrealloc(w->precs, w->capprecs * sizeof *w->precs);
    }
    piece *p = &w->pieces[w->npieces - 1];
    w->precs[w->nprecs++] =
        (precord){message_ref(m), (uint32_t)(w->npieces - 1), (uint32_t)at, (uint32_t)(p->data.len - at)};
    m->on_disk = 0;
    m->pg_wait = 1;
}

void paging_synced(wbatch *w) {
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

int paging_out(mlog *l, int disk_alarm, message *m, uint64_t *loc, uint32_t *len) {
    if (m->pg_wait || m->pg_never)
        return 0;
    seg *sg = m->on_disk ? segset_find(&l->segs, m->seg) : NULL;
    if (sg) {
        sg->live++;
        *loc = (uint64_t)m->seg << 32 | m->doff;
        *len = m->dlen;
        return 1;
    }
    /* No record (or its segment was reclaimed since): write a page-only one, unless the disk
     * is (nearly) full: then bodies stay in memory and the memory alarm does its work. */
    if (disk_alarm)
        return 0;
    slice ex = {(const uint8_t *)msg_exchange(m), m->exchange_len}, rk = {(const uint8_t *)msg_rkey(m), m->rkey_len};
    slice props = {msg_props(m), m->props_len}, body = {msg_body(m), m->body_len};
    buf *b = mlog_append(l, rec_publish_size(0, ex.n, rk.n, props.n, body.n));
    size_t at = b->len;
    seg *a = segset_active(&l->segs);
    rec_put_publish(b, R_PAGE, a->salt, wall_ms(), m->ttl, NULL, NULL, 0, ex, rk, props, body);
    m->in_store = 0; /* if it had a publish record, that record's segment is gone */
    m->seg = a->id;
    paging_note(l, m, at);
    return 0;
}

/* Rebuilds a message from its PUBLISH or PAGE record (already checked). */
static message *page_decode(uint32_t segid, uint32_t off, const uint8_t *p, size_t n) {
    rec_publish r;
    props_view pv;
    if (rec_publish_read(p, n, &r) < 0 || props_parse(r.props, &pv) < 0)
        return NULL;
    message *m = message_new(r.exchange, r.rkey, r.props, r.body.n);
    if (r.body.n)
        memcpy(msg_body(m), r.body.p, r.body.n);
    m->persistent = pv.delivery_mode == 2;
    m->priority = pv.priority;
    m->ttl = r.ttl;
    m->seg = segid;
    m->in_store = rec_is_publish(rec_type(p));
    m->doff = off;
    m->dlen = (uint32_t)n;
    m->on_disk = 1;
    return m;
}

static int cmp_req_loc(const void *a, const void *b) {
    uint64_t x = ((const page_req *)a)->loc, y = ((const page_req *)b)->loc;
    return x < y ? -1 : x > y;
}

#define PAGE_READ_MAX (4u << 20) /* one pread covers neighbouring records up to this much */

void paging_read(pager *pg, mlog *l, page_req *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_req_loc);
    uint8_t *data = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n;) {
        uint32_t segid = (uint32_t)(v[i].loc >> 32);
        uint64_t start = (uint32_t)v[i].loc, end = start + v[i].size;
        size_t j = i + 1;
        while (j < n && (uint32_t)(v[j].loc >> 32) == segid && (uint32_t)v[j].loc >= start &&
               (uint32_t)v[j].loc + (uint64_t)v[j].size - start <= PAGE_READ_MAX &&
               (uint32_t)v[j].loc <= end + 65536) {
            end = MAX(end, (uint32_t)v[j].loc + (uint64_t)v[j].size);
            j++;
        }
        ssize_t got = -EIO;
        if (!pg->rfile || pg->rseg != segid) {
            if (pg->rfile)
                sio_close(pg->rfile);
            char path[700];
            seg_path(l->segdir, segid, path, sizeof path);
            pg->rfile = sio_open(path, 0);
            pg->rseg = segid;
            pg->rsalt = 0;
            if (!pg->rfile) {
                got = -errno;
            } else { /* the checksums' salt, from the file's own headers */
                uint8_t hdr[2 * REC_FILE_HEADER];
                ssize_t h = sio_pread(pg->rfile, hdr, sizeof hdr, 0);
                pg->rsalt = h > 0 ? rec_read_salt(hdr, (size_t)h) : 0;
            }
        }
        if (end - start > cap) {
            cap = end - start;
            data = xrealloc(data, cap);
        }
        if (pg->rfile && pg->rsalt)
            got = sio_pread(pg->rfile, data, end - start, start);
        for (size_t k = i; k < j; k++) {
            page_req *r = &v[k];
            uint64_t off = (uint32_t)r->loc, rel = off - start;
            /* size is an upper bound: the record's header gives its length */
            size_t len = got > 0 && rel < (uint64_t)got
                             ? rec_check(data + rel, (size_t)MIN((uint64_t)r->size, (uint64_t)got - rel), pg->rsalt)
                             : 0;
            r->m = len ? page_decode(segid, (uint32_t)off, data + rel, len) : NULL;
            if (!r->m) {
                log_error("store: cannot read back a paged message (segment %08x offset %llu, %u bytes): %s; "
                          "its record is kept on disk",
                          segid, (unsigned long long)off, (unsigned)r->size,
                          got < 0 ? strerror((int)-got) : "bad record");
                continue;
            }
            paging_release(l, r->loc);
        }
        i = j;
    }
    paging_close(pg); /* a segment may be reclaimed at any time: do not keep it open */
    free(data);
}

void paging_close(pager *pg) {
    if (pg->rfile)
        sio_close(pg->rfile);
    pg->rfile = NULL;
}

/* ---- reading back on the helper thread ---- */

typedef struct page_job {
    job j;
    char segdir[600];
    page_req *reqs; /* sorted by location */
    size_t n;
    struct page_got {
        const uint8_t *p; /* the checked record, in one of bufs; NULL if unreadable */
        size_t len;
        int err; /* why not: -errno, or 0 (a bad record) */
    } *got;
    uint8_t **bufs; /* one per pread */
    size_t nbufs;
    void (*done)(void *ctx, page_req *reqs, size_t n);
    void *ctx;
} page_job;

/* Helper thread: one pread per run of neighbouring records, each record checked against its
 * segment's salt. */
static void page_job_run(job *jb) {
    page_job *pj = (page_job *)jb;
    page_req *v = pj->reqs;
    size_t n = pj->n;
    pj->bufs = xcalloc(n, sizeof *pj->bufs);
    sio_file *f = NULL;
    uint32_t fseg = 0;
    uint64_t salt = 0;
    int ferr = 0;
    for (size_t i = 0; i < n;) {
        uint32_t segid = (uint32_t)(v[i].loc >> 32);
        uint64_t start = (uint32_t)v[i].loc, end = start + v[i].size;
        size_t j = i + 1;
        while (j < n && (uint32_t)(v[j].loc >> 32) == segid &&
               (uint32_t)v[j].loc + (uint64_t)v[j].size - start <= PAGE_READ_MAX && (uint32_t)v[j].loc <= end + 65536) {
            end = MAX(end, (uint32_t)v[j].loc + (uint64_t)v[j].size);
            j++;
        }
        if (!f || fseg != segid) {
            if (f)
                sio_close(f);
            char path[700];
            seg_path(pj->segdir, segid, path, sizeof path);
            f = sio_open(path, 0);
            fseg = segid;
            salt = 0;
            ferr = f ? 0 : -errno;
            if (f) { /* the checksums' salt, from the file's own headers */
                uint8_t hdr[2 * REC_FILE_HEADER];
                ssize_t h = sio_pread(f, hdr, sizeof hdr, 0);
                salt = h > 0 ? rec_read_salt(hdr, (size_t)h) : 0;
            }
        }
        ssize_t got = ferr ? ferr : -EIO;
        uint8_t *data = NULL;
        if (f && salt) {
            data = pj->bufs[pj->nbufs++] = xmalloc(end - start);
            got = sio_pread(f, data, end - start, start);
        }
        for (size_t k = i; k < j; k++) {
            uint64_t rel = (uint32_t)v[k].loc - start;
            size_t len = got > 0 && rel < (uint64_t)got
                             ? rec_check(data + rel, (size_t)MIN((uint64_t)v[k].size, (uint64_t)got - rel), salt)
                             : 0;
            pj->got[k] = (struct page_got){len ? data + rel : NULL, len, got < 0 ? (int)got : 0};
        }
        i = j;
    }
    if (f) /* a segment may be reclaimed at any time: do not keep it open */
        sio_close(f);
}

/* Loop thread: the messages are built, the caller told, the job freed. */
static void page_job_done(job *jb) {
    page_job *pj = (page_job *)jb;
    for (size_t k = 0; k < pj->n; k++) {
        page_req *r = &pj->reqs[k];
        struct page_got *g = &pj->got[k];
        uint32_t segid = (uint32_t)(r->loc >> 32), off = (uint32_t)r->loc;
        r->m = g->p ? page_decode(segid, off, g->p, g->len) : NULL;
        if (!r->m)
            log_error("store: cannot read back a paged message (segment %08x offset %u, %u bytes): %s; "
                      "its record is kept on disk",
                      segid, off, (unsigned)r->size, g->err < 0 ? strerror(-g->err) : "bad record");
    }
    pj->done(pj->ctx, pj->reqs, pj->n);
    for (size_t i = 0; i < pj->nbufs; i++)
        free(pj->bufs[i]);
    free(pj->bufs);
    free(pj->got);
    free(pj->reqs);
    free(pj);
}

int paging_read_async(helpers *h, const mlog *l, page_req *reqs, size_t n,
                      void (*done)(void *ctx, page_req *reqs, size_t n), void *ctx) {
    if (h->stop || !h->started)
        return -1;
    assert(n > 0);
    qsort(reqs, n, sizeof *reqs, cmp_req_loc);
    page_job *pj = xcalloc(1, sizeof *pj);
    pj->j.run = page_job_run;
    pj->j.done = page_job_done;
    snprintf(pj->segdir, sizeof pj->segdir, "%s", l->segdir);
    pj->reqs = reqs;
    pj->n = n;
    pj->got = xcalloc(n, sizeof *pj->got);
    pj->done = done;
    pj->ctx = ctx;
    helpers_submit(h, &pj->j);
    return 0;
}
