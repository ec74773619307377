/* ferry.h — libferry: the application side of Ferry's patterns, in C, on rabbitmq-c.
 *
 * This header is the core: error values, connection options, connections from an AMQP URI
 * with reconnect and back-off, messages, and the reliable publisher. The other headers
 * (envelope.h, worker.h, rpc.h, seq.h, outbox.h, idempotent.h) build on it.
 *
 * Conventions (libuv style): every name starts with ferry_ / FERRY_; handles are opaque and
 * made by a *_new / *_open function and released by the matching *_free / *_close; functions
 * that can fail return 0 or a negative FERRY_E* value (ferry_strerror names it) and leave
 * their outputs untouched on failure; the library never exits, never prints, never installs
 * signal handlers. A handle is used by one thread at a time (rabbitmq-c connections are not
 * thread-safe); ferry_worker_stop is the one call meant for another thread or a signal
 * handler. Everything works against ferryd and RabbitMQ alike. */
#ifndef FERRY_FERRY_H
#define FERRY_FERRY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

/* Handler results (worker.h) are the non-negative values; errors are negative. */
#define FERRY_OK 0
#define FERRY_RETRY 1 /* a worker handler: try again after the next retry delay */
#define FERRY_FAIL 2  /* a worker handler: dead-letter now, do not retry */

#define FERRY_EINVAL -1       /* an argument is invalid (NULL, empty name, bad URI, bad duration) */
#define FERRY_ENOMEM -2       /* out of memory */
#define FERRY_ECONNECT -3     /* cannot reach the broker (TCP/TLS connect failed) */
#define FERRY_EAUTH -4        /* the broker refused the login (403 ACCESS_REFUSED, bad vhost) */
#define FERRY_ECLOSED -5      /* the connection was lost or closed by the broker */
#define FERRY_ETIMEDOUT -6    /* no answer in time (confirm, RPC reply, connect) */
#define FERRY_ENACK -7        /* the broker nacked the publish (it did not take the message) */
#define FERRY_EUNROUTABLE -8  /* a mandatory publish matched no queue (basic.return) */
#define FERRY_EREFUSED -9     /* the broker closed the channel (e.g. 404 NOT_FOUND, 406 PRECONDITION_FAILED) */
#define FERRY_EPROTO -10      /* an unexpected AMQP frame or a rabbitmq-c internal error */
#define FERRY_EJSON -11       /* JSON that does not parse, or of the wrong shape */
#define FERRY_ENOTFOUND -12   /* the thing asked for does not exist (header, property) */
#define FERRY_ESTOPPED -13    /* the handle was stopped (worker) */
#define FERRY_ESYS -14        /* a system call failed (errno is kept) */
#define FERRY_EDB -15         /* the application database (SQLite, PostgreSQL) refused or failed (outbox, idempotent consumer) */

/* A static English description of a FERRY_* value (never NULL). */
const char *ferry_strerror(int err);

/* ---------------------------------------------------------------- durations */

/* Parses "250ms", "5s", "30m", "1h", "2d" (and a bare "0") into milliseconds.
 * FERRY_EINVAL for anything else (no unit, negative, overflow). */
int ferry_parse_duration(const char *s, int64_t *ms);

/* Parses a comma-separated list of durations ("1s,5s,30s,5m"); *out is malloc'd (free()),
 * *n its length. An empty string gives n = 0. */
int ferry_parse_durations(const char *s, int64_t **out, size_t *n);

/* ---------------------------------------------------------------- connections */

typedef struct ferry_conn_opts {
    int connect_timeout_ms;    /* TCP connect + AMQP handshake; default 5000 */
    int backoff_initial_ms;    /* first wait before reconnecting; default 100 */
    int backoff_max_ms;        /* waits double up to this; default 5000 (each with ±25% jitter) */
    int heartbeat_s;           /* proposed heartbeat; default 0 (off: rabbitmq-c services it only while reading) */
    const char *connection_name; /* client property connection_name, shown by the broker */
} ferry_conn_opts;

/* Defaults for every field (use it, then change what you need). */
void ferry_conn_opts_init(ferry_conn_opts *o);

typedef struct ferry_conn ferry_conn;

/* Connects to an amqp:// or amqps:// URI (amqp://user:pass@host:port/vhost; defaults
 * guest/guest, localhost, 5672, "/"), one attempt. opts may be NULL (defaults).
 * FERRY_EINVAL (bad URI), FERRY_ECONNECT, FERRY_EAUTH, FERRY_ETIMEDOUT. */
int ferry_conn_open(ferry_conn **out, const char *uri, const ferry_conn_opts *opts);

/* Drops the current connection (if any) and connects again, waiting the back-off before
 * each attempt (initial, doubling, capped, jittered) until it succeeds or deadline_ms
 * (a ferry_now_ms() value; 0 = for ever) passes: then FERRY_ETIMEDOUT. */
int ferry_conn_reconnect(ferry_conn *c, int64_t deadline_ms);

/* Closes the connection (connection.close, then the socket) and frees the handle. NULL ok. */
void ferry_conn_close(ferry_conn *c);

/* 1 if the server announced capability `name` as true in connection.start
 * (e.g. "publisher_confirms", "direct_reply_to", "x-retry-delays"), else 0. */
int ferry_conn_has_capability(const ferry_conn *c, const char *name);

/* The server's "product" property ("Ferry", "RabbitMQ"), "" if none. */
const char *ferry_conn_product(const ferry_conn *c);

/* The broker's words for the last FERRY_EREFUSED / FERRY_ECLOSED / FERRY_EAUTH
 * ("404 NOT_FOUND - no queue 'x' in vhost '/'"), or a description of the last error. */
