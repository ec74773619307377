/* mgmt_stream.c — streams in the management API and /metrics (the stream part of issue 13),
 * following mgmt's pattern: loop-thread functions that mgmt_api.c's queue JSON and
 * metrics.c's text call for stream queues.
 *
 * A stream queue's JSON gets RabbitMQ's stream fields (committed_offset, segments) and
 * Ferry's "stream" object: size in bytes, first and last offsets, and each named consumer
 * (x-ferry-offset-name) with its stored offset, lag (committed offset minus stored offset:
 * events appended that it has not acknowledged) and whether a consumer uses it now. /metrics
 * gets ferry_stream_* gauges per stream and per named consumer. */
#include <stdio.h>

#include "mgmt_int.h"
#include "util.h"

static void add_name(void *ctx, const char *name, uint64_t offset, uint64_t lag, int active) {
    json_array_append_new(ctx, json_pack("{s:s,s:I,s:I,s:b}", "name", name, "offset", (json_int_t)offset,
                                         "lag", (json_int_t)lag, "active", active));
}

void stream_queue_json(queue *q, json_t *o) {
    stream_info si;
    if (!q->is_stream || stream_stats(q, &si) < 0)
        return;
    json_t *names = json_array();
    stream_each_name(q, add_name, names);
    int empty = si.first >= si.committed;
    json_object_set_new(o, "committed_offset", empty ? json_null() : json_integer((json_int_t)si.last));
    json_object_set_new(o, "segments", json_integer((json_int_t)si.segments));
    json_object_set_new(o, "stream",
                        json_pack("{s:I,s:o,s:o,s:I,s:o}", "bytes", (json_int_t)si.bytes, "first_offset",
                                  empty ? json_null() : json_integer((json_int_t)si.first), "last_offset",
                                  empty ? json_null() : json_integer((json_int_t)si.last), "segments",
                                  (json_int_t)si.segments, "named_consumers", names));
}

/* ---- /metrics ---- */

typedef struct smet {
    buf *o;
    int pass;
} smet;

static void esc(char *out, size_t n, const char *s) {
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            out[k++] = '\\';
            out[k++] = *s == '\n' ? 'n' : *s;
        } else {
            out[k++] = *s;
        }
    }
    out[k] = 0;
}

static void line(buf *o, const char *name, const char *labels, uint64_t v) {
    char l[1400];
    int n = snprintf(l, sizeof l, "%s%s %llu\n", name, labels, (unsigned long long)v);
    buf_put(o, l, (size_t)MIN((size_t)n, sizeof l - 1));
}

typedef struct nctx {
    smet *s;
    const char *qlabels; /* vhost="...",queue="..." */
} nctx;

static void name_line(void *ctx, const char *name, uint64_t offset, uint64_t lag, int active) {
    nctx *c = ctx;
    (void)active;
    char en[600], lb[1300];
    esc(en, sizeof en, name);
    snprintf(lb, sizeof lb, "{%s,name=\"%s\"}", c->qlabels, en);
    line(c->s->o, c->s->pass == 4 ? "ferry_stream_consumer_offset" : "ferry_stream_consumer_lag", lb,
         c->s->pass == 4 ? offset : lag);
}

static void per_stream(void *ctx, queue *q) {
    smet *s = ctx;
    stream_info si;
    if (!q->is_stream || stream_stats(q, &si) < 0)
        return;
    char vh[300], qn[600], ql[1000], lb[1100];
    esc(vh, sizeof vh, q->vh->name);
    esc(qn, sizeof qn, q->name);
    snprintf(ql, sizeof ql, "vhost=\"%s\",queue=\"%s\"", vh, qn);
    snprintf(lb, sizeof lb, "{%s}", ql);
    int empty = si.first >= si.committed;
    switch (s->pass) {
    case 0: line(s->o, "ferry_stream_bytes", lb, si.bytes); break;
    case 1: line(s->o, "ferry_stream_segments", lb, si.segments); break;
    case 2:
        if (!empty)
            line(s->o, "ferry_stream_first_offset", lb, si.first);
        break;
    case 3:
        if (!empty)
            line(s->o, "ferry_stream_last_offset", lb, si.last);
        break;
    default: {
        nctx c = {s, ql};
        stream_each_name(q, name_line, &c);
    }
    }
}

void stream_metrics(broker *b, buf *o) {
    static const char *fam[][2] = {
        {"ferry_stream_bytes", "Bytes of a stream's segment files"},
        {"ferry_stream_segments", "Segment files of a stream"},
        {"ferry_stream_first_offset", "Offset of the oldest event a stream still holds"},
        {"ferry_stream_last_offset", "Offset of the newest committed event of a stream"},
        {"ferry_stream_consumer_offset", "Stored position of a named stream consumer (x-ferry-offset-name)"},
        {"ferry_stream_consumer_lag", "Events committed to the stream after a named consumer's position"}};
    for (int k = 0; k < 6; k++) {
        char h[400];
        int n = snprintf(h, sizeof h, "# TYPE %s gauge\n# HELP %s %s\n", fam[k][0], fam[k][0], fam[k][1]);
        buf_put(o, h, (size_t)n);
        smet s = {o, k};
        broker_each_queue(b, per_stream, &s);
    }
}
