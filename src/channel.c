/* channel.c — the AMQP channel: its methods, publishing, consumers and acknowledgements.
 *
 * Each method is decoded with a bounds-checked reader (a truncated argument list is a
 * SYNTAX_ERROR) and checked in the order RabbitMQ checks it, so that clients see the same
 * reply code and, as far as practical, the same reply text. Soft errors close the channel
 * (channel_close_error), hard ones the connection (conn_close_error).
 *
 * Deliveries a consumer has not acknowledged sit in the channel's `unacked` ring in
 * delivery-tag order; closing the channel gives them back to their queues. */
#include "broker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"
#include "util.h"

#define REPLY_TO "amq.rabbitmq.reply-to"
#define REPLY_TO_PREFIX "amq.rabbitmq.reply-to."

/* ---- the unacked ring ---- */

static unacked *ring_at(uring *r, size_t i) { return &r->a[(r->head + i) & (r->cap - 1)]; }

static void ring_push(uring *r, unacked u) {
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 16;
        unacked *a = xmalloc(ncap * sizeof *a);
        for (size_t i = 0; i < r->len; i++)
            a[i] = *ring_at(r, i);
        free(r->a);
        r->a = a;
        r->cap = ncap;
        r->head = 0;
    }
    *ring_at(r, r->len) = u;
    r->len++;
}

/* Drops settled entries from the front. */
static void ring_trim(uring *r) {
    while (r->len && ring_at(r, 0)->done) {
        r->head = (r->head + 1) & (r->cap - 1);
        r->len--;
    }
    if (r->len == 0 && r->cap > 4096) {
        free(r->a);
        r->a = NULL;
        r->cap = r->head = 0;
    }
}

/* Index of the entry with this tag (tags increase along the ring), or -1. */
static long ring_find(uring *r, uint64_t tag) {
    size_t lo = 0, hi = r->len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t t = ring_at(r, mid)->tag;
        if (t == tag)
            return (long)mid;
        if (t < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- sending ---- */

static buf *out(channel *ch) {
    conn_want_flush(ch->c);
    return &ch->c->out;
}

static void send_empty(channel *ch, unsigned mid) {
    buf *o = out(ch);
    frame_end(o, method_begin(o, ch->id, mid));
}

void channel_close_error(channel *ch, int code, unsigned class_method, const char *fmt, ...);

static void send_channel_close(channel *ch, int code, const char *text, unsigned mid) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, CHANNEL_CLOSE);
    buf_u16(o, (uint16_t)code);
    buf_shortstr(o, text, strlen(text));
    buf_u16(o, (uint16_t)(mid >> 16));
    buf_u16(o, (uint16_t)(mid & 0xffff));
    frame_end(o, m);
}

/* ---- consumers and deliveries ---- */

int consumer_can_take(const consumer *cs) {
    const channel *ch = cs->ch;
    if (ch->closing || !ch->flow_active || !conn_can_deliver(ch->c))
        return 0;
    if (cs->no_ack)
        return 1;
    if (cs->prefetch && cs->unacked >= cs->prefetch)
        return 0;
    if (ch->prefetch_global && ch->nunacked >= ch->prefetch_global)
        return 0;
    return 1;
}

static void write_deliver(channel *ch, const consumer *cs, uint64_t tag, int redelivered, message *m, slice props) {
    buf *o = out(ch);
    size_t mk = method_begin(o, ch->id, BASIC_DELIVER);
    buf_shortstr(o, cs->tag, cs->tag_len);
    buf_u64(o, tag);
    buf_u8(o, redelivered ? 1 : 0);
    buf_shortstr(o, msg_exchange(m), m->exchange_len);
    buf_shortstr(o, msg_rkey(m), m->rkey_len);
    frame_end(o, mk);
    wire_content(o, ch->id, props.p, props.n, msg_body(m), m->body_len, ch->c->frame_max);
}

void consumer_deliver(consumer *cs, qmsg qm) {
    channel *ch = cs->ch;
    uint64_t tag = ++ch->next_tag;
    store_delivered(ch->c->b->store, cs->q, &qm);
    buf scratch;
    buf_init(&scratch);
    write_deliver(ch, cs, tag, qm.deliveries > 0, qm.m, queue_delivery_props(cs->q, &qm, &scratch));
    buf_free(&scratch);
    qm.deliveries = count_up(qm.deliveries);
    if (cs->no_ack) {
        queue_settle(cs->q, qm);
        return;
    }
    unacked u = {tag, cs->q, cs, qm, 0};
    cs->q->refs++;
    cs->q->unacked++;
    cs->unacked++;
    ch->nunacked++;
    ring_push(&ch->unacked, u);
}

static void consumer_free(consumer *cs) {
    free(cs->tag);
    free(cs->args);
    free(cs);
}

/* Detaches a consumer from its channel: its unacked deliveries stay ackable. */
static void consumer_detach(channel *ch, consumer *cs) {
    map_del(&ch->consumers, cs->tag, cs->tag_len);
    for (size_t i = 0; i < ch->unacked.len; i++) {
        unacked *u = ring_at(&ch->unacked, i);
        if (u->c == cs)
            u->c = NULL;
    }
    if (ch->reply == cs) {
        map_del(&ch->c->b->reply_to, ch->reply_key, strlen(ch->reply_key));
        ch->reply = NULL;
    }
}

void consumer_cancelled_by_queue(consumer *cs) {
    channel *ch = cs->ch;
    queue_remove_consumer(cs->q, cs);
    consumer_detach(ch, cs);
    if (ch->c->cap_cancel_notify && !ch->closing) {
        /* RabbitMQ's consumer cancel notification: basic.cancel from the server. */
        buf *o = out(ch);
        size_t m = method_begin(o, ch->id, BASIC_CANCEL);
        buf_shortstr(o, cs->tag, cs->tag_len);
        buf_u8(o, 1); /* no-wait */
        frame_end(o, m);
    }
    consumer_free(cs);
}

/* ---- settling deliveries ---- */

/* How an unacked delivery ends: acked, given back to its queue, or rejected (dead-lettered
 * or dropped). */
enum { SETTLE_ACK, SETTLE_REQUEUE, SETTLE_REJECT };

static void settle(channel *ch, unacked *u, int mode) {
    queue *q = u->q;
    u->done = 1;
    ch->nunacked--;
    q->unacked--;
    if (u->c)
        u->c->unacked--;
    if (mode == SETTLE_REQUEUE)
        queue_requeue(q, u->qm);
    else if (mode == SETTLE_REJECT)
        queue_reject(q, u->qm);
    else
        queue_settle(q, u->qm);
    if (!q->deleted && q->nconsumers && queue_ready_count(q))
        queue_mark_dirty(q);
    queue_unref(q);
}

/* Credit freed on this channel may unblock consumers of other queues (global prefetch). */
static void wake_channel_consumers(channel *ch) {
    size_t it = 0;
    map_entry *e;
    while (map_iter(&ch->consumers, &it, &e)) {
        consumer *cs = e->val;
        if (cs->q && queue_ready_count(cs->q))
            queue_mark_dirty(cs->q);
    }
}

/* Applies ack / nack / reject to one tag or (multiple) every tag up to it. tag 0 with
 * multiple means all. Returns -1 if nothing matched (RabbitMQ: unknown delivery tag). */
static int settle_tags(channel *ch, uint64_t tag, int multiple, int mode) {
    uring *r = &ch->unacked;
    int found = 0;
    if (multiple) {
        for (size_t i = 0; i < r->len; i++) {
            unacked *u = ring_at(r, i);
            if (tag != 0 && u->tag > tag)
                break;
            if (!u->done) {
                settle(ch, u, mode);
                found = 1;
            }
        }
        if (tag == 0)
            found = 1;
    } else {
        long i = ring_find(r, tag);
        if (i >= 0 && !ring_at(r, (size_t)i)->done) {
            settle(ch, ring_at(r, (size_t)i), mode);
            found = 1;
        }
    }
    ring_trim(r);
    wake_channel_consumers(ch);
    return found ? 0 : -1;
}

