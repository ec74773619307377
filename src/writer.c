/* writer.c — the group-commit writer thread, the pending batch, and the helper-job thread
 * (see writer.h). The loop thread owns the pending batch and the segment set; the writer
 * thread owns the open segment file; `todo` (under mu) is the only thing they share. */
#include "writer.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "meta.h"
#include "record.h"
#include "streamlog.h"
#include "util.h"

/* ---- batches ---- */

wbatch *wbatch_new(void) { return xcalloc(1, sizeof(wbatch)); }

void wbatch_free(wbatch *w) {
    for (size_t i = 0; i < w->nprecs; i++) {
        w->precs[i].m->pg_wait = 0;
        message_unref(w->precs[i].m);
    }
    free(w->precs);
    for (size_t i = 0; i < w->npieces; i++)
        buf_free(&w->pieces[i].data);
    free(w->pieces);
    free(w->unlinks);
    buf_free(&w->meta);
    swrite_free(w->sw);
    free(w);
}

int wbatch_empty(const wbatch *w) { return w->npieces == 0 && w->nunlinks == 0 && w->meta.len == 0 && swrite_empty(w->sw); }

buf *wbatch_append(wbatch *w, segset *ss, uint64_t segment_size, size_t need, buf *spare) {
    seg *a = segset_active(ss);
    if (a->bytes > 0 && a->bytes + need > segment_size)
        a = segset_add(ss, ss->next_id, rec_new_salt(), 0);
    if (!w->npieces || w->pieces[w->npieces - 1].seg != a->id) {
        if (w->npieces == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4;
            w->pieces = xrealloc(w->pieces, w->cap * sizeof *w->pieces);
        }
        w->pieces[w->npieces].seg = a->id;
        w->pieces[w->npieces].salt = a->salt;
        w->pieces[w->npieces].off = 0;
        w->pieces[w->npieces].data = *spare; /* (empty, with or without room) */
        buf_init(spare);
        w->npieces++;
    }
    buf *b = &w->pieces[w->npieces - 1].data;
    if (a->bytes == 0)
        a->bytes = 2 * REC_FILE_HEADER; /* written by the writer (writer_write) */
    a->bytes += need;
    return b;
}

void wbatch_keep_spare(wbatch *w, buf *spare) {
    if (spare->cap)
        return;
    piece *best = NULL;
    for (size_t i = 0; i < w->npieces; i++)
        if (w->pieces[i].data.cap <= SPARE_MAX && (!best || w->pieces[i].data.cap > best->data.cap))
            best = &w->pieces[i];
    if (!best)
        return;
    *spare = best->data;
    spare->off = spare->len = 0;
    buf_init(&best->data);
}

void wbatch_reclaim(wbatch *w, segset *ss) { segset_reclaim(ss, &w->unlinks, &w->nunlinks, &w->capunlinks); }

/* ---- the writer thread ---- */

/* Deletes the segments reclaimed so far, oldest first. One that cannot be deleted stops the
 * rest until a later batch deletes it: a segment must never outlive a later one, or the
 * settle records there of the copies published in it are gone while they come back. */
static void delete_segments(writer *wr, const wbatch *w) {
    for (size_t i = 0; i < w->nunlinks; i++) {
        if (wr->nunlinks == wr->capunlinks) {
            wr->capunlinks = wr->capunlinks ? wr->capunlinks * 2 : 16;
            wr->unlinks = xrealloc(wr->unlinks, wr->capunlinks * sizeof *wr->unlinks);
        }
        wr->unlinks[wr->nunlinks++] = w->unlinks[i];
    }
    size_t k = 0;
    for (; k < wr->nunlinks; k++) {
        if (wr->wfile && wr->unlinks[k] == wr->wseg)
            continue;
        char path[700];
        seg_path(wr->segdir, wr->unlinks[k], path, sizeof path);
        int err = sio_unlink(path);
        if (err && err != -ENOENT) {
            log_warn("store: cannot delete %s: %s (retried with the next batch)", path, strerror(-err));
            break;
        }
    }
    if (k) {
        memmove(wr->unlinks, wr->unlinks + k, (wr->nunlinks - k) * sizeof *wr->unlinks);
        wr->nunlinks -= k;
    }
}

/* A write, truncate or sync of the open segment failed: what reached the disk is unknown
 * (a failed fdatasync may have dropped any of the unsynced writes, and a later one that
 * succeeds says nothing about them: PostgreSQL's fsyncgate). The segment is closed and never
 * written again — later records go to a new segment (the loop thread rolls to one,
 * on_written), and pieces already batched for it fail too — so that "this file was synced"
 * keeps meaning "all of it is on disk", and its headers or earlier records can never have
 * been lost under records confirmed later. Rolling costs a segment; stopping (PostgreSQL
 * panics) would cost every publisher. */
static void abandon_segment(writer *wr) {
    if (wr->wseg > wr->broken)
        wr->broken = wr->wseg;
    sio_close(wr->wfile);
    wr->wfile = NULL;
}

