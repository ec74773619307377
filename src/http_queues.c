/* http_queues.c — GET /api/queues on the HTTP thread: the loop hands over a flat snapshot of
 * the queues (mgmt_snap.h), and this file filters, sorts and pages it and writes the JSON
 * text itself (no JSON objects per field: a list of 10,000 queues is about 18 MB of JSON).
 *
 * A snapshot serves the requests of the next second (RabbitMQ's counts are at most 5 s old,
 * ours at most 1 s), and the text of the last answer is kept with it, so a dashboard polling
 * every 100 ms costs the loop one cheap copy a second. Every request still logs in through the
 * loop; only the copy is shared, and only between requests of the same user and vhost. */
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_int.h"
#include "mgmt_json.h"
#include "mgmt_snap.h"
#include "util.h"

#define SNAP_MAX_AGE_MS 1000

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    qsnaps *snap;
    char key[600];   /* user \n vhost filter */
    char *url;       /* the last answer's URL and query, and its text */
    qblob *text;
} cache;

/* An answer's text, shared (not copied) by the cache and the responses sending it. */
qblob *qblob_new(const void *p, size_t n) {
    qblob *b = xmalloc(sizeof *b + n + 1);
    b->refs = 1;
    b->gz = NULL;
    b->len = n;
    memcpy(b->data, p, n);
    b->data[n] = 0;
    return b;
}

/* Drops one reference (cache_mu held): the blob to free, and its gzipped text, or NULL. */
static qblob *drop_locked(qblob *b) {
    if (!b || --b->refs > 0)
        return NULL;
    if (b->gz && --b->gz->refs == 0)
        free(b->gz);
    return b;
}

void qblob_unref(void *cls) {
    pthread_mutex_lock(&cache_mu);
    qblob *dead = drop_locked(cls);
    pthread_mutex_unlock(&cache_mu);
    free(dead);
}

qblob *qblob_gzip(qblob *t) {
    pthread_mutex_lock(&cache_mu);
    qblob *z = t->gz;
    if (z)
        z->refs++;
    pthread_mutex_unlock(&cache_mu);
    if (z)
        return z;
    size_t zl = 0;
    char *d = http_gzip(t->data, t->len, &zl); /* (outside the lock: 50-100 ms for 18 MB) */
    if (!d)
        return NULL;
    z = qblob_new(d, zl);
    free(d);
    qblob *spare = NULL;
    pthread_mutex_lock(&cache_mu);
    if (t->gz) { /* made meanwhile by another request */
        spare = z;
        z = t->gz;
    } else {
        t->gz = z; /* t's reference */
    }
    z->refs++;
    pthread_mutex_unlock(&cache_mu);
    free(spare);
    return z;
}

void qsnaps_truncate(qsnaps *s, size_t n) {
    for (; s->n > n; s->n--) {
        free(s->a[s->n - 1].name);
        free(s->a[s->n - 1].extra);
    }
}

void qsnaps_free(qsnaps *s) {
    if (!s)
        return;
    qsnaps_truncate(s, 0);
    free(s->a);
    free(s);
}

static void snap_release(qsnaps *s) {
    if (!s)
        return;
    pthread_mutex_lock(&cache_mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&cache_mu);
    if (last)
        qsnaps_free(s);
}

void http_queues_cache_clear(void) {
    pthread_mutex_lock(&cache_mu);
    qsnaps *s = cache.snap;
    cache.snap = NULL;
    qblob *t = cache.text;
    free(cache.url);
    cache.url = NULL;
    cache.text = NULL;
    pthread_mutex_unlock(&cache_mu);
    snap_release(s);
    qblob_unref(t);
}

/* ---- JSON text ---- */

static void put(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void put_str(buf *b, const char *s) {
    buf_u8(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_u8(b, '\\');
            buf_u8(b, *p);
        } else if (*p < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *p);
            put(b, e);
        } else {
            buf_u8(b, *p);
        }
    }
    buf_u8(b, '"');
}

