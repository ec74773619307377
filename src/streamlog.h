/* streamlog.h — a stream's append-only log on disk: its own segment files, an offset index,
 * named offsets, retention by whole segments, and reads off the loop thread.
 *
 * Part of the store layer: it knows records (offset, timestamp, exchange, routing key,
 * filter value, properties, body), never broker objects. The broker's side is stream.c.
 *
 *   DATA_DIR/streams/<8 hex stream id>/<16 hex first offset>.seg   records, in offset order
 *   DATA_DIR/streams/<8 hex stream id>/<16 hex first offset>.idx   (offset, timestamp, position)
 *                                                                  every 64 KiB of records
 *   DATA_DIR/streams/<8 hex stream id>/offsets.log                 named offsets, last wins
 *
 * Appends go into the store's pending batch (the same group commit as the message log: the
 * writer thread writes them, fdatasyncs each file, and the batch's publishes are confirmed
 * only after that); a record becomes readable (committed) once its batch is synced. Reads run
 * on a reader thread of their own: one job reads up to a bounded number of bytes from one
 * segment in one pread, checks every record's CRC and hands the batch back to the loop. */
#ifndef FERRY_STREAMLOG_H
#define FERRY_STREAMLOG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "loop.h"
#include "wire.h"

typedef struct slog slog;
typedef struct slogs slogs;
struct swrite;

typedef struct slog_limits {
    int64_t max_bytes;     /* x-max-length-bytes: whole segments are dropped above it; -1 none */
    int64_t max_age_ms;    /* x-max-age: segments whose newest record is older go; -1 none */
    uint64_t segment_size; /* x-stream-max-segment-size-bytes: a segment rolls over past it */
} slog_limits;

/* One record handed back by a read. Slices point into the batch's buffer. */
typedef struct slog_rec {
    uint64_t offset, ts; /* ts: wall-clock ms of the append */
    slice exchange, rkey, filter, props, body;
} slog_rec;

typedef struct slog_batch {
    uint8_t *data;  /* the bytes read (owned) */
    slog_rec *recs; /* whole, checked records at or after the offset asked for */
    size_t nrecs;
    uint64_t next; /* the offset to read from next (after the last record, or the next
                    * segment's first when this one was read to its end) */
    int err;       /* 0, or -errno / -EBADMSG (logged; the reader skips to the next segment) */
    uint64_t acct; /* bytes counted in memacct (MEM_STREAM_READS) while the batch lives */
} slog_batch;
void slog_batch_free(slog_batch *b);

/* The stream set of a store: created by store_open (dir = DATA_DIR), freed by store_close. */
slogs *slogs_new(const char *dir, loop *l);
/* Runs the done callbacks of finished reads (for an owner without an event loop: tests). */
size_t slogs_poll(slogs *ss);
/* Stops the reader thread (running what is queued: their done callbacks run now). */
void slogs_stop(slogs *ss);
void slogs_free(slogs *ss);
/* Removes stream directories whose id fails keep(ctx, id) (a stream deleted while ferryd was
 * stopped or crashed before its directory went). Startup only: it blocks. */
void slogs_gc(slogs *ss, int (*keep)(void *ctx, uint32_t id), void *ctx);

/* Opens stream id (its directory scanned, torn tails cut: startup only, or fresh = 1 for a
 * stream just declared, which has no files yet). */
slog *slog_open(slogs *ss, uint32_t id, const slog_limits *lim, int fresh);
/* Forgets the stream and deletes its files with the next batch (queue.delete). */
void slog_delete(slogs *ss, slog *l, struct swrite **pending);
/* Frees the in-memory state only (shutdown). */
void slog_close(slogs *ss, slog *l);

/* Appends one record to the pending batch *pending (created if NULL); returns its offset. */
uint64_t slog_append(slog *l, struct swrite **pending, slice exchange, slice rkey, slice props,
                     const uint8_t *body, uint64_t body_len, slice filter);
/* Appends a named offset to offsets.log with the pending batch. */
void slog_put_name(slog *l, struct swrite **pending, slice name, uint64_t offset);
/* Calls fn for every named offset found at open. */
void slog_each_name(slog *l, void (*fn)(void *ctx, slice name, uint64_t offset), void *ctx);

/* Drops the oldest segments the limits allow (never the active one); deletions go with
 * the pending batch. Returns how many were dropped. As RabbitMQ (osiris), the size limit is
 * applied when a segment rolls over (by_bytes; slog_append does it); age is also looked at
 * once a second. */
size_t slog_retention(slog *l, struct swrite **pending, uint64_t now_wall_ms, int by_bytes);

/* Offsets: the first still stored, the next to be assigned, and the next not yet committed
 * (everything below it is synced and readable). first == end: empty. */
uint64_t slog_first(const slog *l);
uint64_t slog_end(const slog *l);
uint64_t slog_committed(const slog *l);
uint64_t slog_bytes(const slog *l);
size_t slog_segments(const slog *l);
/* The offset a reader starting at wall-clock time ts_ms should look from (it then skips
 * records older than ts_ms): an index entry at or before the first record at ts_ms. */
uint64_t slog_seek_time(const slog *l, uint64_t ts_ms);
/* The offset of the last committed record (slog_committed - 1), or end if there is none. */
uint64_t slog_last(const slog *l);

/* Reads committed records from offset `from` (moved up to the first stored one) on the reader
 * thread: at most about max bytes, from one segment; done(ctx, batch) then runs on the loop
 * thread (the caller frees the batch). Returns 1 if a read started, 0 if there is nothing
 * committed at or after from. */
int slog_read(slogs *ss, slog *l, uint64_t from, size_t max, void (*done)(void *ctx, slog_batch *b),
              void *ctx);

/* The batch pieces (store.c): the writer thread writes them after the message log, and the
 * loop thread hears the result. */
int swrite_empty(const struct swrite *w);
uint64_t swrite_bytes(const struct swrite *w);
/* Writer thread: writes every piece, syncs each file and new directory entries; 0/-errno. */
int swrite_run(struct swrite *w);
/* Loop thread: the batch came back (err 0: synced): committed offsets move (or the failed
 * records are given up: their segment is closed and the next append rolls a new one). */
void swrite_done(slogs *ss, struct swrite *w, int err);
void swrite_free(struct swrite *w);
/* After a failed batch: the pending batch's pieces for segments that failed fail it too. */
void swrite_doom(slogs *ss, struct swrite *pending);

#endif
