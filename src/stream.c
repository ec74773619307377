/* stream.c — stream queues (x-queue-type stream), RabbitMQ's append-only queues over AMQP
 * 0-9-1, on the broker's side: publishing appends to the stream's own log (streamlog.c, in
 * the store), consumers are cursors that read it from any offset, acknowledgements remove
 * nothing.
 *
 * As RabbitMQ 4.x does it:
 *   - a consumer needs a prefetch (basic.qos) and manual acks; it starts at x-stream-offset:
 *     first, last, next (the default), a numeric offset, a timestamp (AMQP seconds) or an
 *     interval string ("1h": that long ago); each delivery carries its offset in the
 *     x-stream-offset header; consumers are independent;
 *   - filtering (RabbitMQ 3.13): x-stream-filter-value on publish, x-stream-filter (a string
 *     or an array of strings) and x-stream-match-unfiltered on consume; Ferry filters each
 *     message exactly (RabbitMQ filters chunks with a Bloom filter, so its clients also
 *     filter on their side: programs written that way work on both);
 *   - basic.get and queue.purge are refused (540, RabbitMQ's texts); basic.nack and
 *     basic.reject give the consumer its credit back and redeliver nothing (RabbitMQ 4.x;
 *     3.10 closes the connection with 540); an exclusive consumer does not exclude others
 *     (RabbitMQ 3.10 does not either); basic.recover leaves stream deliveries as they are
 *     (RabbitMQ 3.10 fails with 541).
 * Beyond RabbitMQ: x-ferry-offset-name names a consumer whose position the broker keeps:
 * the offset after the highest one up to which everything delivered is acknowledged (or was
 * filtered out; a nacked or rejected event is not acknowledged: the position stays at it for
 * the rest of that consumer's life, so the next attach replays it), saved at least once a
 * second and at shutdown. A consumer with that name and
 * no x-stream-offset resumes there; a new name starts at next; a name already in use by a
 * consumer of the stream is refused (406).
 *
 * Replay never blocks the loop: a cursor with credit asks the stream log for the next batch
 * of records (one read of up to STREAM_READ bytes on the reader thread) and delivers from it
 * as credit allows; it holds at most that batch plus its unacknowledged deliveries, which
 * hold no message (an unacked entry is the offset alone). */
#include "channel_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"
#include "streamlog.h"
#include "util.h"

#define STREAM_READ (1u << 20)
#define RABBIT_DEFAULT_SEGMENT 500000000ULL /* x-stream-max-segment-size-bytes default */
#define NAMED_MAX 10000                     /* offset names per stream */

typedef struct named {
    char *name;
    size_t n;
    uint64_t offset;
    consumer *cs; /* the consumer using the name now, or NULL */
    uint8_t dirty;
} named;

struct stream {
    queue *q;
    slog *log;
    named *names;
    size_t nnames;
    uint64_t dispatched_upto; /* committed offset when consumers were last woken */
    struct stream *next;
};

typedef struct scursor {
    consumer *cs; /* NULL once the consumer is gone (freed when its read comes back) */
    struct stream *st;
    uint64_t next;     /* the next offset to look at */
    uint64_t min_ts;   /* a timestamp start: records older than this are skipped; 0 none */
    uint64_t ts_until; /* ... among those stored when it attached (later ones all go, as
                        * RabbitMQ attaches a start past the end at next) */
    slog_batch *b;
    size_t bi;
    uint8_t reading;
    uint8_t filtering, match_unfiltered;
    slice *filters; /* copies */
    size_t nfilters;
    named *nm;      /* index into st->names is unstable: looked up by pointer math */
    size_t nm_at;   /* its index in st->names, if nm */
    uint64_t floor; /* the lowest nacked or rejected offset (UINT64_MAX: none) */
    uint64_t *toff; /* delivered offsets not yet acked, in order (named tracking) */
    uint8_t *tdone;
    size_t thead, tlen, tcap;
} scursor;

/* ---- argument parsing (RabbitMQ's rules) ---- */

/* RabbitMQ's x-max-age / interval syntax: a positive integer and one unit of Y M D h m s.
 * Returns milliseconds, or -1. */
