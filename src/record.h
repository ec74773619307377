/* record.h — the store's record framing, shared by meta.log and the message segments.
 *
 * Every record is framed the same way:
 *   magic u32 'FERR' | crc32c u32 (of length, type and payload) | length u32 | type u8 | payload
 * and every file starts with two copies of a HEADER record holding the file's salt, a random
 * number that seeds the checksums of its records: bytes inside a message body can never pass
 * for a record when recovery searches past a damaged one. This layer knows bytes only: it
 * builds records into a buf, checks them, walks a file of them, and encodes the payloads of
 * message records (PUBLISH, PAGE, DELAYED, SETTLE, DELIVERED). */
#ifndef FERRY_RECORD_H
#define FERRY_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define REC_MAGIC 0x46455252u /* "FERR" */
#define REC_HEADER 13         /* magic, crc, length, type */
#define REC_FILE_HEADER (REC_HEADER + 8) /* a HEADER record: the salt */

/* Record types. Message segments: */
enum {
    R_PUBLISH = 1,      /* a message and the durable queues it went to (16-bit queue count) */
    R_SETTLE = 2,       /* one queue's copy is gone (qid, seq) */
    R_DELIVERED = 3,    /* one queue's copy was delivered (qid, seq) */
    R_DELAYED = 4,      /* a delayed message held by the broker */
    R_DELAYED_DONE = 5, /* that delayed message was routed or dropped */
    R_MOVE = 6,         /* compaction: a PUBLISH of the copies still live, then their delivery counts */
    R_PUBLISH_WIDE = 7, /* R_PUBLISH to more than 65,535 queues (32-bit queue count) */
    R_HEADER = 9,       /* a file's header: its salt */
    R_PAGE = 40,        /* a body written only to free memory: recovery ignores it */
};
/* meta.log: */
enum { M_EXCHANGE = 10, M_EXCHANGE_DEL = 11, M_QUEUE = 12, M_QUEUE_DEL = 13, M_BIND = 14, M_UNBIND = 15,
       M_ACCESS = 16, /* users, vhosts, permissions: bytes only their owner reads (meta_sink.access) */
       M_CRON = 17 /* cron schedules and their fired ticks: bytes only their owner reads (meta_sink.cron) */ };

/* Starts a record of this type at the end of b; returns where it starts (for rec_end). */
size_t rec_begin(buf *b, uint8_t type);
/* Closes the record started at `at`: fills in its length and its checksum under salt. */
void rec_end(buf *b, size_t at, uint64_t salt);
/* Validates a record at p (n bytes available) under salt: its total size, or 0 if it is not
 * one (bad magic, length past n, or bad checksum). */
size_t rec_check(const uint8_t *p, size_t n, uint64_t salt);
static inline uint8_t rec_type(const uint8_t *rec) { return rec[12]; }
static inline int rec_is_move(uint8_t type) { return type == R_MOVE; }
/* A record naming queue copies of a message: PUBLISH (of either width) or MOVE. */
static inline int rec_is_publish(uint8_t type) {
    return type == R_PUBLISH || type == R_PUBLISH_WIDE || rec_is_move(type);
}

/* A new random salt (never 0). */
uint64_t rec_new_salt(void);
/* Appends a file's two header copies holding salt. */
void rec_put_headers(buf *b, uint64_t salt);
/* A file's salt from its headers (p: its first n bytes); 0 if neither copy is readable. */
uint64_t rec_read_salt(const uint8_t *p, size_t n);

/* Walks one file's records (p, n), calling apply(ctx, record, length) for each good one in
 * order. A bad record in the middle is skipped (the next good record is found by its magic
 * and a good checksum) and counted in *corrupt; a bad tail is logged (as a torn tail to cut
 * if `last`). A file whose headers are both unreadable yields nothing (counted corrupt).
 * Returns where the good data ends. */
typedef void (*rec_apply_fn)(void *ctx, const uint8_t *rec, size_t len);
size_t rec_scan(const char *path, const uint8_t *p, size_t n, int last, rec_apply_fn apply, void *ctx,
                uint64_t *corrupt);

/* Reads a whole file through the I/O layer: 0 (*data malloc'ed, *len) or -errno. */
int rec_read_file(const char *path, uint8_t **data, size_t *len); /* 0 or -errno (retried) */
/* The same into a buffer reused across calls (buf and cap start NULL and 0; free the buffer at the end). */
int rec_read_file_reuse(const char *path, uint8_t **buf, size_t *cap, size_t *len);

