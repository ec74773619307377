/* client.h — a minimal AMQP 0-9-1 client connection for the load generator.
 *
 * The bench needs what a general client library hides: control over exactly how many
 * messages go into one write(), reads into one large buffer, and acks batched by hand. So
 * it speaks the protocol itself with the wire codec the broker uses (src/wire.h), the way
 * mosquitto's broker and client library share their packet code. Setup (handshake,
 * declarations) is blocking and synchronous; the producer and consumer loops then drive
 * the socket non-blocking through `in`/`out` themselves. Only channel 1 is ever used. */
#ifndef FERRY_CLIENT_H
#define FERRY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "wire.h"

/* amqp://user:pass@host:port/vhost (or amqps://, TLS), percent-decoded. */
typedef struct amqp_uri {
    char host[256];
    char port[8];
    char user[256];
    char pass[256];
    char vhost[256];
    int tls; /* amqps:// (default port 5671) */
} amqp_uri;

typedef struct client {
    int fd;
    struct ssl_st *ssl; /* amqps: OpenSSL over fd (non-blocking from the handshake on) */
    buf in;      /* bytes read, not yet parsed */
    buf out;     /* bytes encoded, not yet written */
    size_t skip; /* bytes of `in` held by the last frame handed out; dropped on the next read */
    uint32_t frame_max;
    int blocked;        /* connection.blocked received and not yet unblocked */
    int channel_closed; /* the broker closed channel 1 */
    char err[512];
} client;

/* Parses an AMQP URI. Returns 0, or -1 with a reason in err. */
int uri_parse(const char *s, amqp_uri *u, char *err, size_t n);

/* amqps: verify the broker's certificate against this CA file (PEM) and its name against the
 * URI's host; without it (NULL) the certificate is not verified. Call before client_open. */
void client_tls_cacert(const char *cacert);
/* Connects (amqps: and does the TLS handshake), authenticates (PLAIN), opens the vhost and channel 1. 0 or -1 (c->err says why). */
int client_open(client *c, const amqp_uri *u, const char *name);
/* Sends connection.close and waits (bounded) for close-ok, so the broker has processed every
 * frame sent before it; then frees everything. Safe on a failed or half-open client. */
void client_close(client *c, int timeout_ms);
void client_set_nonblocking(client *c);

/* Writes out as far as the socket takes it without blocking: 0, or -1 on a dead socket. */
int client_write_some(client *c);
/* client_write_some with n more bytes at *p (a body written in place, not copied into `out`)
 * going after the first *before bytes of `out`: *before, *p and *n advance by what was
 * written; the rest of `out` follows once *n is 0. Plain TCP only. */
int client_write_extra(client *c, size_t *before, const uint8_t **p, size_t *n);
/* Reads once, without blocking, into `in`: bytes read, 0 if none were ready, -1 on EOF/error.
 * (amqps: up to `room` bytes of decrypted records; see client_pending.) */
long client_read_some(client *c, size_t room);
/* Bytes OpenSSL decrypted but client_read_some has not taken yet: polling the socket would
 * not see them, so read again before waiting. */
int client_pending(const client *c);
/* amqps: the negotiated protocol ("TLSv1.3"); NULL for a plain connection. */
const char *client_tls_version(const client *c);
/* Parses the frame at in[*pos]: 1 (and advances *pos), 0 if incomplete, -1 on a framing error. */
int client_parse(client *c, size_t *pos, frame *f);

/* Handles a frame no loop expects: connection.close / channel.close become an error in c->err
 * (-1), connection.blocked/unblocked update c->blocked; anything else is ignored (0). */
int client_control_frame(client *c, const frame *f);

/* Synchronous methods on channel 1 (flush, then wait for the reply, up to 30 s). On a
 * channel.close from the broker they return -1 with "queue.declare: 406 PRECONDITION_FAILED
 * - ..." in c->err and reopen the channel, so the caller may carry on. */
int client_queue_declare(client *c, const char *name, int durable, int passive, uint32_t *messages);
int client_queue_delete(client *c, const char *name);
int client_queue_bind(client *c, const char *queue, const char *exchange, const char *key);
/* n queue.binds of queues[i] to exchange with keys[i], written back to back and then their
 * n bind-oks awaited (one round trip for the lot): 0, or -1 at the first refusal. */
int client_queue_bind_batch(client *c, const char *exchange, const char *const *queues, const char *const *keys,
                            size_t n);
int client_exchange_declare(client *c, const char *name, const char *type, int durable);
int client_exchange_delete(client *c, const char *name);
int client_qos(client *c, uint16_t prefetch);
int client_consume(client *c, const char *queue, int no_ack);
/* A stream queue (x-queue-type stream, durable), and a manual-ack consumer of one starting at
 * x-stream-offset `offset` (first, last, next). */
int client_stream_declare(client *c, const char *name);
int client_consume_stream(client *c, const char *queue, const char *offset);
int client_confirm_select(client *c);

#endif
