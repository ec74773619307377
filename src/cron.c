/* cron.c — broker-held cron: schedules on x-delayed-message exchanges, fired once per tick.
 *
 * A publish to an x-delayed-message exchange with the header x-ferry-cron is a schedule
 * named by its message_id on that exchange (cron_publish): it is not routed itself; the
 * message (without x-ferry-cron, x-ferry-timezone and x-delay) is kept as the schedule's
 * template, and at every tick a copy is routed through the exchange's x-delayed-type with
 * the header x-ferry-scheduled-at (the tick, an AMQP timestamp) and message_id NAME:TICK.
 * The same message_id again replaces the schedule; an empty x-ferry-cron removes it. A bad
 * expression or zone closes the channel with 406 PRECONDITION_FAILED naming the header (as
 * RabbitMQ answers a bad expiration property), and nothing is stored.
 *
 * Schedules wait in one min-heap on their next tick, driven by one loop timer armed for
 * the earliest (as delayed.c): nothing is scanned per tick, and firing never blocks.
 *
 * Durability (a schedule on a durable exchange): M_CRON records in meta.log, bytes the
 * store does not read (meta.h): PUT (the schedule, its template and the last tick fired),
 * FIRED (id, tick) and DEL (id); a later record of the same id replaces an earlier one and
 * compaction at start writes one PUT per schedule (cron_emit). The creating publish is
 * confirmed once its PUT is synced. A tick's FIRED mark is appended only after the batch
 * holding its routed copies is synced (cron_synced), so:
 *   - a tick whose copies are durable is never lost: at worst (a crash between the copies'
 *     sync and the mark's, one group commit) it is routed again at start with the same
 *     message_id NAME:TICK, which a queue's x-deduplication-window drops;
 *   - a tick marked fired (its mark synced) is never routed again, whatever the crash;
 *   - ticks that fell while ferryd was down fire once at start, as the latest of them.
 * A clean shutdown appends the marks still waiting, so a restart after SIGTERM never
 * repeats a tick. Each FIRED record is 30 bytes; meta.log is compacted at every start.
 *
 * Time zones are read once per zone name (tzfile.c) and shared by the schedules using it. */
#include "broker.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cronexpr.h"
#include "memacct.h"
#include "meta.h"
#include "store.h"
#include "tzfile.h"
#include "util.h"

#define MAX_TEMPLATE_BODY (1u << 20) /* a schedule's body is kept in memory and meta.log */
#define MAX_NAME 234                 /* NAME:TICK must fit a 255-byte message_id */
#define FIRE_BATCH 10000             /* schedules fired per loop turn at most */

enum { C_PUT = 1, C_FIRED = 2, C_DEL = 3 };

typedef struct sched {
    uint64_t id;
    char *key; /* vhost NUL exchange NUL name */
    size_t key_len;
    const char *vhost, *exchange, *name; /* into key */
    char *expr, *tzname;
    cron_spec spec;
    const tzone *tz;   /* NULL: UTC; owned by the zone cache */
    message *tmpl;     /* exchange, routing key, properties (cron headers removed), body */
    int64_t last;      /* the last tick fired, or the time it was created */
    uint8_t fired;     /* last is a tick that fired */
    uint8_t durable;   /* kept in meta.log */
    uint8_t waiting;   /* on the wait list */
    int64_t marked;    /* the last tick whose FIRED mark is synced (-1: none) */
    int64_t next;      /* next tick, -1: none */
    size_t hidx;       /* heap position, SIZE_MAX: not in the heap */
    uint64_t copy_gen; /* copies of tick copy_tick are in this batch (0: none waiting) */
    int64_t copy_tick;
    uint64_t mark_gen; /* the FIRED mark of mark_tick is in this batch (0: none) */
    int64_t mark_tick;
    uint64_t put_gen;  /* its PUT record is in this batch, not yet synced (0: none) */
    size_t mem;        /* bytes counted in MEM_CRON */
} sched;

struct cron {
    broker *b;
    map by_key; /* key -> sched */
    map by_id;  /* 8 bytes of id -> sched (recovery) */
    map zones;  /* zone name -> tzone */
    sched **heap;
    size_t len, cap;
    sched **wait; /* schedules with a copy or a mark waiting for a sync */
    size_t nwait, capwait;
    uint64_t next_id;
    int started;
    loop_timer timer;
};

