/* mgmt_api.c — the RabbitMQ-compatible management endpoints, on the loop thread: objects
 * turned into the management plugin's JSON shapes (3.10's field names), and the changes
 * that are not AMQP methods (vhosts, users, permissions, definitions). Declares, deletes,
 * bindings, publishes and gets go over AMQP from the HTTP thread (http_amqp.c), so they
 * get exactly the checks and answers an AMQP client gets; here they are only routed.
 *
 * Fields that exist only because RabbitMQ runs on Erlang (garbage_collection, reductions,
 * backing_queue_status) are present, so tools that read them find them, with Ferry's
 * nearest equivalent or zero. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/resource.h>
#include <unistd.h>

#include "memacct.h"
#include "mgmt_int.h"
#include "mgmt_snap.h"
#include "util.h"

/* Queues copied into a snapshot per loop turn: 0.5–2 µs each (cache misses), so a turn stays
 * well under 0.1 ms (1,000 a turn, after taking a reference on every queue in one turn, put
 * 1–2 ms stalls into row 6's latency: p99 0.15 → 2.4 ms under polling). */
#define SLICE_QUEUES 48

static slice sl(const char *s, size_t n) { return (slice){(const uint8_t *)s, n}; }

static json_t *gc_json(void) {
    return json_pack("{s:i,s:i,s:i,s:i,s:i}", "fullsweep_after", 65535, "max_heap_size", 0, "min_bin_vheap_size", 0,
                     "min_heap_size", 0, "minor_gcs", 0);
}

static void conn_name(const conn *c, char *out, size_t n) {
    int port = c->b->cfg.port;
    snprintf(out, n, "%s -> %s:%d", c->peer, c->loopback ? "127.0.0.1" : c->b->cfg.bind[0], port);
}

static void peer_split(const conn *c, char *host, size_t n, int *port) {
    snprintf(host, n, "%s", c->peer);
    char *colon = strrchr(host, ':');
    *port = 0;
    if (colon) {
        *port = atoi(colon + 1);
        *colon = 0;
    }
    if (host[0] == '[') { /* [::1]:port */
        memmove(host, host + 1, strlen(host));
        char *e = strchr(host, ']');
        if (e)
            *e = 0;
    }
}

/* ---- queues ---- */

static const char *queue_type(const queue *q) { return q->is_stream ? "stream" : q->quorum ? "quorum" : "classic"; }

static json_t *consumer_json(mctx *x, consumer *cs, int with_queue) {
    conn *c = cs->ch->c;
    char cname[200], chname[220], host[64];
    int port;
    conn_name(c, cname, sizeof cname);
    snprintf(chname, sizeof chname, "%s (%u)", cname, cs->ch->id);
    peer_split(c, host, sizeof host, &port);
    json_t *o = json_object();
    json_object_set_new(o, "ack_required", json_boolean(!cs->no_ack));
    int active = !cs->q || !cs->q->sac || cs->q->sac_active == cs;
    json_object_set_new(o, "active", json_boolean(active));
    json_object_set_new(o, "activity_status", json_string(active ? "up" : "waiting"));
    json_object_set_new(o, "arguments", mj_table(sl((const char *)cs->args, cs->args_len)));
    json_object_set_new(o, "channel_details",
                        json_pack("{s:s,s:s,s:s,s:i,s:s,s:i,s:s}", "connection_name", cname, "name", chname, "node",
                                  x->m->node, "number", cs->ch->id, "peer_host", host, "peer_port", port, "user",
                                  c->user ? c->user : ""));
    json_object_set_new(o, "consumer_tag", json_stringn_nocheck(cs->tag, cs->tag_len));
    json_object_set_new(o, "exclusive", json_boolean(cs->exclusive));
    json_object_set_new(o, "prefetch_count", json_integer(cs->prefetch));
    if (with_queue && cs->q)
        json_object_set_new(o, "queue", json_pack("{s:s,s:s}", "name", cs->q->name, "vhost", cs->q->vh->name));
    return o;
}

json_t *queue_json(mctx *x, queue *q, int detail) {
    json_t *o = json_object();
    uint64_t ready = q->nready, unacked = q->unacked;
    json_object_set_new(o, "arguments", mj_table(sl((const char *)q->args, q->args_len)));
    json_object_set_new(o, "auto_delete", json_boolean(q->auto_delete));
    json_object_set_new(
        o, "backing_queue_status",
        json_pack("{s:f,s:f,s:f,s:f,s:[s,s,i,i,s],s:I,s:s,s:I,s:I,s:i,s:i,s:i,s:I,s:s,s:i}", "avg_ack_egress_rate",
                  qstats_rate(q, R_ACK), "avg_ack_ingress_rate", qstats_rate(q, R_DELIVER), "avg_egress_rate",
                  qstats_rate(q, R_DELIVER_GET), "avg_ingress_rate", qstats_rate(q, R_PUBLISH), "delta", "delta",
                  "undefined", 0, 0, "undefined", "len", (json_int_t)ready, "mode", "default", "next_deliver_seq_id",
                  (json_int_t)(q->cnt.deliver + q->cnt.deliver_no_ack + q->cnt.get + q->cnt.get_no_ack),
                  "next_seq_id", (json_int_t)q->next_seq, "q1", 0, "q2", 0, "q3", 0, "q4", (json_int_t)ready,
                  "target_ram_count", "infinity", "version", 1));
    double util = q->nconsumers ? 1.0 : 0.0;
    json_object_set_new(o, "consumer_capacity", json_real(util));
    json_object_set_new(o, "consumer_utilisation", json_real(util));
    json_object_set_new(o, "consumers", json_integer((json_int_t)q->nconsumers));
    json_object_set_new(o, "durable", json_boolean(q->durable));
    json_object_set_new(o, "effective_policy_definition", json_object());
    json_object_set_new(o, "exclusive", json_boolean(q->exclusive));
    consumer *excl = NULL;
    for (size_t i = 0; i < q->nconsumers; i++)
        if (q->consumers[i]->exclusive)
            excl = q->consumers[i];
    json_object_set_new(o, "exclusive_consumer_tag", excl ? json_string(excl->tag) : json_null());
    json_object_set_new(o, "garbage_collection", gc_json());
    json_object_set_new(o, "head_message_timestamp", json_null());
    json_object_set_new(o, "idle_since", mj_time(q->cnt.last_activity_ms ? q->cnt.last_activity_ms : wall_ms()));
    uint64_t mem = sizeof *q + q->name_len + q->args_len + q->nlevels * sizeof *q->levels + ready * sizeof(qmsg);
    json_object_set_new(o, "memory", json_integer((json_int_t)mem));
    json_object_set_new(o, "message_bytes", json_integer((json_int_t)(q->ready_bytes + q->cnt.unacked_bytes)));
    json_object_set_new(o, "message_bytes_paged_out", json_integer(0));
    json_object_set_new(o, "message_bytes_persistent", json_integer(0));
    json_object_set_new(o, "message_bytes_ram", json_integer((json_int_t)(q->ready_bytes + q->cnt.unacked_bytes)));
    json_object_set_new(o, "message_bytes_ready", json_integer((json_int_t)q->ready_bytes));
    json_object_set_new(o, "message_bytes_unacknowledged", json_integer((json_int_t)q->cnt.unacked_bytes));
    json_t *ms = json_object();
    const qcounters *c = &q->cnt;
    mj_stat(ms, "ack", c->ack, qstats_rate(q, R_ACK));
    mj_stat(ms, "deliver", c->deliver, qstats_rate(q, R_DELIVER));
    mj_stat(ms, "deliver_get", c->deliver + c->deliver_no_ack + c->get + c->get_no_ack, qstats_rate(q, R_DELIVER_GET));
    mj_stat(ms, "deliver_no_ack", c->deliver_no_ack, qstats_rate(q, R_DELIVER_NO_ACK));
    mj_stat(ms, "get", c->get, qstats_rate(q, R_GET));
    mj_stat(ms, "get_empty", c->get_empty, qstats_rate(q, R_GET_EMPTY));
    mj_stat(ms, "get_no_ack", c->get_no_ack, qstats_rate(q, R_GET_NO_ACK));
    mj_stat(ms, "publish", c->publish, qstats_rate(q, R_PUBLISH));
    mj_stat(ms, "redeliver", c->redeliver, qstats_rate(q, R_REDELIVER));
    json_object_set_new(o, "message_stats", ms);
    mj_stat(o, "messages", ready + unacked, qstats_rate(q, R_MESSAGES));
    json_object_set_new(o, "messages_paged_out", json_integer(0));
    json_object_set_new(o, "messages_persistent", json_integer(0));
    json_object_set_new(o, "messages_ram", json_integer((json_int_t)(ready + unacked)));
    mj_stat(o, "messages_ready", ready, qstats_rate(q, R_READY));
    json_object_set_new(o, "messages_ready_ram", json_integer((json_int_t)ready));
    mj_stat(o, "messages_unacknowledged", unacked, qstats_rate(q, R_UNACKED));
    json_object_set_new(o, "messages_unacknowledged_ram", json_integer((json_int_t)unacked));
    json_object_set_new(o, "name", json_stringn_nocheck(q->name, q->name_len));
    json_object_set_new(o, "node", json_string(x->m->node));
    json_object_set_new(o, "operator_policy", json_null());
    if (q->exclusive && q->owner) {
        char host[64];
        int port;
        peer_split(q->owner, host, sizeof host, &port);
        char cname[200];
        conn_name(q->owner, cname, sizeof cname);
        json_object_set_new(o, "owner_pid_details", json_pack("{s:s,s:s,s:i}", "name", cname, "peer_host", host,
                                                              "peer_port", port));
    }
    json_object_set_new(o, "policy", json_null());
    json_object_set_new(o, "recoverable_slaves", json_null());
    mj_stat(o, "reductions", 0, 0.0);
    json_object_set_new(o, "single_active_consumer_tag",
                        q->sac && q->sac_active ? json_string(q->sac_active->tag) : json_null());
    json_object_set_new(o, "state", json_string("running"));
    json_object_set_new(o, "type", json_string(queue_type(q)));
    json_object_set_new(o, "vhost", json_string(q->vh->name));
    stream_queue_json(q, o); /* mgmt_stream.c */
    if (detail) {
        json_t *cd = json_array();
        for (size_t i = 0; i < q->nconsumers; i++)
            json_array_append_new(cd, consumer_json(x, q->consumers[i], 1));
        json_object_set_new(o, "consumer_details", cd);
        json_object_set_new(o, "deliveries", json_array());
        json_object_set_new(o, "incoming", json_array());
    }
    return o;
}