const char *ferry_conn_last_error(const ferry_conn *c);

/* Declares a durable queue (arguments given as a JSON object text, NULL for none:
 * {"x-message-ttl": 1000, "x-dead-letter-exchange": ""}; integers become AMQP longs,
 * lists become arrays). FERRY_EREFUSED when it exists with other arguments (406). */
int ferry_conn_declare_queue(ferry_conn *c, const char *queue, const char *args_json);

/* 1 if the queue exists (passive declare), 0 if not, or an error. */
int ferry_conn_queue_exists(ferry_conn *c, const char *queue);

/* Milliseconds of CLOCK_MONOTONIC (for deadlines). */
int64_t ferry_now_ms(void);

/* ---------------------------------------------------------------- messages */

typedef struct ferry_message ferry_message;

ferry_message *ferry_message_new(void); /* NULL when out of memory */
void ferry_message_free(ferry_message *m); /* NULL ok */
ferry_message *ferry_message_copy(const ferry_message *m); /* deep copy; NULL on ENOMEM */

int ferry_message_set_body(ferry_message *m, const void *body, size_t len);
const void *ferry_message_body(const ferry_message *m, size_t *len);

/* AMQP basic properties by their AMQP names: content_type, content_encoding, message_id,
 * correlation_id, reply_to, expiration, type, user_id, app_id, cluster_id (strings), and
 * delivery_mode, priority, timestamp (numbers, as decimal text). NULL value unsets.
 * FERRY_EINVAL for an unknown name or a bad number. */
int ferry_message_set_property(ferry_message *m, const char *name, const char *value);
/* The property as text, or NULL if unset. The pointer lives until the message changes. */
const char *ferry_message_property(const ferry_message *m, const char *name);

/* Headers (the AMQP headers table). Setting replaces an existing key. */
int ferry_message_set_header_str(ferry_message *m, const char *key, const char *value);
int ferry_message_set_header_int(ferry_message *m, const char *key, int64_t value);
int ferry_message_remove_header(ferry_message *m, const char *key);
/* A string header (longstr or bytes), malloc'd copy in *out; FERRY_ENOTFOUND / FERRY_EINVAL
 * (not a string). */
int ferry_message_header_str(const ferry_message *m, const char *key, char **out);
/* An integer header (any AMQP integer type, or a decimal string); FERRY_ENOTFOUND / FERRY_EINVAL. */
int ferry_message_header_int(const ferry_message *m, const char *key, int64_t *out);
/* The headers table as a JSON object (malloc'd text; nested tables and arrays kept,
 * timestamps as integers, byte arrays as strings); "{}" when there are none. */
char *ferry_message_headers_json(const ferry_message *m);

/* Where a delivered message came from (NULL/0 for messages made by the application). */
const char *ferry_message_exchange(const ferry_message *m);
const char *ferry_message_routing_key(const ferry_message *m);
int ferry_message_redelivered(const ferry_message *m);

/* ---------------------------------------------------------------- reliable publisher */

typedef struct ferry_publisher ferry_publisher;

typedef struct ferry_publisher_opts {
    int mandatory;  /* 1: a message no queue takes is an error (FERRY_EUNROUTABLE); default 0 */
    int persistent; /* 1: delivery_mode 2 unless the message sets it; default 1 */
    size_t max_unconfirmed; /* ferry_publisher_send blocks (flushes) beyond this; default 1024 */
} ferry_publisher_opts;

void ferry_publisher_opts_init(ferry_publisher_opts *o);

/* Connects (one attempt; later losses reconnect with back-off) and puts a channel into
 * confirm mode. copts / popts may be NULL. */
int ferry_publisher_new(ferry_publisher **out, const char *uri, const ferry_conn_opts *copts,
                        const ferry_publisher_opts *popts);
void ferry_publisher_free(ferry_publisher *p); /* unconfirmed messages are forgotten; NULL ok */

/* Publishes one message and waits for the broker's confirm: 0 when the broker has taken
 * it (for a persistent message to a durable queue: on disk), else FERRY_ENACK,
 * FERRY_EUNROUTABLE, FERRY_EREFUSED (e.g. no such exchange), FERRY_ETIMEDOUT. If the
 * connection drops before the confirm, it reconnects with back-off and publishes again
 * (so a message may arrive twice, never zero times unreported) until timeout_ms passes
 * (0 = wait for ever). */
int ferry_publish(ferry_publisher *p, const char *exchange, const char *routing_key,
                  const ferry_message *m, int timeout_ms);

/* Pipelined form: ferry_publisher_send queues the message (copied) on the wire and returns
 * at once; ferry_publisher_flush waits until every sent message is settled and calls
 * cb(arg, token, result) once per message, in send order, with 0 or a FERRY_E* as above.
 * Lost connections are handled as in ferry_publish. flush returns 0 when every message was
 * settled (whatever each result), FERRY_ETIMEDOUT if some were not by then (cb has been
 * called for those settled; the rest are still pending and a later flush settles them). */
typedef void (*ferry_confirm_cb)(void *arg, uint64_t token, int result);
int ferry_publisher_send(ferry_publisher *p, const char *exchange, const char *routing_key,
                         const ferry_message *m, uint64_t token);
int ferry_publisher_flush(ferry_publisher *p, int timeout_ms, ferry_confirm_cb cb, void *arg);

/* Messages sent and not yet settled. */
size_t ferry_publisher_pending(const ferry_publisher *p);

/* The connection under the publisher (for declares and capabilities; do not close it). */
ferry_conn *ferry_publisher_conn(ferry_publisher *p);

#ifdef __cplusplus
}
#endif
#endif