static struct cron *get(broker *b) {
    if (!b->cron) {
        struct cron *c = b->cron = xcalloc(1, sizeof *c);
        c->b = b;
        map_init(&c->by_key);
        map_init(&c->by_id);
        map_init(&c->zones);
        c->next_id = 1;
    }
    return b->cron;
}

/* ---- the heap on (next tick, id) ---- */

static int before(const sched *a, const sched *b) { return a->next < b->next || (a->next == b->next && a->id < b->id); }

static void hset(struct cron *c, size_t i, sched *s) {
    c->heap[i] = s;
    s->hidx = i;
}

static void sift_up(struct cron *c, size_t i) {
    sched *s = c->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(s, c->heap[p]))
            break;
        hset(c, i, c->heap[p]);
        i = p;
    }
    hset(c, i, s);
}

static void sift_down(struct cron *c, size_t i) {
    sched *s = c->heap[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= c->len)
            break;
        if (k + 1 < c->len && before(c->heap[k + 1], c->heap[k]))
            k++;
        if (!before(c->heap[k], s))
            break;
        hset(c, i, c->heap[k]);
        i = k;
    }
    hset(c, i, s);
}

static void heap_remove(struct cron *c, sched *s) {
    if (s->hidx == SIZE_MAX)
        return;
    size_t i = s->hidx;
    s->hidx = SIZE_MAX;
    sched *last = c->heap[--c->len];
    if (i < c->len) {
        hset(c, i, last);
        sift_down(c, i);
        sift_up(c, last->hidx);
    }
}

static void heap_add(struct cron *c, sched *s) {
    if (s->next < 0)
        return; /* never fires again */
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->heap = xrealloc(c->heap, c->cap * sizeof *c->heap);
    }
    hset(c, c->len++, s);
    sift_up(c, c->len - 1);
}

static void arm(struct cron *c) {
    if (!c->len) {
        loop_timer_cancel(c->b->loop, &c->timer);
        return;
    }
    uint64_t due = (uint64_t)c->heap[0]->next * 1000, wall = wall_ms();
    loop_timer_arm(c->b->loop, &c->timer, now_ms() + (due > wall ? due - wall : 0));
}

/* ---- records ---- */

static void append(broker *b, buf *p) {
    buf out;
    buf_init(&out);
    meta_put_cron(&out, store_meta_salt(b->store), (slice){buf_head(p), p->len});
    store_meta_append(b->store, &out);
    p->len = 0;
}

static void put_sched(buf *p, const sched *s, int64_t last, int fired) {
    const message *m = s->tmpl;
    buf_u8(p, C_PUT);
    buf_u64(p, s->id);
    buf_u64(p, (uint64_t)last);
    buf_u8(p, (uint8_t)fired);
    buf_shortstr(p, s->vhost, strlen(s->vhost));
    buf_shortstr(p, s->exchange, strlen(s->exchange));
    buf_shortstr(p, s->name, strlen(s->name));
    buf_longstr(p, s->expr, strlen(s->expr));
    buf_shortstr(p, s->tzname, strlen(s->tzname));
    buf_shortstr(p, msg_rkey(m), m->rkey_len);
    buf_longstr(p, msg_props(m), m->props_len);
    buf_longstr(p, msg_body(m), (size_t)m->body_len);
    buf_u8(p, m->persistent);
}

static void store_put(broker *b, const sched *s) {
    buf p;
    buf_init(&p);
    put_sched(&p, s, s->last, s->fired);
    append(b, &p);
    buf_free(&p);
}

static void store_small(broker *b, int op, uint64_t id, int64_t tick) {
    buf p;
    buf_init(&p);
    buf_u8(&p, (uint8_t)op);
    buf_u64(&p, id);
    if (op == C_FIRED)
        buf_u64(&p, (uint64_t)tick);
    append(b, &p);
    buf_free(&p);
}

