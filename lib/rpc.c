/* rpc.c — ferry_rpc_call over direct reply-to: the connection consumes the pseudo-queue
 * amq.rabbitmq.reply-to (no-ack, as RabbitMQ requires) on its own channel and publishes the
 * request on that same channel with reply_to set; replies are matched by correlation id, and
 * a reply to an earlier call that timed out is dropped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/envelope.h"
#include "ferry/rpc.h"
#include "internal.h"

#define REPLY_TO "amq.rabbitmq.reply-to"

struct ferry_rpc {
    ferry_conn *c;
    uint64_t gen; /* generation the reply consumer was started on */
};

static int start(ferry_rpc *r) {
    ferry_conn *c = r->c;
    if (c->st && r->gen == c->generation && c->ch_open[FC_CH_RPC])
        return 0;
    int rc = fc_channel(c, FC_CH_RPC);
    if (rc < 0)
        return rc;
    amqp_basic_consume(c->st, FC_CH_RPC, amqp_cstring_bytes(REPLY_TO), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    if ((rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_RPC, "basic.consume amq.rabbitmq.reply-to")) < 0)
        return rc;
    r->gen = c->generation;
    return 0;
}

int ferry_rpc_new(ferry_rpc **out, const char *uri, const ferry_conn_opts *copts) {
    if (!out || !uri)
        return FERRY_EINVAL;
    ferry_rpc *r = calloc(1, sizeof *r);
    if (!r)
        return FERRY_ENOMEM;
    int rc = ferry_conn_open(&r->c, uri, copts);
    if (rc == 0)
        rc = start(r);
    if (rc < 0) {
        ferry_rpc_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ferry_rpc_free(ferry_rpc *r) {
    if (!r)
        return;
    ferry_conn_close(r->c);
    free(r);
}

int ferry_rpc_call(ferry_rpc *r, const char *exchange, const char *routing_key, const ferry_message *req,
                   int timeout_ms, ferry_message **reply) {
    if (!r || !req || !reply || timeout_ms <= 0)
        return FERRY_EINVAL;
    int64_t deadline = ferry_now_ms() + timeout_ms;
    ferry_conn *c = r->c;
    int rc = 0;
    if (!c->st)
        rc = ferry_conn_reconnect(c, deadline);
    if (rc == 0)
        rc = start(r);
    if (rc < 0)
        return rc;
    ferry_message *m = ferry_message_copy(req);
    if (!m)
        return FERRY_ENOMEM;
    char corr[256];
    const char *given = ferry_message_property(m, "correlation_id");
    if (given)
        snprintf(corr, sizeof corr, "%s", given);
    else if ((rc = ferry_uuid(corr)) == 0)
        rc = ferry_message_set_property(m, "correlation_id", corr);
    if (rc == 0)
        rc = ferry_message_set_property(m, "reply_to", REPLY_TO);
    if (rc == 0)
        rc = fp_basic_publish(c, FC_CH_RPC, exchange, routing_key, 1, m);
    ferry_message_free(m);
    if (rc < 0)
        return rc;
    size_t cl = strlen(corr);
    for (;;) {
        int64_t left = deadline - ferry_now_ms();
        if (left <= 0)
            return FERRY_ETIMEDOUT;
        amqp_maybe_release_buffers(c->st);
        amqp_frame_t f;
        struct timeval tv = {(long)(left / 1000), (long)(left % 1000) * 1000};
        int s = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
        if (s == AMQP_STATUS_TIMEOUT)
            return FERRY_ETIMEDOUT;
        if (s != AMQP_STATUS_OK)
            return fc_status_error(c, s, "waiting for the reply");
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if ((rc = fc_handle_close_frame(c, &f)) < 0)
            return rc;
        if (f.channel != FC_CH_RPC)
            continue;
        int returned = f.payload.method.id == AMQP_BASIC_RETURN_METHOD;
        if (f.payload.method.id != AMQP_BASIC_DELIVER_METHOD && !returned)
            continue;
        amqp_bytes_t ex = {0, NULL}, rk = {0, NULL};
        int redelivered = 0;
        if (!returned) {
            amqp_basic_deliver_t *d = f.payload.method.decoded;
            ex = amqp_bytes_malloc_dup(d->exchange);
            rk = amqp_bytes_malloc_dup(d->routing_key);
            redelivered = d->redelivered;
        }
        amqp_message_t msg;
        amqp_rpc_reply_t rr = amqp_read_message(c->st, FC_CH_RPC, &msg, 0);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            amqp_bytes_free(ex);
            amqp_bytes_free(rk);
            return fc_reply_error(c, rr, FC_CH_RPC, "reading the reply");
        }
        int match = (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
                    msg.properties.correlation_id.len == cl && memcmp(msg.properties.correlation_id.bytes, corr, cl) == 0;
        if (match && returned) {
            amqp_destroy_message(&msg);
            return FERRY_EUNROUTABLE;
        }
        if (match) {
            rc = fm_from_parts(reply, &msg.properties, msg.body, ex, rk, redelivered);
            amqp_destroy_message(&msg);
            amqp_bytes_free(ex);
            amqp_bytes_free(rk);
            return rc;
        }
        amqp_destroy_message(&msg); /* a late reply to an earlier call, or a stray return */
        amqp_bytes_free(ex);
        amqp_bytes_free(rk);
    }
}
