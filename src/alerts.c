/* alerts.c — backlog alerts: PUT /api/ferry/alerts/{name} defines one ({"vhost", "queue":
 * REGEX, "metric", "op", "threshold", "for_seconds", "webhook"}), GET lists them with their
 * state, DELETE removes one.
 *
 * Evaluated every second on the loop (mgmt.c's tick): the metric over the vhost's queues
 * whose name the regex matches (the largest value for ">", the smallest for "<"). When the
 * condition has held for for_seconds the alert fires; as soon as it no longer holds it
 * resolves. Each change is one JSON log line and, with a webhook, a POST of {"name",
 * "state", "value", "vhost", "queue"} made by the webhook thread with libcurl, retried
 * with back-off (1, 2, 4, 8 s) — the loop only hands the job over.
 *
 * "dead_letters" is the number of messages the matching queues dead-lettered in the last
 * 60 s (so that it can resolve). Definitions are kept in DATA_DIR/alerts.json, written by
 * the HTTP thread (never the loop) after each change, and read at start. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgmt_int.h"
#include "util.h"

#define DL_WINDOW 60
#define WEBHOOK_TRIES 5

typedef struct alert {
    char *name, *vhost, *queue, *webhook;
    regex_t re;
    char metric[32];
    char op;
    double threshold, for_seconds;
    int firing;
    uint64_t cond_since;  /* monotonic ms the condition has held since (0: it does not) */
    uint64_t since_wall;  /* wall ms of the last state change (or definition) */
    int has_value;
    double value;
    char at_queue[256];   /* the queue that gave the value */
    uint64_t dl_hist[DL_WINDOW + 1]; /* dead letters of the matching queues, one a second */
    int dl_i, dl_n;
} alert;

typedef struct hook { /* a webhook POST waiting on the webhook thread */
    char *url, *body;
    int tries;
    uint64_t due_ms;
    struct hook *next;
} hook;

struct alerts {
    alert **a;
    size_t n;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hook *todo; /* under mu */
    int stop, started;
};

static const char *metrics_ok[] = {"messages", "messages_unacknowledged", "oldest_message_age_seconds", "consumers",
                                   "dead_letters", "messages_ready"};

/* ---- the webhook thread ---- */

static size_t discard(char *p, size_t sz, size_t n, void *ud) {
    (void)p, (void)ud;
    return sz * n;
}

static int post(const char *url, const char *body) {
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc == CURLE_OK && code >= 200 && code < 300 ? 0 : -1;
}

static void *webhook_main(void *arg) {
    struct alerts *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop)
            break;
        uint64_t now = now_ms();
        hook *h = NULL, **pp;
        uint64_t next_due = UINT64_MAX;
        for (pp = &s->todo; *pp; pp = &(*pp)->next) {
            if ((*pp)->due_ms <= now) {
                h = *pp;
                *pp = h->next;
                break;
            }
            if ((*pp)->due_ms < next_due)
                next_due = (*pp)->due_ms;
        }
        if (!h) {
            if (next_due == UINT64_MAX) {
                pthread_cond_wait(&s->cv, &s->mu);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t wait = next_due - now;
                ts.tv_sec += (time_t)(wait / 1000);
                ts.tv_nsec += (long)(wait % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L)
                    ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            }
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        int ok = post(h->url, h->body) == 0;
        pthread_mutex_lock(&s->mu);
        if (ok || ++h->tries >= WEBHOOK_TRIES) {
            if (!ok)
                log_warn("alerts: webhook %s failed %d times, giving up", h->url, h->tries);
            free(h->url);
            free(h->body);
            free(h);
        } else { /* back-off: 1, 2, 4, 8 s */
            h->due_ms = now_ms() + (1000ull << (h->tries - 1));
            h->next = s->todo;
            s->todo = h;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void hook_submit(struct alerts *s, const char *url, const char *body) {
    hook *h = xcalloc(1, sizeof *h);
    h->url = xstrndup(url, strlen(url));
    h->body = xstrndup(body, strlen(body));
    h->due_ms = 0;
    pthread_mutex_lock(&s->mu);
    h->next = s->todo;
    s->todo = h;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- definitions ---- */

static void alert_free(alert *a) {
    regfree(&a->re);
    free(a->name);
    free(a->vhost);
    free(a->queue);
    free(a->webhook);
    free(a);
}

static alert *find(struct alerts *s, const char *name, size_t *at) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->a[i]->name, name) == 0) {
            if (at)
                *at = i;
            return s->a[i];
        }
    return NULL;
}

