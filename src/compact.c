/* compact.c — compaction of the message log: live records move out of the oldest segment so
 * that one long-unacknowledged message cannot pin every segment after it.
 *
 * This file is broker-side, not part of the store: finding what is live means walking the
 * broker's queues, channels and delayed heap, so it includes broker.h and drives the store
 * through its record-level calls (store_compact_pick, store_move, store_compact_hold, ...;
 * persist_move_delayed for delayed entries). The store layer itself knows no broker object.
 *
 * Why the oldest, and only the oldest. Segments are deleted oldest first because a SETTLE
 * record must outlive the PUBLISH record it cancels: deleting a segment in the middle would
 * drop settles of copies published in older segments, and recovery would bring them back.
 * Compaction keeps that rule. It empties the oldest segment S by writing a MOVE record for
 * each of its live messages into the active segment, then lets the ordinary reclamation
 * delete S (and every dead segment behind it) once nothing in S is live. A MOVE record is a
 * PUBLISH record (same layout, original publish time and TTL) that names only the copies
 * still live, followed by each copy's delivery count, so a delivered message keeps its
 * delivered state (recovery sets redelivered). Delayed messages in S are moved the same way
 * (a DELAYED record with the same id).
 *
 * When (store_compact_pick, segment.c): when the non-active segments hold more than
 * COMPACT_FACTOR x their live data + COMPACT_FEW segments, the oldest is compacted. Live
 * data is counted per segment as its bytes x (live copies / copies written to it), so a
 * segment whose one copy in a thousand is live counts a thousandth of its bytes. Each step
 * moves at most COMPACT_STEP bytes and one step is in flight at a time.
 *
 * Crash safety, step by step:
 *  1. The loop thread finds S's live items (this file: every queue's ready entries, every
 *     channel's unacked deliveries, the delayed heap) and checks that they account for S's
 *     whole live count; if anything holds S that it cannot see (an unreadable record, a
 *     holder it does not know), it does nothing.
 *  2. It appends the MOVE records to the pending batch, in log order: a SETTLE or DELIVERED
 *     appended later always follows the MOVE in the log. The moved messages now count in
 *     the active segment, and S is held (not reclaimable) until that batch is synced.
 *  3. The writer writes and fsyncs the batch (group commit, off the loop thread).
 *  4. Synced: S's hold goes; reclamation deletes S in a later batch (after the MOVE records
 *     are durable). A failed batch keeps the hold until the next start (S's records are the
 *     durable ones): nothing is lost, compaction stops.
 *  A crash between 2 and 4 leaves both copies: recovery keeps the first it meets (the same
 *  queue and sequence number is one copy, never two) and takes the higher delivery count;
 *  a copy whose PUBLISH is gone comes from its MOVE. A settled copy is never in a MOVE (it
 *  is not live when the MOVE is appended), and its SETTLE follows any MOVE that named it.
 *
 * Paged-out copies (their bodies only on disk, in S) are first read back on the store's
 * helper thread (read_back; the loop thread never reads the disk); a copy still paged where
 * it was then takes its message, and the next step moves it like any other; the pager pages
 * it out again once the MOVE is written, pointing at the new record.
 *
 * Not moved (S then waits): unreadable records, segments pinned by a deduplication window
 * (until the window passes) or by messages of queues missing from a damaged meta.log, and
 * any live count the walk cannot account for (a holder it does not know).
 *
 * Cost: each step walks every queue entry and unacknowledged delivery once (on the loop
 * thread), so it runs only when the log is over the bound, at most once a second or per
 * finished step. */
#include "broker.h"

#include <stdlib.h>

#include "paging.h"
#include "persist.h"
#include "util.h"

typedef struct found { /* a live queue copy of an in-memory message in the segment */
    message *m;
    queue *q;
    uint64_t seq;
    uint64_t expires_at; /* monotonic ms; 0 = never */
    uint16_t deliveries;
} found;

typedef struct paged { /* a paged-out copy whose record is in the segment */
    queue *q;
    uint64_t seq, loc;
    uint32_t size;
} paged;

typedef struct scan {
    uint32_t seg;
    uint64_t counted;   /* live counts of the segment accounted for */
    uint64_t immovable; /* of which held by unreadable copies (never moved) */
    found *a;
    size_t n, cap;
    paged *p; /* read back first (then moved as the others) */
    size_t np, capp;
    uint64_t pbytes;
    delayed_entry **d;
    size_t nd, capd;
    uint64_t walked; /* entries looked at */
} scan;

