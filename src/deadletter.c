/* deadletter.c — dead-letter exchanges, as RabbitMQ does them.
 *
 * A message that leaves a queue without being acknowledged — rejected or nacked without
 * requeue, expired, dropped by a length limit — is republished to the queue's
 * x-dead-letter-exchange (with x-dead-letter-routing-key, or its own routing keys), carrying
 * an x-death header that says where and why it died: one entry per {queue, reason}, the most
 * recent first, with a count; x-first-death-* record the first death. The republish is
 * deferred to the end of the loop batch (broker_after_batch), so dead-lettering inside a
 * publish never nests routing, and a cycle costs one batch per turn rather than recursion.
 * Cycles are dropped as RabbitMQ drops them: a message that would come back to a queue it
 * already died in, with no rejection since it last died there (is_cycle).
 *
 * Across a crash dead-lettering is at-least-once: a stored copy's settle record waits until
 * the batch holding its dead letter's record is synced (deadletter_synced). Writing both in
 * one batch is not enough: a power cut may keep any subset of an unsynced batch's sectors,
 * the settle without the dead letter. Retries (queue_reject) wait the same way. */
#include "broker.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

struct deadletter {
    struct deadletter *next;
    message *m; /* the republished copy: new exchange, routing key and headers */
    uint8_t rejected;
    vhost *vh;   /* where the dead-letter exchange is looked up: the queue's vhost */
    queue *src;  /* deadletter_copy: the source queue (a reference) and its copy, to settle */
    qmsg src_qm; /* once the dead letter's record is synced */
    uint64_t gen;
};

static void put_str(buf *b, const char *key, const void *s, size_t n) {
    buf_shortstr(b, key, strlen(key));
    buf_u8(b, 'S');
    buf_longstr(b, s, n);
}

/* One x-death entry (the contents of its table). */
static void death_entry(buf *e, const queue *q, const message *m, const char *reason, slice expiration) {
    buf_shortstr(e, "count", 5);
    buf_u8(e, 'l');
    buf_u64(e, 1);
    put_str(e, "reason", reason, strlen(reason));
    put_str(e, "queue", q->name, q->name_len);
    buf_shortstr(e, "time", 4);
    buf_u8(e, 'T');
    buf_u64(e, wall_seconds());
    put_str(e, "exchange", msg_exchange(m), m->exchange_len);
    buf_shortstr(e, "routing-keys", 12);
    buf_u8(e, 'A');
    buf_u32(e, 5 + m->rkey_len);
    buf_u8(e, 'S');
    buf_longstr(e, msg_rkey(m), m->rkey_len);
    if (expiration.n)
        put_str(e, "original-expiration", expiration.p, expiration.n);
}

/* A copy of a table entry's value bytes with "count" raised by one. */
static void bump_count(buf *out, slice entry) {
    rd r = rd_make(entry.p, entry.n);
    slice k;
    fval v;
    const uint8_t *start = r.p;
    while (table_next(&r, &k, &v) == 1) {
        if (slice_eqs(k, "count") && fval_is_int(&v)) {
            buf_shortstr(out, "count", 5);
            buf_u8(out, 'l');
            buf_u64(out, (uint64_t)v.i + 1);
        } else {
            buf_put(out, start, (size_t)(r.p - start));
        }
        start = r.p;
    }
}

static int entry_is(slice entry, const queue *q, const char *reason) {
    fval v;
    return table_get(entry, "queue", &v) && fval_is_str(&v) && slice_eq(v.s, (slice){(const uint8_t *)q->name, q->name_len}) &&
           table_get(entry, "reason", &v) && fval_is_str(&v) && slice_eqs(v.s, reason);
}

