/* replyto.c — direct reply-to (amq.rabbitmq.reply-to), as RabbitMQ does it.
 *
 * A requester consumes from the pseudo-queue amq.rabbitmq.reply-to (no-ack only) and
 * publishes requests with reply-to set to that name; ferryd rewrites the property to a key
 * naming the requester's channel (amq.rabbitmq.reply-to.<conn>.<chan>.<random>). A reply
 * published to the default exchange with that key as routing key skips every queue and is
 * written straight to the requester's channel. */
#include "channel_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* basic.consume on amq.rabbitmq.reply-to: a pseudo-consumer; replies come straight to
 * this channel. */
void replyto_consume(channel *ch, slice tag, int no_ack, int nowait, slice args) {
    if (!no_ack) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME, "reply consumer cannot acknowledge");
        return;
    }
    if (ch->reply) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME, "reply consumer already set");
        return;
    }
    ch->reply = consumer_new(ch, tag, NULL, 1, 0, args);
    char rnd[24];
    broker_random_name(rnd, 16);
    snprintf(ch->reply_key, sizeof ch->reply_key, REPLY_TO_PREFIX "%llx.%x.%.16s", (unsigned long long)ch->c->id,
             ch->id, rnd);
    map_put(&ch->c->b->reply_to, ch->reply_key, strlen(ch->reply_key), ch);
    if (!nowait)
        send_consume_ok(ch, ch->reply);
}

/* The reply consumer leaves (basic.cancel, channel close): its key no longer routes. */
void replyto_forget(channel *ch, consumer *cs) {
    (void)cs;
    map_del(&ch->c->b->reply_to, ch->reply_key, strlen(ch->reply_key));
    ch->reply = NULL;
}

/* A reply to a direct reply-to requester goes straight to its channel, if the requester's
 * connection can take a delivery now (its output below the high-water mark that holds back
 * every consumer, conn_can_deliver). Direct reply-to is at-most-once ("fire and forget"):
 * a reply that cannot be taken is not kept anywhere; like one whose requester has gone, it
 * is dropped, or returned to a mandatory replier. So a requester that does not read costs
 * ferryd at most the high-water mark plus one reply. */
int deliver_reply(broker *b, message *m) {
    channel *to = map_get(&b->reply_to, msg_rkey(m), m->rkey_len);
    if (!to || !to->reply || !consumer_can_take(to->reply))
        return 0;
    assert(!to->closing && to->reply->q == NULL && to->reply->no_ack);
    write_deliver(to, to->reply, ++to->next_tag, 0, m, (slice){msg_props(m), m->props_len});
    return 1;
}

/* A copy of m (no body bytes yet: it is still being assembled) whose reply-to property,
 * the bytes `old` inside m's properties, is replaced by key. Everything else the publisher
 * set stays: properties, and what publish decoded from them (delivery mode, expiration,
 * priority). */
static message *rewrite_reply_to(message *m, slice old, const char *key) {
    assert(old.p > msg_props(m) && old.p + old.n <= msg_props(m) + m->props_len);
    size_t klen = strlen(key);
    size_t pre = (size_t)(old.p - msg_props(m)) - 1; /* up to the length octet */
    size_t post = m->props_len - pre - 1 - old.n;
    buf nb;
    buf_init(&nb);
    buf_put(&nb, msg_props(m), pre);
    buf_shortstr(&nb, key, klen);
    buf_put(&nb, old.p + old.n, post);
    message *n = message_new((slice){(const uint8_t *)msg_exchange(m), m->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, (slice){buf_head(&nb), nb.len},
                             m->body_len);
    buf_free(&nb);
    n->persistent = m->persistent;
    n->ttl = m->ttl;
    n->priority = m->priority;
    return n;
}

/* A request with reply-to amq.rabbitmq.reply-to: RabbitMQ refuses it unless this channel
 * consumes from the pseudo-queue, and replaces the property with the channel's key. Takes
 * m's reference; returns the message to route, or NULL after closing the channel. */
message *replyto_request(channel *ch, message *m, slice reply_to_in_props) {
    if (!ch->reply) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_PUBLISH, "fast reply consumer does not exist");
        message_unref(m);
        return NULL;
    }
    message *n = rewrite_reply_to(m, reply_to_in_props, ch->reply_key);
    message_unref(m);
    return n;
}
