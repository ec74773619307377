/* persist.c — the broker's side of the store (see persist.h): the durability rules (which
 * exchanges, queues, bindings, messages and queue copies have records), the fields of broker
 * objects handed to the store as records, and the broker's store_owner. The store itself
 * (store.c and the layers under it) knows records only and never includes a broker header;
 * compact.c (which walks the broker's queues and channels) is broker-side too. */
#include "persist.h"

#include <stdlib.h>

#include "meta.h"
#include "record.h"
#include "util.h"

static slice sl(const void *p, size_t n) { return (slice){(const uint8_t *)p, n}; }

/* ---- definitions ---- */

static uint8_t exchange_flags(const exchange *x) {
    return (uint8_t)(x->durable | x->auto_delete << 1 | x->internal << 2);
}

static int binding_durable(const binding *bd) {
    return bd->src->durable && (bd->q ? bd->q->qid != 0 : bd->dstx->durable);
}

static slice vh_name(const vhost *vh) { return sl(vh->name, vh->name_len); }

static void put_binding(buf *b, uint64_t salt, const binding *bd, int add) {
    slice dst = bd->q ? sl(bd->q->name, bd->q->name_len) : sl(bd->dstx->name, bd->dstx->name_len);
    meta_put_binding(b, salt, add, vh_name(bd->src->vh), sl(bd->src->name, bd->src->name_len), bd->q == NULL, dst,
                     sl(bd->key, bd->key_len), sl(bd->args, bd->args_len));
}

/* Writes the broker's current durable definitions (meta.log compaction): users, vhosts and
 * permissions first (access_store.c), then each vhost's exchanges, queues and bindings. */
static void emit_definitions(void *ctx, buf *out, uint64_t salt) {
    broker *b = ctx;
    access_emit(b, out, salt);
    size_t j = 0;
    map_entry *v;
    while (map_iter(&b->vhosts, &j, &v)) {
        vhost *vh = v->val;
        size_t i = 0;
        map_entry *e;
        while (map_iter(&vh->exchanges, &i, &e)) {
            exchange *x = e->val;
            if (x->durable && !x->builtin)
                meta_put_exchange(out, salt, vh_name(vh), sl(x->name, x->name_len), (uint8_t)x->type,
                                  exchange_flags(x), sl(x->args, x->args_len));
        }
        i = 0;
        while (map_iter(&vh->queues, &i, &e)) {
            queue *q = e->val;
            if (q->qid)
                meta_put_queue(out, salt, q->qid, vh_name(vh), sl(q->name, q->name_len), q->auto_delete,
                               sl(q->args, q->args_len));
        }
        i = 0;
        while (map_iter(&vh->exchanges, &i, &e)) {
            exchange *x = e->val;
            for (size_t k = 0; k < x->nbindings; k++)
                if (binding_durable(x->bindings[k]))
                    put_binding(out, salt, x->bindings[k], 1);
        }
    }
    cron_emit(b, out, salt); /* after the exchanges they belong to */
}

/* Appends the records in b to the pending batch. Returns 1: the caller's answer waits for
 * broker_meta_synced of store_gen(). */
static int meta_write(store *s, buf *b) {
    store_meta_append(s, b);
    return 1;
}

int persist_exchange(store *s, exchange *x, int add) {
    if (!s || !x->durable || x->builtin)
        return 0;
    buf b;
    buf_init(&b);
    if (add)
        meta_put_exchange(&b, store_meta_salt(s), vh_name(x->vh), sl(x->name, x->name_len), (uint8_t)x->type,
                          exchange_flags(x), sl(x->args, x->args_len));
    else
        meta_put_exchange_del(&b, store_meta_salt(s), vh_name(x->vh), sl(x->name, x->name_len));
    return meta_write(s, &b);
}

int persist_queue(store *s, queue *q, int add) {
    if (!s || (add && (!q->durable || q->exclusive)) || (!add && !q->qid))
        return 0;
    buf b;
    buf_init(&b);
    if (add) {
        q->qid = store_new_qid(s);
        meta_put_queue(&b, store_meta_salt(s), q->qid, vh_name(q->vh), sl(q->name, q->name_len), q->auto_delete,
                       sl(q->args, q->args_len));
    } else {
        meta_put_queue_del(&b, store_meta_salt(s), q->qid);
    }
    return meta_write(s, &b);
}

