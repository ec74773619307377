/* mgmt_stats.c — the statistics behind the management API and /metrics: per-queue rate
 * history and publish-time marks (for the oldest message's age).
 *
 * The counters themselves are plain fields bumped on the hot paths (queue.cnt, b->cnt,
 * exchange publish_in/out). Once a second (mgmt.c's tick) a sampling round records
 * them in a short ring per queue, so a rate is (now - 5 s ago) / elapsed, as the
 * management plugin's default 5 s sample interval gives it.
 *
 * The oldest message's age: a queue entry is 32 bytes and has no room for a timestamp, so
 * the queue keeps marks (seq, time) — one per 250 ms in which something was published.
 * The head's publish time is the time of the last mark at or before its seq: exact to
 * 250 ms, never younger than the truth. When a queue has too many marks (a backlog hours
 * deep) every second one is dropped, which keeps that bound (older marks only). */
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "mgmt_stats.h"
#include "util.h"

#define MARK_MS 250
#define MAX_MARKS 8192

qstats *qstats_get(queue *q) {
    if (!q->st)
        q->st = xcalloc(1, sizeof *q->st);
    return q->st;
}

void qstats_free(queue *q) {
    if (!q->st)
        return;
    free(q->st->marks);
    free(q->st);
    q->st = NULL;
}

static void add_mark(qstats *st, uint64_t seq, uint64_t ms) {
    if (st->nmarks && ms / MARK_MS == st->last_mark_slot)
        return;
    st->last_mark_slot = ms / MARK_MS;
    if (st->head + st->nmarks == st->cap) {
        if (st->head) { /* slide the live marks to the front */
            memmove(st->marks, st->marks + st->head, st->nmarks * sizeof *st->marks);
            st->head = 0;
        }
        if (st->nmarks == MAX_MARKS) { /* keep every second one (coarser, still never younger) */
            size_t k = 0;
            for (size_t i = 0; i < st->nmarks; i += 2)
                st->marks[k++] = st->marks[i];
            st->nmarks = k;
        } else if (st->nmarks == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 8;
            st->marks = xrealloc(st->marks, st->cap * sizeof *st->marks);
        }
    }
    st->marks[st->head + st->nmarks++] = (struct pmark){seq, ms};
}

void qstats_published(queue *q) {
    qstats *st = qstats_get(q);
    add_mark(st, q->next_seq - 1, loop_now_ms(q->b->loop));
    q->cnt.last_activity_ms = loop_wall_ms(q->b->loop);
}

void qstats_recovered(queue *q, uint64_t seq, uint64_t published) {
    uint64_t wall = wall_ms(), mono = now_ms();
    uint64_t ago = wall > published ? wall - published : 0;
    qstats *st = qstats_get(q);
    uint64_t at = mono > ago ? mono - ago : 0;
    /* recovered copies come in seq order; their times may step back (clock changes): a mark
     * keeps the oldest time of its slot */
    if (st->nmarks && st->marks[st->head + st->nmarks - 1].ms > at)
        st->marks[st->head + st->nmarks - 1].ms = at;
    add_mark(st, seq, at);
}

/* The smallest seq among q's ready messages, or 0 with *any = 0. */
static uint64_t head_seq(const queue *q, int *any) {
    uint64_t best = UINT64_MAX;
    for (int l = 0; l < q->nlevels; l++) {
        const struct qlevel *lv = &q->levels[l];
        const qring *r = &lv->ready;
        if (r->len) {
            const qmsg *f = &r->blk[(r->bhead + r->head / QBLOCK) & (r->nblkcap - 1)][r->head % QBLOCK];
            if (f->seq < best)
                best = f->seq;
        }
        if (lv->requeued.len && lv->requeued.a[0].seq < best)
            best = lv->requeued.a[0].seq;
    }
    *any = best != UINT64_MAX;
    return *any ? best : 0;
}

uint64_t qstats_oldest_age_ms(queue *q, uint64_t now_mono) {
    int any;
    uint64_t hs = head_seq(q, &any);
    qstats *st = q->st;
    if (!any || !st || !st->nmarks)
        return 0;
    /* marks before the one covering the head are not needed any more */
    while (st->nmarks > 1 && st->marks[st->head + 1].seq <= hs)
        st->head++, st->nmarks--;
    uint64_t t = st->marks[st->head].ms;
    return now_mono > t ? now_mono - t : 0;
}

