/* mgmt_snap.h — a queue list as a flat snapshot: the loop thread copies each queue's numbers
 * and names (cheap: no JSON on the loop), the HTTP thread filters, sorts, pages and writes the
 * JSON text (http_queues.c). A snapshot is immutable once handed over and shared by the
 * requests of the next second (counts are at most 1 s old). */
#ifndef FERRY_MGMT_SNAP_H
#define FERRY_MGMT_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "mgmt_stats.h"

typedef struct qsnap {
    char *name, *vhost;  /* in one allocation with args and tags (free name only) */
    uint8_t *args;
    size_t args_len;
    char *excl_tag, *sac_tag;        /* NULL if none */
    char *owner_name, *owner_host;   /* exclusive queues: the owner connection */
    int owner_port;
    uint8_t durable, auto_delete, exclusive, quorum;
    const char *type;                /* "classic", "quorum", "stream" (static) */
    char *extra;                     /* more fields as JSON text without braces (streams), or NULL */
    uint64_t ready, unacked, ready_bytes, unacked_bytes, consumers, next_seq, memory, idle_since;
    qcounters cnt;
    double rate[R_N];
} qsnap;

typedef struct qsnaps {
    qsnap *a;
    size_t n, cap;
    uint64_t taken_ms; /* monotonic, when the loop finished it */
    uint64_t gen;      /* queues created + deleted when it was taken: a change makes it stale */
    int refs;          /* HTTP thread: requests using it, plus the cache */
} qsnaps;

void qsnaps_free(qsnaps *s);
/* Frees the entries from n on (the snapshot keeps its first n). */
void qsnaps_truncate(qsnaps *s, size_t n);
/* Loop side: the copy of one queue appended to s. */
void qsnap_take(qsnaps *s, queue *q);

#endif
