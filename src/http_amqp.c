/* http_amqp.c — the management API's changes that are AMQP operations (declare, delete,
 * bind, unbind, purge, publish, get, the aliveness test), done by the HTTP thread as an
 * AMQP client of this broker, logged in as the requesting user, with rabbitmq-c.
 *
 * RabbitMQ's management plugin does the same through its internal AMQP client: every such
 * request gets exactly the checks an AMQP client gets (permissions, argument validation,
 * equivalence, exclusivity) and the same texts, and a durable declare is answered once it
 * is on disk. The loop thread is never blocked: it serves this connection like any other.
 * Channel errors become RabbitMQ's HTTP answers (406 -> 400 bad_request, 403 -> 401). */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "auth.h"
#include "broker.h"
#include "http_int.h"
#include "mgmt_json.h"
#include "util.h"

/* ---- JSON arguments as an amqp_table_t (rabbitmq-c's own structures) ---- */

typedef struct pool { /* every allocation of one request's tables, freed together */
    void **p;
    size_t n, cap;
} pool;

static void *palloc(pool *pl, size_t n) {
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? pl->cap * 2 : 16;
        pl->p = xrealloc(pl->p, pl->cap * sizeof *pl->p);
    }
    return pl->p[pl->n++] = xcalloc(1, n ? n : 1);
}

static void pool_free(pool *pl) {
    for (size_t i = 0; i < pl->n; i++)
        free(pl->p[i]);
    free(pl->p);
}

static amqp_table_t to_table(pool *pl, json_t *o);

static amqp_field_value_t to_value(pool *pl, json_t *v) {
    amqp_field_value_t f;
    memset(&f, 0, sizeof f);
    if (json_is_string(v)) {
        f.kind = AMQP_FIELD_KIND_UTF8;
        f.value.bytes.len = json_string_length(v);
        f.value.bytes.bytes = palloc(pl, f.value.bytes.len);
        memcpy(f.value.bytes.bytes, json_string_value(v), f.value.bytes.len);
    } else if (json_is_integer(v)) {
        f.kind = AMQP_FIELD_KIND_I64;
        f.value.i64 = json_integer_value(v);
    } else if (json_is_real(v)) {
        f.kind = AMQP_FIELD_KIND_F64;
        f.value.f64 = json_real_value(v);
    } else if (json_is_boolean(v)) {
        f.kind = AMQP_FIELD_KIND_BOOLEAN;
        f.value.boolean = json_is_true(v);
    } else if (json_is_object(v)) {
        f.kind = AMQP_FIELD_KIND_TABLE;
        f.value.table = to_table(pl, v);
    } else if (json_is_array(v)) {
        f.kind = AMQP_FIELD_KIND_ARRAY;
        size_t n = json_array_size(v);
        f.value.array.num_entries = (int)n;
        f.value.array.entries = palloc(pl, n * sizeof(amqp_field_value_t));
        for (size_t i = 0; i < n; i++)
            f.value.array.entries[i] = to_value(pl, json_array_get(v, i));
    } else {
        f.kind = AMQP_FIELD_KIND_VOID;
    }
    return f;
}

static amqp_table_t to_table(pool *pl, json_t *o) {
    amqp_table_t t = {0, NULL};
    if (!json_is_object(o) || !json_object_size(o))
        return t;
    t.entries = palloc(pl, json_object_size(o) * sizeof *t.entries);
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        amqp_table_entry_t *e = &t.entries[t.num_entries++];
        e->key.len = strlen(k);
        e->key.bytes = palloc(pl, e->key.len);
        memcpy(e->key.bytes, k, e->key.len);
        e->value = to_value(pl, v);
    }
    return t;
}

/* ---- the connection ---- */

static amqp_bytes_t bs(const char *s) { return amqp_cstring_bytes(s ? s : ""); }

typedef struct aconn {
    amqp_connection_state_t st;
    int open;
} aconn;

static void answer(mgmt_req *r, int status, const char *error, const char *reason) {
    mgmt_error(r, status, error, "%s", reason);
}

