/* consume.c — consumers, the unacked ring and acknowledgements.
 *
 * basic.consume / cancel / get / qos, deliveries to consumers (consumer_deliver, called by
 * the queue's dispatcher) and how they end: basic.ack, nack, reject and recover. Deliveries
 * a consumer (or basic.get) has not acknowledged sit in the channel's `unacked` ring in
 * delivery-tag order, each holding a reference on its queue; settling marks an entry done
 * and settled entries are trimmed from the front. Closing the channel requeues what is
 * left, in order (ARCHITECTURE.md, invariant 2). */
#include "channel_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

/* ---- the unacked ring ---- */

/* The ring's invariants: capacity a power of two (or 0), len <= cap, tags strictly
 * increasing from head to tail (ring_find relies on it). */

/* The i-th entry from the oldest. */
static unacked *ring_at(uring *r, size_t i) {
    assert(i < r->cap && (r->cap & (r->cap - 1)) == 0);
    return &r->a[(r->head + i) & (r->cap - 1)];
}

/* Appends a delivery; its tag is higher than every tag in the ring. */
static void ring_push(uring *r, unacked u) {
    assert(r->len <= r->cap && !u.done);
    assert(r->len == 0 || ring_at(r, r->len - 1)->tag < u.tag);
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

/* Drops settled entries: from the front at once, and from anywhere once they outnumber the
 * live entries (live of them) three to one, so that a client holding one early delivery
 * while acking every later one costs ferryd its live deliveries, not one entry per delivery
 * since the held one. Each compaction costs len moves after at least 3/4 len settles:
 * amortised O(1) per settle. The order (and so ring_find) is kept. */
static void ring_trim(uring *r, size_t live) {
    while (r->len && ring_at(r, 0)->done) {
        r->head = (r->head + 1) & (r->cap - 1);
        r->len--;
    }
    if (r->len > 64 && r->len > 4 * live) {
        size_t j = 0;
        for (size_t i = 0; i < r->len; i++) /* j <= i: nothing unread is overwritten */
            if (!ring_at(r, i)->done)
                *ring_at(r, j++) = *ring_at(r, i);
        r->len = j;
    }
    assert(r->len >= live);
    if (r->cap > 4096 && r->len < r->cap / 8) { /* give back most of a grown array */
        size_t ncap = r->cap / 4;
        unacked *a = xmalloc(ncap * sizeof *a);
        for (size_t i = 0; i < r->len; i++)
            a[i] = *ring_at(r, i);
        free(r->a);
        r->a = a;
        r->cap = ncap;
        r->head = 0;
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

/* ---- consumers and deliveries ---- */

/* Can this consumer take another delivery now? (channel open, connection output below the
 * high-water mark, prefetch credit left) */
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

/* Writes basic.deliver and the message content to the consumer's channel. */
void write_deliver(channel *ch, const consumer *cs, uint64_t tag, int redelivered, message *m, slice props) {
    buf *o = out(ch);
    size_t mk = method_begin(o, ch->id, BASIC_DELIVER);
    buf_shortstr(o, cs->tag, cs->tag_len);
    buf_u64(o, tag);
    buf_u8(o, redelivered ? 1 : 0);
    buf_shortstr(o, msg_exchange(m), m->exchange_len);
    buf_shortstr(o, msg_rkey(m), m->rkey_len);
    frame_end(o, mk);
    conn_put_content(ch->c, ch->id, props, m);
}

/* Delivers qm to cs (the queue's dispatcher checked consumer_can_take): basic.deliver,
 * and an unacked entry unless the consumer is no-ack. */
void consumer_deliver(consumer *cs, qmsg qm) {
    channel *ch = cs->ch;
    assert(!ch->closing && cs->q && map_get(&ch->consumers, cs->tag, cs->tag_len) == cs);
    uint64_t tag = ++ch->next_tag;
    persist_delivered(ch->c->b->store, cs->q, &qm);
    buf scratch;
    buf_init(&scratch);
    write_deliver(ch, cs, tag, qm.deliveries > 0, qm.m, queue_delivery_props(cs->q, &qm, &scratch));
    buf_free(&scratch);
    broker *b = ch->c->b;
    if (cs->no_ack)
        cs->q->cnt.deliver_no_ack++, b->cnt.deliver_no_ack++;
    else
        cs->q->cnt.deliver++, b->cnt.deliver++;
    if (qm.deliveries)
        cs->q->cnt.redeliver++, b->cnt.redeliver++;
    qm.deliveries = count_up(qm.deliveries);
    if (cs->no_ack) {
        queue_settle(cs->q, qm);
        return;
    }
    unacked u = {tag, cs->q, cs, qm, 0, 0};
    cs->q->refs++;
    cs->q->unacked++;
    cs->q->cnt.unacked_bytes += qm.m->body_len;
    cs->unacked++;
    ch->nunacked++;
    ring_push(&ch->unacked, u);
}

void consume_push_unacked(consumer *cs, uint64_t tag, uint64_t offset) {
    channel *ch = cs->ch;
    qmsg qm = {0};
    qm.seq = offset;
    unacked u = {tag, cs->q, cs, qm, 0, 0};
    cs->q->refs++;
    cs->q->unacked++;
    cs->unacked++;
    ch->nunacked++;
    ring_push(&ch->unacked, u);
}

/* Frees a consumer already removed from its queue and channel. */
static void consumer_free(consumer *cs) {
    stream_consumer_gone(cs);
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
    if (ch->reply == cs)
        replyto_forget(ch, cs);
}

/* The consumer's queue is gone: the consumer leaves; a client that supports it is told
 * with basic.cancel (RabbitMQ's consumer cancel notification). */
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

/* Ends one unacked delivery (mode SETTLE_*): counters down, the message acked, requeued
 * or rejected in its queue, the queue reference dropped. */
static void settle(channel *ch, unacked *u, int mode) {
    queue *q = u->q;
    assert(!u->done && ch->nunacked > 0 && q->unacked > 0 && q->refs > 0);
    assert(!u->c || u->c->unacked > 0);
    u->done = 1;
    u->tx = 0;
    ch->nunacked--;
    q->unacked--;
    if (u->qm.m) /* (a stream's unacked entries hold an offset, no message) */
        q->cnt.unacked_bytes -= u->qm.m->body_len;
    if (u->c)
        u->c->unacked--;
    if (q->is_stream) {
        stream_settled(q, u->c, u->qm.seq, mode); /* a stream removes nothing */
        queue_unref(q);
        return;
    }
    if (mode == SETTLE_REQUEUE)
        queue_requeue(q, u->qm);
    else if (mode == SETTLE_REJECT)
        queue_reject(q, u->qm);
    else {
        queue_settle(q, u->qm);
        q->cnt.ack++, ch->c->b->cnt.ack++;
    }
    if (!q->deleted && q->nconsumers && queue_ready_count(q))
        queue_mark_dirty(q);
    queue_unref(q);
}

/* Credit freed on this channel may unblock consumers of other queues (global prefetch). */
void wake_channel_consumers(channel *ch) {
    size_t it = 0;
    map_entry *e;
    while (map_iter(&ch->consumers, &it, &e)) {
        consumer *cs = e->val;
        if (cs->q && queue_ready_count(cs->q))
            queue_mark_dirty(cs->q);
    }
}

/* Waits for an ack: delivered, not settled, not acked in the open transaction. */
static int ackable(const unacked *u) { return !u->done && !u->tx; }

/* Applies ack / nack / reject (mode) to one tag or (multiple) every tag up to it; multiple
 * with tag 0 means all. As RabbitMQ's collect_acks, the tag itself must be waiting for an
 * ack, else it is unknown: -1, nothing changed. In a transaction (tx) the entries are only
 * marked, for tx.commit to settle; they count as acked from now on. */
static int apply_tags(channel *ch, uint64_t tag, int multiple, int mode, int tx, int recovering) {
    uring *r = &ch->unacked;
    size_t end = r->len;
    if (!(multiple && tag == 0)) {
        long i = ring_find(r, tag);
        if (i < 0 || !ackable(ring_at(r, (size_t)i)))
            return -1;
        end = (size_t)i + 1;
    }
    for (size_t i = multiple ? 0 : end - 1; i < end; i++) {
        unacked *u = ring_at(r, i);
        if (!ackable(u) || (recovering && u->q->is_stream))
            continue;
        if (tx) {
            u->tx = (uint8_t)(1 + mode);
            ch->ntx_acks++;
        } else {
            settle(ch, u, mode);
        }
    }
    if (!tx) {
        ring_trim(r, ch->nunacked);
        wake_channel_consumers(ch);
    }
    return 0;
}

/* tx.commit settles the deliveries acked in the transaction (in tag order, after the
 * publishes); tx.rollback makes them unacked again. */
void tx_settle(channel *ch, int commit) {
    uring *r = &ch->unacked;
    if (!ch->ntx_acks)
        return;
    for (size_t i = 0; i < r->len; i++) {
        unacked *u = ring_at(r, i);
        if (!u->tx)
            continue;
        assert(!u->done);
        int mode = u->tx - 1;
        u->tx = 0;
        if (commit)
            settle(ch, u, mode);
    }
    ch->ntx_acks = 0;
    ring_trim(r, ch->nunacked);
    wake_channel_consumers(ch);
}

/* ---- basic class ---- */

void basic_qos(channel *ch, rd *r) {
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

/* basic.consume-ok with the consumer's tag. */
void send_consume_ok(channel *ch, const consumer *cs) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, BASIC_CONSUME_OK);
    buf_shortstr(o, cs->tag, cs->tag_len);
    frame_end(o, m);
}

/* A consumer on q (NULL: the reply-to pseudo-consumer), registered under its tag; prefetch
 * is the channel's per-consumer basic.qos at this moment. */
consumer *consumer_new(channel *ch, slice tag, queue *q, int no_ack, int exclusive, slice args) {
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

/* basic.consume: a server-made tag for an empty one; a reused tag is a connection error
 * (530, RabbitMQ); exclusive consumers exclude every other consumer of the queue. */
void basic_consume(channel *ch, rd *r) {
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
        replyto_consume(ch, tag, no_ack, nowait, args);
        return;
    }
    qname = last_queue_or(ch, qname);
    if (qname.n && perm_check(ch, PERM_READ, "queue", qname, BASIC_CONSUME) < 0)
        return;
    queue *q = find_queue(ch, qname, BASIC_CONSUME);
    if (!q)
        return;
    if (q->is_stream) { /* RabbitMQ: exclusive consume does not apply to streams */
        stream_consume(ch, q, tag, no_ack, exclusive, nowait, args);
        return;
    }
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

/* basic.cancel: cancel-ok even for an unknown tag (RabbitMQ); unacked deliveries of the
 * consumer stay ackable. */
void basic_cancel(channel *ch, rd *r) {
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

/* basic.get: one message or get-empty; unless no-ack it becomes an unacked delivery that no
 * prefetch limit counts (as in RabbitMQ). */
void basic_get(channel *ch, rd *r) {
    rd_u16(r);
    slice qname = last_queue_or(ch, rd_shortstr(r));
    int no_ack = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, BASIC_GET);
        return;
    }
    if (qname.n && perm_check(ch, PERM_READ, "queue", qname, BASIC_GET) < 0)
        return;
    queue *q = find_queue(ch, qname, BASIC_GET);
    if (!q)
        return;
    get_from(ch, q, no_ack);
}

void get_from(channel *ch, queue *q, int no_ack) {
    if (q->is_stream) { /* RabbitMQ's refusal, a connection error */
        conn_close_error(ch->c, NOT_IMPLEMENTED, BASIC_GET, "basic.get not supported by stream queues %s",
                         rs("queue", (slice){(const uint8_t *)q->name, q->name_len}));
        return;
    }
    queue_touch(q);
    qmsg qm;
    int rc = queue_pop(q, &qm);
    if (rc < 0) {
        chwait_get(ch, q, no_ack);
        return;
    }
    buf *o = out(ch);
    if (!rc) {
        q->cnt.get_empty++, ch->c->b->cnt.get_empty++;
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
    conn_put_content(ch->c, ch->id, props, msg);
    buf_free(&scratch);
    persist_delivered(ch->c->b->store, q, &qm);
    if (no_ack)
        q->cnt.get_no_ack++, ch->c->b->cnt.get_no_ack++;
    else
        q->cnt.get++, ch->c->b->cnt.get++;
    if (qm.deliveries)
        q->cnt.redeliver++, ch->c->b->cnt.redeliver++;
    qm.deliveries = count_up(qm.deliveries);
    if (no_ack) {
        queue_settle(q, qm);
        return;
    }
    q->refs++;
    q->unacked++;
    q->cnt.unacked_bytes += qm.m->body_len;
    ch->nunacked++;
    ring_push(&ch->unacked, (unacked){tag, q, NULL, qm, 0, 0});
}

/* basic.ack, basic.nack and basic.reject. */
void basic_settle(channel *ch, rd *r, unsigned mid) {
    uint64_t tag = rd_u64(r);
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    int multiple = mid != BASIC_REJECT && (bits & 1);
    int requeue = mid == BASIC_ACK ? 0 : mid == BASIC_REJECT ? (bits & 1) : ((bits >> 1) & 1);
    int mode = mid == BASIC_ACK ? SETTLE_ACK : requeue ? SETTLE_REQUEUE : SETTLE_REJECT;
    if (apply_tags(ch, tag, multiple, mode, ch->tx, 0) < 0)
        channel_close_error(ch, PRECONDITION_FAILED, mid, "unknown delivery tag %llu", (unsigned long long)tag);
}

/* basic.recover / recover-async with requeue: every delivery waiting for an ack goes back
 * to its queue (requeue=false is not implemented, as in RabbitMQ). */
void basic_recover(channel *ch, rd *r, unsigned mid) {
    int requeue = rd_u8(r) & 1;
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    if (!requeue) { /* RabbitMQ cannot redeliver to the original consumer */
        conn_close_error(ch->c, NOT_IMPLEMENTED, mid, "requeue=false");
        return;
    }
    apply_tags(ch, 0, 1, SETTLE_REQUEUE, 0, 1); /* not what the open transaction acked; stream deliveries stay */
    if (mid == BASIC_RECOVER)
        send_empty(ch, BASIC_RECOVER_OK);
}

/* Cancels every consumer and requeues every unacked delivery, in order (channel close). */
void consume_release(channel *ch) {
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
    ch->ntx_acks = 0; /* acks of an uncommitted transaction are dropped: requeued above */
    assert(ch->nunacked == 0 && ch->consumers.count == 0 && ch->reply == NULL);
}