static void put_u(buf *b, const char *k, uint64_t v) {
    char t[96];
    snprintf(t, sizeof t, "\"%s\":%llu,", k, (unsigned long long)v);
    put(b, t);
}

static void put_rate(buf *b, double r) {
    char t[64];
    snprintf(t, sizeof t, "{\"rate\":%.1f}", r);
    put(b, t);
}

static void put_stat(buf *b, const char *k, uint64_t v, double r) {
    put_u(b, k, v);
    char t[96];
    snprintf(t, sizeof t, "\"%s_details\":", k);
    put(b, t);
    put_rate(b, r);
    buf_u8(b, ',');
}

static void put_time(buf *b, uint64_t ms) {
    json_t *t = mj_time(ms);
    put_str(b, json_string_value(t));
    json_decref(t);
}

/* One queue, with the fields and order of mgmt_api.c's queue_json (detail 0). */
static void queue_text(buf *b, const qsnap *q, const char *node) {
    put(b, "{\"arguments\":");
    if (q->args_len) {
        json_t *a = mj_table((slice){q->args, q->args_len});
        char *s = json_dumps(a, JSON_COMPACT);
        put(b, s ? s : "{}");
        free(s);
        json_decref(a);
    } else {
        put(b, "{}");
    }
    put(b, q->auto_delete ? ",\"auto_delete\":true," : ",\"auto_delete\":false,");
    char t[700];
    snprintf(t, sizeof t,
             "\"backing_queue_status\":{\"avg_ack_egress_rate\":%.1f,\"avg_ack_ingress_rate\":%.1f,"
             "\"avg_egress_rate\":%.1f,\"avg_ingress_rate\":%.1f,\"delta\":[\"delta\",\"undefined\",0,0,\"undefined\"],"
             "\"len\":%llu,\"mode\":\"default\",\"next_deliver_seq_id\":%llu,\"next_seq_id\":%llu,\"q1\":0,\"q2\":0,"
             "\"q3\":0,\"q4\":%llu,\"target_ram_count\":\"infinity\",\"version\":1},",
             q->rate[R_ACK], q->rate[R_DELIVER], q->rate[R_DELIVER_GET], q->rate[R_PUBLISH],
             (unsigned long long)q->ready,
             (unsigned long long)(q->cnt.deliver + q->cnt.deliver_no_ack + q->cnt.get + q->cnt.get_no_ack),
             (unsigned long long)q->next_seq, (unsigned long long)q->ready);
    put(b, t);
    put(b, q->consumers ? "\"consumer_capacity\":1.0,\"consumer_utilisation\":1.0,"
                        : "\"consumer_capacity\":0.0,\"consumer_utilisation\":0.0,");
    put_u(b, "consumers", q->consumers);
    put(b, q->durable ? "\"durable\":true," : "\"durable\":false,");
    put(b, "\"effective_policy_definition\":{},");
    put(b, q->exclusive ? "\"exclusive\":true," : "\"exclusive\":false,");
    put(b, "\"exclusive_consumer_tag\":");
    if (q->excl_tag)
        put_str(b, q->excl_tag);
    else
        put(b, "null");
    put(b, ",\"garbage_collection\":{\"fullsweep_after\":65535,\"max_heap_size\":0,\"min_bin_vheap_size\":0,"
           "\"min_heap_size\":0,\"minor_gcs\":0},\"head_message_timestamp\":null,\"idle_since\":");
    put_time(b, q->idle_since);
    buf_u8(b, ',');
    put_u(b, "memory", q->memory);
    put_u(b, "message_bytes", q->ready_bytes + q->unacked_bytes);
    put(b, "\"message_bytes_paged_out\":0,\"message_bytes_persistent\":0,");
    put_u(b, "message_bytes_ram", q->ready_bytes + q->unacked_bytes);
    put_u(b, "message_bytes_ready", q->ready_bytes);
    put_u(b, "message_bytes_unacknowledged", q->unacked_bytes);
    put(b, "\"message_stats\":{");
    const qcounters *c = &q->cnt;
    put_stat(b, "ack", c->ack, q->rate[R_ACK]);
    put_stat(b, "deliver", c->deliver, q->rate[R_DELIVER]);
    put_stat(b, "deliver_get", c->deliver + c->deliver_no_ack + c->get + c->get_no_ack, q->rate[R_DELIVER_GET]);
    put_stat(b, "deliver_no_ack", c->deliver_no_ack, q->rate[R_DELIVER_NO_ACK]);
    put_stat(b, "get", c->get, q->rate[R_GET]);
    put_stat(b, "get_empty", c->get_empty, q->rate[R_GET_EMPTY]);
    put_stat(b, "get_no_ack", c->get_no_ack, q->rate[R_GET_NO_ACK]);
    put_stat(b, "publish", c->publish, q->rate[R_PUBLISH]);
    put_stat(b, "redeliver", c->redeliver, q->rate[R_REDELIVER]);
    b->len--; /* the last comma */
    put(b, "},");
    put_stat(b, "messages", q->ready + q->unacked, q->rate[R_MESSAGES]);
    put(b, "\"messages_paged_out\":0,\"messages_persistent\":0,");
    put_u(b, "messages_ram", q->ready + q->unacked);
    put_stat(b, "messages_ready", q->ready, q->rate[R_READY]);
    put_u(b, "messages_ready_ram", q->ready);
    put_stat(b, "messages_unacknowledged", q->unacked, q->rate[R_UNACKED]);
    put_u(b, "messages_unacknowledged_ram", q->unacked);
    put(b, "\"name\":");
    put_str(b, q->name);
    put(b, ",\"node\":");
    put_str(b, node);
    put(b, ",\"operator_policy\":null,");
    if (q->owner_name) {
        put(b, "\"owner_pid_details\":{\"name\":");
        put_str(b, q->owner_name);
        put(b, ",\"peer_host\":");
        put_str(b, q->owner_host);
        snprintf(t, sizeof t, ",\"peer_port\":%d},", q->owner_port);
        put(b, t);
    }
    put(b, "\"policy\":null,\"recoverable_slaves\":null,\"reductions\":0,\"reductions_details\":{\"rate\":0.0},"
           "\"single_active_consumer_tag\":");
    if (q->sac_tag)
        put_str(b, q->sac_tag);
    else
        put(b, "null");
    put(b, ",\"state\":\"running\",\"type\":");
    put_str(b, q->type);
    put(b, ",\"vhost\":");
    put_str(b, q->vhost);
    if (q->extra) {
        buf_u8(b, ',');
        put(b, q->extra);
    }
    buf_u8(b, '}');
}

