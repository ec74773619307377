/* mgmt_json.c — AMQP values as the management API's JSON, and back: field tables
 * (arguments, headers), basic properties, timestamps. Pure functions on bytes, safe on any
 * thread (the HTTP thread uses them on snapshots). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "mgmt_json.h"
#include "util.h"

json_t *mj_fval(const fval *v);

static json_t *array_json(slice s) {
    json_t *a = json_array();
    rd r = rd_make(s.p, s.n);
    fval v;
    while (array_next(&r, &v) > 0)
        json_array_append_new(a, mj_fval(&v));
    return a;
}

json_t *mj_fval(const fval *v) {
    if (fval_is_int(v))
        return json_integer(v->i);
    switch (v->type) {
    case 't':
        return json_boolean(v->i);
    case 'f':
    case 'd':
        return json_real(v->d);
    case 'S':
    case 'x':
        return json_stringn_nocheck((const char *)v->s.p, v->s.n);
    case 'F':
        return mj_table(v->s);
    case 'A':
        return array_json(v->s);
    case 'T':
        return json_integer(v->i);
    case 'D': {
        double d = v->dec_value;
        for (int i = 0; i < v->dec_scale; i++)
            d /= 10;
        return json_real(d);
    }
    default:
        return json_null();
    }
}

json_t *mj_table(slice t) {
    json_t *o = json_object();
    rd r = rd_make(t.p, t.n);
    slice k;
    fval v;
    while (table_next(&r, &k, &v) > 0) {
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.n, (const char *)k.p);
        json_t *j = mj_fval(&v);
        if (json_is_string(j) && !json_string_value(j))
            j = json_null();
        json_object_set_new(o, key, j);
    }
    return o;
}

/* Basic properties, in the spec's order (flag bits 15 down to 2). */
json_t *mj_props(slice raw) {
    json_t *o = json_object();
    rd r = rd_make(raw.p, raw.n);
    uint16_t flags = rd_u16(&r);
    static const char *names[] = {"content_type", "content_encoding", "headers",   "delivery_mode", "priority",
                                  "correlation_id", "reply_to",       "expiration", "message_id",   "timestamp",
                                  "type",          "user_id",          "app_id",     "cluster_id"};
    for (int i = 0; i < 14; i++) {
        if (!(flags & (0x8000 >> i)))
            continue;
        switch (i) {
        case 2: {
            slice t = rd_longstr(&r);
            json_object_set_new(o, names[i], mj_table(t));
            break;
        }
        case 3:
        case 4:
            json_object_set_new(o, names[i], json_integer(rd_u8(&r)));
            break;
        case 9:
            json_object_set_new(o, names[i], json_integer((json_int_t)rd_u64(&r)));
            break;
        default: {
            slice s = rd_shortstr(&r);
            json_object_set_new(o, names[i], json_stringn_nocheck((const char *)s.p, s.n));
        }
        }
    }
    return o;
}

static void put_short(buf *b, json_t *v) {
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    buf_shortstr(b, s ? s : "", n > 255 ? 255 : n);
}

static int as_int(json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) { /* rabbitmqadmin sends numbers as strings */
        char *end;
        long long n = strtoll(json_string_value(v), &end, 10);
        if (end != json_string_value(v) && !*end) {
            *out = n;
            return 0;
        }
    }
    return -1;
}