/* Would settle_tags find something? (tx mode checks tags when they arrive.) */
static int tags_known(channel *ch, uint64_t tag, int multiple) {
    uring *r = &ch->unacked;
    if (multiple)
        return tag == 0 || (r->len && ring_at(r, 0)->tag <= tag);
    long i = ring_find(r, tag);
    return i >= 0 && !ring_at(r, (size_t)i)->done;
}

/* ---- channel lifecycle ---- */

channel *channel_new(conn *c, uint16_t id) {
    channel *ch = xcalloc(1, sizeof *ch);
    ch->id = id;
    ch->c = c;
    ch->flow_active = 1;
    map_init(&ch->consumers);
    return ch;
}

static void tx_clear(channel *ch) {
    for (size_t i = 0; i < ch->ntx; i++)
        message_unref(ch->txops[i].m);
    ch->ntx = 0;
}

/* Gives everything back: consumers cancelled, unacked deliveries requeued in order. */
static void channel_release(channel *ch) {
    size_t it = 0;
    map_entry *e;
    while (map_iter(&ch->consumers, &it, &e)) {
        consumer *cs = e->val;
        consumer_detach(ch, cs);
        if (cs->q)
            queue_remove_consumer(cs->q, cs);
        consumer_free(cs);
    }
    uring *r = &ch->unacked;
    for (size_t i = 0; i < r->len; i++) {
        unacked *u = ring_at(r, i);
        if (!u->done)
            settle(ch, u, SETTLE_REQUEUE);
    }
    r->len = 0;
    message_unref(ch->pending);
    ch->pending = NULL;
    ch->expect = 0;
    tx_clear(ch);
    if (ch->in_waiters) { /* unlink from the store's waiters */
        channel **pp = &ch->c->b->store_waiters;
        while (*pp && *pp != ch)
            pp = &(*pp)->next_waiter;
        if (*pp)
            *pp = ch->next_waiter;
        ch->in_waiters = 0;
    }
    ch->ncwait = 0;
    if (ch->tx_wait_gen) {
        ch->tx_wait_gen = 0;
        ch->c->store_wait--;
        conn_update_input(ch->c);
    }
    if (ch->in_confirms) { /* unlink from the broker's confirm list */
        channel **pp = &ch->c->b->confirms;
        while (*pp && *pp != ch)
            pp = &(*pp)->next_confirm;
        if (*pp)
            *pp = ch->next_confirm;
        ch->in_confirms = 0;
    }
}

void channel_free(channel *ch) {
    channel_release(ch);
    map_free(&ch->consumers);
    free(ch->cwait);
    free(ch->unacked.a);
    free(ch->txops);
    free(ch);
}

void channel_close_error(channel *ch, int code, unsigned class_method, const char *fmt, ...) {
    if (ch->closing)
        return;
    char text[256];
    int n = snprintf(text, sizeof text, "%s - ", reply_code_name(code));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    va_end(ap);
    log_debug("connection %llu channel %u: %s", (unsigned long long)ch->c->id, ch->id, text);
    send_channel_close(ch, code, text, class_method);
    channel_release(ch);
    ch->closing = 1;
}

/* ---- confirms ---- */

static void confirm_ready_upto(channel *ch) {
    if (!ch->in_confirms) {
        ch->in_confirms = 1;
        ch->next_confirm = ch->c->b->confirms;
        ch->c->b->confirms = ch;
    }
}

static void confirm_ready(channel *ch) {
    ch->confirm_upto = ch->pub_seq;
    confirm_ready_upto(ch);
}

static void join_waiters(channel *ch) {
    if (ch->in_waiters)
        return;
    ch->in_waiters = 1;
    ch->next_waiter = ch->c->b->store_waiters;
    ch->c->b->store_waiters = ch;
}

static void send_nack_upto(channel *ch, uint64_t seq);

/* Confirms that must wait for the store, in publish order: each entry covers the publishes
 * up to seq and is due when generation gen is synced. */
static void wait_for_store(channel *ch, int nack) {
    broker *b = ch->c->b;
    uint64_t gen = b->store ? store_gen(b->store) : 0;
    struct cwait *last = ch->ncwait ? &ch->cwait[ch->ncwait - 1] : NULL;
    if (last && last->gen >= gen && !last->nack && !nack) {
        last->seq = ch->pub_seq;
    } else {
        if (ch->ncwait == ch->capcwait) {
            ch->capcwait = ch->capcwait ? ch->capcwait * 2 : 4;
            ch->cwait = xrealloc(ch->cwait, ch->capcwait * sizeof *ch->cwait);
        }
        /* a later entry never waits for an earlier generation than the one before it */
        ch->cwait[ch->ncwait++] = (struct cwait){ch->pub_seq, last && last->gen > gen ? last->gen : gen, (uint8_t)nack};
    }
    join_waiters(ch);
}

void channel_store_synced(channel *ch, uint64_t gen, int ok) {
    uint32_t k = 0;
    while (k < ch->ncwait && ch->cwait[k].gen <= gen) {
        struct cwait *w = &ch->cwait[k++];
        if (ok && !w->nack) {
            ch->confirm_upto = w->seq;
            confirm_ready_upto(ch);
        } else {
            send_nack_upto(ch, w->seq);
        }
    }
    if (k) {
        memmove(ch->cwait, ch->cwait + k, (ch->ncwait - k) * sizeof *ch->cwait);
        ch->ncwait -= k;
    }
    if (ch->tx_wait_gen && ch->tx_wait_gen <= gen) {
        ch->tx_wait_gen = 0;
        conn *c = ch->c;
        c->store_wait--;
        if (ok)
            send_empty(ch, TX_COMMIT_OK);
        else
            channel_close_error(ch, RESOURCE_ERROR, TX_COMMIT, "the transaction could not be written to disk");
        conn_update_input(c);
    }
}

/* A nack must not overtake acks pending for earlier messages: send those first. Then one
 * nack covers every publish after them up to seq. */
static void send_nack_upto(channel *ch, uint64_t seq) {
    channel_send_confirms(ch);
    if (seq <= ch->confirmed)
        return;
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, BASIC_NACK);
    buf_u64(o, seq);
    buf_u8(o, seq - ch->confirmed > 1 ? 1 : 0);
    frame_end(o, m);
    ch->confirmed = ch->confirm_upto = seq;
}

static void send_nack(channel *ch, uint64_t seq) { send_nack_upto(ch, seq); }

void channel_send_confirms(channel *ch) {
    if (ch->closing || ch->confirm_upto <= ch->confirmed)
        return;
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, BASIC_ACK);
    buf_u64(o, ch->confirm_upto);
    buf_u8(o, ch->confirm_upto - ch->confirmed > 1 ? 1 : 0);
    frame_end(o, m);
    ch->confirmed = ch->confirm_upto;
}

/* ---- names and arguments ---- */

/* RabbitMQ's resource naming in error texts: "queue 'q' in vhost '/'". */
static const char *rs(const char *kind, slice name) {
    static char text[320];
    snprintf(text, sizeof text, "%s '%.*s' in vhost '/'", kind, (int)name.n, (const char *)name.p);
    return text;
}

static slice last_queue_or(channel *ch, slice name) {
    if (name.n == 0)
        return slice_str(ch->last_queue);
    return name;
}

static void locked(channel *ch, queue *q, unsigned mid) {
    channel_close_error(ch, RESOURCE_LOCKED, mid,
                        "cannot obtain exclusive access to locked queue '%s' in vhost '/'. It could be "
                        "originally declared on another connection or the exclusive property value does not "
                        "match that of the original declaration.",
                        q->name);
}