/* A definition from JSON: the alert, or NULL with a message in err. */
static alert *parse(const char *name, json_t *j, char *err, size_t n) {
    json_t *vh = json_object_get(j, "vhost"), *q = json_object_get(j, "queue"), *m = json_object_get(j, "metric"),
           *op = json_object_get(j, "op"), *th = json_object_get(j, "threshold"),
           *fs = json_object_get(j, "for_seconds"), *wh = json_object_get(j, "webhook");
    if (!*name || strlen(name) > 200) {
        snprintf(err, n, "an alert name must have 1 to 200 characters");
        return NULL;
    }
    if (vh && !json_is_string(vh)) {
        snprintf(err, n, "vhost must be a string");
        return NULL;
    }
    if (!json_is_string(q)) {
        snprintf(err, n, "queue (a regular expression) is required");
        return NULL;
    }
    int mok = 0;
    for (size_t i = 0; i < ARRAY_LEN(metrics_ok); i++)
        mok |= json_is_string(m) && strcmp(json_string_value(m), metrics_ok[i]) == 0;
    if (!mok) {
        snprintf(err, n, "metric must be one of messages, messages_ready, messages_unacknowledged, "
                         "oldest_message_age_seconds, consumers, dead_letters");
        return NULL;
    }
    if (!json_is_string(op) || (strcmp(json_string_value(op), ">") && strcmp(json_string_value(op), "<"))) {
        snprintf(err, n, "op must be \">\" or \"<\"");
        return NULL;
    }
    if (!json_is_number(th)) {
        snprintf(err, n, "threshold must be a number");
        return NULL;
    }
    if (fs && !json_is_number(fs)) {
        snprintf(err, n, "for_seconds must be a number");
        return NULL;
    }
    double f = fs ? json_number_value(fs) : 0;
    if (f < 0 || f > 86400 * 30) {
        snprintf(err, n, "for_seconds must be from 0 to 2592000");
        return NULL;
    }
    if (wh && !json_is_null(wh) &&
        (!json_is_string(wh) || (strncmp(json_string_value(wh), "http://", 7) && strncmp(json_string_value(wh), "https://", 8)))) {
        snprintf(err, n, "webhook must be an http:// or https:// URL");
        return NULL;
    }
    alert *a = xcalloc(1, sizeof *a);
    if (regcomp(&a->re, json_string_value(q), REG_EXTENDED | REG_NOSUB) != 0) {
        free(a);
        snprintf(err, n, "queue is not a valid regular expression");
        return NULL;
    }
    a->name = xstrndup(name, strlen(name));
    a->vhost = xstrndup(vh ? json_string_value(vh) : "/", strlen(vh ? json_string_value(vh) : "/"));
    a->queue = xstrndup(json_string_value(q), json_string_length(q));
    a->webhook = json_is_string(wh) ? xstrndup(json_string_value(wh), json_string_length(wh)) : NULL;
    snprintf(a->metric, sizeof a->metric, "%s", json_string_value(m));
    a->op = json_string_value(op)[0];
    a->threshold = json_number_value(th);
    a->for_seconds = f;
    a->since_wall = wall_ms();
    return a;
}

static json_t *def_json(const alert *a) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:f,s:f}", "vhost", a->vhost, "queue", a->queue, "metric", a->metric, "op",
                          a->op == '>' ? ">" : "<", "threshold", a->threshold, "for_seconds", a->for_seconds);
    json_object_set_new(o, "webhook", a->webhook ? json_string(a->webhook) : json_null());
    return o;
}

static json_t *alert_json(const alert *a) {
    json_t *o = def_json(a);
    json_object_set_new(o, "name", json_string(a->name));
    json_object_set_new(o, "state", json_string(a->firing ? "firing" : "ok"));
    json_object_set_new(o, "since", mj_time(a->since_wall));
    json_object_set_new(o, "value", a->has_value ? json_real(a->value) : json_null());
    json_object_set_new(o, "value_queue", a->has_value ? json_string(a->at_queue) : json_null());
    return o;
}

/* Every definition, as written to alerts.json. */
static char *defs_text(struct alerts *s) {
    json_t *o = json_object();
    for (size_t i = 0; i < s->n; i++)
        json_object_set_new(o, s->a[i]->name, def_json(s->a[i]));
    char *t = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(o);
    return t;
}