/* Notes one queue copy: counts what it holds on the segment being compacted. */
static void see(scan *sc, queue *q, const qmsg *qm) {
    sc->walked++;
    if (qm->paged) {
        /* a paged copy holds its record's segment once, and once more if it is stored */
        if ((uint32_t)(qm->loc >> 32) != sc->seg)
            return;
        sc->counted += 1u + qm->stored;
        if (qm->paged == PAGED_UNREADABLE) {
            sc->immovable += 1u + qm->stored;
        } else if (sc->pbytes < COMPACT_STEP) {
            if (sc->np == sc->capp) {
                sc->capp = sc->capp ? sc->capp * 2 : 64;
                sc->p = xrealloc(sc->p, sc->capp * sizeof *sc->p);
            }
            uint32_t size = (uint32_t)MIN(pg_size_decode(qm->pg_size), UINT32_MAX);
            sc->p[sc->np++] = (paged){q, qm->seq, qm->loc, size};
            sc->pbytes += size;
        }
        return;
    }
    if (!qm->stored || qm->m->seg != sc->seg)
        return;
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 64;
        sc->a = xrealloc(sc->a, sc->cap * sizeof *sc->a);
    }
    sc->a[sc->n++] = (found){qm->m, q, qm->seq, qm->expires_at, qm->deliveries};
    sc->counted++;
}

static void see_ready(void *ctx, queue *q, qmsg *qm) { see(ctx, q, qm); }

static void see_delayed(void *ctx, delayed_entry *e) {
    scan *sc = ctx;
    if (!e->sid || e->seg != sc->seg)
        return;
    if (sc->nd == sc->capd) {
        sc->capd = sc->capd ? sc->capd * 2 : 16;
        sc->d = xrealloc(sc->d, sc->capd * sizeof *sc->d);
    }
    sc->d[sc->nd++] = e;
    sc->counted++;
}

static int by_message(const void *x, const void *y) {
    const found *a = x, *b = y;
    uintptr_t p = (uintptr_t)a->m, q = (uintptr_t)b->m;
    if (p != q)
        return p < q ? -1 : 1;
    return a->q->qid < b->q->qid ? -1 : a->q->qid > b->q->qid;
}

/* The publish time (wall ms) a MOVE record carries, so that a TTL still counts from the
 * original publish after a restart: worked back from a copy's expiry and the TTL recovery
 * will apply (the queue's x-message-ttl or the message's expiration, the lower); the time of
 * the move if no copy has one. */
static uint64_t publish_time(const found *f, size_t n) {
    uint64_t wall = wall_ms(), mono = now_ms();
    for (size_t i = 0; i < n; i++) {
        int64_t ttl = f[i].q->message_ttl, mttl = f[i].m->ttl;
        if (mttl >= 0 && (ttl < 0 || mttl < ttl))
            ttl = mttl;
        if (f[i].expires_at <= 1 || ttl < 0)
            continue;
        uint64_t due = f[i].expires_at >= mono ? wall + (f[i].expires_at - mono) : wall - MIN(wall, mono - f[i].expires_at);
        return due > (uint64_t)ttl ? due - (uint64_t)ttl : 0;
    }
    return wall;
}

/* Finds everything live in segment seg: ready entries of every queue, unacknowledged
 * deliveries of every channel, delayed messages. */
static void find_live_queue(void *ctx, queue *q) { queue_each_ready(q, see_ready, ctx); }

static void find_live(broker *b, scan *sc) {
    broker_each_queue(b, find_live_queue, sc);
    for (conn *c = b->conns; c; c = c->next) {
        for (uint32_t k = 0; k < c->nchans; k++) {
            channel *ch = c->chans[k];
            if (!ch)
                continue;
            uring *r = &ch->unacked;
            for (size_t j = 0; j < r->len; j++) {
                unacked *u = &r->a[(r->head + j) & (r->cap - 1)];
                if (!u->done && !u->q->is_stream) /* a stream's entry is an offset: no record here */
                    see(sc, u->q, &u->qm);
            }
        }
    }
    delayed_each(b, see_delayed, sc);
}

typedef struct readback { /* paged copies being read back for compaction */
    broker *b;
    paged *p; /* each holds a reference to its queue */
    size_t n;
} readback;