/* A list of queues, copied SLICE_QUEUES a turn into a flat snapshot (mgmt_snap.h) that the
 * HTTP thread sorts and turns into JSON. Each turn walks the vhosts' queue maps on from a
 * cursor (the vhost's name, a slot index); a queue map rehashed since (its gen changed) is
 * walked again from its start, dropping what this snapshot took from it. No turn touches
 * more than SLICE_QUEUES queues, so none stalls the loop. */
void qsnap_take(qsnaps *s, queue *q) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->a = xrealloc(s->a, s->cap * sizeof *s->a);
    }
    qsnap *o = &s->a[s->n++];
    memset(o, 0, sizeof *o);
    consumer *excl = NULL;
    for (size_t i = 0; i < q->nconsumers; i++)
        if (q->consumers[i]->exclusive)
            excl = q->consumers[i];
    consumer *sac = q->sac ? q->sac_active : NULL;
    char owner[200] = "", host[64] = "";
    int port = 0;
    if (q->exclusive && q->owner) {
        conn_name(q->owner, owner, sizeof owner);
        peer_split(q->owner, host, sizeof host, &port);
    }
    size_t vl = strlen(q->vh->name), el = excl ? excl->tag_len : 0, sl = sac ? sac->tag_len : 0;
    size_t ol = strlen(owner), hl = strlen(host);
    char *p = xmalloc(q->name_len + 1 + vl + 1 + q->args_len + el + 1 + sl + 1 + ol + 1 + hl + 1);
    o->name = p;
    memcpy(p, q->name, q->name_len + 1);
    p += q->name_len + 1;
    o->vhost = p;
    memcpy(p, q->vh->name, vl + 1);
    p += vl + 1;
    o->args = (uint8_t *)p;
    o->args_len = q->args_len;
    if (q->args_len)
        memcpy(p, q->args, q->args_len);
    p += q->args_len;
    if (excl) {
        o->excl_tag = p;
        memcpy(p, excl->tag, el);
        p[el] = 0;
        p += el + 1;
    }
    if (sac) {
        o->sac_tag = p;
        memcpy(p, sac->tag, sl);
        p[sl] = 0;
        p += sl + 1;
    }
    if (ol) {
        o->owner_name = p;
        memcpy(p, owner, ol + 1);
        p += ol + 1;
        o->owner_host = p;
        memcpy(p, host, hl + 1);
        o->owner_port = port;
    }
    o->durable = q->durable, o->auto_delete = q->auto_delete, o->exclusive = q->exclusive, o->quorum = q->quorum;
    o->type = queue_type(q);
    if (q->is_stream) { /* a stream's own fields (mgmt_stream.c), as text without the braces */
        json_t *ex = json_object();
        stream_queue_json(q, ex);
        char *t = json_object_size(ex) ? json_dumps(ex, JSON_COMPACT) : NULL;
        if (t) {
            size_t n = strlen(t);
            memmove(t, t + 1, n - 2);
            t[n - 2] = 0;
        }
        o->extra = t;
        json_decref(ex);
    }
    o->ready = q->nready, o->unacked = q->unacked, o->ready_bytes = q->ready_bytes;
    o->unacked_bytes = q->cnt.unacked_bytes, o->consumers = q->nconsumers, o->next_seq = q->next_seq;
    o->memory = sizeof *q + q->name_len + q->args_len + q->nlevels * sizeof *q->levels + q->nready * sizeof(qmsg);
    o->idle_since = q->cnt.last_activity_ms ? q->cnt.last_activity_ms : wall_ms();
    o->cnt = q->cnt;
    for (int k = 0; k < R_N; k++)
        o->rate[k] = qstats_rate(q, k);
}

typedef struct qlist {
    char **vhosts; /* names of the vhosts to list */
    size_t nv, vi; /* how many, which one now */
    size_t k;      /* slot cursor in that vhost's queue map */
    uint64_t mgen; /* that map's gen when the cursor was set */
    size_t start;  /* snapshot entries before this vhost's */
    int started;   /* k, mgen and start are set for vhosts[vi] */
} qlist;

static void qlist_free(qlist *l) {
    for (size_t i = 0; i < l->nv; i++)
        free(l->vhosts[i]);
    free(l->vhosts);
    free(l);
}

static void qlist_cont(broker *b, mgmt_req *r) {
    qlist *l = r->cont;
    size_t budget = r->status == -1 ? 0 : SLICE_QUEUES; /* -1: shutting down, just free */
    while (budget && l->vi < l->nv) {
        vhost *vh = map_get(&b->vhosts, l->vhosts[l->vi], strlen(l->vhosts[l->vi]));
        if (!vh) { /* deleted meanwhile: listed without its queues */
            if (l->started)
                qsnaps_truncate(r->snap, l->start);
            l->vi++;
            l->started = 0;
            continue;
        }
        if (!l->started || vh->queues.gen != l->mgen) {
            if (l->started) {
                log_debug("queue list: vhost %s's queue map was rehashed between turns: walked again", vh->name);
                qsnaps_truncate(r->snap, l->start);
            }
            l->started = 1;
            l->k = 0;
            l->mgen = vh->queues.gen;
            l->start = r->snap->n;
        }
        map_entry *f;
        int more = 1;
        while (budget && (more = map_iter(&vh->queues, &l->k, &f))) {
            queue *q = f->val;
            if (!q->deleted)
                qsnap_take(r->snap, q);
            budget--;
        }
        if (!more) {
            l->vi++;
            l->started = 0;
        }
    }
    if (r->status != -1 && l->vi < l->nv) {
        r->cont_fn = qlist_cont;
        return;
    }
    r->snap->taken_ms = now_ms();
    qlist_free(l);
    r->cont = NULL;
}

static void list_queues(mctx *x, vhost *only) {
    x->r->qlist = 1;
    uint64_t gen = x->b->cnt.queue_created + x->b->cnt.queue_deleted;
    /* the HTTP thread's snapshot is less than a second old, and no queue came or went since */
    if (!x->r->want_snap && x->r->snap_gen == gen)
        return;
    x->r->snap_gen = gen;
    qlist *l = xcalloc(1, sizeof *l);
    size_t cap = 0, i = 0;
    map_entry *e;
    while (map_iter(&x->b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        if ((only && vh != only) || !can_see_vhost(x, vh))
            continue;
        if (l->nv == cap) {
            cap = cap ? cap * 2 : 8;
            l->vhosts = xrealloc(l->vhosts, cap * sizeof *l->vhosts);
        }
        l->vhosts[l->nv++] = xstrndup(vh->name, strlen(vh->name));
    }
    /* (in map order: the HTTP thread sorts the snapshot by vhost and name; sorting 10,000
     * queues by name here took milliseconds of cache misses once a second) */
    x->r->snap = xcalloc(1, sizeof *x->r->snap);
    x->r->snap->gen = gen;
    x->r->cont = l;
    qlist_cont(x->b, x->r);
}

/* ---- exchanges and bindings ---- */

static json_t *exchange_json(mctx *x, exchange *ex) {
    json_t *o = json_object();
    json_object_set_new(o, "arguments", mj_table(sl((const char *)ex->args, ex->args_len)));
    json_object_set_new(o, "auto_delete", json_boolean(ex->auto_delete));
    json_object_set_new(o, "durable", json_boolean(ex->durable));
    json_object_set_new(o, "internal", json_boolean(ex->internal));
    json_t *ms = json_object();
    mj_stat(ms, "publish_in", ex->publish_in, xstats_rate(ex, 0));
    mj_stat(ms, "publish_out", ex->publish_out, xstats_rate(ex, 1));
    json_object_set_new(o, "message_stats", ms);
    json_object_set_new(o, "name", json_stringn_nocheck(ex->name, ex->name_len));
    json_object_set_new(o, "type", json_string(exchange_type_name(ex->type)));
    json_object_set_new(o, "user_who_performed_action", json_string(ex->builtin ? "rmq-internal" : "guest"));
    json_object_set_new(o, "vhost", json_string(ex->vh->name));
    (void)x;
    return o;
}

static json_t *binding_json(const char *vh, const char *src, size_t srcl, const char *dst, size_t dstl, int to_q,
                            const char *key, size_t klen, const uint8_t *args, size_t alen) {
    char pk[1024];
    mj_props_key(key, klen, args, alen, pk, sizeof pk);
    json_t *o = json_object();
    json_object_set_new(o, "source", json_stringn_nocheck(src, srcl));
    json_object_set_new(o, "vhost", json_string(vh));
    json_object_set_new(o, "destination", json_stringn_nocheck(dst, dstl));
    json_object_set_new(o, "destination_type", json_string(to_q ? "queue" : "exchange"));
    json_object_set_new(o, "routing_key", json_stringn_nocheck(key, klen));
    json_object_set_new(o, "arguments", mj_table(sl((const char *)args, alen)));
    json_object_set_new(o, "properties_key", json_string(pk));
    return o;
}

static json_t *bd_json(binding *bd) {
    return binding_json(bd->src->vh->name, bd->src->name, bd->src->name_len, bd->q ? bd->q->name : bd->dstx->name,
                        bd->q ? bd->q->name_len : bd->dstx->name_len, bd->q != NULL, bd->key, bd->key_len, bd->args,
                        bd->args_len);
}

static const char *jstr(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int cmp_json_name(const void *a, const void *b) {
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(jstr(x, "vhost"), jstr(y, "vhost"));
    return c ? c : strcmp(jstr(x, "name"), jstr(y, "name"));
}

/* RabbitMQ lists bindings in its table's order: source, routing key, destination kind
 * ("exchange" before "queue"), destination name. */
static int cmp_binding(const void *a, const void *b) {
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    static const char *keys[] = {"source", "routing_key", "destination_type", "destination"};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        int c = strcmp(jstr(x, keys[i]), jstr(y, keys[i]));
        if (c)
            return c;
    }
    return 0;
}

/* Sorts a[from..] in place. */
static void sort_bindings(json_t *a, size_t from) {
    size_t n = json_array_size(a);
    if (n <= from + 1)
        return;
    json_t **v = xmalloc((n - from) * sizeof *v);
    for (size_t i = from; i < n; i++)
        v[i - from] = json_incref(json_array_get(a, i));
    qsort(v, n - from, sizeof *v, cmp_binding);
    for (size_t i = from; i < n; i++)
        json_array_set_new(a, i, v[i - from]);
    free(v);
}

static json_t *sorted(json_t *a) {
    size_t n = json_array_size(a);
    json_t **v = xmalloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(a, i));
    qsort(v, n, sizeof *v, cmp_json_name);
    json_t *s = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(s, v[i]);
    free(v);
    json_decref(a);
    return s;
}