void cron_emit(broker *b, buf *out, uint64_t salt) {
    struct cron *c = b->cron;
    if (!c)
        return;
    buf p;
    buf_init(&p);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&c->by_key, &i, &e)) {
        sched *s = e->val;
        vhost *vh = vhost_find(b, slice_str(s->vhost));
        exchange *x = vh ? broker_exchange(vh, slice_str(s->exchange)) : NULL;
        if (!s->durable || !x || !x->durable || x->type != EX_DELAYED)
            continue;
        /* the last tick known durable: a copy still waiting for its sync may be repeated */
        int64_t last = s->marked >= 0 && s->fired ? s->marked : s->last;
        put_sched(&p, s, last, s->fired && s->marked >= 0);
        meta_put_cron(out, salt, (slice){buf_head(&p), p.len});
        p.len = 0;
    }
    buf_free(&p);
}

/* ---- schedules ---- */

static const tzone *zone(struct cron *c, const char *name, char *err, size_t errlen) {
    if (!name[0])
        return NULL;
    tzone *z = map_get(&c->zones, name, strlen(name));
    if (z)
        return z;
    z = tz_load(name, err, errlen);
    if (z)
        map_put(&c->zones, name, strlen(name), z);
    return z;
}

static void unwait(struct cron *c, sched *s) {
    if (!s->waiting)
        return;
    for (size_t i = 0; i < c->nwait; i++)
        if (c->wait[i] == s) {
            c->wait[i] = c->wait[--c->nwait];
            break;
        }
    s->waiting = 0;
}

static void wait_for(struct cron *c, sched *s) {
    if (s->waiting)
        return;
    if (c->nwait == c->capwait) {
        c->capwait = c->capwait ? c->capwait * 2 : 16;
        c->wait = xrealloc(c->wait, c->capwait * sizeof *c->wait);
    }
    c->wait[c->nwait++] = s;
    s->waiting = 1;
}

/* Counts s's own bytes toward the memory watermark (once its strings are set). */
static void sched_count(sched *s) {
    s->mem = sizeof *s + s->key_len + 1 + strlen(s->expr) + 1 + strlen(s->tzname) + 1 + 2 * sizeof(sched *);
    memacct_add(MEM_CRON, s->mem);
}

static void sched_free(sched *s) {
    memacct_sub(MEM_CRON, s->mem);
    message_unref(s->tmpl);
    free(s->key);
    free(s->expr);
    free(s->tzname);
    free(s);
}

/* Forgets s (store_del: and stores its removal). */
static void sched_remove(struct cron *c, sched *s, int store_del) {
    heap_remove(c, s);
    unwait(c, s);
    map_del(&c->by_key, s->key, s->key_len);
    map_del(&c->by_id, (const char *)&s->id, sizeof s->id);
    if (store_del && s->durable && c->b->store)
        store_small(c->b, C_DEL, s->id, 0);
    sched_free(s);
}

static char *make_key(slice vh, slice x, slice name, size_t *len) {
    *len = vh.n + 1 + x.n + 1 + name.n;
    char *k = xmalloc(*len + 1);
    if (vh.n)
        memcpy(k, vh.p, vh.n);
    k[vh.n] = 0;
    if (x.n)
        memcpy(k + vh.n + 1, x.p, x.n);
    k[vh.n + 1 + x.n] = 0;
    if (name.n)
        memcpy(k + vh.n + 2 + x.n, name.p, name.n);
    k[*len] = 0;
    return k;
}

static sched *sched_new(struct cron *c, uint64_t id, slice vh, slice x, slice name) {
    sched *s = xcalloc(1, sizeof *s);
    s->id = id;
    s->key = make_key(vh, x, name, &s->key_len);
    s->vhost = s->key;
    s->exchange = s->key + vh.n + 1;
    s->name = s->key + vh.n + 1 + x.n + 1;
    s->hidx = SIZE_MAX;
    s->marked = -1;
    s->next = -1;
    sched *old = map_get(&c->by_key, s->key, s->key_len);
    if (old)
        sched_remove(c, old, 0);
    old = map_get(&c->by_id, (const char *)&id, sizeof id);
    if (old)
        sched_remove(c, old, 0);
    map_put(&c->by_key, s->key, s->key_len, s);
    map_put(&c->by_id, (const char *)&s->id, sizeof s->id, s);
    if (id >= c->next_id)
        c->next_id = id + 1;
    return s;
}

