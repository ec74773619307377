/* recover.h — recovery of the message log at start, and the interface through which the
 * store hands what it finds to the broker.
 *
 * The store knows records, not broker objects: definitions (from meta.log, meta.h) and
 * messages (from the segments) go to a recover_sink that the broker implements (broker.c);
 * the broker builds its exchanges, queues and bindings and is the one writer of its maps.
 * Recovery replays every segment in id order (gaps allowed): PUBLISH records give each
 * durable queue its copies, SETTLE records remove them, DELIVERED records count deliveries
 * (redelivered), DELAYED records are delayed messages until their DELAYED_DONE. Each
 * queue's surviving copies are then handed over in sequence order, and each segment's live
 * count is rebuilt from them. */
#ifndef FERRY_RECOVER_H
#define FERRY_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "meta.h"
#include "segment.h"

/* One queue's recovered copy of a message. */
typedef struct rcopy {
    uint64_t seq;
    uint64_t published; /* wall ms (for TTLs across restarts) */
    message *m;         /* the message (a reference the sink may take), or NULL if paged: */
    uint64_t loc;       /* paged: segment << 32 | offset of its record */
    uint32_t reclen;    /* paged: its record's length */
    uint8_t priority;   /* paged: the message's priority */
    uint16_t deliveries; /* DELIVERED records seen for it (saturating) */
    uint8_t maybe_delivered; /* its segment is up to recover_stats.redelivered_upto */
} rcopy;

/* What recovery needs to know about a durable queue the broker defined. */
typedef struct rqueue {
    uint32_t qid;
    void *q;              /* the broker's handle, passed back below */
    int64_t dedup_window; /* x-deduplication-window in ms; 0 = none */
    int pageable;         /* a copy may be recovered paged out (no x-max-length-bytes) */
} rqueue;

typedef struct recover_sink {
    meta_sink defs;
    /* Calls add(rc, &info) for every durable queue now defined (after meta.log is loaded). */
    void (*queues)(void *ctx, void (*add)(void *rc, const rqueue *info), void *rc);
    /* A message-id still in q's deduplication window, accepted at monotonic ms `at`, with
     * its record in segment seg (which stays on disk while it is in the window). */
    void (*dedup)(void *ctx, void *q, const message *m, uint64_t at, uint32_t seg);
    /* q's copies, in increasing seq; then q's next sequence number. */
    void (*copy)(void *ctx, void *q, const rcopy *c);
    void (*next_seq)(void *ctx, void *q, uint64_t next);
    /* A delayed message still pending, for exchange `exchange` (a name) of virtual host
     * `vhost` (empty: "/"), or queue q (when exchange.p is NULL): returns 1 if the target
     * exists and the sink took m's reference. */
    int (*delayed)(void *ctx, uint64_t sid, uint64_t due, slice vhost, slice exchange, void *q, message *m,
                   uint32_t seg);
} recover_sink;

typedef struct recover_stats {
    /* in: copies in segments up to this id may have been delivered without a DELIVERED
     * record on disk (an unclean shutdown): they are handed over with maybe_delivered */
    uint32_t redelivered_upto;
    uint64_t records, corrupt, messages, delayed;
    uint64_t orphans;   /* copies of unknown queues kept on disk (meta.log damaged) */
    uint32_t max_qid;   /* the highest queue id in the log (never reused) */
    uint64_t max_delay; /* the highest delayed-message id in the log */
} recover_stats;

/* Replays the segments in segdir into sink, adding each to ss (which must be empty) with its
 * live count. meta_damaged: copies of queues not defined are pinned (kept on disk) rather
 * than dropped. Copies are recovered paged out while message memory is above
 * memory_budget. The torn tail of the last segment is cut. Returns 0, or -errno if a segment
 * could not be read for a reason that may pass (EIO, EMFILE, …: then nothing is handed over
 * and the caller refuses to start rather than run without its records); a segment that is
 * not a readable file at all (EISDIR, EACCES) costs its own records only. */
int recover_messages(segset *ss, const char *segdir, uint64_t memory_budget, int meta_damaged,
                      const recover_sink *sink, void *ctx, recover_stats *st);

#endif