static void check_exclusive_mismatch(channel *ch, queue *q) { locked(ch, q, QUEUE_DECLARE); }

static int check_exclusive(channel *ch, queue *q, unsigned mid) {
    if (q->exclusive && q->owner != ch->c) {
        channel_close_error(ch, RESOURCE_LOCKED, mid,
                            "cannot obtain exclusive access to locked queue '%s' in vhost '/'. It could be "
                            "originally declared on another connection or the exclusive property value does not "
                            "match that of the original declaration.",
                            q->name);
        return -1;
    }
    return 0;
}

static queue *find_queue(channel *ch, slice name, unsigned mid) {
    if (name.n == 0) { /* "" means the channel's last declared queue, and there was none */
        channel_close_error(ch, NOT_FOUND, mid, "no previously declared queue");
        return NULL;
    }
    queue *q = broker_queue(ch->c->b, name);
    if (!q) {
        channel_close_error(ch, NOT_FOUND, mid, "%s", rs("no queue", name));
        return NULL;
    }
    if (check_exclusive(ch, q, mid) < 0)
        return NULL;
    return q;
}

static exchange *find_exchange(channel *ch, slice name, unsigned mid) {
    exchange *x = broker_exchange(ch->c->b, name);
    if (!x)
        channel_close_error(ch, NOT_FOUND, mid, "%s", rs("no exchange", name));
    return x;
}

/* Arguments are well-formed when they decode completely, with nothing left over. */
static int args_bad(const rd *r) { return r->err || rd_left(r) != 0; }

/* Undecodable arguments: RabbitMQ answers 501 with the argument bytes, as here. */
static int syntax_error(channel *ch, unsigned mid) {
    char oct[160];
    wire_format_octets(ch->args.p, ch->args.n, oct, sizeof oct);
    conn_close_error(ch->c, FRAME_ERROR, mid, "cannot decode %s", oct);
    return -1;
}

/* Reads a field table argument and validates its encoding. */
static slice read_table(rd *r) {
    slice t = rd_longstr(r);
    if (!r->err && table_validate(t) < 0)
        r->err = 1;
    return t;
}

/* Queue arguments RabbitMQ validates on declare, with the texts it answers. */
enum { ARG_INT, ARG_EXPIRES, ARG_PRIO, ARG_XSTR, ARG_BOOL, ARG_ENUM };
static const struct {
    const char *name;
    int kind;
    const char *allowed; /* ARG_ENUM: space-separated values */
    const char *what;    /* ARG_ENUM: how RabbitMQ names a bad value */
} queue_args[] = {
    {"x-message-ttl", ARG_INT, 0, 0},
    {"x-expires", ARG_EXPIRES, 0, 0},
    {"x-max-length", ARG_INT, 0, 0},
    {"x-max-length-bytes", ARG_INT, 0, 0},
    {"x-max-priority", ARG_PRIO, 0, 0},
    {"x-max-in-memory-length", ARG_INT, 0, 0},
    {"x-max-in-memory-bytes", ARG_INT, 0, 0},
    {"x-dead-letter-exchange", ARG_XSTR, 0, 0},
    {"x-dead-letter-routing-key", ARG_XSTR, 0, 0},
    {"x-single-active-consumer", ARG_BOOL, 0, 0},
    {"x-overflow", ARG_ENUM, " drop-head reject-publish reject-publish-dlx ", 0},
    {"x-queue-mode", ARG_ENUM, " default lazy ", "queue mode"},
    {"x-queue-type", ARG_ENUM, " classic quorum ", "queue type"},
    {"x-queue-master-locator", ARG_XSTR, 0, 0},
    {"x-queue-leader-locator", ARG_XSTR, 0, 0},
};

static int in_list(const char *list, slice v) {
    char word[300];
    if (v.n + 3 > sizeof word)
        return 0;
    snprintf(word, sizeof word, " %.*s ", (int)v.n, (const char *)v.p);
    return strstr(list, word) != NULL;
}

/* Writes RabbitMQ's reason for a bad argument value into why; 0 if the value is good. */
static int arg_problem(int i, const fval *v, char *why, size_t n) {
    int kind = queue_args[i].kind;
    if (kind == ARG_INT || kind == ARG_EXPIRES || kind == ARG_PRIO) {
        if (!fval_is_int(v))
            snprintf(why, n, "\"expected integer, got %s\"", fval_type_name(v->type));
        else if (kind == ARG_EXPIRES && v->i == 0)
            snprintf(why, n, "{value_zero,0}");
        else if (v->i < 0)
            snprintf(why, n, "{value_negative,%lld}", (long long)v->i);
        else if (kind == ARG_PRIO && v->i > 255)
            snprintf(why, n, "{max_value_exceeded,%lld}", (long long)v->i);
        else
            return 0;
    } else if (kind == ARG_BOOL) {
        if (v->type == 't')
            return 0;
        snprintf(why, n, "{unacceptable_type,%s}", fval_type_name(v->type));
    } else if (kind == ARG_ENUM) {
        if (fval_is_str(v) && in_list(queue_args[i].allowed, v->s))
            return 0;
        if (!queue_args[i].what)
            snprintf(why, n, "invalid_overflow");
        else if (fval_is_str(v))
            snprintf(why, n, "\"unsupported %s '%.*s'\"", queue_args[i].what, (int)MIN(v->s.n, 100),
                     (const char *)v->s.p);
        else
            snprintf(why, n, "{unacceptable_type,%s}", fval_type_name(v->type));
    } else {
        return 0;
    }
    return -1;
}

static int check_queue_args(channel *ch, slice qname, slice args) {
    for (size_t i = 0; i < ARRAY_LEN(queue_args); i++) {
        fval v;
        if (!table_get(args, queue_args[i].name, &v))
            continue;
        if (queue_args[i].kind == ARG_XSTR) {
            if (v.type != 'S') {
                channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE, "invalid type '%s' for arg '%s' in %s",
                                    fval_type_name(v.type), queue_args[i].name, rs("queue", qname));
                return -1;
            }
            continue;
        }
        char why[200];
        if (arg_problem((int)i, &v, why, sizeof why) < 0) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE, "invalid arg '%s' for %s: %s",
                                queue_args[i].name, rs("queue", qname), why);
            return -1;
        }
    }
    return 0;
}

static void describe(const fval *v, int present, char *out, size_t n) {
    if (!present) {
        snprintf(out, n, "none");
        return;
    }
    char val[128];
    fval_format(v, val, sizeof val);
    snprintf(out, n, "the value '%s' of type '%s'", val, fval_type_name(v->type));
}

/* RabbitMQ compares the arguments it knows on redeclare; a difference is 406. When both
 * sides have the argument it names the two values, otherwise their types too. */
static int check_args_equivalent(channel *ch, unsigned mid, const char *kind, slice name, slice have, slice got,
                                 const char *const *keys, size_t nkeys) {
    for (size_t i = 0; i < nkeys; i++) {
        fval a, b;
        int ha = table_get(have, keys[i], &a), hb = table_get(got, keys[i], &b);
        if (ha == hb && (!ha || fval_equal(&a, &b)))
            continue;
        char ra[192], rb[192];
        if (ha && hb) {
            char va[128], vb[128];
            fval_format(&a, va, sizeof va);
            fval_format(&b, vb, sizeof vb);
            snprintf(rb, sizeof rb, "'%s'", vb);
            snprintf(ra, sizeof ra, "'%s'", va);
        } else {
            describe(&b, hb, rb, sizeof rb);
            describe(&a, ha, ra, sizeof ra);
        }
        channel_close_error(ch, PRECONDITION_FAILED, mid, "inequivalent arg '%s' for %s '%.*s' in vhost '/': received %s but current is %s",
                            keys[i], kind, (int)name.n, (const char *)name.p, rb, ra);
        return -1;
    }
    return 0;
}