/* ---- sorting on the snapshot ---- */

typedef struct skey {
    int kind; /* 0 string, 1 number */
    const char *(*s)(const qsnap *);
    double (*d)(const qsnap *);
} skey;

static const char *k_name(const qsnap *q) { return q->name; }
static const char *k_vhost(const qsnap *q) { return q->vhost; }
static double k_messages(const qsnap *q) { return (double)(q->ready + q->unacked); }
static double k_ready(const qsnap *q) { return (double)q->ready; }
static double k_unacked(const qsnap *q) { return (double)q->unacked; }
static double k_consumers(const qsnap *q) { return (double)q->consumers; }
static double k_memory(const qsnap *q) { return (double)q->memory; }
static double k_bytes(const qsnap *q) { return (double)(q->ready_bytes + q->unacked_bytes); }
static double k_publish(const qsnap *q) { return (double)q->cnt.publish; }
static double k_pub_rate(const qsnap *q) { return q->rate[R_PUBLISH]; }
static double k_dg_rate(const qsnap *q) { return q->rate[R_DELIVER_GET]; }
static double k_ack_rate(const qsnap *q) { return q->rate[R_ACK]; }
static double k_msg_rate(const qsnap *q) { return q->rate[R_MESSAGES]; }

static int find_key(const char *k, skey *out) {
    static const struct {
        const char *name;
        skey key;
    } keys[] = {
        {"name", {0, k_name, NULL}},
        {"vhost", {0, k_vhost, NULL}},
        {"messages", {1, NULL, k_messages}},
        {"messages_ready", {1, NULL, k_ready}},
        {"messages_unacknowledged", {1, NULL, k_unacked}},
        {"consumers", {1, NULL, k_consumers}},
        {"memory", {1, NULL, k_memory}},
        {"message_bytes", {1, NULL, k_bytes}},
        {"message_stats.publish", {1, NULL, k_publish}},
        {"message_stats.publish_details.rate", {1, NULL, k_pub_rate}},
        {"message_stats.deliver_get_details.rate", {1, NULL, k_dg_rate}},
        {"message_stats.ack_details.rate", {1, NULL, k_ack_rate}},
        {"messages_details.rate", {1, NULL, k_msg_rate}},
    };
    for (size_t i = 0; i < ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].name, k) == 0) {
            *out = keys[i].key;
            return 0;
        }
    return -1;
}