int mj_to_props(json_t *o, buf *out, char *err, size_t errlen) {
    static const char *names[] = {"content_type", "content_encoding", "headers",   "delivery_mode", "priority",
                                  "correlation_id", "reply_to",       "expiration", "message_id",   "timestamp",
                                  "type",          "user_id",          "app_id",     "cluster_id"};
    if (o && !json_is_object(o)) {
        snprintf(err, errlen, "properties must be an object");
        return -1;
    }
    uint16_t flags = 0;
    size_t at = out->len;
    buf_u16(out, 0);
    for (int i = 0; i < 14 && o; i++) {
        json_t *v = json_object_get(o, names[i]);
        if (!v || json_is_null(v))
            continue;
        int64_t n;
        switch (i) {
        case 2:
            if (!json_is_object(v)) {
                snprintf(err, errlen, "headers must be an object");
                return -1;
            } else {
                buf t;
                buf_init(&t);
                definitions_put_table(&t, v);
                buf_longstr(out, buf_head(&t), t.len);
                buf_free(&t);
            }
            break;
        case 3:
        case 4:
            if (as_int(v, &n) < 0 || n < 0 || n > 255) {
                snprintf(err, errlen, "%s must be an integer from 0 to 255", names[i]);
                return -1;
            }
            buf_u8(out, (uint8_t)n);
            break;
        case 9:
            if (as_int(v, &n) < 0) {
                snprintf(err, errlen, "timestamp must be an integer");
                return -1;
            }
            buf_u64(out, (uint64_t)n);
            break;
        default:
            if (!json_is_string(v)) {
                if (as_int(v, &n) == 0 && i == 7) { /* an expiration given as a number */
                    char s[32];
                    snprintf(s, sizeof s, "%lld", (long long)n);
                    buf_shortstr(out, s, strlen(s));
                    break;
                }
                snprintf(err, errlen, "%s must be a string", names[i]);
                return -1;
            }
            put_short(out, v);
        }
        flags |= (uint16_t)(0x8000 >> i);
    }
    uint8_t *p = buf_head(out) + at;
    p[0] = (uint8_t)(flags >> 8);
    p[1] = (uint8_t)flags;
    return 0;
}

json_t *mj_time(uint64_t wall_ms_v) {
    if (!wall_ms_v)
        return json_null();
    time_t t = (time_t)(wall_ms_v / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[64], d[40];
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(s, sizeof s, "%s.%03d+00:00", d, (int)(wall_ms_v % 1000));
    return json_string(s);
}

/* RabbitMQ's quote_plus: unreserved characters stay, a space is '+', the rest %XX. */
static size_t quote_plus(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~')
            out[o++] = (char)ch;
        else if (ch == ' ')
            out[o++] = '+';
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
    }
    out[o] = 0;
    return o;
}

void mj_props_key(const char *key, size_t klen, const uint8_t *args, size_t alen, char *out, size_t n) {
    if (!klen && !alen) {
        snprintf(out, n, "~");
        return;
    }
    size_t o = quote_plus(key, klen, out, n);
    if (alen) { /* RabbitMQ appends a hash of the arguments (its own hash; ours is FNV-1a) */
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < alen; i++)
            h = (h ^ args[i]) * 16777619u;
        snprintf(out + o, n - o, "~%08x", h);
    }
}

static int hexv(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int mj_props_key_matches(const char *pk, const char *seg) {
    if (strcmp(pk, seg) == 0)
        return 1;
    char dec[1100];
    size_t o = 0;
    for (const char *p = pk; *p && o + 1 < sizeof dec; p++) {
        if (*p == '%' && hexv(p[1]) >= 0 && hexv(p[2]) >= 0) {
            dec[o++] = (char)(hexv(p[1]) << 4 | hexv(p[2]));
            p += 2;
        } else {
            dec[o++] = *p == '+' ? ' ' : *p;
        }
    }
    dec[o] = 0;
    return strcmp(dec, seg) == 0;
}

void mj_quote(const char *s, char *out, size_t n) { quote_plus(s, strlen(s), out, n); }

json_t *mj_rate(double r) { return json_pack("{s:f}", "rate", r); }

void mj_stat(json_t *o, const char *name, uint64_t v, double rate) {
    char k[64];
    json_object_set_new(o, name, json_integer((json_int_t)v));
    snprintf(k, sizeof k, "%s_details", name);
    json_object_set_new(o, k, mj_rate(rate));
}