static void list_exchanges(mctx *x, vhost *only) {
    json_t *a = json_array();
    size_t i = 0, k;
    map_entry *e, *f;
    while (map_iter(&x->b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        if ((only && vh != only) || !can_see_vhost(x, vh))
            continue;
        k = 0;
        while (map_iter(&vh->exchanges, &k, &f))
            json_array_append_new(a, exchange_json(x, f->val));
    }
    x->r->json = sorted(a);
}

/* All bindings of a vhost as RabbitMQ lists them: the default exchange's implicit binding
 * of every queue first, then every exchange's bindings. */
static void vhost_bindings(vhost *vh, json_t *a) {
    size_t k = 0;
    map_entry *f;
    json_t *qs = json_array();
    while (map_iter(&vh->queues, &k, &f)) {
        queue *q = f->val;
        json_array_append_new(qs, binding_json(vh->name, "", 0, q->name, q->name_len, 1, q->name, q->name_len, NULL, 0));
    }
    size_t n = json_array_size(qs);
    json_t **v = xmalloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(qs, i);
    for (size_t i = 1; i < n; i++) /* by destination name */
        for (size_t j = i; j > 0 && strcmp(json_string_value(json_object_get(v[j - 1], "destination")),
                                           json_string_value(json_object_get(v[j], "destination"))) > 0;
             j--) {
            json_t *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++)
        json_array_append(a, v[i]);
    free(v);
    json_decref(qs);
    size_t from = json_array_size(a);
    k = 0;
    while (map_iter(&vh->exchanges, &k, &f)) {
        exchange *ex = f->val;
        for (size_t i = 0; i < ex->nbindings; i++)
            json_array_append_new(a, bd_json(ex->bindings[i]));
    }
    sort_bindings(a, from);
}

/* ---- connections, channels ---- */

static json_t *conn_json(mctx *x, conn *c) {
    char name[200], host[64];
    int port;
    conn_name(c, name, sizeof name);
    peer_split(c, host, sizeof host, &port);
    json_t *o = json_object();
    json_object_set_new(o, "auth_mechanism", json_string(c->mech));
    json_object_set_new(o, "channel_max", json_integer(c->channel_max));
    json_object_set_new(o, "channels", json_integer(c->open_channels));
    json_object_set_new(o, "client_properties", c->client_props ? mj_table(sl((const char *)c->client_props,
                                                                               c->client_props_len))
                                                                : json_object());
    json_object_set_new(o, "connected_at", json_integer((json_int_t)(wall_ms() - (now_ms() - c->created_ms))));
    json_object_set_new(o, "frame_max", json_integer(c->frame_max));
    json_object_set_new(o, "garbage_collection", gc_json());
    json_object_set_new(o, "host", json_string(c->loopback ? "127.0.0.1" : x->b->cfg.bind[0]));
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "node", json_string(x->m->node));
    json_object_set_new(o, "peer_cert_issuer", json_null());
    json_object_set_new(o, "peer_cert_subject", json_null());
    json_object_set_new(o, "peer_cert_validity", json_null());
    json_object_set_new(o, "peer_host", json_string(host));
    json_object_set_new(o, "peer_port", json_integer(port));
    json_object_set_new(o, "port", json_integer(x->b->cfg.port));
    json_object_set_new(o, "protocol", json_string("AMQP 0-9-1"));
    json_object_set_new(o, "recv_cnt", json_integer((json_int_t)c->recv_cnt));
    mj_stat(o, "recv_oct", c->recv_oct, 0.0);
    mj_stat(o, "reductions", 0, 0.0);
    json_object_set_new(o, "send_cnt", json_integer((json_int_t)c->send_cnt));
    mj_stat(o, "send_oct", c->send_oct, 0.0);
    json_object_set_new(o, "send_pend", json_integer((json_int_t)conn_out_pending(c)));
    json_object_set_new(o, "ssl", json_boolean(c->tls != NULL));
    json_object_set_new(o, "ssl_cipher", json_null());
    json_object_set_new(o, "ssl_hash", json_null());
    json_object_set_new(o, "ssl_key_exchange", json_null());
    json_object_set_new(o, "ssl_protocol", json_null());
    json_object_set_new(o, "state", json_string(c->blocked ? "blocked" : c->state == CONN_OPENED ? "running" : "starting"));
    json_object_set_new(o, "timeout", json_integer(c->heartbeat));
    json_object_set_new(o, "type", json_string("network"));
    json_object_set_new(o, "user", json_string(c->user ? c->user : ""));
    json_object_set_new(o, "user_who_performed_action", json_string(c->user ? c->user : ""));
    json_object_set_new(o, "vhost", json_string(c->vh ? c->vh->name : "/"));
    return o;
}

static int conn_visible(mctx *x, conn *c) {
    if (c->state != CONN_OPENED || !c->vh)
        return 0;
    if (x->admin || x->monitoring)
        return 1;
    return c->user && strcmp(c->user, x->u->name) == 0;
}

static json_t *chan_json(mctx *x, channel *ch) {
    conn *c = ch->c;
    char cname[200], name[220], host[64];
    int port;
    conn_name(c, cname, sizeof cname);
    snprintf(name, sizeof name, "%s (%u)", cname, ch->id);
    peer_split(c, host, sizeof host, &port);
    json_t *o = json_object();
    json_object_set_new(o, "acks_uncommitted", json_integer((json_int_t)ch->ntx_acks));
    json_object_set_new(o, "confirm", json_boolean(ch->confirm));
    json_object_set_new(o, "connection_details", json_pack("{s:s,s:s,s:i}", "name", cname, "peer_host", host,
                                                           "peer_port", port));
    json_object_set_new(o, "consumer_count", json_integer((json_int_t)ch->consumers.count));
    json_object_set_new(o, "garbage_collection", gc_json());
    json_object_set_new(o, "global_prefetch_count", json_integer(ch->prefetch_global));
    json_object_set_new(o, "idle_since", mj_time(wall_ms()));
    json_t *ms = json_object();
    static const char *names[] = {"ack", "confirm", "deliver", "deliver_get", "deliver_no_ack", "drop_unroutable",
                                  "get", "get_empty", "get_no_ack", "publish", "redeliver", "return_unroutable"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        mj_stat(ms, names[i], 0, 0.0);
    json_object_set_new(o, "message_stats", ms);
    json_object_set_new(o, "messages_unacknowledged", json_integer(ch->nunacked));
    json_object_set_new(o, "messages_uncommitted", json_integer((json_int_t)ch->ntx));
    json_object_set_new(o, "messages_unconfirmed", json_integer((json_int_t)(ch->pub_seq - ch->confirmed)));
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "node", json_string(x->m->node));
    json_object_set_new(o, "number", json_integer(ch->id));
    json_object_set_new(o, "pending_raft_commands", json_integer(0));
    json_object_set_new(o, "prefetch_count", json_integer(ch->prefetch));
    mj_stat(o, "reductions", 0, 0.0);
    json_object_set_new(o, "state", json_string(ch->closing ? "closing" : "running"));
    json_object_set_new(o, "transactional", json_boolean(ch->tx));
    json_object_set_new(o, "user", json_string(c->user ? c->user : ""));
    json_object_set_new(o, "user_who_performed_action", json_string(c->user ? c->user : ""));
    json_object_set_new(o, "vhost", json_string(c->vh ? c->vh->name : "/"));
    return o;
}