static skey sort_by;
static int cmp_snap(const void *a, const void *b) {
    const qsnap *x = *(const qsnap *const *)a, *y = *(const qsnap *const *)b;
    if (sort_by.kind == 0)
        return strcmp(sort_by.s(x), sort_by.s(y));
    double dx = sort_by.d(x), dy = sort_by.d(y);
    return dx < dy ? -1 : dx > dy;
}

static const char *q_get(mgmt_req *r, const char *k) {
    json_t *v = json_object_get(r->query, k);
    return v ? json_string_value(v) : NULL;
}

/* The answer text for r from snapshot s: 0 with *out set (malloc'd), or -1 with r's error set,
 * or 1 if this request needs the general path (columns, another sort key). */
static int render(mgmt_req *r, qsnaps *s, const char *node, buf *out) {
    const char *page = q_get(r, "page"), *psize = q_get(r, "page_size"), *name = q_get(r, "name"),
               *regex = q_get(r, "use_regex"), *sort = q_get(r, "sort"), *rev = q_get(r, "sort_reverse"),
               *cols = q_get(r, "columns");
    if (cols && *cols)
        return 1;
    skey key;
    if (sort && *sort && find_key(sort, &key) < 0)
        return 1;
    const qsnap **v = xmalloc((s->n ? s->n : 1) * sizeof *v);
    size_t n = 0;
    regex_t re;
    int use_re = page && name && *name && regex && strcmp(regex, "true") == 0;
    if (use_re && regcomp(&re, name, REG_EXTENDED | REG_NOSUB) != 0) {
        free(v);
        mgmt_error(r, 400, "bad_request", "invalid regex: %s", name);
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        const qsnap *q = &s->a[i];
        if (page && name && *name && !(use_re ? regexec(&re, q->name, 0, NULL, 0) == 0 : strstr(q->name, name) != NULL))
            continue;
        v[n++] = q;
    }
    if (use_re)
        regfree(&re);
    if (sort && *sort && n > 1) {
        sort_by = key; /* (one HTTP thread sorts at a time: cache_mu is held) */
        qsort(v, n, sizeof *v, cmp_snap);
        if (rev && strcmp(rev, "true") == 0)
            for (size_t i = 0; i < n / 2; i++) {
                const qsnap *t = v[i];
                v[i] = v[n - 1 - i];
                v[n - 1 - i] = t;
            }
    }
    size_t from = 0, to = n;
    long pg = 0, ps = 100;
    if (page) {
        char *end;
        pg = strtol(page, &end, 10);
        if (*end || pg < 1 || (psize && ((ps = strtol(psize, &end, 10)) < 1 || *end))) {
            free(v);
            mgmt_error(r, 400, "bad_request", "%s", "Page and page_size parameters must be positive integers");
            return -1;
        }
        if (ps > 500) {
            free(v);
            mgmt_error(r, 400, "bad_request", "Page size cannot be greater than %d", 500);
            return -1;
        }
        size_t pages = n ? (n + (size_t)ps - 1) / (size_t)ps : 0;
        if ((size_t)pg > pages && !(pg == 1 && pages == 0)) {
            free(v);
            mgmt_error(r, 400, "bad_request", "Page out of range, page: %ld page size: %ld, len: %zu", pg, ps, n);
            return -1;
        }
        from = (size_t)(pg - 1) * (size_t)ps;
        to = MIN(n, (size_t)pg * (size_t)ps);
        char t[300];
        snprintf(t, sizeof t, "{\"filtered_count\":%zu,\"item_count\":%zu,\"items\":", n, to - from);
        put(out, t);
    }
    buf_u8(out, '[');
    for (size_t i = from; i < to; i++) {
        if (i > from)
            buf_u8(out, ',');
        queue_text(out, v[i], node);
    }
    buf_u8(out, ']');
    if (page) {
        char t[300];
        size_t pages = n ? (n + (size_t)ps - 1) / (size_t)ps : 0;
        snprintf(t, sizeof t, ",\"page\":%ld,\"page_count\":%zu,\"page_size\":%ld,\"total_count\":%zu}", pg, pages, ps,
                 s->n);
        put(out, t);
    }
    free(v);
    return 0;
}