/* ---- message record payloads ---- */

/* A PUBLISH (or PAGE, with no queues) record, decoded: slices point into the record. Its
 * payload: published u64, ttl u64, queue count (u16; u32 in R_PUBLISH_WIDE), then per queue
 * qid u32 + seq u64, then exchange shortstr, routing key shortstr, properties longstr, body
 * length u64 and the body. */
typedef struct rec_publish {
    uint64_t published; /* wall ms */
    int64_t ttl;        /* the message's expiration in ms; -1 = none */
    uint32_t nq;        /* queues it went to (qid, seq pairs at qlist) */
    const uint8_t *qlist;
    const uint8_t *dlist; /* MOVE: each copy's delivery count (u16 each); NULL otherwise */
    slice exchange, rkey, props, body;
} rec_publish;

/* The size of a PUBLISH record for n queues and a message of these sizes. */
size_t rec_publish_size(uint32_t n, size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len);
/* Appends a PUBLISH (or PAGE: n = 0) record; a PUBLISH to more than 65,535 queues is
 * written as R_PUBLISH_WIDE (records of up to 65,535 keep the original layout). */
void rec_put_publish(buf *b, uint8_t type, uint64_t salt, uint64_t published, int64_t ttl, const uint32_t *qids,
                     const uint64_t *seqs, uint32_t n, slice exchange, slice rkey, slice props, slice body);
/* Decodes a checked PUBLISH (either width), MOVE or PAGE record; 0, or -1 if it is
 * malformed or of another type. */
int rec_publish_read(const uint8_t *rec, size_t len, rec_publish *out);
/* The i-th (queue id, sequence) pair of a decoded PUBLISH record. */
void rec_publish_queue(const rec_publish *p, uint32_t i, uint32_t *qid, uint64_t *seq);
/* The i-th copy's delivery count of a decoded MOVE record (0 for a PUBLISH). */
uint16_t rec_publish_deliveries(const rec_publish *p, uint32_t i);

/* The size of a MOVE record for n copies; appends one (compaction: a message's copies that
 * are still live, with their delivery counts, moved out of an old segment). Same layout as
 * PUBLISH, followed by n u16 delivery counts. */
size_t rec_move_size(uint32_t n, size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len);
void rec_put_move(buf *b, uint64_t salt, uint64_t published, int64_t ttl, const uint32_t *qids, const uint64_t *seqs,
                  const uint16_t *deliveries, uint32_t n, slice exchange, slice rkey, slice props, slice body);

/* Appends a SETTLE or DELIVERED record. */
void rec_put_copy(buf *b, uint8_t type, uint64_t salt, uint32_t qid, uint64_t seq);
#define REC_COPY_SIZE (REC_HEADER + 12)

/* A DELAYED record, decoded: a message held until `due` (wall ms), for a queue (to_queue,
 * qid) or an exchange (target). */
typedef struct rec_delayed {
    uint64_t sid, due;
    int to_queue;
    uint32_t qid;
    slice target; /* the exchange (when not to_queue) */
    slice vhost;  /* its virtual host; empty for "/" (such records keep their old bytes) */
    slice exchange, rkey, props, body;
} rec_delayed;

/* An upper bound of a DELAYED record's size. */
size_t rec_delayed_size(size_t exchange_len, size_t rkey_len, size_t props_len, uint64_t body_len);
/* Appends a DELAYED record (the fields of d). */
void rec_put_delayed(buf *b, uint64_t salt, const rec_delayed *d);
/* Decodes a checked DELAYED record; 0, or -1 if malformed. */
int rec_delayed_read(const uint8_t *rec, size_t len, rec_delayed *out);
/* Appends a DELAYED_DONE record. */
void rec_put_delayed_done(buf *b, uint64_t salt, uint64_t sid);
#define REC_DELAYED_DONE_SIZE (REC_HEADER + 8)
/* The sid of a DELAYED or DELAYED_DONE record (the first field of both); 0, or -1. */
int rec_delayed_sid(const uint8_t *rec, size_t len, uint64_t *sid);
/* Decodes a SETTLE or DELIVERED record; 0, or -1 if malformed. */
int rec_copy_read(const uint8_t *rec, size_t len, uint32_t *qid, uint64_t *seq);

#endif
