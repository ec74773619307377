/* mgmt_ferry.c — Ferry's additions to the management API, under /api/ferry/:
 *
 *   GET    /api/ferry/queues[/{vhost}[/{name}]]       backlog view of each queue
 *   GET    /api/ferry/dead-letters/{vhost}/{queue}    peek (count, offset) with x-death
 *   POST   /api/ferry/dead-letters/{vhost}/{queue}/redrive   {"count": N} (absent: all)
 *   POST   /api/ferry/dead-letters/{vhost}/{queue}/purge
 *   DELETE /api/ferry/dead-letters/{vhost}/{queue}    (purge, too)
 *   GET/PUT/DELETE /api/ferry/alerts[/{name}]         (alerts.c)
 *   GET    /api/ferry/schedules[/{vhost}]             cron schedules (mgmt_schedules.c)
 *
 * The shapes are written in the README (dashboard and `ferry dlq` / `ferry alerts` use them). */
#include <stdio.h>
#include <string.h>

#include "mgmt_int.h"
#include "util.h"

#define REDRIVE_SLICE 1000 /* messages moved per loop turn */
#define PEEK_MAX 500

static const char *reasons[DL_NREASONS] = {"rejected", "expired", "maxlen", "delivery_limit"};

static json_t *ferry_queue_json(queue *q, uint64_t now) {
    json_t *o = json_object();
    json_object_set_new(o, "vhost", json_string(q->vh->name));
    json_object_set_new(o, "name", json_stringn_nocheck(q->name, q->name_len));
    json_object_set_new(o, "messages", json_integer((json_int_t)(q->nready + q->unacked)));
    json_object_set_new(o, "messages_ready", json_integer((json_int_t)q->nready));
    json_object_set_new(o, "messages_unacknowledged", json_integer(q->unacked));
    json_object_set_new(o, "consumers", json_integer((json_int_t)q->nconsumers));
    json_object_set_new(o, "oldest_message_age_seconds", json_real((double)qstats_oldest_age_ms(q, now) / 1000.0));
    json_t *dl = json_object();
    uint64_t total = 0;
    for (int k = 0; k < DL_NREASONS; k++) {
        json_object_set_new(dl, reasons[k], json_integer((json_int_t)q->cnt.dead_lettered[k]));
        total += q->cnt.dead_lettered[k];
    }
    json_object_set_new(o, "dead_lettered", dl);
    json_object_set_new(o, "dead_lettered_total", json_integer((json_int_t)total));
    json_object_set_new(o, "retries", json_integer((json_int_t)q->cnt.retries));
    json_object_set_new(o, "delayed_pending", json_integer((json_int_t)q->cnt.delayed_pending));
    json_object_set_new(o, "publish_rate", json_real(qstats_rate(q, R_PUBLISH)));
    json_object_set_new(o, "deliver_rate", json_real(qstats_rate(q, R_DELIVER_GET)));
    json_object_set_new(o, "ack_rate", json_real(qstats_rate(q, R_ACK)));
    return o;
}

/* The most recent x-death entry of a message's headers as JSON (or null). */
static json_t *x_death(slice headers, json_t **all) {
    fval xd, e;
    *all = json_null();
    if (!headers.n || !table_get(headers, "x-death", &xd) || xd.type != 'A')
        return json_null();
    json_decref(*all);
    *all = json_array();
    rd r = rd_make(xd.s.p, xd.s.n);
    while (array_next(&r, &e) == 1)
        if (e.type == 'F')
            json_array_append_new(*all, mj_table(e.s));
    json_t *first = json_array_get(*all, 0);
    return first ? json_incref(first) : json_null();
}

typedef struct peek {
    json_t *items;
    size_t offset, count, pos;
} peek;

