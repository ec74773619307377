/* worker_capi.c — jobs/s of libferry's worker in-process (bench/worker_jobs.py runs it):
 * declares QUEUE through ferry_worker_new, fills it with N persistent no-op jobs (pipelined
 * reliable publisher), then runs the worker with a handler that only counts, and prints
 * {"jobs": N, "seconds": S, "jobs_per_s": R} for the time from the first job to the N-th ack
 * being sent (the worker stops there and settles what is in flight).
 *   worker_capi URI QUEUE N CONCURRENCY PREFETCH */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ferry.h"
#include "ferry/worker.h"

static atomic_long count;
static long want;
static int64_t t_first, t_last;
static ferry_worker *w;

static int noop(ferry_job *j, void *arg) {
    (void)j;
    (void)arg;
    long n = atomic_fetch_add(&count, 1) + 1;
    if (n == 1)
        t_first = ferry_now_ms();
    if (n == want) {
        t_last = ferry_now_ms();
        ferry_worker_stop(w);
    }
    return FERRY_OK;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: worker_capi URI QUEUE N CONCURRENCY PREFETCH\n");
        return 2;
    }
    want = atol(argv[3]);
    ferry_worker_opts o;
    ferry_worker_opts_init(&o);
    o.queue = argv[2];
    o.concurrency = atoi(argv[4]);
    o.prefetch = atoi(argv[5]);
    int rc = ferry_worker_new(&w, argv[1], NULL, &o, noop, NULL);
    if (rc < 0) {
        fprintf(stderr, "worker: %s\n", ferry_strerror(rc));
        return 1;
    }
    ferry_publisher *p;
    if ((rc = ferry_publisher_new(&p, argv[1], NULL, NULL)) < 0) {
        fprintf(stderr, "publisher: %s\n", ferry_strerror(rc));
        return 1;
    }
    ferry_message *m = ferry_message_new();
    ferry_message_set_body(m, "{}", 2);
    for (long i = 0; i < want && rc == 0; i++)
        rc = ferry_publisher_send(p, "", argv[2], m, (uint64_t)i);
    if (rc == 0)
        rc = ferry_publisher_flush(p, 120000, NULL, NULL);
    ferry_message_free(m);
    ferry_publisher_free(p);
    if (rc < 0) {
        fprintf(stderr, "publishing: %s\n", ferry_strerror(rc));
        return 1;
    }
    ferry_worker_run(w);
    ferry_worker_free(w);
    double s = (double)(t_last - t_first) / 1000.0;
    printf("{\"jobs\": %ld, \"seconds\": %.3f, \"jobs_per_s\": %.0f}\n", want, s, s > 0 ? (double)want / s : 0.0);
    return 0;
}
