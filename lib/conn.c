/* conn.c — connections: an AMQP URI to an open rabbitmq-c connection, what the server
 * announced (capabilities, product), reconnecting with back-off, and turning rabbitmq-c's
 * reply structures into FERRY_E* values with the broker's words kept for
 * ferry_conn_last_error. Each higher part (publisher, worker, RPC) owns one ferry_conn and
 * its fixed channel numbers (internal.h). */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "internal.h"

int64_t ferry_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ferry_conn_opts_init(ferry_conn_opts *o) {
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 5000;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
}

void fc_set_err(ferry_conn *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

static void free_caps(ferry_conn *c) {
    for (size_t i = 0; i < c->ncaps; i++)
        free(c->caps[i]);
    free(c->caps);
    c->caps = NULL;
    c->ncaps = 0;
}

/* Remembers the server's capabilities (the true ones) and product from connection.start. */
static void read_server_properties(ferry_conn *c) {
    free_caps(c);
    c->product[0] = 0;
    const amqp_table_t *t = amqp_get_server_properties(c->st);
    if (!t)
        return;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == 7 && memcmp(e->key.bytes, "product", 7) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            size_t n = e->value.value.bytes.len < sizeof c->product - 1 ? e->value.value.bytes.len
                                                                        : sizeof c->product - 1;
            memcpy(c->product, e->value.value.bytes.bytes, n);
            c->product[n] = 0;
        }
        if (e->key.len == 12 && memcmp(e->key.bytes, "capabilities", 12) == 0 &&
            e->value.kind == AMQP_FIELD_KIND_TABLE) {
            const amqp_table_t *caps = &e->value.value.table;
            c->caps = calloc((size_t)caps->num_entries + 1, sizeof *c->caps);
            if (!c->caps)
                return;
            for (int j = 0; j < caps->num_entries; j++) {
                const amqp_table_entry_t *ce = &caps->entries[j];
                if (ce->value.kind == AMQP_FIELD_KIND_BOOLEAN && ce->value.value.boolean)
                    c->caps[c->ncaps++] = fm_bytes_dup(ce->key);
            }
        }
    }
}

void fc_lost(ferry_conn *c, const char *why) {
    if (why && !c->err[0])
        fc_set_err(c, "%s", why);
    if (c->st) {
        amqp_destroy_connection(c->st);
        c->st = NULL;
    }
    memset(c->ch_open, 0, sizeof c->ch_open);
}

/* Answers a broker-initiated close frame: channel.close → close-ok, the channel is gone
 * (FERRY_EREFUSED); connection.close → close-ok, the connection is gone (FERRY_ECLOSED).
 * Returns 0 when f is neither. */
int fc_handle_close_frame(ferry_conn *c, const amqp_frame_t *f) {
    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    if (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = f->payload.method.decoded;
        fc_set_err(c, "%u %.*s", m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(c->st, f->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        if (f->channel < FC_CH_MAX)
            c->ch_open[f->channel] = 0;
        return FERRY_EREFUSED;
    }
    if (f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = f->payload.method.decoded;
        fc_set_err(c, "%u %.*s", m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        fc_lost(c, NULL);
        return FERRY_ECLOSED;
    }
    return 0;
}

int fc_status_error(ferry_conn *c, int status, const char *what) {
    fc_set_err(c, "%s: %s", what, amqp_error_string2(status));
    if (status == AMQP_STATUS_TIMEOUT)
        return FERRY_ETIMEDOUT;
    if (status == AMQP_STATUS_NO_MEMORY)
        return FERRY_ENOMEM;
    fc_lost(c, NULL);
    return FERRY_ECLOSED;
}

int fc_reply_error(ferry_conn *c, amqp_rpc_reply_t r, amqp_channel_t ch, const char *what) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        fc_set_err(c, "%s: no reply", what);
        return FERRY_EPROTO;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return fc_status_error(c, r.library_error, what);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fc_set_err(c, "%s: %u %.*s", what, m->reply_code, (int)m->reply_text.len,
                       (char *)m->reply_text.bytes);
            amqp_channel_close_ok_t ok = {0};
            amqp_send_method(c->st, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            if (ch < FC_CH_MAX)
                c->ch_open[ch] = 0;
            return FERRY_EREFUSED;
        }
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fc_set_err(c, "%s: %u %.*s", what, m->reply_code, (int)m->reply_text.len,
                       (char *)m->reply_text.bytes);
            int code = m->reply_code;
            amqp_connection_close_ok_t ok = {0};
            amqp_send_method(c->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            fc_lost(c, NULL);
            return code == 403 || code == 530 ? FERRY_EAUTH : FERRY_ECLOSED;
        }
        fc_set_err(c, "%s: unexpected method 0x%08x", what, r.reply.id);
        return FERRY_EPROTO;
    }
    return FERRY_EPROTO;
}

int fc_channel(ferry_conn *c, amqp_channel_t ch) {
    if (!c->st)
        return FERRY_ECLOSED;
    if (ch < FC_CH_MAX && c->ch_open[ch])
        return 0;
    amqp_channel_open(c->st, ch);
    int rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), ch, "channel.open");
    if (rc == 0 && ch < FC_CH_MAX)
        c->ch_open[ch] = 1;
    return rc;
}

