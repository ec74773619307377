/* delayed.c — messages that fall due later: the x-delayed-message exchange and the
 * x-retry-delays back-off share one timer structure.
 *
 * x-delayed-message follows the rabbitmq-delayed-message-exchange plugin: the exchange is
 * declared with x-delayed-type (the type that routes: direct, fanout, topic, headers,
 * x-consistent-hash); a message published with an x-delay header of 1 .. 2^32-1 ms is held
 * and routed through the exchange when it falls due, with x-delay set to -delay (so it is
 * not delayed again, and consumers can tell it was delayed); any other message is routed at
 * once. As with the plugin, a delayed message is routed to no queue at publish time, so a
 * mandatory publish is returned (the plugin documents mandatory as unsupported), and a
 * message whose exchange is deleted before it falls due is dropped.
 *
 * Unlike the plugin (a Mnesia table scanned by one timer process) the pending messages sit
 * in one binary min-heap on (due time, arrival order), driven by a single loop timer armed
 * for the earliest entry: O(log n) to add or fire, so millions pending cost only memory.
 * Due times are wall-clock milliseconds kept in the entry itself (delayed_entry), which is
 * what a store persists so that delays survive a restart. Firing is bounded per loop turn
 * (FIRE_BATCH) so that a burst of due messages does not starve the sockets. */
#include "broker.h"

#include <stdlib.h>

#include "persist.h"
#include "util.h"

#define FIRE_BATCH 20000
#define MAX_DELAY 4294967295LL /* the plugin's limit: Erlang's maximum timer */

struct delayed {
    broker *b;
    delayed_entry *heap;
    size_t len, cap;
    uint64_t seq;
    loop_timer timer;
};

static int before(const delayed_entry *a, const delayed_entry *b) {
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void sift_up(struct delayed *d, size_t i) {
    delayed_entry e = d->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&e, &d->heap[p]))
            break;
        d->heap[i] = d->heap[p];
        i = p;
    }
    d->heap[i] = e;
}

static void sift_down(struct delayed *d, size_t i) {
    delayed_entry e = d->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= d->len)
            break;
        if (c + 1 < d->len && before(&d->heap[c + 1], &d->heap[c]))
            c++;
        if (!before(&d->heap[c], &e))
            break;
        d->heap[i] = d->heap[c];
        i = c;
    }
    d->heap[i] = e;
}

static delayed_entry pop(struct delayed *d) {
    delayed_entry top = d->heap[0];
    d->heap[0] = d->heap[--d->len];
    if (d->len)
        sift_down(d, 0);
    if (d->len == 0 && d->cap > 4096) { /* an emptied heap gives its memory back */
        free(d->heap);
        d->heap = NULL;
        d->cap = 0;
    }
    return top;
}

static void arm(struct delayed *d) {
    if (!d->len) {
        loop_timer_cancel(d->b->loop, &d->timer);
        return;
    }
    uint64_t wall = wall_ms(), due = d->heap[0].due;
    loop_timer_arm(d->b->loop, &d->timer, now_ms() + (due > wall ? due - wall : 0));
}

/* Routes or publishes one entry that fell due, and releases it. */
static void fire_one(broker *b, delayed_entry e) {
    int rejected = 0; /* one attempt, as the plugin: a full queue's refusal is final */
    if (e.q) {
        e.q->cnt.delayed_pending--;
        if (!e.q->deleted) {
            b->nroute = 0;
            broker_route_add(b, e.q);
            broker_enqueue_routed(b, e.m, &rejected);
        }
        queue_unref(e.q);
    } else if (e.x) {
        props_view pv;
        props_parse((slice){msg_props(e.m), e.m->props_len}, &pv);
        exchange_route(e.x, e.m, pv.headers);
        broker_enqueue_routed(b, e.m, &rejected);
    }
    persist_delayed_done(b->store, &e); /* after the routed copies' records, in the same batch */
    message_unref(e.m);
}

static void fired(loop_timer *t) {
    struct delayed *d = (struct delayed *)((char *)t - offsetof(struct delayed, timer));
    uint64_t wall = wall_ms();
    for (int n = 0; d->len && d->heap[0].due <= wall && n < FIRE_BATCH; n++)
        fire_one(d->b, pop(d));
    arm(d);
}

static void add(broker *b, delayed_entry e) {
    struct delayed *d = b->delayed;
    if (!d) {
        d = b->delayed = xcalloc(1, sizeof *d);
        d->b = b;
        d->timer.fn = fired;
    }
    if (d->len == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->heap = xrealloc(d->heap, d->cap * sizeof *d->heap);
    }
    e.seq = d->seq++;
    if (e.q)
        e.q->cnt.delayed_pending++;
    d->heap[d->len++] = e;
    sift_up(d, d->len - 1);
    if (d->heap[0].seq == e.seq) /* a new earliest entry */
        arm(d);
}