/* A server's channel.close or connection.close as RabbitMQ's HTTP answer. */
static void reply_error(mgmt_req *r, amqp_rpc_reply_t rep, const char *what) {
    char text[600];
    int code = 0;
    if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        (rep.reply.id == AMQP_CHANNEL_CLOSE_METHOD || rep.reply.id == AMQP_CONNECTION_CLOSE_METHOD)) {
        amqp_channel_close_t *m = rep.reply.decoded; /* the same layout for both */
        code = m->reply_code;
        snprintf(text, sizeof text, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        /* RabbitMQ's HTTP reason is the reply text without its "CODE - " prefix (but a 404
         * keeps it) */
        char *dash = strstr(text, " - ");
        if (dash && dash - text < 32 && code != 404)
            memmove(text, dash + 3, strlen(dash + 3) + 1);
    } else if (rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(text, sizeof text, "%s: %s", what, amqp_error_string2(rep.library_error));
    } else {
        snprintf(text, sizeof text, "%s failed", what);
    }
    if (code == 403 || code == 530)
        answer(r, 401, "not_authorised", text);
    else if (code == 404)
        answer(r, 404, "not_found", text);
    else if (code)
        answer(r, 400, "bad_request", text);
    else
        answer(r, 503, "service_unavailable", text);
}

static int aconn_open(aconn *a, mgmt_req *r, const char *vhost) {
    a->open = 0;
    a->st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(a->st);
    struct timeval tv = {10, 0};
    if (!s || amqp_socket_open_noblock(s, http_amqp_host, http_amqp_port, &tv) != AMQP_STATUS_OK) {
        answer(r, 503, "service_unavailable", "cannot connect to the broker's AMQP port");
        return -1;
    }
    amqp_rpc_reply_t rep = amqp_login(a->st, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, r->user, r->pass);
    if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
        if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION)
            reply_error(r, rep, "login");
        else
            answer(r, 401, "not_authorised", "Access refused.");
        return -1;
    }
    a->open = 1;
    amqp_channel_open(a->st, 1);
    rep = amqp_get_rpc_reply(a->st);
    if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_error(r, rep, "channel.open");
        return -1;
    }
    return 0;
}

static void aconn_close(aconn *a) {
    if (a->open) {
        amqp_channel_close(a->st, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(a->st, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(a->st);
}

/* The last call's answer: 0 if it went through, else the HTTP error is set. */
static int check(aconn *a, mgmt_req *r, const char *what) {
    amqp_rpc_reply_t rep = amqp_get_rpc_reply(a->st);
    if (rep.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    reply_error(r, rep, what);
    if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && rep.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_send_method(a->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &(amqp_connection_close_ok_t){0});
        a->open = 0;
    } else if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) { /* the channel is closed: reopen */
        amqp_send_method(a->st, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &(amqp_channel_close_ok_t){0});
        amqp_channel_open(a->st, 1);
        amqp_get_rpc_reply(a->st);
    }
    return -1;
}

static json_t *body(mgmt_req *r) {
    json_error_t je;
    json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, &je) : json_object();
    if (!j || !json_is_object(j)) {
        json_decref(j);
        answer(r, 400, "bad_request", "not_json");
        return NULL;
    }
    return j;
}

static int jb(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_string(v))
        return strcmp(json_string_value(v), "true") == 0 ? 1 : strcmp(json_string_value(v), "false") == 0 ? 0 : dflt;
    return dflt;
}

static int ji(json_t *o, const char *k, long long dflt, long long *out) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        char *end;
        *out = strtoll(json_string_value(v), &end, 10);
        if (end != json_string_value(v) && !*end)
            return 0;
    }
    return -1;
}

static int b64_decode(const char *s, size_t n, buf *out) {
    if (n % 4 != 0)
        return -1;
    if (!n)
        return 0;
    size_t pad = (s[n - 1] == '=') + (n > 1 && s[n - 2] == '=');
    buf_reserve(out, n);
    int len = EVP_DecodeBlock((unsigned char *)buf_tail(out), (const unsigned char *)s, (int)n);
    if (len < 0)
        return -1;
    out->len += (size_t)len - pad;
    return 0;
}

/* ---- the operations ---- */

