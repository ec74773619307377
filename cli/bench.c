/* bench.c — `ferry bench`: options, queue topology, starting and watching the producer and
 * consumer threads (bench_worker.c), and the report.
 *
 * A run: parse and check the options; on a control connection delete and re-declare the
 * bench queues (so every run starts empty) or, with --drain, count what they hold; start the
 * consumers, then the producers, and release them together; print progress each second;
 * stop at the deadline or once every expected message has arrived; delete the queues; merge
 * the threads' counters and histograms into one report (text or --json). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "util.h"

#define EXIT_RUN_FAILED 1
#define EXIT_USAGE 2
#define DURATION_GRACE_NS 1000000000ull

static const char usage_text[] =
    "usage: ferry bench [options]\n"
    "\n"
    "A load generator for any AMQP 0-9-1 broker (Ferry, RabbitMQ, LavinMQ...). One thread and\n"
    "one connection per producer and per consumer; pipelined publishing, batched acks.\n"
    "\n"
    "  --uri URI            amqp://user:pass@host:port/vhost (default amqp://guest:guest@127.0.0.1:5672/);\n"
    "                       amqps://... for TLS (default port 5671)\n"
    "  --cacert FILE        amqps: verify the broker's certificate (and host name) against this CA\n"
    "                       (PEM); without it the certificate is not verified\n"
    "  --producers N        publishing connections (default 1; 0 with --drain)\n"
    "  --consumers N        consuming connections (default 1, or one per queue with --fanout)\n"
    "  --size BYTES         message body size (default 16); the first 16 bytes carry the send\n"
    "                       time and a sequence number, so latency needs --size >= 16\n"
    "  --queues N           queues PREFIX0..PREFIX(N-1) (default 1); producer i publishes to queue\n"
    "                       i mod N (with more queues than producers, to queues i, i+P, ... in\n"
    "                       turn), consumers share the queues round-robin\n"
    "  --consumers-per-queue K  each consumer connection subscribes K times to each of its\n"
    "                       queues (default 1): many consumers over few connections\n"
    "  --queue-prefix STR   queue name prefix (default \"bench-\")\n"
    "  --fanout N           publish to a fanout exchange (PREFIXfanout) bound to N queues\n"
    "  --topic-bindings N   publish to a topic exchange (PREFIXtopic) with N bindings: each queue Q\n"
    "                       gets up to 3 that match its producers' key ferry.bench.Q (ferry.bench.Q,\n"
    "                       ferry.*.Q, #.Q), the rest are '*'/'#' patterns that match nothing\n"
    "  --persistent         durable queues, delivery-mode 2 messages\n"
    "  --confirm WINDOW     publisher confirms, at most WINDOW unconfirmed per producer\n"
    "  --prefetch N         basic.qos prefetch per consumer for manual acks (default 1000)\n"
    "  --ack-every N        ack with multiple=true every N messages (default 0 = auto-ack)\n"
    "  --rate MSG/S         fixed total publish rate, evenly paced (default: as fast as possible)\n"
    "  --duration SECONDS   publish for this long (default 10 unless --count); consumers get up to\n"
    "                       1 s more for messages still in flight\n"
    "  --count N            publish N messages in total, split evenly over the producers, and\n"
    "                       wait until all are consumed; exits 1 if any are missing\n"
    "  --timeout SECONDS    count-bounded runs give up after this long without progress (default 10)\n"
    "  --no-consume         publish only (leaves the backlog in the queues)\n"
    "  --drain              consume only, what the queues hold now, until they are empty\n"
    "  --stream             stream queues (x-queue-type stream; durable, messages persistent):\n"
    "                       consumers read from x-stream-offset first with manual acks\n"
    "                       (--ack-every, default 100); --drain --stream --count N replays the\n"
    "                       first N events of the streams (a stream is never empty)\n"
    "  --keep-queues        do not delete the queues at the end\n"
    "  --json               print the result as one JSON object on stdout\n"
    "  --quiet              no progress lines on stderr\n"
    "  -h, --help           this text\n"
    "\n"
    "Queues are deleted and re-declared at the start (except with --drain) and deleted at the end\n"
    "(except with --no-consume or --keep-queues). Exit status: 0 ok, 1 the run failed or lost\n"
    "messages, 2 bad options.\n";

static bench_state *g_state; /* for the SIGINT handler only */

static void on_sigint(int sig) {
    (void)sig;
    if (g_state) {
        atomic_store(&g_state->interrupted, 1);
        atomic_store(&g_state->stop, 1);
    }
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ferry bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see ferry bench --help)\n", stderr);
    va_end(ap);
    return -1;
}

/* ---- options ---- */

static int parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+')
        return usage_error("%s expects a whole number, got '%s'", flag, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return usage_error("%s expects a whole number, got '%s'", flag, s);
    if (v < lo || v > hi)
        return usage_error("%s must be between %llu and %llu, got %llu", flag, (unsigned long long)lo,
                           (unsigned long long)hi, v);
    *out = v;
    return 0;
}