static conn *find_conn(mctx *x, const char *name) {
    for (conn *c = x->b->conns; c; c = c->next) {
        char n[200];
        conn_name(c, n, sizeof n);
        if (strcmp(n, name) == 0 && conn_visible(x, c))
            return c;
    }
    return NULL;
}

static void list_channels(mctx *x, conn *only, vhost *vh_only) {
    json_t *a = json_array();
    for (conn *c = x->b->conns; c; c = c->next) {
        if ((only && c != only) || !conn_visible(x, c) || (vh_only && c->vh != vh_only))
            continue;
        for (uint32_t i = 0; i < c->nchans; i++)
            if (c->chans[i])
                json_array_append_new(a, chan_json(x, c->chans[i]));
    }
    x->r->json = a;
}

static void list_consumers(mctx *x, vhost *only) {
    json_t *a = json_array();
    for (conn *c = x->b->conns; c; c = c->next) {
        if (!conn_visible(x, c) || (only && c->vh != only))
            continue;
        for (uint32_t i = 0; i < c->nchans; i++) {
            channel *ch = c->chans[i];
            if (!ch)
                continue;
            size_t it = 0;
            map_entry *e;
            while (map_iter(&ch->consumers, &it, &e)) {
                consumer *cs = e->val;
                if (cs->q)
                    json_array_append_new(a, consumer_json(x, cs, 1));
            }
        }
    }
    x->r->json = a;
}

/* ---- overview, nodes ---- */

static void totals(broker *b, vhost *only, uint64_t *ready, uint64_t *unacked, size_t *nq, size_t *ncons) {
    *ready = *unacked = 0;
    *nq = *ncons = 0;
    size_t i = 0, k;
    map_entry *e, *f;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        if (only && vh != only)
            continue;
        k = 0;
        while (map_iter(&vh->queues, &k, &f)) {
            queue *q = f->val;
            *ready += q->nready;
            *unacked += q->unacked;
            *ncons += q->nconsumers;
            (*nq)++;
        }
    }
}

static json_t *exchange_types(void) {
    json_t *a = json_array();
    static const char *t[][2] = {{"direct", "AMQP direct exchange, as per the AMQP specification"},
                                 {"fanout", "AMQP fanout exchange, as per the AMQP specification"},
                                 {"headers", "AMQP headers exchange, as per the AMQP specification"},
                                 {"topic", "AMQP topic exchange, as per the AMQP specification"},
                                 {"x-consistent-hash", "Consistent Hashing Exchange"},
                                 {"x-delayed-message", "Delayed Message Exchange"}};
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:b}", "name", t[i][0], "description", t[i][1], "enabled", 1));
    return a;
}

static json_t *listeners(mctx *x) {
    json_t *a = json_array();
    const config *cfg = &x->b->cfg;
    for (int i = 0; i < cfg->nbind; i++) {
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:{}}", "node", x->m->node, "protocol", "amqp",
                                           "ip_address", cfg->bind[i], "port", cfg->port, "socket_opts"));
        if (cfg->http_port)
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:{}}", "node", x->m->node, "protocol", "http",
                                               "ip_address", cfg->bind[i], "port", cfg->http_port, "socket_opts"));
        if (cfg->prometheus_port)
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:{}}", "node", x->m->node, "protocol",
                                               "http/prometheus", "ip_address", cfg->bind[i], "port",
                                               cfg->prometheus_port, "socket_opts"));
        if (x->b->tls)
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:{}}", "node", x->m->node, "protocol", "amqp/ssl",
                                               "ip_address", cfg->bind[i], "port", cfg->tls_port, "socket_opts"));
    }
    return a;
}

static json_t *churn(broker *b) {
    json_t *o = json_object();
    mj_stat(o, "channel_closed", b->cnt.chan_closed, 0.0);
    mj_stat(o, "channel_created", b->cnt.chan_created, 0.0);
    mj_stat(o, "connection_closed", b->cnt.conn_closed, 0.0);
    mj_stat(o, "connection_created", b->cnt.conn_created, 0.0);
    mj_stat(o, "queue_created", b->cnt.queue_created, 0.0);
    mj_stat(o, "queue_declared", b->cnt.queue_declared, 0.0);
    mj_stat(o, "queue_deleted", b->cnt.queue_deleted, 0.0);
    return o;
}

json_t *overview_json(mctx *x) {
    broker *b = x->b;
    mgmt *m = x->m;
    json_t *o = json_object();
    json_object_set_new(o, "management_version", json_string(FERRY_VERSION));
    json_object_set_new(o, "rates_mode", json_string("basic"));
    json_object_set_new(o, "sample_retention_policies",
                        json_pack("{s:[i,i,i,i],s:[i,i],s:[i]}", "global", 600, 3600, 28800, 86400, "basic", 600, 3600,
                                  "detailed", 600));
    json_object_set_new(o, "exchange_types", exchange_types());
    json_object_set_new(o, "product_version", json_string(FERRY_VERSION));
    json_object_set_new(o, "product_name", json_string("Ferry"));
    json_object_set_new(o, "rabbitmq_version", json_string("3.10.8"));
    json_object_set_new(o, "cluster_name", json_string(m->node));
    json_object_set_new(o, "erlang_version", json_string("none (C)"));
    json_object_set_new(o, "erlang_full_version", json_string("none: Ferry is written in C"));
    json_object_set_new(o, "release_series_support_status", json_string("supported"));
    json_object_set_new(o, "disable_stats", json_false());
    json_object_set_new(o, "enable_queue_totals", json_false());
    json_t *ms = json_object();
    const rate_hist *h = &m->overview;
    mj_stat(ms, "ack", b->cnt.ack, hist_rate(h, R_ACK));
    mj_stat(ms, "confirm", b->cnt.confirm, hist_rate(h, R_MESSAGES)); /* (mgmt.c: overview_sample's slots) */
    mj_stat(ms, "deliver", b->cnt.deliver, hist_rate(h, R_DELIVER));
    mj_stat(ms, "deliver_get", b->cnt.deliver + b->cnt.deliver_no_ack + b->cnt.get + b->cnt.get_no_ack,
            hist_rate(h, R_DELIVER_GET));
    mj_stat(ms, "deliver_no_ack", b->cnt.deliver_no_ack, hist_rate(h, R_DELIVER_NO_ACK));
    mj_stat(ms, "disk_reads", 0, 0.0);
    mj_stat(ms, "disk_writes", 0, 0.0);
    mj_stat(ms, "drop_unroutable", b->cnt.drop_unroutable, hist_rate(h, R_UNACKED));
    mj_stat(ms, "get", b->cnt.get, hist_rate(h, R_GET));
    mj_stat(ms, "get_empty", b->cnt.get_empty, hist_rate(h, R_GET_EMPTY));
    mj_stat(ms, "get_no_ack", b->cnt.get_no_ack, hist_rate(h, R_GET_NO_ACK));
    mj_stat(ms, "publish", b->cnt.publish, hist_rate(h, R_PUBLISH));
    mj_stat(ms, "redeliver", b->cnt.redeliver, hist_rate(h, R_REDELIVER));
    mj_stat(ms, "return_unroutable", b->cnt.return_unroutable, hist_rate(h, R_READY));
    json_object_set_new(o, "message_stats", ms);
    json_object_set_new(o, "churn_rates", churn(b));
    uint64_t ready, unacked;
    size_t nq, ncons;
    totals(b, NULL, &ready, &unacked, &nq, &ncons);
    json_t *qt = json_object();
    mj_stat(qt, "messages", ready + unacked, 0.0);
    mj_stat(qt, "messages_ready", ready, 0.0);
    mj_stat(qt, "messages_unacknowledged", unacked, 0.0);
    json_object_set_new(o, "queue_totals", qt);
    size_t nx = 0, nch = 0, ncon = 0, i = 0;
    map_entry *e;
    while (map_iter(&b->vhosts, &i, &e))
        nx += ((vhost *)e->val)->exchanges.count;
    for (conn *c = b->conns; c; c = c->next)
        if (c->state == CONN_OPENED)
            ncon++, nch += c->open_channels;
    json_object_set_new(o, "object_totals",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "channels", (json_int_t)nch, "connections", (json_int_t)ncon,
                                  "consumers", (json_int_t)ncons, "exchanges", (json_int_t)nx, "queues", (json_int_t)nq));
    json_object_set_new(o, "statistics_db_event_queue", json_integer(0));
    json_object_set_new(o, "node", json_string(m->node));
    json_object_set_new(o, "listeners", listeners(x));
    json_object_set_new(o, "contexts", json_array());
    return o;
}

