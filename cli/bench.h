/* bench.h — `ferry bench`, the AMQP 0-9-1 load generator: its configuration, the state its
 * threads share, and the producer/consumer loops (bench_worker.c) that bench.c starts.
 *
 * One thread and one connection per producer and per consumer. Each thread owns its counters
 * and latency histogram and publishes progress through relaxed atomics it alone writes; the
 * main thread only reads them (progress lines) and merges everything once the threads end. */
#ifndef FERRY_BENCH_H
#define FERRY_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "client.h"
#include "histogram.h"

/* Bytes at the start of every body: the send time (CLOCK_MONOTONIC ns, so valid between
 * processes on one host) and a sequence number whose top byte is STAMP_MAGIC, both big-endian
 * u64. The magic lets a consumer skip latency for bodies some other client published.
 * Bodies shorter than 16 bytes carry no stamp and yield no latency figures. */
#define STAMP_BYTES 16
#define STAMP_MAGIC 0xFBull

typedef struct bench_cfg {
    const char *uri_text;
    amqp_uri uri;
    int producers, consumers;
    uint64_t size;
    int queues, fanout;
    int per_queue; /* --consumers-per-queue: basic.consumes per queue on each consumer connection */
    uint64_t topic_bindings; /* --topic-bindings: a topic exchange with this many bindings; 0 = none */
    char **topic_keys;       /* the producers' routing keys (one per queue) with --topic-bindings */
    const char *prefix;
    char exchange[256]; /* "" (default exchange) or the fanout exchange */
    char **queue_names;
    int persistent;
    uint32_t confirm; /* publisher-confirm window; 0 = no confirms */
    uint32_t prefetch;
    uint32_t ack_every; /* 0 = auto-ack */
    double rate;        /* total msg/s over all producers; 0 = as fast as possible */
    double duration;    /* seconds; 0 = count-bounded */
    uint64_t count;     /* messages over all producers */
    double timeout;     /* count-bounded: give up after this long without progress */
    int no_consume, drain, json, quiet, keep;
    int stream; /* --stream: stream queues (x-queue-type stream), consumers from x-stream-offset first */
} bench_cfg;

typedef struct bench_state {
    atomic_int ready;       /* workers connected and set up */
    atomic_int failed;      /* some worker failed: everyone stops */
    atomic_int go;          /* start publishing/consuming (t0 is set) */
    atomic_int stop;        /* duration over, stalled, ^C, or abort */
    atomic_int interrupted; /* SIGINT/SIGTERM */
    uint64_t t0_ns;         /* written before go, read after */
    uint64_t deadline_ns;   /* duration runs: when producers stop; 0 = none */
    atomic_uint_least64_t consumed_total;
    atomic_uint_least64_t expected; /* count-bounded: what consumers must receive ... */
    atomic_int expected_known;      /* ... once known (producers finished) */
} bench_state;

typedef struct worker {
    int index;
    int producer; /* 1 producer, 0 consumer */
    const bench_cfg *cfg;
    bench_state *st;
    pthread_t thread;
    /* producer: what it publishes, where */
    uint64_t quota; /* count-bounded: messages to publish */
    const char **keys; /* the routing keys it publishes with, in turn (one per queue it feeds) */
    int nkeys;
    /* consumer: the queues it consumes from */
    int nq;
    const char **qs;
    /* progress, written by the worker only */
    atomic_uint_least64_t published, confirmed, nacked, consumed;
    /* results, read after join */
    uint64_t end_ns;      /* last publish written / last message consumed */
    uint64_t unconfirmed; /* publishes never confirmed before the producer gave up */
    uint64_t blocked_ns;  /* time spent blocked by connection.blocked */
    uint64_t redelivered;
    double cpu_s;   /* the thread's own CPU time */
    histogram hist; /* confirm latency (producer) or end-to-end latency (consumer) */
    char err[512];
    atomic_int done; /* the thread has finished (results above are final) */
} worker;

void *producer_main(void *arg);
void *consumer_main(void *arg);

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int bench_main(int argc, char **argv);

#endif