/* The template's properties: the publisher's, without the headers that made it a schedule. */
static void strip_headers(slice props, buf *out) {
    props_view pv;
    props_parse(props, &pv);
    buf h;
    buf_init(&h);
    rd r = rd_make(pv.headers.p, pv.headers.n);
    const uint8_t *start = r.p;
    slice k;
    fval v;
    while (table_next(&r, &k, &v) == 1) {
        if (!slice_eqs(k, "x-ferry-cron") && !slice_eqs(k, "x-ferry-timezone") && !slice_eqs(k, "x-delay") &&
            !slice_eqs(k, "x-ferry-scheduled-at")) /* each copy gets its own */
            buf_put(&h, start, (size_t)(r.p - start));
        start = r.p;
    }
    props_rewrite(props, (slice){buf_head(&h), h.len}, 0, out);
    buf_free(&h);
}

/* The copy of s's template for tick: x-ferry-scheduled-at and message_id NAME:TICK. */
static message *copy_for(const sched *s, int64_t tick) {
    const message *t = s->tmpl;
    slice props = {msg_props(t), t->props_len};
    props_view pv;
    props_parse(props, &pv);
    buf h;
    buf_init(&h);
    buf_put(&h, pv.headers.p, pv.headers.n);
    buf_shortstr(&h, "x-ferry-scheduled-at", 20);
    buf_u8(&h, 'T');
    buf_u64(&h, (uint64_t)tick);
    char id[300];
    int n = snprintf(id, sizeof id, "%s:%lld", s->name, (long long)tick);
    buf np;
    buf_init(&np);
    props_rewrite_id(props, (slice){buf_head(&h), h.len}, (slice){(const uint8_t *)id, (size_t)MIN(n, 255)}, &np);
    message *m = message_new((slice){(const uint8_t *)msg_exchange(t), t->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(t), t->rkey_len}, (slice){buf_head(&np), np.len},
                             t->body_len);
    if (t->body_len)
        memcpy(msg_body(m), msg_body(t), t->body_len);
    m->persistent = t->persistent;
    m->priority = t->priority;
    m->ttl = t->ttl;
    buf_free(&h);
    buf_free(&np);
    return m;
}

/* Routes one tick of s now; the FIRED mark follows once its copies are synced. 0 if s is
 * gone instead (its exchange was deleted). */
static int fire(struct cron *c, sched *s, int64_t tick) {
    broker *b = c->b;
    vhost *vh = vhost_find(b, slice_str(s->vhost));
    exchange *x = vh ? broker_exchange(vh, slice_str(s->exchange)) : NULL;
    if (!x || x->type != EX_DELAYED) { /* its exchange is gone: so is the schedule */
        sched_remove(c, s, 1);
        return 0;
    }
    message *m = copy_for(s, tick);
    uint64_t appended = store_appended(b->store);
    props_view pv;
    props_parse((slice){msg_props(m), m->props_len}, &pv);
    exchange_route(x, m, pv.headers);
    int rejected = 0;
    broker_enqueue_routed(b, m, &rejected);
    message_unref(m);
    s->last = tick;
    s->fired = 1;
    if (!s->durable || !b->store)
        return 1;
    if (store_appended(b->store) != appended) { /* its copies are in the batch being built */
        s->copy_gen = store_gen(b->store);
        s->copy_tick = tick;
        wait_for(c, s);
    } else { /* routed nowhere durable: nothing to wait for */
        store_small(b, C_FIRED, s->id, tick);
        s->mark_gen = store_gen(b->store);
        s->mark_tick = tick;
        wait_for(c, s);
    }
    return 1;
}

static void fired(loop_timer *t) {
    struct cron *c = (struct cron *)((char *)t - offsetof(struct cron, timer));
    uint64_t wall = wall_ms();
    int64_t now = (int64_t)(wall / 1000);
    for (int n = 0; c->len && c->heap[0]->next <= now && n < FIRE_BATCH; n++) {
        sched *s = c->heap[0];
        int64_t tick = s->next, next = cron_next(&s->spec, s->tz, tick);
        if (next >= 0 && next <= now) { /* the loop was held up past further ticks: the latest fires, once */
            tick = cron_last_between(&s->spec, s->tz, tick, now);
            next = cron_next(&s->spec, s->tz, tick);
        }
        heap_remove(c, s);
        if (!fire(c, s, tick))
            continue; /* removed */
        s->next = next;
        heap_add(c, s);
    }
    arm(c);
}

