/* memacct.h — memory a client can make ferryd hold, counted by kind.
 *
 * Every owner of client-caused memory reports what it holds here (memacct_add when it grows,
 * memacct_sub when it shrinks), and --memory-high-watermark compares memacct_total() with
 * its limit: above it publishers are blocked (connection.blocked), below it they resume.
 * Counters are plain integers owned by the loop thread: call these from the loop only. */
#ifndef FERRY_MEMACCT_H
#define FERRY_MEMACCT_H

#include <stdint.h>

enum memkind {
    MEM_MESSAGES,     /* messages: names, properties, bodies, also bodies still arriving
                       * (publish.c grows them with message_grow as frames come in) */
    MEM_CONN_BUFFERS, /* connections' unread input and output buffers (conn.c) */
    MEM_CHASH_RINGS,  /* consistent-hash exchange rings (chash.c) */
    MEM_QUEUE_INDEX,  /* queues' ready rings, one per priority level (queue.c) */
    MEM_STORE_BATCH,  /* records waiting for the store's writer (store) */
    MEM_TLS,          /* OpenSSL's heap beyond the server's contexts: TLS connections (tls.c) */
    MEM_STREAM_READS, /* stream read buffers handed to consumers' reads (streamlog.c) */
    MEM_CRON,         /* cron schedules: their state, names and expressions (cron.c; the
                         template messages count as messages) */
    MEM_NKINDS
};

void memacct_add(enum memkind k, uint64_t n);
/* Takes back what memacct_add counted; taking more than was counted is a bug (asserted). */
void memacct_sub(enum memkind k, uint64_t n);
/* Sets a kind to an absolute figure (for owners that recount rather than track deltas). */
void memacct_set(enum memkind k, uint64_t n);
uint64_t memacct_get(enum memkind k);
/* The sum over every kind: what the memory alarm compares with the watermark. */
uint64_t memacct_total(void);
const char *memacct_name(enum memkind k);

#endif