/* ---- rates ---- */

static void read_counters(queue *q, uint64_t *v) {
    const qcounters *c = &q->cnt;
    v[R_PUBLISH] = c->publish;
    v[R_DELIVER] = c->deliver;
    v[R_DELIVER_NO_ACK] = c->deliver_no_ack;
    v[R_GET] = c->get;
    v[R_GET_NO_ACK] = c->get_no_ack;
    v[R_GET_EMPTY] = c->get_empty;
    v[R_ACK] = c->ack;
    v[R_REDELIVER] = c->redeliver;
    v[R_DELIVER_GET] = c->deliver + c->deliver_no_ack + c->get + c->get_no_ack;
    v[R_MESSAGES] = q->nready + q->unacked;
    v[R_READY] = q->nready;
    v[R_UNACKED] = q->unacked;
}

void hist_push(rate_hist *h, uint64_t t, const uint64_t *v) {
    h->i = (h->i + 1) % RATE_SAMPLES;
    h->s[h->i].t = t;
    memcpy(h->s[h->i].v, v, sizeof h->s[h->i].v);
    if (h->n < RATE_SAMPLES)
        h->n++;
}

double hist_rate(const rate_hist *h, int k) {
    if (h->n < 2)
        return 0.0;
    const struct rsample *now = &h->s[h->i], *old = &h->s[(h->i + RATE_SAMPLES - (h->n - 1)) % RATE_SAMPLES];
    if (now->t <= old->t)
        return 0.0;
    return ((double)now->v[k] - (double)old->v[k]) * 1000.0 / (double)(now->t - old->t);
}

#define RESAMPLE_MS 500 /* a map walked again skips what it sampled this recently */

static int sampled_recently(const rate_hist *h, uint64_t now) {
    return h->n && now >= h->s[h->i].t && now - h->s[h->i].t < RESAMPLE_MS;
}

static void sample_queue(queue *q, uint64_t now) {
    qstats *st = qstats_get(q);
    if (sampled_recently(&st->rates, now))
        return;
    uint64_t v[R_N];
    read_counters(q, v);
    hist_push(&st->rates, now, v);
}

/* exchanges: publish_in and publish_out in the first two slots of their history */
static void sample_exchange(exchange *x, uint64_t now) {
    if (!x->rates)
        x->rates = xcalloc(1, sizeof *x->rates);
    if (sampled_recently(x->rates, now))
        return;
    uint64_t v[R_N] = {x->publish_in, x->publish_out};
    hist_push(x->rates, now, v);
}

void mgmt_stats_round_start(broker *b, stats_round *w) {
    *w = (stats_round){.active = 1, .vgen = b->vhosts.gen};
}

int mgmt_stats_round_step(broker *b, stats_round *w, uint64_t now, size_t budget) {
    if (!w->active)
        return 0;
    if (b->vhosts.gen != w->vgen) /* rehashed: from the first vhost again */
        *w = (stats_round){.active = 1, .vgen = b->vhosts.gen};
    while (budget) {
        size_t i = w->vi;
        map_entry *e, *f;
        if (!map_iter(&b->vhosts, &i, &e)) {
            w->active = 0;
            return 0;
        }
        if (i - 1 != w->vi) { /* the vhost of slot vi went: on with the next one */
            w->vi = i - 1;
            w->phase = 0;
            w->mgen = 0;
        }
        vhost *vh = e->val;
        map *m = w->phase == 0 ? &vh->queues : &vh->exchanges;
        if (m->gen != w->mgen) { /* new to this map, or it was rehashed (or replaced) */
            w->k = 0;
            w->mgen = m->gen;
        }
        int more = 1;
        while (budget && (more = map_iter(m, &w->k, &f))) {
            budget--;
            if (w->phase == 0)
                sample_queue(f->val, now);
            else
                sample_exchange(f->val, now);
        }
        if (!more) {
            w->mgen = 0;
            if (w->phase == 0) {
                w->phase = 1;
            } else {
                w->phase = 0;
                w->vi++;
            }
        }
    }
    return 1;
}

double xstats_rate(const exchange *x, int out) { return x->rates ? hist_rate(x->rates, out ? 1 : 0) : 0.0; }

double qstats_rate(queue *q, int k) { return q->st ? hist_rate(&q->st->rates, k) : 0.0; }