void cron_synced(broker *b, uint64_t gen, int ok) {
    struct cron *c = b->cron;
    if (!c)
        return;
    for (size_t i = 0; i < c->nwait;) {
        sched *s = c->wait[i];
        if (s->put_gen && s->put_gen <= gen) {
            s->put_gen = 0;
            if (!ok) {
                /* Its record was not written, and its publish is nacked with the batch: the
                 * schedule is undone, as a durable declare is when its sync fails. */
                log_error("cron: schedule '%s' on %s not stored (the disk failed): removed", s->name, s->exchange);
                sched_remove(c, s, 0); /* takes it off the wait list: look at slot i again */
                continue;
            }
        }
        if (s->mark_gen && s->mark_gen <= gen) {
            if (ok && s->mark_tick > s->marked)
                s->marked = s->mark_tick;
            s->mark_gen = 0;
        }
        if (s->copy_gen && s->copy_gen <= gen) {
            /* Its copies are durable (or failed to be: then no mark, and the tick fires
             * again at the next start). */
            if (ok) {
                store_small(b, C_FIRED, s->id, s->copy_tick);
                s->mark_gen = store_gen(b->store);
                s->mark_tick = s->copy_tick;
            }
            s->copy_gen = 0;
        }
        if (!s->copy_gen && !s->mark_gen && !s->put_gen) {
            s->waiting = 0;
            c->wait[i] = c->wait[--c->nwait];
        } else {
            i++;
        }
    }
}

static int has_nul(slice s) { return s.n && memchr(s.p, 0, s.n) != NULL; }

/* ---- recovery ---- */

void cron_recover(void *ctx, slice payload) {
    broker *b = ctx;
    struct cron *c = get(b);
    rd r = rd_make(payload.p, payload.n);
    uint8_t op = rd_u8(&r);
    uint64_t id = rd_u64(&r);
    if (r.err)
        return;
    sched *s = map_get(&c->by_id, (const char *)&id, sizeof id);
    if (op == C_FIRED) {
        int64_t tick = (int64_t)rd_u64(&r);
        if (!r.err && s && (!s->fired || tick > s->last)) {
            s->last = tick;
            s->fired = 1;
            s->marked = tick;
        }
        return;
    }
    if (op == C_DEL) {
        if (s)
            sched_remove(c, s, 0);
        return;
    }
    if (op != C_PUT)
        return;
    int64_t last = (int64_t)rd_u64(&r);
    uint8_t was_fired = rd_u8(&r);
    slice vh = rd_shortstr(&r), x = rd_shortstr(&r), name = rd_shortstr(&r);
    slice expr = rd_longstr(&r), tzn = rd_shortstr(&r), rkey = rd_shortstr(&r);
    slice props = rd_longstr(&r), body = rd_longstr(&r);
    uint8_t persistent = rd_u8(&r);
    if (r.err || has_nul(tzn) || has_nul(expr) || has_nul(name) || !name.n)
        return;
    char err[200];
    cron_spec spec;
    if (cron_parse((const char *)expr.p, expr.n, &spec, err, sizeof err) < 0)
        return;
    char *tzs = tzn.n ? xstrndup((const char *)tzn.p, tzn.n) : xstrndup("", 0);
    const tzone *tz = NULL;
    if (tzs[0] && !(tz = zone(c, tzs, err, sizeof err))) {
        log_error("cron: schedule '%.*s' dropped: time zone '%s': %s", (int)name.n, (const char *)name.p, tzs, err);
        free(tzs);
        return;
    }
    props_view pv;
    if (props_parse(props, &pv) < 0) {
        free(tzs);
        return;
    }
    s = sched_new(c, id, vh, x, name);
    s->expr = xstrndup((const char *)expr.p, expr.n);
    s->tzname = tzs;
    s->spec = spec;
    s->tz = tz;
    s->tmpl = message_new(x, rkey, props, body.n);
    if (body.n)
        memcpy(msg_body(s->tmpl), body.p, body.n);
    s->tmpl->persistent = persistent;
    s->tmpl->priority = pv.priority;
    if (pv.flags & PROP_EXPIRATION) { /* checked when it was published: digits */
        s->tmpl->ttl = 0;
        for (size_t i = 0; i < pv.expiration.n && pv.expiration.p[i] >= '0' && pv.expiration.p[i] <= '9'; i++)
            s->tmpl->ttl = s->tmpl->ttl * 10 + (pv.expiration.p[i] - '0');
    }
    s->last = last;
    s->fired = was_fired;
    s->marked = was_fired ? last : -1;
    s->durable = 1;
    sched_count(s);
}