static int parse_pos_double(const char *flag, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !*s || !(v > 0) || !isfinite(v))
        return usage_error("%s expects a positive number, got '%s'", flag, s);
    *out = v;
    return 0;
}

typedef struct given {
    int producers, consumers, queues, fanout, duration, count, rate, size, confirm, topic;
} given;

static int parse_options(int argc, char **argv, bench_cfg *cfg, given *g) {
    memset(cfg, 0, sizeof *cfg);
    memset(g, 0, sizeof *g);
    cfg->uri_text = "amqp://guest:guest@127.0.0.1:5672/";
    cfg->producers = 1;
    cfg->consumers = 1;
    cfg->size = 16;
    cfg->queues = 1;
    cfg->prefix = "bench-";
    cfg->prefetch = 1000;
    cfg->timeout = 10;
    cfg->per_queue = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            return usage_error("unexpected argument '%s'", a);
        /* --flag=value or --flag value */
        char flag[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t fl = eq ? (size_t)(eq - a) : strlen(a);
        if (fl >= sizeof flag)
            return usage_error("unknown option %.40s...", a);
        memcpy(flag, a, fl);
        flag[fl] = 0;
        if (eq)
            val = eq + 1;

        static const char *const switches[] = {"--persistent",  "--no-consume", "--drain",
                                               "--keep-queues", "--json",       "--quiet", "--stream"};
        int is_switch = 0;
        for (size_t k = 0; k < ARRAY_LEN(switches); k++)
            if (strcmp(flag, switches[k]) == 0)
                is_switch = 1;
        if (is_switch) {
            if (val)
                return usage_error("%s takes no value", flag);
            if (!strcmp(flag, "--persistent"))
                cfg->persistent = 1;
            else if (!strcmp(flag, "--no-consume"))
                cfg->no_consume = 1;
            else if (!strcmp(flag, "--drain"))
                cfg->drain = 1;
            else if (!strcmp(flag, "--keep-queues"))
                cfg->keep = 1;
            else if (!strcmp(flag, "--json"))
                cfg->json = 1;
            else if (!strcmp(flag, "--stream"))
                cfg->stream = 1;
            else
                cfg->quiet = 1;
            continue;
        }
        static const char *const valued[] = {
            "--uri",     "--producers", "--consumers", "--size", "--queues",   "--queue-prefix", "--fanout",
            "--confirm", "--prefetch",  "--ack-every", "--rate", "--duration", "--count",        "--timeout",
            "--cacert",  "--topic-bindings", "--consumers-per-queue"};
        int known = 0;
        for (size_t k = 0; k < ARRAY_LEN(valued); k++)
            if (strcmp(flag, valued[k]) == 0)
                known = 1;
        if (!known)
            return usage_error("unknown option %s", flag);
        if (!val) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", flag);
            val = argv[++i];
        }
        uint64_t v = 0;
        int rc = 0;
        if (!strcmp(flag, "--uri")) {
            cfg->uri_text = val;
        } else if (!strcmp(flag, "--cacert")) {
            if (access(val, R_OK) != 0)
                return usage_error("--cacert: cannot read %s", val);
            client_tls_cacert(val);
        } else if (!strcmp(flag, "--queue-prefix")) {
            if (strlen(val) > 200)
                return usage_error("--queue-prefix is too long");
            cfg->prefix = val;
        } else if (!strcmp(flag, "--producers")) {
            rc = parse_u64(flag, val, 0, 1000, &v), cfg->producers = (int)v, g->producers = 1;
        } else if (!strcmp(flag, "--consumers")) {
            rc = parse_u64(flag, val, 0, 1000, &v), cfg->consumers = (int)v, g->consumers = 1;
        } else if (!strcmp(flag, "--size")) {
            rc = parse_u64(flag, val, 0, 64u << 20, &cfg->size), g->size = 1;
        } else if (!strcmp(flag, "--queues")) {
            rc = parse_u64(flag, val, 1, 10000, &v), cfg->queues = (int)v, g->queues = 1;
        } else if (!strcmp(flag, "--fanout")) {
            rc = parse_u64(flag, val, 1, 10000, &v), cfg->fanout = (int)v, g->fanout = 1;
        } else if (!strcmp(flag, "--consumers-per-queue")) {
            rc = parse_u64(flag, val, 1, 10000, &v), cfg->per_queue = (int)v;
        } else if (!strcmp(flag, "--topic-bindings")) {
            rc = parse_u64(flag, val, 1, 10000000, &cfg->topic_bindings), g->topic = 1;
        } else if (!strcmp(flag, "--confirm")) {
            rc = parse_u64(flag, val, 1, 1u << 24, &v), cfg->confirm = (uint32_t)v, g->confirm = 1;
        } else if (!strcmp(flag, "--prefetch")) {
            rc = parse_u64(flag, val, 0, 65535, &v), cfg->prefetch = (uint32_t)v;
        } else if (!strcmp(flag, "--ack-every")) {
            rc = parse_u64(flag, val, 0, 1u << 24, &v), cfg->ack_every = (uint32_t)v;
        } else if (!strcmp(flag, "--count")) {
            rc = parse_u64(flag, val, 1, UINT64_C(1) << 40, &cfg->count), g->count = 1;
        } else if (!strcmp(flag, "--rate")) {
            rc = parse_pos_double(flag, val, &cfg->rate), g->rate = 1;
        } else if (!strcmp(flag, "--duration")) {
            rc = parse_pos_double(flag, val, &cfg->duration), g->duration = 1;
        } else if (!strcmp(flag, "--timeout")) {
            rc = parse_pos_double(flag, val, &cfg->timeout);
        }
        if (rc < 0)
            return -1;
    }

    char err[256];
    if (uri_parse(cfg->uri_text, &cfg->uri, err, sizeof err) < 0)
        return usage_error("--uri: %s", err);
    if (g->count && g->duration)
        return usage_error("--count and --duration are exclusive: a run is bounded by one of them");
    if (cfg->drain && cfg->no_consume)
        return usage_error("--drain and --no-consume are exclusive");
    if (cfg->stream) {
        cfg->persistent = 1;
        if (!cfg->ack_every)
            cfg->ack_every = 100; /* streams refuse automatic acknowledgement */
        if (!cfg->prefetch)
            return usage_error("--stream needs a --prefetch (streams refuse consumers without one)");
        if (cfg->fanout)
            return usage_error("--stream and --fanout are exclusive");
        if (cfg->drain && !g->count)
            return usage_error("--drain --stream needs --count: a stream is never empty");
    }
    if (cfg->drain) {
        if (g->producers && cfg->producers)
            return usage_error("--drain only consumes; it takes no --producers");
        if ((g->count && !cfg->stream) || g->duration || g->rate || g->confirm)
            return usage_error(
                "--drain consumes what the queues hold; --count, --duration, --rate and --confirm "
                "do not apply");
        cfg->producers = 0;
    }
    if (cfg->no_consume) {
        if (g->consumers && cfg->consumers)
            return usage_error("--no-consume publishes only; it takes no --consumers");
        cfg->consumers = 0;
    }
    if (cfg->fanout) {
        if (g->queues && cfg->queues != cfg->fanout)
            return usage_error("--fanout %d binds %d queues; drop --queues", cfg->fanout, cfg->fanout);
        cfg->queues = cfg->fanout;
        if (!g->consumers && !cfg->no_consume)
            cfg->consumers = cfg->fanout;
        snprintf(cfg->exchange, sizeof cfg->exchange, "%sfanout", cfg->prefix);
    }
    if (cfg->topic_bindings) {
        if (cfg->fanout)
            return usage_error("--topic-bindings and --fanout are exclusive: one exchange per run");
        if (cfg->topic_bindings < (uint64_t)cfg->queues)
            return usage_error("--topic-bindings %llu is fewer than one per queue (%d queues)",
                               (unsigned long long)cfg->topic_bindings, cfg->queues);
        snprintf(cfg->exchange, sizeof cfg->exchange, "%stopic", cfg->prefix);
    }
    if (!cfg->drain && cfg->producers == 0)
        return usage_error("--producers 0 publishes nothing; use --drain to consume only");
    if (cfg->drain && cfg->consumers == 0)
        return usage_error("--drain needs at least one consumer");
    if (cfg->ack_every && cfg->prefetch && cfg->ack_every > cfg->prefetch)
        return usage_error("--ack-every %u exceeds --prefetch %u: the broker would stop delivering before an "
                           "ack is due",
                           cfg->ack_every, cfg->prefetch);
    if (cfg->count && cfg->count < (uint64_t)cfg->producers)
        return usage_error("--count %llu is less than one message per producer (%d producers)",
                           (unsigned long long)cfg->count, cfg->producers);
    if (!cfg->drain && !g->count && !g->duration)
        cfg->duration = 10;
    cfg->queue_names = xcalloc((size_t)cfg->queues, sizeof *cfg->queue_names);
    for (int q = 0; q < cfg->queues; q++) {
        char name[256];
        snprintf(name, sizeof name, "%s%d", cfg->prefix, q);
        cfg->queue_names[q] = xstrndup(name, strlen(name));
    }
    if (cfg->topic_bindings) {
        cfg->topic_keys = xcalloc((size_t)cfg->queues, sizeof *cfg->topic_keys);
        for (int q = 0; q < cfg->queues; q++) {
            char key[300];
            snprintf(key, sizeof key, "ferry.bench.%s", cfg->queue_names[q]);
            cfg->topic_keys[q] = xstrndup(key, strlen(key));
        }
    }
    return 0;
}

