/* queue.c — a queue: its ready messages, its consumers, and delivery to them.
 *
 * Ready messages live in a ring buffer in publish order (seq). A message that a consumer
 * gives back (nack/reject with requeue, channel closed) goes into a small min-heap on seq,
 * so it is delivered again before anything published after it: it keeps its place, as in
 * RabbitMQ. The next message is whichever of the two heads has the lower seq.
 *
 * Delivery is batched: publishing or acking only marks the queue dirty; queue_dispatch()
 * runs once per loop batch and hands out messages round-robin to consumers with credit. */
#include "broker.h"

#include <assert.h>
#include <stdlib.h>

#include "memacct.h"
#include "persist.h"
#include "util.h"

/* ---- ring of ready messages (blocks of QBLOCK entries) ---- */

static qmsg *ring_at(qring *r, size_t i) {
    size_t k = r->head + i;
    return &r->blk[(r->bhead + k / QBLOCK) & (r->nblkcap - 1)][k % QBLOCK];
}

static void ring_push(qring *r, qmsg m) {
    size_t k = r->head + r->len;
    if (k / QBLOCK == r->nblk) { /* a new block at the end */
        if (r->nblk == r->nblkcap) {
            size_t ncap = r->nblkcap ? r->nblkcap * 2 : 4;
            qmsg **a = xmalloc(ncap * sizeof *a);
            for (size_t i = 0; i < r->nblk; i++)
                a[i] = r->blk[(r->bhead + i) & (r->nblkcap - 1)];
            free(r->blk);
            r->blk = a;
            r->nblkcap = ncap;
            r->bhead = 0;
        }
        r->blk[(r->bhead + r->nblk) & (r->nblkcap - 1)] = xmalloc(QBLOCK * sizeof(qmsg));
        memacct_add(MEM_QUEUE_INDEX, QBLOCK * sizeof(qmsg));
        r->nblk++;
    }
    *ring_at(r, r->len) = m;
    r->len++;
}

static qmsg *ring_front(qring *r) { return r->len ? ring_at(r, 0) : NULL; }

static qmsg ring_pop(qring *r) {
    qmsg m = *ring_at(r, 0);
    r->head++;
    r->len--;
    r->base++;
    if (r->head == QBLOCK || r->len == 0) { /* the first block is done with */
        if (r->len == 0 && r->nblk == 1) {
            r->head = 0; /* keep one block for the next message */
        } else {
            free(r->blk[r->bhead]);
            memacct_sub(MEM_QUEUE_INDEX, QBLOCK * sizeof(qmsg));
            r->bhead = (r->bhead + 1) & (r->nblkcap - 1);
            r->nblk--;
            r->head = 0;
        }
    }
    return m;
}

static void ring_free(qring *r) {
    for (size_t i = 0; i < r->nblk; i++)
        free(r->blk[(r->bhead + i) & (r->nblkcap - 1)]);
    memacct_sub(MEM_QUEUE_INDEX, r->nblk * QBLOCK * sizeof(qmsg));
    free(r->blk);
    memset(r, 0, sizeof *r);
}

/* ---- heap of requeued messages ---- */

static void heap_push(qheap *h, qmsg m) {
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p].seq <= m.seq)
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = m;
}

static qmsg heap_pop(qheap *h) {
    qmsg top = h->a[0], last = h->a[--h->len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->a[c + 1].seq < h->a[c].seq)
            c++;
        if (h->a[c].seq >= last.seq)
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->len)
        h->a[i] = last;
    return top;
}

/* ---- queue ---- */

static void ttl_fired(loop_timer *t);
static void expiry_fired(loop_timer *t);
static int expire_head(queue *q);

static int64_t int_arg(slice args, const char *key, int64_t dflt) {
    fval v;
    return table_get(args, key, &v) && fval_is_int(&v) ? v.i : dflt;
}