static void put_queue(aconn *a, mgmt_req *r) {
    json_t *j = body(r);
    if (!j)
        return;
    json_t *args = json_object_get(j, "arguments");
    if (args && !json_is_object(args) && !json_is_null(args)) {
        json_decref(j);
        answer(r, 400, "bad_request", "arguments must be an object");
        return;
    }
    pool pl = {0};
    const char *name = r->seg[2];
    amqp_queue_declare(a->st, 1, bs(name), 1, 0, 0, 0, amqp_empty_table);
    int existed = amqp_get_rpc_reply(a->st).reply_type == AMQP_RESPONSE_NORMAL;
    if (!existed) { /* the passive declare's 404 closed the channel */
        amqp_send_method(a->st, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &(amqp_channel_close_ok_t){0});
        amqp_channel_open(a->st, 1);
        amqp_get_rpc_reply(a->st);
    }
    amqp_queue_declare(a->st, 1, bs(name), 0, jb(j, "durable", 1), 0, jb(j, "auto_delete", 0), to_table(&pl, args));
    if (check(a, r, "queue.declare") == 0)
        r->status = existed ? 204 : 201;
    pool_free(&pl);
    json_decref(j);
}

static void put_exchange(aconn *a, mgmt_req *r) {
    json_t *j = body(r);
    if (!j)
        return;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) {
        json_decref(j);
        answer(r, 400, "bad_request", "[{key_missing,type}]");
        return;
    }
    pool pl = {0};
    const char *name = r->seg[2];
    amqp_exchange_declare(a->st, 1, bs(name), bs(type), 1, 0, 0, 0, amqp_empty_table);
    int existed = amqp_get_rpc_reply(a->st).reply_type == AMQP_RESPONSE_NORMAL;
    if (!existed) {
        amqp_send_method(a->st, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &(amqp_channel_close_ok_t){0});
        amqp_channel_open(a->st, 1);
        amqp_get_rpc_reply(a->st);
    }
    amqp_exchange_declare(a->st, 1, bs(name), bs(type), 0, jb(j, "durable", 1), jb(j, "auto_delete", 0),
                          jb(j, "internal", 0), to_table(&pl, json_object_get(j, "arguments")));
    if (check(a, r, "exchange.declare") == 0)
        r->status = existed ? 204 : 201;
    pool_free(&pl);
    json_decref(j);
}

static int qflag(mgmt_req *r, const char *k) {
    json_t *v = json_object_get(r->query, k);
    return v && strcmp(json_string_value(v), "true") == 0;
}

static void bind(aconn *a, mgmt_req *r, int unbind) {
    /* bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}] */
    const char *src = strcmp(r->seg[3], "amq.default") == 0 ? "" : r->seg[3], *dst = r->seg[5];
    int toq = strcmp(r->seg[4], "q") == 0;
    json_t *j;
    if (unbind) { /* the loop found the binding the properties key names */
        j = json_incref(r->json);
    } else if (!(j = body(r))) {
        return;
    }
    json_decref(r->json);
    r->json = NULL;
    const char *key = json_string_value(json_object_get(j, "routing_key"));
    pool pl = {0};
    amqp_table_t args = to_table(&pl, json_object_get(j, "arguments"));
    if (toq && !unbind)
        amqp_queue_bind(a->st, 1, bs(dst), bs(src), bs(key), args);
    else if (toq)
        amqp_queue_unbind(a->st, 1, bs(dst), bs(src), bs(key), args);
    else if (!unbind)
        amqp_exchange_bind(a->st, 1, bs(dst), bs(src), bs(key), args);
    else
        amqp_exchange_unbind(a->st, 1, bs(dst), bs(src), bs(key), args);
    if (check(a, r, unbind ? "unbind" : "bind") == 0) {
        r->status = unbind ? 204 : 201;
        if (!unbind) { /* RabbitMQ answers with the new binding's location: dest/quoted key */
            char pk[1100], q1[1200], loc[2600];
            buf t;
            buf_init(&t);
            json_t *aj = json_object_get(j, "arguments");
            if (json_is_object(aj))
                definitions_put_table(&t, aj);
            mj_props_key(key ? key : "", key ? strlen(key) : 0, buf_head(&t), t.len, pk, sizeof pk);
            buf_free(&t);
            mj_quote(pk, q1, sizeof q1);
            snprintf(loc, sizeof loc, "%s/%s", dst, q1);
            r->location = xstrndup(loc, strlen(loc));
        }
    }
    pool_free(&pl);
    json_decref(j);
}