/* The new headers table: the old entries but x-death, the updated x-death, x-first-death-*. */
static void build_headers(buf *h, slice old, const queue *q, const message *m, const char *reason, slice expiration) {
    buf arr, e;
    buf_init(&arr);
    buf_init(&e);
    fval xd;
    int have_xd = old.n && table_get(old, "x-death", &xd) && xd.type == 'A';
    int matched = 0;
    if (have_xd) { /* the matching entry, counted up, goes first */
        rd r = rd_make(xd.s.p, xd.s.n);
        fval v;
        while (array_next(&r, &v) == 1) {
            if (!matched && v.type == 'F' && entry_is(v.s, q, reason)) {
                bump_count(&e, v.s);
                matched = 1;
            }
        }
    }
    if (!matched)
        death_entry(&e, q, m, reason, expiration);
    buf_u8(&arr, 'F');
    buf_longstr(&arr, buf_head(&e), e.len);
    if (have_xd) {
        rd r = rd_make(xd.s.p, xd.s.n);
        const uint8_t *start = r.p;
        fval v;
        int skipped = 0;
        while (array_next(&r, &v) == 1) {
            if (matched && !skipped && v.type == 'F' && entry_is(v.s, q, reason))
                skipped = 1;
            else
                buf_put(&arr, start, (size_t)(r.p - start));
            start = r.p;
        }
    }
    /* the other headers, as they were */
    rd r = rd_make(old.p, old.n);
    const uint8_t *start = r.p;
    slice k;
    fval v;
    int first = 0;
    while (table_next(&r, &k, &v) == 1) {
        if (slice_eqs(k, "x-first-death-reason"))
            first = 1;
        if (!slice_eqs(k, "x-death"))
            buf_put(h, start, (size_t)(r.p - start));
        start = r.p;
    }
    buf_shortstr(h, "x-death", 7);
    buf_u8(h, 'A');
    buf_longstr(h, buf_head(&arr), arr.len);
    if (!first) {
        put_str(h, "x-first-death-reason", reason, strlen(reason));
        put_str(h, "x-first-death-queue", q->name, q->name_len);
        put_str(h, "x-first-death-exchange", msg_exchange(m), m->exchange_len);
    }
    buf_free(&arr);
    buf_free(&e);
}

/* Builds the dead letter of m (not taking the reference) and queues it for
 * deadletter_flush; NULL if q has no dead-letter exchange. */
static struct deadletter *make_deadletter(queue *q, message *m, const char *reason) {
    fval dlx, dlrk;
    slice args = {q->args, q->args_len};
    if (!q->args_len || !table_get(args, "x-dead-letter-exchange", &dlx) || dlx.type != 'S')
        return NULL;
    static const char *reasons[DL_NREASONS] = {"rejected", "expired", "maxlen", "delivery_limit"};
    for (int k = 0; k < DL_NREASONS; k++)
        if (strcmp(reason, reasons[k]) == 0)
            q->cnt.dead_lettered[k]++, q->b->cnt.dead_lettered[k]++;
    props_view pv;
    props_parse((slice){msg_props(m), m->props_len}, &pv);
    if (log_level <= LOG_DEBUG) { /* a line about one message carries its correlation id */
        char cid[256];
        snprintf(cid, sizeof cid, "%.*s", (int)pv.correlation_id.n,
                 pv.correlation_id.p ? (const char *)pv.correlation_id.p : "");
        log_correlation_id = (pv.flags & PROP_CORRELATION_ID) ? cid : NULL;
        log_debug("message dead-lettered from queue '%s' (%s)", q->name, reason);
        log_correlation_id = NULL;
    }
    slice expiration = (pv.flags & PROP_EXPIRATION) ? pv.expiration : (slice){NULL, 0};
    buf h, props;
    buf_init(&h);
    buf_init(&props);
    build_headers(&h, pv.headers, q, m, reason, expiration);
    /* RabbitMQ drops the expiration so that a dead letter does not expire again. */
    props_rewrite((slice){msg_props(m), m->props_len}, (slice){buf_head(&h), h.len}, 1, &props);
    slice rkey = (slice){(const uint8_t *)msg_rkey(m), m->rkey_len};
    if (table_get(args, "x-dead-letter-routing-key", &dlrk) && dlrk.type == 'S')
        rkey = dlrk.s;
    message *n = message_new(dlx.s, rkey, (slice){buf_head(&props), props.len}, m->body_len);
    if (m->body_len)
        memcpy(msg_body(n), msg_body(m), m->body_len);
    n->persistent = m->persistent;
    n->priority = m->priority;
    buf_free(&h);
    buf_free(&props);
    struct deadletter *d = xcalloc(1, sizeof *d);
    d->m = n;
    d->rejected = strcmp(reason, "rejected") == 0;
    d->vh = q->vh;
    broker *b = q->b;
    /* FIFO, so that dead letters from one queue keep their order */
    d->next = NULL;
    if (b->dl_tail)
        b->dl_tail->next = d;
    else
        b->dl_head = d;
    b->dl_tail = d;
    return d;
}