void cron_start(broker *b) {
    struct cron *c = get(b);
    c->timer.fn = fired;
    c->started = 1;
    int64_t now = (int64_t)wall_seconds();
    size_t i = 0, n = 0, catchup = 0;
    map_entry *e;
    while (map_iter(&c->by_key, &i, &e)) {
        sched *s = e->val;
        vhost *vh = vhost_find(b, slice_str(s->vhost));
        exchange *x = vh ? broker_exchange(vh, slice_str(s->exchange)) : NULL;
        if (!x || x->type != EX_DELAYED) {
            sched_remove(c, s, 0);
            continue;
        }
        /* A tick (or several) fell while ferryd was down: the latest fires now, once. A
         * clock set back never repeats a tick fired already. */
        int64_t next = cron_next(&s->spec, s->tz, s->last);
        int64_t missed = next >= 0 && next <= now ? cron_last_between(&s->spec, s->tz, s->last, now) : -1;
        s->next = missed >= 0 ? missed : next;
        catchup += missed >= 0;
        heap_add(c, s);
        n++;
    }
    if (n)
        log_info("cron: %zu schedules recovered, %zu with a tick missed while down (fired now, once)", n, catchup);
    arm(c);
}

/* ---- publishing a schedule ---- */

int cron_wanted(slice headers) {
    fval v;
    return headers.n && table_get(headers, "x-ferry-cron", &v);
}

/* A header's string value: 1 (in *out), 0 if absent, -1 if not a string. */
static int header_str(slice headers, const char *key, slice *out) {
    fval v;
    if (!table_get(headers, key, &v))
        return 0;
    if (!fval_is_str(&v))
        return -1;
    *out = v.s;
    return 1;
}

int cron_publish(channel *ch, exchange *x, message *m, const props_view *pv) {
    broker *b = x->b;
    struct cron *c = get(b);
    slice expr = {NULL, 0}, tzn = {NULL, 0};
    if (header_str(pv->headers, "x-ferry-cron", &expr) < 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid x-ferry-cron: must be a string");
        return -1;
    }
    if (header_str(pv->headers, "x-ferry-timezone", &tzn) < 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid x-ferry-timezone: must be a string");
        return -1;
    }
    slice name = pv->message_id;
    if (!(pv->flags & PROP_MESSAGE_ID) || name.n == 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "invalid x-ferry-cron: the message_id property names the schedule and is missing");
        return -1;
    }
    if (name.n > MAX_NAME || has_nul(name)) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "invalid x-ferry-cron: a schedule's message_id must be 1-%d bytes without NUL", MAX_NAME);
        return -1;
    }
    slice vhn = {(const uint8_t *)x->vh->name, x->vh->name_len}, xn = {(const uint8_t *)x->name, x->name_len};
    size_t klen;
    char *key = make_key(vhn, xn, name, &klen);
    sched *old = map_get(&c->by_key, key, klen);
    free(key);
    int durable = x->durable && b->store;
    /* An empty expression removes the schedule (if there is one); blanks are an error. */
    if (expr.n == 0) {
        if (!old)
            return 0;
        int stored = old->durable && b->store;
        log_debug("cron: schedule '%.*s' on %s removed", (int)name.n, (const char *)name.p, x->name);
        sched_remove(c, old, 1);
        arm(c);
        return stored;
    }
    char err[300];
    cron_spec spec;
    if (cron_parse((const char *)expr.p, expr.n, &spec, err, sizeof err) < 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid x-ferry-cron '%.*s': %s",
                            (int)MIN(expr.n, 100), (const char *)expr.p, err);
        return -1;
    }
    if (tzn.n > 200 || has_nul(tzn)) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid x-ferry-timezone: not a time zone name");
        return -1;
    }
    char *tzs = tzn.n ? xstrndup((const char *)tzn.p, tzn.n) : xstrndup("", 0);
    const tzone *tz = NULL;
    if (tzs[0] && !(tz = zone(c, tzs, err, sizeof err))) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid x-ferry-timezone '%s': %s", tzs, err);
        free(tzs);
        return -1;
    }
    int64_t now = (int64_t)wall_seconds();
    int64_t next = cron_next(&spec, tz, now);
    if (next < 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "invalid x-ferry-cron '%.*s': it never fires (no tick in the next 10 years)",
                            (int)MIN(expr.n, 100), (const char *)expr.p);
        free(tzs);
        return -1;
    }
    if (m->body_len > MAX_TEMPLATE_BODY) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "invalid x-ferry-cron: a schedule's body is at most %u bytes, this one is %llu",
                            MAX_TEMPLATE_BODY, (unsigned long long)m->body_len);
        free(tzs);
        return -1;
    }
    /* A replacement keeps the id (its records replace the old ones) and starts afresh. */
    uint64_t id = old ? old->id : c->next_id++;
    sched *s = sched_new(c, id, vhn, xn, name);
    s->expr = xstrndup((const char *)expr.p, expr.n);
    s->tzname = tzs;
    s->spec = spec;
    s->tz = tz;
    buf props;
    buf_init(&props);
    strip_headers((slice){msg_props(m), m->props_len}, &props);
    s->tmpl = message_new(xn, (slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, (slice){buf_head(&props), props.len},
                          m->body_len);
    buf_free(&props);
    if (m->body_len)
        memcpy(msg_body(s->tmpl), msg_body(m), m->body_len);
    s->tmpl->persistent = m->persistent;
    s->tmpl->priority = m->priority;
    s->tmpl->ttl = m->ttl;
    s->last = now;
    s->fired = 0;
    s->durable = (uint8_t)durable;
    sched_count(s);
    s->next = next;
    heap_add(c, s);
    arm(c);
    log_debug("cron: schedule '%s' on %s: '%s'%s%s", s->name, x->name, s->expr, tzs[0] ? " in " : "", tzs);
    if (!durable)
        return 0;
    store_put(b, s);
    s->put_gen = store_gen(b->store);
    wait_for(c, s);
    return 1;
}

