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

#include <stdlib.h>

#include "util.h"

/* ---- ring of ready messages ---- */

static void ring_push(qring *r, qmsg m) {
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 16;
        qmsg *a = xmalloc(ncap * sizeof *a);
        for (size_t i = 0; i < r->len; i++)
            a[i] = r->a[(r->head + i) & (r->cap - 1)];
        free(r->a);
        r->a = a;
        r->cap = ncap;
        r->head = 0;
    }
    r->a[(r->head + r->len) & (r->cap - 1)] = m;
    r->len++;
}

static qmsg *ring_front(qring *r) { return r->len ? &r->a[r->head] : NULL; }

static qmsg ring_pop(qring *r) {
    qmsg m = r->a[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    if (r->len == 0 && r->cap > 1024) { /* a drained queue gives its memory back */
        free(r->a);
        r->a = NULL;
        r->cap = r->head = 0;
    }
    return m;
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

queue *queue_new(broker *b, slice name, int durable, int exclusive, int auto_delete, conn *owner, slice args) {
    queue *q = xcalloc(1, sizeof *q);
    q->name = xstrndup((const char *)name.p, name.n);
    q->name_len = name.n;
    q->b = b;
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
    return q;
}

static void drop_all_ready(queue *q) {
    qmsg m;
    while (queue_pop(q, &m))
        message_unref(m.m);
}

void queue_unref(queue *q) {
    if (--q->refs > 0)
        return;
    drop_all_ready(q);
    free(q->ready.a);
    free(q->requeued.a);
    free(q->consumers);
    free(q->bindings);
    free(q->args);
    free(q->name);
    free(q);
}

size_t queue_ready_count(const queue *q) { return q->ready.len + q->requeued.len; }

void queue_publish(queue *q, message *m) {
    qmsg qm = {message_ref(m), q->next_seq++, 0};
    ring_push(&q->ready, qm);
    q->ready_bytes += m->body_len;
    if (q->nconsumers)
        queue_mark_dirty(q);
}

int queue_pop(queue *q, qmsg *out) {
    qmsg *r = ring_front(&q->ready);
    if (q->requeued.len && (!r || q->requeued.a[0].seq < r->seq))
        *out = heap_pop(&q->requeued);
    else if (r)
        *out = ring_pop(&q->ready);
    else
        return 0;
    q->ready_bytes -= out->m->body_len;
    return 1;
}

void queue_requeue(queue *q, qmsg qm) {
    if (q->deleted) {
        message_unref(qm.m);
        return;
    }
    heap_push(&q->requeued, qm);
    q->ready_bytes += qm.m->body_len;
    if (q->nconsumers)
        queue_mark_dirty(q);
}

void queue_settle(queue *q, qmsg qm) {
    (void)q;
    message_unref(qm.m);
}

size_t queue_purge(queue *q) {
    size_t n = queue_ready_count(q);
    drop_all_ready(q);
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
    if (q->rr > at)
        q->rr++;
    q->had_consumer = 1;
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
    if (q->nconsumers == 0 && q->auto_delete && q->had_consumer && !q->deleted)
        queue_delete(q);
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
static consumer *next_consumer(queue *q) {
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
    while (q->nconsumers && queue_ready_count(q)) {
        consumer *cs = next_consumer(q);
        if (!cs)
            return;
        qmsg qm;
        queue_pop(q, &qm);
        consumer_deliver(cs, qm);
    }
}

size_t queue_delete(queue *q) {
    size_t n = queue_ready_count(q);
    q->deleted = 1;
    q->refs++; /* keep q alive while its consumers and bindings go */
    while (q->nconsumers)
        consumer_cancelled_by_queue(q->consumers[q->nconsumers - 1]);
    while (q->nbindings)
        binding_remove(q->bindings[q->nbindings - 1]);
    drop_all_ready(q);
    broker_remove_queue(q->b, q);
    queue_unref(q);
    return n;
}
