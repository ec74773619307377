/* internal.h — what libferry's files share and the public headers hide: the layouts of the
 * opaque handles (connection, message), the fixed channel numbers, and the helpers that
 * turn rabbitmq-c's replies into FERRY_E* values. Not installed. */
#ifndef FERRY_LIB_INTERNAL_H
#define FERRY_LIB_INTERNAL_H

#include <amqp.h>
#include <amqp_framing.h>

#include "ferry/ferry.h"

/* Each part of the library uses its own channel on its own connection, so a channel error
 * in one (a declare refused with 406) never takes another's state with it. */
enum { FC_CH_CTRL = 1, FC_CH_PUB = 2, FC_CH_CONSUME = 3, FC_CH_RPC = 4, FC_CH_MAX = 8 };

struct ferry_conn {
    char *uri;             /* as given (for reconnects) */
    char *uri_buf;         /* copy parsed in place by amqp_parse_url; info points into it */
    struct amqp_connection_info info;
    ferry_conn_opts opts;
    char *connection_name;
    amqp_connection_state_t st; /* NULL while down */
    uint64_t generation;   /* +1 per successful (re)connect: channels of older ones are gone */
    unsigned char ch_open[FC_CH_MAX];
    char **caps;           /* capability names announced as true */
    size_t ncaps;
    char product[64];
    char err[512];
    int backoff_ms;
    int64_t next_attempt_ms; /* when ferry_conn_reconnect tries next (0: after the initial wait) */
};

struct ferry_message {
    amqp_pool_t pool;                 /* strings of props and headers live here */
    amqp_basic_properties_t props;
    amqp_bytes_t body;                /* malloc'd */
    char *exchange, *routing_key;     /* of a delivery */
    int redelivered;
    char numbuf[3][24];               /* text of delivery_mode, priority, timestamp */
};

/* Connection internals */
int fc_channel(ferry_conn *c, amqp_channel_t ch); /* opens ch on this generation if needed */
int fc_reply_error(ferry_conn *c, amqp_rpc_reply_t r, amqp_channel_t ch, const char *what);
int fc_status_error(ferry_conn *c, int status, const char *what);
void fc_lost(ferry_conn *c, const char *why); /* drops the connection state */
int fc_handle_close_frame(ferry_conn *c, const amqp_frame_t *f); /* channel/connection close */
void fc_set_err(ferry_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fc_table_from_json(const char *json, amqp_table_t *out, amqp_pool_t *pool);

/* Message internals */
int fm_from_envelope(ferry_message **out, const amqp_envelope_t *e);
int fm_from_parts(ferry_message **out, const amqp_basic_properties_t *p, amqp_bytes_t body,
                  amqp_bytes_t exchange, amqp_bytes_t routing_key, int redelivered);
int fm_set_header_value(ferry_message *m, const char *key, amqp_field_value_t v);
const amqp_field_value_t *fm_header(const ferry_message *m, const char *key);
amqp_bytes_t fm_pool_str(ferry_message *m, const char *s);
char *fm_bytes_dup(amqp_bytes_t b);
/* An AMQP field table as a JSON object (jansson), as the management API shows headers:
 * numbers, booleans, nested tables and arrays, timestamps as seconds, decimals scaled,
 * bytes that are not UTF-8 kept as ASCII with '?' for the rest. Shared with `ferry consume`. */
struct json_t *fm_table_json(const amqp_table_t *t);

/* Publisher internals shared with the worker and RPC: a publish on channel ch. */
int fp_basic_publish(ferry_conn *c, amqp_channel_t ch, const char *exchange, const char *rk,
                     int mandatory, const ferry_message *m);

#endif
