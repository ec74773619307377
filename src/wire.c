/* wire.c — AMQP 0-9-1 frame and field-table encoding (see wire.h).
 *
 * Field-table types are RabbitMQ's (the AMQP 0-9-1 errata set, which every client uses):
 * t b B s u I i l f d D S x A T F V. Decoding is strict: an unknown type or a length that
 * runs past its container is an error, never a read out of bounds. */
#include "wire.h"

#include <stdio.h>

#define TABLE_MAX_DEPTH 32

long wire_parse_frame(const uint8_t *p, size_t n, uint32_t frame_max, frame *f, const char **why) {
    if (n < 7)
        return 0;
    rd r = rd_make(p, n);
    f->type = rd_u8(&r);
    f->channel = rd_u16(&r);
    f->size = rd_u32(&r);
    if (frame_max && (uint64_t)f->size + FRAME_OVERHEAD > frame_max) {
        *why = "frame size exceeds frame_max";
        return WIRE_TOO_LARGE;
    }
    if (n < (size_t)f->size + FRAME_OVERHEAD)
        return 0;
    f->payload = p + 7;
    if (p[7 + f->size] != FRAME_END) {
        *why = "bad frame end marker";
        return WIRE_BAD_END;
    }
    return (long)f->size + FRAME_OVERHEAD;
}

void wire_format_octets(const uint8_t *p, size_t n, char *out, size_t outn) {
    int printable = n > 0;
    for (size_t i = 0; i < n && printable; i++)
        printable = p[i] >= 32 && p[i] < 127;
    size_t o = 0;
    o += (size_t)snprintf(out + o, outn - o, printable ? "<<\"" : "<<");
    for (size_t i = 0; i < n && o + 12 < outn; i++) {
        if (printable)
            o += (size_t)snprintf(out + o, outn - o, (p[i] == '"' || p[i] == '\\') ? "\\%c" : "%c", p[i]);
        else
            o += (size_t)snprintf(out + o, outn - o, i ? ",%u" : "%u", p[i]);
    }
    snprintf(out + o, outn - o, printable ? "\">>" : ">>");
}

size_t frame_begin(buf *b, uint8_t type, uint16_t channel) {
    size_t mark = b->len;
    buf_u8(b, type);
    buf_u16(b, channel);
    buf_u32(b, 0);
    return mark;
}

void frame_end(buf *b, size_t mark) {
    buf_patch_u32(b, mark + 3, (uint32_t)(b->len - mark - 7));
    buf_u8(b, FRAME_END);
}

void wire_heartbeat(buf *b) {
    static const uint8_t hb[8] = {FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END};
    buf_put(b, hb, sizeof hb);
}

void wire_content_header(buf *b, uint16_t channel, const uint8_t *props, size_t props_len, uint64_t body_len) {
    size_t m = frame_begin(b, FRAME_HEADER, channel);
    buf_u16(b, CLASS_BASIC);
    buf_u16(b, 0);
    buf_u64(b, body_len);
    if (props_len)
        buf_put(b, props, props_len);
    else
        buf_u16(b, 0);
    frame_end(b, m);
}

void wire_content(buf *b, uint16_t channel, const uint8_t *props, size_t props_len, const uint8_t *body,
                  uint64_t body_len, uint32_t frame_max) {
    wire_content_header(b, channel, props, props_len, body_len);
    size_t chunk = frame_max > FRAME_OVERHEAD ? frame_max - FRAME_OVERHEAD : 131072 - FRAME_OVERHEAD;
    while (body_len > 0) {
        size_t n = body_len < chunk ? (size_t)body_len : chunk;
        uint8_t *p = buf_reserve(b, n + FRAME_OVERHEAD);
        p[0] = FRAME_BODY;
        p[1] = (uint8_t)(channel >> 8), p[2] = (uint8_t)channel;
        p[3] = (uint8_t)(n >> 24), p[4] = (uint8_t)(n >> 16), p[5] = (uint8_t)(n >> 8), p[6] = (uint8_t)n;
        memcpy(p + 7, body, n);
        p[7 + n] = FRAME_END;
        b->len += n + FRAME_OVERHEAD;
        body += n;
        body_len -= n;
    }
}

/* ---- field tables ---- */

static int value_read(rd *r, char type, fval *v) {
    memset(v, 0, sizeof *v);
    v->type = type;
    switch (type) {
    case 't': v->i = rd_u8(r) != 0; break;
    case 'b': v->i = (int8_t)rd_u8(r); break;
    case 'B': v->i = rd_u8(r); break;
    case 's': v->i = (int16_t)rd_u16(r); break;
    case 'u': v->i = rd_u16(r); break;
    case 'I': v->i = (int32_t)rd_u32(r); break;
    case 'i': v->i = rd_u32(r); break;
    case 'l':
    case 'L': v->i = (int64_t)rd_u64(r); break; /* 'L': py-amqp's 64-bit integers */
    case 'T': v->i = (int64_t)rd_u64(r); break;
    case 'f': {
        uint32_t u = rd_u32(r);
        float fl;
        memcpy(&fl, &u, 4);
        v->d = fl;
        break;
    }
    case 'd': {
        uint64_t u = rd_u64(r);
        memcpy(&v->d, &u, 8);
        break;
    }
    case 'D':
        v->dec_scale = rd_u8(r);
        v->dec_value = rd_u32(r);
        break;
    case 'S':
    case 'x':
    case 'F':
    case 'A': v->s = rd_longstr(r); break;
    case 'V': break;
    default: return -1;
    }
    return r->err ? -1 : 0;
}

