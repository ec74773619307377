/* perm.c — permission checks of the channel methods, where and in the order RabbitMQ's
 * rabbit_channel makes them (3.10):
 *
 *   exchange.declare   configure on the exchange (passive: none); a new exchange with an
 *                      alternate-exchange also read on it and write on the alternate
 *   exchange.delete    configure on the exchange
 *   queue.declare      configure on the queue (passive: none); a new queue: the vhost's
 *                      queue limit (406), and with a dead-letter exchange read on the queue
 *                      and write on that exchange
 *   queue.delete       configure;  queue.purge, basic.get, basic.consume: read on the queue
 *   queue.bind/unbind, exchange.bind/unbind
 *                      write on the destination, read on the source, and on a topic
 *                      exchange the topic read permission for the binding key
 *   basic.publish      write on the exchange ("" is checked as amq.default) before it is
 *                      looked up (a missing exchange is 404 only once this passed), and
 *                      on a topic exchange the topic write permission for the routing key
 *
 * A refusal closes the channel with 403 ACCESS_REFUSED and RabbitMQ's text. */
#include "channel_int.h"

#include <assert.h>
#include <string.h>

#include "auth.h"
#include "util.h"

static slice user_of(const channel *ch) { return (slice){(const uint8_t *)ch->c->u->name, ch->c->u->name_len}; }
static slice vhost_of(const channel *ch) { return (slice){(const uint8_t *)ch->c->vh->name, ch->c->vh->name_len}; }

int perm_check(channel *ch, int which, const char *kind, slice name, unsigned mid) {
    if (!ch->c->u || !ch->c->vh)
        return 0;
    if (kind[0] == 'e' && name.n == 0) /* rabbit_access_control: the default exchange is amq.default */
        name = slice_str("amq.default");
    if (access_allows(ch->c->b->access, user_of(ch), vhost_of(ch), which, name))
        return 0;
    channel_close_error(ch, ACCESS_REFUSED, mid, "access to %s refused for user '%s'", rs(kind, name), ch->c->user);
    return -1;
}

int perm_check_topic(channel *ch, const exchange *x, int which, slice rkey, unsigned mid) {
    if (!ch->c->u || !ch->c->vh || !x || x->type != EX_TOPIC)
        return 0;
    slice xname = {(const uint8_t *)x->name, x->name_len};
    if (access_topic_allows(ch->c->b->access, user_of(ch), vhost_of(ch), xname, which, rkey))
        return 0;
    channel_close_error(ch, ACCESS_REFUSED, mid, "access to topic '%.*s' in exchange '%s' in vhost '%s' refused for user '%s'",
                        (int)rkey.n, (const char *)rkey.p, x->name, ch_vhost(ch), ch->c->user);
    return -1;
}

/* basic.publish: write on the exchange. The exchange last allowed is remembered per channel
 * (RabbitMQ's channel keeps a permission cache too), so a stream of publishes to one
 * exchange costs one regex search, not one each (it was 7% of a 16-byte publish's cost). */
int perm_check_publish(channel *ch, slice xname) {
    if (!ch->c->u || !ch->c->vh)
        return 0;
    assert(xname.n <= 255); /* a shortstr */
    const access_db *db = ch->c->b->access;
    const uint8_t *a = ch->pub_allowed;
    if (a && ch->pub_allowed_gen == db->gen && a[0] == xname.n && memcmp(a + 1, xname.p, xname.n) == 0)
        return 0;
    if (perm_check(ch, PERM_WRITE, "exchange", xname, BASIC_PUBLISH) < 0)
        return -1;
    if (!ch->pub_allowed)
        ch->pub_allowed = xmalloc(256);
    ch->pub_allowed[0] = (uint8_t)xname.n;
    memcpy(ch->pub_allowed + 1, xname.p, xname.n);
    ch->pub_allowed_gen = db->gen;
    return 0;
}

/* The bind checks (both bind and unbind, queue and exchange destinations), up to and
 * including the default-exchange refusal. */
int perm_check_bind(channel *ch, const char *dst_kind, slice dst, slice src, slice key, unsigned mid) {
    if (perm_check(ch, PERM_WRITE, dst_kind, dst, mid) < 0)
        return -1;
    if (src.n == 0 || (dst_kind[0] == 'e' && dst.n == 0)) {
        channel_close_error(ch, ACCESS_REFUSED, mid, "operation not permitted on the default exchange");
        return -1;
    }
    if (perm_check(ch, PERM_READ, "exchange", src, mid) < 0)
        return -1;
    exchange *x = broker_exchange(ch->c->vh, src);
    return perm_check_topic(ch, x, PERM_READ, key, mid);
}

/* A new queue: the vhost's queue limit, then the dead-letter exchange's permissions. */
int perm_check_new_queue(channel *ch, slice name, slice args) {
    vhost *vh = ch->c->vh;
    if (vh && vh->max_queues >= 0 && (int64_t)vh->queues.count + 1 > vh->max_queues) {
        channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE,
                            "cannot declare queue '%.*s': queue limit in vhost '%s' (%lld) is reached", (int)name.n,
                            (const char *)name.p, vh->name, (long long)vh->max_queues);
        return -1;
    }
    fval dlx;
    if (args.n && table_get(args, "x-dead-letter-exchange", &dlx) && fval_is_str(&dlx)) {
        if (perm_check(ch, PERM_READ, "queue", name, QUEUE_DECLARE) < 0 ||
            perm_check(ch, PERM_WRITE, "exchange", dlx.s, QUEUE_DECLARE) < 0)
            return -1;
    }
    return 0;
}

/* A new exchange with an alternate exchange: read on it, write on the alternate. */
int perm_check_new_exchange(channel *ch, slice name, slice args) {
    fval ae;
    if (args.n && table_get(args, "alternate-exchange", &ae) && fval_is_str(&ae)) {
        if (perm_check(ch, PERM_READ, "exchange", name, EXCHANGE_DECLARE) < 0 ||
            perm_check(ch, PERM_WRITE, "exchange", ae.s, EXCHANGE_DECLARE) < 0)
            return -1;
    }
    return 0;
}
