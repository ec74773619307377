/* rpc.h — request/reply over RabbitMQ's direct reply-to (amq.rabbitmq.reply-to), which ferryd
 * implements too: no reply queue is declared; the reply comes straight back on the caller's
 * channel. A server is anything that publishes to reply_to with the correlation id — e.g.
 * `ferry worker` (CMD's stdout) or a ferry_worker handler calling ferry_job_set_reply. */
#ifndef FERRY_RPC_H
#define FERRY_RPC_H

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_rpc ferry_rpc;

/* Connects (one attempt) and starts consuming amq.rabbitmq.reply-to. */
int ferry_rpc_new(ferry_rpc **out, const char *uri, const ferry_conn_opts *copts);
void ferry_rpc_free(ferry_rpc *r); /* NULL ok */

/* Publishes req (mandatory; reply_to and, unless req has one, a fresh correlation id are
 * set on a copy) and waits up to timeout_ms (> 0) for the reply with that correlation id.
 * 0 and *reply (free with ferry_message_free); FERRY_ETIMEDOUT (no reply in time: a late
 * reply is dropped by the next call); FERRY_EUNROUTABLE (no queue took the request);
 * FERRY_EREFUSED (e.g. no such exchange); FERRY_ECLOSED (the connection was lost: the next
 * call reconnects). */
int ferry_rpc_call(ferry_rpc *r, const char *exchange, const char *routing_key, const ferry_message *req,
                   int timeout_ms, ferry_message **reply);

#ifdef __cplusplus
}
#endif
#endif