int64_t stream_parse_age(slice s) {
    if (s.n < 2 || s.n > 20)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9' || v > 1000000000000LL)
            return -1;
        v = v * 10 + (s.p[i] - '0');
    }
    int64_t unit;
    switch (s.p[s.n - 1]) {
    case 'Y': unit = 365LL * 86400 * 1000; break;
    case 'M': unit = 30LL * 86400 * 1000; break;
    case 'D': unit = 86400LL * 1000; break;
    case 'h': unit = 3600LL * 1000; break;
    case 'm': unit = 60LL * 1000; break;
    case 's': unit = 1000; break;
    default: return -1;
    }
    if (v <= 0 || v > INT64_MAX / unit)
        return -1;
    return v * unit;
}

int stream_is(slice args) {
    fval v;
    return table_get(args, "x-queue-type", &v) && fval_is_str(&v) && slice_eqs(v.s, "stream");
}

static slog_limits limits_of(const queue *q) {
    slice args = {q->args, q->args_len};
    fval v;
    slog_limits lim = {-1, -1, RABBIT_DEFAULT_SEGMENT};
    if (table_get(args, "x-max-length-bytes", &v) && fval_is_int(&v) && v.i >= 0)
        lim.max_bytes = v.i;
    if (table_get(args, "x-max-age", &v) && fval_is_str(&v))
        lim.max_age_ms = stream_parse_age(v.s);
    if (table_get(args, "x-stream-max-segment-size-bytes", &v) && fval_is_int(&v) && v.i > 0)
        lim.segment_size = (uint64_t)v.i;
    return lim;
}

/* ---- the stream of a queue ---- */

static struct stream *stream_of(queue *q) { return q->stream; }

static void name_loaded(void *ctx, slice name, uint64_t offset) {
    struct stream *st = ctx;
    st->names = xrealloc(st->names, (st->nnames + 1) * sizeof *st->names);
    st->names[st->nnames++] = (named){xstrndup((const char *)name.p, name.n), name.n, offset, NULL, 0};
}

void stream_attach(queue *q, int fresh) {
    broker *b = q->b;
    slogs *ss = store_streams(b->store);
    if (q->stream || !ss || !q->qid)
        return;
    struct stream *st = xcalloc(1, sizeof *st);
    st->q = q;
    slog_limits lim = limits_of(q);
    st->log = slog_open(ss, q->qid, &lim, fresh);
    slog_each_name(st->log, name_loaded, st);
    st->dispatched_upto = slog_committed(st->log);
    st->next = b->streams;
    b->streams = st;
    q->stream = st;
}

static int keep_stream(void *ctx, uint32_t id) {
    broker *b = ctx;
    for (struct stream *st = b->streams; st; st = st->next)
        if (st->q->qid == id)
            return 1;
    return 0;
}

static void attach_recovered(void *ctx, queue *q) {
    (void)ctx;
    if (q->is_stream)
        stream_attach(q, 0);
}

void stream_recover_all(broker *b) {
    broker_each_queue(b, attach_recovered, NULL);
    slogs *ss = store_streams(b->store);
    if (ss)
        slogs_gc(ss, keep_stream, b);
}