int delayed_check_declare(channel *ch, slice args, int *subtype) {
    fval v;
    if (!table_get(args, "x-delayed-type", &v) || !fval_is_str(&v)) {
        /* The plugin's text, word for word. */
        channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE,
                            "Invalid argument, 'x-delayed-type' must bean existing exchnage type");
        return -1;
    }
    if (exchange_type_parse(v.s, subtype) < 0) {
        conn_close_error(ch->c, COMMAND_INVALID, EXCHANGE_DECLARE, "unknown exchange type '%.*s'", (int)MIN(v.s.n, 100),
                         (const char *)v.s.p);
        return -1;
    }
    if (*subtype == EX_DELAYED) {
        channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE,
                            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'");
        return -1;
    }
    return 0;
}

/* The delay a message asks for, as the plugin reads x-delay: integer types as they are,
 * strings parsed as a decimal integer, floating point and decimal values truncated.
 * Returns 0 with no (usable) delay. */
static int64_t delay_of(slice headers) {
    fval v;
    if (!headers.n || !table_get(headers, "x-delay", &v))
        return 0;
    if (fval_is_int(&v))
        return v.i;
    if (v.type == 'd' || v.type == 'f')
        return v.d > -1e18 && v.d < 1e18 ? (int64_t)v.d : 0;
    if (v.type == 'D') {
        int64_t x = v.dec_value;
        for (int i = 0; i < v.dec_scale; i++)
            x /= 10;
        return x;
    }
    if (fval_is_str(&v) && v.s.n > 0 && v.s.n < 19) {
        int64_t x = 0;
        size_t i = v.s.p[0] == '-' || v.s.p[0] == '+' ? 1 : 0;
        if (i == v.s.n)
            return 0;
        for (; i < v.s.n; i++) {
            if (v.s.p[i] < '0' || v.s.p[i] > '9')
                return 0;
            x = x * 10 + (v.s.p[i] - '0');
        }
        return v.s.p[0] == '-' ? -x : x;
    }
    return 0;
}

int delayed_take(exchange *x, message *m, slice headers) {
    int64_t delay = delay_of(headers);
    if (delay <= 0 || delay > MAX_DELAY)
        return 0;
    /* x-delay becomes -delay (a signedint, as the plugin writes it) when it is held. */
    message *held = message_set_int_header(m, "x-delay", delay <= 2147483648LL ? 'I' : 'l', -delay);
    delayed_entry e = {wall_ms() + (uint64_t)delay, 0, held, x, NULL, 0, 0};
    /* A persistent message for a durable exchange is held on disk too: its publisher's
     * confirm waits for the record like any other persistent publish. */
    if (x->b->store && m->persistent && x->durable)
        persist_delayed(x->b->store, &e);
    add(x->b, e);
    return 1;
}

void delayed_to_queue(broker *b, queue *q, message *m, uint64_t delay_ms) {
    q->refs++;
    delayed_entry e = {wall_ms() + delay_ms, 0, message_ref(m), NULL, q, 0, 0};
    if (b->store && m->persistent && q->qid)
        persist_delayed(b->store, &e);
    add(b, e);
}

void delayed_restore(broker *b, delayed_entry e) { add(b, e); }

/* The plugin drops what was pending for a deleted exchange when it falls due; here the
 * entries forget the exchange at once (a scan, but deleting an exchange is rare). */
void delayed_exchange_gone(broker *b, exchange *x) {
    struct delayed *d = b->delayed;
    for (size_t i = 0; d && i < d->len; i++)
        if (d->heap[i].x == x)
            d->heap[i].x = NULL;
}

void delayed_free(broker *b) {
    struct delayed *d = b->delayed;
    if (!d)
        return;
    loop_timer_cancel(b->loop, &d->timer);
    for (size_t i = 0; i < d->len; i++) {
        message_unref(d->heap[i].m);
        if (d->heap[i].q)
            queue_unref(d->heap[i].q);
    }
    free(d->heap);
    free(d);
    b->delayed = NULL;
}

size_t delayed_count(broker *b) { return b->delayed ? b->delayed->len : 0; }

/* Calls fn for every pending delayed message (compaction: fn may change e->seg only). */
void delayed_each(broker *b, void (*fn)(void *ctx, delayed_entry *e), void *ctx) {
    struct delayed *d = b->delayed;
    for (size_t i = 0; d && i < d->len; i++)
        fn(ctx, &d->heap[i]);
}