writer_stats wstats;
const double wstat_fsync_bounds[WSTAT_FSYNC_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                       0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
const double wstat_batch_bounds[WSTAT_BATCH_BUCKETS] = {512, 1024, 4096, 16384, 65536, 262144, 1048576,
                                                       4194304, 16777216, 67108864};

static void stat_add(uint64_t *buckets, const double *bounds, int n, double v) {
    int k = 0;
    while (k < n && v > bounds[k])
        k++;
    __atomic_fetch_add(&buckets[k], 1, __ATOMIC_RELAXED);
}

/* Writes one batch: its meta.log records appended and synced, every piece appended to its
 * segment, each file synced, new files made durable in the directory, then the segments no
 * longer needed deleted. A failed write abandons its segment (abandon_segment). */
int writer_write(writer *wr, wbatch *w) {
    int dirty_dir = 0, err = 0;
    /* Definitions first, so that a PUBLISH in this batch never reaches the disk without the
     * queue it names; if they fail, nothing else in the batch is written (all nacked). */
    if (w->meta.len && wr->mt)
        err = w->meta_err = meta_append(wr->mt, &w->meta);
    for (size_t i = 0; i < w->npieces && !err; i++) {
        piece *p = &w->pieces[i];
        if (p->seg <= wr->broken) {
            err = -EIO; /* batched for a segment abandoned after a failure */
            break;
        }
        if (!wr->wfile || p->seg != wr->wseg) {
            if (wr->wfile) {
                err = sio_sync(wr->wfile);
                if (err) {
                    abandon_segment(wr);
                    break;
                }
                sio_close(wr->wfile);
                wr->wfile = NULL;
            }
            char path[700];
            seg_path(wr->segdir, p->seg, path, sizeof path);
            wr->wfile = sio_open(path, 1);
            if (!wr->wfile) {
                err = -errno;
                if (p->seg > wr->broken) /* it may exist now, or not: never used again */
                    wr->broken = p->seg;
                break;
            }
            int64_t size = sio_size(wr->wfile);
            wr->wseg = p->seg;
            wr->woff = size > 0 ? (uint64_t)size : 0;
            dirty_dir = 1;
        }
        if (wr->woff == 0) {
            /* An empty segment (new, or cut back after a failed first write) starts with its
             * headers; the writer puts them there so that no failure can leave them out. */
            buf h;
            buf_init(&h);
            rec_put_headers(&h, p->salt);
            err = sio_pwrite(wr->wfile, buf_head(&h), h.len, 0);
            if (!err)
                wr->woff = h.len;
            buf_free(&h);
        }
        if (!err)
            err = sio_pwrite(wr->wfile, buf_head(&p->data), p->data.len, wr->woff);
        p->off = wr->woff; /* where its records are (paging), if it was written */
        if (err) {
            sio_truncate(wr->wfile, wr->woff);
            abandon_segment(wr);
            break;
        }
        wr->woff += p->data.len;
    }
    if (!err && wr->wfile) {
        uint64_t t0 = now_us();
        err = sio_sync(wr->wfile);
        uint64_t us = now_us() - t0;
        stat_add(wstats.fsync, wstat_fsync_bounds, WSTAT_FSYNC_BUCKETS, (double)us / 1e6);
        __atomic_fetch_add(&wstats.fsync_count, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&wstats.fsync_sum_us, us, __ATOMIC_RELAXED);
        if (err < 0)
            abandon_segment(wr);
    }
    {
        uint64_t bytes = w->meta.len;
        for (size_t i = 0; i < w->npieces; i++)
            bytes += w->pieces[i].data.len;
        stat_add(wstats.batch, wstat_batch_bounds, WSTAT_BATCH_BUCKETS, (double)bytes);
        __atomic_fetch_add(&wstats.batch_count, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&wstats.batch_sum_bytes, bytes, __ATOMIC_RELAXED);
    }
    if (!err && dirty_dir && (err = sio_sync_dir(wr->segdir)) < 0 && wr->wfile)
        abandon_segment(wr); /* its name may not survive a power cut: nothing more goes in it */
    if (!err && w->sw) /* streams: their own files, each synced (streamlog.c) */
        err = swrite_run(w->sw);
    delete_segments(wr, w);
    return err;
}

static void wake(int efd) {
    uint64_t one = 1;
    if (write(efd, &one, sizeof one) < 0) {
        /* the counter cannot overflow: at most one batch is in flight */
    }
}

static void *writer_main(void *arg) {
    writer *wr = arg;
    for (;;) {
        pthread_mutex_lock(&wr->mu);
        while (!wr->todo && !wr->stop)
            pthread_cond_wait(&wr->cv, &wr->mu);
        wbatch *w = wr->todo;
        int stop = wr->stop;
        pthread_mutex_unlock(&wr->mu);
        if (!w && stop)
            return NULL;
        w->err = writer_write(wr, w);
        pthread_mutex_lock(&wr->mu);
        wr->todo = NULL;
        pthread_cond_broadcast(&wr->cv);
        pthread_mutex_unlock(&wr->mu);
        wake(wr->efd);
    }
}

static void on_written(io_handler *h, uint32_t events) {
    (void)events;
    writer *wr = (writer *)((char *)h - offsetof(writer, io));
    uint64_t v;
    if (read(wr->efd, &v, sizeof v) < 0)
        return;
    writer_poll(wr);
}

int writer_start(writer *wr, loop *l, const char *segdir, void (*done)(void *, wbatch *), void *ctx) {
    snprintf(wr->segdir, sizeof wr->segdir, "%s", segdir);
    wr->loop = l;
    wr->done = done;
    wr->ctx = ctx;
    wr->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wr->efd < 0)
        return -errno;
    pthread_mutex_init(&wr->mu, NULL);
    pthread_cond_init(&wr->cv, NULL);
    int rc = pthread_create(&wr->thread, NULL, writer_main, wr);
    if (rc != 0) {
        close(wr->efd);
        wr->efd = -1;
        pthread_mutex_destroy(&wr->mu);
        pthread_cond_destroy(&wr->cv);
        return -rc;
    }
    wr->io.fn = on_written;
    if (l)
        loop_add(l, wr->efd, EPOLLIN, &wr->io);
    return 0;
}

