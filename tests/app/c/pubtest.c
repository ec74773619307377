/* pubtest.c — drives libferry's reliable publisher for tests/app/test_publisher.py.
 *   pubtest URI QUEUE cases    runs the single-broker cases, prints "ok NAME" / "FAIL NAME ..."
 *   pubtest URI QUEUE stream N publishes N messages (message_id 1..N), one ferry_publish each
 *                              (20 s timeout), printing "confirmed I" or "error I CODE": the
 *                              test restarts the broker meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/envelope.h"
#include "ferry/ferry.h"

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

static int results[2000];
static uint64_t tokens[2000];
static int nres;

static void collect(void *arg, uint64_t token, int result) {
    (void)arg;
    if (nres < 2000) {
        tokens[nres] = token;
        results[nres++] = result;
    }
}

static int cases(const char *uri, const char *queue) {
    ferry_publisher *p = NULL;
    int rc = ferry_publisher_new(&p, uri, NULL, NULL);
    CHECK("connect", rc == 0, "rc=%d %s", rc, ferry_strerror(rc));
    if (rc)
        return 1;
    rc = ferry_conn_declare_queue(ferry_publisher_conn(p), queue, NULL);
    CHECK("declare", rc == 0, "rc=%d %s", rc, ferry_conn_last_error(ferry_publisher_conn(p)));
    ferry_message *m = ferry_message_new();
    ferry_message_set_body(m, "hello", 5);
    ferry_message_set_property(m, "message_id", "one");
    rc = ferry_publish(p, "", queue, m, 5000);
    CHECK("publish_confirmed", rc == 0, "rc=%d %s", rc, ferry_strerror(rc));

    rc = ferry_publish(p, "no-such-exchange", "x", m, 5000);
    CHECK("no_exchange_refused", rc == FERRY_EREFUSED, "rc=%d %s", rc, ferry_strerror(rc));
    CHECK("no_exchange_reason", strstr(ferry_conn_last_error(ferry_publisher_conn(p)), "404") != NULL, "err=%s",
          ferry_conn_last_error(ferry_publisher_conn(p)));
    rc = ferry_publish(p, "", queue, m, 5000);
    CHECK("publish_after_refusal", rc == 0, "rc=%d %s", rc, ferry_strerror(rc));

    ferry_publisher_free(p);
    ferry_publisher_opts po;
    ferry_publisher_opts_init(&po);
    po.mandatory = 1;
    rc = ferry_publisher_new(&p, uri, NULL, &po);
    rc = ferry_publish(p, "", "no-queue-has-this-name", m, 5000);
    CHECK("mandatory_unroutable", rc == FERRY_EUNROUTABLE, "rc=%d %s", rc, ferry_strerror(rc));
    rc = ferry_publish(p, "", queue, m, 5000);
    CHECK("mandatory_routable", rc == 0, "rc=%d %s", rc, ferry_strerror(rc));

    /* pipelined: 1000 sends, one flush, every result in send order */
    nres = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        const char *rk = i == 500 ? "no-queue-has-this-name" : queue;
        if ((rc = ferry_publisher_send(p, "", rk, m, i)) < 0)
            break;
    }
    rc = ferry_publisher_flush(p, 10000, collect, NULL);
    int in_order = nres == 1000, oks = 0;
    for (int i = 0; i < nres; i++) {
        in_order &= tokens[i] == (uint64_t)i;
        oks += results[i] == 0;
    }
    CHECK("pipelined_all_settled", rc == 0 && nres == 1000, "rc=%d n=%d", rc, nres);
    CHECK("pipelined_in_order", in_order, "tokens out of order");
    CHECK("pipelined_results", oks == 999 && results[500] == FERRY_EUNROUTABLE, "oks=%d r500=%d", oks, results[500]);
    CHECK("nothing_pending", ferry_publisher_pending(p) == 0, "pending=%zu", ferry_publisher_pending(p));
    ferry_publisher_free(p);

    /* bad input */
    CHECK("bad_uri", ferry_publisher_new(&p, "http://x", NULL, NULL) == FERRY_EINVAL, "accepted http://");
    CHECK("null_message", ferry_publish(NULL, "", "q", m, 0) == FERRY_EINVAL, "accepted NULL");
    CHECK("unknown_property", ferry_message_set_property(m, "colour", "red") == FERRY_EINVAL, "accepted colour");
    CHECK("bad_delivery_mode", ferry_message_set_property(m, "delivery_mode", "3") == FERRY_EINVAL, "accepted 3");
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK("shortstr_limit", ferry_message_set_property(m, "message_id", big) == FERRY_EINVAL, "accepted 299 bytes");
    int64_t ms;
    CHECK("durations", ferry_parse_duration("250ms", &ms) == 0 && ms == 250 && ferry_parse_duration("5m", &ms) == 0 &&
                           ms == 300000 && ferry_parse_duration("5", &ms) == FERRY_EINVAL &&
                           ferry_parse_duration("-1s", &ms) == FERRY_EINVAL &&
                           ferry_parse_duration("99999999999999999999s", &ms) == FERRY_EINVAL,
          "duration parser");
    int64_t *d;
    size_t nd;
    CHECK("duration_list", ferry_parse_durations("1s,5s,30s,5m", &d, &nd) == 0 && nd == 4 && d[3] == 300000,
          "list parser");
    free(d);
    CHECK("duration_list_empty_item", ferry_parse_durations("1s,,5s", &d, &nd) == FERRY_EINVAL, "accepted 1s,,5s");
    ferry_conn *c = NULL;
    rc = ferry_conn_open(&c, "amqp://guest:wrong@127.0.0.1:1/", NULL);
    CHECK("unreachable", rc == FERRY_ECONNECT, "rc=%d", rc);
    ferry_message_free(m);
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures != 0;
}

static int stream(const char *uri, const char *queue, int n) {
    ferry_publisher *p = NULL;
    ferry_conn_opts co;
    ferry_conn_opts_init(&co);
    co.backoff_initial_ms = 50;
    co.backoff_max_ms = 500;
    int rc = ferry_publisher_new(&p, uri, &co, NULL);
    if (rc) {
        printf("connect failed %d\n", rc);
        return 1;
    }
    ferry_conn_declare_queue(ferry_publisher_conn(p), queue, NULL);
    ferry_message *m = ferry_message_new();
    for (int i = 1; i <= n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%d", i);
        ferry_message_set_property(m, "message_id", id);
        ferry_message_set_body(m, id, strlen(id));
        rc = ferry_publish(p, "", queue, m, 20000);
        if (rc == 0)
            printf("confirmed %d\n", i);
        else
            printf("error %d %d\n", i, rc);
        fflush(stdout);
        usleep(10000);
    }
    ferry_message_free(m);
    ferry_publisher_free(p);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[3], "cases") == 0)
        return cases(argv[1], argv[2]);
    if (argc >= 5 && strcmp(argv[3], "stream") == 0)
        return stream(argv[1], argv[2], atoi(argv[4]));
    fprintf(stderr, "usage: pubtest URI QUEUE cases | stream N\n");
    return 2;
}
