/* vhost.c — virtual hosts: each has its own exchanges and queues (the same name in two
 * vhosts is two objects), the default and amq.* exchanges, RabbitMQ's vhost limits
 * (max-connections, max-queues) and a count of the connections open on it. */
#include "broker.h"

#include <stdlib.h>

#include "util.h"

vhost *vhost_find(broker *b, slice name) { return map_get(&b->vhosts, (const char *)name.p, name.n); }

static void add_builtin(vhost *vh, const char *name, int type, int internal) {
    exchange *x = exchange_new(vh, slice_str(name), type, 1, 0, internal, (slice){NULL, 0});
    x->builtin = 1;
    broker_add_exchange(x);
}

vhost *vhost_get(broker *b, slice name) {
    vhost *vh = vhost_find(b, name);
    if (vh)
        return vh;
    vh = xcalloc(1, sizeof *vh);
    vh->name = xstrndup((const char *)name.p, name.n);
    vh->name_len = name.n;
    vh->b = b;
    vh->max_connections = vh->max_queues = -1;
    map_init(&vh->exchanges);
    map_init(&vh->queues);
    map_put(&b->vhosts, vh->name, vh->name_len, vh);
    /* The default exchange and the amq.* exchanges exist in every vhost (spec 3.1.3). */
    add_builtin(vh, "", EX_DIRECT, 0);
    add_builtin(vh, "amq.direct", EX_DIRECT, 0);
    add_builtin(vh, "amq.fanout", EX_FANOUT, 0);
    add_builtin(vh, "amq.topic", EX_TOPIC, 0);
    add_builtin(vh, "amq.headers", EX_HEADERS, 0);
    add_builtin(vh, "amq.match", EX_HEADERS, 0);
    /* RabbitMQ's firehose exchange exists in every vhost (internal: clients cannot publish
     * to it); the management API lists it, so tools find what they expect. */
    add_builtin(vh, "amq.rabbitmq.trace", EX_TOPIC, 1);
    return vh;
}

/* Shutdown: every queue is deleted (messages dropped from memory) before any exchange. */
void vhost_free_all(broker *b) {
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        size_t k = 0;
        map_entry *f;
        while (map_iter(&vh->queues, &k, &f))
            queue_delete(f->val);
    }
}

void vhost_free_exchanges(broker *b) {
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        size_t k = 0;
        map_entry *f;
        while (map_iter(&vh->exchanges, &k, &f))
            exchange_free(f->val);
        map_free(&vh->exchanges);
        map_free(&vh->queues);
        free(vh->name);
        free(vh);
    }
    map_free(&b->vhosts);
}

size_t broker_queue_count(broker *b) {
    size_t n = 0, i = 0;
    map_entry *e;
    while (map_iter(&b->vhosts, &i, &e))
        n += ((vhost *)e->val)->queues.count;
    return n;
}
