/* dedup.c — x-deduplication-window: per-queue de-duplication by message-id (SQS FIFO and
 * NATS JetStream style; RabbitMQ has no equivalent, so a RabbitMQ client can set the argument
 * and RabbitMQ ignores it).
 *
 * A queue with the argument remembers the message-id of every message it accepted, for the
 * window's length: a map id -> time accepted, plus a FIFO of (id, time) in acceptance order
 * so that ids leave the map when their window has passed, a few at every publish (no scan).
 * A message without a message-id is never a duplicate. The publisher's confirm is sent as
 * for any accepted message: a duplicate is an accepted message that needed no storing. */
#include "broker.h"

#include <stdlib.h>

#include "persist.h"
#include "util.h"

struct dedup_rec {
    char *id; /* owned by the map (its key copy is separate) */
    size_t n;
    uint64_t at;
    uint32_t seg;   /* the segment holding the message's record, if pinned */
    uint8_t pinned; /* the store keeps that segment while the id is in the window */
};

struct dedup {
    map ids; /* message-id -> (uintptr_t) time accepted, in ms */
    struct dedup_rec *fifo;
    size_t cap, head, len;
};

static void fifo_push(struct dedup *d, struct dedup_rec r) {
    if (d->len == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 64;
        struct dedup_rec *a = xmalloc(ncap * sizeof *a);
        for (size_t i = 0; i < d->len; i++)
            a[i] = d->fifo[(d->head + i) % d->cap];
        free(d->fifo);
        d->fifo = a;
        d->cap = ncap;
        d->head = 0;
    }
    d->fifo[(d->head + d->len) % d->cap] = r;
    d->len++;
}

/* Forgets ids accepted before the window. */
static void expire(queue *q, struct dedup *d, uint64_t now, uint64_t window) {
    while (d->len) {
        struct dedup_rec *r = &d->fifo[d->head];
        if (r->at + window > now)
            break;
        /* Only if the map still holds this acceptance (not a later one of the same id). */
        if ((uint64_t)(uintptr_t)map_get(&d->ids, r->id, r->n) == r->at)
            map_del(&d->ids, r->id, r->n);
        if (r->pinned)
            store_unpin(q->b->store, r->seg);
        free(r->id);
        d->head = (d->head + 1) % d->cap;
        d->len--;
    }
}

int dedup_seen(queue *q, const message *m) {
    props_view pv;
    if (props_parse((slice){msg_props(m), m->props_len}, &pv) < 0 || !(pv.flags & PROP_MESSAGE_ID))
        return 0;
    struct dedup *d = q->dedup;
    if (!d) {
        d = q->dedup = xcalloc(1, sizeof *d);
        map_init(&d->ids);
    }
    uint64_t now = now_ms(), window = (uint64_t)q->dedup_window;
    expire(q, d, now, window);
    const char *id = (const char *)pv.message_id.p;
    size_t n = pv.message_id.n;
    if (map_get(&d->ids, id, n))
        return 1;
    /* The time is stored as the map value; +1 keeps it non-NULL at time 0. */
    uint64_t at = now | 1;
    map_put(&d->ids, id, n, (void *)(uintptr_t)at);
    fifo_push(d, (struct dedup_rec){xstrndup(id, n), n, at, 0, 0});
    return 0;
}

void dedup_stored(queue *q, uint32_t seg) {
    struct dedup *d = q->dedup;
    if (!d || !d->len)
        return;
    struct dedup_rec *r = &d->fifo[(d->head + d->len - 1) % d->cap];
    if (r->pinned)
        return; /* already noted: this message was not the one just accepted */
    r->seg = seg;
    r->pinned = 1;
    store_pin(q->b->store, seg);
}

void dedup_restore(queue *q, const message *m, uint64_t at, uint32_t seg) {
    props_view pv;
    if (props_parse((slice){msg_props(m), m->props_len}, &pv) < 0 || !(pv.flags & PROP_MESSAGE_ID))
        return;
    struct dedup *d = q->dedup;
    if (!d) {
        d = q->dedup = xcalloc(1, sizeof *d);
        map_init(&d->ids);
    }
    const char *id = (const char *)pv.message_id.p;
    at |= 1;
    map_put(&d->ids, id, pv.message_id.n, (void *)(uintptr_t)at);
    /* pinned: the recovery counts this segment's pin itself (store.c) */
    fifo_push(d, (struct dedup_rec){xstrndup(id, pv.message_id.n), pv.message_id.n, at, seg, 1});
}

void dedup_free(queue *q) {
    struct dedup *d = q->dedup;
    if (!d)
        return;
    for (size_t i = 0; i < d->len; i++) {
        struct dedup_rec *r = &d->fifo[(d->head + i) % d->cap];
        if (r->pinned)
            store_unpin(q->b->store, r->seg);
        free(r->id);
    }
    free(d->fifo);
    map_free(&d->ids);
    free(d);
}