static int valid_utf8(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
        if (k == 9 || i + k >= n + (k ? 0 : 1))
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* The properties rabbitmq-c decoded, re-encoded as flags + list for mj_props. */
static json_t *props_json(const amqp_basic_properties_t *p) {
    json_t *o = json_object();
#define STR(flag, field, name)                                                                                        \
    if (p->_flags & flag)                                                                                              \
        json_object_set_new(o, name, json_stringn_nocheck((const char *)p->field.bytes, p->field.len));
    STR(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type, "content_type")
    STR(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding, "content_encoding")
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        buf t;
        buf_init(&t);
        /* rabbitmq-c decoded the table: encode it back to read it with the broker's codec */
        amqp_bytes_t enc = {0, NULL};
        (void)enc;
        json_t *h = json_object();
        for (int i = 0; i < p->headers.num_entries; i++) {
            const amqp_table_entry_t *e = &p->headers.entries[i];
            char k[256];
            snprintf(k, sizeof k, "%.*s", (int)e->key.len, (const char *)e->key.bytes);
            const amqp_field_value_t *v = &e->value;
            json_t *jv;
            switch (v->kind) {
            case AMQP_FIELD_KIND_UTF8:
            case AMQP_FIELD_KIND_BYTES:
                jv = json_stringn_nocheck((const char *)v->value.bytes.bytes, v->value.bytes.len);
                break;
            case AMQP_FIELD_KIND_BOOLEAN:
                jv = json_boolean(v->value.boolean);
                break;
            case AMQP_FIELD_KIND_I8: jv = json_integer(v->value.i8); break;
            case AMQP_FIELD_KIND_U8: jv = json_integer(v->value.u8); break;
            case AMQP_FIELD_KIND_I16: jv = json_integer(v->value.i16); break;
            case AMQP_FIELD_KIND_U16: jv = json_integer(v->value.u16); break;
            case AMQP_FIELD_KIND_I32: jv = json_integer(v->value.i32); break;
            case AMQP_FIELD_KIND_U32: jv = json_integer(v->value.u32); break;
            case AMQP_FIELD_KIND_I64: jv = json_integer(v->value.i64); break;
            case AMQP_FIELD_KIND_U64: jv = json_integer((json_int_t)v->value.u64); break;
            case AMQP_FIELD_KIND_TIMESTAMP: jv = json_integer((json_int_t)v->value.u64); break;
            case AMQP_FIELD_KIND_F32: jv = json_real(v->value.f32); break;
            case AMQP_FIELD_KIND_F64: jv = json_real(v->value.f64); break;
            default: jv = json_null();
            }
            json_object_set_new(h, k, jv);
        }
        json_object_set_new(o, "headers", h);
        buf_free(&t);
    }
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        json_object_set_new(o, "delivery_mode", json_integer(p->delivery_mode));
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        json_object_set_new(o, "priority", json_integer(p->priority));
    STR(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id, "correlation_id")
    STR(AMQP_BASIC_REPLY_TO_FLAG, reply_to, "reply_to")
    STR(AMQP_BASIC_EXPIRATION_FLAG, expiration, "expiration")
    STR(AMQP_BASIC_MESSAGE_ID_FLAG, message_id, "message_id")
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        json_object_set_new(o, "timestamp", json_integer((json_int_t)p->timestamp));
    STR(AMQP_BASIC_TYPE_FLAG, type, "type")
    STR(AMQP_BASIC_USER_ID_FLAG, user_id, "user_id")
    STR(AMQP_BASIC_APP_ID_FLAG, app_id, "app_id")
    STR(AMQP_BASIC_CLUSTER_ID_FLAG, cluster_id, "cluster_id")
#undef STR
    if (!json_object_size(o)) { /* RabbitMQ shows no properties as an empty list */
        json_decref(o);
        return json_array();
    }
    return o;
}