queue *queue_new(vhost *vh, slice name, int durable, int exclusive, int auto_delete, conn *owner, slice args) {
    queue *q = xcalloc(1, sizeof *q);
    q->name = xstrndup((const char *)name.p, name.n);
    q->name_len = name.n;
    q->b = vh->b;
    q->vh = vh;
    q->refs = 1;
    q->durable = (uint8_t)durable;
    q->exclusive = (uint8_t)exclusive;
    q->auto_delete = (uint8_t)auto_delete;
    q->owner = exclusive ? owner : NULL;
    if (args.n) {
        q->args = xmalloc(args.n);
        memcpy(q->args, args.p, args.n);
        q->args_len = args.n;
    }
    /* Arguments were validated by the caller (channel.c, with RabbitMQ's error texts). */
    /* RabbitMQ accepts 0..255 (channel.c checks a declare; recovered arguments are clamped
     * like RabbitMQ's priorities/1 does); 0 is one level, as no argument. */
    int64_t prio = MIN(int_arg(args, "x-max-priority", 0), 255);
    q->nlevels = (uint16_t)(prio > 0 ? prio + 1 : 1);
    assert(q->nlevels >= 1 && q->nlevels <= 256);
    q->levels = xcalloc(q->nlevels, sizeof *q->levels);
    memacct_add(MEM_QUEUE_INDEX, q->nlevels * sizeof *q->levels);
    q->message_ttl = int_arg(args, "x-message-ttl", -1);
    q->max_length = int_arg(args, "x-max-length", -1);
    q->max_bytes = int_arg(args, "x-max-length-bytes", -1);
    q->expires_ms = int_arg(args, "x-expires", 0);
    fval v;
    if (table_get(args, "x-overflow", &v) && fval_is_str(&v))
        q->overflow = slice_eqs(v.s, "reject-publish")       ? OVERFLOW_REJECT_PUBLISH
                      : slice_eqs(v.s, "reject-publish-dlx") ? OVERFLOW_REJECT_PUBLISH_DLX
                                                              : OVERFLOW_DROP_HEAD;
    qtype_init(q, args);
    q->ttl_timer.fn = ttl_fired;
    q->expiry_timer.fn = expiry_fired;
    queue_touch(q);
    return q;
}

/* A copy leaves the queue for good: the store notes it (a deleted queue's copies need no
 * record: the queue's deletion covers them). A copy that could not be read back from the
 * log leaves its record there, counted live, for the next recovery to find. */
static void gone(queue *q, qmsg *qm) {
    if (qm->paged == PAGED_UNREADABLE)
        return;
    if (qm->paged)
        store_page_release(q->b->store, qm->loc);
    if (qm->stored) {
        if (q->deleted)
            persist_forget(q->b->store, qm);
        else
            persist_settle(q->b->store, q, qm);
    }
}

static void drop_all_ready(queue *q) {
    for (int l = 0; l < q->nlevels; l++) {
        struct qlevel *lv = &q->levels[l];
        while (lv->ready.len) {
            qmsg qm = ring_pop(&lv->ready);
            gone(q, &qm);
            if (!qm.paged)
                message_unref(qm.m);
        }
        while (lv->requeued.len) {
            qmsg qm = heap_pop(&lv->requeued);
            gone(q, &qm);
            message_unref(qm.m);
        }
    }
    q->nready = 0;
    q->ready_bytes = 0;
}

void queue_unref(queue *q) {
    if (--q->refs > 0)
        return;
    drop_all_ready(q);
    for (int l = 0; l < q->nlevels; l++) {
        ring_free(&q->levels[l].ready);
        free(q->levels[l].requeued.a);
    }
    memacct_sub(MEM_QUEUE_INDEX, q->nlevels * sizeof *q->levels);
    free(q->levels);
    free(q->retry_delays);
    dedup_free(q);
    qstats_free(q);
    free(q->consumers);
    free(q->bindings);
    free(q->args);
    free(q->name);
    free(q);
}

/* The level a message belongs to: its priority, capped at the queue's maximum. */
static struct qlevel *level_of(queue *q, const message *m) {
    int l = m->priority < q->nlevels ? m->priority : q->nlevels - 1;
    assert(l >= 0 && l < q->nlevels);
    return &q->levels[l];
}

/* The next message in delivery order: the highest non-empty level, and within it the lower
 * seq of the ring's head and the requeue heap's top. */
static qmsg *peek(queue *q, struct qlevel **lvp, int *from_heap) {
    for (int l = q->nlevels - 1; l >= 0; l--) {
        struct qlevel *lv = &q->levels[l];
        qmsg *r = ring_front(&lv->ready);
        if (lv->requeued.len && (!r || lv->requeued.a[0].seq < r->seq)) {
            *lvp = lv, *from_heap = 1;
            return &lv->requeued.a[0];
        }
        if (r) {
            *lvp = lv, *from_heap = 0;
            return r;
        }
    }
    return NULL;
}