void alerts_init(mgmt *m) {
    struct alerts *s = xcalloc(1, sizeof *s);
    m->alerts = s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_create(&s->thread, NULL, webhook_main, s) == 0)
        s->started = 1;
    char path[600];
    snprintf(path, sizeof path, "%s/alerts.json", m->b->cfg.data_dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) {
        if (errno != ENOENT && strstr(je.text, "unable to open") == NULL)
            log_error("alerts: %s is not readable JSON (%s); starting without alerts", path, je.text);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        char err[256];
        alert *a = parse(k, v, err, sizeof err);
        if (!a) {
            log_error("alerts: %s: alert '%s' skipped: %s", path, k, err);
            continue;
        }
        s->a = xrealloc(s->a, (s->n + 1) * sizeof *s->a);
        s->a[s->n++] = a;
    }
    json_decref(o);
    if (s->n)
        log_info("alerts: %zu alert definitions loaded from %s", s->n, path);
}

void alerts_free(mgmt *m) {
    struct alerts *s = m->alerts;
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    while (s->todo) {
        hook *h = s->todo;
        s->todo = h->next;
        free(h->url);
        free(h->body);
        free(h);
    }
    for (size_t i = 0; i < s->n; i++)
        alert_free(s->a[i]);
    free(s->a);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    curl_global_cleanup();
    free(s);
    m->alerts = NULL;
}

size_t alerts_firing(mgmt *m) {
    size_t n = 0;
    for (size_t i = 0; m->alerts && i < m->alerts->n; i++)
        n += m->alerts->a[i]->firing;
    return n;
}

/* ---- evaluation ---- */

double queue_metric(queue *q, const char *metric, uint64_t now_mono) {
    if (strcmp(metric, "messages") == 0)
        return (double)(q->nready + q->unacked);
    if (strcmp(metric, "messages_ready") == 0)
        return (double)q->nready;
    if (strcmp(metric, "messages_unacknowledged") == 0)
        return (double)q->unacked;
    if (strcmp(metric, "consumers") == 0)
        return (double)q->nconsumers;
    if (strcmp(metric, "oldest_message_age_seconds") == 0)
        return (double)qstats_oldest_age_ms(q, now_mono) / 1000.0;
    return -1;
}

static void announce(mgmt *m, alert *a) {
    char ts[40];
    json_t *t = mj_time(wall_ms());
    snprintf(ts, sizeof ts, "%s", json_string_value(t));
    json_decref(t);
    json_t *line = json_pack("{s:s,s:s,s:s}", "time", ts, "level", a->firing ? "warning" : "info", "msg",
                             a->firing ? "alert firing" : "alert resolved");
    json_object_set_new(line, "alert", json_string(a->name));
    json_object_set_new(line, "state", json_string(a->firing ? "firing" : "ok"));
    json_object_set_new(line, "value", a->has_value ? json_real(a->value) : json_null());
    json_object_set_new(line, "vhost", json_string(a->vhost));
    json_object_set_new(line, "queue", json_string(a->has_value ? a->at_queue : a->queue));
    json_object_set_new(line, "metric", json_string(a->metric));
    json_object_set_new(line, "op", json_string(a->op == '>' ? ">" : "<"));
    json_object_set_new(line, "threshold", json_real(a->threshold));
    char *s = json_dumps(line, JSON_COMPACT);
    log_json_line(s);
    free(s);
    json_decref(line);
    if (a->webhook) {
        json_t *body = json_pack("{s:s,s:s,s:o,s:s,s:s}", "name", a->name, "state", a->firing ? "firing" : "ok", "value",
                                 a->has_value ? json_real(a->value) : json_null(), "vhost", a->vhost, "queue",
                                 a->has_value ? a->at_queue : a->queue);
        char *b = json_dumps(body, JSON_COMPACT);
        hook_submit(m->alerts, a->webhook, b);
        free(b);
        json_decref(body);
    }
}