static uint64_t disk_free(broker *b) {
    struct statvfs sv;
    if (statvfs(b->cfg.data_dir, &sv) < 0)
        return 0;
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static json_t *node_json(mctx *x) {
    broker *b = x->b;
    json_t *o = json_object();
    /* counters RabbitMQ's node has that Ferry has no equivalent of: zero, with their rates */
    static const char *zero_stats[] = {"context_switches", "gc_bytes_reclaimed", "gc_num", "io_read_avg_time",
                                       "io_read_bytes", "io_read_count", "io_reopen_count", "io_seek_avg_time",
                                       "io_seek_count", "io_sync_avg_time", "io_sync_count", "io_write_avg_time",
                                       "io_write_bytes", "io_write_count", "mnesia_disk_tx_count",
                                       "mnesia_ram_tx_count", "msg_store_read_count", "msg_store_write_count",
                                       "queue_index_read_count", "queue_index_write_count", "proc_used"};
    for (size_t i = 0; i < ARRAY_LEN(zero_stats); i++)
        mj_stat(o, zero_stats[i], 0, 0.0);
    json_t *ch = churn(b);
    json_object_update(o, ch);
    json_decref(ch);
    json_object_set_new(o, "applications", json_array());
    json_object_set_new(o, "auth_mechanisms",
                        json_pack("[{s:s,s:s,s:b},{s:s,s:s,s:b},{s:s,s:s,s:b}]", "name", "PLAIN", "description",
                                  "SASL PLAIN authentication mechanism", "enabled", 1, "name", "AMQPLAIN",
                                  "description", "QPid AMQPLAIN mechanism", "enabled", 1, "name", "EXTERNAL",
                                  "description", "TLS client certificate", "enabled", b->tls != NULL));
    json_object_set_new(o, "cluster_links", json_array());
    json_object_set_new(o, "config_files", json_array());
    json_object_set_new(o, "contexts", json_array());
    json_object_set_new(o, "db_dir", json_string(b->cfg.data_dir));
    mj_stat(o, "disk_free", disk_free(b), 0.0);
    json_object_set_new(o, "disk_free_alarm", json_boolean(b->alarms & ALARM_DISK));
    json_object_set_new(o, "disk_free_limit", json_integer((json_int_t)b->cfg.disk_free_limit));
    json_object_set_new(o, "enabled_plugins", json_pack("[s,s]", "rabbitmq_management", "rabbitmq_prometheus"));
    json_object_set_new(o, "exchange_types", exchange_types());
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    json_object_set_new(o, "fd_total", json_integer((json_int_t)rl.rlim_cur));
    mj_stat(o, "fd_used", b->nconns + 16, 0.0);
    json_object_set_new(o, "log_files", json_pack("[s]", "<stderr>"));
    json_object_set_new(o, "mem_alarm", json_boolean(b->alarms & ALARM_MEMORY));
    json_object_set_new(o, "mem_calculation_strategy", json_string("allocated"));
    json_object_set_new(o, "mem_limit", json_integer((json_int_t)b->cfg.memory_high_watermark));
    mj_stat(o, "mem_used", memacct_total(), 0.0);
    json_object_set_new(o, "metrics_gc_queue_length", json_object());
    json_object_set_new(o, "name", json_string(x->m->node));
    json_object_set_new(o, "net_ticktime", json_integer(60));
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    json_object_set_new(o, "os_pid", json_string(pid));
    json_object_set_new(o, "partitions", json_array());
    json_object_set_new(o, "proc_total", json_integer(1));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    json_object_set_new(o, "processors", json_integer(ncpu > 0 ? ncpu : 1));
    json_object_set_new(o, "ra_open_file_metrics", json_object());
    json_object_set_new(o, "rates_mode", json_string("basic"));
    json_object_set_new(o, "run_queue", json_integer(0));
    json_object_set_new(o, "running", json_true());
    json_object_set_new(o, "sockets_total", json_integer((json_int_t)rl.rlim_cur));
    mj_stat(o, "sockets_used", b->nconns, 0.0);
    json_object_set_new(o, "type", json_string("disc"));
    json_object_set_new(o, "uptime", json_integer((json_int_t)(now_ms() - x->m->started_ms)));
    return o;
}

/* ---- vhosts, users, permissions ---- */

static json_t *vhost_json(mctx *x, vhost *vh) {
    uint64_t ready, unacked;
    size_t nq, ncons;
    totals(x->b, vh, &ready, &unacked, &nq, &ncons);
    json_t *o = json_object();
    json_t *cs = json_object();
    json_object_set_new(cs, x->m->node, json_string("running"));
    json_object_set_new(o, "cluster_state", cs);
    json_object_set_new(o, "default_queue_type", json_string("undefined"));
    json_object_set_new(o, "description", json_string(strcmp(vh->name, "/") == 0 ? "Default virtual host" : ""));
    json_t *ms = json_object();
    /* a vhost's message counts: its queues' and exchanges' counters summed */
    qcounters c = {0};
    uint64_t pub = 0;
    size_t k = 0;
    map_entry *f;
    while (map_iter(&vh->queues, &k, &f)) {
        const qcounters *qc = &((queue *)f->val)->cnt;
        c.ack += qc->ack, c.deliver += qc->deliver, c.deliver_no_ack += qc->deliver_no_ack, c.get += qc->get;
        c.get_no_ack += qc->get_no_ack, c.get_empty += qc->get_empty, c.redeliver += qc->redeliver;
    }
    k = 0;
    while (map_iter(&vh->exchanges, &k, &f))
        pub += ((exchange *)f->val)->publish_in;
    mj_stat(ms, "ack", c.ack, 0.0);
    mj_stat(ms, "confirm", 0, 0.0);
    mj_stat(ms, "deliver", c.deliver, 0.0);
    mj_stat(ms, "deliver_get", c.deliver + c.deliver_no_ack + c.get + c.get_no_ack, 0.0);
    mj_stat(ms, "deliver_no_ack", c.deliver_no_ack, 0.0);
    mj_stat(ms, "drop_unroutable", 0, 0.0);
    mj_stat(ms, "get", c.get, 0.0);
    mj_stat(ms, "get_empty", c.get_empty, 0.0);
    mj_stat(ms, "get_no_ack", c.get_no_ack, 0.0);
    mj_stat(ms, "publish", pub, 0.0);
    mj_stat(ms, "redeliver", c.redeliver, 0.0);
    mj_stat(ms, "return_unroutable", 0, 0.0);
    json_object_set_new(o, "message_stats", ms);
    mj_stat(o, "recv_oct", 0, 0.0);
    mj_stat(o, "send_oct", 0, 0.0);
    mj_stat(o, "messages", ready + unacked, 0.0);
    mj_stat(o, "messages_ready", ready, 0.0);
    mj_stat(o, "messages_unacknowledged", unacked, 0.0);
    json_object_set_new(o, "metadata", json_pack("{s:s,s:[]}", "description",
                                                 strcmp(vh->name, "/") == 0 ? "Default virtual host" : "", "tags"));
    json_object_set_new(o, "name", json_string(vh->name));
    json_object_set_new(o, "tags", json_array());
    json_object_set_new(o, "tracing", json_false());
    return o;
}

static json_t *tags_json(const user *u) {
    json_t *a = json_array();
    const char *p = u->tags ? u->tags : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if (t > p)
            json_array_append_new(a, json_stringn(p, (size_t)(t - p)));
        p = e;
    }
    return a;
}

static json_t *user_json(const user *u) {
    buf b64;
    buf_init(&b64);
    auth_encode_b64(u->hash, u->hash_len, &b64);
    json_t *o = json_object();
    json_object_set_new(o, "name", json_stringn(u->name, u->name_len));
    json_object_set_new(o, "password_hash", json_stringn((const char *)buf_head(&b64), b64.len));
    json_object_set_new(o, "hashing_algorithm", json_string(auth_alg_name(u->alg)));
    json_object_set_new(o, "tags", tags_json(u));
    json_t *lim = json_object();
    if (u->max_connections >= 0)
        json_object_set_new(lim, "max-connections", json_integer(u->max_connections));
    if (u->max_channels >= 0)
        json_object_set_new(lim, "max-channels", json_integer(u->max_channels));
    json_object_set_new(o, "limits", lim);
    buf_free(&b64);
    return o;
}

static json_t *perm_json(const uperm *p) {
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", p->user, "vhost", p->vhost, "configure", p->p[0].src, "write",
                     p->p[1].src, "read", p->p[2].src);
}

static void list_perms(mctx *x, const char *user_only, const char *vhost_only) {
    json_t *a = json_array();
    size_t i = 0;
    map_entry *e;
    while (map_iter(&x->b->access->perms, &i, &e)) {
        const uperm *p = e->val;
        if ((user_only && strcmp(p->user, user_only) != 0) || (vhost_only && strcmp(p->vhost, vhost_only) != 0))
            continue;
        json_array_append_new(a, perm_json(p));
    }
    x->r->json = a;
}

static int need_admin(mctx *x) {
    if (x->admin)
        return 0;
    mgmt_error(x->r, 401, "not_authorised", "%s", "Not administrator user");
    return -1;
}

static void put_vhost(mctx *x) {
    if (need_admin(x) < 0)
        return;
    const char *name = x->r->seg[1];
    int existed = vhost_find(x->b, slice_str(name)) != NULL;
    vhost_get(x->b, slice_str(name));
    if (!existed) { /* RabbitMQ gives the user who creates a vhost full permissions on it */
        char err[256];
        access_set_perm(x->b->access, (slice){(const uint8_t *)x->u->name, x->u->name_len}, slice_str(name), ".*",
                        ".*", ".*", err, sizeof err);
        x->b->access->gen++;
        access_store_all(x->b);
    }
    x->r->status = existed ? 204 : 201;
}

