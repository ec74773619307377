/* message.h — a published message: one allocation holding its exchange name, routing key,
 * the publisher's property bytes and the body, shared by reference between the queues it
 * was routed to and the store (which records where its log record is, for paging). A base
 * type: both the broker and the store layers use it, neither owns the other. */
#ifndef FERRY_MESSAGE_H
#define FERRY_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

typedef struct message {
    uint32_t refs;
    uint32_t props_len;
    uint64_t body_len;
    uint32_t seg;      /* store: the segment holding its publish record (if in_store) */
    uint32_t doff;     /* paging: offset of its record in seg, if on_disk */
    int64_t ttl;       /* the expiration property in ms; -1 = none */
    uint32_t dlen;     /* paging: length of that record */
    uint8_t persistent;    /* delivery-mode 2 */
    uint8_t in_store;      /* has a publish record in the store */
    uint8_t priority;
    uint8_t exchange_len;
    uint8_t rkey_len;
    uint8_t on_disk;       /* paging: a written, synced record of it is at (seg, doff, dlen) */
    uint8_t pg_wait;       /* paging: its record is in a batch not yet written */
    uint8_t pg_never;      /* paging: its publish record failed to write; kept in memory */
    /* exchange NUL, routing key NUL, the publisher's property bytes (flags + list), body:
     * packed, no pointers, so a queued message costs its bytes plus ~45 (see msg_*). */
    uint8_t data[];
} message;

static inline char *msg_exchange(const message *m) { return (char *)(uintptr_t)m->data; }
static inline char *msg_rkey(const message *m) { return msg_exchange(m) + m->exchange_len + 1; }
static inline uint8_t *msg_props(const message *m) { return (uint8_t *)msg_rkey(m) + m->rkey_len + 1; }
static inline uint8_t *msg_body(const message *m) { return msg_props(m) + m->props_len; }

#define MESSAGE_HEADER offsetof(message, data)
/* One allocation holds the struct, names, properties and body. */
message *message_new(slice exchange, slice rkey, slice props, uint64_t body_len);
static inline message *message_ref(message *m) {
    m->refs++;
    return m;
}
void message_unref(message *m);
/* Makes room for a body of body_len bytes (>= the current one; the first body_len bytes so
 * far are kept): publish assembly grows a body as its frames arrive. m must be unshared. */
message *message_grow(message *m, uint64_t body_len);

/* Bytes held by message bodies and properties (message.c). */
uint64_t message_bytes(void);

#endif
