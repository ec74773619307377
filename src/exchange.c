/* exchange.c — exchanges, bindings and routing (direct, fanout, topic, headers).
 *
 * Routing appends each destination queue once to the broker's scratch list; queues and
 * exchanges carry a route_mark compared against a per-publish epoch, so de-duplication and
 * exchange-to-exchange cycles cost nothing extra. Exchange-to-exchange bindings and
 * alternate exchanges are followed with a work list, never recursion: a client can build a
 * graph of any depth. Direct exchanges index bindings by key. */
#include "broker.h"

#include <assert.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

typedef struct bvec {
    binding **a;
    size_t n, cap;
} bvec;

static void vec_add(binding ***a, size_t *n, size_t *cap, binding *bd) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        *a = xrealloc(*a, *cap * sizeof **a);
    }
    (*a)[(*n)++] = bd;
}

/* Appends bd to a list where it keeps its index in *at (removal in O(1), any order). */
static void list_add(binding ***a, size_t *n, size_t *cap, binding *bd, size_t *at) {
    *at = *n;
    vec_add(a, n, cap, bd);
}

/* Removes the entry at index at: the last one takes its place (order is not kept: these
 * lists are sets; a queue with 100,000 bindings is deleted in linear time). */
static void list_del(binding **a, size_t *n, size_t at, int src_side) {
    assert(at < *n);
    binding *last = a[--*n];
    a[at] = last;
    if (src_side)
        last->src_at = at;
    else
        last->dst_at = at;
}

/* Removes bd from a; searched from the end, where teardown removes bindings. */
static void vec_del(binding **a, size_t *n, binding *bd) {
    for (size_t i = *n; i-- > 0;) {
        if (a[i] == bd) {
            memmove(&a[i], &a[i + 1], (*n - i - 1) * sizeof *a);
            (*n)--;
            return;
        }
    }
}

int exchange_type_parse(slice s, int *type) {
    if (slice_eqs(s, "direct"))
        *type = EX_DIRECT;
    else if (slice_eqs(s, "fanout"))
        *type = EX_FANOUT;
    else if (slice_eqs(s, "topic"))
        *type = EX_TOPIC;
    else if (slice_eqs(s, "headers"))
        *type = EX_HEADERS;
    else if (slice_eqs(s, "x-consistent-hash"))
        *type = EX_CHASH;
    else if (slice_eqs(s, "x-delayed-message"))
        *type = EX_DELAYED;
    else
        return -1;
    return 0;
}

const char *exchange_type_name(int type) {
    static const char *names[] = {"direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message"};
    return names[type];
}

exchange *exchange_new(vhost *vh, slice name, int type, int durable, int auto_delete, int internal, slice args) {
    exchange *x = xcalloc(1, sizeof *x);
    x->name = xstrndup((const char *)name.p, name.n);
    x->name_len = name.n;
    x->b = vh->b;
    x->vh = vh;
    x->type = type;
    x->durable = (uint8_t)durable;
    x->auto_delete = (uint8_t)auto_delete;
    x->internal = (uint8_t)internal;
    if (args.n) {
        x->args = xmalloc(args.n);
        memcpy(x->args, args.p, args.n);
        x->args_len = args.n;
    }
    map_init(&x->direct);
    map_init(&x->bindex);
    x->subtype = type;
    return x;
}

/* Frees an exchange after removing every binding to and from it. */
void exchange_free(exchange *x) {
    x->auto_delete = 0; /* no recursive delete while we tear down */
    delayed_exchange_gone(x->b, x);
    while (x->nbindings)
        binding_remove(x->bindings[x->nbindings - 1]);
    while (x->ninbound)
        binding_remove(x->inbound[x->ninbound - 1]);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&x->direct, &i, &e)) {
        bvec *v = e->val;
        free(v->a);
        free(v);
    }
    map_free(&x->direct);
    assert(x->bindex.count == 0);
    map_free(&x->bindex);
    topic_free(x);
    chash_free(x);
    free(x->bindings);
    free(x->inbound);
    free(x->rates);
    free(x->args);
    free(x->name);
    free(x);
}

static int args_equal(const uint8_t *a, size_t an, slice b) {
    slice sa = {a, an};
    fval va = {.type = 'F', .s = sa}, vb = {.type = 'F', .s = b};
    return fval_equal(&va, &vb);
}

/* The bindex key of a binding: its destination's address, then its routing key. */
static size_t bindex_key(char *k, const queue *q, const exchange *dstx, slice key) {
    const void *dst = q ? (const void *)q : (const void *)dstx;
    memcpy(k, &dst, sizeof dst);
    memcpy(k + sizeof dst, key.p, key.n);
    return sizeof dst + key.n;
}