static void put_user(mctx *x) {
    if (need_admin(x) < 0)
        return;
    json_t *j = body_json(x);
    if (!j)
        return;
    access_db *db = x->b->access;
    const char *name = x->r->seg[1];
    json_t *pw = json_object_get(j, "password"), *ph = json_object_get(j, "password_hash"),
           *tags = json_object_get(j, "tags");
    buf h;
    buf_init(&h);
    int alg = HASH_NONE;
    user *old = auth_user(db, slice_str(name));
    if (json_is_string(pw)) {
        auth_hash_password(db, slice_str(json_string_value(pw)), &alg, &h);
    } else if (json_is_string(ph)) {
        const char *an = json_string_value(json_object_get(j, "hashing_algorithm"));
        alg = an ? auth_alg_parse(an) : HASH_SHA256;
        if (alg < 0 || (json_string_length(ph) && auth_decode_hash(alg, json_string_value(ph), &h) < 0)) {
            buf_free(&h);
            json_decref(j);
            mgmt_error(x->r, 400, "bad_request", "%s", "invalid password_hash or hashing_algorithm");
            return;
        }
        if (!json_string_length(ph))
            alg = HASH_NONE;
    } else if (old) {
        alg = old->alg;
        buf_put(&h, old->hash, old->hash_len);
    } else if (!pw && !ph) {
        buf_free(&h);
        json_decref(j);
        mgmt_error(x->r, 400, "bad_request", "%s", "Must provide password or password_hash");
        return;
    }
    char tagbuf[1024] = "";
    if (json_is_string(tags)) {
        snprintf(tagbuf, sizeof tagbuf, "%s", json_string_value(tags));
    } else if (json_is_array(tags)) {
        size_t i;
        json_t *t;
        size_t n = 0;
        json_array_foreach(tags, i, t) if (json_is_string(t)) n += (size_t)snprintf(
            tagbuf + n, n < sizeof tagbuf ? sizeof tagbuf - n : 0, "%s%s", n ? "," : "", json_string_value(t));
    } else if (old && !tags) {
        snprintf(tagbuf, sizeof tagbuf, "%s", old->tags ? old->tags : "");
    }
    auth_put_user(db, slice_str(name), alg, buf_head(&h), h.len, tagbuf);
    buf_free(&h);
    json_decref(j);
    db->gen++;
    access_store_all(x->b);
    x->r->status = old ? 204 : 201;
}

static void put_perm(mctx *x) {
    if (need_admin(x) < 0)
        return;
    const char *vh = x->r->seg[1], *u = x->r->seg[2];
    if (!vhost_find(x->b, slice_str(vh))) {
        mgmt_error(x->r, 400, "bad_request", "%s", "vhost_or_user_not_found");
        return;
    }
    if (!auth_user(x->b->access, slice_str(u))) {
        mgmt_error(x->r, 400, "bad_request", "%s", "vhost_or_user_not_found");
        return;
    }
    json_t *j = body_json(x);
    if (!j)
        return;
    const char *c = json_string_value(json_object_get(j, "configure")),
               *w = json_string_value(json_object_get(j, "write")), *r = json_string_value(json_object_get(j, "read"));
    if (!c || !w || !r) {
        json_decref(j);
        mgmt_error(x->r, 400, "bad_request", "%s", "configure, write and read are required");
        return;
    }
    int existed = access_perm(x->b->access, slice_str(u), slice_str(vh)) != NULL;
    char err[256];
    if (access_set_perm(x->b->access, slice_str(u), slice_str(vh), c, w, r, err, sizeof err) < 0) {
        json_decref(j);
        mgmt_error(x->r, 400, "bad_request", "%s", err);
        return;
    }
    json_decref(j);
    x->b->access->gen++;
    access_store_all(x->b);
    x->r->status = existed ? 204 : 201;
}

static void delete_perm(mctx *x) {
    if (need_admin(x) < 0)
        return;
    access_db *db = x->b->access;
    buf k;
    buf_init(&k);
    buf_put(&k, x->r->seg[2], strlen(x->r->seg[2]));
    buf_u8(&k, 0);
    buf_put(&k, x->r->seg[1], strlen(x->r->seg[1]));
    uperm *p = map_get(&db->perms, (const char *)buf_head(&k), k.len);
    if (!p) {
        buf_free(&k);
        mgmt_error(x->r, 404, "Object Not Found", "Not Found");
        return;
    }
    map_del(&db->perms, (const char *)buf_head(&k), k.len);
    buf_free(&k);
    for (int i = 0; i < 3; i++) {
        if (p->p[i].compiled)
            regfree(&p->p[i].re);
        free(p->p[i].src);
    }
    free(p->user);
    free(p->vhost);
    free(p);
    db->gen++;
    access_store_all(x->b);
    ok_204(x->r);
}

static void delete_user(mctx *x) {
    if (need_admin(x) < 0)
        return;
    access_db *db = x->b->access;
    const char *name = x->r->seg[1];
    user *u = auth_user(db, slice_str(name));
    if (!u) {
        mgmt_error(x->r, 404, "Object Not Found", "Not Found");
        return;
    }
    /* its permissions go with it; connections logged in as it keep their pointer, so the
     * user record stays until they close: RabbitMQ closes them — so do we */
    for (conn *c = x->b->conns; c; c = c->next)
        if (c->u == u && c->state == CONN_OPENED)
            conn_close_error(c, CONNECTION_FORCED, 0, "user '%s' was deleted", name);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&db->perms, &i, &e)) {
        uperm *p = e->val;
        if (strcmp(p->user, name) == 0) {
            x->r->seg[1] = x->r->seg[1]; /* keep */
            buf k;
            buf_init(&k);
            buf_put(&k, p->user, strlen(p->user));
            buf_u8(&k, 0);
            buf_put(&k, p->vhost, strlen(p->vhost));
            map_del(&db->perms, (const char *)buf_head(&k), k.len);
            buf_free(&k);
            for (int j = 0; j < 3; j++) {
                if (p->p[j].compiled)
                    regfree(&p->p[j].re);
                free(p->p[j].src);
            }
            free(p->user);
            free(p->vhost);
            free(p);
            i = 0; /* the map changed: start again */
        }
    }
    auth_put_user(db, slice_str(name), HASH_NONE, NULL, 0, ""); /* no login from now on */
    user *dead = auth_user(db, slice_str(name));
    int in_use = 0;
    for (conn *c = x->b->conns; c; c = c->next)
        in_use |= c->u == dead;
    if (!in_use) {
        map_del(&db->users, dead->name, dead->name_len);
        free(dead->name);
        free(dead->hash);
        free(dead->tags);
        free(dead);
    }
    db->gen++;
    access_store_all(x->b);
    ok_204(x->r);
}

/* ---- definitions ---- */

static void get_definitions(mctx *x, vhost *only) {
    broker *b = x->b;
    json_t *o = json_object();
    json_object_set_new(o, "rabbit_version", json_string("3.10.8"));
    json_object_set_new(o, "rabbitmq_version", json_string("3.10.8"));
    json_object_set_new(o, "product_name", json_string("Ferry"));
    json_object_set_new(o, "product_version", json_string(FERRY_VERSION));
    json_t *users = json_array(), *vhosts = json_array(), *qs = json_array(), *xs = json_array(),
           *bs = json_array();
    size_t i = 0;
    map_entry *e, *f;
    while (!only && map_iter(&b->access->users, &i, &e))
        if (((user *)e->val)->alg != HASH_NONE)
            json_array_append_new(users, user_json(e->val));
    i = 0;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        if (only && vh != only)
            continue;
        json_array_append_new(vhosts, json_pack("{s:s}", "name", vh->name));
        size_t k = 0;
        while (map_iter(&vh->queues, &k, &f)) {
            queue *q = f->val;
            if (q->exclusive) /* RabbitMQ exports transient queues too, not exclusive ones */
                continue;
            json_array_append_new(qs, json_pack("{s:s,s:s,s:b,s:b,s:o}", "name", q->name, "vhost", vh->name,
                                                "durable", q->durable, "auto_delete", q->auto_delete, "arguments",
                                                mj_table(sl((const char *)q->args, q->args_len))));
        }
        k = 0;
        while (map_iter(&vh->exchanges, &k, &f)) {
            exchange *ex = f->val;
            if (ex->builtin)
                continue;
            json_array_append_new(xs, json_pack("{s:s,s:s,s:s,s:b,s:b,s:b,s:o}", "name", ex->name, "vhost", vh->name,
                                                "type", exchange_type_name(ex->type), "durable", ex->durable, "auto_delete",
                                                ex->auto_delete, "internal", ex->internal, "arguments",
                                                mj_table(sl((const char *)ex->args, ex->args_len))));
            for (size_t j = 0; j < ex->nbindings; j++) {
                binding *bd = ex->bindings[j];
                if (bd->q && bd->q->exclusive)
                    continue;
                json_t *bj = bd_json(bd);
                json_object_del(bj, "properties_key");
                json_array_append_new(bs, bj);
            }
        }
    }
    json_t *perms = json_array();
    i = 0;
    while (map_iter(&b->access->perms, &i, &e)) {
        const uperm *p = e->val;
        if (!only || strcmp(p->vhost, only->name) == 0)
            json_array_append_new(perms, perm_json(p));
    }
    if (!only) {
        json_object_set_new(o, "users", users);
        json_object_set_new(o, "vhosts", vhosts);
        json_object_set_new(o, "permissions", perms);
        json_object_set_new(o, "topic_permissions", json_array());
        json_object_set_new(o, "parameters", json_array());
        json_object_set_new(o, "global_parameters", json_array());
    } else {
        json_decref(users);
        json_decref(vhosts);
        json_decref(perms);
    }
    json_object_set_new(o, "policies", json_array());
    json_object_set_new(o, "queues", qs);
    json_object_set_new(o, "exchanges", xs);
    json_object_set_new(o, "bindings", bs);
    x->r->json = o;
}

