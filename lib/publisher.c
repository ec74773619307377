/* publisher.c — the reliable publisher: publisher confirms on its own connection, so a
 * publish is either confirmed by the broker or reported as an error, never dropped
 * silently.
 *
 * Every message sent is kept (copied) until the broker settles it: basic.ack → 0,
 * basic.nack → FERRY_ENACK, basic.return before the ack → FERRY_EUNROUTABLE (mandatory
 * publishes), channel.close (404 no exchange) → FERRY_EREFUSED for the messages to that
 * exchange. If the connection drops, the publisher reconnects with back-off
 * (ferry_conn_reconnect) and publishes every unsettled message again in the same order on
 * the new channel — at-least-once: the broker may have taken one whose ack was lost. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct pending {
    uint64_t seq;   /* delivery tag on the current channel; 0 = not on the wire yet */
    uint64_t token;
    char *exchange, *rk;
    ferry_message *m;
    int returned;
    int settled;
    int result;
} pending;

struct ferry_publisher {
    ferry_conn *c;
    ferry_publisher_opts o;
    uint64_t gen;      /* connection generation the channel was put in confirm mode on */
    uint64_t next_seq;
    pending *q;        /* send order; q[head..n) are the live ones */
    size_t head, n, cap;
};

void ferry_publisher_opts_init(ferry_publisher_opts *o) {
    memset(o, 0, sizeof *o);
    o->persistent = 1;
    o->max_unconfirmed = 1024;
}

int fp_basic_publish(ferry_conn *c, amqp_channel_t ch, const char *exchange, const char *rk,
                     int mandatory, const ferry_message *m) {
    if (!c->st)
        return FERRY_ECLOSED;
    int s = amqp_basic_publish(c->st, ch, amqp_cstring_bytes(exchange ? exchange : ""),
                               amqp_cstring_bytes(rk ? rk : ""), mandatory, 0, &m->props, m->body);
    if (s != AMQP_STATUS_OK)
        return fc_status_error(c, s, "basic.publish");
    return 0;
}

int ferry_publisher_new(ferry_publisher **out, const char *uri, const ferry_conn_opts *copts,
                        const ferry_publisher_opts *popts) {
    if (!out || !uri)
        return FERRY_EINVAL;
    ferry_publisher *p = calloc(1, sizeof *p);
    if (!p)
        return FERRY_ENOMEM;
    if (popts)
        p->o = *popts;
    else
        ferry_publisher_opts_init(&p->o);
    if (!p->o.max_unconfirmed)
        p->o.max_unconfirmed = 1024;
    int rc = ferry_conn_open(&p->c, uri, copts);
    if (rc < 0) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static void drop_pending(pending *e) {
    free(e->exchange);
    free(e->rk);
    ferry_message_free(e->m);
    memset(e, 0, sizeof *e);
}

void ferry_publisher_free(ferry_publisher *p) {
    if (!p)
        return;
    for (size_t i = p->head; i < p->n; i++)
        drop_pending(&p->q[i]);
    free(p->q);
    ferry_conn_close(p->c);
    free(p);
}

ferry_conn *ferry_publisher_conn(ferry_publisher *p) { return p ? p->c : NULL; }

size_t ferry_publisher_pending(const ferry_publisher *p) { return p ? p->n - p->head : 0; }

static int put_on_wire(ferry_publisher *p, pending *e) {
    int rc = fp_basic_publish(p->c, FC_CH_PUB, e->exchange, e->rk, p->o.mandatory, e->m);
    if (rc == 0) {
        e->seq = p->next_seq++;
        e->returned = 0;
    }
    return rc;
}

/* A confirm-mode channel on the current connection; unsettled messages of an older
 * channel go out again on this one, in order. */
static int ensure_channel(ferry_publisher *p) {
    ferry_conn *c = p->c;
    if (c->st && p->gen == c->generation && c->ch_open[FC_CH_PUB])
        return 0;
    int rc = fc_channel(c, FC_CH_PUB);
    if (rc < 0)
        return rc;
    amqp_confirm_select(c->st, FC_CH_PUB);
    if ((rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_PUB, "confirm.select")) < 0)
        return rc;
    p->gen = c->generation;
    p->next_seq = 1;
    for (size_t i = p->head; i < p->n; i++) {
        p->q[i].seq = 0;
        if (!p->q[i].settled && (rc = put_on_wire(p, &p->q[i])) < 0)
            return rc;
    }
    return 0;
}

