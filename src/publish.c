/* publish.c — publishing: message assembly, routing, publisher confirms and transactions.
 *
 * basic.publish starts a message, the content header gives its properties and body size,
 * body frames fill it; a complete message is routed (publish_route) or, in a transaction,
 * buffered until tx.commit. In confirm mode each publish gets a sequence number; a publish
 * that wrote a store record is confirmed only once the store has synced it (the cwait list,
 * ARCHITECTURE.md, invariant 1), the others at the end of the batch; a queue that refuses it
 * (x-overflow reject-publish) makes it a nack. tx.commit-ok waits for the store the same
 * way. */
#include "channel_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

/* Room for a body before its frames arrive: one frame at the default frame_max. */
#define BODY_INITIAL_ROOM (128u << 10)
/* How much the room of a body that outgrows it is multiplied by (content_body). */
#define BODY_GROWTH 8

/* Drops the transaction's buffered work. */
static void tx_clear(channel *ch) {
    for (size_t i = 0; i < ch->ntx; i++)
        message_unref(ch->txops[i].m);
    ch->ntx = 0;
}

/* Gives everything back: consumers cancelled, unacked deliveries requeued in order. */

/* ---- confirms ---- */

static void confirm_ready_upto(channel *ch) {
    if (!ch->in_confirms) {
        ch->in_confirms = 1;
        ch->next_confirm = ch->c->b->confirms;
        ch->c->b->confirms = ch;
    }
}

/* Everything published so far can be confirmed at the end of this batch. */
static void confirm_ready(channel *ch) {
    ch->confirm_upto = ch->pub_seq;
    confirm_ready_upto(ch);
}

/* Puts the channel on the store's list of channels waiting for a sync. */
static void join_waiters(channel *ch) {
    if (ch->in_waiters)
        return;
    ch->in_waiters = 1;
    ch->next_waiter = ch->c->b->store_waiters;
    ch->c->b->store_waiters = ch;
}

static void send_nack_upto(channel *ch, uint64_t seq);

/* Confirms that must wait for the store, in publish order: each entry covers the publishes
 * up to seq and is due when generation gen is synced. A publish with a record (stored)
 * waits for the batch being built, which holds it; one without waits only for the publishes
 * before it: for the last entry's generation. (Waiting for the batch being built would wait
 * forever if nothing else is written: an empty batch is never synced.) */
static void wait_for_store(channel *ch, int nack, int stored) {
    broker *b = ch->c->b;
    struct cwait *last = ch->ncwait ? &ch->cwait[ch->ncwait - 1] : NULL;
    assert(stored || last);
    uint64_t gen = stored && b->store ? store_gen(b->store) : last ? last->gen : 0;
    if (last && last->gen >= gen && !last->nack && !nack) {
        last->seq = ch->pub_seq;
    } else {
        /* a later entry never waits for an earlier generation than the one before it
         * (read before the array may move: last points into it) */
        if (last && last->gen > gen)
            gen = last->gen;
        assert(!last || last->seq < ch->pub_seq);
        if (ch->ncwait == ch->capcwait) {
            ch->capcwait = ch->capcwait ? ch->capcwait * 2 : 4;
            ch->cwait = xrealloc(ch->cwait, ch->capcwait * sizeof *ch->cwait);
        }
        ch->cwait[ch->ncwait++] = (struct cwait){ch->pub_seq, gen, (uint8_t)nack};
    }
    join_waiters(ch);
}

/* The store synced (ok) or failed to sync generation gen: the confirms waiting for it are
 * sent (acks, or nacks if it failed), and a tx.commit-ok waiting for it. */
void channel_store_synced(channel *ch, uint64_t gen, int ok) {
    uint32_t k = 0;
    for (uint32_t i = 1; i < ch->ncwait; i++) /* in publish order, generations never decrease */
        assert(ch->cwait[i - 1].seq < ch->cwait[i].seq && ch->cwait[i - 1].gen <= ch->cwait[i].gen);
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
    assert(seq <= ch->pub_seq);
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

/* Sends one basic.ack (multiple if it covers several) for everything ready to confirm. */
void channel_send_confirms(channel *ch) {
    assert(ch->confirmed <= ch->pub_seq && ch->confirm_upto <= ch->pub_seq);
    if (ch->closing || ch->confirm_upto <= ch->confirmed)
        return;
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, BASIC_ACK);
    buf_u64(o, ch->confirm_upto);
    buf_u8(o, ch->confirm_upto - ch->confirmed > 1 ? 1 : 0);
    ch->c->b->cnt.confirm += ch->confirm_upto - ch->confirmed;
    frame_end(o, m);
    ch->confirmed = ch->confirm_upto;
}