/* ---- topology ---- */

/* The binding key of --topic-bindings' i-th binding that matches nothing: six shapes with
 * '*' and '#' in different places, all ending in a word no routing key has ("n<i>"), so the
 * trie (or a scan) has real work at every level but only the queues' own keys match. */
static void topic_noise_key(char *out, size_t n, uint64_t i) {
    unsigned long long u = (unsigned long long)i;
    switch (i % 6) {
    case 0: snprintf(out, n, "ferry.bench.n%llu", u); break;
    case 1: snprintf(out, n, "ferry.*.n%llu", u); break;
    case 2: snprintf(out, n, "#.n%llu", u); break;
    case 3: snprintf(out, n, "n%llu.#", u); break;
    case 4: snprintf(out, n, "*.n%llu.#", u); break;
    default: snprintf(out, n, "ferry.#.n%llu.*", u); break;
    }
}

/* --topic-bindings N: declares the topic exchange and binds N keys. Each queue Q first gets
 * the patterns matching ferry.bench.Q (as many of ferry.bench.Q, ferry.*.Q and #.Q as N
 * allows: every message matches up to 3 bindings and lands once in its queue); the other
 * bindings are noise spread over the queues. Binds go in pipelined batches of 1,000. */
static int setup_topic(client *ctl, const bench_cfg *cfg) {
    if (client_exchange_delete(ctl, cfg->exchange) < 0 && ctl->fd < 0)
        return -1;
    if (client_exchange_declare(ctl, cfg->exchange, "topic", cfg->persistent) < 0) {
        fprintf(stderr, "ferry bench: declaring exchange %s: %s\n", cfg->exchange, ctl->err);
        return -1;
    }
    enum { BATCH = 1000 };
    static char keys[BATCH][300];
    const char *kp[BATCH], *qp[BATCH];
    uint64_t per_queue = cfg->topic_bindings / (uint64_t)cfg->queues;
    if (per_queue > 3)
        per_queue = 3;
    uint64_t matching = per_queue * (uint64_t)cfg->queues;
    size_t nb = 0;
    for (uint64_t i = 0; i < cfg->topic_bindings; i++) {
        int q;
        if (i < matching) {
            q = (int)(i / per_queue);
            const char *name = cfg->queue_names[q];
            static const char *const shapes[] = {"ferry.bench.%s", "ferry.*.%s", "#.%s"};
            snprintf(keys[nb], sizeof keys[nb], shapes[i % per_queue], name);
        } else {
            q = (int)(i % (uint64_t)cfg->queues);
            topic_noise_key(keys[nb], sizeof keys[nb], i);
        }
        kp[nb] = keys[nb];
        qp[nb] = cfg->queue_names[q];
        if (++nb == BATCH || i + 1 == cfg->topic_bindings) {
            if (client_queue_bind_batch(ctl, cfg->exchange, qp, kp, nb) < 0) {
                fprintf(stderr, "ferry bench: binding to %s: %s\n", cfg->exchange, ctl->err);
                return -1;
            }
            nb = 0;
        }
    }
    return 0;
}