static void post_definitions(mctx *x) {
    if (need_admin(x) < 0)
        return;
    json_error_t je;
    json_t *root = json_loadb(x->r->body ? x->r->body : "", x->r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        mgmt_error(x->r, 400, "bad_request", "%s", "not_json");
        return;
    }
    char err[512];
    if (definitions_load_json(x->b, root, "(POST /api/definitions)", err, sizeof err) < 0) {
        json_decref(root);
        mgmt_error(x->r, 400, "bad_request", "%s", err);
        return;
    }
    json_decref(root);
    x->b->access->gen++;
    access_store_all(x->b);
    ok_204(x->r);
}

/* ---- health checks ---- */

static void health(mctx *x) {
    mgmt_req *r = x->r;
    const char *what = r->nseg > 2 ? r->seg[2] : "";
    if (strcmp(what, "alarms") == 0 || strcmp(what, "local-alarms") == 0) {
        if (!x->b->alarms) {
            r->json = json_pack("{s:s}", "status", "ok");
            return;
        }
        json_t *al = json_array();
        if (x->b->alarms & ALARM_DISK)
            json_array_append_new(al, json_pack("{s:s,s:s}", "node", x->m->node, "resource", "disk"));
        if (x->b->alarms & ALARM_MEMORY)
            json_array_append_new(al, json_pack("{s:s,s:s}", "node", x->m->node, "resource", "memory"));
        r->json = json_pack("{s:s,s:s,s:o}", "status", "failed", "reason", "resource alarm(s) in effect", "alarms", al);
        r->status = 503;
    } else if (strcmp(what, "virtual-hosts") == 0) {
        r->json = json_pack("{s:s}", "status", "ok");
    } else if (strcmp(what, "node-is-quorum-critical") == 0 || strcmp(what, "node-is-mirror-sync-critical") == 0) {
        r->json = json_pack("{s:s,s:s}", "status", "ok", "reason", "single node cluster");
    } else if (strcmp(what, "port-listener") == 0 && r->nseg == 4) {
        int port = atoi(r->seg[3]);
        const config *c = &x->b->cfg;
        int ports[4] = {c->port, c->http_port, c->prometheus_port, x->b->tls ? c->tls_port : 0};
        json_t *all = json_array();
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (ports[i] > 0) {
                json_array_append_new(all, json_integer(ports[i]));
                found |= ports[i] == port;
            }
        if (found) {
            json_decref(all);
            r->json = json_pack("{s:s,s:i}", "status", "ok", "port", port);
        } else {
            r->json = json_pack("{s:i,s:o,s:s,s:s}", "missing", port, "ports", all, "reason", "No active listener",
                                "status", "failed");
            r->status = 503;
        }
    } else if (strcmp(what, "protocol-listener") == 0 && r->nseg == 4) {
        const char *p = r->seg[3];
        int ok = strcmp(p, "amqp") == 0 || strcmp(p, "amqp091") == 0 || strcmp(p, "amqp0-9-1") == 0 ||
                 strcmp(p, "http") == 0 || (strcmp(p, "amqps") == 0 && x->b->tls) ||
                 (strcmp(p, "prometheus") == 0 && x->b->cfg.prometheus_port);
        if (ok) {
            r->json = json_pack("{s:s,s:s}", "status", "ok", "protocol", p);
        } else {
            r->json = json_pack("{s:s,s:s,s:s}", "status", "failed", "reason", "No active listener", "missing", p);
            r->status = 503;
        }
    } else if (strcmp(what, "certificate-expiration") == 0) {
        r->json = json_pack("{s:s}", "status", "ok");
    } else {
        mgmt_error(r, 404, "Object Not Found", "Not Found");
    }
}

/* ---- routing ---- */

static int is(mgmt_req *r, int i, const char *s) { return r->nseg > i && strcmp(r->seg[i], s) == 0; }

static void bad_method(mgmt_req *r) {
    json_decref(r->json);
    r->json = NULL;
    r->status = 405;
}

/* Requests done over AMQP by the HTTP thread: the vhost must exist (RabbitMQ's 404). */
static int amqp_op(mctx *x, int vseg) {
    if (!seg_vhost(x, vseg))
        return 1;
    x->r->status = 0;
    x->r->amqp = 1;
    return 1;
}