static const char *const queue_equiv_keys[] = {
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow", "x-queue-mode",
    "x-queue-type", "x-single-active-consumer", "x-delivery-limit", "x-max-in-memory-length",
    "x-max-in-memory-bytes",
};
static const char *const exchange_equiv_keys[] = {"alternate-exchange"};

static int check_flag(channel *ch, unsigned mid, const char *kind, slice name, const char *arg, int have, int got) {
    if (have == got)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, mid,
                        "inequivalent arg '%s' for %s '%.*s' in vhost '/': received '%s' but current is '%s'", arg,
                        kind, (int)name.n, (const char *)name.p, got ? "true" : "false", have ? "true" : "false");
    return -1;
}

/* Headers bindings: x-match must be one RabbitMQ knows. */
static int check_x_match(channel *ch, slice args, unsigned mid) {
    fval v;
    if (!table_get(args, "x-match", &v))
        return 0;
    if (fval_is_str(&v) && in_list(" all any all-with-x any-with-x ", v.s))
        return 0;
    char val[128];
    fval_format(&v, val, sizeof val);
    channel_close_error(ch, PRECONDITION_FAILED, mid,
                        "Invalid x-match field value <<\"%s\">>; expected all, any, all-with-x, or any-with-x", val);
    return -1;
}

/* x-consistent-hash bindings: the key is a weight (the plugin's texts). */
static int check_chash_key(channel *ch, slice key, unsigned mid) {
    char why[200];
    if (chash_check_binding_key(key, why, sizeof why) == 0)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, mid, "%s", why);
    return -1;
}

/* Adds (queue.bind, exchange.bind) or removes (the unbinds) a binding from src to a queue
 * or an exchange, and stores the change if the binding is durable. Binding twice, or
 * unbinding what is not bound, changes nothing. Returns -1 after closing the channel. */
static int change_binding(channel *ch, unsigned mid, exchange *src, queue *q, exchange *dstx, slice key, slice args) {
    store *s = ch->c->b->store;
    binding *bd = binding_find(src, q, dstx, key, args);
    if (mid == QUEUE_UNBIND || mid == EXCHANGE_UNBIND) {
        if (bd) {
            store_binding(s, bd, 0);
            binding_remove(bd);
        }
        return 0;
    }
    if (src->subtype == EX_HEADERS && check_x_match(ch, args, mid) < 0)
        return -1;
    if (src->subtype == EX_CHASH && check_chash_key(ch, key, mid) < 0)
        return -1;
    if (bd)
        return 0;
    bd = binding_add(src, q, dstx, key, args);
    if (store_binding(s, bd, 1) < 0) {
        binding_remove(bd);
        channel_close_error(ch, RESOURCE_ERROR, mid, "cannot store a durable binding: the disk is full or failing");
        return -1;
    }
    return 0;
}

/* ---- exchange class ---- */

static void exchange_declare(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    slice type = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, EXCHANGE_DECLARE);
        return;
    }
    int passive = bits & 1, durable = (bits >> 1) & 1, auto_delete = (bits >> 2) & 1, internal = (bits >> 3) & 1,
        nowait = (bits >> 4) & 1;
    broker *b = ch->c->b;
    if (name.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DECLARE, "operation not permitted on the default exchange");
        return;
    }
    exchange *x = broker_exchange(b, name);
    if (passive) {
        if (!x) {
            channel_close_error(ch, NOT_FOUND, EXCHANGE_DECLARE, "%s", rs("no exchange", name));
            return;
        }
    } else {
        int t, subtype = -1;
        char why[200];
        if (exchange_type_parse(type, &t) < 0) {
            conn_close_error(ch->c, COMMAND_INVALID, EXCHANGE_DECLARE, "unknown exchange type '%.*s'", (int)type.n,
                             (const char *)type.p);
            return;
        }
        if (t == EX_DELAYED && delayed_check_declare(ch, args, &subtype) < 0)
            return;
        if ((t == EX_CHASH || subtype == EX_CHASH) && chash_check_args(args, why, sizeof why) < 0) {
            channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE, "%s", why);
            return;
        }
        if (x) {
            if (x->type != t) {
                channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE,
                                    "inequivalent arg 'type' for %s: received '%.*s' but "
                                    "current is '%s'",
                                    rs("exchange", name), (int)type.n, (const char *)type.p, exchange_type_name(x->type));
                return;
            }
            if (check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "durable", x->durable, durable) < 0 ||
                check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "auto_delete", x->auto_delete, auto_delete) < 0 ||
                check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "internal", x->internal, internal) < 0 ||
                check_args_equivalent(ch, EXCHANGE_DECLARE, "exchange", name, (slice){x->args, x->args_len}, args,
                                      exchange_equiv_keys, ARRAY_LEN(exchange_equiv_keys)) < 0)
                return;
        } else {
            if (slice_prefix(name, "amq.")) {
                channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DECLARE,
                                    "exchange name '%.*s' contains reserved prefix 'amq.*'", (int)name.n,
                                    (const char *)name.p);
                return;
            }
            x = exchange_new(b, name, t, durable, auto_delete, internal, args);
            if (subtype >= 0)
                x->subtype = subtype;
            map_put(&b->exchanges, x->name, x->name_len, x);
            if (store_exchange(b->store, x, 1) < 0) {
                x->durable = 0; /* nothing to un-store */
                broker_remove_exchange(b, x);
                channel_close_error(ch, RESOURCE_ERROR, EXCHANGE_DECLARE,
                                    "cannot store durable %s: the disk is full or failing", rs("exchange", name));
                return;
            }
        }
    }
    if (!nowait)
        send_empty(ch, EXCHANGE_DECLARE_OK);
}

static void exchange_delete(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, EXCHANGE_DELETE);
        return;
    }
    int if_unused = bits & 1, nowait = (bits >> 1) & 1;
    broker *b = ch->c->b;
    if (name.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DELETE, "operation not permitted on the default exchange");
        return;
    }
    if (slice_prefix(name, "amq.")) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DELETE, "deletion of system %s not allowed",
                            rs("exchange", name));
        return;
    }
    exchange *x = broker_exchange(b, name);
    if (x) {
        if (if_unused && x->nbindings) { /* only bindings where it is the source count */
            channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DELETE, "%s in use", rs("exchange", name));
            return;
        }
        broker_remove_exchange(b, x);
    }
    if (!nowait)
        send_empty(ch, EXCHANGE_DELETE_OK);
}

/* exchange.bind / exchange.unbind: destination, source, key, no-wait, arguments. */
static void exchange_bind(channel *ch, rd *r, unsigned mid) {
    rd_u16(r);
    slice dst = rd_shortstr(r);
    slice src = rd_shortstr(r);
    slice key = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    if (dst.n == 0 || src.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, mid, "operation not permitted on the default exchange");
        return;
    }
    if (mid == EXCHANGE_UNBIND) { /* RabbitMQ: unbinding what is not there is fine */
        exchange *d = broker_exchange(ch->c->b, dst), *s = broker_exchange(ch->c->b, src);
        if (d && s)
            change_binding(ch, mid, s, NULL, d, key, args);
        if (!(bits & 1))
            send_empty(ch, EXCHANGE_UNBIND_OK);
        return;
    }
    exchange *d = find_exchange(ch, dst, mid);
    if (!d)
        return;
    exchange *s = find_exchange(ch, src, mid);
    if (!s || change_binding(ch, mid, s, NULL, d, key, args) < 0)
        return;
    if (!(bits & 1))
        send_empty(ch, EXCHANGE_BIND_OK);
}

/* ---- queue class ---- */

static void send_declare_ok(channel *ch, queue *q) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, QUEUE_DECLARE_OK);
    buf_shortstr(o, q->name, q->name_len);
    buf_u32(o, (uint32_t)queue_ready_count(q));
    buf_u32(o, (uint32_t)q->nconsumers);
    frame_end(o, m);
}