static void unlink_stream(struct stream *st) {
    broker *b = st->q->b;
    for (struct stream **pp = &b->streams; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    for (size_t i = 0; i < st->nnames; i++)
        free(st->names[i].name);
    free(st->names);
    st->q->stream = NULL;
    free(st);
}

void stream_destroy(queue *q) {
    struct stream *st = stream_of(q);
    if (!st)
        return;
    broker *b = q->b;
    if (b->store && st->log)
        slog_delete(store_streams(b->store), st->log, store_stream_batch(b->store, 0));
    unlink_stream(st);
}

/* Saves the named offsets that changed. */
static void save_names(broker *b, struct stream *st) {
    for (size_t i = 0; i < st->nnames; i++) {
        named *nm = &st->names[i];
        if (!nm->dirty || !b->store || !st->log)
            continue;
        slog_put_name(st->log, store_stream_batch(b->store, 0), (slice){(const uint8_t *)nm->name, nm->n},
                      nm->offset);
        nm->dirty = 0;
    }
}

void stream_tick(broker *b) {
    uint64_t now = wall_ms();
    for (struct stream *st = b->streams; st; st = st->next) {
        save_names(b, st);
        if (b->store && st->log)
            slog_retention(st->log, store_stream_batch(b->store, 0), now, 0);
    }
}

void stream_shutdown(broker *b) {
    while (b->streams) {
        struct stream *st = b->streams;
        save_names(b, st);
        if (st->log)
            slog_close(store_streams(b->store), st->log);
        st->log = NULL;
        unlink_stream(st);
    }
}

/* The store synced a batch: consumers waiting at the end of a stream that grew get going. */
void stream_synced(broker *b) {
    for (struct stream *st = b->streams; st; st = st->next) {
        uint64_t c = slog_committed(st->log);
        if (c != st->dispatched_upto) {
            st->dispatched_upto = c;
            if (st->q->nconsumers)
                queue_mark_dirty(st->q);
        }
    }
}

/* ---- publishing ---- */

void stream_publish(queue *q, message *m) {
    struct stream *st = stream_of(q);
    if (!st || !q->b->store)
        return;
    slice filter = {0};
    props_view pv = {0};
    if (m->props_len >= 2 && (msg_props(m)[0] << 8 & PROP_HEADERS)) {
        props_parse((slice){msg_props(m), m->props_len}, &pv);
        fval v;
        if (pv.headers.n && table_get(pv.headers, "x-stream-filter-value", &v) && fval_is_str(&v))
            filter = v.s;
    }
    slog_append(st->log, store_stream_batch(q->b->store, 1),
                (slice){(const uint8_t *)msg_exchange(m), m->exchange_len},
                (slice){(const uint8_t *)msg_rkey(m), m->rkey_len}, (slice){msg_props(m), m->props_len},
                msg_body(m), m->body_len, filter);
}

/* ---- cursors ---- */

static named *cursor_name(scursor *sc) { return sc->nm ? &sc->st->names[sc->nm_at] : NULL; }

/* The named position: the first delivered offset not yet acked, else the next to look at. */
static void track_update(scursor *sc) {
    named *nm = cursor_name(sc);
    if (!nm)
        return;
    while (sc->tlen && sc->tdone[sc->thead]) {
        sc->thead = (sc->thead + 1) % sc->tcap;
        sc->tlen--;
    }
    uint64_t pos = MIN(sc->tlen ? sc->toff[sc->thead] : sc->next, sc->floor);
    if (pos != nm->offset) {
        nm->offset = pos;
        nm->dirty = 1;
    }
}

static void track_push(scursor *sc, uint64_t offset) {
    if (!sc->nm)
        return;
    if (sc->tlen == sc->tcap) {
        size_t ncap = sc->tcap ? sc->tcap * 2 : 64;
        uint64_t *o = xmalloc(ncap * sizeof *o);
        uint8_t *d = xmalloc(ncap);
        for (size_t i = 0; i < sc->tlen; i++) {
            o[i] = sc->toff[(sc->thead + i) % sc->tcap];
            d[i] = sc->tdone[(sc->thead + i) % sc->tcap];
        }
        free(sc->toff);
        free(sc->tdone);
        sc->toff = o;
        sc->tdone = d;
        sc->tcap = ncap;
        sc->thead = 0;
    }
    size_t at = (sc->thead + sc->tlen) % sc->tcap;
    sc->toff[at] = offset;
    sc->tdone[at] = 0;
    sc->tlen++;
}

/* An unacked delivery of q ended by the client (mode SETTLE_*): it gives credit back, and
 * nothing is put back (a stream removes nothing). An ack moves the named position; a nack or
 * reject holds it at that offset (floor). Deliveries of a consumer already gone (channel
 * closed) come here with cs NULL. */
void stream_settled(queue *q, consumer *cs, uint64_t offset, int mode) {
    if (cs && cs->sc) {
        scursor *sc = cs->sc;
        for (size_t i = 0; i < sc->tlen; i++) {
            size_t at = (sc->thead + i) % sc->tcap;
            if (sc->toff[at] == offset) {
                sc->tdone[at] = 1;
                break;
            }
        }
        if (mode != SETTLE_ACK && offset < sc->floor)
            sc->floor = offset;
        track_update(sc);
    }
    if (!q->deleted && q->nconsumers)
        queue_mark_dirty(q);
}

static int filter_pass(const scursor *sc, const slog_rec *r) {
    if (!sc->filtering)
        return 1;
    if (r->filter.n == 0)
        return sc->match_unfiltered;
    for (size_t i = 0; i < sc->nfilters; i++)
        if (slice_eq(sc->filters[i], r->filter))
            return 1;
    return 0;
}

static void deliver(consumer *cs, scursor *sc, const slog_rec *r) {
    channel *ch = cs->ch;
    uint64_t tag = ++ch->next_tag;
    buf *o = out(ch);
    size_t mk = method_begin(o, ch->id, BASIC_DELIVER);
    buf_shortstr(o, cs->tag, cs->tag_len);
    buf_u64(o, tag);
    buf_u8(o, 0);
    buf_shortstr(o, (const char *)r->exchange.p, r->exchange.n);
    buf_shortstr(o, (const char *)r->rkey.p, r->rkey.n);
    frame_end(o, mk);
    buf props;
    buf_init(&props);
    props_set_int_header(r->props, "x-stream-offset", 'l', (int64_t)r->offset, &props);
    wire_content(o, ch->id, buf_head(&props), props.len, r->body.p, r->body.n, ch->c->frame_max);
    buf_free(&props);
    consume_push_unacked(cs, tag, r->offset);
    track_push(sc, r->offset);
}

static void read_done(void *ctx, slog_batch *b);

/* Delivers what the cursor has while the consumer has credit; asks for more when its batch
 * is used up. */
static void cursor_feed(scursor *sc) {
    consumer *cs = sc->cs;
    struct stream *st = sc->st;
    while (consumer_can_take(cs)) {
        if (sc->b && sc->bi < sc->b->nrecs) {
            const slog_rec *r = &sc->b->recs[sc->bi++];
            if (r->offset < sc->next)
                continue;
            sc->next = r->offset + 1;
            if (sc->min_ts && r->ts < sc->min_ts && r->offset < sc->ts_until)
                continue;
            sc->min_ts = 0;
            if (!filter_pass(sc, r))
                continue;
            deliver(cs, sc, r);
            continue;
        }
        if (sc->b) {
            if (sc->b->next > sc->next)
                sc->next = sc->b->next;
            slog_batch_free(sc->b);
            sc->b = NULL;
        }
        if (sc->reading || !st->log)
            break;
        if (sc->next < slog_first(st->log))
            sc->next = slog_first(st->log);
        if (slog_read(store_streams(cs->q->b->store), st->log, sc->next, STREAM_READ, read_done, sc))
            sc->reading = 1;
        break;
    }
    track_update(sc);
}

static void cursor_free(scursor *sc) {
    slog_batch_free(sc->b);
    for (size_t i = 0; i < sc->nfilters; i++)
        free((void *)(uintptr_t)sc->filters[i].p);
    free(sc->filters);
    free(sc->toff);
    free(sc->tdone);
    free(sc);
}

static void read_done(void *ctx, slog_batch *b) {
    scursor *sc = ctx;
    sc->reading = 0;
    if (!sc->cs) {
        slog_batch_free(b);
        cursor_free(sc);
        return;
    }
    slog_batch_free(sc->b);
    sc->b = b;
    sc->bi = 0;
    queue_mark_dirty(sc->cs->q);
}

void stream_dispatch(queue *q) {
    for (size_t i = 0; i < q->nconsumers; i++)
        if (q->consumers[i]->sc)
            cursor_feed(q->consumers[i]->sc);
}

/* The consumer leaves (cancel, channel close, queue deleted): its name is free again, and
 * its cursor goes now or, with a read in flight, when the read comes back. */
void stream_consumer_gone(consumer *cs) {
    scursor *sc = cs->sc;
    if (!sc)
        return;
    named *nm = cursor_name(sc);
    if (nm)
        nm->cs = NULL;
    cs->sc = NULL;
    sc->cs = NULL;
    if (!sc->reading)
        cursor_free(sc);
}

/* ---- basic.consume on a stream ---- */

static int offset_error(channel *ch, queue *q, const fval *v) {
    char val[160];
    if (fval_is_str(v))
        snprintf(val, sizeof val, "<<\"%.*s\">>", (int)MIN(v->s.n, 100), (const char *)v->s.p);
    else
        fval_format(v, val, sizeof val);
    channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME,
                        "invalid arg 'x-stream-offset' for %s: {invalid_stream_offset_arg,{%s,%s}}",
                        rs("queue", (slice){(const uint8_t *)q->name, q->name_len}), fval_type_name(v->type),
                        val);
    return -1;
}