/* Declares the bench queues (and fanout exchange) from scratch, or with --drain finds them
 * and counts their messages into *depth. 0, or -1 with the reason printed. */
static int setup_topology(client *ctl, const bench_cfg *cfg, uint64_t *depth) {
    *depth = 0;
    for (int q = 0; q < cfg->queues; q++) {
        const char *name = cfg->queue_names[q];
        uint32_t n = 0;
        if (cfg->drain) {
            if (client_queue_declare(ctl, name, 0, 1, &n) < 0) {
                fprintf(stderr, "ferry bench: queue %s: %s\n", name, ctl->err);
                return -1;
            }
            *depth += cfg->stream ? 0 : n; /* a stream's count is --count (declare-ok says 0) */
            continue;
        }
        /* Start empty and with our own arguments: a leftover queue (other durability,
         * stale messages) would skew or break the run. */
        if (client_queue_delete(ctl, name) < 0 && ctl->fd < 0) {
            fprintf(stderr, "ferry bench: deleting queue %s: %s\n", name, ctl->err);
            return -1;
        }
        if ((cfg->stream ? client_stream_declare(ctl, name) : client_queue_declare(ctl, name, cfg->persistent, 0, &n)) <
            0) {
            fprintf(stderr, "ferry bench: declaring queue %s: %s\n", name, ctl->err);
            return -1;
        }
    }
    if (cfg->fanout && !cfg->drain) {
        if (client_exchange_delete(ctl, cfg->exchange) < 0 && ctl->fd < 0)
            return -1;
        if (client_exchange_declare(ctl, cfg->exchange, "fanout", cfg->persistent) < 0) {
            fprintf(stderr, "ferry bench: declaring exchange %s: %s\n", cfg->exchange, ctl->err);
            return -1;
        }
        for (int q = 0; q < cfg->queues; q++)
            if (client_queue_bind(ctl, cfg->queue_names[q], cfg->exchange, "") < 0) {
                fprintf(stderr, "ferry bench: binding %s: %s\n", cfg->queue_names[q], ctl->err);
                return -1;
            }
    }
    if (cfg->topic_bindings && !cfg->drain && setup_topic(ctl, cfg) < 0)
        return -1;
    return 0;
}