static void get_messages(aconn *a, mgmt_req *r) {
    json_t *j = body(r);
    if (!j)
        return;
    long long count, truncate;
    const char *ackmode = json_string_value(json_object_get(j, "ackmode"));
    const char *enc = json_string_value(json_object_get(j, "encoding"));
    if (ji(j, "count", 1, &count) < 0 || count < 0 || ji(j, "truncate", -1, &truncate) < 0) {
        json_decref(j);
        answer(r, 400, "bad_request", "count and truncate must be integers");
        return;
    }
    if (!ackmode) { /* rabbitmqadmin before 3.7 sent "requeue" */
        int requeue = jb(j, "requeue", -1);
        ackmode = requeue == 0 ? "ack_requeue_false" : requeue == 1 ? "ack_requeue_true" : NULL;
    }
    if (!ackmode || (strcmp(ackmode, "ack_requeue_true") && strcmp(ackmode, "ack_requeue_false") &&
                     strcmp(ackmode, "reject_requeue_true") && strcmp(ackmode, "reject_requeue_false"))) {
        json_decref(j);
        answer(r, 400, "bad_request", "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or "
                                      "reject_requeue_false");
        return;
    }
    if (!enc)
        enc = "auto";
    if (strcmp(enc, "auto") && strcmp(enc, "base64")) {
        json_decref(j);
        answer(r, 400, "bad_request", "Unsupported encoding. Please use auto or base64.");
        return;
    }
    int requeue = strstr(ackmode, "requeue_true") != NULL, reject = ackmode[0] == 'r';
    json_t *out = json_array();
    uint64_t last_tag = 0;
    for (long long i = 0; i < count; i++) {
        amqp_rpc_reply_t rep = amqp_basic_get(a->st, 1, bs(r->seg[2]), 0);
        if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
            json_decref(out);
            reply_error(r, rep, "basic.get");
            json_decref(j);
            return;
        }
        if (rep.reply.id != AMQP_BASIC_GET_OK_METHOD)
            break;
        amqp_basic_get_ok_t *ok = rep.reply.decoded;
        json_t *m = json_object();
        json_object_set_new(m, "redelivered", json_boolean(ok->redelivered));
        json_object_set_new(m, "exchange", json_stringn_nocheck((const char *)ok->exchange.bytes, ok->exchange.len));
        json_object_set_new(m, "routing_key",
                            json_stringn_nocheck((const char *)ok->routing_key.bytes, ok->routing_key.len));
        json_object_set_new(m, "message_count", json_integer(ok->message_count));
        last_tag = ok->delivery_tag;
        amqp_message_t msg;
        rep = amqp_read_message(a->st, 1, &msg, 0);
        if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
            json_decref(m);
            json_decref(out);
            reply_error(r, rep, "basic.get");
            json_decref(j);
            return;
        }
        size_t len = msg.body.len;
        json_object_set_new(m, "payload_bytes", json_integer((json_int_t)len));
        json_object_set_new(m, "properties", props_json(&msg.properties));
        size_t show = truncate >= 0 && (size_t)truncate < len ? (size_t)truncate : len;
        if (strcmp(enc, "auto") == 0 && valid_utf8(msg.body.bytes, show)) {
            json_object_set_new(m, "payload", json_stringn_nocheck(msg.body.bytes, show));
            json_object_set_new(m, "payload_encoding", json_string("string"));
        } else {
            buf b64;
            buf_init(&b64);
            auth_encode_b64(msg.body.bytes, show, &b64);
            json_object_set_new(m, "payload", json_stringn((const char *)buf_head(&b64), b64.len));
            json_object_set_new(m, "payload_encoding", json_string("base64"));
            buf_free(&b64);
        }
        amqp_destroy_message(&msg);
        json_array_append_new(out, m);
    }
    if (last_tag) {
        if (!reject && !requeue)
            amqp_basic_ack(a->st, 1, last_tag, 1);
        else
            amqp_basic_nack(a->st, 1, last_tag, 1, requeue);
    }
    amqp_queue_declare(a->st, 1, bs(r->seg[2]), 1, 0, 0, 0, amqp_empty_table); /* a round trip: settled */
    amqp_get_rpc_reply(a->st);
    json_decref(j);
    json_decref(r->json);
    r->json = out;
    r->status = 200;
}