binding *binding_find(exchange *src, queue *q, exchange *dstx, slice key, slice args) {
    char k[sizeof(void *) + 256];
    assert(key.n <= 255);
    bvec *v = map_get(&src->bindex, k, bindex_key(k, q, dstx, key));
    for (size_t i = 0; v && i < v->n; i++) {
        binding *bd = v->a[i];
        if (bd->q == q && bd->dstx == dstx && args_equal(bd->args, bd->args_len, args))
            return bd;
    }
    return NULL;
}

binding *binding_add(exchange *src, queue *q, exchange *dstx, slice key, slice args) {
    binding *bd = xcalloc(1, sizeof *bd);
    bd->src = src;
    bd->q = q;
    bd->dstx = dstx;
    bd->key = xstrndup((const char *)key.p, key.n);
    bd->key_len = key.n;
    if (args.n) {
        bd->args = xmalloc(args.n);
        memcpy(bd->args, args.p, args.n);
        bd->args_len = args.n;
    }
    list_add(&src->bindings, &src->nbindings, &src->capbindings, bd, &bd->src_at);
    if (q)
        list_add(&q->bindings, &q->nbindings, &q->capbindings, bd, &bd->dst_at);
    else
        list_add(&dstx->inbound, &dstx->ninbound, &dstx->capinbound, bd, &bd->dst_at);
    char k[sizeof(void *) + 256];
    size_t kn = bindex_key(k, q, dstx, key);
    bvec *bv = map_get(&src->bindex, k, kn);
    if (!bv) {
        bv = xcalloc(1, sizeof *bv);
        map_put(&src->bindex, k, kn, bv);
    }
    vec_add(&bv->a, &bv->n, &bv->cap, bd);
    if (src->subtype == EX_CHASH)
        chash_binding_added(src, bd);
    if (src->subtype == EX_TOPIC)
        topic_add(src, bd);
    if (src->subtype == EX_DIRECT) {
        bvec *v = map_get(&src->direct, bd->key, bd->key_len);
        if (!v) {
            v = xcalloc(1, sizeof *v);
            map_put(&src->direct, bd->key, bd->key_len, v);
        }
        vec_add(&v->a, &v->n, &v->cap, bd);
    }
    return bd;
}

void binding_remove(binding *bd) {
    exchange *src = bd->src;
    assert(src->bindings[bd->src_at] == bd);
    list_del(src->bindings, &src->nbindings, bd->src_at, 1);
    if (bd->q) {
        assert(bd->q->bindings[bd->dst_at] == bd);
        list_del(bd->q->bindings, &bd->q->nbindings, bd->dst_at, 0);
    } else {
        assert(bd->dstx->inbound[bd->dst_at] == bd);
        list_del(bd->dstx->inbound, &bd->dstx->ninbound, bd->dst_at, 0);
    }
    char k[sizeof(void *) + 256];
    size_t kn = bindex_key(k, bd->q, bd->dstx, (slice){(const uint8_t *)bd->key, bd->key_len});
    bvec *bv = map_get(&src->bindex, k, kn);
    assert(bv); /* every binding is indexed */
    vec_del(bv->a, &bv->n, bd);
    if (bv->n == 0) {
        map_del(&src->bindex, k, kn);
        free(bv->a);
        free(bv);
    }
    if (src->subtype == EX_CHASH)
        chash_binding_removed(src, bd);
    if (src->subtype == EX_TOPIC)
        topic_remove(src, bd);
    if (src->subtype == EX_DIRECT) {
        bvec *v = map_get(&src->direct, bd->key, bd->key_len);
        if (v) {
            vec_del(v->a, &v->n, bd);
            if (v->n == 0) {
                map_del(&src->direct, bd->key, bd->key_len);
                free(v->a);
                free(v);
            }
        }
    }
    free(bd->key);
    free(bd->args);
    free(bd);
    /* RabbitMQ: an auto-delete exchange goes when its last binding (as source) goes. Deleting
     * it removes the bindings into it, which can empty another auto-delete exchange, and so
     * on down a chain of any length: the outermost call deletes them one by one from a list
     * (a recursion here overflowed the stack at a depth of some 10,000). */
    broker *b = src->b;
    if (src->auto_delete && src->nbindings == 0 && !src->builtin && !src->autodel_pending) {
        src->autodel_pending = 1;
        src->autodel_next = b->autodel;
        b->autodel = src;
    }
    if (b->autodel_draining)
        return;
    b->autodel_draining = 1;
    while (b->autodel) {
        exchange *x = b->autodel;
        b->autodel = x->autodel_next;
        x->autodel_pending = 0;
        assert(x->auto_delete && x->nbindings == 0);
        broker_remove_exchange(x);
    }
    b->autodel_draining = 0;
}

/* ---- headers matching (RabbitMQ's rabbit_exchange_type_headers) ---- */