static void peek_one(void *ctx, queue *q, qmsg *qm) {
    (void)q;
    peek *p = ctx;
    size_t pos = p->pos++;
    if (pos < p->offset || json_array_size(p->items) >= p->count)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "position", json_integer((json_int_t)pos));
    json_object_set_new(o, "redelivered", json_boolean(qm->deliveries > 0));
    if (qm->paged) { /* its body is only on disk: listed, not read back on the loop */
        json_object_set_new(o, "paged_out", json_true());
        json_array_append_new(p->items, o);
        return;
    }
    message *m = qm->m;
    json_object_set_new(o, "paged_out", json_false());
    json_object_set_new(o, "exchange", json_stringn_nocheck(msg_exchange(m), m->exchange_len));
    json_object_set_new(o, "routing_key", json_stringn_nocheck(msg_rkey(m), m->rkey_len));
    slice props = {msg_props(m), m->props_len};
    json_object_set_new(o, "properties", mj_props(props));
    props_view pv;
    json_t *all = NULL;
    json_t *d = props_parse(props, &pv) == 0 ? x_death(pv.headers, &all) : (all = json_null(), json_null());
    json_object_set_new(o, "x_death", d);
    json_object_set_new(o, "reason", json_is_object(d) ? json_incref(json_object_get(d, "reason")) : json_null());
    json_object_set_new(o, "original_queue",
                        json_is_object(d) ? json_incref(json_object_get(d, "queue")) : json_null());
    json_decref(all);
    json_object_set_new(o, "correlation_id",
                        (pv.flags & PROP_CORRELATION_ID) ? json_stringn_nocheck((const char *)pv.correlation_id.p,
                                                                               pv.correlation_id.n)
                                                         : json_null());
    size_t n = m->body_len;
    const uint8_t *body = msg_body(m);
    int text = 1;
    for (size_t i = 0; i < n && text; i++)
        text = body[i] >= 0x20 || body[i] == '\n' || body[i] == '\r' || body[i] == '\t';
    json_t *js = text ? json_stringn(body ? (const char *)body : "", n) : NULL;
    json_object_set_new(o, "payload_bytes", json_integer((json_int_t)n));
    if (js) {
        json_object_set_new(o, "payload", js);
        json_object_set_new(o, "payload_encoding", json_string("string"));
    } else {
        buf b64;
        buf_init(&b64);
        auth_encode_b64(body, n, &b64);
        json_object_set_new(o, "payload", json_stringn((const char *)buf_head(&b64), b64.len));
        json_object_set_new(o, "payload_encoding", json_string("base64"));
        buf_free(&b64);
    }
    json_array_append_new(p->items, o);
}

typedef struct redrive {
    queue *q;
    size_t left, moved;
} redrive;

static void redrive_cont(broker *b, mgmt_req *r) {
    (void)b;
    redrive *d = r->cont;
    if (r->status == -1) {
        queue_unref(d->q);
        free(d);
        r->cont = NULL;
        return;
    }
    size_t want = d->left < REDRIVE_SLICE ? d->left : REDRIVE_SLICE;
    size_t got = d->q->deleted ? 0 : deadletter_redrive(d->q, want);
    d->moved += got;
    d->left -= got;
    if (got == want && d->left && !d->q->deleted) {
        r->cont_fn = redrive_cont;
        return;
    }
    r->json = json_pack("{s:I,s:I}", "redriven", (json_int_t)d->moved, "remaining",
                        (json_int_t)(d->q->deleted ? 0 : d->q->nready));
    r->status = 200;
    queue_unref(d->q);
    free(d);
    r->cont = NULL;
}

/* May x's user change this queue's messages? (administrator, or read and write permission) */
static int may_change(mctx *x, queue *q) {
    if (x->admin)
        return 1;
    slice u = {(const uint8_t *)x->u->name, x->u->name_len}, v = slice_str(q->vh->name),
          n = {(const uint8_t *)q->name, q->name_len};
    return access_allows(x->b->access, u, v, PERM_READ, n) && access_allows(x->b->access, u, v, PERM_WRITE, n);
}