static void queue_declare(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_DECLARE);
        return;
    }
    int passive = bits & 1, durable = (bits >> 1) & 1, exclusive = (bits >> 2) & 1, auto_delete = (bits >> 3) & 1,
        nowait = (bits >> 4) & 1;
    broker *b = ch->c->b;
    char gen[64];
    if (name.n == 0 && !passive) {
        /* Server-named queue, as RabbitMQ names them. */
        memcpy(gen, "amq.gen-", 8);
        broker_random_name(gen + 8, 22);
        name = (slice){(const uint8_t *)gen, 30};
    }
    name = last_queue_or(ch, name);
    if (!passive && slice_prefix(name, "amq.") && name.p != (const uint8_t *)gen) {
        channel_close_error(ch, ACCESS_REFUSED, QUEUE_DECLARE, "queue name '%.*s' contains reserved prefix 'amq.*'",
                            (int)name.n, (const char *)name.p);
        return;
    }
    queue *q = passive ? find_queue(ch, name, QUEUE_DECLARE) : broker_queue(b, name);
    if (passive) {
        if (!q)
            return;
        fval rv;
        /* Ferry's dead-letter redrive (until the management API exists): a passive declare
         * with x-ferry-redrive = N moves up to N messages back to their x-death queue.
         * RabbitMQ ignores arguments on a passive declare, so this is harmless there. */
        if (args.n && table_get(args, "x-ferry-redrive", &rv) && fval_is_int(&rv) && rv.i > 0)
            deadletter_redrive(q, (size_t)rv.i);
    } else if (q) {
        /* RabbitMQ: another connection's exclusive queue, or a different exclusive flag,
         * is a locked queue (405), not an inequivalent argument. */
        if (check_exclusive(ch, q, QUEUE_DECLARE) < 0)
            return;
        if (q->exclusive != exclusive) {
            check_exclusive_mismatch(ch, q);
            return;
        }
        if (check_flag(ch, QUEUE_DECLARE, "queue", name, "durable", q->durable, durable) < 0 ||
            check_flag(ch, QUEUE_DECLARE, "queue", name, "auto_delete", q->auto_delete, auto_delete) < 0 ||
            check_args_equivalent(ch, QUEUE_DECLARE, "queue", name, (slice){q->args, q->args_len}, args, queue_equiv_keys,
                                  ARRAY_LEN(queue_equiv_keys)) < 0)
            return;
    } else {
        if (check_queue_args(ch, name, args) < 0 ||
            qtype_check_declare(ch, name, durable, exclusive, auto_delete, args) < 0)
            return;
        q = queue_new(b, name, durable, exclusive, auto_delete, ch->c, args);
        map_put(&b->queues, q->name, q->name_len, q);
        if (store_queue(b->store, q, 1) < 0) {
            queue_delete(q);
            channel_close_error(ch, RESOURCE_ERROR, QUEUE_DECLARE,
                                "cannot store durable %s: the disk is full or failing", rs("queue", name));
            return;
        }
        /* Every queue is bound to the default exchange by its name (implicitly). */
    }
    snprintf(ch->last_queue, sizeof ch->last_queue, "%s", q->name);
    queue_touch(q);
    if (!nowait)
        send_declare_ok(ch, q);
}

/* queue.bind and queue.unbind (unbind has no no-wait bit). */
static void queue_bind(channel *ch, rd *r, unsigned mid) {
    rd_u16(r);
    slice qname = rd_shortstr(r);
    slice xname = rd_shortstr(r);
    slice key = rd_shortstr(r);
    uint8_t bits = mid == QUEUE_BIND ? rd_u8(r) : 0;
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    qname = last_queue_or(ch, qname);
    if (qname.n == 0) {
        channel_close_error(ch, NOT_FOUND, mid, "no previously declared queue");
        return;
    }
    if (xname.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, mid, "operation not permitted on the default exchange");
        return;
    }
    if (mid == QUEUE_UNBIND) { /* RabbitMQ: unbinding what is not there is fine */
        queue *q = broker_queue(ch->c->b, qname);
        exchange *x = broker_exchange(ch->c->b, xname);
        if (q && check_exclusive(ch, q, mid) < 0)
            return;
        if (q && x)
            change_binding(ch, mid, x, q, NULL, key, args);
        send_empty(ch, QUEUE_UNBIND_OK);
        return;
    }
    queue *q = find_queue(ch, qname, mid);
    if (!q)
        return;
    exchange *x = find_exchange(ch, xname, mid);
    if (!x || change_binding(ch, mid, x, q, NULL, key, args) < 0)
        return;
    if (!(bits & 1))
        send_empty(ch, QUEUE_BIND_OK);
}

static void send_count(channel *ch, unsigned mid, size_t n) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, mid);
    buf_u32(o, (uint32_t)n);
    frame_end(o, m);
}

static void queue_purge_m(channel *ch, rd *r) {
    rd_u16(r);
    slice name = last_queue_or(ch, rd_shortstr(r));
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_PURGE);
        return;
    }
    queue *q = find_queue(ch, name, QUEUE_PURGE);
    if (!q)
        return;
    size_t n = queue_purge(q);
    if (!(bits & 1))
        send_count(ch, QUEUE_PURGE_OK, n);
}

static void queue_delete_m(channel *ch, rd *r) {
    rd_u16(r);
    slice name = last_queue_or(ch, rd_shortstr(r));
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_DELETE);
        return;
    }
    int if_unused = bits & 1, if_empty = (bits >> 1) & 1, nowait = (bits >> 2) & 1;
    queue *q = broker_queue(ch->c->b, name);
    size_t n = 0;
    if (q) {
        if (check_exclusive(ch, q, QUEUE_DELETE) < 0)
            return;
        if (if_unused && q->nconsumers) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DELETE, "%s in use", rs("queue", name));
            return;
        }
        if (if_empty && queue_ready_count(q)) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DELETE, "%s not empty", rs("queue", name));
            return;
        }
        n = queue_delete(q);
    }
    if (!nowait)
        send_count(ch, QUEUE_DELETE_OK, n);
}

/* ---- basic class ---- */

static void basic_qos(channel *ch, rd *r) {
    uint32_t size = rd_u32(r);
    uint16_t count = rd_u16(r);
    uint8_t global = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, BASIC_QOS);
        return;
    }
    if (size != 0) {
        conn_close_error(ch->c, NOT_IMPLEMENTED, BASIC_QOS, "prefetch_size!=0 (%u)", size);
        return;
    }
    /* RabbitMQ: global=false is per consumer (for consumers started later), global=true
     * is shared by the whole channel. */
    if (global)
        ch->prefetch_global = count;
    else
        ch->prefetch = count;
    send_empty(ch, BASIC_QOS_OK);
    wake_channel_consumers(ch);
}

static void send_consume_ok(channel *ch, const consumer *cs) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, BASIC_CONSUME_OK);
    buf_shortstr(o, cs->tag, cs->tag_len);
    frame_end(o, m);
}

static consumer *consumer_new(channel *ch, slice tag, queue *q, int no_ack, int exclusive, slice args) {
    consumer *cs = xcalloc(1, sizeof *cs);
    cs->tag = xstrndup((const char *)tag.p, tag.n);
    cs->tag_len = tag.n;
    cs->ch = ch;
    cs->q = q;
    cs->no_ack = (uint8_t)no_ack;
    cs->exclusive = (uint8_t)exclusive;
    cs->prefetch = ch->prefetch;
    fval v;
    if (args.n && table_get(args, "x-priority", &v) && fval_is_int(&v))
        cs->priority = (int32_t)v.i;
    if (args.n) {
        cs->args = xmalloc(args.n);
        memcpy(cs->args, args.p, args.n);
        cs->args_len = args.n;
    }
    map_put(&ch->consumers, cs->tag, cs->tag_len, cs);
    return cs;
}