/* ---- exchanges, listing, shutdown ---- */

void cron_exchange_removed(exchange *x) {
    struct cron *c = x->b->cron;
    if (!c)
        return;
    size_t i = 0;
    map_entry *e;
    while (map_iter(&c->by_key, &i, &e)) {
        sched *s = e->val;
        if (strcmp(s->exchange, x->name) == 0 && strcmp(s->vhost, x->vh->name) == 0)
            sched_remove(c, s, c->started); /* during recovery nothing is written */
    }
    if (c->started)
        arm(c);
}

void cron_each(broker *b, const char *vhost, void (*fn)(void *ctx, const cron_info *ci), void *ctx) {
    struct cron *c = b->cron;
    if (!c)
        return;
    size_t i = 0;
    map_entry *e;
    while (map_iter(&c->by_key, &i, &e)) {
        sched *s = e->val;
        if (vhost && strcmp(vhost, s->vhost) != 0)
            continue;
        cron_info ci = {s->vhost, s->exchange, s->name, s->expr, s->tzname, msg_rkey(s->tmpl),
                        s->next, s->fired ? s->last : -1, s->durable};
        fn(ctx, &ci);
    }
}

void cron_shutdown(broker *b) {
    struct cron *c = b->cron;
    if (!c || !b->store)
        return;
    /* Copies still waiting for their sync are written by the store's close, in this batch
     * or the one in flight: their marks go with them. */
    for (size_t i = 0; i < c->nwait; i++) {
        sched *s = c->wait[i];
        if (s->copy_gen)
            store_small(b, C_FIRED, s->id, s->copy_tick);
        s->copy_gen = s->mark_gen = s->put_gen = 0;
        s->waiting = 0;
    }
    c->nwait = 0;
}

void cron_free(broker *b) {
    struct cron *c = b->cron;
    if (!c)
        return;
    loop_timer_cancel(b->loop, &c->timer);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&c->by_key, &i, &e))
        sched_free(e->val);
    i = 0;
    while (map_iter(&c->zones, &i, &e))
        tz_free(e->val);
    map_free(&c->by_key);
    map_free(&c->by_id);
    map_free(&c->zones);
    free(c->heap);
    free(c->wait);
    free(c);
    b->cron = NULL;
}