static size_t unsettled(const ferry_publisher *p);
static int step(ferry_publisher *p, int64_t deadline);

int ferry_publisher_send(ferry_publisher *p, const char *exchange, const char *routing_key,
                         const ferry_message *m, uint64_t token) {
    if (!p || !m)
        return FERRY_EINVAL;
    /* back-pressure: at most max_unconfirmed in flight (their results wait for flush) */
    while (unsettled(p) >= p->o.max_unconfirmed)
        step(p, 0);
    if (p->n == p->cap) {
        if (p->head > 0) { /* slide the live part to the front */
            memmove(p->q, p->q + p->head, (p->n - p->head) * sizeof *p->q);
            p->n -= p->head;
            p->head = 0;
        }
        if (p->n == p->cap) {
            size_t nc = p->cap ? p->cap * 2 : 64;
            pending *nq = realloc(p->q, nc * sizeof *nq);
            if (!nq)
                return FERRY_ENOMEM;
            p->q = nq;
            p->cap = nc;
        }
    }
    pending *e = &p->q[p->n];
    memset(e, 0, sizeof *e);
    e->token = token;
    e->exchange = strdup(exchange ? exchange : "");
    e->rk = strdup(routing_key ? routing_key : "");
    e->m = ferry_message_copy(m);
    if (!e->exchange || !e->rk || !e->m) {
        drop_pending(e);
        return FERRY_ENOMEM;
    }
    if (p->o.persistent && !(e->m->props._flags & AMQP_BASIC_DELIVERY_MODE_FLAG)) {
        e->m->props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        e->m->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    }
    p->n++;
    /* A lost connection is not an error here: flush reconnects and sends it then. */
    if (ensure_channel(p) == 0 && e->seq == 0)
        put_on_wire(p, e);
    return 0;
}

static void settle_upto(ferry_publisher *p, uint64_t tag, int multiple, int result) {
    for (size_t i = p->head; i < p->n; i++) {
        pending *e = &p->q[i];
        if (e->settled || e->seq == 0)
            continue;
        if (e->seq == tag || (multiple && e->seq < tag)) {
            e->settled = 1;
            e->result = result == 0 && e->returned ? FERRY_EUNROUTABLE : result;
        }
    }
}

/* A basic.return names exchange and routing key; the first unsettled message sent there
 * that was not returned yet is the one (returns come in publish order). */
static void mark_returned(ferry_publisher *p, const amqp_basic_return_t *r) {
    for (size_t i = p->head; i < p->n; i++) {
        pending *e = &p->q[i];
        if (e->settled || e->returned || e->seq == 0)
            continue;
        if (strlen(e->exchange) == r->exchange.len && memcmp(e->exchange, r->exchange.bytes, r->exchange.len) == 0 &&
            strlen(e->rk) == r->routing_key.len && memcmp(e->rk, r->routing_key.bytes, r->routing_key.len) == 0) {
            e->returned = 1;
            return;
        }
    }
}

/* The channel was closed by the broker: "404 NOT_FOUND - no exchange 'x' in vhost '/'"
 * names the exchange; the messages sent to it are refused, the others go out again. */
static void channel_refused(ferry_publisher *p) {
    const char *err = ferry_conn_last_error(p->c);
    const char *a = strstr(err, "exchange '");
    char name[256] = "";
    int named = 0;
    if (a) {
        a += 10;
        const char *b = strchr(a, '\'');
        if (b && (size_t)(b - a) < sizeof name) {
            memcpy(name, a, (size_t)(b - a));
            name[b - a] = 0;
            named = 1;
        }
    }
    for (size_t i = p->head; i < p->n; i++) {
        pending *e = &p->q[i];
        if (e->settled || e->seq == 0)
            continue;
        if (!named || strcmp(e->exchange, name) == 0) {
            e->settled = 1;
            e->result = FERRY_EREFUSED;
        }
    }
}

static size_t unsettled(const ferry_publisher *p) {
    size_t k = 0;
    for (size_t i = p->head; i < p->n; i++)
        k += !p->q[i].settled;
    return k;
}

