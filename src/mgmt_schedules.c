/* mgmt_schedules.c — broker-held cron in the management API (cron.c's schedules), following
 * mgmt_ferry.c's pattern: a loop-thread handler that ferry_route() calls.
 *
 *   GET /api/ferry/schedules[/{vhost}]
 *
 * answers a JSON list, sorted by vhost, exchange and name, of objects
 *   {"name", "vhost", "exchange", "cron", "timezone" ("" = UTC), "routing_key",
 *    "next_tick" (Unix seconds, null if it never fires again), "next_tick_at" (ISO 8601 UTC),
 *    "last_fired_tick" (null until the first tick), "last_fired_at", "durable"}
 * for the vhosts the user may see (as /api/ferry/queues). `ferry schedules` and the README
 * use this shape. Schedules are few and small, so the JSON is built on the loop at once. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgmt_int.h"
#include "util.h"

typedef struct collect {
    mctx *x;
    const char *only; /* vhost name or NULL */
    cron_info *v;
    size_t n, cap;
} collect;

static void add(void *ctx, const cron_info *ci) {
    collect *c = ctx;
    vhost *vh = vhost_find(c->x->b, slice_str(ci->vhost));
    if (!vh || !can_see_vhost(c->x, vh))
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = xrealloc(c->v, c->cap * sizeof *c->v);
    }
    c->v[c->n++] = *ci; /* its strings live in the schedule until this turn ends */
}

static int by_name(const void *a, const void *b) {
    const cron_info *p = a, *q = b;
    int d = strcmp(p->vhost, q->vhost);
    if (!d)
        d = strcmp(p->exchange, q->exchange);
    return d ? d : strcmp(p->name, q->name);
}

static json_t *tick_json(int64_t t, int iso) {
    if (t < 0)
        return json_null();
    if (!iso)
        return json_integer((json_int_t)t);
    time_t tt = (time_t)t;
    struct tm tm;
    char s[40];
    gmtime_r(&tt, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

int schedules_route(mctx *x) {
    mgmt_req *r = x->r;
    if (r->nseg > 3)
        return 0;
    if ((r->method == HM_HEAD ? HM_GET : r->method) != HM_GET) {
        mgmt_error(r, 405, "Method Not Allowed", "%s", "schedules are read-only here: publish with x-ferry-cron");
        return 1;
    }
    collect c = {x, NULL, NULL, 0, 0};
    if (r->nseg == 3) {
        vhost *vh = seg_vhost(x, 2);
        if (!vh)
            return 1; /* 404 answered */
        c.only = vh->name;
    }
    cron_each(x->b, c.only, add, &c);
    if (c.n)
        qsort(c.v, c.n, sizeof *c.v, by_name);
    json_t *a = json_array();
    for (size_t i = 0; i < c.n; i++) {
        const cron_info *ci = &c.v[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string_nocheck(ci->name));
        json_object_set_new(o, "vhost", json_string_nocheck(ci->vhost));
        json_object_set_new(o, "exchange", json_string_nocheck(ci->exchange));
        json_object_set_new(o, "cron", json_string_nocheck(ci->expr));
        json_object_set_new(o, "timezone", json_string_nocheck(ci->tz));
        json_object_set_new(o, "routing_key", json_string_nocheck(ci->rkey));
        json_object_set_new(o, "next_tick", tick_json(ci->next, 0));
        json_object_set_new(o, "next_tick_at", tick_json(ci->next, 1));
        json_object_set_new(o, "last_fired_tick", tick_json(ci->last, 0));
        json_object_set_new(o, "last_fired_at", tick_json(ci->last, 1));
        json_object_set_new(o, "durable", json_boolean(ci->durable));
        json_array_append_new(a, o);
    }
    free(c.v);
    r->json = a;
    return 1;
}
