/* store.h — durable storage in records: definitions (meta.log) and the message log
 * (segments). The store knows records, never broker objects: it includes no broker header
 * (tests/unit/check_layers.py checks it), and the broker's side of it is persist.c.
 * Layering: base <- store (records) <- broker (persist.c, compact.c) <- protocol.
 *
 * Invariant 1 of ARCHITECTURE.md lives here: a persistent message on a durable queue is confirmed
 * only after its record is fsync'ed. Records are appended by the loop thread into a batch;
 * one writer thread writes and fsyncs a whole batch at a time (group commit) and hands the
 * result back through an eventfd; the owner (the broker) then confirms everything in that
 * batch.
 *
 * This is the store's facade. The layers under it: record.h (framing), segment.h (the
 * segment set), writer.h (group commit, helper jobs), meta.h (meta.log), recover.h
 * (recovery, and the recover_sink the broker implements), paging.h (bodies that live only in
 * the log). The store reaches its owner only through store_owner and recover_sink. */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdint.h>

#include "buf.h"
#include "loop.h"
#include "message.h"
#include "paging.h"
#include "recover.h"

typedef struct store store;
struct rec_delayed; /* record.h */

/* What the store tells its owner (on the loop thread); ctx is passed back. */
typedef struct store_owner {
    void *ctx;
    /* The batch of generation gen came back: written and synced (ok) or not. */
    void (*synced)(void *ctx, uint64_t gen, int ok);
    /* The batch of generation gen held definition records: synced to meta.log (ok) or not
     * (then they were cut off again). Called before synced for the same batch. */
    void (*meta_synced)(void *ctx, uint64_t gen, int ok);
    /* A write failed for lack of space: the disk alarm is on at once (store_tick clears it). */
    void (*disk_alarm)(void *ctx, int on);
    /* Writes the owner's current durable definitions (meta_put_*; meta.log compaction). */
    void (*emit_definitions)(void *ctx, buf *out, uint64_t salt);
} store_owner;

typedef struct store_config {
    uint64_t segment_size;    /* bytes per segment (about) */
    uint64_t memory_budget;   /* message memory above which recovery leaves copies paged */
    uint64_t disk_free_limit; /* free bytes below which the disk alarm is on */
    loop *loop;               /* the writer's and helpers' results come back through it */
} store_config;

/* What store_open recovered (for the owner's log line). */
typedef struct store_recovered {
    uint64_t messages, records, corrupt;
    size_t segments; /* on disk before this run's first */
    uint64_t ms;     /* how long opening took */
} store_recovered;

/* Opens (creating if empty) the data directory and recovers it through sink (ctx:
 * owner->ctx): definitions, then every unacknowledged persistent message, in order.
 * Returns the store, or NULL with a message in err (incompatible version, unreadable
 * directory). */
store *store_open(const store_config *cfg, const store_owner *owner, const recover_sink *sink, const char *dir,
                  store_recovered *info, char *err, size_t errlen);
/* Writes what is pending, waits for the writer and stops it; frees s. */
void store_close(store *s);

/* Definitions. store_meta_append appends definition records (built with
 * store_meta_salt) to the pending batch and frees b: the writer thread syncs them to
 * meta.log before that batch's messages; the owner hears the result through meta_synced for
 * gen = store_gen() now. store_new_qid: the id of a new durable queue (never reused). */
uint64_t store_meta_salt(const store *s);
uint32_t store_new_qid(store *s);
void store_meta_append(store *s, buf *b);
/* Definition records appended so far (a method that moved it waits for their sync). */
uint64_t store_meta_count(const store *s);

/* Messages. store_publish writes one record for m and the durable queues it went to
 * (qids[i] at seqs[i]); m->seg is then the segment holding it (returned). */
uint32_t store_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n);
/* A queue's copy (qid, seq) is gone (acked, rejected, expired, dropped): a SETTLE record, and
 * the copy's live count on seg is given back. */