static int headers_match(const binding *bd, slice headers) {
    slice args = {bd->args, bd->args_len};
    fval v;
    int any = 0, with_x = 0;
    if (table_get(args, "x-match", &v) && fval_is_str(&v)) {
        if (slice_eqs(v.s, "any"))
            any = 1;
        else if (slice_eqs(v.s, "any-with-x"))
            any = 1, with_x = 1;
        else if (slice_eqs(v.s, "all-with-x"))
            with_x = 1;
    }
    rd r = rd_make(args.p, args.n);
    slice key;
    while (table_next(&r, &key, &v) == 1) {
        if (slice_eqs(key, "x-match") || (!with_x && slice_prefix(key, "x-")))
            continue;
        char k[256];
        memcpy(k, key.p, key.n);
        k[key.n] = 0;
        fval hv;
        int found = headers.n && table_get(headers, k, &hv);
        /* A void binding value matches on the header's presence alone. */
        int ok = found && (v.type == 'V' || fval_equal(&v, &hv));
        if (any && ok)
            return 1;
        if (!any && !ok)
            return 0;
    }
    return !any;
}

static void route_to_queue(broker *b, queue *q) {
    if (q->route_mark == b->route_epoch || q->deleted)
        return;
    q->route_mark = b->route_epoch;
    broker_route_add(b, q);
}

/* Puts x on the work list unless this publish reached it already: route_mark is the visited
 * set (rabbit_exchange:route1's SeenXs), so cycles and diamonds cost one visit each. */
static void route_push(broker *b, exchange *x) {
    if (x->route_mark == b->route_epoch)
        return;
    x->route_mark = b->route_epoch;
    if (b->nroute_xs == b->caproute_xs) {
        b->caproute_xs = b->caproute_xs ? b->caproute_xs * 2 : 16;
        b->route_xs = xrealloc(b->route_xs, b->caproute_xs * sizeof *b->route_xs);
    }
    b->route_xs[b->nroute_xs++] = x;
}

/* A matching binding: a queue joins the result, an exchange the work list. */
static void route_binding(binding *bd) {
    if (bd->q)
        route_to_queue(bd->src->b, bd->q);
    else
        route_push(bd->src->b, bd->dstx);
}

/* Routes m by x's own type and bindings (no recursion into destination exchanges).
 * Returns how many bindings matched: 0 sends the message to x's alternate exchange. */
static size_t route_one(exchange *x, message *m, slice headers) {
    broker *b = x->b;
    size_t n = 0;
    switch (x->subtype) {
    case EX_DIRECT: {
        if (x->name_len == 0) { /* the default exchange: every queue by its name */
            queue *q = broker_queue(x->vh, (slice){(const uint8_t *)msg_rkey(m), m->rkey_len});
            if (q) {
                route_to_queue(b, q);
                n++;
            }
            break;
        }
        bvec *v = map_get(&x->direct, msg_rkey(m), m->rkey_len);
        for (size_t i = 0; v && i < v->n; i++, n++)
            route_binding(v->a[i]);
        break;
    }
    case EX_FANOUT:
        for (size_t i = 0; i < x->nbindings; i++, n++)
            route_binding(x->bindings[i]);
        break;
    case EX_TOPIC:
        n = topic_route(x, msg_rkey(m), m->rkey_len, route_binding);
        break;
    case EX_HEADERS:
        for (size_t i = 0; i < x->nbindings; i++) {
            if (headers_match(x->bindings[i], headers)) {
                route_binding(x->bindings[i]);
                n++;
            }
        }
        break;
    case EX_CHASH: {
        binding *bd = chash_pick(x, m, headers);
        if (bd) {
            route_binding(bd);
            n++;
        }
        break;
    }
    }
    return n;
}

void exchange_route(exchange *x, message *m, slice headers) {
    broker *b = x->b;
    b->nroute = 0;
    b->nroute_xs = 0;
    b->route_epoch++; /* 64 bits: never wraps */
    route_push(b, x);
    while (b->nroute_xs) {
        exchange *cur = b->route_xs[--b->nroute_xs];
        assert(cur->route_mark == b->route_epoch);
        /* x-delayed-message holds a message with a positive x-delay; the rest (and held
         * messages when they fall due) are routed by its x-delayed-type. */
        if (cur->type == EX_DELAYED && delayed_take(cur, m, headers))
            continue;
        /* alternate-exchange: a message that matched none of this exchange's bindings goes
         * there (rabbit_exchange:process_alternate: an exchange destination counts as a
         * match even if it routes nowhere further). */
        fval ae;
        if (route_one(cur, m, headers) == 0 && cur->args_len &&
            table_get((slice){cur->args, cur->args_len}, "alternate-exchange", &ae) && fval_is_str(&ae)) {
            exchange *alt = broker_exchange(cur->vh, ae.s);
            if (alt)
                route_push(b, alt);
        }
    }
    /* The result: live queues, each once (the mark is set exactly when one is added). */
    for (size_t i = 0; i < b->nroute; i++)
        assert(b->route_out[i]->route_mark == b->route_epoch && !b->route_out[i]->deleted);
}

void exchange_route_queue(broker *b, queue *q) { route_to_queue(b, q); }