/* One connection attempt with the parsed URI. */
static int connect_once(ferry_conn *c) {
    c->err[0] = 0;
    amqp_connection_state_t st = amqp_new_connection();
    if (!st)
        return FERRY_ENOMEM;
    amqp_socket_t *sock = c->info.ssl ? amqp_ssl_socket_new(st) : amqp_tcp_socket_new(st);
    if (!sock) {
        amqp_destroy_connection(st);
        return FERRY_ENOMEM;
    }
    if (c->info.ssl) {
        const char *ca = getenv("FERRY_CACERT");
        if (ca && *ca)
            amqp_ssl_socket_set_cacert(sock, ca);
    }
    struct timeval tv = {c->opts.connect_timeout_ms / 1000, (c->opts.connect_timeout_ms % 1000) * 1000};
    int s = amqp_socket_open_noblock(sock, c->info.host, c->info.port, &tv);
    if (s != AMQP_STATUS_OK) {
        fc_set_err(c, "connect %s:%d: %s", c->info.host, c->info.port, amqp_error_string2(s));
        amqp_destroy_connection(st);
        return s == AMQP_STATUS_TIMEOUT ? FERRY_ETIMEDOUT : FERRY_ECONNECT;
    }
    amqp_set_handshake_timeout(st, &tv);
    amqp_set_rpc_timeout(st, &tv);
    amqp_table_entry_t props[2];
    int np = 0;
    props[np].key = amqp_cstring_bytes("product");
    props[np].value.kind = AMQP_FIELD_KIND_UTF8;
    props[np++].value.value.bytes = amqp_cstring_bytes("libferry");
    if (c->connection_name) {
        props[np].key = amqp_cstring_bytes("connection_name");
        props[np].value.kind = AMQP_FIELD_KIND_UTF8;
        props[np++].value.value.bytes = amqp_cstring_bytes(c->connection_name);
    }
    amqp_table_t pt = {np, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(st, c->info.vhost, 0, 131072, c->opts.heartbeat_s, &pt,
                                                    AMQP_SASL_METHOD_PLAIN, c->info.user, c->info.password);
    c->st = st;
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        int rc = fc_reply_error(c, r, 0, "login");
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error != AMQP_STATUS_TIMEOUT)
            rc = FERRY_EAUTH; /* the server closed the socket during the handshake: a refused login */
        fc_lost(c, NULL);
        return rc;
    }
    /* rpc waits (declares) get a generous bound; frame reads use their own timeouts */
    struct timeval rpc = {30, 0};
    amqp_set_rpc_timeout(st, &rpc);
    memset(c->ch_open, 0, sizeof c->ch_open);
    c->generation++;
    read_server_properties(c);
    c->backoff_ms = 0;
    return 0;
}