static void basic_consume(channel *ch, rd *r) {
    rd_u16(r);
    slice qname = rd_shortstr(r);
    slice tag = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, BASIC_CONSUME);
        return;
    }
    int no_ack = (bits >> 1) & 1, exclusive = (bits >> 2) & 1, nowait = (bits >> 3) & 1;
    char gen[64];
    if (tag.n == 0) {
        memcpy(gen, "amq.ctag-", 9);
        broker_random_name(gen + 9, 22);
        tag = (slice){(const uint8_t *)gen, 31};
    }
    if (map_get(&ch->consumers, (const char *)tag.p, tag.n)) {
        conn_close_error(ch->c, NOT_ALLOWED, BASIC_CONSUME, "attempt to reuse consumer tag '%.*s'", (int)tag.n,
                         (const char *)tag.p);
        return;
    }
    if (slice_eqs(qname, REPLY_TO)) {
        /* Direct reply-to: a pseudo-consumer; replies come straight to this channel. */
        if (!no_ack) {
            channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME, "reply consumer cannot acknowledge");
            return;
        }
        if (ch->reply) {
            channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME, "reply consumer already set");
            return;
        }
        ch->reply = consumer_new(ch, tag, NULL, 1, 0, args);
        char rnd[24];
        broker_random_name(rnd, 16);
        snprintf(ch->reply_key, sizeof ch->reply_key, REPLY_TO_PREFIX "%llx.%x.%.16s",
                 (unsigned long long)ch->c->id, ch->id, rnd);
        map_put(&ch->c->b->reply_to, ch->reply_key, strlen(ch->reply_key), ch);
        if (!nowait)
            send_consume_ok(ch, ch->reply);
        return;
    }
    qname = last_queue_or(ch, qname);
    queue *q = find_queue(ch, qname, BASIC_CONSUME);
    if (!q)
        return;
    for (size_t i = 0; i < q->nconsumers; i++) {
        if (q->consumers[i]->exclusive || exclusive) {
            channel_close_error(ch, ACCESS_REFUSED, BASIC_CONSUME, "%s in exclusive use", rs("queue", qname));
            return;
        }
    }
    consumer *cs = consumer_new(ch, tag, q, no_ack, exclusive, args);
    if (!nowait)
        send_consume_ok(ch, cs);
    queue_add_consumer(q, cs);
}

static void basic_cancel(channel *ch, rd *r) {
    slice tag = rd_shortstr(r);
    uint8_t nowait = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, BASIC_CANCEL);
        return;
    }
    consumer *cs = map_get(&ch->consumers, (const char *)tag.p, tag.n);
    if (!nowait) {
        buf *o = out(ch);
        size_t m = method_begin(o, ch->id, BASIC_CANCEL_OK);
        buf_shortstr(o, (const char *)tag.p, tag.n);
        frame_end(o, m);
    }
    if (cs) {
        consumer_detach(ch, cs);
        if (cs->q)
            queue_remove_consumer(cs->q, cs);
        consumer_free(cs);
    }
}

static void basic_publish(channel *ch, rd *r) {
    rd_u16(r);
    slice xname = rd_shortstr(r);
    slice rkey = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, BASIC_PUBLISH);
        return;
    }
    if (bits & 2) {
        /* RabbitMQ 3.x no longer implements immediate delivery. */
        conn_close_error(ch->c, NOT_IMPLEMENTED, BASIC_PUBLISH, "immediate=true");
        return;
    }
    exchange *x = NULL;
    if (xname.n) {
        x = find_exchange(ch, xname, BASIC_PUBLISH);
        if (!x)
            return;
        if (x->internal) {
            channel_close_error(ch, ACCESS_REFUSED, BASIC_PUBLISH, "cannot publish to internal %s", rs("exchange", xname));
            return;
        }
    }
    conn *c = ch->c;
    c->has_published = 1;
    if (c->b->alarms && !c->blocked)
        conn_set_blocked(c, 1); /* a resource alarm: this publish is the last one read */
    /* Remember exchange and key in a header-less message until the content header says
     * how big the body is. */
    ch->pending = message_new(xname, rkey, (slice){NULL, 0}, 0);
    ch->mandatory = bits & 1;
    ch->expect = FRAME_HEADER;
}

static void write_return(channel *ch, message *m, int code, const char *text) {
    buf *o = out(ch);
    size_t mk = method_begin(o, ch->id, BASIC_RETURN);
    buf_u16(o, (uint16_t)code);
    buf_shortstr(o, text, strlen(text));
    buf_shortstr(o, msg_exchange(m), m->exchange_len);
    buf_shortstr(o, msg_rkey(m), m->rkey_len);
    frame_end(o, mk);
    wire_content(o, ch->id, msg_props(m), m->props_len, msg_body(m), m->body_len, ch->c->frame_max);
}

/* A reply to a direct reply-to requester goes straight to its channel. */
static int deliver_reply(broker *b, message *m) {
    channel *to = map_get(&b->reply_to, msg_rkey(m), m->rkey_len);
    if (!to || to->closing || !to->reply)
        return 0;
    write_deliver(to, to->reply, ++to->next_tag, 0, m, (slice){msg_props(m), m->props_len});
    return 1;
}

