/* compact.c — compaction of the message log: live records move out of the oldest segment so
 * that one long-unacknowledged message cannot pin every segment after it.
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
 *     whole live count; if anything holds S that it cannot see (a paged-out body, an
 *     unreadable record, a holder it does not know), it does nothing.
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
 * Not moved (S then waits): copies paged out to S (their bodies are only on disk),
 * unreadable records, segments pinned by a deduplication window (until the window passes)
 * or by messages of queues missing from a damaged meta.log. */
#include "broker.h"

#include <stdlib.h>

#include "store.h"
#include "util.h"

typedef struct found { /* a live queue copy of an in-memory message in the segment */
    message *m;
    queue *q;
    uint64_t seq;
    uint64_t expires_at; /* monotonic ms; 0 = never */
    uint16_t deliveries;
} found;

typedef struct scan {
    uint32_t seg;
    uint64_t counted;   /* live counts of the segment accounted for */
    uint64_t immovable; /* of which held by copies this cannot move (paged out, unreadable) */
    found *a;
    size_t n, cap;
    delayed_entry **d;
    size_t nd, capd;
} scan;

/* Notes one queue copy: counts what it holds on the segment being compacted. */
static void see(scan *sc, queue *q, const qmsg *qm) {
    if (qm->paged) {
        /* a paged copy holds its record's segment once, and once more if it is stored */
        if ((uint32_t)(qm->loc >> 32) == sc->seg) {
            sc->counted += 1u + qm->stored;
            sc->immovable += 1u + qm->stored;
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
static void find_live(broker *b, scan *sc) {
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->queues, &i, &e))
        queue_each_ready(e->val, see_ready, sc);
    for (conn *c = b->conns; c; c = c->next) {
        for (uint32_t k = 0; k < c->nchans; k++) {
            channel *ch = c->chans[k];
            if (!ch)
                continue;
            uring *r = &ch->unacked;
            for (size_t j = 0; j < r->len; j++) {
                unacked *u = &r->a[(r->head + j) & (r->cap - 1)];
                if (!u->done)
                    see(sc, u->q, &u->qm);
            }
        }
    }
    delayed_each(b, see_delayed, sc);
}

void compact_run(broker *b) {
    store *s = b->store;
    uint64_t live;
    uint32_t segid = s ? store_compact_pick(s, &live) : 0;
    if (!segid)
        return;
    scan sc = {.seg = segid};
    find_live(b, &sc);
    if (sc.counted != live || sc.immovable) {
        store_compact_blocked(s, segid, live, sc.counted, sc.immovable);
    } else {
        /* Every copy of a message in the segment moves in one record: the message's segment
         * is shared by its copies. */
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
            bytes += store_move_delayed(s, sc.d[i]);
        store_compact_hold(s, segid, moved, bytes);
        free(qids);
        free(seqs);
        free(dels);
        store_kick(s);
    }
    free(sc.a);
    free(sc.d);
}