/* Reads one frame (up to wait_ms) and applies it. */
static int pump(ferry_publisher *p, int wait_ms) {
    ferry_conn *c = p->c;
    amqp_frame_t f;
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    int s = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
    if (s == AMQP_STATUS_TIMEOUT)
        return 0;
    if (s != AMQP_STATUS_OK)
        return fc_status_error(c, s, "reading confirms");
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 0;
    int rc = fc_handle_close_frame(c, &f);
    if (rc == FERRY_EREFUSED) {
        if (f.channel == FC_CH_PUB)
            channel_refused(p);
        return 0;
    }
    if (rc < 0)
        return rc;
    if (f.channel != FC_CH_PUB)
        return 0;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f.payload.method.decoded;
        settle_upto(p, a->delivery_tag, a->multiple, 0);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = f.payload.method.decoded;
        settle_upto(p, a->delivery_tag, a->multiple, FERRY_ENACK);
        break;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_basic_return_t r = *(amqp_basic_return_t *)f.payload.method.decoded;
        char ex[256], rk[256];
        /* the decoded frame lives in rabbitmq-c's buffers, which reading the content reuses */
        size_t el = r.exchange.len < 255 ? r.exchange.len : 255, rl = r.routing_key.len < 255 ? r.routing_key.len : 255;
        if (el)
            memcpy(ex, r.exchange.bytes, el);
        if (rl)
            memcpy(rk, r.routing_key.bytes, rl);
        r.exchange = (amqp_bytes_t){el, ex};
        r.routing_key = (amqp_bytes_t){rl, rk};
        amqp_message_t msg;
        amqp_rpc_reply_t rr = amqp_read_message(c->st, FC_CH_PUB, &msg, 0);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL)
            return fc_reply_error(c, rr, FC_CH_PUB, "reading a returned message");
        amqp_destroy_message(&msg);
        mark_returned(p, &r);
        break;
    }
    default:
        break;
    }
    return 0;
}

static void deliver_settled(ferry_publisher *p, ferry_confirm_cb cb, void *arg) {
    while (p->head < p->n && p->q[p->head].settled) {
        pending *e = &p->q[p->head];
        if (cb)
            cb(arg, e->token, e->result);
        drop_pending(e);
        p->head++;
    }
    if (p->head == p->n)
        p->head = p->n = 0;
}

/* One step towards settling what is in flight: reconnect if down, (re)open the confirm
 * channel, read one frame. FERRY_ETIMEDOUT once deadline (0 = none) has passed. */
static int step(ferry_publisher *p, int64_t deadline) {
    if (deadline && ferry_now_ms() >= deadline)
        return FERRY_ETIMEDOUT;
    int rc = 0;
    if (!p->c->st)
        rc = ferry_conn_reconnect(p->c, deadline);
    if (rc == 0)
        rc = ensure_channel(p);
    if (rc == FERRY_EREFUSED) {
        channel_refused(p); /* e.g. the confirm.select or a republish was refused */
        return 0;
    }
    if (rc == FERRY_ETIMEDOUT)
        return rc;
    if (rc < 0) {
        fc_lost(p->c, NULL);
        return 0;
    }
    int wait = deadline ? (int)(deadline - ferry_now_ms()) : 1000;
    if (wait > 1000)
        wait = 1000;
    if (wait < 1)
        wait = 1;
    rc = pump(p, wait);
    if (rc < 0 && rc != FERRY_ETIMEDOUT)
        fc_lost(p->c, NULL);
    return 0;
}

int ferry_publisher_flush(ferry_publisher *p, int timeout_ms, ferry_confirm_cb cb, void *arg) {
    if (!p || timeout_ms < 0)
        return FERRY_EINVAL;
    int64_t deadline = timeout_ms ? ferry_now_ms() + timeout_ms : 0;
    for (;;) {
        deliver_settled(p, cb, arg);
        if (unsettled(p) == 0)
            return 0;
        int rc = step(p, deadline);
        if (rc < 0)
            return rc;
    }
}

typedef struct one_result {
    int result;
} one_result;

static void take_result(void *arg, uint64_t token, int result) {
    (void)token;
    ((one_result *)arg)->result = result;
}

int ferry_publish(ferry_publisher *p, const char *exchange, const char *routing_key,
                  const ferry_message *m, int timeout_ms) {
    if (!p || !m || timeout_ms < 0)
        return FERRY_EINVAL;
    /* earlier pipelined sends are settled first (their results are dropped: use flush with a
     * callback to see them) */
    int rc = ferry_publisher_send(p, exchange, routing_key, m, 0);
    if (rc < 0)
        return rc;
    one_result r = {FERRY_ETIMEDOUT};
    rc = ferry_publisher_flush(p, timeout_ms, take_result, &r);
    if (rc < 0)
        return rc;
    return r.result;
}