/* Where a new consumer starts (x-stream-offset), or -1 after closing the channel. *min_ts
 * is set for a timestamp start. */
static int start_offset(channel *ch, queue *q, const fval *v, uint64_t *from, uint64_t *min_ts) {
    slog *l = q->stream ? q->stream->log : NULL;
    uint64_t first = l ? slog_first(l) : 0, end = l ? slog_end(l) : 0;
    *min_ts = 0;
    if (fval_is_str(v)) {
        if (slice_eqs(v->s, "first")) {
            *from = first;
        } else if (slice_eqs(v->s, "last")) {
            *from = l ? slog_last(l) : 0;
        } else if (slice_eqs(v->s, "next")) {
            *from = end;
        } else {
            int64_t age = stream_parse_age(v->s);
            if (age < 0)
                return offset_error(ch, q, v);
            uint64_t now = wall_ms();
            *min_ts = now > (uint64_t)age ? now - (uint64_t)age : 1;
            *from = l ? slog_seek_time(l, *min_ts) : 0;
        }
    } else if (v->type == 'T') { /* AMQP timestamp: seconds */
        *min_ts = (uint64_t)v->i > UINT64_MAX / 1000 ? UINT64_MAX : MAX((uint64_t)v->i * 1000, 1);
        *from = l ? slog_seek_time(l, *min_ts) : 0;
    } else if (fval_is_int(v)) {
        *from = v->i < 0 || (uint64_t)v->i < first ? first : (uint64_t)v->i > end ? end : (uint64_t)v->i;
    } else {
        return offset_error(ch, q, v);
    }
    return 0;
}

