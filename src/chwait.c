/* chwait.c — a channel method whose answer waits for the store, off the loop thread.
 *
 * A durable declare, bind or delete appends a meta.log record that the writer thread syncs
 * with the next group commit (store.h); its -ok goes out when that batch comes back, as a
 * publisher confirm does — or, if the sync failed, the change is undone and the channel is
 * closed with RESOURCE_ERROR, as when meta.log was written in the loop thread. A basic.get
 * whose next message is paged out waits for the store's helper thread to read it back.
 *
 * While one of its channels waits, the connection reads nothing more (as tx.commit does), so
 * no later method on that channel is answered first; the loop goes on serving every other
 * connection. A channel waits for one thing at a time. */
#include "channel_int.h"

#include <assert.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

/* Joins the store's waiter list and pauses the connection's input. */
static void park(channel *ch) {
    assert(ch->wait.kind != CW_NONE);
    if (!ch->in_waiters) {
        ch->in_waiters = 1;
        ch->next_waiter = ch->c->b->store_waiters;
        ch->c->b->store_waiters = ch;
    }
    ch->c->store_wait++;
    conn_update_input(ch->c);
}

/* Forgets the wait (its references) and lets the connection read again. */
static void unpark(channel *ch) {
    struct chwait *w = &ch->wait;
    if (w->q)
        queue_unref(w->q);
    free(w->names);
    *w = (struct chwait){0};
    ch->c->store_wait--;
    conn_update_input(ch->c);
}

void chwait_send_ok(channel *ch, unsigned okmid, uint32_t count) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, okmid);
    if (okmid == QUEUE_DELETE_OK)
        buf_u32(o, count);
    frame_end(o, m);
}

void chwait_meta(channel *ch, int kind, unsigned mid, unsigned okmid, int nowait, queue *q, slice a, slice b2,
                 slice key, slice args) {
    broker *b = ch->c->b;
    assert(ch->wait.kind == CW_NONE && b->store);
    struct chwait *w = &ch->wait;
    w->kind = (uint8_t)kind;
    w->nowait = (uint8_t)nowait;
    w->mid = mid;
    w->okmid = okmid;
    w->gen = store_gen(b->store);
    w->q = q;
    if (q)
        q->refs++;
    /* the names the change is undone by, if the sync fails: a, b2, key, args */
    size_t n = a.n + b2.n + key.n + args.n;
    w->names = xmalloc(n ? n : 1);
    uint8_t *p = w->names;
    slice *dst[4] = {&w->a, &w->b, &w->key, &w->args};
    slice src[4] = {a, b2, key, args};
    for (int i = 0; i < 4; i++) {
        if (src[i].n)
            memcpy(p, src[i].p, src[i].n);
        *dst[i] = (slice){p, src[i].n};
        p += src[i].n;
    }
    park(ch);
}

void chwait_get(channel *ch, queue *q, int no_ack) {
    assert(ch->wait.kind == CW_NONE);
    ch->wait = (struct chwait){.kind = CW_GET, .nowait = (uint8_t)no_ack, .q = q};
    q->refs++;
    park(ch);
}

/* The sync failed: undo the change as the loop-thread write used to. */
static void undo(channel *ch) {
    struct chwait *w = &ch->wait;
    if (w->kind == CW_QUEUE_DECLARE) {
        if (!w->q->deleted)
            queue_delete(w->q);
        channel_close_error(ch, RESOURCE_ERROR, QUEUE_DECLARE, "cannot store durable %s: the disk is full or failing",
                            rs("queue", w->a));
    } else if (w->kind == CW_EXCHANGE_DECLARE) {
        exchange *x = broker_exchange(ch->c->vh, w->a);
        if (x && !x->builtin) {
            x->durable = 0; /* nothing to un-store */
            broker_remove_exchange(x);
        }
        channel_close_error(ch, RESOURCE_ERROR, EXCHANGE_DECLARE, "cannot store durable %s: the disk is full or failing",
                            rs("exchange", w->a));
    } else if (w->kind == CW_BIND) {
        /* a: the source exchange; b: the destination queue (QUEUE_BIND) or exchange */
        exchange *src = broker_exchange(ch->c->vh, w->a);
        queue *q = w->mid == QUEUE_BIND ? broker_queue(ch->c->vh, w->b) : NULL;
        exchange *dstx = w->mid == QUEUE_BIND ? NULL : broker_exchange(ch->c->vh, w->b);
        if (q && q->deleted)
            q = NULL;
        binding *bd = src && (q || dstx) ? binding_find(src, q, dstx, w->key, w->args) : NULL;
        if (bd)
            binding_remove(bd);
        channel_close_error(ch, RESOURCE_ERROR, w->mid, "cannot store a durable binding: the disk is full or failing");
    } else if (!w->nowait) {
        /* a delete or unbind: done in memory whatever the disk said, as before */
        chwait_send_ok(ch, w->okmid, w->count);
    }
}

void channel_meta_synced(channel *ch, uint64_t gen, int ok) {
    struct chwait *w = &ch->wait;
    if (w->kind == CW_NONE || w->kind == CW_GET || w->gen > gen)
        return;
    if (!ok) {
        rs_vhost = ch_vhost(ch);
        undo(ch); /* channel_close_error releases the wait */
        if (ch->wait.kind != CW_NONE)
            unpark(ch);
        return;
    }
    if (!w->nowait) {
        if (w->kind == CW_QUEUE_DECLARE)
            send_declare_ok(ch, w->q);
        else
            chwait_send_ok(ch, w->okmid, w->count);
    }
    unpark(ch);
}

void channel_paged_in(channel *ch, queue *q) {
    struct chwait *w = &ch->wait;
    if (w->kind != CW_GET || w->q != q)
        return;
    int no_ack = w->nowait;
    q->refs++;
    unpark(ch);
    get_from(ch, q, no_ack);
    queue_unref(q);
}

void chwait_release(channel *ch) {
    if (ch->wait.kind != CW_NONE)
        unpark(ch);
}