static void publish(aconn *a, mgmt_req *r) {
    json_t *j = body(r);
    if (!j)
        return;
    const char *x = strcmp(r->seg[2], "amq.default") == 0 ? "" : r->seg[2];
    const char *rk = json_string_value(json_object_get(j, "routing_key"));
    json_t *pl = json_object_get(j, "payload");
    const char *penc = json_string_value(json_object_get(j, "payload_encoding"));
    json_t *props = json_object_get(j, "properties");
    if (!rk || !json_is_string(pl) || (props && !json_is_object(props))) {
        json_decref(j);
        answer(r, 400, "bad_request", "routing_key, payload and properties are required");
        return;
    }
    buf body_bytes;
    buf_init(&body_bytes);
    if (penc && strcmp(penc, "base64") == 0) {
        if (b64_decode(json_string_value(pl), json_string_length(pl), &body_bytes) < 0) {
            buf_free(&body_bytes);
            json_decref(j);
            answer(r, 400, "bad_request", "payload is not valid base64");
            return;
        }
    } else if (penc && strcmp(penc, "string") != 0) {
        buf_free(&body_bytes);
        json_decref(j);
        answer(r, 400, "bad_request", "payload_encoding must be string or base64");
        return;
    } else {
        buf_put(&body_bytes, json_string_value(pl), json_string_length(pl));
    }
    /* properties: JSON -> AMQP bytes (the broker's codec) -> rabbitmq-c's struct */
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    pool ppl = {0};
    if (props) {
#define PSTR(flag, field, name)                                                                                       \
    {                                                                                                                  \
        const char *s = json_string_value(json_object_get(props, name));                                             \
        if (s) {                                                                                                       \
            p._flags |= flag;                                                                                          \
            p.field = amqp_cstring_bytes(s);                                                                           \
        }                                                                                                              \
    }
        PSTR(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type, "content_type")
        PSTR(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding, "content_encoding")
        PSTR(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id, "correlation_id")
        PSTR(AMQP_BASIC_REPLY_TO_FLAG, reply_to, "reply_to")
        PSTR(AMQP_BASIC_MESSAGE_ID_FLAG, message_id, "message_id")
        PSTR(AMQP_BASIC_TYPE_FLAG, type, "type")
        PSTR(AMQP_BASIC_USER_ID_FLAG, user_id, "user_id")
        PSTR(AMQP_BASIC_APP_ID_FLAG, app_id, "app_id")
        PSTR(AMQP_BASIC_CLUSTER_ID_FLAG, cluster_id, "cluster_id")
#undef PSTR
        long long n;
        json_t *exp = json_object_get(props, "expiration");
        char expbuf[32];
        if (json_is_string(exp)) {
            p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            p.expiration = amqp_cstring_bytes(json_string_value(exp));
        } else if (json_is_integer(exp)) {
            snprintf(expbuf, sizeof expbuf, "%lld", (long long)json_integer_value(exp));
            p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            p.expiration = amqp_cstring_bytes(expbuf);
        }
        if (json_object_get(props, "delivery_mode")) {
            if (ji(props, "delivery_mode", 1, &n) < 0 || n < 0 || n > 255) {
                buf_free(&body_bytes);
                json_decref(j);
                answer(r, 400, "bad_request", "delivery_mode must be an integer");
                return;
            }
            p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            p.delivery_mode = (uint8_t)n;
        }
        if (json_object_get(props, "priority")) {
            if (ji(props, "priority", 0, &n) < 0 || n < 0 || n > 255) {
                buf_free(&body_bytes);
                json_decref(j);
                answer(r, 400, "bad_request", "priority must be an integer from 0 to 255");
                return;
            }
            p._flags |= AMQP_BASIC_PRIORITY_FLAG;
            p.priority = (uint8_t)n;
        }
        if (json_object_get(props, "timestamp") && ji(props, "timestamp", 0, &n) == 0) {
            p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
            p.timestamp = (uint64_t)n;
        }
        json_t *h = json_object_get(props, "headers");
        if (json_is_object(h)) {
            p._flags |= AMQP_BASIC_HEADERS_FLAG;
            p.headers = to_table(&ppl, h);
        }
    }
    amqp_confirm_select(a->st, 1);
    if (check(a, r, "confirm.select") < 0)
        goto out;
    if (amqp_basic_publish(a->st, 1, bs(x), bs(rk), 1, 0, &p,
                           (amqp_bytes_t){body_bytes.len, body_bytes.len ? buf_head(&body_bytes) : NULL}) !=
        AMQP_STATUS_OK) {
        answer(r, 503, "service_unavailable", "publish failed");
        goto out;
    }
    int routed = 1;
    for (;;) { /* basic.return (unroutable) comes before the basic.ack */
        amqp_frame_t f;
        struct timeval tv = {10, 0};
        if (amqp_simple_wait_frame_noblock(a->st, &f, &tv) != AMQP_STATUS_OK) {
            answer(r, 503, "service_unavailable", "no confirm from the broker");
            goto out;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            routed = 0;
            amqp_message_t msg;
            amqp_read_message(a->st, 1, &msg, 0);
            amqp_destroy_message(&msg);
        } else if (f.payload.method.id == AMQP_BASIC_ACK_METHOD || f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            break;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_rpc_reply_t rep = {AMQP_RESPONSE_SERVER_EXCEPTION, f.payload.method, 0};
            reply_error(r, rep, "basic.publish");
            amqp_send_method(a->st, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &(amqp_channel_close_ok_t){0});
            a->open = 1;
            goto out;
        }
    }
    json_decref(r->json);
    r->json = json_pack("{s:b}", "routed", routed);
    r->status = 200;
out:
    pool_free(&ppl);
    buf_free(&body_bytes);
    json_decref(j);
}