/* Routes a complete message to its queues (or returns it), then confirms it. */
static int publish_route(channel *ch, message *m, int mandatory) {
    broker *b = ch->c->b;
    /* Headers are only looked at by headers exchanges: skip the parse when there are none. */
    props_view pv = {0};
    if (m->props_len >= 2 && (msg_props(m)[0] << 8 & PROP_HEADERS))
        props_parse((slice){msg_props(m), m->props_len}, &pv);
    int routed = 0, rejected = 0;
    uint64_t appended = store_appended(b->store);
    if (m->exchange_len == 0 && slice_prefix((slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, REPLY_TO_PREFIX)) {
        routed = deliver_reply(b, m);
    } else {
        exchange *x = broker_exchange(b, (slice){(const uint8_t *)msg_exchange(m), m->exchange_len});
        if (x) {
            exchange_route(x, m, pv.headers);
            routed = b->nroute > 0;
            broker_enqueue_routed(b, m, &rejected);
        }
    }
    if (!routed && mandatory)
        write_return(ch, m, NO_ROUTE, "NO_ROUTE");
    int stored = store_appended(b->store) != appended; /* a record for it: publish or delayed */
    if (ch->confirm) {
        ch->pub_seq++;
        if (stored || ch->ncwait)
            wait_for_store(ch, rejected); /* confirmed once its record is synced */
        else if (rejected)
            send_nack(ch, ch->pub_seq); /* a full queue with x-overflow reject-publish */
        else
            confirm_ready(ch);
    }
    return stored;
}

/* Replaces the reply-to property (for direct reply-to) in the raw property bytes. */
static message *rewrite_reply_to(message *m, slice old, const char *key) {
    size_t klen = strlen(key);
    size_t pre = (size_t)(old.p - msg_props(m)) - 1; /* up to the length octet */
    size_t post = m->props_len - pre - 1 - old.n;
    buf nb;
    buf_init(&nb);
    buf_put(&nb, msg_props(m), pre);
    buf_shortstr(&nb, key, klen);
    buf_put(&nb, old.p + old.n, post);
    message *n = message_new((slice){(const uint8_t *)msg_exchange(m), m->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, (slice){buf_head(&nb), nb.len},
                             m->body_len);
    buf_free(&nb);
    return n;
}

/* The expiration property is a decimal count of milliseconds (RabbitMQ's per-message TTL). */
static int check_expiration(channel *ch, slice e) {
    const char *why = NULL;
    char text[64];
    long long v = 0;
    size_t i = e.n && e.p[0] == '-' ? 1 : 0;
    if (i == e.n)
        why = "no_integer";
    for (; !why && i < e.n; i++) {
        if (e.p[i] < '0' || e.p[i] > '9' || v > 100000000000000LL)
            why = "no_integer";
        else
            v = v * 10 + (e.p[i] - '0');
    }
    if (!why && e.p[0] == '-') {
        snprintf(text, sizeof text, "{value_negative,-%lld}", v);
        why = text;
    }
    if (!why)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "invalid expiration '%.*s': %s", (int)MIN(e.n, 64),
                        (const char *)e.p, why);
    return -1;
}

static void content_header(channel *ch, const frame *f) {
    rd r = rd_make(f->payload, f->size);
    uint16_t cls = rd_u16(&r);
    rd_u16(&r); /* weight */
    uint64_t size = rd_u64(&r);
    slice props = rd_bytes(&r, rd_left(&r));
    conn *c = ch->c;
    char oct[160];
    if (r.err || props.n < 2) {
        wire_format_octets(f->payload, f->size, oct, sizeof oct);
        conn_close_error(c, FRAME_ERROR, 0, "type 2, all octets = %s: unknown_frame", oct);
        return;
    }
    if (cls != CLASS_BASIC) {
        conn_close_error(c, UNEXPECTED_FRAME, BASIC_PUBLISH,
                         "expected content header for class 60, got one for class %u instead", cls);
        return;
    }
    props_view pv;
    if (props_parse(props, &pv) < 0) {
        wire_format_octets(props.p, props.n, oct, sizeof oct);
        conn_close_error(c, FRAME_ERROR, BASIC_PUBLISH, "cannot decode %s", oct);
        return;
    }
    message *hdr = ch->pending;
    ch->pending = NULL;
    ch->expect = 0;
    if (size > c->b->cfg.max_message_size) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "message size %llu is larger than configured max size %llu", (unsigned long long)size,
                            (unsigned long long)c->b->cfg.max_message_size);
        message_unref(hdr);
        return;
    }
    if ((pv.flags & PROP_USER_ID) && !slice_eqs(pv.user_id, c->user)) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH,
                            "user_id property set to '%.*s' but authenticated user was '%s'", (int)pv.user_id.n,
                            (const char *)pv.user_id.p, c->user);
        message_unref(hdr);
        return;
    }
    if ((pv.flags & PROP_EXPIRATION) && check_expiration(ch, pv.expiration) < 0) {
        message_unref(hdr);
        return;
    }
    message *m = message_new((slice){(const uint8_t *)msg_exchange(hdr), hdr->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(hdr), hdr->rkey_len}, props, size);
    message_unref(hdr);
    m->persistent = pv.delivery_mode == 2;
    if (pv.flags & PROP_EXPIRATION) {
        m->ttl = 0;
        for (size_t i = 0; i < pv.expiration.n; i++)
            m->ttl = m->ttl * 10 + (pv.expiration.p[i] - '0');
    }
    m->priority = pv.priority;
    if ((pv.flags & PROP_REPLY_TO) && slice_eqs(pv.reply_to, REPLY_TO)) {
        if (!ch->reply) {
            channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "fast reply consumer does not exist");
            message_unref(m);
            return;
        }
        message *n = rewrite_reply_to(m, (slice){msg_props(m) + (pv.reply_to.p - props.p), pv.reply_to.n}, ch->reply_key);
        message_unref(m);
        m = n;
    }
    ch->pending = m;
    ch->pending_got = 0;
    ch->expect = FRAME_BODY;
}

static void publish_complete(channel *ch) {
    message *m = ch->pending;
    ch->pending = NULL;
    ch->expect = 0;
    if (ch->tx) {
        if (ch->ntx == ch->captx) {
            ch->captx = ch->captx ? ch->captx * 2 : 16;
            ch->txops = xrealloc(ch->txops, ch->captx * sizeof *ch->txops);
        }
        ch->txops[ch->ntx++] = (txop){TXOP_PUBLISH, 0, 0, ch->mandatory, 0, m};
        return;
    }
    publish_route(ch, m, ch->mandatory);
    message_unref(m);
}

static void content_body(channel *ch, const frame *f) {
    message *m = ch->pending;
    if (ch->pending_got + f->size > m->body_len) {
        /* More body than the header declared: as RabbitMQ, the message never completes (it is
         * not routed) and the channel keeps waiting for body frames, so the next method is an
         * UNEXPECTED_FRAME error. */
        ch->pending_got = m->body_len + 1;
        return;
    }
    if (ch->pending_got > m->body_len)
        return;
    memcpy(msg_body(m) + ch->pending_got, f->payload, f->size);
    ch->pending_got += f->size;
    if (ch->pending_got == m->body_len)
        publish_complete(ch);
}

static void basic_get(channel *ch, rd *r) {
    rd_u16(r);
    slice qname = last_queue_or(ch, rd_shortstr(r));
    int no_ack = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, BASIC_GET);
        return;
    }
    queue *q = find_queue(ch, qname, BASIC_GET);
    if (!q)
        return;
    queue_touch(q);
    qmsg qm;
    buf *o = out(ch);
    if (!queue_pop(q, &qm)) {
        size_t m = method_begin(o, ch->id, BASIC_GET_EMPTY);
        buf_shortstr(o, "", 0);
        frame_end(o, m);
        return;
    }
    uint64_t tag = ++ch->next_tag;
    message *msg = qm.m;
    size_t mk = method_begin(o, ch->id, BASIC_GET_OK);
    buf_u64(o, tag);
    buf_u8(o, qm.deliveries > 0);
    buf_shortstr(o, msg_exchange(msg), msg->exchange_len);
    buf_shortstr(o, msg_rkey(msg), msg->rkey_len);
    buf_u32(o, (uint32_t)queue_ready_count(q));
    frame_end(o, mk);
    buf scratch;
    buf_init(&scratch);
    slice props = queue_delivery_props(q, &qm, &scratch);
    wire_content(o, ch->id, props.p, props.n, msg_body(msg), msg->body_len, ch->c->frame_max);
    buf_free(&scratch);
    store_delivered(ch->c->b->store, q, &qm);
    qm.deliveries = count_up(qm.deliveries);
    if (no_ack) {
        queue_settle(q, qm);
        return;
    }
    q->refs++;
    q->unacked++;
    ch->nunacked++;
    ring_push(&ch->unacked, (unacked){tag, q, NULL, qm, 0});
}

static void tx_add(channel *ch, uint8_t kind, uint64_t tag, int multiple, int requeue) {
    if (ch->ntx == ch->captx) {
        ch->captx = ch->captx ? ch->captx * 2 : 16;
        ch->txops = xrealloc(ch->txops, ch->captx * sizeof *ch->txops);
    }
    ch->txops[ch->ntx++] = (txop){kind, (uint8_t)multiple, (uint8_t)requeue, 0, tag, NULL};
}

/* basic.ack, basic.nack and basic.reject. */
static void basic_settle(channel *ch, rd *r, unsigned mid) {
    uint64_t tag = rd_u64(r);
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    int multiple = mid != BASIC_REJECT && (bits & 1);
    int requeue = mid == BASIC_ACK ? 0 : mid == BASIC_REJECT ? (bits & 1) : ((bits >> 1) & 1);
    if (ch->tx) {
        if (!tags_known(ch, tag, multiple)) {
            channel_close_error(ch, PRECONDITION_FAILED, mid, "unknown delivery tag %llu", (unsigned long long)tag);
            return;
        }
        tx_add(ch, mid == BASIC_ACK ? TXOP_ACK : TXOP_NACK, tag, multiple, requeue);
        return;
    }
    int mode = mid == BASIC_ACK ? SETTLE_ACK : requeue ? SETTLE_REQUEUE : SETTLE_REJECT;
    if (settle_tags(ch, tag, multiple, mode) < 0)
        channel_close_error(ch, PRECONDITION_FAILED, mid, "unknown delivery tag %llu", (unsigned long long)tag);
}

