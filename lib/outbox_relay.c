/* outbox_relay.c — the outbox relay: reads pending rows of ferry_outbox, publishes them with
 * publisher confirms, marks the confirmed ones sent.
 *
 * Guarantees, and where they come from:
 *  - at-least-once: a row is marked sent only after the broker confirmed it; a crash, a lost
 *    connection or a nack leaves it pending and it is published again (message_id = event_id,
 *    so a queue's x-deduplication-window or an idempotent consumer drops the copy);
 *  - per-aggregate order: rows of one aggregate go out in id order on one channel, a row is
 *    marked only if every earlier row of its aggregate in the batch was confirmed (a failure
 *    "blocks" the rest of that aggregate until the next round), and replicas never publish
 *    one aggregate at once (the backend's claim: SQLite lease, PostgreSQL advisory locks);
 *  - never silently dropped: a row the broker cannot take (headers that are not a JSON object,
 *    a closed channel, a nack) stays pending, and the reason is logged.
 *
 * The AMQP side is libferry's reliable publisher (publisher.c): a batch is sent pipelined
 * (ferry_publisher_send) and settled with one ferry_publisher_flush, which reconnects with
 * backoff and sends unsettled messages again if the connection drops, and reports each row's
 * result (confirmed, nacked, refused by a closed channel, e.g. 404 for a missing exchange).
 * A round costs one confirm round trip, not one per row.
 */
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <amqp.h>
#include <jansson.h>

#include "internal.h"
#include "outbox_check.h"
#include "outbox_int.h"

#define DEFAULT_URI "amqp://guest:guest@127.0.0.1:5672/"
#define CONFIRM_TIMEOUT_MS 30000
#define PURGE_EVERY_MS 10000

struct ferry_outbox_relay {
    outbox_db *db;
    int kind; /* 1 SQLite, 2 PostgreSQL */
    char *uri;
    char hostport[300];   /* host:port of the broker, for messages */
    ferry_publisher *pub; /* NULL until (re)made */
    int poll_ms, batch, lease_ms;
    int64_t retention_ms, last_purge;
    void (*log)(void *, const char *);
    void *log_arg;
    volatile sig_atomic_t stop;
    int fault_kill_after_confirm; /* test hook: FERRY_OUTBOX_FAULT=kill-after-confirm */
    uint64_t sent, published;
    char err[768];
};

static void rlog(ferry_outbox_relay *r, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->log) {
        r->log(r->log_arg, line);
        return;
    }
    time_t t = time(NULL);
    struct tm tm;
    char ts[32];
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s ferry outbox relay: %s\n", ts, line);
}

static int set_err(ferry_outbox_relay *r, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- JSON headers -> AMQP field table --------------------------------------------------- */

static int to_field(json_t *j, amqp_field_value_t *out, amqp_pool_t *pool, int depth);

static int to_table(json_t *obj, amqp_table_t *t, amqp_pool_t *pool, int depth) {
    size_t n = json_object_size(obj);
    t->num_entries = (int)n;
    t->entries = n ? amqp_pool_alloc(pool, n * sizeof *t->entries) : NULL;
    if (n && t->entries == NULL)
        return -1;
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (strlen(k) > 255) /* AMQP field names are short strings */
            return -1;
        t->entries[i].key = amqp_cstring_bytes(k);
        if (to_field(v, &t->entries[i].value, pool, depth + 1) < 0)
            return -1;
        i++;
    }
    return 0;
}

