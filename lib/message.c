/* message.c — ferry_message: AMQP basic properties, a headers table and a body, owned by
 * one handle. Strings live in the message's rabbitmq-c pool (freed with it); the body is
 * malloc'd. Headers keep every AMQP field type they arrived with (x-death's array of
 * tables survives a copy unchanged), and render as JSON for FERRY_HEADERS. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

char *fm_bytes_dup(amqp_bytes_t b) {
    char *s = malloc(b.len + 1);
    if (!s)
        return NULL;
    if (b.len)
        memcpy(s, b.bytes, b.len);
    s[b.len] = 0;
    return s;
}

amqp_bytes_t fm_pool_str(ferry_message *m, const char *s) {
    amqp_bytes_t b;
    size_t n = strlen(s);
    amqp_pool_alloc_bytes(&m->pool, n ? n : 1, &b);
    if (!b.bytes)
        return b;
    memcpy(b.bytes, s, n);
    b.len = n;
    return b;
}

ferry_message *ferry_message_new(void) {
    ferry_message *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    init_amqp_pool(&m->pool, 1024);
    return m;
}

void ferry_message_free(ferry_message *m) {
    if (!m)
        return;
    empty_amqp_pool(&m->pool);
    free(m->body.bytes);
    free(m->exchange);
    free(m->routing_key);
    free(m);
}

static int dup_bytes_into(ferry_message *m, amqp_bytes_t *dst, amqp_bytes_t src) {
    amqp_pool_alloc_bytes(&m->pool, src.len ? src.len : 1, dst);
    if (!dst->bytes)
        return FERRY_ENOMEM;
    if (src.len)
        memcpy(dst->bytes, src.bytes, src.len);
    dst->len = src.len;
    return 0;
}

int fm_from_parts(ferry_message **out, const amqp_basic_properties_t *p, amqp_bytes_t body,
                  amqp_bytes_t exchange, amqp_bytes_t routing_key, int redelivered) {
    ferry_message *m = ferry_message_new();
    if (!m)
        return FERRY_ENOMEM;
    int rc = 0;
    m->props = *p;
    /* re-home every string and the headers in our own pool */
    amqp_bytes_t *strs[] = {&m->props.content_type, &m->props.content_encoding, &m->props.correlation_id,
                            &m->props.reply_to,     &m->props.expiration,       &m->props.message_id,
                            &m->props.type,         &m->props.user_id,          &m->props.app_id,
                            &m->props.cluster_id};
    amqp_flags_t flags[] = {AMQP_BASIC_CONTENT_TYPE_FLAG, AMQP_BASIC_CONTENT_ENCODING_FLAG,
                            AMQP_BASIC_CORRELATION_ID_FLAG, AMQP_BASIC_REPLY_TO_FLAG,
                            AMQP_BASIC_EXPIRATION_FLAG,   AMQP_BASIC_MESSAGE_ID_FLAG,
                            AMQP_BASIC_TYPE_FLAG,         AMQP_BASIC_USER_ID_FLAG,
                            AMQP_BASIC_APP_ID_FLAG,       AMQP_BASIC_CLUSTER_ID_FLAG};
    for (size_t i = 0; i < sizeof strs / sizeof *strs && rc == 0; i++)
        if (m->props._flags & flags[i])
            rc = dup_bytes_into(m, strs[i], *strs[i]);
    if (rc == 0 && (m->props._flags & AMQP_BASIC_HEADERS_FLAG)) {
        amqp_table_t h = m->props.headers;
        if (amqp_table_clone(&h, &m->props.headers, &m->pool) != AMQP_STATUS_OK)
            rc = FERRY_ENOMEM;
    }
    if (rc == 0 && body.len) {
        m->body.bytes = malloc(body.len);
        if (!m->body.bytes)
            rc = FERRY_ENOMEM;
        else {
            memcpy(m->body.bytes, body.bytes, body.len);
            m->body.len = body.len;
        }
    }
    if (rc == 0 && exchange.bytes) {
        m->exchange = fm_bytes_dup(exchange);
        m->routing_key = fm_bytes_dup(routing_key);
        if (!m->exchange || !m->routing_key)
            rc = FERRY_ENOMEM;
    }
    m->redelivered = redelivered;
    if (rc < 0) {
        ferry_message_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int fm_from_envelope(ferry_message **out, const amqp_envelope_t *e) {
    return fm_from_parts(out, &e->message.properties, e->message.body, e->exchange, e->routing_key,
                         e->redelivered);
}

ferry_message *ferry_message_copy(const ferry_message *src) {
    ferry_message *m = NULL;
    amqp_bytes_t none = {0, NULL};
    if (fm_from_parts(&m, &src->props, src->body, src->exchange ? amqp_cstring_bytes(src->exchange) : none,
                      src->routing_key ? amqp_cstring_bytes(src->routing_key) : none, src->redelivered) < 0)
        return NULL;
    return m;
}

int ferry_message_set_body(ferry_message *m, const void *body, size_t len) {
    if (!m || (len && !body))
        return FERRY_EINVAL;
    void *b = NULL;
    if (len) {
        b = malloc(len);
        if (!b)
            return FERRY_ENOMEM;
        memcpy(b, body, len);
    }
    free(m->body.bytes);
    m->body.bytes = b;
    m->body.len = len;
    return 0;
}

const void *ferry_message_body(const ferry_message *m, size_t *len) {
    if (len)
        *len = m ? m->body.len : 0;
    return m && m->body.len ? m->body.bytes : "";
}

/* The string properties: name, flag, field. */
static amqp_bytes_t *str_prop(ferry_message *m, const char *name, amqp_flags_t *flag) {
    static const struct {
        const char *name;
        amqp_flags_t flag;
        size_t off;
    } t[] = {
        {"content_type", AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
        {"content_encoding", AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
        {"correlation_id", AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
        {"reply_to", AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
        {"expiration", AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration)},
        {"message_id", AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
        {"type", AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
        {"user_id", AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id)},
        {"app_id", AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
        {"cluster_id", AMQP_BASIC_CLUSTER_ID_FLAG, offsetof(amqp_basic_properties_t, cluster_id)},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(t[i].name, name) == 0) {
            *flag = t[i].flag;
            return (amqp_bytes_t *)((char *)&m->props + t[i].off);
        }
    return NULL;
}

int ferry_message_set_property(ferry_message *m, const char *name, const char *value) {
    if (!m || !name)
        return FERRY_EINVAL;
    amqp_flags_t flag;
    amqp_bytes_t *b = str_prop(m, name, &flag);
    if (b) {
        if (!value) {
            m->props._flags &= ~flag;
            return 0;
        }
        if (strlen(value) > 255)
            return FERRY_EINVAL; /* a shortstr */
        amqp_bytes_t v = fm_pool_str(m, value);
        if (!v.bytes)
            return FERRY_ENOMEM;
        *b = v;
        m->props._flags |= flag;
        return 0;
    }
    uint64_t n = 0;
    if (value) {
        char *end;
        if (!*value || *value == '-')
            return FERRY_EINVAL;
        n = strtoull(value, &end, 10);
        if (*end)
            return FERRY_EINVAL;
    }
    if (strcmp(name, "delivery_mode") == 0) {
        if (value && n != 1 && n != 2)
            return FERRY_EINVAL;
        m->props.delivery_mode = (uint8_t)n;
        m->props._flags = value ? m->props._flags | AMQP_BASIC_DELIVERY_MODE_FLAG
                                : m->props._flags & ~AMQP_BASIC_DELIVERY_MODE_FLAG;
    } else if (strcmp(name, "priority") == 0) {
        if (n > 255)
            return FERRY_EINVAL;
        m->props.priority = (uint8_t)n;
        m->props._flags = value ? m->props._flags | AMQP_BASIC_PRIORITY_FLAG
                                : m->props._flags & ~AMQP_BASIC_PRIORITY_FLAG;
    } else if (strcmp(name, "timestamp") == 0) {
        m->props.timestamp = n;
        m->props._flags = value ? m->props._flags | AMQP_BASIC_TIMESTAMP_FLAG
                                : m->props._flags & ~AMQP_BASIC_TIMESTAMP_FLAG;
    } else
        return FERRY_EINVAL;
    return 0;
}

const char *ferry_message_property(const ferry_message *cm, const char *name) {
    if (!cm || !name)
        return NULL;
    ferry_message *m = (ferry_message *)cm; /* the text buffers are a cache */
    amqp_flags_t flag;
    amqp_bytes_t *b = str_prop(m, name, &flag);
    if (b) {
        if (!(m->props._flags & flag))
            return NULL;
        /* pool strings are not NUL-terminated: keep a terminated copy in the pool */
        amqp_bytes_t t;
        amqp_pool_alloc_bytes(&m->pool, b->len + 1, &t);
        if (!t.bytes)
            return NULL;
        if (b->len)
            memcpy(t.bytes, b->bytes, b->len);
        ((char *)t.bytes)[b->len] = 0;
        return t.bytes;
    }
    if (strcmp(name, "delivery_mode") == 0 && (m->props._flags & AMQP_BASIC_DELIVERY_MODE_FLAG)) {
        snprintf(m->numbuf[0], sizeof m->numbuf[0], "%u", m->props.delivery_mode);
        return m->numbuf[0];
    }
    if (strcmp(name, "priority") == 0 && (m->props._flags & AMQP_BASIC_PRIORITY_FLAG)) {
        snprintf(m->numbuf[1], sizeof m->numbuf[1], "%u", m->props.priority);
        return m->numbuf[1];
    }
    if (strcmp(name, "timestamp") == 0 && (m->props._flags & AMQP_BASIC_TIMESTAMP_FLAG)) {
        snprintf(m->numbuf[2], sizeof m->numbuf[2], "%" PRIu64, m->props.timestamp);
        return m->numbuf[2];
    }
    return NULL;
}

const amqp_field_value_t *fm_header(const ferry_message *m, const char *key) {
    if (!m || !key || !(m->props._flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    size_t kl = strlen(key);
    for (int i = 0; i < m->props.headers.num_entries; i++) {
        const amqp_table_entry_t *e = &m->props.headers.entries[i];
        if (e->key.len == kl && memcmp(e->key.bytes, key, kl) == 0)
            return &e->value;
    }
    return NULL;
}

/* Replaces or appends key. The table is rebuilt in the pool (old arrays are left there
 * until the message is freed: headers change a few times per message at most). */
int fm_set_header_value(ferry_message *m, const char *key, amqp_field_value_t v) {
    if (!m || !key || !*key || strlen(key) > 255)
        return FERRY_EINVAL;
    amqp_table_t *h = &m->props.headers;
    if (!(m->props._flags & AMQP_BASIC_HEADERS_FLAG)) {
        h->num_entries = 0;
        h->entries = NULL;
    }
    size_t kl = strlen(key);
    for (int i = 0; i < h->num_entries; i++)
        if (h->entries[i].key.len == kl && memcmp(h->entries[i].key.bytes, key, kl) == 0) {
            h->entries[i].value = v;
            return 0;
        }
    amqp_table_entry_t *e = amqp_pool_alloc(&m->pool, (size_t)(h->num_entries + 1) * sizeof *e);
    if (!e)
        return FERRY_ENOMEM;
    if (h->num_entries)
        memcpy(e, h->entries, (size_t)h->num_entries * sizeof *e);
    e[h->num_entries].key = fm_pool_str(m, key);
    if (!e[h->num_entries].key.bytes)
        return FERRY_ENOMEM;
    e[h->num_entries].value = v;
    h->entries = e;
    h->num_entries++;
    m->props._flags |= AMQP_BASIC_HEADERS_FLAG;
    return 0;
}

int ferry_message_set_header_str(ferry_message *m, const char *key, const char *value) {
    if (!m || !value)
        return FERRY_EINVAL;
    amqp_field_value_t v;
    v.kind = AMQP_FIELD_KIND_UTF8;
    v.value.bytes = fm_pool_str(m, value);
    if (!v.value.bytes.bytes)
        return FERRY_ENOMEM;
    return fm_set_header_value(m, key, v);
}

int ferry_message_set_header_int(ferry_message *m, const char *key, int64_t value) {
    amqp_field_value_t v;
    v.kind = AMQP_FIELD_KIND_I64;
    v.value.i64 = value;
    return fm_set_header_value(m, key, v);
}

int ferry_message_remove_header(ferry_message *m, const char *key) {
    if (!m || !key)
        return FERRY_EINVAL;
    if (!(m->props._flags & AMQP_BASIC_HEADERS_FLAG))
        return FERRY_ENOTFOUND;
    amqp_table_t *h = &m->props.headers;
    size_t kl = strlen(key);
    for (int i = 0; i < h->num_entries; i++)
        if (h->entries[i].key.len == kl && memcmp(h->entries[i].key.bytes, key, kl) == 0) {
            memmove(&h->entries[i], &h->entries[i + 1], (size_t)(h->num_entries - i - 1) * sizeof *h->entries);
            h->num_entries--;
            return 0;
        }
    return FERRY_ENOTFOUND;
}

int ferry_message_header_str(const ferry_message *m, const char *key, char **out) {
    const amqp_field_value_t *v = fm_header(m, key);
    if (!v)
        return FERRY_ENOTFOUND;
    if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)
        return FERRY_EINVAL;
    char *s = fm_bytes_dup(v->value.bytes);
    if (!s)
        return FERRY_ENOMEM;
    *out = s;
    return 0;
}

int ferry_message_header_int(const ferry_message *m, const char *key, int64_t *out) {
    const amqp_field_value_t *v = fm_header(m, key);
    if (!v)
        return FERRY_ENOTFOUND;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8: *out = v->value.i8; return 0;
    case AMQP_FIELD_KIND_U8: *out = v->value.u8; return 0;
    case AMQP_FIELD_KIND_I16: *out = v->value.i16; return 0;
    case AMQP_FIELD_KIND_U16: *out = v->value.u16; return 0;
    case AMQP_FIELD_KIND_I32: *out = v->value.i32; return 0;
    case AMQP_FIELD_KIND_U32: *out = v->value.u32; return 0;
    case AMQP_FIELD_KIND_I64: *out = v->value.i64; return 0;
    case AMQP_FIELD_KIND_U64: *out = (int64_t)v->value.u64; return 0;
    case AMQP_FIELD_KIND_TIMESTAMP: *out = (int64_t)v->value.u64; return 0;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        char buf[32];
        if (v->value.bytes.len == 0 || v->value.bytes.len >= sizeof buf)
            return FERRY_EINVAL;
        memcpy(buf, v->value.bytes.bytes, v->value.bytes.len);
        buf[v->value.bytes.len] = 0;
        char *end;
        long long n = strtoll(buf, &end, 10);
        if (*end)
            return FERRY_EINVAL;
        *out = n;
        return 0;
    }
    default: return FERRY_EINVAL;
    }
}

static json_t *field_json(const amqp_field_value_t *v);

json_t *fm_table_json(const amqp_table_t *t) {
    json_t *o = json_object();
    for (int i = 0; o && i < t->num_entries; i++) {
        char *k = fm_bytes_dup(t->entries[i].key);
        if (k)
            json_object_set_new(o, k, field_json(&t->entries[i].value));
        free(k);
    }
    return o;
}

static json_t *field_json(const amqp_field_value_t *v) {
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_I8: return json_integer(v->value.i8);
    case AMQP_FIELD_KIND_U8: return json_integer(v->value.u8);
    case AMQP_FIELD_KIND_I16: return json_integer(v->value.i16);
    case AMQP_FIELD_KIND_U16: return json_integer(v->value.u16);
    case AMQP_FIELD_KIND_I32: return json_integer(v->value.i32);
    case AMQP_FIELD_KIND_U32: return json_integer(v->value.u32);
    case AMQP_FIELD_KIND_I64: return json_integer(v->value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: return json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32: return json_real(v->value.f32);
    case AMQP_FIELD_KIND_F64: return json_real(v->value.f64);
    case AMQP_FIELD_KIND_DECIMAL: {
        /* value × 10^-decimals: 123 with scale 2 is 1.23 */
        double d = v->value.decimal.value;
        for (unsigned i = 0; i < v->value.decimal.decimals; i++)
            d /= 10;
        return json_real(d);
    }
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        json_t *j = json_stringn((const char *)v->value.bytes.bytes, v->value.bytes.len);
        if (j)
            return j;
        /* not UTF-8: keep the ASCII, mark the rest */
        char *s = malloc(v->value.bytes.len + 1);
        if (!s)
            return json_null();
        for (size_t i = 0; i < v->value.bytes.len; i++) {
            unsigned char ch = ((const unsigned char *)v->value.bytes.bytes)[i];
            s[i] = ch < 0x80 && ch ? (char)ch : '?';
        }
        j = json_stringn(s, v->value.bytes.len);
        free(s);
        return j ? j : json_null();
    }
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a = json_array();
        for (int i = 0; a && i < v->value.array.num_entries; i++)
            json_array_append_new(a, field_json(&v->value.array.entries[i]));
        return a;
    }
    case AMQP_FIELD_KIND_TABLE: return fm_table_json(&v->value.table);
    default: return json_null();
    }
}

char *ferry_message_headers_json(const ferry_message *m) {
    json_t *o;
    if (m && (m->props._flags & AMQP_BASIC_HEADERS_FLAG))
        o = fm_table_json(&m->props.headers);
    else
        o = json_object();
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    return s;
}

const char *ferry_message_exchange(const ferry_message *m) { return m ? m->exchange : NULL; }
const char *ferry_message_routing_key(const ferry_message *m) { return m ? m->routing_key : NULL; }
int ferry_message_redelivered(const ferry_message *m) { return m ? m->redelivered : 0; }