static void teardown_topology(client *ctl, const bench_cfg *cfg) {
    if (cfg->keep || cfg->no_consume || ctl->fd < 0)
        return;
    for (int q = 0; q < cfg->queues; q++)
        client_queue_delete(ctl, cfg->queue_names[q]);
    if (cfg->fanout || cfg->topic_bindings)
        client_exchange_delete(ctl, cfg->exchange);
}

/* ---- report ---- */

typedef struct totals {
    uint64_t published, confirmed, nacked, unconfirmed, consumed, redelivered, expected;
    double elapsed_s, publish_s, consume_s;
    double publish_rate, consume_rate;
    double producer_cpu_max, consumer_cpu_max, cpu_total_s;
    double blocked_s;
    histogram confirm_lat, e2e_lat;
} totals;

static char *fmt_count(char *out, size_t n, uint64_t v) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = tmp[i];
    }
    out[o] = 0;
    return out;
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static void print_latency_text(const char *label, const histogram *h) {
    if (h->count == 0) {
        printf("%-18s none recorded\n", label);
        return;
    }
    printf("%-18s p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (mean %.3f ms, %llu samples)\n",
           label, ms(hist_percentile(h, 50)), ms(hist_percentile(h, 99)), ms(hist_percentile(h, 99.9)),
           ms(h->max), ms(h->sum / h->count), (unsigned long long)h->count);
}