static int to_field(json_t *j, amqp_field_value_t *out, amqp_pool_t *pool, int depth) {
    if (depth > 32)
        return -1;
    switch (json_typeof(j)) {
    case JSON_STRING:
        out->kind = AMQP_FIELD_KIND_UTF8;
        out->value.bytes.len = json_string_length(j);
        out->value.bytes.bytes = (void *)json_string_value(j);
        return 0;
    case JSON_INTEGER: {
        /* 'I' (signed 32) when it fits, as pika and RabbitMQ's own clients write integers;
         * 'l' beyond. (Python's clients read 'l' as unsigned, so a small negative number sent
         * as 'l' would arrive as 2^64 - n.) */
        json_int_t v = json_integer_value(j);
        if (v >= INT32_MIN && v <= INT32_MAX) {
            out->kind = AMQP_FIELD_KIND_I32;
            out->value.i32 = (int32_t)v;
        } else {
            out->kind = AMQP_FIELD_KIND_I64;
            out->value.i64 = v;
        }
        return 0;
    }
    case JSON_REAL:
        out->kind = AMQP_FIELD_KIND_F64;
        out->value.f64 = json_real_value(j);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        out->kind = AMQP_FIELD_KIND_BOOLEAN;
        out->value.boolean = json_is_true(j);
        return 0;
    case JSON_NULL:
        out->kind = AMQP_FIELD_KIND_VOID;
        return 0;
    case JSON_OBJECT:
        out->kind = AMQP_FIELD_KIND_TABLE;
        return to_table(j, &out->value.table, pool, depth);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        out->kind = AMQP_FIELD_KIND_ARRAY;
        out->value.array.num_entries = (int)n;
        out->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t)) : NULL;
        if (n && out->value.array.entries == NULL)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (to_field(json_array_get(j, i), &out->value.array.entries[i], pool, depth + 1) < 0)
                return -1;
        return 0;
    }
    }
    return -1;
}

/* ---- a small set of aggregate ids (those blocked in this round) ------------------------- */

typedef struct aggset {
    const char **slot;
    size_t cap;
} aggset;

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int agg_has(const aggset *a, const char *k) {
    for (size_t i = fnv(k) & (a->cap - 1);; i = (i + 1) & (a->cap - 1)) {
        if (a->slot[i] == NULL)
            return 0;
        if (strcmp(a->slot[i], k) == 0)
            return 1;
    }
}

static void agg_add(aggset *a, const char *k) {
    size_t i = fnv(k) & (a->cap - 1);
    while (a->slot[i] != NULL) {
        if (strcmp(a->slot[i], k) == 0)
            return;
        i = (i + 1) & (a->cap - 1);
    }
    a->slot[i] = k;
}

/* ---- the publisher ------------------------------------------------------------------------ */

/* Makes the publisher: one connection attempt (a relay that cannot reach its broker at start
 * says so at once); later losses are the publisher's to reconnect. */
static int open_publisher(ferry_outbox_relay *r) {
    ferry_conn_opts co;
    ferry_conn_opts_init(&co);
    co.connection_name = "ferry outbox relay";
    ferry_publisher_opts po;
    ferry_publisher_opts_init(&po);
    po.persistent = 1;
    po.max_unconfirmed = (size_t)r->batch;
    int e = ferry_publisher_new(&r->pub, r->uri, &co, &po);
    if (e < 0) {
        r->pub = NULL;
        return set_err(r, e, "%s %s: %s",
                       e == FERRY_EAUTH ? "login refused by the broker at" : "cannot reach the broker at", r->hostport,
                       ferry_strerror(e));
    }
    return FERRY_OK;
}

typedef struct settle_ctx {
    unsigned char *state; /* per row: 0 waiting, 1 confirmed, 2 failed */
    int first_err;
} settle_ctx;

static void on_settled(void *arg, uint64_t token, int result) {
    settle_ctx *c = arg;
    c->state[token] = result == 0 ? 1 : 2;
    if (result != 0 && c->first_err == 0)
        c->first_err = result;
}

