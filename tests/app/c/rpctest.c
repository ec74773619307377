/* rpctest.c — libferry's RPC call and C API worker (include/ferry/rpc.h, worker.h).
 *   rpctest URI QUEUE call BODY TIMEOUT_MS   one call: "reply BODY" / "error NAME" (exit 0)
 *   rpctest URI QUEUE serve N                a ferry_worker on QUEUE until it finished N jobs:
 *       body "ok" → FERRY_OK; "retry:K" → FERRY_RETRY on attempts <= K; "fail" → FERRY_FAIL
 *       ("bad order"); anything else → FERRY_OK with the body upper-cased as the reply.
 *       Prints "job BODY ATTEMPT" per run and "mode native|queues" at start.
 *   rpctest URI QUEUE selftest               a server thread (serve) + calls: success,
 *       concurrent correlation, timeout, unroutable. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "ferry/rpc.h"
#include "ferry/worker.h"

static atomic_int done_jobs;
static int want_jobs;
static ferry_worker *server;

static int handler(ferry_job *j, void *arg) {
    (void)arg;
    size_t n;
    const char *b = ferry_message_body(ferry_job_message(j), &n);
    char body[256];
    snprintf(body, sizeof body, "%.*s", (int)(n < 255 ? n : 255), b);
    printf("job %s %d\n", body, ferry_job_attempt(j));
    fflush(stdout);
    int r = FERRY_OK;
    if (strncmp(body, "retry:", 6) == 0 && ferry_job_attempt(j) <= atoi(body + 6)) {
        ferry_job_set_failure(j, "not yet");
        r = FERRY_RETRY;
    } else if (strcmp(body, "fail") == 0) {
        ferry_job_set_failure(j, "bad order");
        r = FERRY_FAIL;
    } else if (strcmp(body, "ok") != 0 && strncmp(body, "retry:", 6) != 0) {
        if (strcmp(body, "slow") == 0)
            usleep(600000);
        for (char *p = body; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 32);
        ferry_job_set_reply(j, body, strlen(body));
    }
    if (r != FERRY_RETRY || 1)
        if (atomic_fetch_add(&done_jobs, 1) + 1 == want_jobs)
            ferry_worker_stop(server);
    return r;
}

static int make_server(const char *uri, const char *queue, int concurrency) {
    ferry_worker_opts o;
    ferry_worker_opts_init(&o);
    static const int64_t delays[] = {200, 200};
    o.queue = queue;
    o.concurrency = concurrency;
    o.retry_delays_ms = delays;
    o.nretry = 2;
    const char *qt = getenv("FERRY_TEST_QUEUE_TYPE");
    if (qt && *qt)
        o.queue_type = qt;
    int rc = ferry_worker_new(&server, uri, NULL, &o, handler, NULL);
    if (rc < 0) {
        printf("server failed %s\n", ferry_strerror(rc));
        return rc;
    }
    printf("mode %s\n", ferry_worker_retry_mode(server) == FERRY_RETRY_NATIVE ? "native" : "queues");
    fflush(stdout);
    return 0;
}

static void *serve_thread(void *arg) {
    (void)arg;
    ferry_worker_run(server);
    return NULL;
}

static int call(ferry_rpc *r, const char *queue, const char *body, int timeout, char *out, size_t n) {
    ferry_message *m = ferry_message_new();
    ferry_message_set_body(m, body, strlen(body));
    ferry_message *rep = NULL;
    int rc = ferry_rpc_call(r, "", queue, m, timeout, &rep);
    ferry_message_free(m);
    if (rc == 0) {
        size_t l;
        const char *b = ferry_message_body(rep, &l);
        snprintf(out, n, "%.*s", (int)l, b);
        ferry_message_free(rep);
    }
    return rc;
}

static int failures;
#define CHECK(name, cond, ...)                                                                                         \
    do {                                                                                                               \
        if (cond)                                                                                                      \
            printf("ok %s\n", name);                                                                                   \
        else {                                                                                                         \
            printf("FAIL %s: ", name);                                                                                 \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

static int selftest(const char *uri, const char *queue) {
    want_jobs = -1;
    if (make_server(uri, queue, 2) < 0)
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, NULL);
    ferry_rpc *r = NULL;
    int rc = ferry_rpc_new(&r, uri, NULL);
    CHECK("rpc_connect", rc == 0, "%s", ferry_strerror(rc));
    char out[256] = "";
    rc = call(r, queue, "hello", 10000, out, sizeof out);
    CHECK("rpc_success", rc == 0 && strcmp(out, "HELLO") == 0, "rc=%d out=%s", rc, out);
    rc = call(r, queue, "slow", 200, out, sizeof out);
    CHECK("rpc_timeout", rc == FERRY_ETIMEDOUT, "rc=%d", rc);
    /* the late reply to "slow" arrives during this call and must not be taken for its answer */
    rc = call(r, queue, "second", 10000, out, sizeof out);
    CHECK("late_reply_dropped", rc == 0 && strcmp(out, "SECOND") == 0, "rc=%d out=%s", rc, out);
    rc = call(r, "no-such-queue-for-rpc", "x", 5000, out, sizeof out);
    CHECK("rpc_unroutable", rc == FERRY_EUNROUTABLE, "rc=%d", rc);
    int64_t t0 = ferry_now_ms();
    rc = call(r, queue, "ok", 300, out, sizeof out); /* the handler acks "ok" without a reply */
    int64_t took = ferry_now_ms() - t0;
    CHECK("rpc_no_reply_times_out_on_time", rc == FERRY_ETIMEDOUT && took >= 290 && took < 1500, "rc=%d took=%lld",
          rc, (long long)took);
    ferry_message *m = ferry_message_new();
    CHECK("rpc_bad_timeout", ferry_rpc_call(r, "", queue, m, 0, &m) == FERRY_EINVAL, "accepted 0");
    ferry_message_free(m);
    ferry_rpc_free(r);
    ferry_worker_stop(server);
    pthread_join(t, NULL);
    ferry_worker_free(server);
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 6 && strcmp(argv[3], "call") == 0) {
        ferry_rpc *r = NULL;
        int rc = ferry_rpc_new(&r, argv[1], NULL);
        char out[4096] = "";
        if (rc == 0)
            rc = call(r, argv[2], argv[4], atoi(argv[5]), out, sizeof out);
        if (rc == 0)
            printf("reply %s\n", out);
        else
            printf("error %s\n", ferry_strerror(rc));
        ferry_rpc_free(r);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[3], "serve") == 0) {
        want_jobs = atoi(argv[4]);
        if (make_server(argv[1], argv[2], 1) < 0)
            return 1;
        int rc = ferry_worker_run(server);
        ferry_worker_free(server);
        return rc < 0;
    }
    if (argc >= 4 && strcmp(argv[3], "selftest") == 0)
        return selftest(argv[1], argv[2]);
    fprintf(stderr, "usage: rpctest URI QUEUE call BODY TIMEOUT_MS | serve N | selftest\n");
    return 2;
}