#define PAGE_AHEAD 512 /* paged messages read back at once, and kept in memory at the head */

static int cmp_req(const void *a, const void *b) {
    uint64_t x = ((const page_req *)a)->loc, y = ((const page_req *)b)->loc;
    return x < y ? -1 : x > y;
}

/* A read started by page_in_start came back (loop thread): every paged entry near the head
 * of any level whose record was read gets its message (and gives its segment count back),
 * or, if it could not be read (logged by the store), becomes PAGED_UNREADABLE; messages
 * whose entry left the queue meanwhile are dropped. Then expiry, delivery and waiting
 * basic.gets resume. reqs is sorted by location. */
static void paged_in(void *ctx, page_req *reqs, size_t n) {
    queue *q = ctx;
    assert(q->pg_reading);
    q->pg_reading = 0;
    for (int l = 0; l < q->nlevels && !q->deleted; l++) {
        qring *r = &q->levels[l].ready;
        /* entries only move towards the head: those asked for are still near it */
        for (size_t i = 0; i < r->len && i < PAGE_AHEAD; i++) {
            qmsg *e = ring_at(r, i);
            if (e->paged != PAGED_OUT)
                continue;
            page_req key = {.loc = e->loc};
            page_req *k = bsearch(&key, reqs, n, sizeof *reqs, cmp_req);
            if (!k)
                continue;
            if (k->m) {
                store_page_release(q->b->store, e->loc);
                e->m = k->m;
                k->m = NULL;
                e->paged = PAGED_NO;
            } else {
                e->paged = PAGED_UNREADABLE;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (reqs[i].m)
            message_unref(reqs[i].m);
    if (!q->deleted) {
        expire_head(q);
        if (q->nconsumers)
            queue_mark_dirty(q);
    }
    broker_paged_in(q->b, q);
    queue_unref(q);
}

/* Starts reading back the paged messages among the first PAGE_AHEAD of lv's ring on the
 * store's helper thread (one read per queue at a time; it holds a reference to the queue). */
static void page_in_start(queue *q, struct qlevel *lv) {
    if (q->pg_reading || !q->b->store)
        return;
    page_req *reqs = xmalloc(PAGE_AHEAD * sizeof *reqs);
    size_t n = 0;
    for (size_t i = 0; i < lv->ready.len && i < PAGE_AHEAD; i++) {
        qmsg *e = ring_at(&lv->ready, i);
        if (e->paged == PAGED_OUT)
            reqs[n++] = (page_req){e->loc, (uint32_t)MIN(pg_size_decode(e->pg_size), UINT32_MAX), NULL, NULL};
    }
    if (!n || store_page_read_async(q->b->store, reqs, n, paged_in, q) < 0) {
        free(reqs);
        return;
    }
    q->pg_reading = 1;
    q->refs++;
}

/* Reads back the paged messages near the head of lv at once, in the loop thread: only for
 * the rare paths that cannot wait (x-max-length drop-head, dead-letter redrive). */
static void page_in_now(queue *q, struct qlevel *lv) {
    qmsg *v[PAGE_AHEAD];
    size_t n = 0;
    for (size_t i = 0; i < lv->ready.len && i < PAGE_AHEAD; i++) {
        qmsg *e = ring_at(&lv->ready, i);
        if (e->paged == PAGED_OUT)
            v[n++] = e;
    }
    if (n)
        persist_page_read(q->b->store, v, n);
}

/* Takes the next message (peeked from lv), its body in memory. Returns 1 with it in out; 0
 * if it was a paged message that could not be read back: it is gone from the queue
 * (logged; its record stays on disk for recovery); -1 if its body is being read back (the
 * queue resumes delivery when it is in: paged_in). With now set, a paged head is read back
 * in the loop thread instead. Reading ahead: when the ring's entry half a read-ahead from
 * the head is paged, the next read starts before the head gets there. */
static int take_ok(queue *q, struct qlevel *lv, int from_heap, qmsg *out, int now) {
    if (!from_heap && ring_front(&lv->ready)->paged == PAGED_OUT) {
        if (now) {
            page_in_now(q, lv);
        } else {
            page_in_start(q, lv);
            return -1;
        }
    }
    qmsg m = from_heap ? heap_pop(&lv->requeued) : ring_pop(&lv->ready);
    q->nready--;
    if (!q->pg_reading && lv->ready.len > PAGE_AHEAD / 2 && ring_at(&lv->ready, PAGE_AHEAD / 2)->paged == PAGED_OUT)
        page_in_start(q, lv);
    if (m.paged) {
        gone(q, &m);
        return 0;
    }
    q->ready_bytes -= m.m->body_len;
    *out = m;
    return 1;
}

/* A message leaves the queue without being acknowledged: expired, dropped by a length
 * limit, or rejected. It is dead-lettered if the queue says where to. */
static void discard(queue *q, qmsg qm, const char *reason) {
    if (qm.stored && !qm.paged && !q->deleted) {
        deadletter_copy(q, qm, reason); /* settled once the dead letter is on disk */
        return;
    }
    gone(q, &qm);
    deadletter(q, qm.m, reason);
}

void queue_reject(queue *q, qmsg qm) {
    /* The retry's own record (delayed.c) is synced before this copy's settle record is
     * written, so a crash between the two can duplicate the message but never lose it. */
    uint64_t appended = store_appended(q->b->store);
    if (q->nretry && !q->deleted && retry_schedule(q, qm.m)) {
        if (qm.stored && !qm.paged && store_appended(q->b->store) != appended) {
            deadletter_settle_later(q, qm);
            return;
        }
        gone(q, &qm);
        message_unref(qm.m);
        return;
    }
    discard(q, qm, "rejected");
}

slice queue_delivery_props(const queue *q, const qmsg *qm, buf *scratch) {
    slice props = {msg_props(qm->m), qm->m->props_len};
    if (!q || !q->quorum)
        return props;
    props_set_int_header(props, "x-delivery-count", 'l', qm->returns, scratch);
    return (slice){buf_head(scratch), scratch->len};
}

static void arm_ttl(queue *q) {
    struct qlevel *lv;
    int h;
    qmsg *head = peek(q, &lv, &h);
    if (head && head->expires_at)
        loop_timer_arm(q->b->loop, &q->ttl_timer, head->expires_at);
    else
        loop_timer_cancel(q->b->loop, &q->ttl_timer);
}

/* Drops expired messages at the head, as RabbitMQ does: a message expires when it reaches
 * the head of the queue past its time. Returns -1 if it stopped at an expired head whose
 * body is being read back (to dead-letter it; paged_in calls it again), else 0. */
static int expire_head(queue *q) {
    uint64_t now = now_ms();
    struct qlevel *lv;
    int h;
    qmsg *head;
    qmsg qm;
    int rc;
    while ((head = peek(q, &lv, &h)) && head->expires_at && head->expires_at <= now) {
        if ((rc = take_ok(q, lv, h, &qm, 0)) < 0)
            return -1;
        if (rc)
            discard(q, qm, "expired");
    }
    arm_ttl(q);
    return 0;
}

static void ttl_fired(loop_timer *t) {
    expire_head((queue *)((char *)t - offsetof(queue, ttl_timer)));
}

static void expiry_fired(loop_timer *t) {
    queue *q = (queue *)((char *)t - offsetof(queue, expiry_timer));
    if (q->nconsumers == 0 && !q->deleted) {
        log_info("queue '%s' expired after %lld ms unused (x-expires)", q->name, (long long)q->expires_ms);
        queue_delete(q);
    }
}

void queue_touch(queue *q) {
    if (q->expires_ms > 0 && !q->deleted)
        loop_timer_arm(q->b->loop, &q->expiry_timer, now_ms() + (uint64_t)q->expires_ms);
}

static int over_limit(const queue *q) {
    return (q->max_length >= 0 && (int64_t)q->nready > q->max_length) ||
           (q->max_bytes >= 0 && (int64_t)q->ready_bytes > q->max_bytes);
}

/* The message TTL in ms: the lower of the queue's x-message-ttl and the message's
 * expiration property; -1 if neither. */
static int64_t ttl_of(const queue *q, const message *m) {
    int64_t t = q->message_ttl;
    if (m->ttl >= 0 && (t < 0 || m->ttl < t))
        t = m->ttl;
    return t;
}

int queue_accepts(queue *q, message *m) {
    if (q->overflow != OVERFLOW_DROP_HEAD &&
        ((q->max_length >= 0 && (int64_t)q->nready >= q->max_length) ||
         (q->max_bytes >= 0 && (int64_t)(q->ready_bytes + m->body_len) > q->max_bytes))) {
        if (q->overflow == OVERFLOW_REJECT_PUBLISH_DLX)
            deadletter(q, message_ref(m), "maxlen");
        return -1;
    }
    /* A duplicate within x-deduplication-window: accepted (confirmed) but not enqueued. */
    if (q->dedup_window > 0 && dedup_seen(q, m))
        return 1;
    return 0;
}

void queue_recover(queue *q, qmsg qm) {
    if (qm.paged) { /* recovered paged out (store.c): returns holds its priority until here */
        int l = qm.returns < q->nlevels ? qm.returns : q->nlevels - 1;
        qm.returns = 0;
        ring_push(&q->levels[l].ready, qm);
        q->nready++;
        q->ready_bytes += pg_size_decode(qm.pg_size); /* about its body (such a queue has no x-max-length-bytes) */
    } else {
        ring_push(&level_of(q, qm.m)->ready, qm);
        q->nready++;
        q->ready_bytes += qm.m->body_len;
    }
    if (qm.expires_at && !q->ttl_timer.slot)
        arm_ttl(q);
}

void queue_publish(queue *q, message *m) {
    int64_t ttl = ttl_of(q, m);
    q->cnt.publish++;
    uint8_t stored = m->in_store && q->qid;
    if (ttl == 0) {
        /* TTL 0: delivered now to a consumer that can take it, or never (RabbitMQ). */
        qmsg qm = {.m = message_ref(m), .seq = q->next_seq++, .stored = stored};
        consumer *cs = q->nready == 0 ? queue_next_consumer(q) : NULL;
        if (cs)
            consumer_deliver(cs, qm);
        else
            discard(q, qm, "expired");
        return;
    }
    qmsg qm = {.m = message_ref(m), .seq = q->next_seq++, .expires_at = ttl > 0 ? now_ms() + (uint64_t)ttl : 0, .stored = stored};
    qstats_published(q);
    ring_push(&level_of(q, m)->ready, qm);
    q->nready++;
    q->ready_bytes += m->body_len;
    while (over_limit(q)) { /* x-overflow drop-head: the oldest go */
        struct qlevel *lv;
        int h;
        peek(q, &lv, &h);
        qmsg old;
        if (take_ok(q, lv, h, &old, 1) > 0)
            discard(q, old, "maxlen");
    }
    if (qm.expires_at && !q->ttl_timer.slot)
        arm_ttl(q);
    if (q->nconsumers)
        queue_mark_dirty(q);
}

static int pop(queue *q, qmsg *out, int now) {
    struct qlevel *lv;
    int h;
    qmsg *head = peek(q, &lv, &h);
    if (head && head->expires_at) {
        if (expire_head(q) < 0)
            return -1; /* an expired head is being read back to be dead-lettered */
        head = peek(q, &lv, &h);
    }
    while (head) {
        int rc = take_ok(q, lv, h, out, now);
        assert(rc <= 0 || (out->m && out->paged == PAGED_NO && out->m->refs > 0));
        if (rc)
            return rc;
        head = peek(q, &lv, &h);
    }
    assert(q->nready == 0);
    return 0;
}

int queue_pop(queue *q, qmsg *out) { return pop(q, out, 0); }

int queue_pop_now(queue *q, qmsg *out) { return pop(q, out, 1); }

void queue_requeue(queue *q, qmsg qm) {
    if (q->deleted) {
        gone(q, &qm);
        message_unref(qm.m);
        return;
    }
    /* Every return counts, a consumer's crash (channel or connection closed) as well as a
     * nack: a message returned more than x-delivery-limit times is a poison message. */
    qm.returns = count_up(qm.returns);
    if (q->delivery_limit >= 0 && q->delivery_limit < QMSG_COUNT_MAX && qm.returns > (uint64_t)q->delivery_limit) {
        discard(q, qm, "delivery_limit");
        return;
    }
    queue_putback(q, qm);
}

void queue_putback(queue *q, qmsg qm) {
    heap_push(&level_of(q, qm.m)->requeued, qm);
    q->nready++;
    q->ready_bytes += qm.m->body_len;
    if (qm.expires_at)
        arm_ttl(q);
    if (q->nconsumers)
        queue_mark_dirty(q);
}

void queue_settle(queue *q, qmsg qm) {
    gone(q, &qm);
    message_unref(qm.m);
}

size_t queue_purge(queue *q) {
    size_t n = queue_ready_count(q);
    drop_all_ready(q);
    arm_ttl(q);
    return n;
}

void queue_add_consumer(queue *q, consumer *c) {
    if (q->nconsumers == q->capconsumers) {
        q->capconsumers = q->capconsumers ? q->capconsumers * 2 : 4;
        q->consumers = xrealloc(q->consumers, q->capconsumers * sizeof *q->consumers);
    }
    /* Kept in descending priority order; a newcomer goes after its equals. */
    size_t at = q->nconsumers;
    while (at > 0 && q->consumers[at - 1]->priority < c->priority)
        at--;
    memmove(&q->consumers[at + 1], &q->consumers[at], (q->nconsumers - at) * sizeof *q->consumers);
    q->consumers[at] = c;
    q->nconsumers++;
    c->since = ++q->consumer_epoch;
    if (q->sac && !q->sac_active)
        q->sac_active = c;
    if (q->rr > at)
        q->rr++;
    q->had_consumer = 1;
    loop_timer_cancel(q->b->loop, &q->expiry_timer);
    queue_mark_dirty(q);
}

/* Removes a consumer; an auto-delete queue whose last consumer went is deleted, as
 * RabbitMQ does (only once it has had a consumer). */
void queue_remove_consumer(queue *q, consumer *c) {
    for (size_t i = 0; i < q->nconsumers; i++) {
        if (q->consumers[i] != c)
            continue;
        memmove(&q->consumers[i], &q->consumers[i + 1], (q->nconsumers - i - 1) * sizeof *q->consumers);
        q->nconsumers--;
        if (q->rr > i)
            q->rr--;
        break;
    }
    if (q->sac_active == c) { /* failover: the longest-registered consumer takes over */
        q->sac_active = NULL;
        for (size_t i = 0; i < q->nconsumers; i++)
            if (!q->sac_active || q->consumers[i]->since < q->sac_active->since)
                q->sac_active = q->consumers[i];
        if (q->sac_active)
            queue_mark_dirty(q);
    }
    if (q->nconsumers == 0 && q->auto_delete && q->had_consumer && !q->deleted) {
        queue_delete(q);
        return;
    }
    if (q->nconsumers == 0)
        queue_touch(q);
}

void queue_mark_dirty(queue *q) {
    if (q->dirty || q->deleted)
        return;
    q->dirty = 1;
    q->refs++; /* the dirty list holds a reference until dispatch */
    q->next_dirty = q->b->dirty;
    q->b->dirty = q;
}

/* The consumer for the next message: the highest priority group with a consumer that has
 * credit, round-robin within that group (RabbitMQ's consumer priorities). */
consumer *queue_next_consumer(queue *q) {
    if (q->sac) /* x-single-active-consumer: only the active one, even when it is full */
        return q->sac_active && consumer_can_take(q->sac_active) ? q->sac_active : NULL;
    size_t n = q->nconsumers;
    for (size_t i = 0; i < n;) {
        int32_t p = q->consumers[i]->priority;
        size_t j = i + 1;
        while (j < n && q->consumers[j]->priority == p)
            j++;
        size_t len = j - i, start = q->rr >= i && q->rr < j ? q->rr - i : 0;
        for (size_t k = 0; k < len; k++) {
            size_t idx = i + (start + k) % len;
            if (consumer_can_take(q->consumers[idx])) {
                q->rr = idx + 1;
                return q->consumers[idx];
            }
        }
        i = j;
    }
    return NULL;
}

/* Hands out ready messages to consumers that have credit, until the queue is empty or no
 * consumer can take more. */
void queue_dispatch(queue *q) {
    if (q->is_stream) {
        stream_dispatch(q);
        return;
    }
    while (q->nconsumers && queue_ready_count(q)) {
        consumer *cs = queue_next_consumer(q);
        if (!cs)
            return;
        qmsg qm;
        /* nready counts messages that expired since the last TTL timer, and paged ones
         * that may not read back: popping can find nothing after all; or a paged body is
         * being read back (paged_in marks the queue dirty again). */
        if (queue_pop(q, &qm) <= 0)
            return;
        consumer_deliver(cs, qm);
    }
}

size_t queue_delete(queue *q) {
    size_t n = queue_ready_count(q);
    q->deleted = 1;
    q->refs++; /* keep q alive while its consumers and bindings go */
    loop_timer_cancel(q->b->loop, &q->ttl_timer);
    loop_timer_cancel(q->b->loop, &q->expiry_timer);
    while (q->nconsumers)
        consumer_cancelled_by_queue(q->consumers[q->nconsumers - 1]);
    stream_destroy(q);
    while (q->nbindings)
        binding_remove(q->bindings[q->nbindings - 1]);
    drop_all_ready(q);
    broker_remove_queue(q);
    queue_unref(q);
    return n;
}

/* ---- paging ---- */

/* Pages out ready messages of one level from its cursor on, keeping the PAGE_AHEAD nearest
 * the head in memory. A message whose record is not written yet gets one (store.c) and is
 * paged on a later pass; the cursor stays at the first such message. */
static size_t page_level(queue *q, struct qlevel *lv, size_t max) {
    qring *r = &lv->ready;
    uint64_t pos = MAX(lv->pg_pos, r->base + PAGE_AHEAD), end = r->base + r->len, wait = 0;
    size_t looked = 0;
    for (; pos < end && looked < max; pos++, looked++) {
        qmsg *e = ring_at(r, (size_t)(pos - r->base));
        if (e->paged)
            continue;
        message *m = e->m;
        uint64_t loc;
        uint32_t len;
        if (store_page_out(q->b->store, m, &loc, &len)) {
            e->loc = loc;
            e->pg_size = pg_size_encode(len);
            e->paged = PAGED_OUT;
            message_unref(m);
        } else if (!wait && !m->pg_never) {
            wait = pos;
        }
    }
    lv->pg_pos = wait ? wait : pos;
    return looked;
}

void queue_page_out(queue *q, size_t max) {
    if (q->deleted || !q->b->store)
        return;
    for (int l = 0; l < q->nlevels && max; l++) {
        size_t n = page_level(q, &q->levels[l], max);
        max -= MIN(n, max);
    }
}

size_t queue_paged_count(const queue *q) {
    size_t n = 0;
    for (int l = 0; l < q->nlevels; l++) {
        qring *r = (qring *)&q->levels[l].ready;
        for (size_t i = 0; i < r->len; i++)
            n += ring_at(r, i)->paged != PAGED_NO;
    }
    return n;
}

/* ---- compaction ---- */

/* Calls fn for every ready entry of q: each level's ring, then its requeue heap. fn may
 * change where an entry's record is (not its seq or its place). */
void queue_each_ready(queue *q, void (*fn)(void *ctx, queue *q, qmsg *qm), void *ctx) {
    for (int l = 0; l < q->nlevels; l++) {
        struct qlevel *lv = &q->levels[l];
        for (size_t i = 0; i < lv->ready.len; i++)
            fn(ctx, q, ring_at(&lv->ready, i));
        for (size_t i = 0; i < lv->requeued.len; i++)
            fn(ctx, q, &lv->requeued.a[i]);
    }
}

int queue_paged_back(queue *q, uint64_t seq, uint64_t loc, message *m) {
    if (q->deleted || !q->b->store)
        return 0;
    for (int l = 0; l < q->nlevels; l++) { /* each level's ring is in seq order */
        struct qlevel *lv = &q->levels[l];
        qring *r = &lv->ready;
        size_t lo = 0, hi = r->len;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            qmsg *e = ring_at(r, mid);
            if (e->seq < seq) {
                lo = mid + 1;
            } else if (e->seq > seq) {
                hi = mid;
            } else {
                if (e->paged != PAGED_OUT || e->loc != loc)
                    return 0;
                store_page_release(q->b->store, loc);
                e->m = m;
                e->paged = PAGED_NO;
                if (lv->pg_pos > r->base + mid) /* the pager looks at it again */
                    lv->pg_pos = r->base + mid;
                return 1;
            }
        }
    }
    return 0;
}