static named *find_name(struct stream *st, slice name, size_t *at) {
    for (size_t i = 0; i < st->nnames; i++)
        if (slice_eq((slice){(const uint8_t *)st->names[i].name, st->names[i].n}, name)) {
            *at = i;
            return &st->names[i];
        }
    return NULL;
}

void stream_consume(channel *ch, queue *q, slice tag, int no_ack, int exclusive, int nowait, slice args) {
    slice qn = {(const uint8_t *)q->name, q->name_len};
    /* RabbitMQ 4.x's order and texts: prefetch first, then acknowledgement mode. */
    if (ch->prefetch == 0) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME,
                            "consumer prefetch count is not set for stream %s", rs("queue", qn));
        return;
    }
    if (no_ack) {
        channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME,
                            "automatic acknowledgement not supported by stream %s", rs("queue", qn));
        return;
    }
    struct stream *st = q->stream;
    fval off, nv, fv;
    int has_off = table_get(args, "x-stream-offset", &off);
    uint64_t from = st ? slog_end(st->log) : 0, min_ts = 0;
    if (has_off && start_offset(ch, q, &off, &from, &min_ts) < 0)
        return;
    named *nm = NULL;
    size_t nm_at = 0;
    if (table_get(args, "x-ferry-offset-name", &nv)) {
        if (!fval_is_str(&nv) || nv.s.n == 0 || nv.s.n > 255) {
            channel_close_error(
                ch, PRECONDITION_FAILED, BASIC_CONSUME,
                "invalid arg 'x-ferry-offset-name' for %s: expected a string of 1 to 255 bytes",
                rs("queue", qn));
            return;
        }
        if (!st) {
            channel_close_error(ch, RESOURCE_ERROR, BASIC_CONSUME, "%s has no store", rs("queue", qn));
            return;
        }
        nm = find_name(st, nv.s, &nm_at);
        if (nm && nm->cs) {
            channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME,
                                "x-ferry-offset-name '%.*s' is in use by another consumer of %s", (int)nv.s.n,
                                (const char *)nv.s.p, rs("queue", qn));
            return;
        }
        if (!nm) {
            if (st->nnames >= NAMED_MAX) {
                channel_close_error(ch, PRECONDITION_FAILED, BASIC_CONSUME,
                                    "%s has %d offset names already (x-ferry-offset-name)", rs("queue", qn),
                                    NAMED_MAX);
                return;
            }
            st->names = xrealloc(st->names, (st->nnames + 1) * sizeof *st->names);
            nm_at = st->nnames++;
            nm = &st->names[nm_at];
            *nm = (named){xstrndup((const char *)nv.s.p, nv.s.n), nv.s.n, from, NULL, 1};
        } else if (!has_off) { /* resume where the name was */
            from = MAX(nm->offset, slog_first(st->log));
        }
    }
    consumer *cs = consumer_new(ch, tag, q, no_ack, exclusive, args);
    scursor *sc = xcalloc(1, sizeof *sc);
    sc->cs = cs;
    sc->st = st;
    sc->next = from;
    sc->min_ts = min_ts;
    sc->ts_until = st ? slog_end(st->log) : 0;
    sc->floor = UINT64_MAX;
    if (nm) {
        nm->cs = cs;
        sc->nm = nm;
        sc->nm_at = nm_at;
    }
    if (table_get(args, "x-stream-filter", &fv)) { /* RabbitMQ 3.13: a string or strings */
        sc->filtering = 1;
        if (fval_is_str(&fv)) {
            sc->filters = xmalloc(sizeof *sc->filters);
            sc->filters[sc->nfilters++] =
                (slice){(const uint8_t *)xstrndup((const char *)fv.s.p, fv.s.n), fv.s.n};
        } else if (fv.type == 'A') {
            rd r = rd_make(fv.s.p, fv.s.n);
            fval e;
            while (array_next(&r, &e) == 1 && sc->nfilters < 1000) {
                if (!fval_is_str(&e))
                    continue;
                sc->filters = xrealloc(sc->filters, (sc->nfilters + 1) * sizeof *sc->filters);
                sc->filters[sc->nfilters++] =
                    (slice){(const uint8_t *)xstrndup((const char *)e.s.p, e.s.n), e.s.n};
            }
        }
        fval mu;
        sc->match_unfiltered = table_get(args, "x-stream-match-unfiltered", &mu) && mu.type == 't' && mu.i;
    }
    cs->sc = sc;
    if (!st) { /* no store (in-process fuzzing): a consumer that never gets anything */
        cs->sc = NULL;
        cursor_free(sc);
    }
    if (!nowait)
        send_consume_ok(ch, cs);
    queue_add_consumer(q, cs);
}

/* ---- what the management API shows ---- */

int stream_stats(const queue *q, stream_info *out) {
    const struct stream *st = q->stream;
    if (!st || !st->log)
        return -1;
    out->bytes = slog_bytes(st->log);
    out->first = slog_first(st->log);
    out->last = slog_last(st->log);
    out->committed = slog_committed(st->log);
    out->segments = slog_segments(st->log);
    return 0;
}

void stream_each_name(const queue *q,
                      void (*fn)(void *ctx, const char *name, uint64_t offset, uint64_t lag, int active),
                      void *ctx) {
    const struct stream *st = q->stream;
    if (!st || !st->log)
        return;
    uint64_t c = slog_committed(st->log);
    for (size_t i = 0; i < st->nnames; i++)
        fn(ctx, st->names[i].name, st->names[i].offset, c > st->names[i].offset ? c - st->names[i].offset : 0,
           st->names[i].cs != NULL);
}