void writer_submit(writer *wr, wbatch *w) {
    assert(writer_idle(wr) && !wbatch_empty(w));
    wr->inflight = w;
    pthread_mutex_lock(&wr->mu);
    wr->todo = w;
    pthread_cond_signal(&wr->cv);
    pthread_mutex_unlock(&wr->mu);
}

void writer_poll(writer *wr) {
    wbatch *w = wr->inflight;
    if (!w)
        return;
    pthread_mutex_lock(&wr->mu);
    int done = wr->todo == NULL;
    pthread_mutex_unlock(&wr->mu);
    if (!done)
        return;
    wr->inflight = NULL;
    wr->done(wr->ctx, w);
}

wbatch *writer_wait(writer *wr) {
    pthread_mutex_lock(&wr->mu);
    while (wr->todo)
        pthread_cond_wait(&wr->cv, &wr->mu);
    pthread_mutex_unlock(&wr->mu);
    wbatch *w = wr->inflight;
    wr->inflight = NULL;
    return w;
}

void writer_stop(writer *wr) {
    assert(!wr->inflight);
    pthread_mutex_lock(&wr->mu);
    wr->stop = 1;
    pthread_cond_signal(&wr->cv);
    pthread_mutex_unlock(&wr->mu);
    pthread_join(wr->thread, NULL);
    if (wr->wfile)
        sio_close(wr->wfile);
    wr->wfile = NULL;
    free(wr->unlinks); /* not deleted: the next recovery finds them fully settled */
    wr->unlinks = NULL;
    wr->nunlinks = wr->capunlinks = 0;
    if (wr->loop)
        loop_del(wr->loop, wr->efd);
    close(wr->efd);
    wr->efd = -1;
    pthread_mutex_destroy(&wr->mu);
    pthread_cond_destroy(&wr->cv);
}

/* ---- helper jobs ---- */

static void *helpers_main(void *arg) {
    helpers *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->todo && !h->stop)
            pthread_cond_wait(&h->cv, &h->mu);
        job *j = h->todo;
        if (!j)
            break; /* stopping, and nothing left to run */
        h->todo = j->next;
        if (!h->todo)
            h->todo_tail = NULL;
        pthread_mutex_unlock(&h->mu);
        j->run(j);
        j->next = NULL;
        pthread_mutex_lock(&h->mu);
        if (h->fin_tail)
            h->fin_tail->next = j;
        else
            h->fin = j;
        h->fin_tail = j;
        wake(h->efd);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void on_jobs_done(io_handler *io, uint32_t events) {
    (void)events;
    helpers *h = (helpers *)((char *)io - offsetof(helpers, io));
    uint64_t v;
    if (read(h->efd, &v, sizeof v) < 0)
        return;
    helpers_poll(h);
}

int helpers_start(helpers *h, loop *l) {
    h->loop = l;
    h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->efd < 0)
        return -errno;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    int rc = pthread_create(&h->thread, NULL, helpers_main, h);
    if (rc != 0) {
        close(h->efd);
        h->efd = -1;
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        return -rc;
    }
    h->started = 1;
    h->io.fn = on_jobs_done;
    if (l)
        loop_add(l, h->efd, EPOLLIN, &h->io);
    return 0;
}

void helpers_submit(helpers *h, job *j) {
    assert(h->started && !h->stop);
    j->next = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->todo_tail)
        h->todo_tail->next = j;
    else
        h->todo = j;
    h->todo_tail = j;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

size_t helpers_poll(helpers *h) {
    pthread_mutex_lock(&h->mu);
    job *j = h->fin;
    h->fin = h->fin_tail = NULL;
    pthread_mutex_unlock(&h->mu);
    size_t n = 0;
    while (j) {
        job *next = j->next; /* done may free the job */
        j->done(j);
        j = next;
        n++;
    }
    return n;
}

void helpers_stop(helpers *h) {
    if (!h->started)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL); /* it runs what is queued first */
    helpers_poll(h);
    if (h->loop)
        loop_del(h->loop, h->efd);
    close(h->efd);
    h->efd = -1;
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    h->started = 0;
}