/* The next table entry (key != NULL) or array value (key == NULL). */
static int next_value(rd *r, slice *key, fval *v) {
    if (r->err)
        return -1;
    if (rd_left(r) == 0)
        return 0;
    if (key)
        *key = rd_shortstr(r);
    char type = (char)rd_u8(r);
    if (r->err || value_read(r, type, v) < 0) {
        r->err = 1;
        return -1;
    }
    return 1;
}

int table_next(rd *r, slice *key, fval *v) { return next_value(r, key, v); }

int array_next(rd *r, fval *v) { return next_value(r, NULL, v); }

static int validate(slice t, int is_array, int depth) {
    if (depth > TABLE_MAX_DEPTH)
        return -1;
    rd r = rd_make(t.p, t.n);
    slice key;
    fval v;
    for (;;) {
        int rc = is_array ? array_next(&r, &v) : table_next(&r, &key, &v);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return -1;
        if ((v.type == 'F' || v.type == 'A') && validate(v.s, v.type == 'A', depth + 1) < 0)
            return -1;
    }
}

int table_validate(slice t) { return validate(t, 0, 0); }

int table_get(slice t, const char *key, fval *v) {
    rd r = rd_make(t.p, t.n);
    slice k;
    while (table_next(&r, &k, v) == 1)
        if (slice_eqs(k, key))
            return 1;
    return 0;
}

static int value_equal(const fval *a, const fval *b);

/* Tables are equal when they hold the same keys with equal values, in any order. */
static int tables_equal(slice a, slice b) {
    int na = 0, nb = 0;
    rd r = rd_make(a.p, a.n);
    slice k;
    fval va, vb;
    while (table_next(&r, &k, &va) == 1) {
        na++;
        char key[256];
        memcpy(key, k.p, k.n);
        key[k.n] = 0;
        if (!table_get(b, key, &vb) || !value_equal(&va, &vb))
            return 0;
    }
    r = rd_make(b.p, b.n);
    while (table_next(&r, &k, &vb) == 1)
        nb++;
    return na == nb;
}

static int arrays_equal(slice a, slice b) {
    rd ra = rd_make(a.p, a.n), rb = rd_make(b.p, b.n);
    fval va, vb;
    for (;;) {
        int x = array_next(&ra, &va), y = array_next(&rb, &vb);
        if (x != y)
            return 0;
        if (x <= 0)
            return x == 0;
        if (!value_equal(&va, &vb))
            return 0;
    }
}

static int value_equal(const fval *a, const fval *b) {
    /* RabbitMQ's type classes: all integers are one class, float and double another. */
    if (fval_is_int(a) && fval_is_int(b))
        return a->i == b->i;
    if ((a->type == 'f' || a->type == 'd') && (b->type == 'f' || b->type == 'd'))
        return a->d == b->d;
    if (fval_is_str(a) && fval_is_str(b)) /* longstr and binary: the same bytes match */
        return slice_eq(a->s, b->s);
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case 't':
    case 'T': return a->i == b->i;
    case 'S':
    case 'x': return slice_eq(a->s, b->s);
    case 'D': return a->dec_scale == b->dec_scale && a->dec_value == b->dec_value;
    case 'F': return tables_equal(a->s, b->s);
    case 'A': return arrays_equal(a->s, b->s);
    case 'V': return 1;
    }
    return 0;
}

int fval_equal(const fval *a, const fval *b) { return value_equal(a, b); }

const char *fval_type_name(char type) {
    switch (type) {
    case 't': return "bool";
    case 'b': return "byte";
    case 'B': return "unsignedbyte";
    case 's': return "short";
    case 'u': return "unsignedshort";
    case 'I': return "signedint";
    case 'i': return "unsignedint";
    case 'l':
    case 'L': return "long";
    case 'T': return "timestamp";
    case 'f': return "float";
    case 'd': return "double";
    case 'D': return "decimal";
    case 'S': return "longstr";
    case 'x': return "binary";
    case 'F': return "table";
    case 'A': return "array";
    case 'V': return "void";
    }
    return "unknown";
}