static void basic_recover(channel *ch, rd *r, unsigned mid) {
    int requeue = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    if (!requeue) { /* RabbitMQ cannot redeliver to the original consumer */
        conn_close_error(ch->c, NOT_IMPLEMENTED, mid, "requeue=false");
        return;
    }
    settle_tags(ch, 0, 1, SETTLE_REQUEUE);
    if (mid == BASIC_RECOVER)
        send_empty(ch, BASIC_RECOVER_OK);
}

/* ---- confirm and tx ---- */

static void confirm_select(channel *ch, rd *r) {
    uint8_t nowait = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, CONFIRM_SELECT);
        return;
    }
    if (ch->tx) {
        channel_close_error(ch, PRECONDITION_FAILED, CONFIRM_SELECT, "cannot switch from tx to confirm mode");
        return;
    }
    ch->confirm = 1;
    if (!nowait)
        send_empty(ch, CONFIRM_SELECT_OK);
}

/* Applies the transaction; returns 1 if it wrote persistent messages to the store, which
 * commit-ok must wait for (invariant 1 holds for tx.commit-ok as for confirms). */
static int tx_commit(channel *ch) {
    size_t n = ch->ntx;
    int stored = 0;
    ch->ntx = 0;
    for (size_t i = 0; i < n; i++) {
        txop *op = &ch->txops[i];
        if (op->kind == TXOP_PUBLISH) {
            stored |= publish_route(ch, op->m, op->mandatory);
            message_unref(op->m);
        } else {
            settle_tags(ch, op->tag, op->multiple,
                        op->kind == TXOP_ACK ? SETTLE_ACK : op->requeue ? SETTLE_REQUEUE : SETTLE_REJECT);
        }
    }
    return stored;
}

static void tx_method(channel *ch, unsigned mid) {
    if (mid == TX_SELECT) {
        if (ch->confirm) {
            channel_close_error(ch, PRECONDITION_FAILED, mid, "cannot switch from confirm to tx mode");
            return;
        }
        ch->tx = 1;
        send_empty(ch, TX_SELECT_OK);
        return;
    }
    if (!ch->tx) {
        channel_close_error(ch, PRECONDITION_FAILED, mid, "channel is not transactional");
        return;
    }
    if (mid == TX_COMMIT) {
        broker *b = ch->c->b;
        if (tx_commit(ch) && b->store) {
            /* commit-ok once synced; the connection reads nothing more until then */
            ch->tx_wait_gen = store_gen(b->store);
            ch->c->store_wait++;
            join_waiters(ch);
            conn_update_input(ch->c);
            return;
        }
        send_empty(ch, TX_COMMIT_OK);
    } else {
        tx_clear(ch);
        send_empty(ch, TX_ROLLBACK_OK);
    }
}

/* ---- dispatch ---- */

/* A frame other than the content the channel waits for (RabbitMQ's texts). */
static void content_expected(channel *ch) {
    if (ch->expect == FRAME_HEADER)
        conn_close_error(ch->c, UNEXPECTED_FRAME, BASIC_PUBLISH,
                         "expected content header for class 60, got non content header frame instead");
    else
        conn_close_error(ch->c, UNEXPECTED_FRAME, BASIC_PUBLISH,
                         "expected content body, got non content body frame instead");
}

static void channel_method(channel *ch, const frame *f) {
    rd r = rd_make(f->payload, f->size);
    unsigned mid = rd_u32(&r);
    conn *c = ch->c;
    ch->args = (slice){f->payload + 4, f->size - 4}; /* for error texts */
    if (ch->closing) {
        /* After we sent channel.close only close / close-ok count (spec 2.2.4). */
        if (mid == CHANNEL_CLOSE_OK) {
            conn_forget_channel(c, ch->id);
        } else if (mid == CHANNEL_CLOSE) {
            send_empty(ch, CHANNEL_CLOSE_OK);
            conn_forget_channel(c, ch->id);
        }
        return;
    }
    if (ch->expect) {
        content_expected(ch);
        return;
    }
    switch (mid) {
    case CHANNEL_OPEN: conn_close_error(c, CHANNEL_ERROR, mid, "second 'channel.open' seen"); return;
    case CHANNEL_FLOW: {
        uint8_t active = rd_u8(&r) & 1;
        if (args_bad(&r))
            return (void)syntax_error(ch, mid);
        if (!active) { /* RabbitMQ does not implement client-side flow control */
            conn_close_error(c, NOT_IMPLEMENTED, mid, "active=false");
            return;
        }
        ch->flow_active = active;
        buf *o = out(ch);
        size_t m = method_begin(o, ch->id, CHANNEL_FLOW_OK);
        buf_u8(o, active);
        frame_end(o, m);
        if (active)
            wake_channel_consumers(ch);
        return;
    }
    case CHANNEL_FLOW_OK: return;
    case CHANNEL_CLOSE:
        send_empty(ch, CHANNEL_CLOSE_OK);
        conn_forget_channel(c, ch->id);
        return;
    case CHANNEL_CLOSE_OK: break; /* we never sent close */
    case EXCHANGE_DECLARE: return exchange_declare(ch, &r);
    case EXCHANGE_DELETE: return exchange_delete(ch, &r);
    case EXCHANGE_BIND:
    case EXCHANGE_UNBIND: return exchange_bind(ch, &r, mid);
    case QUEUE_DECLARE: return queue_declare(ch, &r);
    case QUEUE_BIND:
    case QUEUE_UNBIND: return queue_bind(ch, &r, mid);
    case QUEUE_PURGE: return queue_purge_m(ch, &r);
    case QUEUE_DELETE: return queue_delete_m(ch, &r);
    case BASIC_QOS: return basic_qos(ch, &r);
    case BASIC_CONSUME: return basic_consume(ch, &r);
    case BASIC_CANCEL: return basic_cancel(ch, &r);
    case BASIC_PUBLISH: return basic_publish(ch, &r);
    case BASIC_GET: return basic_get(ch, &r);
    case BASIC_ACK:
    case BASIC_REJECT:
    case BASIC_NACK: return basic_settle(ch, &r, mid);
    case BASIC_RECOVER:
    case BASIC_RECOVER_ASYNC: return basic_recover(ch, &r, mid);
    case CONFIRM_SELECT: return confirm_select(ch, &r);
    case TX_SELECT:
    case TX_COMMIT:
    case TX_ROLLBACK: return tx_method(ch, mid);
    }
    unsigned cls = mid >> 16, m = mid & 0xffff;
    /* Methods only a server sends, connection methods on a channel: "unimplemented" as
     * RabbitMQ says; a method the spec does not have at all: 540. */
    if (method_name(mid)[0] != 'u' || (cls == CLASS_CONNECTION && m <= 71))
        conn_close_error(c, COMMAND_INVALID, mid, "unimplemented method");
    else
        conn_close_error(c, NOT_IMPLEMENTED, mid, "unknown method %u.%u", cls, m);
}

void channel_frame(channel *ch, const frame *f) {
    switch (f->type) {
    case FRAME_METHOD: channel_method(ch, f); return;
    case FRAME_HEADER:
    case FRAME_BODY:
        if (ch->closing)
            return;
        if (ch->expect != f->type) {
            if (ch->expect)
                content_expected(ch);
            else
                conn_close_error(ch->c, UNEXPECTED_FRAME, 0, "expected method frame, got non method frame instead");
            return;
        }
        if (f->type == FRAME_BODY) {
            content_body(ch, f);
            return;
        }
        content_header(ch, f);
        if (ch->expect == FRAME_BODY && ch->pending && ch->pending->body_len == 0)
            publish_complete(ch);
        return;
    }
}
