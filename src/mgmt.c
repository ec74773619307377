/* mgmt.c — the loop side of the management API: the mailbox the HTTP threads post requests
 * to, the login (basic auth with the broker's users and RabbitMQ's tag rules), routing to
 * the handlers (mgmt_api.c, mgmt_ferry.c, alerts.c, metrics.c) and the 1 s statistics tick.
 *
 * The mailbox is the writer's and the PBKDF2 helper's pattern turned around: HTTP threads
 * append to a mutex-protected list and write an eventfd; the loop hears it like any socket,
 * takes the list, handles each request and signals a condition variable the poster waits
 * on. A handler that has a lot to do (a list of 10,000 queues) sets cont_fn and is called
 * again on the next turns, a slice at a time, so AMQP clients never wait behind it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mgmt_int.h"
#include "mgmt_snap.h"
#include "util.h"

#define TICK_MS 1000
/* Queues (or exchanges) sampled per loop turn (mgmt_stats.h): 0.3-1 us each with 10,000 idle
 * queues (cache misses), so a turn's slice takes 20-100 us (256 a turn took 110-310 us). */
#define STATS_SLICE 64

static mgmt *M; /* the one broker's management side (HTTP threads reach it through here) */

/* ---- helpers for handlers ---- */

void mgmt_error(mgmt_req *r, int status, const char *error, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    json_decref(r->json);
    r->json = json_pack("{s:s,s:s}", "error", error, "reason", reason);
    r->status = status;
}

void ok_204(mgmt_req *r) {
    json_decref(r->json);
    r->json = NULL;
    r->status = 204;
}

int has_tag(const user *u, const char *tag) {
    const char *p = u->tags ? u->tags : "";
    size_t n = strlen(tag);
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == n && strncmp(p, tag, n) == 0)
            return 1;
        p = e;
    }
    return 0;
}

int can_see_vhost(mctx *x, const vhost *vh) {
    if (x->admin || x->monitoring)
        return 1;
    return access_perm(x->b->access, (slice){(const uint8_t *)x->u->name, x->u->name_len},
                       (slice){(const uint8_t *)vh->name, vh->name_len}) != NULL;
}

vhost *seg_vhost(mctx *x, int i) {
    vhost *vh = i < x->r->nseg ? vhost_find(x->b, slice_str(x->r->seg[i])) : NULL;
    if (!vh || !can_see_vhost(x, vh)) {
        mgmt_error(x->r, 404, "Object Not Found", "Not Found");
        return NULL;
    }
    return vh;
}

const char *qs(mgmt_req *r, const char *k) {
    json_t *v = r->query ? json_object_get(r->query, k) : NULL;
    return v ? json_string_value(v) : NULL;
}

json_t *body_json(mctx *x) {
    mgmt_req *r = x->r;
    json_error_t je;
    json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, &je) : json_object();
    if (!j) {
        mgmt_error(r, 400, "bad_request", "%s", "not_json");
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        mgmt_error(r, 400, "bad_request", "%s", "not_json");
        return NULL;
    }
    return j;
}

int jbool(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_string(v))
        return strcmp(json_string_value(v), "true") == 0 ? 1 : strcmp(json_string_value(v), "false") == 0 ? 0 : dflt;
    return dflt;
}

int jint(json_t *o, const char *k, int64_t dflt, int64_t *out) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 1;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (!errno && end != s && !*end) {
            *out = n;
            return 0;
        }
    }
    return -1;
}

/* ---- the mailbox ---- */