void fval_format(const fval *v, char *out, size_t n) {
    if (fval_is_int(v) || v->type == 'T')
        snprintf(out, n, "%lld", (long long)v->i);
    else if (v->type == 't')
        snprintf(out, n, "%s", v->i ? "true" : "false");
    else if (v->type == 'f' || v->type == 'd')
        snprintf(out, n, "%g", v->d);
    else if (fval_is_str(v))
        snprintf(out, n, "%.*s", (int)(v->s.n < 200 ? v->s.n : 200), (const char *)v->s.p);
    else
        snprintf(out, n, "%s", fval_type_name(v->type));
}

void table_put_longstr(buf *b, const char *key, const char *s, size_t n) {
    buf_shortstr(b, key, strlen(key));
    buf_u8(b, 'S');
    buf_longstr(b, s, n);
}

void table_put_bool(buf *b, const char *key, int v) {
    buf_shortstr(b, key, strlen(key));
    buf_u8(b, 't');
    buf_u8(b, v ? 1 : 0);
}

void table_put_table(buf *b, const char *key, const uint8_t *t, size_t n) {
    buf_shortstr(b, key, strlen(key));
    buf_u8(b, 'F');
    buf_longstr(b, t, n);
}

/* ---- properties ---- */

int props_parse(slice raw, props_view *pv) {
    memset(pv, 0, sizeof *pv);
    rd r = rd_make(raw.p, raw.n);
    uint16_t f = rd_u16(&r);
    pv->flags = f;
    if (f & 1) /* continuation: basic has no further properties */
        return -1;
    if (f & 3)
        return -1;
    if (f & PROP_CONTENT_TYPE)
        rd_shortstr(&r);
    if (f & PROP_CONTENT_ENCODING)
        rd_shortstr(&r);
    if (f & PROP_HEADERS) {
        pv->headers = rd_longstr(&r);
        if (!r.err && table_validate(pv->headers) < 0)
            return -1;
    }
    if (f & PROP_DELIVERY_MODE)
        pv->delivery_mode = rd_u8(&r);
    if (f & PROP_PRIORITY)
        pv->priority = rd_u8(&r);
    if (f & PROP_CORRELATION_ID)
        pv->correlation_id = rd_shortstr(&r);
    if (f & PROP_REPLY_TO)
        pv->reply_to = rd_shortstr(&r);
    if (f & PROP_EXPIRATION)
        pv->expiration = rd_shortstr(&r);
    if (f & PROP_MESSAGE_ID)
        pv->message_id = rd_shortstr(&r);
    if (f & PROP_TIMESTAMP)
        pv->timestamp = rd_u64(&r);
    if (f & PROP_TYPE)
        rd_shortstr(&r);
    if (f & PROP_USER_ID)
        pv->user_id = rd_shortstr(&r);
    if (f & PROP_APP_ID)
        rd_shortstr(&r);
    if (f & PROP_CLUSTER_ID)
        rd_shortstr(&r);
    return r.err || rd_left(&r) != 0 ? -1 : 0;
}

/* Copies one property field from r to out (or skips it if out is NULL). */
static void copy_field(rd *r, int kind, buf *out) {
    const uint8_t *start = r->p;
    switch (kind) {
    case 's': rd_shortstr(r); break;
    case 'S': rd_longstr(r); break;
    case '1': rd_u8(r); break;
    case '8': rd_u64(r); break;
    }
    if (out && !r->err)
        buf_put(out, start, (size_t)(r->p - start));
}

/* props_rewrite, and a new message-id if message_id.p is set (cron copies). */
static void rewrite(slice raw, slice headers, int drop_expiration, slice message_id, buf *out) {
    /* Field kinds in flag order: content-type … cluster-id. */
    static const char kinds[14] = {'s', 's', 'S', '1', '1', 's', 's', 's', 's', '8', 's', 's', 's', 's'};
    rd r = rd_make(raw.p, raw.n);
    uint16_t flags = rd_u16(&r);
    uint16_t nflags = (uint16_t)(flags | PROP_HEADERS);
    if (drop_expiration)
        nflags &= (uint16_t)~PROP_EXPIRATION;
    if (message_id.p)
        nflags |= PROP_MESSAGE_ID;
    buf_u16(out, nflags);
    for (int i = 0; i < 14; i++) {
        uint16_t bit = (uint16_t)(1u << (15 - i));
        if (bit == PROP_HEADERS) {
            if (flags & bit)
                copy_field(&r, 'S', NULL);
            buf_longstr(out, headers.p, headers.n);
            continue;
        }
        if (bit == PROP_MESSAGE_ID && message_id.p) {
            if (flags & bit)
                copy_field(&r, 's', NULL);
            buf_shortstr(out, (const char *)message_id.p, message_id.n);
            continue;
        }
        if (!(flags & bit))
            continue;
        copy_field(&r, kinds[i], bit == PROP_EXPIRATION && drop_expiration ? NULL : out);
    }
}

void props_rewrite(slice raw, slice headers, int drop_expiration, buf *out) {
    rewrite(raw, headers, drop_expiration, (slice){NULL, 0}, out);
}

void props_rewrite_id(slice raw, slice headers, slice message_id, buf *out) {
    rewrite(raw, headers, 0, message_id, out);
}
