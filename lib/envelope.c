/* envelope.c — CloudEvents attributes onto AMQP properties and headers (the mapping is in
 * include/ferry/envelope.h and README). JSON through jansson: data is checked, and
 * ferry_event_json renders the structured form for logs and tests. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ferry/envelope.h"
#include "internal.h"

int ferry_uuid(char buf[37]) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return FERRY_ESYS;
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
             r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
    return 0;
}

static void rfc3339(int64_t ms, char *buf, size_t n) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", b, (int)(ms % 1000));
}

int ferry_event_to_message(const ferry_event *e, ferry_message **out) {
    if (!e || !out || !e->type || !*e->type || !e->source || !*e->source || e->time_ms < 0 ||
        e->schema_version < 0 || e->sequence < 0)
        return FERRY_EINVAL;
    if (e->data) {
        json_t *j = json_loads(e->data, JSON_DECODE_ANY, NULL);
        if (!j)
            return FERRY_EJSON;
        json_decref(j);
    }
    ferry_message *m = ferry_message_new();
    if (!m)
        return FERRY_ENOMEM;
    char id[37];
    int rc = 0;
    if (!e->id)
        rc = ferry_uuid(id);
    int64_t t = e->time_ms;
    if (!t) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        t = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    char tbuf[48], num[24];
    rfc3339(t, tbuf, sizeof tbuf);
    snprintf(num, sizeof num, "%lld", (long long)(t / 1000));
    if (rc == 0)
        rc = ferry_message_set_property(m, "message_id", e->id ? e->id : id);
    if (rc == 0)
        rc = ferry_message_set_property(m, "type", e->type);
    if (rc == 0)
        rc = ferry_message_set_property(m, "timestamp", num);
    if (rc == 0)
        rc = ferry_message_set_property(m, "content_type",
                                        e->data_content_type ? e->data_content_type : "application/json");
    if (rc == 0 && e->correlation_id)
        rc = ferry_message_set_property(m, "correlation_id", e->correlation_id);
    if (rc == 0)
        rc = ferry_message_set_header_str(m, FERRY_H_SPECVERSION, "1.0");
    if (rc == 0)
        rc = ferry_message_set_header_str(m, FERRY_H_SOURCE, e->source);
    if (rc == 0)
        rc = ferry_message_set_header_str(m, FERRY_H_TIME, tbuf);
    if (rc == 0 && e->subject)
        rc = ferry_message_set_header_str(m, FERRY_H_SUBJECT, e->subject);
    if (rc == 0 && e->schema_version)
        rc = ferry_message_set_header_int(m, FERRY_H_SCHEMA_VERSION, e->schema_version);
    if (rc == 0 && e->causation_id)
        rc = ferry_message_set_header_str(m, FERRY_H_CAUSATION_ID, e->causation_id);
    if (rc == 0 && e->aggregate_id)
        rc = ferry_message_set_header_str(m, FERRY_H_AGGREGATE_ID, e->aggregate_id);
    if (rc == 0 && e->sequence)
        rc = ferry_message_set_header_int(m, FERRY_H_SEQUENCE, e->sequence);
    if (rc == 0 && e->data)
        rc = ferry_message_set_body(m, e->data, strlen(e->data));
    if (rc < 0) {
        ferry_message_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int ferry_event_schema_version(const ferry_message *m, int64_t *version) {
    if (!m || !version)
        return FERRY_EINVAL;
    return ferry_message_header_int(m, FERRY_H_SCHEMA_VERSION, version);
}

static void put_str_header(json_t *o, const char *name, const ferry_message *m, const char *h) {
    char *s = NULL;
    if (ferry_message_header_str(m, h, &s) == 0) {
        json_object_set_new(o, name, json_string(s));
        free(s);
    }
}

int ferry_event_json(const ferry_message *m, char **out) {
    if (!m || !out)
        return FERRY_EINVAL;
    json_t *o = json_object();
    if (!o)
        return FERRY_ENOMEM;
    const char *p;
    put_str_header(o, "specversion", m, FERRY_H_SPECVERSION);
    if ((p = ferry_message_property(m, "message_id")))
        json_object_set_new(o, "id", json_string(p));
    if ((p = ferry_message_property(m, "type")))
        json_object_set_new(o, "type", json_string(p));
    put_str_header(o, "source", m, FERRY_H_SOURCE);
    put_str_header(o, "time", m, FERRY_H_TIME);
    put_str_header(o, "subject", m, FERRY_H_SUBJECT);
    if ((p = ferry_message_property(m, "content_type")))
        json_object_set_new(o, "datacontenttype", json_string(p));
    int64_t v;
    if (ferry_message_header_int(m, FERRY_H_SCHEMA_VERSION, &v) == 0)
        json_object_set_new(o, "schemaversion", json_integer(v));
    if ((p = ferry_message_property(m, "correlation_id")))
        json_object_set_new(o, "correlationid", json_string(p));
    put_str_header(o, "causationid", m, FERRY_H_CAUSATION_ID);
    put_str_header(o, "aggregateid", m, FERRY_H_AGGREGATE_ID);
    if (ferry_message_header_int(m, FERRY_H_SEQUENCE, &v) == 0)
        json_object_set_new(o, "sequence", json_integer(v));
    size_t len;
    const char *body = ferry_message_body(m, &len);
    if (len) {
        json_t *d = json_loadb(body, len, JSON_DECODE_ANY, NULL);
        if (!d) {
            json_decref(o);
            return FERRY_EJSON;
        }
        json_object_set_new(o, "data", d);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!s)
        return FERRY_ENOMEM;
    *out = s;
    return 0;
}