static int dead_letters(mctx *x) {
    mgmt_req *r = x->r;
    int m = r->method == HM_HEAD ? HM_GET : r->method;
    if (r->nseg < 4 || r->nseg > 5)
        return 0;
    vhost *vh = seg_vhost(x, 2);
    if (!vh)
        return 1;
    queue *q = broker_queue(vh, slice_str(r->seg[3]));
    if (!q)
        return 0;
    if (r->nseg == 4 && m == HM_GET) {
        int64_t count, offset;
        json_t *qo = r->query;
        if (jint(qo, "count", 20, &count) < 0 || jint(qo, "offset", 0, &offset) < 0 || count < 0 || offset < 0) {
            mgmt_error(r, 400, "bad_request", "%s", "count and offset must be non-negative integers");
            return 1;
        }
        if (count > PEEK_MAX)
            count = PEEK_MAX;
        peek p = {json_array(), (size_t)offset, (size_t)count, 0};
        queue_each_ready(q, peek_one, &p);
        json_t *by = json_object();
        for (int k = 0; k < DL_NREASONS; k++) /* what this queue's messages died of, where known */
            json_object_set_new(by, reasons[k], json_integer(0));
        size_t i;
        json_t *it;
        json_array_foreach(p.items, i, it) {
            const char *why = json_string_value(json_object_get(it, "reason"));
            json_t *c = why ? json_object_get(by, why) : NULL;
            if (c)
                json_integer_set(c, json_integer_value(c) + 1);
        }
        r->json = json_pack("{s:s,s:s,s:I,s:I,s:I,s:o,s:o}", "vhost", vh->name, "queue", q->name, "messages",
                            (json_int_t)q->nready, "offset", (json_int_t)offset, "count",
                            (json_int_t)json_array_size(p.items), "reasons_shown", by, "items", p.items);
        return 1;
    }
    int purge = (r->nseg == 4 && m == HM_DELETE) || (r->nseg == 5 && strcmp(r->seg[4], "purge") == 0 && m == HM_POST);
    int redr = r->nseg == 5 && strcmp(r->seg[4], "redrive") == 0 && m == HM_POST;
    if (!purge && !redr) {
        if (r->nseg == 5 && strcmp(r->seg[4], "purge") && strcmp(r->seg[4], "redrive"))
            return 0;
        r->status = 405;
        return 1;
    }
    if (!may_change(x, q)) {
        mgmt_error(r, 401, "not_authorised", "access to queue '%s' in vhost '%s' refused for user '%s'", q->name,
                   vh->name, x->u->name);
        return 1;
    }
    if (purge) {
        size_t n = queue_purge(q);
        r->json = json_pack("{s:I}", "purged", (json_int_t)n);
        return 1;
    }
    json_t *j = body_json(x);
    if (!j)
        return 1;
    int64_t count;
    if (jint(j, "count", 0, &count) < 0 || count < 0) {
        json_decref(j);
        mgmt_error(r, 400, "bad_request", "%s", "count must be a non-negative integer (0 or absent: all)");
        return 1;
    }
    json_decref(j);
    redrive *d = xcalloc(1, sizeof *d);
    d->q = q;
    q->refs++;
    d->left = count ? (size_t)count : q->nready;
    r->cont = d;
    redrive_cont(x->b, r);
    return 1;
}

int ferry_route(mctx *x) {
    mgmt_req *r = x->r;
    int m = r->method == HM_HEAD ? HM_GET : r->method;
    if (r->nseg < 2)
        return 0;
    const char *what = r->seg[1];
    if (strcmp(what, "alerts") == 0)
        return alerts_route(x);
    if (strcmp(what, "dead-letters") == 0)
        return dead_letters(x);
    if (strcmp(what, "schedules") == 0)
        return schedules_route(x);
    if (strcmp(what, "queues") == 0 && r->nseg <= 4) {
        if (m != HM_GET) {
            r->status = 405;
            return 1;
        }
        vhost *only = NULL;
        if (r->nseg >= 3 && !(only = seg_vhost(x, 2)))
            return 1;
        uint64_t now = now_ms();
        if (r->nseg == 4) {
            queue *q = broker_queue(only, slice_str(r->seg[3]));
            if (!q)
                return 0;
            r->json = ferry_queue_json(q, now);
            return 1;
        }
        json_t *a = json_array();
        size_t i = 0, k;
        map_entry *e, *f;
        while (map_iter(&x->b->vhosts, &i, &e)) {
            vhost *vh = e->val;
            if ((only && vh != only) || !can_see_vhost(x, vh))
                continue;
            k = 0;
            while (map_iter(&vh->queues, &k, &f))
                json_array_append_new(a, ferry_queue_json(f->val, now));
        }
        r->json = a;
        return 1;
    }
    return 0;
}
