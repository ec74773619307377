/* persist.h — the broker's side of the store: turns broker objects (exchanges, queues,
 * bindings, queue entries, delayed entries) into store records (store.h), decides what is
 * durable, and implements the store_owner through which the store answers (batch results,
 * the disk alarm, the current definitions for meta.log compaction).
 *
 * Layering: base <- store (records; knows no broker object) <- broker (this file is its side
 * of the store) <- protocol. The store includes no broker header; this file may. */
#ifndef FERRY_PERSIST_H
#define FERRY_PERSIST_H

#include <stdint.h>

#include "broker.h"
#include "store.h"

/* Opens the store in b->cfg.data_dir and recovers it into the broker through sink (ctx: b):
 * durable exchanges, queues and bindings, then every unacknowledged persistent message, in
 * order. Sets b->store. Returns 0, or -1 with a message in err. */
int persist_open(broker *b, const recover_sink *sink, char *err, size_t errlen);
/* Writes what is pending, stops the store and clears b->store. */
void persist_close(broker *b);

/* Definitions: each returns 0 if there is nothing to store (no store, not durable), or 1:
 * its record is appended to the pending batch and the writer thread syncs it to meta.log
 * before that batch's messages; the broker hears the result through broker_meta_synced(gen,
 * ok) for gen = store_gen() now, and the method's -ok waits for it (chwait.c). A failed
 * sync has cut the record off again. */
int persist_exchange(store *s, exchange *x, int add);
int persist_queue(store *s, queue *q, int add); /* assigns q->qid when added */
int persist_binding(store *s, binding *bd, int add);

/* Messages. persist_publish writes one record for a message and the durable queues it went
 * to (qids[i] at seqs[i]); the others note what happened to one queue's copy (nothing for a
 * copy without a record). */
void persist_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n);
void persist_settle(store *s, const queue *q, const qmsg *qm); /* acked / rejected / expired / dropped */
void persist_forget(store *s, const qmsg *qm);                 /* its queue was deleted */
void persist_delivered(store *s, const queue *q, const qmsg *qm);

/* Delayed messages (x-delayed-message, x-retry-delays) of persistent messages bound for a
 * durable exchange or queue: held (e->sid, e->seg set), then done (routed, or dropped). */
void persist_delayed(store *s, delayed_entry *e);
void persist_delayed_done(store *s, const delayed_entry *e);
/* Compaction: a new record of a delayed message in the active segment (e->seg moves). */
size_t persist_move_delayed(store *s, delayed_entry *e);

/* Reads n paged queue copies back in the loop thread: each becomes PAGED_NO with its
 * message, or PAGED_UNREADABLE (logged; its record is left pinned for recovery). */
void persist_page_read(store *s, qmsg **qms, size_t n);

#endif
