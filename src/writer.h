/* writer.h — group commit, and the store's helper threads.
 *
 * Group commit: the loop thread appends message records to the pending batch (a list of
 * pieces, each a run of records for one segment); when the writer thread is idle the batch is
 * handed over, and the writer appends every piece to its segment, fdatasyncs, makes new files
 * durable in the directory, deletes the segments the batch says are reclaimed, and signals an
 * eventfd. Everything appended while one fsync ran goes into the next. The loop thread then
 * hears the result through the done callback (the broker confirms the batch's publishes, or
 * nacks them if it failed).
 *
 * Helper jobs: a general queue of blocking work (a meta.log fsync, reading paged bodies back)
 * run in order on one helper thread; each job's done callback then runs on the loop thread. */
#ifndef FERRY_WRITER_H
#define FERRY_WRITER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "loop.h"
#include "message.h"
#include "segment.h"
#include "storeio.h"

typedef struct piece { /* a run of records for one segment */
    uint32_t seg;
    uint64_t salt; /* the segment's (the writer puts the headers in an empty file) */
    buf data;
    uint64_t off; /* set by the writer: where in the segment it was written */
} piece;

typedef struct precord { /* paging: a message record in this batch, told its place once written */
    message *m;          /* holds a reference */
    uint32_t piece, rel, len;
} precord;

typedef struct wbatch {
    uint64_t gen; /* its group-commit generation, set when handed to the writer */
    piece *pieces;
    size_t npieces, cap;
    uint32_t *unlinks; /* segments to delete once this batch is written */
    size_t nunlinks, capunlinks;
    precord *precs; /* paging: message records, so their offsets are known once written */
    size_t nprecs, capprecs;
    buf meta;     /* meta.log records (definitions), written and synced before the pieces */
    struct swrite *sw; /* streams' records, names and deletions (streamlog.c), after the pieces */
    int meta_err; /* the writer's result for them: 0 or -errno (then err is too) */
    int err; /* the writer's result: 0 or -errno */
} wbatch;

wbatch *wbatch_new(void);
/* Frees a batch, dropping its paging references (their messages are no longer waiting). */
void wbatch_free(wbatch *w);
int wbatch_empty(const wbatch *w);
/* The buffer that the next record of `need` bytes goes to: the active segment's piece of w,
 * rolling the segment set to a new segment first when the active one would pass
 * segment_size. Counts the bytes in the segment (and its headers, for a new one). */
buf *wbatch_append(wbatch *w, segset *ss, uint64_t segment_size, size_t need, buf *spare);
/* Keeps the largest record buffer of a written batch w (emptied) in *spare, for the next
 * batch's first piece, unless *spare already holds one or it is over SPARE_MAX: a batch then
 * starts with room for what the last one held instead of growing to it again. */
void wbatch_keep_spare(wbatch *w, buf *spare);
#define SPARE_MAX (32u << 20)
/* Reclaims what segset_reclaim allows; the files are deleted after w is written. */
void wbatch_reclaim(wbatch *w, segset *ss);

/* The message log as the loop thread sees it: the segment set and the batch being filled. */
typedef struct mlog {
    segset segs;
    wbatch *pending;
    uint64_t segment_size;
    buf spare; /* a written batch's record buffer, emptied, for the next piece (wbatch_keep_spare) */
    char segdir[600];
} mlog;

static inline buf *mlog_append(mlog *l, size_t need) {
    return wbatch_append(l->pending, &l->segs, l->segment_size, need, &l->spare);
}
/* Takes one live count from segment id; reclaims the oldest segments if that freed them. */
static inline void mlog_release(mlog *l, uint32_t id) {
    if (segset_release(&l->segs, id))
        wbatch_reclaim(l->pending, &l->segs);
}
/* Adds one live count to segment id (if it is still there). */
static inline void mlog_hold(mlog *l, uint32_t id) {
    seg *sg = segset_find(&l->segs, id);
    if (sg)
        sg->live++;
}

typedef struct writer {
    char segdir[600];
    loop *loop;
    void (*done)(void *ctx, wbatch *w); /* on the loop thread, with the written batch */
    void *ctx;
    wbatch *inflight; /* handed to the thread, not yet given back (loop thread) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wbatch *todo; /* under mu: the batch the thread is writing */
    int stop;
    int efd;
    io_handler io;
    sio_file *wfile; /* writer-thread owned: the open segment */
    struct meta *mt; /* meta.log: writer-thread owned once the writer runs (batches' meta) */
    uint32_t wseg;
    uint64_t woff;
    uint32_t broken;    /* writer-thread owned: segments up to this id are never written again */
    uint32_t *unlinks;  /* writer-thread owned: segments still to delete, oldest first (a */
    size_t nunlinks, capunlinks; /* failed unlink is retried before any later one) */
} writer;

/* Starts the writer thread; done(ctx, batch) is called on the loop thread for each batch
 * (loop may be NULL: then the owner calls writer_poll). 0, or -errno. */
int writer_start(writer *wr, loop *l, const char *segdir, void (*done)(void *, wbatch *), void *ctx);
/* 1 while no batch is handed over (writer_submit may be called). */
static inline int writer_idle(const writer *wr) { return wr->inflight == NULL; }
/* Hands a non-empty batch to the idle writer. */
void writer_submit(writer *wr, wbatch *w);
/* Gives a finished batch to done (called when the eventfd is readable, or by hand). */
void writer_poll(writer *wr);
/* Waits until the batch in flight is written and returns it without calling done (or NULL
 * if none was in flight); for shutting down. */
wbatch *writer_wait(writer *wr);
/* Stops the thread (nothing may be in flight) and closes its files. */
void writer_stop(writer *wr);
/* Writes one batch on the calling thread (what the writer thread does with each batch). */
int writer_write(writer *wr, wbatch *w);

/* ---- statistics (for /metrics): written by the writer thread with relaxed atomics,
 * read by the loop thread; each array counts observations per bucket (not cumulative) ---- */
#define WSTAT_FSYNC_BUCKETS 12
#define WSTAT_BATCH_BUCKETS 10
typedef struct writer_stats {
    uint64_t fsync[WSTAT_FSYNC_BUCKETS + 1]; /* the last one: above every bound */
    uint64_t fsync_count, fsync_sum_us;
    uint64_t batch[WSTAT_BATCH_BUCKETS + 1];
    uint64_t batch_count, batch_sum_bytes;
} writer_stats;
extern writer_stats wstats;
extern const double wstat_fsync_bounds[WSTAT_FSYNC_BUCKETS]; /* seconds */
extern const double wstat_batch_bounds[WSTAT_BATCH_BUCKETS]; /* bytes */

/* ---- helper jobs ---- */

typedef struct job job;
struct job {
    void (*run)(job *j);  /* on the helper thread: the blocking part */
    void (*done)(job *j); /* then on the loop thread: hands the result back */
    job *next;
};

typedef struct helpers {
    loop *loop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *todo, *todo_tail; /* under mu: waiting to run, in order */
    job *fin, *fin_tail;   /* under mu: run, waiting for done */
    int stop, started;
    int efd;
    io_handler io;
} helpers;

/* Starts the helper thread (loop may be NULL: then the owner calls helpers_poll). 0/-errno. */
int helpers_start(helpers *h, loop *l);
/* Queues a job; its run and then its done are called once each. */
void helpers_submit(helpers *h, job *j);
/* Calls done for every job that has run (loop thread); returns how many. */
size_t helpers_poll(helpers *h);
/* Runs every job still queued, calls their done callbacks, and stops the thread. */
void helpers_stop(helpers *h);

#endif
