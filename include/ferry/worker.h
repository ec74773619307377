/* worker.h — a worker: consumes a queue and runs a handler per message on N threads, with a
 * retry policy and a dead-letter queue.
 *
 * The handler returns FERRY_OK (ack), FERRY_RETRY (run again after the next retry delay; once
 * the delays are used up, dead-letter) or FERRY_FAIL (dead-letter at once). A dead letter is
 * a copy of the message in the dead-letter queue with the header x-ferry-failure (the
 * handler's reason, e.g. "exit 1", or "unknown_schema_version") and an x-death entry as
 * RabbitMQ writes it for a rejection (reason "rejected", queue, exchange, routing-keys,
 * count, time). The original is acked only after the broker confirmed that copy (or the
 * retry copy, or the reply): at-least-once, never lost.
 *
 * Retries use ferryd's x-retry-delays when the server announces the capability
 * "x-retry-delays" (the queue is declared with the delays; the handler's RETRY becomes a
 * nack); elsewhere RabbitMQ's classic topology: a queue Q.retry.<delay> per delay with
 * x-message-ttl and dead-lettering back to Q. Detected at start, never configured. */
#ifndef FERRY_WORKER_H
#define FERRY_WORKER_H

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_job ferry_job;
typedef struct ferry_worker ferry_worker;

/* Runs on one of the worker's threads; the job is valid until it returns. */
typedef int (*ferry_handler)(ferry_job *job, void *arg);

const ferry_message *ferry_job_message(const ferry_job *j);
int ferry_job_attempt(const ferry_job *j); /* 1 on the first run */
/* The reply body: published to the message's reply_to (with its correlation_id) when the
 * handler returns FERRY_OK. Copied. */
int ferry_job_set_reply(ferry_job *j, const void *body, size_t len);
/* Why the job failed (x-ferry-failure of its dead letter); default "handler failed". */
int ferry_job_set_failure(ferry_job *j, const char *reason);

/* How retries are done (ferry_worker_retry_mode). */
#define FERRY_RETRY_NATIVE 1 /* ferryd's x-retry-delays */
#define FERRY_RETRY_QUEUES 2 /* per-delay queues with x-message-ttl and dead-lettering back */

typedef struct ferry_worker_opts {
    const char *queue;             /* required */
    const char *dead_letter_queue; /* default: queue + ".dead" */
    int concurrency;               /* handler threads; default 1 */
    int prefetch;                  /* basic.qos; default = concurrency */
    const int64_t *retry_delays_ms; /* the delays before runs 2, 3, ...; none: no retry */
    size_t nretry;
    const int64_t *schema_versions; /* accepted cloudEvents:schemaversion values; none: all */
    size_t nschema;
    const char *queue_type;        /* x-queue-type for the queues it declares ("quorum"); NULL: classic */
    void (*log)(void *log_arg, const char *line); /* what the worker does, one line each; NULL: quiet */
    void *log_arg;
} ferry_worker_opts;

void ferry_worker_opts_init(ferry_worker_opts *o);

/* Connects and declares the queue (durable, dead-lettering to the dead-letter queue), the
 * dead-letter queue and, without native retries, the retry queues — those that exist are
 * used as they are. */
int ferry_worker_new(ferry_worker **out, const char *uri, const ferry_conn_opts *copts,
                     const ferry_worker_opts *wopts, ferry_handler handler, void *arg);

/* Consumes until ferry_worker_stop; then takes no new job, returns unstarted ones to the
 * queue, waits for the running ones to finish and be settled, and returns 0. A lost
 * connection is reconnected with back-off (jobs running then are run again: their
 * messages come back). */
int ferry_worker_run(ferry_worker *w);

/* Asks run to stop; async-signal-safe (a signal handler may call it). */
void ferry_worker_stop(ferry_worker *w);

int ferry_worker_retry_mode(const ferry_worker *w);
void ferry_worker_free(ferry_worker *w); /* after run returned; NULL ok */

/* Header names the worker writes or reads. */
#define FERRY_H_FAILURE "x-ferry-failure"
#define FERRY_H_ATTEMPT "x-ferry-attempt"   /* runs done, on retry copies (classic topology) */
#define FERRY_H_RETRY_COUNT "x-retry-count" /* ferryd's count of x-retry-delays retries */

#ifdef __cplusplus
}
#endif
#endif