void deadletter(queue *q, message *m, const char *reason) {
    make_deadletter(q, m, reason);
    message_unref(m);
}

void deadletter_copy(queue *q, qmsg qm, const char *reason) {
    assert(qm.stored && !qm.paged);
    struct deadletter *d = make_deadletter(q, qm.m, reason);
    if (!d) {
        queue_settle(q, qm);
        return;
    }
    d->src = q;
    d->src_qm = qm;
    q->refs++;
}

/* Queues d (its source set) to be settled once the batch being built is synced. */
static void wait_for_sync(broker *b, struct deadletter *d) {
    d->gen = store_gen(b->store);
    d->m = NULL;
    d->next = NULL;
    if (b->dl_wait_tail)
        b->dl_wait_tail->next = d;
    else
        b->dl_wait = d;
    b->dl_wait_tail = d;
}

void deadletter_settle_later(queue *q, qmsg qm) {
    assert(qm.stored && !qm.paged);
    struct deadletter *d = xcalloc(1, sizeof *d);
    d->src = q;
    d->src_qm = qm;
    q->refs++;
    wait_for_sync(q->b, d);
}

/* The source copy of a dead letter leaves the store: settled (ok), or left on disk. */
static void settle_source(struct deadletter *d, int ok) {
    if (ok)
        queue_settle(d->src, d->src_qm);
    else
        message_unref(d->src_qm.m); /* its record stays live: recovery brings it back */
    queue_unref(d->src);
    free(d);
}

void deadletter_synced(broker *b, uint64_t gen, int ok) {
    while (b->dl_wait && b->dl_wait->gen <= gen) {
        struct deadletter *d = b->dl_wait;
        b->dl_wait = d->next;
        if (!b->dl_wait)
            b->dl_wait_tail = NULL;
        settle_source(d, ok);
    }
}

void deadletter_settle_all(broker *b) {
    while (b->dl_wait) {
        struct deadletter *d = b->dl_wait;
        b->dl_wait = d->next;
        settle_source(d, 1);
    }
    b->dl_wait_tail = NULL;
}

/* Would this message, dead-lettered again into q, go round a cycle with no rejection in it?
 * RabbitMQ's rule (mc:is_death_cycle, deaths v2): in x-death, most recent first, find the
 * first entry for q; it is a cycle unless that entry or a more recent one has reason
 * "rejected" (a client's reject is a decision, not an automatic loop). A rejection older
 * than the last death in q does not count: it was before the cycle. Entries that are not
 * tables (a client can publish any x-death) are skipped: they must not hide a cycle. */
static int is_cycle(const message *m, const queue *q) {
    props_view pv;
    fval xd, v;
    if (props_parse((slice){msg_props(m), m->props_len}, &pv) < 0 || !table_get(pv.headers, "x-death", &xd) ||
        xd.type != 'A')
        return 0;
    rd r = rd_make(xd.s.p, xd.s.n);
    while (array_next(&r, &v) == 1) {
        fval f;
        if (v.type != 'F')
            continue;
        if (table_get(v.s, "reason", &f) && fval_is_str(&f) && slice_eqs(f.s, "rejected"))
            return 0;
        if (table_get(v.s, "queue", &f) && fval_is_str(&f) &&
            slice_eq(f.s, (slice){(const uint8_t *)q->name, q->name_len}))
            return 1;
    }
    return 0;
}