void store_settle(store *s, uint32_t qid, uint64_t seq, uint32_t seg);
/* A copy's live count on seg is given back, with no record (its queue was deleted). */
void store_release(store *s, uint32_t seg);
/* A DELIVERED record for copy (qid, seq). */
void store_delivered(store *s, uint32_t qid, uint64_t seq);

/* Delayed messages: store_delayed appends a DELAYED record of d (d->sid is assigned and
 * returned) to the active segment, which then holds it (*seg); store_delayed_done appends
 * its DELAYED_DONE and gives seg's count back. */
uint64_t store_delayed(store *s, struct rec_delayed *d, uint32_t *seg);
void store_delayed_done(store *s, uint64_t sid, uint32_t seg);
/* Counts message records appended: a publish that moved it must wait for the sync. */
uint64_t store_appended(const store *s);

/* Keeps a segment from being reclaimed (a deduplication id still in its window). */
void store_pin(store *s, uint32_t seg);
void store_unpin(store *s, uint32_t seg);

/* The generation (group-commit batch) that records appended now belong to. */
uint64_t store_gen(const store *s);
/* Nothing is being written and nothing waits to be: no generation will be synced until
 * something is appended (whoever waits for one now waits for nothing). */
int store_idle(const store *s);
/* Streams (streamlog.h): the store's stream set, and the pending batch's stream part (append:
 * the caller appends a record, so a publish made now waits for this batch like a PUBLISH). */
struct slogs *store_streams(store *s);
struct swrite **store_stream_batch(store *s, int append);
/* Starts writing the records appended so far, if the writer is idle (after each batch). */
void store_kick(store *s);
/* Once a second: disk space, segment reclamation. Returns 1 while the disk alarm is on. */
int store_tick(store *s);

/* Compaction (compact.c, on the broker's side, decides what moves). store_compact_pick: the
 * id of the oldest segment if it should be compacted now (and *live, its live count), else
 * 0. store_move appends a MOVE record for these live copies of m (all of m's copies that
 * count in its segment), store_move_delayed a new DELAYED record of d (same sid) held in
 * segment *seg: the active segment then holds them (*seg is updated). store_compact_hold
 * keeps the old segment until the batch holding the moves is synced; store_compact_blocked
 * notes a segment whose live records could not all be found or moved (it is looked at again
 * once its live count changes). */
uint32_t store_compact_pick(store *s, uint64_t *live);
size_t store_move(store *s, message *m, uint64_t published, const uint32_t *qids, const uint64_t *seqs,
                  const uint16_t *deliveries, uint32_t n);
size_t store_move_delayed(store *s, const struct rec_delayed *d, uint32_t *seg);
void store_compact_hold(store *s, uint32_t seg, size_t moved, size_t bytes);
void store_compact_blocked(store *s, uint32_t seg, uint64_t live, uint64_t found, uint64_t immovable);
/* Looks at compaction again at the next store_compact_pick (a read it waited for is in). */
void store_compact_wake(store *s);

/* Paging (queues deeper than memory). store_page_out: 1 if m has a synced record a queue
 * copy can point to (*loc, *len; the copy then holds the segment until store_page_release);
 * 0 if not yet (a page-only record, ignored by recovery, is written for a message without
 * one; try again once it is synced). store_page_read reads n paged copies back
 * (paging_read: one pread per run of neighbouring records; each read is released, reqs are
 * reordered by location, each m set or NULL if unreadable, logged, its record left pinned
 * for recovery). */
int store_page_out(store *s, message *m, uint64_t *loc, uint32_t *len);
void store_page_release(store *s, uint64_t loc);
void store_page_read(store *s, page_req *reqs, size_t n);
/* Reads n paged copies back on the store's helper thread (paging_read_async: reqs is taken,
 * done gets them sorted by location, each m or NULL, and nothing released). -1 if it cannot
 * start (no store, or shutting down): reqs untouched. */
int store_page_read_async(store *s, page_req *reqs, size_t n, void (*done)(void *ctx, page_req *reqs, size_t n),
                          void *ctx);

#endif