static void evaluate(mgmt *m, alert *a, uint64_t now) {
    vhost *vh = vhost_find(m->b, slice_str(a->vhost));
    int any = 0;
    double best = 0;
    uint64_t dl_total = 0;
    char at[256] = "";
    int is_dl = strcmp(a->metric, "dead_letters") == 0;
    size_t k = 0;
    map_entry *f;
    while (vh && map_iter(&vh->queues, &k, &f)) {
        queue *q = f->val;
        if (regexec(&a->re, q->name, 0, NULL, 0) != 0)
            continue;
        if (is_dl) {
            for (int r = 0; r < DL_NREASONS; r++)
                dl_total += q->cnt.dead_lettered[r];
            if (!any)
                snprintf(at, sizeof at, "%s", q->name);
            any = 1;
            continue;
        }
        double v = queue_metric(q, a->metric, now);
        if (!any || (a->op == '>' ? v > best : v < best)) {
            best = v;
            snprintf(at, sizeof at, "%s", q->name);
        }
        any = 1;
    }
    if (is_dl) { /* dead letters over the last minute, from a total sampled each second */
        a->dl_i = (a->dl_i + 1) % (DL_WINDOW + 1);
        a->dl_hist[a->dl_i] = dl_total;
        if (a->dl_n < DL_WINDOW + 1)
            a->dl_n++;
        uint64_t old = a->dl_hist[(a->dl_i + DL_WINDOW + 1 - (a->dl_n - 1)) % (DL_WINDOW + 1)];
        best = dl_total >= old ? (double)(dl_total - old) : 0;
    }
    a->has_value = any;
    a->value = best;
    snprintf(a->at_queue, sizeof a->at_queue, "%s", at);
    int cond = any && (a->op == '>' ? best > a->threshold : best < a->threshold);
    if (!cond) {
        a->cond_since = 0;
        if (a->firing) {
            a->firing = 0;
            a->since_wall = wall_ms();
            announce(m, a);
        }
        return;
    }
    if (!a->cond_since)
        a->cond_since = now;
    if (!a->firing && now - a->cond_since >= (uint64_t)(a->for_seconds * 1000.0)) {
        a->firing = 1;
        a->since_wall = wall_ms();
        announce(m, a);
    }
}

void alerts_tick(mgmt *m) {
    struct alerts *s = m->alerts;
    uint64_t now = now_ms();
    for (size_t i = 0; s && i < s->n; i++)
        evaluate(m, s->a[i], now);
}

/* ---- the API ---- */

int alerts_route(mctx *x) {
    mgmt_req *r = x->r;
    struct alerts *s = x->m->alerts;
    int m = r->method == HM_HEAD ? HM_GET : r->method;
    if (r->nseg == 2) {
        if (m != HM_GET) {
            r->status = 405;
            return 1;
        }
        json_t *a = json_array();
        for (size_t i = 0; i < s->n; i++)
            json_array_append_new(a, alert_json(s->a[i]));
        r->json = a;
        return 1;
    }
    if (r->nseg != 3)
        return 0;
    const char *name = r->seg[2];
    size_t at = 0;
    alert *a = find(s, name, &at);
    if (m == HM_GET) {
        if (!a)
            return 0;
        r->json = alert_json(a);
        return 1;
    }
    if (m == HM_DELETE) {
        if (!x->admin && !x->policymaker) {
            mgmt_error(r, 401, "not_authorised", "%s", "Not policymaker or administrator user");
            return 1;
        }
        if (!a)
            return 0;
        alert_free(a);
        memmove(&s->a[at], &s->a[at + 1], (s->n - at - 1) * sizeof *s->a);
        s->n--;
        r->persist_alerts = defs_text(s);
        ok_204(r);
        return 1;
    }
    if (m == HM_PUT) {
        if (!x->admin && !x->policymaker) {
            mgmt_error(r, 401, "not_authorised", "%s", "Not policymaker or administrator user");
            return 1;
        }
        json_t *j = body_json(x);
        if (!j)
            return 1;
        char err[256];
        alert *n = parse(name, j, err, sizeof err);
        json_decref(j);
        if (!n) {
            mgmt_error(r, 400, "bad_request", "%s", err);
            return 1;
        }
        if (a) {
            alert_free(a);
            s->a[at] = n;
            r->status = 204;
        } else {
            s->a = xrealloc(s->a, (s->n + 1) * sizeof *s->a);
            s->a[s->n++] = n;
            r->status = 201;
        }
        r->persist_alerts = defs_text(s);
        evaluate(x->m, n, now_ms()); /* a state from the start (for_seconds 0 fires at once) */
        return 1;
    }
    r->status = 405;
    return 1;
}