size_t deadletter_flush(broker *b, size_t max) {
    size_t done = 0;
    while (b->dl_head && done < max) {
        done++;
        struct deadletter *d = b->dl_head;
        b->dl_head = d->next;
        if (!b->dl_head)
            b->dl_tail = NULL;
        message *m = d->m;
        uint64_t appended = store_appended(b->store);
        exchange *x = broker_exchange(d->vh, (slice){(const uint8_t *)msg_exchange(m), m->exchange_len});
        if (x) {
            props_view pv;
            props_parse((slice){msg_props(m), m->props_len}, &pv);
            exchange_route(x, m, pv.headers);
            size_t k = 0;
            for (size_t i = 0; i < b->nroute; i++) {
                queue *q = b->route_out[i];
                if (!d->rejected && is_cycle(m, q)) {
                    if (log_level <= LOG_DEBUG) { /* a line about one message carries its correlation id */
                        char cid[256];
                        snprintf(cid, sizeof cid, "%.*s", (int)pv.correlation_id.n,
                                 pv.correlation_id.p ? (const char *)pv.correlation_id.p : "");
                        log_correlation_id = (pv.flags & PROP_CORRELATION_ID) ? cid : NULL;
                        log_debug("dead letter dropped: cycle through queue '%s'", q->name);
                        log_correlation_id = NULL;
                    }
                } else
                    b->route_out[k++] = q;
            }
            b->nroute = k;
            int rejected = 0;
            broker_enqueue_routed(b, m, &rejected);
        }
        message_unref(m);
        if (d->src && store_appended(b->store) != appended) {
            wait_for_sync(b, d); /* its record is in the batch being built: the source waits */
        } else if (d->src) {
            settle_source(d, 1); /* not stored anywhere (or dropped): nothing to wait for */
        } else {
            free(d);
        }
    }
    return done;
}

void deadletter_drop_pending(broker *b) {
    size_t n = 0;
    while (b->dl_head) {
        struct deadletter *d = b->dl_head;
        b->dl_head = d->next;
        message_unref(d->m);
        if (d->src)
            settle_source(d, 0);
        else
            free(d);
        n++;
    }
    b->dl_tail = NULL;
    if (n)
        log_warn("shutdown: %zu dead letters not yet routed are dropped (their stored sources stay on disk)", n);
}

/* The queue named in the most recent x-death entry of m (the first one), if it exists. */
static queue *death_queue(vhost *vh, const message *m) {
    props_view pv;
    fval xd, e, qn;
    if (props_parse((slice){msg_props(m), m->props_len}, &pv) < 0 || !pv.headers.n ||
        !table_get(pv.headers, "x-death", &xd) || xd.type != 'A')
        return NULL;
    rd r = rd_make(xd.s.p, xd.s.n);
    if (array_next(&r, &e) != 1 || e.type != 'F' || !table_get(e.s, "queue", &qn) || !fval_is_str(&qn))
        return NULL;
    queue *q = broker_queue(vh, qn.s);
    return q && !q->deleted ? q : NULL;
}

size_t deadletter_redrive(queue *dlq, size_t max) {
    size_t moved = 0, scan = queue_ready_count(dlq);
    qmsg *keep = NULL;
    size_t nkeep = 0;
    qmsg qm;
    while (moved < max && scan-- > 0 && queue_pop_now(dlq, &qm) > 0) {
        queue *to = death_queue(dlq->vh, qm.m);
        if (!to || to == dlq) {
            keep = xrealloc(keep, (nkeep + 1) * sizeof *keep);
            keep[nkeep++] = qm;
            continue;
        }
        /* The message as it is: properties, headers (x-death included) and body; it is
         * enqueued (and stored) in its queue before it leaves the dead-letter queue. */
        broker *b = dlq->b;
        int rejected = 0;
        b->nroute = 0;
        broker_route_add(b, to);
        broker_enqueue_routed(b, qm.m, &rejected);
        queue_settle(dlq, qm);
        moved++;
    }
    for (size_t i = 0; i < nkeep; i++)
        queue_putback(dlq, keep[i]);
    free(keep);
    return moved;
}
