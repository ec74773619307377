/* message.c — published messages: one allocation, shared by reference between queues. */
#include "broker.h"

#include <assert.h>
#include <stdlib.h>

#include "memacct.h"
#include "util.h"

uint64_t message_bytes(void) { return memacct_get(MEM_MESSAGES); }

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
    memacct_add(MEM_MESSAGES, n);
    return m;
}

message *message_grow(message *m, uint64_t body_len) {
    assert(m->refs == 1 && body_len >= m->body_len);
    size_t head = MESSAGE_HEADER + m->exchange_len + 1u + m->rkey_len + 1u + m->props_len;
    m = xrealloc(m, head + body_len);
    memacct_add(MEM_MESSAGES, body_len - m->body_len);
    m->body_len = body_len;
    return m;
}

void message_unref(message *m) {
    if (m && --m->refs == 0) {
        memacct_sub(MEM_MESSAGES, MESSAGE_HEADER + m->exchange_len + 1u + m->rkey_len + 1u + m->props_len + m->body_len);
        free(m);
    }
}

/* ---- header edits (x-delivery-count, x-retry-count, x-delay) ---- */

/* Appends one integer table entry: 'I' (32-bit, as RabbitMQ's signedint) or 'l' (64-bit). */
static void put_int(buf *h, const char *key, char type, int64_t v) {
    buf_shortstr(h, key, strlen(key));
    buf_u8(h, (uint8_t)type);
    if (type == 'I')
        buf_u32(h, (uint32_t)(int32_t)v);
    else
        buf_u64(h, (uint64_t)v);
}

/* Like RabbitMQ's rabbit_misc:set_table_value: an existing entry keeps its position, a new
 * one goes last. The properties must be well-formed (they were parsed on publish). */
void props_set_int_header(slice props, const char *key, char type, int64_t v, buf *out) {
    props_view pv;
    props_parse(props, &pv);
    buf h;
    buf_init(&h);
    rd r = rd_make(pv.headers.p, pv.headers.n);
    const uint8_t *start = r.p;
    slice k;
    fval fv;
    int done = 0;
    while (table_next(&r, &k, &fv) == 1) {
        if (!done && slice_eqs(k, key)) {
            put_int(&h, key, type, v);
            done = 1;
        } else {
            buf_put(&h, start, (size_t)(r.p - start));
        }
        start = r.p;
    }
    if (!done)
        put_int(&h, key, type, v);
    props_rewrite(props, (slice){buf_head(&h), h.len}, 0, out);
    buf_free(&h);
}

message *message_set_int_header(const message *m, const char *key, char type, int64_t v) {
    buf props;
    buf_init(&props);
    props_set_int_header((slice){msg_props(m), m->props_len}, key, type, v, &props);
    message *n = message_new((slice){(const uint8_t *)msg_exchange(m), m->exchange_len},
                             (slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, (slice){buf_head(&props), props.len},
                             m->body_len);
    buf_free(&props);
    if (m->body_len)
        memcpy(msg_body(n), msg_body(m), m->body_len);
    n->persistent = m->persistent;
    n->priority = m->priority;
    n->ttl = m->ttl;
    return n;
}