int ferry_conn_open(ferry_conn **out, const char *uri, const ferry_conn_opts *opts) {
    if (!out || !uri)
        return FERRY_EINVAL;
    ferry_conn *c = calloc(1, sizeof *c);
    if (!c)
        return FERRY_ENOMEM;
    if (opts)
        c->opts = *opts;
    else
        ferry_conn_opts_init(&c->opts);
    if (c->opts.connect_timeout_ms <= 0)
        c->opts.connect_timeout_ms = 5000;
    if (c->opts.backoff_initial_ms <= 0)
        c->opts.backoff_initial_ms = 100;
    if (c->opts.backoff_max_ms < c->opts.backoff_initial_ms)
        c->opts.backoff_max_ms = c->opts.backoff_initial_ms;
    c->uri = strdup(uri);
    c->uri_buf = strdup(uri);
    c->connection_name = c->opts.connection_name ? strdup(c->opts.connection_name) : NULL;
    c->opts.connection_name = NULL;
    if (!c->uri || !c->uri_buf) {
        ferry_conn_close(c);
        return FERRY_ENOMEM;
    }
    amqp_default_connection_info(&c->info);
    if (amqp_parse_url(c->uri_buf, &c->info) != AMQP_STATUS_OK) {
        ferry_conn_close(c);
        return FERRY_EINVAL;
    }
    /* "amqp://host/" names the vhost "" by the letter of the URI spec; every client people
     * use (pika, amqplib, ferry bench) takes it as "/" */
    if (!c->info.vhost || !*c->info.vhost)
        c->info.vhost = "/";
    int rc = connect_once(c);
    if (rc < 0) {
        ferry_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int ferry_conn_reconnect(ferry_conn *c, int64_t deadline_ms) {
    if (!c)
        return FERRY_EINVAL;
    if (c->st) {
        amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
        fc_lost(c, NULL);
    }
    /* The time of the next attempt is kept between calls, so callers that poll with short
     * deadlines (a worker that also has jobs to settle) still get attempts as the back-off
     * grows past their deadline. */
    if (!c->next_attempt_ms) {
        int wait = c->opts.backoff_initial_ms;
        c->next_attempt_ms = ferry_now_ms() + wait - wait / 4 + (int)(random() % (wait / 2 + 1));
    }
    for (;;) {
        int64_t now = ferry_now_ms();
        if (now < c->next_attempt_ms) {
            int64_t until = c->next_attempt_ms;
            if (deadline_ms && deadline_ms < until) {
                if (now < deadline_ms)
                    usleep((useconds_t)(deadline_ms - now) * 1000);
                return FERRY_ETIMEDOUT;
            }
            usleep((useconds_t)(until - now) * 1000);
        }
        int rc = connect_once(c);
        if (rc == 0) {
            c->next_attempt_ms = 0;
            return 0;
        }
        if (rc == FERRY_ENOMEM || rc == FERRY_EINVAL)
            return rc;
        /* doubling, capped, ±25% jitter */
        int next = c->backoff_ms ? c->backoff_ms * 2 : c->opts.backoff_initial_ms * 2;
        c->backoff_ms = next > c->opts.backoff_max_ms ? c->opts.backoff_max_ms : next;
        int wait = c->backoff_ms;
        c->next_attempt_ms = ferry_now_ms() + wait - wait / 4 + (int)(random() % (wait / 2 + 1));
    }
}

void ferry_conn_close(ferry_conn *c) {
    if (!c)
        return;
    if (c->st) {
        amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(c->st);
    }
    free_caps(c);
    free(c->uri);
    free(c->uri_buf);
    free(c->connection_name);
    free(c);
}

int ferry_conn_has_capability(const ferry_conn *c, const char *name) {
    if (!c || !name)
        return 0;
    for (size_t i = 0; i < c->ncaps; i++)
        if (strcmp(c->caps[i], name) == 0)
            return 1;
    return 0;
}

const char *ferry_conn_product(const ferry_conn *c) { return c ? c->product : ""; }

const char *ferry_conn_last_error(const ferry_conn *c) { return c ? c->err : ""; }

/* JSON value → AMQP field value (integers become longs: what x-message-ttl and
 * x-retry-delays expect on both brokers). */
static int field_from_json(json_t *v, amqp_field_value_t *f, amqp_pool_t *pool) {
    if (json_is_integer(v)) {
        f->kind = AMQP_FIELD_KIND_I64;
        f->value.i64 = json_integer_value(v);
    } else if (json_is_real(v)) {
        f->kind = AMQP_FIELD_KIND_F64;
        f->value.f64 = json_real_value(v);
    } else if (json_is_boolean(v)) {
        f->kind = AMQP_FIELD_KIND_BOOLEAN;
        f->value.boolean = json_is_true(v);
    } else if (json_is_string(v)) {
        size_t n = json_string_length(v);
        f->kind = AMQP_FIELD_KIND_UTF8;
        amqp_pool_alloc_bytes(pool, n, &f->value.bytes);
        if (n && !f->value.bytes.bytes)
            return FERRY_ENOMEM;
        if (n)
            memcpy(f->value.bytes.bytes, json_string_value(v), n);
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        f->kind = AMQP_FIELD_KIND_ARRAY;
        f->value.array.num_entries = (int)n;
        f->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t)) : NULL;
        if (n && !f->value.array.entries)
            return FERRY_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            int rc = field_from_json(json_array_get(v, i), &f->value.array.entries[i], pool);
            if (rc < 0)
                return rc;
        }
    } else if (json_is_object(v)) {
        f->kind = AMQP_FIELD_KIND_TABLE;
        char *s = json_dumps(v, JSON_COMPACT);
        if (!s)
            return FERRY_ENOMEM;
        int rc = fc_table_from_json(s, &f->value.table, pool);
        free(s);
        return rc;
    } else {
        f->kind = AMQP_FIELD_KIND_VOID;
    }
    return 0;
}