int persist_binding(store *s, binding *bd, int add) {
    if (!s || !binding_durable(bd))
        return 0;
    buf b;
    buf_init(&b);
    put_binding(&b, store_meta_salt(s), bd, add);
    return meta_write(s, &b);
}

/* ---- messages ---- */

void persist_publish(store *s, message *m, const uint32_t *qids, const uint64_t *seqs, int n) {
    store_publish(s, m, qids, seqs, n);
}

void persist_forget(store *s, const qmsg *qm) {
    if (!s || !qm->stored)
        return;
    store_release(s, qmsg_seg(qm));
}

void persist_settle(store *s, const queue *q, const qmsg *qm) {
    if (!s || !qm->stored)
        return;
    store_settle(s, q->qid, qm->seq, qmsg_seg(qm));
}

/* The first delivery is logged (so recovery sets redelivered); on queues with a delivery
 * limit every delivery is, so that x-delivery-count survives a restart. */
void persist_delivered(store *s, const queue *q, const qmsg *qm) {
    if (s && qm->stored && (qm->deliveries == 0 || q->delivery_limit >= 0))
        store_delivered(s, q->qid, qm->seq);
}

/* The DELAYED record of e (its sid as it is). */
static rec_delayed delayed_record(const delayed_entry *e) {
    const message *m = e->m;
    rec_delayed d = {.sid = e->sid, .due = e->due, .to_queue = e->q != NULL, .qid = e->q ? e->q->qid : 0,
                     .exchange = sl(msg_exchange(m), m->exchange_len), .rkey = sl(msg_rkey(m), m->rkey_len),
                     .props = sl(msg_props(m), m->props_len), .body = sl(msg_body(m), m->body_len)};
    if (!e->q) {
        d.target = sl(e->x->name, e->x->name_len);
        d.vhost = sl(e->x->vh->name, e->x->vh->name_len);
    }
    return d;
}

void persist_delayed(store *s, delayed_entry *e) {
    rec_delayed d = delayed_record(e);
    e->sid = store_delayed(s, &d, &e->seg);
}

void persist_delayed_done(store *s, const delayed_entry *e) {
    if (!s || !e->sid)
        return;
    store_delayed_done(s, e->sid, e->seg);
}

size_t persist_move_delayed(store *s, delayed_entry *e) {
    rec_delayed d = delayed_record(e);
    return store_move_delayed(s, &d, &e->seg);
}

/* ---- paging ---- */

void persist_page_read(store *s, qmsg **qms, size_t n) {
    page_req *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (page_req){qms[i]->loc, (uint32_t)MIN(pg_size_decode(qms[i]->pg_size), UINT32_MAX), NULL, qms[i]};
    store_page_read(s, v, n);
    for (size_t i = 0; i < n; i++) {
        qmsg *qm = v[i].tag;
        if (v[i].m) {
            qm->m = v[i].m;
            qm->paged = PAGED_NO;
        } else {
            qm->paged = PAGED_UNREADABLE;
        }
    }
    free(v);
}

/* ---- the broker as the store's owner ---- */

static void owner_synced(void *ctx, uint64_t gen, int ok) { broker_store_synced(ctx, gen, ok); }

static void owner_meta_synced(void *ctx, uint64_t gen, int ok) { broker_meta_synced(ctx, gen, ok); }

static void owner_disk_alarm(void *ctx, int on) { broker_set_alarm(ctx, ALARM_DISK, on); }

int persist_open(broker *b, const recover_sink *sink, char *err, size_t errlen) {
    store_config cfg = {.segment_size = b->cfg.segment_size, .memory_budget = b->cfg.memory_budget,
                        .disk_free_limit = b->cfg.disk_free_limit, .loop = b->loop};
    store_owner owner = {.ctx = b, .synced = owner_synced, .meta_synced = owner_meta_synced,
                         .disk_alarm = owner_disk_alarm, .emit_definitions = emit_definitions};
    store_recovered r;
    store *s = store_open(&cfg, &owner, sink, b->cfg.data_dir, &r, err, errlen);
    if (!s)
        return -1;
    b->store = s;
    log_info("store: recovered %llu messages in %zu queues from %zu segments in %llu ms (%llu records, %llu corrupt)",
             (unsigned long long)r.messages, broker_queue_count(b), r.segments, (unsigned long long)r.ms,
             (unsigned long long)r.records, (unsigned long long)r.corrupt);
    return 0;
}

void persist_close(broker *b) {
    if (!b->store)
        return;
    store_close(b->store); /* b->store stays set while reads in flight hand their messages back */
    b->store = NULL;
}
