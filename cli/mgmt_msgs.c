/* mgmt_msgs.c — `ferry get` and `ferry purge`: messages of one queue over the management
 * API (POST …/get, DELETE …/contents), and the readable form of one message that
 * `ferry get`, `ferry dlq peek` and `ferry consume` share.
 *
 * `ferry get` requeues by default, like RabbitMQ's UI and rabbitmqadmin: looking at a
 * queue must not empty it unless asked (--ack). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgmt.h"

/* Prints the payload, escaping what a terminal would interpret. */
static void print_payload(const char *p, FILE *f) {
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n' || c == '\t' || c >= 0x20 || c == '\r')
            fputc(c == '\r' ? ' ' : c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    fputc('\n', f);
}

/* A name from the broker (routing key, exchange, queue) with control characters escaped. */
static const char *safe(const char *s, char *out, size_t n) {
    size_t j = 0;
    for (; *s && j + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            j += (size_t)snprintf(out + j, n - j, "\\x%02x", c);
        else
            out[j++] = (char)c;
    }
    out[j] = 0;
    return out;
}

/* One line per x-death entry: why, from which queue, when, how often. */
static void print_deaths(const json_t *deaths, FILE *f) {
    size_t i;
    const json_t *d;
    json_array_foreach(deaths, i, d) {
        char when[64] = "?";
        double t = jnum(d, "time", -1);
        if (t >= 0) {
            time_t tt = (time_t)t;
            struct tm tm;
            gmtime_r(&tt, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        }
        char a[256], b[512], c[512];
        fprintf(f, "dead-lettered: %s from queue '%s' (exchange '%s') at %s, %.0f time(s)\n",
                safe(jstr(d, "reason", "?"), a, sizeof a), safe(jstr(d, "queue", "?"), b, sizeof b),
                safe(jstr(d, "exchange", ""), c, sizeof c), when, jnum(d, "count", 1));
    }
}

void mgmt_print_message(const json_t *msg, int index, FILE *f) {
    const char *ex = jstr(msg, "exchange", "");
    char buf[1024];
    fprintf(f, "--- message %d\n", index);
    fprintf(f, "exchange:      %s\n", *ex ? safe(ex, buf, sizeof buf) : "(AMQP default)");
    fprintf(f, "routing key:   %s\n", safe(jstr(msg, "routing_key", ""), buf, sizeof buf));
    fprintf(f, "redelivered:   %s\n", jbool(msg, "redelivered", 0) ? "yes" : "no");
    if (jpath(msg, "message_count"))
        fprintf(f, "left in queue: %.0f\n", jnum(msg, "message_count", 0));
    const json_t *props = jpath(msg, "properties");
    const json_t *deaths = jpath(msg, "properties.headers.x-death");
    if (json_is_array(deaths))
        print_deaths(deaths, f);
    if (json_is_object(props) && json_object_size(props)) {
        char *s = json_dumps(props, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(f, "properties:    %s\n", s ? s : "?");
        free(s);
    }
    fprintf(f, "payload:       %.0f bytes%s%s\n", jnum(msg, "payload_bytes", 0),
            strcmp(jstr(msg, "payload_encoding", "string"), "base64") == 0 ? ", base64" : "",
            jnum(msg, "payload_bytes", 0) > (double)strlen(jstr(msg, "payload", "")) &&
                    strcmp(jstr(msg, "payload_encoding", "string"), "string") == 0
                ? ", truncated"
                : "");
    print_payload(jstr(msg, "payload", ""), f);
}

static const char get_usage[] =
    "usage: ferry get QUEUE [--count N] [--ack] [--encoding auto|base64] [--truncate BYTES]\n"
    "                       [--vhost V] [--json] [--url URL]\n"
    "\n"
    "Fetches up to N messages from a queue over the management API and prints them with their\n"
    "properties (and, for dead letters, why and where they died). By default the messages go\n"
    "back to the queue (as in RabbitMQ's UI; they come back with redelivered set); --ack takes\n"
    "them off the queue.\n"
    "\n"
    "  --count N        how many messages (default 1, at most 10000)\n"
    "  --ack            remove the messages from the queue\n"
    "  --encoding E     auto (text when it is valid UTF-8, else base64; default) or base64\n"
    "  --truncate B     show at most B bytes of each payload (default 50000)\n"
    "  --vhost V        the queue's vhost (default /)\n"
    "  --json           the API's message objects as a JSON list\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok (also when the queue is empty: \"no messages\"), 1 the broker refused\n"
    "(no such queue, bad credentials), 2 bad usage, 3 the broker cannot be reached.\n";

int mgmt_get_main(int argc, char **argv) {
    mgmt m = {.cmd = "get", .usage = get_usage};
    long count = 1, truncate = 50000;
    int ack = 0;
    const char *encoding = "auto";
    const mopt opts[] = {{"--count", MO_LONG, &count, 1, 10000},
                         {"--ack", MO_FLAG, &ack, 0, 0},
                         {"--encoding", MO_STR, &encoding, 0, 0},
                         {"--truncate", MO_LONG, &truncate, 1, 1L << 30},
                         {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 1, 1, &npos);
    if (rc >= 0)
        return rc;
    if (strcmp(encoding, "auto") != 0 && strcmp(encoding, "base64") != 0) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "--encoding must be auto or base64, got '%s'", encoding);
    }
    char path[2048], ev[768], eq[768];
    snprintf(path, sizeof path, "/api/queues/%s/%s/get", mgmt_esc(mgmt_vhost(&m), ev, sizeof ev),
             mgmt_esc(pos[0], eq, sizeof eq));
    json_t *body = json_pack("{s:I, s:s, s:s, s:I}", "count", (json_int_t)count, "ackmode",
                             ack ? "ack_requeue_false" : "ack_requeue_true", "encoding", encoding, "truncate",
                             (json_int_t)truncate);
    json_t *msgs = NULL;
    rc = mgmt_call(&m, "POST", path, body, &msgs, NULL);
    json_decref(body);
    if (rc == MG_OK && !json_is_array(msgs))
        rc = mgmt_fail(&m, MG_FAILED, "POST %s: the broker's reply is not a JSON list", path);
    if (rc == MG_OK && m.json) {
        mgmt_print_json(msgs);
    } else if (rc == MG_OK) {
        size_t i;
        json_t *msg;
        json_array_foreach(msgs, i, msg) mgmt_print_message(msg, (int)i + 1, stdout);
        if (!json_array_size(msgs))
            printf("no messages in queue '%s'\n", pos[0]);
    }
    json_decref(msgs);
    mgmt_free(&m);
    return rc;
}

static const char purge_usage[] =
    "usage: ferry purge QUEUE [--vhost V] [--json] [--url URL]\n"
    "\n"
    "Removes every ready message from a queue (messages delivered and not yet acknowledged\n"
    "stay with their consumers, as in AMQP queue.purge).\n"
    "\n"
    "  --vhost V        the queue's vhost (default /)\n"
    "  --json           prints {\"vhost\": ..., \"queue\": ..., \"purged\": true}\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 purged, 1 the broker refused (no such queue, bad credentials), 2 bad usage,\n"
    "3 the broker cannot be reached.\n";

int mgmt_purge_main(int argc, char **argv) {
    mgmt m = {.cmd = "purge", .usage = purge_usage};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, NULL, pos, 1, 1, &npos);
    if (rc >= 0)
        return rc;
    char path[2048], ev[768], eq[768];
    snprintf(path, sizeof path, "/api/queues/%s/%s/contents", mgmt_esc(mgmt_vhost(&m), ev, sizeof ev),
             mgmt_esc(pos[0], eq, sizeof eq));
    rc = mgmt_call(&m, "DELETE", path, NULL, NULL, NULL);
    if (rc == MG_OK && m.json) {
        json_t *o = json_pack("{s:s, s:s, s:b}", "vhost", mgmt_vhost(&m), "queue", pos[0], "purged", 1);
        mgmt_print_json(o);
        json_decref(o);
    } else if (rc == MG_OK) {
        printf("purged queue '%s' in vhost '%s'\n", pos[0], mgmt_vhost(&m));
    }
    mgmt_free(&m);
    return rc;
}