int fc_table_from_json(const char *json, amqp_table_t *out, amqp_pool_t *pool) {
    out->num_entries = 0;
    out->entries = NULL;
    if (!json)
        return 0;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return FERRY_EJSON;
    }
    size_t n = json_object_size(root);
    out->entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t)) : NULL;
    if (n && !out->entries) {
        json_decref(root);
        return FERRY_ENOMEM;
    }
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, k, v) {
        amqp_table_entry_t *e = &out->entries[out->num_entries];
        size_t kl = strlen(k);
        amqp_pool_alloc_bytes(pool, kl, &e->key);
        if (kl && !e->key.bytes) {
            rc = FERRY_ENOMEM;
            break;
        }
        if (kl)
            memcpy(e->key.bytes, k, kl);
        if ((rc = field_from_json(v, &e->value, pool)) < 0)
            break;
        out->num_entries++;
    }
    json_decref(root);
    return rc;
}

static int declare(ferry_conn *c, const char *queue, const char *args_json, int passive) {
    if (!c || !queue)
        return FERRY_EINVAL;
    int rc = fc_channel(c, FC_CH_CTRL);
    if (rc < 0)
        return rc;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    amqp_table_t args;
    rc = fc_table_from_json(args_json, &args, &pool);
    if (rc == 0) {
        amqp_queue_declare(c->st, FC_CH_CTRL, amqp_cstring_bytes(queue), passive, 1, 0, 0, args);
        rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_CTRL, "queue.declare");
    }
    empty_amqp_pool(&pool);
    return rc;
}

int ferry_conn_declare_queue(ferry_conn *c, const char *queue, const char *args_json) {
    return declare(c, queue, args_json, 0);
}

int ferry_conn_queue_exists(ferry_conn *c, const char *queue) {
    int rc = declare(c, queue, NULL, 1);
    if (rc == FERRY_EREFUSED)
        return 0; /* 404 NOT_FOUND */
    return rc < 0 ? rc : 1;
}