/* The bodies came back (loop thread): each copy still paged where it was takes its message
 * (in memory now, it is moved by the next step); then compaction goes on. */
static void read_back(void *ctx, page_req *reqs, size_t n) {
    readback *rb = ctx;
    broker *b = rb->b;
    for (size_t i = 0; i < n; i++) {
        paged *pc = reqs[i].tag;
        message *m = reqs[i].m;
        if (!m)
            continue; /* unreadable (logged): the queue finds out when it reads it */
        if (m->in_store)
            m->pg_wait = 1; /* not paged again to this record: the move's batch clears it */
        else
            m->on_disk = 0; /* a PAGE record: paged again, it gets a new one at the head */
        if (!queue_paged_back(pc->q, pc->seq, pc->loc, m))
            message_unref(m);
    }
    for (size_t i = 0; i < rb->n; i++)
        queue_unref(rb->p[i].q);
    free(rb->p);
    free(rb);
    b->compact_reading = 0;
    if (b->store) {
        store_compact_wake(b->store);
        compact_run(b);
    }
}

/* Starts reading back the paged copies found in the segment (at most COMPACT_STEP bytes),
 * on the store's helper thread. */
static void start_read_back(broker *b, scan *sc) {
    readback *rb = xmalloc(sizeof *rb);
    rb->b = b;
    rb->p = sc->p;
    rb->n = sc->np;
    sc->p = NULL;
    page_req *reqs = xmalloc(rb->n * sizeof *reqs);
    for (size_t i = 0; i < rb->n; i++) {
        reqs[i] = (page_req){rb->p[i].loc, rb->p[i].size, NULL, &rb->p[i]};
        rb->p[i].q->refs++;
    }
    if (store_page_read_async(b->store, reqs, rb->n, read_back, rb) < 0) {
        for (size_t i = 0; i < rb->n; i++)
            queue_unref(rb->p[i].q);
        free(reqs);
        free(rb->p);
        free(rb);
        return;
    }
    b->compact_reading = 1;
}

void compact_run(broker *b) {
    store *s = b->store;
    uint64_t live;
    uint32_t segid = s && !b->stopping ? store_compact_pick(s, &live) : 0;
    if (!segid)
        return;
    scan sc = {.seg = segid};
    uint64_t t0 = now_us();
    find_live(b, &sc);
    uint64_t took = now_us() - t0;
    if (took > 5000) /* the walk runs on the loop thread: say when it costs */
        log_info("compaction: finding segment %08x's live records walked %llu queue entries in %llu ms", segid,
                 (unsigned long long)sc.walked, (unsigned long long)(took / 1000));
    if (sc.counted != live || sc.immovable) {
        store_compact_blocked(s, segid, live, sc.counted, sc.immovable);
    } else {
        if (sc.np && !b->compact_reading)
            start_read_back(b, &sc);
        /* Every copy of a message in the segment moves in one record: the message's segment
         * is shared by its copies. */
        if (sc.n)
            qsort(sc.a, sc.n, sizeof *sc.a, by_message);
        uint32_t *qids = xmalloc((sc.n + 1) * sizeof *qids);
        uint64_t *seqs = xmalloc((sc.n + 1) * sizeof *seqs);
        uint16_t *dels = xmalloc((sc.n + 1) * sizeof *dels);
        size_t bytes = 0, moved = 0;
        for (size_t i = 0; i < sc.n && bytes < COMPACT_STEP;) {
            size_t j = i;
            for (; j < sc.n && sc.a[j].m == sc.a[i].m; j++) {
                qids[j - i] = sc.a[j].q->qid;
                seqs[j - i] = sc.a[j].seq;
                dels[j - i] = sc.a[j].deliveries;
            }
            bytes += store_move(s, sc.a[i].m, publish_time(sc.a + i, j - i), qids, seqs, dels, (uint32_t)(j - i));
            moved += j - i;
            i = j;
        }
        for (size_t i = 0; i < sc.nd && bytes < COMPACT_STEP; i++, moved++)
            bytes += persist_move_delayed(s, sc.d[i]);
        if (moved)
            store_compact_hold(s, segid, moved, bytes);
        free(qids);
        free(seqs);
        free(dels);
        store_kick(s);
    }
    free(sc.a);
    free(sc.d);
    free(sc.p);
}