static void print_latency_json(const char *key, const histogram *h) {
    if (h->count == 0) {
        printf("  \"%s\": null,\n", key);
        return;
    }
    printf("  \"%s\": {\"count\": %llu, \"p50\": %.4f, \"p99\": %.4f, \"p999\": %.4f, \"max\": %.4f, "
           "\"min\": %.4f, \"mean\": %.4f},\n",
           key, (unsigned long long)h->count, ms(hist_percentile(h, 50)), ms(hist_percentile(h, 99)),
           ms(hist_percentile(h, 99.9)), ms(h->max), ms(h->min), ms(h->sum / h->count));
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static char tls_version[32]; /* amqps: the protocol version the control connection negotiated */

static void report(const bench_cfg *cfg, const totals *t, int ok, const char *error) {
    const char *ack = cfg->ack_every ? "manual ack" : "auto-ack";
    if (cfg->json) {
        printf("{\n  \"uri\": ");
        json_string(cfg->uri_text);
        printf(", \"tls\": ");
        if (tls_version[0])
            json_string(tls_version);
        else
            printf("null");
        printf(",\n  \"producers\": %d, \"consumers\": %d, \"size\": %llu, \"queues\": %d, \"fanout\": %d, "
               "\"topic_bindings\": %llu, \"consumers_per_queue\": %d,\n",
               cfg->producers, cfg->consumers, (unsigned long long)cfg->size, cfg->queues, cfg->fanout,
               (unsigned long long)cfg->topic_bindings, cfg->per_queue);
        printf(
            "  \"persistent\": %s, \"confirm\": %u, \"prefetch\": %u, \"ack_every\": %u, \"rate\": %.1f,\n",
            cfg->persistent ? "true" : "false", cfg->confirm, cfg->prefetch, cfg->ack_every, cfg->rate);
        printf("  \"duration\": %.3f, \"count\": %llu, \"drain\": %s, \"no_consume\": %s,\n", cfg->duration,
               (unsigned long long)cfg->count, cfg->drain ? "true" : "false",
               cfg->no_consume ? "true" : "false");
        printf("  \"elapsed_s\": %.4f, \"publish_s\": %.4f, \"consume_s\": %.4f,\n", t->elapsed_s,
               t->publish_s, t->consume_s);
        printf("  \"published\": %llu, \"confirmed\": %llu, \"nacked\": %llu, \"unconfirmed\": %llu,\n",
               (unsigned long long)t->published, (unsigned long long)t->confirmed,
               (unsigned long long)t->nacked, (unsigned long long)t->unconfirmed);
        printf("  \"consumed\": %llu, \"expected\": %llu, \"redelivered\": %llu,\n",
               (unsigned long long)t->consumed, (unsigned long long)t->expected,
               (unsigned long long)t->redelivered);
        printf("  \"publish_rate\": %.1f, \"consume_rate\": %.1f, \"blocked_s\": %.3f,\n", t->publish_rate,
               t->consume_rate, t->blocked_s);
        print_latency_json("confirm_latency_ms", &t->confirm_lat);
        print_latency_json("latency_ms", &t->e2e_lat);
        printf("  \"bench_cpu\": {\"producer_max\": %.3f, \"consumer_max\": %.3f, \"total_s\": %.3f},\n",
               t->producer_cpu_max, t->consumer_cpu_max, t->cpu_total_s);
        printf("  \"ok\": %s, \"error\": ", ok ? "true" : "false");
        if (error)
            json_string(error);
        else
            printf("null");
        printf("\n}\n");
        fflush(stdout);
        return;
    }
    char a[32], b[32];
    printf("ferry bench  %s:%s  %d producer%s, %d consumer%s, %d queue%s%s, %llu B, %s, %s", cfg->uri.host,
           cfg->uri.port, cfg->producers, cfg->producers == 1 ? "" : "s", cfg->consumers,
           cfg->consumers == 1 ? "" : "s", cfg->queues, cfg->queues == 1 ? "" : "s",
           cfg->fanout ? " (fanout)" : "", (unsigned long long)cfg->size,
           cfg->persistent ? "persistent" : "transient", ack);
    if (cfg->confirm)
        printf(", confirms (window %u)", cfg->confirm);
    if (cfg->rate > 0)
        printf(", %.0f msg/s", cfg->rate);
    printf("\n");
    if (!cfg->drain)
        printf("%-18s %s msg in %.2f s = %s msg/s\n", "published", fmt_count(a, sizeof a, t->published),
               t->publish_s, fmt_count(b, sizeof b, (uint64_t)t->publish_rate));
    if (cfg->confirm)
        printf("%-18s %s msg (%llu nacked, %llu never confirmed)\n", "confirmed",
               fmt_count(a, sizeof a, t->confirmed), (unsigned long long)t->nacked,
               (unsigned long long)t->unconfirmed);
    if (cfg->consumers)
        printf("%-18s %s msg in %.2f s = %s msg/s%s\n", "consumed", fmt_count(a, sizeof a, t->consumed),
               t->consume_s, fmt_count(b, sizeof b, (uint64_t)t->consume_rate),
               t->redelivered ? " (some redelivered)" : "");
    if (cfg->consumers && cfg->duration > 0 && t->expected > t->consumed)
        printf("%-18s %s msg published but not consumed when the run ended\n", "backlog",
               fmt_count(a, sizeof a, t->expected - t->consumed));
    if (t->blocked_s > 0)
        printf("%-18s %.2f s (connection.blocked)\n", "blocked", t->blocked_s);
    if (cfg->confirm)
        print_latency_text("confirm latency", &t->confirm_lat);
    if (cfg->consumers)
        print_latency_text("latency", &t->e2e_lat);
    printf("%-18s busiest producer %.0f%% of a core, busiest consumer %.0f%%\n", "generator cpu",
           t->producer_cpu_max * 100, t->consumer_cpu_max * 100);
    if (!ok)
        printf("FAILED: %s\n", error);
    fflush(stdout);
}

/* ---- the run ---- */

static void progress_line(const bench_cfg *cfg, worker *ws, int nw, double t, uint64_t *last_pub,
                          uint64_t *last_con, double dt) {
    uint64_t pub = 0, con = 0;
    for (int i = 0; i < nw; i++) {
        pub += atomic_load_explicit(&ws[i].published, memory_order_relaxed);
        con += atomic_load_explicit(&ws[i].consumed, memory_order_relaxed);
    }
    char a[32], b[32], c[32];
    uint64_t routed = pub * (uint64_t)(cfg->fanout ? cfg->fanout : 1);
    fprintf(stderr, "%6.1fs  published %s msg/s  consumed %s msg/s  in flight %s\n", t,
            fmt_count(a, sizeof a, (uint64_t)((double)(pub - *last_pub) / dt)),
            fmt_count(b, sizeof b, (uint64_t)((double)(con - *last_con) / dt)),
            fmt_count(c, sizeof c, cfg->consumers && routed > con ? routed - con : 0));
    *last_pub = pub, *last_con = con;
}

static void sleep_ms(int n) {
    struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int bench_main(int argc, char **argv) {
    bench_cfg cfg;
    given g;
    if (parse_options(argc, argv, &cfg, &g) < 0)
        return EXIT_USAGE;
    signal(SIGPIPE, SIG_IGN);
    static bench_state st;
    g_state = &st;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    client ctl;
    if (client_open(&ctl, &cfg.uri, "ferry-bench-control") < 0) {
        fprintf(stderr, "ferry bench: %s\n", ctl.err);
        client_close(&ctl, 1000);
        return EXIT_RUN_FAILED;
    }
    if (client_tls_version(&ctl))
        snprintf(tls_version, sizeof tls_version, "%s", client_tls_version(&ctl));
    uint64_t depth = 0;
    if (setup_topology(&ctl, &cfg, &depth) < 0) {
        client_close(&ctl, 1000);
        return EXIT_RUN_FAILED;
    }

    /* Consumers first, so no message is published before someone listens. */
    const int nw = cfg.consumers + cfg.producers;
    worker *ws = xcalloc((size_t)(nw ? nw : 1), sizeof *ws);
    for (int i = 0; i < nw; i++) {
        worker *w = &ws[i];
        w->cfg = &cfg;
        w->st = &st;
        w->producer = i >= cfg.consumers;
        w->index = w->producer ? i - cfg.consumers : i;
        if (w->producer) {
            uint64_t per = cfg.count / (uint64_t)cfg.producers, extra = cfg.count % (uint64_t)cfg.producers;
            w->quota = per + ((uint64_t)w->index < extra ? 1 : 0);
            /* Producer i feeds queues i, i + P, i + 2P, ... in turn (one key each): with more
             * queues than producers every queue still gets messages. */
            char **names = cfg.topic_bindings ? cfg.topic_keys : cfg.queue_names;
            w->keys = xcalloc((size_t)cfg.queues, sizeof *w->keys);
            if (cfg.fanout)
                w->keys[w->nkeys++] = "";
            else if (cfg.queues <= cfg.producers)
                w->keys[w->nkeys++] = names[w->index % cfg.queues];
            else
                for (int q = w->index; q < cfg.queues; q += cfg.producers)
                    w->keys[w->nkeys++] = names[q];
        } else {
            /* Every queue gets a consumer: with fewer consumers than queues each takes
             * several, with more they share. */
            w->qs = xcalloc((size_t)cfg.queues, sizeof *w->qs);
            if (cfg.consumers <= cfg.queues) {
                for (int q = w->index; q < cfg.queues; q += cfg.consumers)
                    w->qs[w->nq++] = cfg.queue_names[q];
            } else {
                w->qs[w->nq++] = cfg.queue_names[w->index % cfg.queues];
            }
        }
    }
    int started = 0;
    const char *error = NULL;
    char errbuf[600];
    for (int phase = 0; phase < 2 && !atomic_load(&st.failed); phase++) {
        for (int i = 0; i < nw; i++) {
            if (ws[i].producer != phase)
                continue;
            if (pthread_create(&ws[i].thread, NULL, phase ? producer_main : consumer_main, &ws[i]) != 0) {
                fprintf(stderr, "ferry bench: cannot start a thread: %s\n", strerror(errno));
                atomic_store(&st.failed, 1);
                break;
            }
            started++;
        }
        while (atomic_load(&st.ready) < started && !atomic_load(&st.failed))
            sleep_ms(1);
    }

    if (cfg.drain) {
        if (cfg.stream)
            depth = cfg.count; /* the first --count events over all the streams */
        atomic_store(&st.expected, depth);
        atomic_store(&st.expected_known, 1);
    }
    st.t0_ns = now_ns();
    st.deadline_ns = cfg.duration > 0 ? st.t0_ns + (uint64_t)(cfg.duration * 1e9) : 0;
    atomic_store(&st.go, 1);

    /* Watch: progress lines, the deadline, the end of publishing, stalls. */
    uint64_t last_pub = 0, last_con = 0, last_total = 0;
    uint64_t next_line = st.t0_ns + 1000000000ull, last_change = st.t0_ns, prev_line = st.t0_ns;
    int stalled = 0;
    uint64_t grace_from = 0;
    for (;;) {
        sleep_ms(10);
        uint64_t now = now_ns();
        if (atomic_load(&st.failed))
            atomic_store(&st.stop, 1);
        if (!cfg.quiet && now >= next_line && !atomic_load(&st.stop)) {
            progress_line(&cfg, ws, nw, (double)(now - st.t0_ns) / 1e9, &last_pub, &last_con,
                          (double)(now - prev_line) / 1e9);
            prev_line = now;
            next_line += 1000000000ull;
        }
        int producers_done = 1, consumers_done = 1;
        for (int i = 0; i < nw; i++) {
            if (ws[i].producer)
                producers_done &= atomic_load(&ws[i].done);
            else
                consumers_done &= atomic_load(&ws[i].done);
        }
        if (producers_done && !atomic_load(&st.expected_known)) {
            /* What the consumers must receive: every publish (or every confirmed one),
             * once per queue it was routed to. */
            uint64_t base = 0;
            for (int i = 0; i < nw; i++)
                if (ws[i].producer)
                    base += cfg.confirm ? ws[i].confirmed : ws[i].published;
            atomic_store(&st.expected, base * (uint64_t)(cfg.fanout ? cfg.fanout : 1));
            atomic_store_explicit(&st.expected_known, 1, memory_order_release);
        }
        if (producers_done && consumers_done)
            break;
        /* Duration runs end at the deadline, plus up to a second for the consumers to take
         * what is still in flight; count-bounded ones when nothing has moved for --timeout
         * seconds once publishing is over. */
        if (st.deadline_ns && now >= st.deadline_ns && producers_done) {
            if (!grace_from)
                grace_from = now;
            if (now - grace_from >= DURATION_GRACE_NS)
                atomic_store(&st.stop, 1);
        }
        uint64_t total = atomic_load(&st.consumed_total);
        if (total != last_total)
            last_total = total, last_change = now;
        if (!st.deadline_ns && producers_done && !atomic_load(&st.stop) &&
            now - last_change > (uint64_t)(cfg.timeout * 1e9)) {
            stalled = 1;
            atomic_store(&st.stop, 1);
        }
    }
    uint64_t t_end = now_ns();
    for (int i = 0; i < nw; i++)
        if (ws[i].thread)
            pthread_join(ws[i].thread, NULL);

    totals t;
    memset(&t, 0, sizeof t);
    hist_init(&t.confirm_lat);
    hist_init(&t.e2e_lat);
    uint64_t pub_end = st.t0_ns, con_end = st.t0_ns;
    for (int i = 0; i < nw; i++) {
        worker *w = &ws[i];
        double util = w->cpu_s / ((double)(t_end - st.t0_ns) / 1e9 + 1e-9);
        t.cpu_total_s += w->cpu_s;
        if (w->producer) {
            t.published += w->published;
            t.confirmed += w->confirmed;
            t.nacked += w->nacked;
            t.unconfirmed += w->unconfirmed;
            t.blocked_s += (double)w->blocked_ns / 1e9;
            hist_merge(&t.confirm_lat, &w->hist);
            pub_end = MAX(pub_end, w->end_ns);
            t.producer_cpu_max = MAX(t.producer_cpu_max, util);
        } else {
            t.consumed += w->consumed;
            t.redelivered += w->redelivered;
            hist_merge(&t.e2e_lat, &w->hist);
            if (w->consumed)
                con_end = MAX(con_end, w->end_ns);
            t.consumer_cpu_max = MAX(t.consumer_cpu_max, util);
        }
        if (w->err[0] && !error) {
            snprintf(errbuf, sizeof errbuf, "%s", w->err);
            error = errbuf;
        }
    }
    t.expected = atomic_load(&st.expected);
    t.elapsed_s = (double)(t_end - st.t0_ns) / 1e9;
    t.publish_s = (double)(pub_end - st.t0_ns) / 1e9;
    t.consume_s = (double)(con_end - st.t0_ns) / 1e9;
    t.publish_rate = t.publish_s > 0 ? (double)t.published / t.publish_s : 0;
    t.consume_rate = t.consume_s > 0 ? (double)t.consumed / t.consume_s : 0;

    teardown_topology(&ctl, &cfg);
    client_close(&ctl, 2000);

    /* Verdict. A count-bounded run (and a drain) must deliver everything that was confirmed,
     * or published when not confirming. */
    int count_bounded = cfg.duration == 0;
    if (!error && atomic_load(&st.interrupted)) {
        snprintf(errbuf, sizeof errbuf, "interrupted");
        error = errbuf;
    }
    if (!error && count_bounded && cfg.consumers && t.consumed < t.expected) {
        char a[32], b[32], c[32];
        snprintf(errbuf, sizeof errbuf, "consumed %s of %s %s messages (%s missing%s)",
                 fmt_count(a, sizeof a, t.consumed), fmt_count(b, sizeof b, t.expected),
                 cfg.drain     ? "queued"
                 : cfg.confirm ? "confirmed"
                               : "published",
                 fmt_count(c, sizeof c, t.expected - t.consumed),
                 stalled ? ", nothing arrived for --timeout seconds" : "");
        error = errbuf;
    }
    if (!error && count_bounded && t.unconfirmed) {
        snprintf(errbuf, sizeof errbuf, "%llu publishes were never confirmed",
                 (unsigned long long)t.unconfirmed);
        error = errbuf;
    }
    if (t.nacked && !cfg.json)
        fprintf(stderr, "ferry bench: warning: the broker nacked %llu publishes\n",
                (unsigned long long)t.nacked);
    report(&cfg, &t, error == NULL, error);
    if (error && !cfg.json)
        fprintf(stderr, "ferry bench: %s\n", error);

    for (int i = 0; i < nw; i++) {
        free((void *)ws[i].qs);
        free((void *)ws[i].keys);
    }
    free(ws);
    for (int q = 0; q < cfg.queues; q++)
        free(cfg.queue_names[q]);
    free(cfg.queue_names);
    return error ? EXIT_RUN_FAILED : 0;
}