/* basic.publish: checks the exchange, then waits for the content header. */
void basic_publish(channel *ch, rd *r) {
    assert(!ch->expect && !ch->pending);
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
    /* RabbitMQ: write permission first, then the lookup (404), internal, topic permission */
    if (perm_check_publish(ch, xname) < 0)
        return;
    if (xname.n) {
        x = find_exchange(ch, xname, BASIC_PUBLISH);
        if (!x)
            return;
        if (x->internal) {
            channel_close_error(ch, ACCESS_REFUSED, BASIC_PUBLISH, "cannot publish to internal %s", rs("exchange", xname));
            return;
        }
        if (perm_check_topic(ch, x, PERM_WRITE, rkey, BASIC_PUBLISH) < 0)
            return;
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

/* basic.return of an unroutable mandatory message, with its content. */
static void write_return(channel *ch, message *m, int code, const char *text) {
    buf *o = out(ch);
    size_t mk = method_begin(o, ch->id, BASIC_RETURN);
    buf_u16(o, (uint16_t)code);
    buf_shortstr(o, text, strlen(text));
    buf_shortstr(o, msg_exchange(m), m->exchange_len);
    buf_shortstr(o, msg_rkey(m), m->rkey_len);
    frame_end(o, mk);
    conn_put_content(ch->c, ch->id, (slice){msg_props(m), m->props_len}, m);
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
    int cron_stored = 0;
    if (m->exchange_len == 0 && slice_prefix((slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, REPLY_TO_PREFIX)) {
        routed = deliver_reply(b, m);
    } else {
        exchange *x = broker_exchange(ch->c->vh, (slice){(const uint8_t *)msg_exchange(m), m->exchange_len});
        if (x && x->type == EX_DELAYED && cron_wanted(pv.headers)) {
            /* a schedule (cron.c): not routed itself; confirmed once it is stored */
            int r = cron_publish(ch, x, m, &pv);
            x->publish_in++;
            if (r < 0)
                return 0; /* the channel is closed */
            routed = 1;
            cron_stored = r > 0; /* a meta.log record to wait for */
        } else if (x) {
            exchange_route(x, m, pv.headers);
            routed = b->nroute > 0;
            x->publish_in++;
            x->publish_out += b->nroute;
            broker_enqueue_routed(b, m, &rejected);
        }
    }
    b->cnt.publish++;
    if (!routed && mandatory)
        write_return(ch, m, NO_ROUTE, "NO_ROUTE");
    if (!routed)
        mandatory ? b->cnt.return_unroutable++ : b->cnt.drop_unroutable++;
    int stored = cron_stored || store_appended(b->store) != appended; /* a record for it: publish, delayed, cron */
    if (ch->confirm) {
        ch->pub_seq++;
        if (stored || ch->ncwait)
            wait_for_store(ch, rejected, stored); /* confirmed once its record is synced */
        else if (rejected)
            send_nack(ch, ch->pub_seq); /* a full queue with x-overflow reject-publish */
        else
            confirm_ready(ch);
    }
    return stored;
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

/* The content header of the publish being assembled: checks the size and properties
 * (RabbitMQ's order and texts), then starts the message; the body follows in frames. */
void content_header(channel *ch, const frame *f) {
    assert(ch->expect == FRAME_HEADER && ch->pending && ch->pending->props_len == 0);
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
    /* The body grows as its frames arrive (content_body): a header alone costs little,
     * whatever size it declares. */
    message *m = message_new((slice){(const uint8_t *)msg_exchange(hdr), hdr->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(hdr), hdr->rkey_len}, props,
                             MIN(size, BODY_INITIAL_ROOM));
    message_unref(hdr);
    m->persistent = pv.delivery_mode == 2;
    if (pv.flags & PROP_EXPIRATION) {
        m->ttl = 0;
        for (size_t i = 0; i < pv.expiration.n; i++)
            m->ttl = m->ttl * 10 + (pv.expiration.p[i] - '0');
    }
    m->priority = pv.priority;
    if ((pv.flags & PROP_REPLY_TO) && slice_eqs(pv.reply_to, REPLY_TO)) {
        m = replyto_request(ch, m, (slice){msg_props(m) + (pv.reply_to.p - props.p), pv.reply_to.n});
        if (!m)
            return;
    }
    ch->pending = m;
    ch->pending_got = 0;
    ch->pending_size = size;
    ch->expect = FRAME_BODY;
}

/* The message being assembled is complete: routed now, or buffered in the transaction. */
void publish_complete(channel *ch) {
    message *m = ch->pending;
    assert(m && m->refs == 1 && ch->pending_got == ch->pending_size && m->body_len == ch->pending_size);
    ch->pending = NULL;
    ch->expect = 0;
    if (ch->tx) {
        if (ch->ntx == ch->captx) {
            ch->captx = ch->captx ? ch->captx * 2 : 16;
            ch->txops = xrealloc(ch->txops, ch->captx * sizeof *ch->txops);
        }
        ch->txops[ch->ntx++] = (txop){m, ch->mandatory};
        return;
    }
    publish_route(ch, m, ch->mandatory);
    message_unref(m);
}

/* A body frame of the message being assembled: appended, the room growing ×BODY_GROWTH as needed
 * (never beyond the declared size); the message completes when the declared size is in. */
void content_body(channel *ch, const frame *f) {
    message *m = ch->pending;
    uint64_t size = ch->pending_size;
    assert(m && m->refs == 1 && ch->expect == FRAME_BODY);
    if (ch->pending_got + f->size > size) {
        /* More body than the header declared: as RabbitMQ, the message never completes (it is
         * not routed) and the channel keeps waiting for body frames, so the next method is an
         * UNEXPECTED_FRAME error. */
        ch->pending_got = size + 1;
        return;
    }
    if (ch->pending_got > size)
        return;
    if (ch->pending_got + f->size > m->body_len) {
        /* Grown ×8, not ×2: a 1 MiB body grows once (128 KiB → 1 MiB, 128 KiB copied) instead
         * of three times (896 KiB copied). The room stays within 8× what the client has sent. */
        uint64_t room = MAX(ch->pending_got + f->size, MIN(size, m->body_len * BODY_GROWTH));
        ch->pending = m = message_grow(m, room);
    }
    assert(ch->pending_got + f->size <= m->body_len && m->body_len <= size);
    memcpy(msg_body(m) + ch->pending_got, f->payload, f->size);
    ch->pending_got += f->size;
    if (ch->pending_got == size) {
        assert(m->body_len == size);
        publish_complete(ch);
    }
}


/* ---- confirm and tx ---- */

void confirm_select(channel *ch, rd *r) {
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

/* Applies the transaction as RabbitMQ does: the publishes in order, then the acks, nacks
 * and rejects. Returns 1 if it wrote persistent messages to the store, which commit-ok
 * must wait for (invariant 1 holds for tx.commit-ok as for confirms). */
static int tx_commit(channel *ch) {
    size_t n = ch->ntx;
    int stored = 0;
    ch->ntx = 0;
    for (size_t i = 0; i < n; i++) {
        stored |= publish_route(ch, ch->txops[i].m, ch->txops[i].mandatory);
        message_unref(ch->txops[i].m);
    }
    tx_settle(ch, 1);
    return stored;
}

/* tx.select, tx.commit (commit-ok once the store has synced what it wrote), tx.rollback. */
void tx_method(channel *ch, unsigned mid) {
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
        tx_settle(ch, 0);
        send_empty(ch, TX_ROLLBACK_OK);
    }
}


/* Drops the publish in assembly and the transaction, and takes the channel off the store's
 * waiters and the broker's confirm list (channel close). */
void publish_release(channel *ch) {
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