static void aliveness(aconn *a, mgmt_req *r) {
    amqp_queue_declare(a->st, 1, bs("aliveness-test"), 0, 0, 0, 0, amqp_empty_table);
    if (check(a, r, "queue.declare") < 0)
        return;
    amqp_basic_properties_t p = {0};
    amqp_basic_publish(a->st, 1, bs(""), bs("aliveness-test"), 0, 0, &p, amqp_cstring_bytes("test_message"));
    amqp_rpc_reply_t rep = amqp_basic_get(a->st, 1, bs("aliveness-test"), 1);
    if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_error(r, rep, "basic.get");
        return;
    }
    if (rep.reply.id == AMQP_BASIC_GET_OK_METHOD) {
        amqp_message_t msg;
        amqp_read_message(a->st, 1, &msg, 0);
        amqp_destroy_message(&msg);
        json_decref(r->json);
        r->json = json_pack("{s:s}", "status", "ok");
        r->status = 200;
    } else {
        answer(r, 503, "failed", "aliveness-test: the message did not come back");
    }
}

void http_amqp(mgmt_req *r) {
    aconn a;
    const char *vhost = r->seg[1];
    r->status = 0;
    if (aconn_open(&a, r, vhost) < 0) {
        aconn_close(&a);
        return;
    }
    const char *s0 = r->seg[0];
    int n = r->nseg;
    if (strcmp(s0, "queues") == 0 && n == 3 && r->method == HM_PUT) {
        put_queue(&a, r);
    } else if (strcmp(s0, "queues") == 0 && n == 3 && r->method == HM_DELETE) {
        amqp_queue_delete(a.st, 1, bs(r->seg[2]), qflag(r, "if-unused"), qflag(r, "if-empty"));
        if (check(&a, r, "queue.delete") == 0)
            ok_204(r);
    } else if (strcmp(s0, "queues") == 0 && n == 4 && strcmp(r->seg[3], "contents") == 0) {
        amqp_queue_purge(a.st, 1, bs(r->seg[2]));
        if (check(&a, r, "queue.purge") == 0)
            ok_204(r);
    } else if (strcmp(s0, "queues") == 0 && n == 4 && strcmp(r->seg[3], "get") == 0) {
        get_messages(&a, r);
    } else if (strcmp(s0, "queues") == 0 && n == 4 && strcmp(r->seg[3], "actions") == 0) {
        answer(r, 400, "bad_request", "queue actions (sync, cancel_sync) apply to mirrored queues only");
    } else if (strcmp(s0, "exchanges") == 0 && n == 3 && r->method == HM_PUT) {
        put_exchange(&a, r);
    } else if (strcmp(s0, "exchanges") == 0 && n == 3 && r->method == HM_DELETE) {
        amqp_exchange_delete(a.st, 1, bs(r->seg[2]), qflag(r, "if-unused"));
        if (check(&a, r, "exchange.delete") == 0)
            ok_204(r);
    } else if (strcmp(s0, "exchanges") == 0 && n == 4) {
        publish(&a, r);
    } else if (strcmp(s0, "bindings") == 0) {
        bind(&a, r, n == 7);
    } else if (strcmp(s0, "aliveness-test") == 0) {
        aliveness(&a, r);
    } else {
        answer(r, 404, "Object Not Found", "Not Found");
    }
    aconn_close(&a);
}