/* Takes the request's snapshot into the cache (or the cached one): NULL if neither is there
 * (the cache was taken over by another user's request meanwhile: ask again). */
static int cmp_vhost_name(const void *a, const void *b) {
    const qsnap *x = a, *y = b;
    int c = strcmp(x->vhost, y->vhost);
    return c ? c : strcmp(x->name, y->name);
}

static qsnaps *snapshot_for(mgmt_req *r, const char *key) {
    /* the loop copies queues in its map's order; lists are by vhost and name, as RabbitMQ's */
    if (r->snap && r->snap->n > 1)
        qsort(r->snap->a, r->snap->n, sizeof *r->snap->a, cmp_vhost_name);
    pthread_mutex_lock(&cache_mu);
    qsnaps *s = r->snap, *old = NULL;
    r->snap = NULL;
    if (s) {
        s->refs = 2; /* the cache and this request */
        if (cache.snap && --cache.snap->refs == 0)
            old = cache.snap;
        cache.snap = s;
        snprintf(cache.key, sizeof cache.key, "%s", key);
        free(cache.url);
        cache.url = NULL;
        free(drop_locked(cache.text));
        cache.text = NULL;
    } else if (cache.snap && strcmp(cache.key, key) == 0) {
        s = cache.snap;
        s->refs++;
    }
    pthread_mutex_unlock(&cache_mu);
    qsnaps_free(old);
    return s;
}

int http_queues_fresh(const char *key, uint64_t *gen) {
    pthread_mutex_lock(&cache_mu);
    int fresh = cache.snap && strcmp(cache.key, key) == 0 && now_ms() - cache.snap->taken_ms < SNAP_MAX_AGE_MS;
    *gen = cache.snap ? cache.snap->gen : 0;
    pthread_mutex_unlock(&cache_mu);
    return fresh;
}

int http_queue_list(mgmt_req *r, const char *key, const char *url, const char *node, qblob **text) {
    qsnaps *s = snapshot_for(r, key);
    if (!s)
        return -2;
    pthread_mutex_lock(&cache_mu);
    if (cache.snap == s && cache.url && cache.text && strcmp(cache.url, url) == 0) { /* the same question */
        *text = cache.text;
        cache.text->refs++;
        pthread_mutex_unlock(&cache_mu);
        snap_release(s);
        return 0;
    }
    buf out;
    buf_init(&out);
    int rc = render(r, s, node, &out);
    if (rc == 1) { /* the general path: every queue as JSON, shaped by http.c */
        mgmt_req all = {0};
        all.query = json_object();
        render(&all, s, node, &out);
        json_decref(all.query);
    }
    qblob *b = rc >= 0 ? qblob_new(buf_head(&out), out.len) : NULL;
    buf_free(&out);
    if (rc == 0 && cache.snap == s) {
        free(cache.url);
        free(drop_locked(cache.text));
        cache.url = xstrndup(url, strlen(url));
        cache.text = b;
        b->refs++;
    }
    pthread_mutex_unlock(&cache_mu);
    snap_release(s);
    if (rc < 0)
        return -1;
    *text = b;
    return rc;
}