int api_route(mctx *x) {
    mgmt_req *r = x->r;
    int m = r->method == HM_HEAD ? HM_GET : r->method;
    int n = r->nseg;
    if (n == 0)
        return 0;
    const char *s0 = r->seg[0];
    if (strcmp(s0, "overview") == 0 && n == 1) {
        if (m != HM_GET)
            return bad_method(r), 1;
        r->json = overview_json(x);
        return 1;
    }
    if (strcmp(s0, "cluster-name") == 0 && n == 1) {
        r->json = json_pack("{s:s}", "name", x->m->node);
        return 1;
    }
    if (strcmp(s0, "extensions") == 0 && n == 1) {
        r->json = json_array();
        return 1;
    }
    if (strcmp(s0, "whoami") == 0 && n == 1) {
        r->json = json_pack("{s:s,s:o}", "name", x->u->name, "tags", tags_json(x->u));
        return 1;
    }
    if (strcmp(s0, "nodes") == 0 && n <= 2) {
        if (n == 2 && strcmp(r->seg[1], x->m->node) != 0)
            return 0;
        r->json = n == 1 ? json_pack("[o]", node_json(x)) : node_json(x);
        return 1;
    }
    if (strcmp(s0, "queues") == 0) {
        vhost *vh = NULL;
        if (n >= 2 && !(vh = seg_vhost(x, 1)))
            return 1;
        if (n <= 2) {
            if (m != HM_GET)
                return bad_method(r), 1;
            list_queues(x, vh);
            return 1;
        }
        queue *q = broker_queue(vh, slice_str(r->seg[2]));
        if (!q && n == 4 && is(r, 3, "get") && m == HM_POST) /* RabbitMQ answers with basic.get's 404 */
            return amqp_op(x, 1);
        if (n == 3) {
            if (m == HM_GET) {
                if (!q)
                    return 0;
                r->json = queue_json(x, q, 1);
                return 1;
            }
            if (m == HM_PUT || m == HM_DELETE) {
                if (m == HM_DELETE && !q)
                    return 0;
                return amqp_op(x, 1);
            }
            return bad_method(r), 1;
        }
        if (!q)
            return 0;
        if (n == 4 && is(r, 3, "bindings")) {
            json_t *a = json_array();
            json_array_append_new(a, binding_json(vh->name, "", 0, q->name, q->name_len, 1, q->name, q->name_len,
                                                  NULL, 0));
            for (size_t i = 0; i < q->nbindings; i++)
                json_array_append_new(a, bd_json(q->bindings[i]));
            sort_bindings(a, 1);
            r->json = a;
            return 1;
        }
        if (n == 4 && is(r, 3, "contents")) {
            if (m != HM_DELETE)
                return bad_method(r), 1;
            return amqp_op(x, 1);
        }
        if (n == 4 && (is(r, 3, "get") || is(r, 3, "actions"))) {
            if (m != HM_POST)
                return bad_method(r), 1;
            return amqp_op(x, 1);
        }
        return 0;
    }
    if (strcmp(s0, "exchanges") == 0) {
        vhost *vh = NULL;
        if (n >= 2 && !(vh = seg_vhost(x, 1)))
            return 1;
        if (n <= 2) {
            if (m != HM_GET)
                return bad_method(r), 1;
            list_exchanges(x, vh);
            x->r->json = x->r->json;
            return 1;
        }
        exchange *ex = broker_exchange(vh, slice_str(strcmp(r->seg[2], "amq.default") == 0 ? "" : r->seg[2]));
        if (n == 3) {
            if (m == HM_GET) {
                if (!ex)
                    return 0;
                r->json = exchange_json(x, ex);
                json_object_set_new(r->json, "incoming", json_array());
                json_object_set_new(r->json, "outgoing", json_array());
                return 1;
            }
            if (m == HM_PUT || m == HM_DELETE) {
                if (m == HM_DELETE && !ex)
                    return 0;
                return amqp_op(x, 1);
            }
            return bad_method(r), 1;
        }
        if (!ex)
            return 0;
        if (n == 4 && is(r, 3, "publish")) {
            if (m != HM_POST)
                return bad_method(r), 1;
            return amqp_op(x, 1);
        }
        if (n == 5 && is(r, 3, "bindings") && (is(r, 4, "source") || is(r, 4, "destination"))) {
            json_t *a = json_array();
            if (is(r, 4, "source")) {
                for (size_t i = 0; i < ex->nbindings; i++)
                    json_array_append_new(a, bd_json(ex->bindings[i]));
            } else {
                for (size_t i = 0; i < ex->ninbound; i++)
                    json_array_append_new(a, bd_json(ex->inbound[i]));
            }
            sort_bindings(a, 0);
            r->json = a;
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "bindings") == 0) {
        vhost *vh = NULL;
        if (n >= 2 && !(vh = seg_vhost(x, 1)))
            return 1;
        if (n <= 2) {
            if (m != HM_GET)
                return bad_method(r), 1;
            json_t *a = json_array();
            size_t i = 0;
            map_entry *e;
            while (map_iter(&x->b->vhosts, &i, &e))
                if ((!vh || e->val == vh) && can_see_vhost(x, e->val))
                    vhost_bindings(e->val, a);
            r->json = a;
            return 1;
        }
        /* bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}] */
        if ((n == 6 || n == 7) && is(r, 2, "e") && (is(r, 4, "q") || is(r, 4, "e"))) {
            exchange *src = broker_exchange(vh, slice_str(strcmp(r->seg[3], "amq.default") == 0 ? "" : r->seg[3]));
            int toq = is(r, 4, "q");
            void *dst = toq ? (void *)broker_queue(vh, slice_str(r->seg[5])) : (void *)broker_exchange(vh, slice_str(r->seg[5]));
            if (!src || !dst)
                return 0;
            if (n == 6) {
                if (m == HM_POST)
                    return amqp_op(x, 1);
                if (m != HM_GET)
                    return bad_method(r), 1;
            } else if (m != HM_GET && m != HM_DELETE) {
                return bad_method(r), 1;
            }
            json_t *a = json_array();
            for (size_t i = 0; i < src->nbindings; i++) {
                binding *bd = src->bindings[i];
                if ((toq ? (void *)bd->q : (void *)bd->dstx) != dst)
                    continue;
                json_t *bj = bd_json(bd);
                if (n == 7 && !mj_props_key_matches(json_string_value(json_object_get(bj, "properties_key")), r->seg[6])) {
                    json_decref(bj);
                    continue;
                }
                json_array_append_new(a, bj);
            }
            if (n == 7) {
                if (!json_array_size(a)) {
                    json_decref(a);
                    return 0;
                }
                r->json = json_incref(json_array_get(a, 0));
                json_decref(a);
                if (m == HM_DELETE) { /* the HTTP thread unbinds what the properties key names */
                    r->amqp = 1;
                    r->status = 0;
                }
                return 1;
            }
            r->json = a;
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "connections") == 0) {
        if (n == 1) {
            json_t *a = json_array();
            for (conn *c = x->b->conns; c; c = c->next)
                if (conn_visible(x, c))
                    json_array_append_new(a, conn_json(x, c));
            r->json = a;
            return 1;
        }
        conn *c = find_conn(x, r->seg[1]);
        if (!c)
            return 0;
        if (n == 2) {
            if (m == HM_GET) {
                r->json = conn_json(x, c);
                return 1;
            }
            if (m == HM_DELETE) {
                const char *why = NULL;
                /* RabbitMQ: the X-Reason header; here the "reason" query parameter too */
                why = qs(r, "reason");
                conn_close_error(c, CONNECTION_FORCED, 0, "%s", why ? why : "Closed via management plugin");
                conn_flush(c);
                ok_204(r);
                return 1;
            }
            return bad_method(r), 1;
        }
        if (n == 3 && is(r, 2, "channels")) {
            list_channels(x, c, NULL);
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "channels") == 0) {
        if (n == 1) {
            list_channels(x, NULL, NULL);
            return 1;
        }
        if (n == 2) {
            for (conn *c = x->b->conns; c; c = c->next) {
                if (!conn_visible(x, c))
                    continue;
                char cn[200], nm[220];
                conn_name(c, cn, sizeof cn);
                for (uint32_t i = 0; i < c->nchans; i++) {
                    if (!c->chans[i])
                        continue;
                    snprintf(nm, sizeof nm, "%s (%u)", cn, c->chans[i]->id);
                    if (strcmp(nm, r->seg[1]) == 0) {
                        r->json = chan_json(x, c->chans[i]);
                        json_t *cd = json_array();
                        size_t it = 0;
                        map_entry *e;
                        while (map_iter(&c->chans[i]->consumers, &it, &e))
                            if (((consumer *)e->val)->q)
                                json_array_append_new(cd, consumer_json(x, e->val, 1));
                        json_object_set_new(r->json, "consumer_details", cd);
                        json_object_set_new(r->json, "deliveries", json_array());
                        json_object_set_new(r->json, "publishes", json_array());
                        return 1;
                    }
                }
            }
        }
        return 0;
    }
    if (strcmp(s0, "consumers") == 0 && n <= 2) {
        vhost *vh = NULL;
        if (n == 2 && !(vh = seg_vhost(x, 1)))
            return 1;
        list_consumers(x, vh);
        return 1;
    }
    if (strcmp(s0, "vhosts") == 0) {
        if (n == 1) {
            json_t *a = json_array();
            size_t i = 0;
            map_entry *e;
            while (map_iter(&x->b->vhosts, &i, &e))
                if (can_see_vhost(x, e->val))
                    json_array_append_new(a, vhost_json(x, e->val));
            r->json = sorted(a);
            return 1;
        }
        if (n == 2) {
            if (m == HM_PUT) {
                put_vhost(x);
                return 1;
            }
            vhost *vh = seg_vhost(x, 1);
            if (!vh)
                return 1;
            if (m == HM_GET) {
                r->json = vhost_json(x, vh);
                return 1;
            }
            if (m == HM_DELETE) {
                if (need_admin(x) == 0)
                    mgmt_error(r, 400, "bad_request", "%s", "deleting a virtual host is not supported by Ferry yet");
                return 1;
            }
            return bad_method(r), 1;
        }
        if (n == 3 && is(r, 2, "permissions")) {
            if (!seg_vhost(x, 1))
                return 1;
            list_perms(x, NULL, r->seg[1]);
            return 1;
        }
        if (n == 3 && (is(r, 2, "connections") || is(r, 2, "channels"))) {
            vhost *vh = seg_vhost(x, 1);
            if (!vh)
                return 1;
            if (is(r, 2, "channels")) {
                list_channels(x, NULL, vh);
            } else {
                json_t *a = json_array();
                for (conn *c = x->b->conns; c; c = c->next)
                    if (conn_visible(x, c) && c->vh == vh)
                        json_array_append_new(a, conn_json(x, c));
                r->json = a;
            }
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "users") == 0) {
        if (!x->admin) {
            mgmt_error(r, 401, "not_authorised", "%s", "Not administrator user");
            return 1;
        }
        if (n == 1) {
            json_t *a = json_array();
            size_t i = 0;
            map_entry *e;
            while (map_iter(&x->b->access->users, &i, &e))
                if (((user *)e->val)->alg != HASH_NONE || ((user *)e->val)->tags)
                    json_array_append_new(a, user_json(e->val));
            r->json = a;
            return 1;
        }
        if (n == 2) {
            if (m == HM_PUT) {
                put_user(x);
                return 1;
            }
            user *u = auth_user(x->b->access, slice_str(r->seg[1]));
            if (!u)
                return 0;
            if (m == HM_GET) {
                r->json = user_json(u);
                return 1;
            }
            if (m == HM_DELETE) {
                delete_user(x);
                return 1;
            }
            return bad_method(r), 1;
        }
        if (n == 3 && is(r, 2, "permissions")) {
            if (!auth_user(x->b->access, slice_str(r->seg[1])))
                return 0;
            list_perms(x, r->seg[1], NULL);
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "permissions") == 0) {
        if (n == 1) {
            if (need_admin(x) < 0)
                return 1;
            list_perms(x, NULL, NULL);
            return 1;
        }
        if (n == 3) {
            if (m == HM_PUT) {
                put_perm(x);
                return 1;
            }
            if (m == HM_DELETE) {
                delete_perm(x);
                return 1;
            }
            if (need_admin(x) < 0)
                return 1;
            const uperm *p = access_perm(x->b->access, slice_str(r->seg[2]), slice_str(r->seg[1]));
            if (!p)
                return 0;
            r->json = perm_json(p);
            return 1;
        }
        return 0;
    }
    if (strcmp(s0, "definitions") == 0 && n <= 2) {
        vhost *vh = NULL;
        if (n == 2 && !(vh = seg_vhost(x, 1)))
            return 1;
        if (m == HM_GET) {
            if (need_admin(x) < 0)
                return 1;
            get_definitions(x, vh);
            return 1;
        }
        if (m == HM_POST) {
            post_definitions(x);
            return 1;
        }
        return bad_method(r), 1;
    }
    if (strcmp(s0, "aliveness-test") == 0 && n == 2) {
        if (m != HM_GET)
            return bad_method(r), 1;
        return amqp_op(x, 1);
    }
    if (strcmp(s0, "health") == 0 && is(r, 1, "checks") && n >= 3) {
        health(x);
        return 1;
    }
    /* What Ferry does not have (policies, runtime parameters, topic permissions over HTTP,
     * feature flags): the lists answer empty, as a node without any would; setting one is a
     * 400 that says so (rabbitmqadmin's "list policies" works; "declare policy" explains). */
    if (strcmp(s0, "policies") == 0 || strcmp(s0, "operator-policies") == 0 || strcmp(s0, "parameters") == 0 ||
        strcmp(s0, "global-parameters") == 0 || strcmp(s0, "vhost-limits") == 0 || strcmp(s0, "user-limits") == 0 ||
        strcmp(s0, "topic-permissions") == 0 || strcmp(s0, "feature-flags") == 0) {
        if (m == HM_GET) {
            if (n >= 2 && strcmp(s0, "parameters") && strcmp(s0, "global-parameters") && strcmp(s0, "feature-flags") &&
                strcmp(s0, "user-limits") && strcmp(s0, "topic-permissions") && !seg_vhost(x, 1))
                return 1;
            if ((strcmp(s0, "policies") == 0 || strcmp(s0, "operator-policies") == 0) && n == 3)
                return 0; /* no such policy */
            r->json = json_array();
            return 1;
        }
        mgmt_error(r, 400, "bad_request", "%s is not supported by Ferry", s0);
        return 1;
    }
    if (strcmp(s0, "healthchecks") == 0 && is(r, 1, "node")) {
        r->json = json_pack("{s:s}", "status", "ok");
        return 1;
    }
    return 0;
}