/* ---- one round -------------------------------------------------------------------------- */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ferry_outbox_relay_round(ferry_outbox_relay *r, int *published) {
    if (published)
        *published = 0;
    if (r->pub == NULL) {
        int e = open_publisher(r);
        if (e)
            return e;
    }
    outbox_row *rows = NULL;
    size_t n = 0;
    int e = r->db->ops->claim(r->db, r->batch, &rows, &n);
    if (e) {
        set_err(r, e, "%s", r->db->err);
        r->db->ops->release(r->db);
        return e;
    }
    int result = FERRY_OK;
    if (n > 0) {
        aggset blocked = {NULL, 1};
        while (blocked.cap < 2 * n)
            blocked.cap <<= 1;
        blocked.slot = calloc(blocked.cap, sizeof *blocked.slot);
        unsigned char *sent = calloc(n, 1);  /* handed to the publisher */
        unsigned char *state = calloc(n, 1); /* 1 confirmed, 2 failed (on_settled) */
        int64_t *ids = calloc(n, sizeof *ids);
        if (!blocked.slot || !sent || !state || !ids) {
            result = set_err(r, FERRY_ENOMEM, "out of memory");
            goto done;
        }
        amqp_pool_t pool;
        init_amqp_pool(&pool, 4096);
        int pub_err = FERRY_OK;
        size_t nsent = 0;
        for (size_t i = 0; i < n && pub_err == FERRY_OK; i++) {
            outbox_row *w = &rows[i];
            if (agg_has(&blocked, w->aggregate_id))
                continue;
            const char *bad = outbox_check_headers(w->headers);
            if (!bad && (strlen(w->event_id) == 0 || strlen(w->event_id) > 255))
                bad = "event_id must be 1-255 bytes";
            if (!bad && (strlen(w->exchange) > 255 || strlen(w->routing_key) > 255 ||
                         (w->content_type && strlen(w->content_type) > 255)))
                bad = "exchange, routing_key and content_type must be at most 255 bytes";
            json_t *hj = NULL;
            amqp_basic_properties_t props;
            memset(&props, 0, sizeof props);
            if (!bad) {
                hj = json_loads(w->headers, 0, NULL);
                if (to_table(hj, &props.headers, &pool, 0) < 0)
                    bad = "headers hold a value AMQP cannot carry (nesting deeper than 32, a key over 255 bytes)";
            }
            if (bad) {
                rlog(r, "event %s (aggregate %s, id %lld) is not published: %s; it and the rest of its aggregate "
                        "stay pending",
                     w->event_id, w->aggregate_id, (long long)w->id, bad);
                agg_add(&blocked, w->aggregate_id);
                json_decref(hj);
                continue;
            }
            props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
            props.delivery_mode = 2;
            props.message_id = amqp_cstring_bytes(w->event_id);
            if (w->content_type) {
                props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
                props.content_type = amqp_cstring_bytes(w->content_type);
            }
            amqp_bytes_t body = {w->body_len, w->body}, none = {0, NULL};
            ferry_message *m = NULL;
            int rc = fm_from_parts(&m, &props, body, none, none, 0);
            json_decref(hj);
            if (rc == 0)
                rc = ferry_publisher_send(r->pub, w->exchange, w->routing_key, m, (uint64_t)i);
            ferry_message_free(m);
            if (rc < 0) {
                pub_err = set_err(r, rc, "publish failed: %s", ferry_strerror(rc));
                break;
            }
            sent[i] = 1;
            nsent++;
            r->published++;
        }
        empty_amqp_pool(&pool);
        if (nsent > 0) {
            settle_ctx sc = {state, 0};
            /* Flush in 1 s slices (a stop is noticed; an outage is logged once) for up to
             * CONFIRM_TIMEOUT_MS: meanwhile the publisher reconnects with backoff and sends
             * what is unsettled again. */
            int fe, waited = 0, told = 0;
            while ((fe = ferry_publisher_flush(r->pub, 1000, on_settled, &sc)) == FERRY_ETIMEDOUT &&
                   (waited += 1000) < CONFIRM_TIMEOUT_MS && !r->stop)
                if (!told++)
                    rlog(r, "waiting for the broker's confirms (%s); retrying",
                         ferry_conn_last_error(ferry_publisher_conn(r->pub)));
            if (told && fe == 0)
                rlog(r, "recovered: the broker confirmed");
            if (fe < 0) {
                /* not all settled in time: drop the publisher (and what it still holds) so a
                 * later round starts clean; those rows stay pending and go out again */
                pub_err = set_err(r, fe, "no confirm from the broker within %d s (%s)", CONFIRM_TIMEOUT_MS / 1000,
                                  ferry_conn_last_error(ferry_publisher_conn(r->pub)));
                ferry_publisher_free(r->pub);
                r->pub = NULL;
            } else if (sc.first_err && pub_err == FERRY_OK) {
                pub_err = set_err(r, sc.first_err, "the broker did not take every event: %s (%s)",
                                  ferry_strerror(sc.first_err), ferry_conn_last_error(ferry_publisher_conn(r->pub)));
            }
        }
        if (r->fault_kill_after_confirm && nsent > 0 && pub_err == FERRY_OK) {
            /* test hook: die after the broker confirmed and before the rows are marked */
            rlog(r, "FERRY_OUTBOX_FAULT=kill-after-confirm: killing myself after %zu confirms", nsent);
            raise(SIGKILL);
        }
        /* Mark a row only if it was confirmed and nothing earlier of its aggregate failed. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            outbox_row *w = &rows[i];
            if (agg_has(&blocked, w->aggregate_id))
                continue;
            if (sent[i] && state[i] == 1)
                ids[k++] = w->id;
            else {
                if (sent[i] && state[i] == 2)
                    rlog(r, "event %s (aggregate %s) was not taken by the broker; it stays pending", w->event_id,
                         w->aggregate_id);
                agg_add(&blocked, w->aggregate_id);
            }
        }
        if (k > 0) {
            int me = r->db->ops->mark_sent(r->db, ids, k);
            if (me) {
                result = set_err(r, me, "%s", r->db->err);
                goto done;
            }
            r->sent += k;
            if (published)
                *published = (int)k;
        }
        if (pub_err)
            result = pub_err;
    done:
        free(blocked.slot);
        free(sent);
        free(state);
        free(ids);
    }
    outbox_rows_free(rows, n);
    r->db->ops->release(r->db);
    /* Retention runs every 10 s, or every half retention when that is shorter (>= 100 ms). */
    int64_t every = r->retention_ms / 2 < PURGE_EVERY_MS ? (r->retention_ms / 2 > 100 ? r->retention_ms / 2 : 100)
                                                         : PURGE_EVERY_MS;
    if (result == FERRY_OK && r->retention_ms >= 0 && mono_ms() - r->last_purge >= every) {
        int64_t del = 0;
        r->last_purge = mono_ms();
        int pe = r->db->ops->purge(r->db, r->retention_ms, &del);
        if (pe)
            rlog(r, "retention: %s", r->db->err);
    }
    return result;
}

/* ---- open, run, close ------------------------------------------------------------------- */

int ferry_outbox_relay_open(ferry_outbox_relay **out, const ferry_outbox_relay_options *opt, char *err,
                            size_t errlen) {
    char scratch[8];
    if (err == NULL) {
        err = scratch;
        errlen = sizeof scratch;
    }
    const char *path = NULL;
    int kind = opt ? ferry_outbox_db_kind(opt->db, &path) : FERRY_EINVAL;
    if (kind < 0) {
        snprintf(err, errlen, "invalid database '%s': expected sqlite:PATH or postgresql://…",
                 opt && opt->db ? opt->db : "(none)");
        return FERRY_EINVAL;
    }
    if (opt->poll_ms < 0 || opt->batch < 0 || opt->lease_ms < 0 || opt->retention_ms < -1) {
        snprintf(err, errlen, "poll_ms, batch and lease_ms must be >= 0, retention_ms >= -1");
        return FERRY_EINVAL;
    }
    ferry_outbox_relay *r = calloc(1, sizeof *r);
    if (r == NULL)
        return FERRY_ENOMEM;
    r->kind = kind;
    r->poll_ms = opt->poll_ms ? opt->poll_ms : (kind == 1 ? 100 : 1000);
    r->batch = opt->batch ? opt->batch : 500;
    r->lease_ms = opt->lease_ms ? opt->lease_ms : 5000;
    r->retention_ms = opt->retention_ms ? opt->retention_ms : 7LL * 24 * 3600 * 1000;
    r->log = opt->log;
    r->log_arg = opt->log_arg;
    r->last_purge = mono_ms() - PURGE_EVERY_MS;
    const char *fault = getenv("FERRY_OUTBOX_FAULT");
    r->fault_kill_after_confirm = fault && strcmp(fault, "kill-after-confirm") == 0;
    r->uri = strdup(opt->uri ? opt->uri : DEFAULT_URI);
    char *parse = strdup(r->uri ? r->uri : "");
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (r->uri == NULL || parse == NULL || amqp_parse_url(parse, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "invalid AMQP URI '%s': expected amqp://user:pass@host:port/vhost", opt->uri);
        free(parse);
        free(r->uri);
        free(r);
        return FERRY_EINVAL;
    }
    snprintf(r->hostport, sizeof r->hostport, "%s:%d", ci.host, ci.port);
    free(parse);
    int e = kind == 1 ? outbox_sqlite_open(&r->db, path, r->lease_ms, err, errlen)
                      : outbox_pg_open(&r->db, opt->db, err, errlen);
    if (e) {
        free(r->uri);
        free(r);
        return e;
    }
    e = open_publisher(r);
    if (e) {
        snprintf(err, errlen, "%s", r->err);
        r->db->ops->close(r->db);
        free(r->uri);
        free(r);
        return e;
    }
    *out = r;
    return FERRY_OK;
}

/* Sleeps ms in slices, returning early on stop. */
static void nap(ferry_outbox_relay *r, int ms) {
    while (ms > 0 && !r->stop) {
        int s = ms > 100 ? 100 : ms;
        struct timespec ts = {0, (long)s * 1000000L};
        nanosleep(&ts, NULL);
        ms -= s;
    }
}

int ferry_outbox_relay_run(ferry_outbox_relay *r) {
    int backoff = 0;
    char last_err[sizeof r->err] = "";
    while (!r->stop) {
        int n = 0;
        int e = ferry_outbox_relay_round(r, &n);
        if (e) {
            if (strcmp(last_err, r->err) != 0) { /* one line per new error, not one per retry */
                rlog(r, "%s (retrying with backoff)", r->err);
                snprintf(last_err, sizeof last_err, "%s", r->err);
            }
            backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 100;
            nap(r, backoff);
            continue;
        }
        if (last_err[0]) {
            rlog(r, "recovered: publishing again");
            last_err[0] = '\0';
        }
        backoff = 0;
        if (n >= r->batch)
            continue; /* more may be waiting: no sleep */
        /* Wait for NOTIFY (PostgreSQL) or the poll interval, in slices so a stop is quick. */
        int left = r->poll_ms;
        while (left > 0 && !r->stop) {
            int s = left > 100 ? 100 : left;
            int w = r->db->ops->wait(r->db, s);
            if (w != 0)
                break; /* woken (or an error: the next round's claim reports it) */
            left -= s;
        }
    }
    return FERRY_OK;
}

void ferry_outbox_relay_stop(ferry_outbox_relay *r) {
    r->stop = 1;
}

const char *ferry_outbox_relay_error(const ferry_outbox_relay *r) {
    return r->err;
}

uint64_t ferry_outbox_relay_sent(const ferry_outbox_relay *r) {
    return r->sent;
}

void ferry_outbox_relay_close(ferry_outbox_relay *r) {
    if (r == NULL)
        return;
    ferry_publisher_free(r->pub);
    r->db->ops->close(r->db);
    free(r->uri);
    free(r);
}