void finish(mgmt *m, mgmt_req *r) {
    pthread_mutex_lock(&m->mu);
    r->done = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void wake(mgmt *m) {
    uint64_t one = 1;
    ssize_t w = write(m->efd, &one, sizeof one);
    (void)w; /* a full counter is a pending wake-up already */
}

void mgmt_call(mgmt_req *r) {
    mgmt *m = M;
    if (!m) {
        mgmt_error(r, 503, "service_unavailable", "%s", "the broker is not running");
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        pthread_mutex_unlock(&m->mu);
        mgmt_error(r, 503, "service_unavailable", "%s", "the broker is shutting down");
        return;
    }
    r->done = 0;
    r->next = NULL;
    if (m->todo_tail)
        m->todo_tail->next = r;
    else
        m->todo = r;
    m->todo_tail = r;
    pthread_mutex_unlock(&m->mu);
    wake(m);
    pthread_mutex_lock(&m->mu);
    while (!r->done)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
}

void mgmt_req_clear(mgmt_req *r) {
    for (int i = 0; i < r->nseg; i++)
        free(r->seg[i]);
    r->nseg = 0;
    json_decref(r->query);
    json_decref(r->json);
    free(r->body);
    if (r->pass) {
        memset(r->pass, 0, strlen(r->pass));
        free(r->pass);
    }
    free(r->text);
    free(r->persist_alerts);
    free(r->check_hash);
    free(r->location);
    qsnaps_free(r->snap);
    memset(r, 0, sizeof *r);
}

/* ---- the login ---- */

/* 0: logged in (x->u set); -1: the answer is set (401, or need_check for the HTTP thread). */
static int login(mctx *x) {
    mgmt_req *r = x->r;
    access_db *db = x->b->access;
    slice name = slice_str(r->user), pass = slice_str(r->pass);
    user *u = auth_user(db, name);
    if (!u || u->alg == HASH_NONE) {
        mgmt_error(r, 401, "not_authorized", "%s", "Login failed");
        return -1;
    }
    if (r->pw_checked) { /* the HTTP thread checked the hash we gave it: is it still the user's? */
        if (r->check_hash_len != u->hash_len || memcmp(r->check_hash, u->hash, u->hash_len) != 0) {
            mgmt_error(r, 401, "not_authorized", "%s", "Login failed");
            return -1;
        }
        auth_remember(db, u, pass);
    } else if (!auth_fast_matches(db, u, pass)) {
        if (u->alg == HASH_PBKDF2) { /* tens of ms: the HTTP thread checks it */
            r->need_check = 1;
            r->check_alg = u->alg;
            r->check_hash = xmalloc(u->hash_len ? u->hash_len : 1);
            memcpy(r->check_hash, u->hash, u->hash_len);
            r->check_hash_len = u->hash_len;
            r->status = 0;
            return -1;
        }
        if (!auth_password_matches(u->alg, u->hash, u->hash_len, pass)) {
            mgmt_error(r, 401, "not_authorized", "%s", "Login failed");
            return -1;
        }
        auth_remember(db, u, pass);
    }
    if (loopback_only(&x->b->cfg, name) && !r->loopback) {
        mgmt_error(r, 401, "not_authorised", "%s", "User can only log in via localhost");
        return -1;
    }
    x->u = u;
    x->admin = has_tag(u, "administrator");
    x->monitoring = x->admin || has_tag(u, "monitoring");
    x->policymaker = x->admin || has_tag(u, "policymaker");
    if (!x->monitoring && !x->policymaker && !has_tag(u, "management")) {
        mgmt_error(r, 401, "not_authorised", "%s", "Not management user");
        return -1;
    }
    r->is_admin = x->admin;
    return 0;
}

static void handle(mgmt *m, mgmt_req *r) {
    mctx x = {m->b, m, r, NULL, 0, 0, 0};
    r->status = 200;
    if (r->metrics) {
        buf out;
        buf_init(&out);
        metrics_text(m->b, m, r->metrics == 2, &out);
        r->text = xmalloc(out.len + 1);
        memcpy(r->text, buf_head(&out), out.len);
        r->text[out.len] = 0;
        r->text_len = out.len;
        buf_free(&out);
        finish(m, r);
        return;
    }
    if (login(&x) < 0) {
        finish(m, r);
        return;
    }
    int found = r->nseg && strcmp(r->seg[0], "ferry") == 0 ? ferry_route(&x) : api_route(&x);
    if (!found)
        mgmt_error(r, 404, "Object Not Found", "Not Found");
    if (r->cont_fn) { /* continued on the next turns */
        r->next = m->active;
        m->active = r;
        wake(m);
        return;
    }
    finish(m, r);
}

static void on_mailbox(io_handler *h, uint32_t events) {
    (void)events;
    mgmt *m = (mgmt *)((char *)h - offsetof(mgmt, io));
    uint64_t v;
    ssize_t rd_ = read(m->efd, &v, sizeof v);
    (void)rd_;
    /* requests being continued get one slice each */
    mgmt_req *act = m->active;
    m->active = NULL;
    while (act) {
        mgmt_req *r = act;
        act = r->next;
        void (*fn)(broker *, mgmt_req *) = r->cont_fn;
        r->cont_fn = NULL;
        fn(m->b, r);
        if (r->cont_fn) {
            r->next = m->active;
            m->active = r;
        } else {
            finish(m, r);
        }
    }
    pthread_mutex_lock(&m->mu);
    mgmt_req *r = m->todo;
    m->todo = m->todo_tail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (r) {
        mgmt_req *next = r->next;
        handle(m, r);
        r = next;
    }
    int more = mgmt_stats_round_step(m->b, &m->round, loop_now_ms(m->b->loop), STATS_SLICE);
    if (m->active || more)
        wake(m);
}

/* ---- the 1 s tick: rates, alerts ---- */

static void overview_sample(mgmt *m) {
    broker *b = m->b;
    uint64_t v[R_N] = {0};
    v[R_PUBLISH] = b->cnt.publish;
    v[R_DELIVER] = b->cnt.deliver;
    v[R_DELIVER_NO_ACK] = b->cnt.deliver_no_ack;
    v[R_GET] = b->cnt.get;
    v[R_GET_NO_ACK] = b->cnt.get_no_ack;
    v[R_GET_EMPTY] = b->cnt.get_empty;
    v[R_ACK] = b->cnt.ack;
    v[R_REDELIVER] = b->cnt.redeliver;
    v[R_DELIVER_GET] = b->cnt.deliver + b->cnt.deliver_no_ack + b->cnt.get + b->cnt.get_no_ack;
    /* the overview has no depth gauges: their slots hold confirms and unroutable messages */
    v[R_MESSAGES] = b->cnt.confirm;
    v[R_READY] = b->cnt.return_unroutable;
    v[R_UNACKED] = b->cnt.drop_unroutable;
    hist_push(&m->overview, now_ms(), v);
}

static void tick(loop_timer *t) {
    mgmt *m = (mgmt *)((char *)t - offsetof(mgmt, tick));
    uint64_t now = loop_now_ms(m->b->loop);
    if (!m->round.active)
        mgmt_stats_round_start(m->b, &m->round);
    if (mgmt_stats_round_step(m->b, &m->round, now, STATS_SLICE))
        wake(m);
    overview_sample(m);
    alerts_tick(m);
    loop_timer_arm(m->b->loop, &m->tick, now + TICK_MS);
}

const char *mgmt_node(broker *b) { return b->mgmt ? b->mgmt->node : "ferry"; }

int mgmt_start(broker *b) {
    mgmt *m = xcalloc(1, sizeof *m);
    m->b = b;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m->efd < 0) {
        log_error("management: eventfd: %s", strerror(errno));
        free(m);
        return -1;
    }
    m->io.fn = on_mailbox;
    loop_add(b->loop, m->efd, EPOLLIN, &m->io);
    m->started_ms = now_ms();
    char host[100] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(m->node, sizeof m->node, "ferry@%s", host);
    m->tick.fn = tick;
    loop_timer_arm(b->loop, &m->tick, now_ms() + TICK_MS);
    b->mgmt = m;
    M = m;
    json_object_seed(0); /* before any thread makes a JSON object */
    alerts_init(m);
    char err[512];
    if (http_start(b, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    return 0;
}

void mgmt_stop(broker *b) {
    mgmt *m = b->mgmt;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    for (mgmt_req *r = m->todo; r; r = r->next) {
        mgmt_error(r, 503, "service_unavailable", "%s", "the broker is shutting down");
        r->done = 1;
    }
    m->todo = m->todo_tail = NULL;
    for (mgmt_req *r = m->active; r; r = r->next) {
        void (*fn)(broker *, mgmt_req *) = r->cont_fn;
        r->cont_fn = NULL;
        r->status = -1; /* tells the continuation to release what it holds */
        if (fn)
            fn(b, r);
        mgmt_error(r, 503, "service_unavailable", "%s", "the broker is shutting down");
        r->done = 1;
    }
    m->active = NULL;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    http_stop();
    loop_timer_cancel(b->loop, &m->tick);
    loop_del(b->loop, m->efd);
    close(m->efd);
    alerts_free(m);
    M = NULL;
    b->mgmt = NULL;
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
