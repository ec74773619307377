/* message.c — published messages: one allocation, shared by reference between queues. */
#include "broker.h"

#include <stdlib.h>

#include "util.h"

static uint64_t total_bytes; /* owned by the loop thread */

uint64_t message_bytes(void) { return total_bytes; }

message *message_new(slice exchange, slice rkey, slice props, uint64_t body_len) {
    size_t n = MESSAGE_HEADER + exchange.n + 1 + rkey.n + 1 + props.n + body_len;
    message *m = xmalloc(n);
    memset(m, 0, MESSAGE_HEADER);
    m->refs = 1;
    m->ttl = -1;
    m->exchange_len = (uint8_t)exchange.n;
    m->rkey_len = (uint8_t)rkey.n;
    m->props_len = (uint32_t)props.n;
    m->body_len = body_len;
    char *p = msg_exchange(m);
    if (exchange.n)
        memcpy(p, exchange.p, exchange.n);
    p[exchange.n] = 0;
    p = msg_rkey(m);
    if (rkey.n)
        memcpy(p, rkey.p, rkey.n);
    p[rkey.n] = 0;
    if (props.n)
        memcpy(msg_props(m), props.p, props.n);
    total_bytes += n;
    return m;
}

void message_unref(message *m) {
    if (m && --m->refs == 0) {
        total_bytes -= MESSAGE_HEADER + m->exchange_len + 1u + m->rkey_len + 1u + m->props_len + m->body_len;
        free(m);
    }
}
