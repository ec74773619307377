/* store.h — durable storage as the broker sees it: definitions (meta.log) and the message
 * log (segments).
 *
 * Invariant 1 of DESIGN.md lives here: a persistent message on a durable queue is confirmed
 * only after its record is fsync'ed. Records are appended by the loop thread into a batch;
 * one writer thread writes and fsyncs a whole batch at a time (group commit) and hands the
 * result back through an eventfd; the broker then confirms everything in that batch.
 *
 * This is the store's facade: it turns broker objects into records. The layers under it
 * know records only and never the broker: record.h (framing), segment.h (the segment set),
 * writer.h (group commit, helper jobs), meta.h (meta.log), recover.h (recovery, and the
 * recover_sink the broker implements), paging.h (bodies that live only in the log). */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdint.h>

#include "message.h"
#include "paging.h"
#include "recover.h"

typedef struct store store;
typedef struct broker broker;
typedef struct exchange exchange;
typedef struct queue queue;
typedef struct binding binding;
typedef struct qmsg qmsg;
typedef struct delayed_entry delayed_entry;

/* Opens (creating if empty) the data directory and recovers it into the broker through sink
 * (ctx: b): durable exchanges, queues and bindings, then every unacknowledged persistent
 * message, in order. Sets b->store. Returns 0, or -1 with a message in err (incompatible
 * version, unreadable directory). */
int store_open(broker *b, const recover_sink *sink, const char *dir, char *err, size_t errlen);
void store_close(store *s);

/* Definitions: each returns 0 if there is nothing to store (not durable), or 1: its record
 * is appended to the pending batch and the writer thread syncs it to meta.log before that
 * batch's messages; the broker hears the result through broker_meta_synced(gen, ok) for
 * gen = store_gen() now, and the method's -ok waits for it (chwait.c). A failed sync has
 * cut the record off again. */
int store_exchange(store *s, exchange *x, int add);
int store_queue(store *s, queue *q, int add); /* assigns q->qid when added */
int store_binding(store *s, binding *bd, int add);
/* Appends M_ACCESS records (users, vhosts, permissions; built with store_meta_salt) to the
 * pending batch, taking records; 0 if there is no store or nothing to write, else 1. */
int store_access(store *s, buf *records);
uint64_t store_meta_salt(const store *s);

/* Messages. store_publish writes one record for a message and the durable queues it went to
 * (qids[i] at seqs[i]); the others note what happened to one queue's copy. */
void store_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n);
void store_settle(store *s, const queue *q, const qmsg *qm); /* acked / rejected / expired / dropped */
void store_forget(store *s, const qmsg *qm);                 /* its queue was deleted */
void store_delivered(store *s, const queue *q, const qmsg *qm);

/* Delayed messages (x-delayed-message, x-retry-delays) of persistent messages bound for a
 * durable exchange or queue: held, then done (routed, or dropped). */
void store_delayed(store *s, delayed_entry *e);
void store_delayed_done(store *s, const delayed_entry *e);
/* Counts message records appended: a publish that moved it must wait for the sync. */
uint64_t store_appended(const store *s);

/* Keeps a segment from being reclaimed (a deduplication id still in its window). */
void store_pin(store *s, uint32_t seg);
void store_unpin(store *s, uint32_t seg);

/* Definition records appended so far (a method that moved it waits for their sync). */
uint64_t store_meta_count(const store *s);
/* The generation (group-commit batch) that records appended now belong to. */
uint64_t store_gen(const store *s);
/* Starts writing the records appended so far, if the writer is idle (after each batch). */
void store_kick(store *s);
/* Once a second: disk space, segment reclamation. Returns 1 while the disk alarm is on. */
int store_tick(store *s);

/* Compaction (compact.c decides what moves; see there). store_compact_pick: the id of the
 * oldest segment if it should be compacted now (and *live, its live count), else 0.
 * store_move appends a MOVE record for these live copies of m (all of m's copies that count
 * in its segment), store_move_delayed a new record of a delayed message: the active
 * segment then holds them. store_compact_hold keeps the old segment until the batch holding
 * the moves is synced; store_compact_blocked notes a segment whose live records could not
 * all be found or moved (it is looked at again once its live count changes). */
uint32_t store_compact_pick(store *s, uint64_t *live);
size_t store_move(store *s, message *m, uint64_t published, const uint32_t *qids, const uint64_t *seqs,
                  const uint16_t *deliveries, uint32_t n);
size_t store_move_delayed(store *s, delayed_entry *e);
void store_compact_hold(store *s, uint32_t seg, size_t moved, size_t bytes);
void store_compact_blocked(store *s, uint32_t seg, uint64_t live, uint64_t found, uint64_t immovable);
/* Looks at compaction again at the next store_compact_pick (a read it waited for is in). */
void store_compact_wake(store *s);

/* Paging (queues deeper than memory). store_page_out: 1 if m has a synced record the queue
 * copy can point to (*loc, *len; the copy then holds the segment until store_page_release);
 * 0 if not yet (a page-only record, ignored by recovery, is written for a message without
 * one; try again once it is synced). store_page_read reads n paged copies back (one pread
 * per run of neighbouring records): each becomes PAGED_NO with its message, or
 * PAGED_UNREADABLE (logged; its record is left pinned for recovery). */
int store_page_out(store *s, message *m, uint64_t *loc, uint32_t *len);
void store_page_release(store *s, uint64_t loc);
void store_page_read(store *s, qmsg **qms, size_t n);
/* Reads n paged copies back on the store's helper thread (paging_read_async: reqs is taken,
 * done gets them sorted by location, each m or NULL, and nothing released). -1 if it cannot
 * start (no store, or shutting down): reqs untouched. */
int store_page_read_async(store *s, page_req *reqs, size_t n, void (*done)(void *ctx, page_req *reqs, size_t n),
                          void *ctx);

#endif
