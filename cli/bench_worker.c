/* bench_worker.c — the producer and consumer threads of `ferry bench` (see bench.h).
 *
 * Producer: every message is a copy of one pre-encoded template (basic.publish method frame,
 * content header, body frames) with the stamp patched in, so encoding is one memcpy per
 * message. Messages are encoded in batches into the connection's output buffer and written
 * with one send() per batch; the loop never blocks on the socket, so confirms and
 * connection.blocked are read while publishing. With --rate, messages are released on an
 * even schedule (message i at t0 + i/rate, released in steps at least PACE_MIN_NS apart)
 * and the thread sleeps in ppoll between steps. A message of OUT_BATCH bytes or more (over
 * plain TCP) is not copied whole: its head up to the stamp goes into the output buffer and the
 * rest is written from the template itself (client_write_extra), as the broker writes bodies
 * from the message; copying each 1 MiB body took the generator ~10% of the machine in row 13,
 * CPU the broker under test shares with it.
 *
 * Consumer: reads into one large buffer, walks every whole frame in it, and acks with
 * multiple=true every --ack-every messages (and when the stream goes idle, so a run never
 * stalls on a partial batch). */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "util.h"

#define OUT_BATCH (64 * 1024)           /* bytes of messages encoded per batch */
#define OUT_HIGH (256 * 1024)           /* stop encoding while this much is still unwritten */
#define READ_ROOM (256 * 1024)          /* bytes asked for per read */
#define IDLE_ACK_MS 10                  /* ack a partial batch after this long without deliveries */
#define DRAIN_CONFIRMS_NS 2000000000ull /* duration runs: wait this long for last confirms */
/* Duration runs: a broker that takes no byte of the rest for this long after the deadline
 * (it stopped reading: flow control, a backlog it cannot work off) is given up on. */
#define FLUSH_GIVE_UP_NS 10000000000ull
/* --rate releases messages in steps at least this far apart: at high rates a wakeup per
 * message would cost the generator a core in syscalls (and the broker, on a small machine,
 * the CPU it needs). 100 us steps are invisible at the millisecond scale latency is judged on. */
#define PACE_MIN_NS 100000ull
#define READ_EVERY 64 /* without a readable wakeup, still look for broker frames this often */

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for the start signal; 0 to go, -1 if the run was called off first. */
static int wait_go(bench_state *st) {
    while (!atomic_load(&st->go)) {
        if (atomic_load(&st->stop) || atomic_load(&st->failed))
            return -1;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&st->failed) ? -1 : 0;
}

static void worker_fail(worker *w, const char *what, const char *why) {
    snprintf(w->err, sizeof w->err, "%s %d: %s%s%s", w->producer ? "producer" : "consumer", w->index, what,
             *what ? ": " : "", why);
    atomic_store(&w->st->failed, 1);
}

/* Waits for the socket (and at most timeout_ns) without busy-looping; 1 if it is readable.
 * `more`: bytes to write besides c->out (a large message's tail). */
static int wait_socket(client *c, size_t more, uint64_t timeout_ns) {
    if (client_pending(c))
        return 1; /* decrypted already: the socket would not say so */
    struct pollfd pfd = {c->fd, (short)(POLLIN | (c->out.len + more ? POLLOUT : 0)), 0};
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    if (ppoll(&pfd, 1, &ts, NULL) <= 0)
        return 0;
    return (pfd.revents & (POLLIN | POLLERR | POLLHUP)) != 0;
}

/* ---- producer ---- */

/* Outstanding publisher confirms: a ring indexed by delivery tag holding each publish's send
 * time. Tags below `lowest` are settled; `next` is the tag the next publish gets. */
typedef struct confirms {
    uint64_t *sent;
    uint8_t *done;
    uint64_t mask;
    uint64_t next, lowest;
} confirms;

/* Settles one tag (ack or nack) if it is still outstanding. */
static void settle(worker *w, confirms *cf, uint64_t tag, int nack, uint64_t now, uint64_t *acked,
                   uint64_t *nacked) {
    if (tag < cf->lowest || tag >= cf->next || cf->done[tag & cf->mask])
        return;
    cf->done[tag & cf->mask] = 1;
    if (nack) {
        (*nacked)++;
    } else {
        (*acked)++;
        uint64_t t = cf->sent[tag & cf->mask];
        hist_record(&w->hist, now > t ? now - t : 0);
    }
}

/* basic.ack / basic.nack: multiple=true settles every tag up to and including `tag`. */
static void on_confirm(worker *w, confirms *cf, uint64_t tag, int multiple, int nack, uint64_t now,
                       uint64_t *acked, uint64_t *nacked) {
    if (multiple) {
        for (uint64_t t = cf->lowest; t <= tag && t < cf->next; t++)
            settle(w, cf, t, nack, now, acked, nacked);
    } else {
        settle(w, cf, tag, nack, now, acked, nacked);
    }
    while (cf->lowest < cf->next && cf->done[cf->lowest & cf->mask])
        cf->lowest++;
}

/* Encodes the template every message copies: method frame, content header, body frames.
 * *stamp_at is where the stamp goes (the start of the first body frame's payload). */
static void build_template(buf *t, const bench_cfg *cfg, const char *key, uint32_t frame_max,
                           size_t *stamp_at) {
    size_t m = method_begin(t, 1, BASIC_PUBLISH);
    buf_u16(t, 0);
    buf_shortstr(t, cfg->exchange, strlen(cfg->exchange));
    buf_shortstr(t, key, strlen(key));
    buf_u8(t, 0); /* not mandatory, not immediate */
    frame_end(t, m);
    uint8_t props[3] = {0, 0, 2};
    size_t plen = 2;
    if (cfg->persistent) {
        props[0] = (uint8_t)(PROP_DELIVERY_MODE >> 8);
        plen = 3;
    }
    uint8_t *body = xcalloc(1, cfg->size ? cfg->size : 1);
    size_t header_at = t->len;
    wire_content(t, 1, props, plen, body, cfg->size, frame_max);
    free(body);
    /* header frame: 7 + class/weight/size (12) + properties + frame-end; then 7 bytes of the
     * body frame's own header */
    *stamp_at = header_at + 7 + 12 + plen + 1 + 7;
}

void *producer_main(void *arg) {
    worker *w = arg;
    const bench_cfg *cfg = w->cfg;
    bench_state *st = w->st;
    hist_init(&w->hist);
    client c;
    /* one template per routing key, used in turn: message n goes with key n mod nkeys */
    const int nk = w->nkeys;
    buf *tmpls = xcalloc((size_t)nk, sizeof *tmpls);
    size_t *tlens = xcalloc((size_t)nk, sizeof *tlens), *stamps = xcalloc((size_t)nk, sizeof *stamps);
    for (int k = 0; k < nk; k++)
        buf_init(&tmpls[k]);
    confirms cf = {0};
    /* in_place (large messages): the part of the last one still to be written from its template */
    const uint8_t *tail = NULL;
    size_t tail_n = 0, tail_after = 0; /* tail_after: bytes of c.out written before the tail */
    char name[64];
    snprintf(name, sizeof name, "ferry-bench-producer-%d", w->index);
    int ready = 0;
    if (client_open(&c, &cfg->uri, name) < 0 || (cfg->confirm && client_confirm_select(&c) < 0)) {
        worker_fail(w, "setup", c.err);
        goto out;
    }
    size_t tlen = 0, tmin = SIZE_MAX; /* the longest and shortest template */
    for (int k = 0; k < nk; k++) {
        build_template(&tmpls[k], cfg, w->keys[k], c.frame_max, &stamps[k]);
        tlens[k] = tmpls[k].len;
        tlen = MAX(tlen, tlens[k]);
        tmin = MIN(tmin, tlens[k]);
    }
    int next_key = 0;
    const int in_place = !c.ssl && tlen >= OUT_BATCH && cfg->size >= STAMP_BYTES;
    if (cfg->confirm) {
        uint64_t n = 1;
        while (n < cfg->confirm)
            n <<= 1;
        cf.sent = xcalloc(n, sizeof *cf.sent);
        cf.done = xcalloc(n, 1);
        cf.mask = n - 1;
        cf.next = cf.lowest = 1;
    }
    client_set_nonblocking(&c);
    atomic_fetch_add(&st->ready, 1);
    ready = 1;
    if (wait_go(st) < 0)
        goto out;

    const uint64_t t0 = st->t0_ns;
    const double rate = cfg->rate > 0 ? cfg->rate / cfg->producers : 0; /* per producer */
    const uint64_t batch_max = tlen >= OUT_BATCH ? 1 : OUT_BATCH / tlen;
    const uint64_t seq_base = (STAMP_MAGIC << 56) | ((uint64_t)w->index << 40);
    uint64_t sent = 0, acked = 0, nacked = 0;
    uint64_t finished_at = 0, last_progress = t0, blocked_since = 0, turns = 0, last_release = 0;
    uint64_t last_written = t0;
    int gave_up = 0;
    int readable = 1;
    for (;;) {
        uint64_t now = now_ns();
        if (atomic_load_explicit(&st->failed, memory_order_relaxed))
            goto out;
        if (!finished_at &&
            (atomic_load_explicit(&st->stop, memory_order_relaxed) ||
             (st->deadline_ns && now >= st->deadline_ns) || (cfg->duration == 0 && sent >= w->quota)))
            finished_at = now;

        /* How many messages may go now: the batch, the quota, the confirm window, the rate. */
        uint64_t allow = 0;
        if (!finished_at && !c.blocked && c.out.len + tail_n < OUT_HIGH && tail_n == 0) {
            allow = batch_max;
            if (cfg->duration == 0)
                allow = MIN(allow, w->quota - sent);
            if (cfg->confirm) {
                uint64_t outstanding = cf.next - cf.lowest;
                allow = outstanding >= cfg->confirm ? 0 : MIN(allow, cfg->confirm - outstanding);
            }
            if (rate > 0) {
                uint64_t due = (uint64_t)((double)(now - t0) * rate / 1e9) + 1;
                allow = due > sent ? MIN(allow, due - sent) : 0;
                /* Release in steps: what fell due since the last step waits until the step
                 * time is up, unless it already fills a batch. */
                if (allow > 0 && allow < batch_max && now - last_release < PACE_MIN_NS)
                    allow = 0;
            }
        }
        if (allow > 0 && in_place) {
            assert(allow == 1 && tail_n == 0);
            const int k = next_key;
            next_key = next_key + 1 == nk ? 0 : next_key + 1;
            const size_t head = stamps[k] + STAMP_BYTES;
            uint8_t *p = buf_reserve(&c.out, head);
            memcpy(p, tmpls[k].data, head);
            put_be64(p + stamps[k], now);
            put_be64(p + stamps[k] + 8, seq_base | sent);
            c.out.len += head;
            tail = tmpls[k].data + head;
            tail_n = tlens[k] - head;
            tail_after = c.out.len;
            if (cfg->confirm) {
                uint64_t tag = cf.next++;
                cf.sent[tag & cf.mask] = now;
                cf.done[tag & cf.mask] = 0;
            }
            sent++;
            last_release = now - (now - t0) % PACE_MIN_NS;
            atomic_store_explicit(&w->published, sent, memory_order_relaxed);
        } else if (allow > 0) {
            uint8_t *p0 = buf_reserve(&c.out, allow * tlen), *p = p0;
            for (uint64_t i = 0; i < allow; i++) {
                const int k = next_key;
                next_key = next_key + 1 == nk ? 0 : next_key + 1;
                memcpy(p, tmpls[k].data, tlens[k]);
                if (cfg->size >= STAMP_BYTES) {
                    put_be64(p + stamps[k], now);
                    put_be64(p + stamps[k] + 8, seq_base | (sent + i));
                }
                p += tlens[k];
                if (cfg->confirm) {
                    uint64_t tag = cf.next++;
                    cf.sent[tag & cf.mask] = now;
                    cf.done[tag & cf.mask] = 0;
                }
            }
            c.out.len += (size_t)(p - p0);
            sent += allow;
            /* on a fixed grid, so late wakeups do not stretch the steps */
            last_release = now - (now - t0) % PACE_MIN_NS;
            atomic_store_explicit(&w->published, sent, memory_order_relaxed);
        }
        size_t before = c.out.len + tail_n;
        if (before && (tail_n ? client_write_extra(&c, &tail_after, &tail, &tail_n) : client_write_some(&c)) < 0) {
            worker_fail(w, "", c.err);
            goto out;
        }
        if (c.out.len + tail_n < before)
            last_written = now;
        if (finished_at && cfg->duration > 0 && c.out.len + tail_n &&
            now - MAX(last_written, finished_at) > FLUSH_GIVE_UP_NS) {
            /* The messages still in our buffer never reached the broker: not published. */
            uint64_t unsent = (c.out.len + tail_n + tmin - 1) / tmin; /* at most this many */
            sent -= MIN(unsent, sent);
            if (cfg->confirm)
                w->unconfirmed = cf.next - cf.lowest;
            gave_up = 1;
            break;
        }

        /* Confirms, flow control and errors: read when the last wait said so, and now and
         * then regardless (a publisher that never waits must still see a channel.close). */
        long r = 0;
        if (readable || ++turns % READ_EVERY == 0)
            r = client_read_some(&c, 65536);
        readable = r > 0;
        if (r < 0) {
            worker_fail(w, "", c.err);
            goto out;
        }
        if (r > 0) {
            uint64_t rnow = now_ns();
            size_t pos = 0;
            frame f;
            int rc;
            while ((rc = client_parse(&c, &pos, &f)) == 1) {
                if (f.type != FRAME_METHOD || f.size < 4)
                    continue; /* heartbeats; a basic.return's content */
                rd rr = rd_make(f.payload, f.size);
                unsigned mid = rd_u32(&rr);
                if (mid == BASIC_ACK || mid == BASIC_NACK) {
                    uint64_t tag = rd_u64(&rr);
                    int multiple = rd_u8(&rr) & 1;
                    on_confirm(w, &cf, tag, multiple, mid == BASIC_NACK, rnow, &acked, &nacked);
                    last_progress = rnow;
                } else if (mid != BASIC_RETURN && client_control_frame(&c, &f) < 0) {
                    worker_fail(w, "", c.err);
                    goto out;
                }
            }
            c.skip = pos;
            if (rc < 0) {
                worker_fail(w, "", c.err);
                goto out;
            }
            atomic_store_explicit(&w->confirmed, acked, memory_order_relaxed);
            atomic_store_explicit(&w->nacked, nacked, memory_order_relaxed);
            if (c.blocked && !blocked_since)
                blocked_since = rnow;
            if (!c.blocked && blocked_since) {
                w->blocked_ns += rnow - blocked_since;
                blocked_since = 0;
            }
        }

        if (finished_at && c.out.len + tail_n == 0) {
            if (!cfg->confirm || cf.lowest == cf.next)
                break;
            /* Waiting for the last confirms: briefly after a duration run, up to --timeout
             * without progress after a count-bounded one. */
            uint64_t limit = cfg->duration > 0 ? DRAIN_CONFIRMS_NS : (uint64_t)(cfg->timeout * 1e9);
            uint64_t since = cfg->duration > 0 ? finished_at : MAX(finished_at, last_progress);
            uint64_t t = now_ns(); /* not `now`: a confirm read this turn is later than it */
            if (t > since && t - since > limit) {
                w->unconfirmed = cf.next - cf.lowest;
                break;
            }
        }
        /* Sleep only when this turn moved nothing: no message encoded, no byte written or
         * read. Then wait for the socket, the next message due (--rate), or 50 ms. */
        if (allow == 0 && r == 0 && c.out.len + tail_n == before) {
            uint64_t wait = 50000000; /* 50 ms: notice stop/deadline */
            if (rate > 0 && !finished_at && c.out.len + tail_n < OUT_HIGH) {
                uint64_t due_at =
                    MAX(t0 + (uint64_t)ceil((double)sent * 1e9 / rate) + 1, last_release + PACE_MIN_NS);
                wait = MIN(wait, due_at > now ? due_at - now : 0);
            }
            if (st->deadline_ns && !finished_at)
                wait = MIN(wait, st->deadline_ns > now ? st->deadline_ns - now : 0);
            if (wait > 0)
                readable = wait_socket(&c, tail_n, wait);
        }
    }
    atomic_store(&w->published, sent);
    atomic_store(&w->confirmed, acked);
    atomic_store(&w->nacked, nacked);
    if (blocked_since)
        w->blocked_ns += now_ns() - blocked_since;
    /* Publishing ends when the broker has taken every message, not when the last one went
     * into our socket buffer (megabytes on loopback): at the last confirm, or else at the
     * close-ok, which the broker sends only after handling every frame before the close. */
    if (gave_up) { /* no close handshake through a socket the broker does not read */
        w->end_ns = MAX(last_written, finished_at);
        buf_consume(&c.out, c.out.len);
        close(c.fd);
        c.fd = -1;
    } else if (cfg->confirm && cf.lowest == cf.next) {
        w->end_ns = last_progress;
    } else {
        client_close(&c, 30000);
        w->end_ns = now_ns();
    }
out:
    if (!ready)
        atomic_fetch_add(&st->ready, 1); /* counted, so the main thread does not wait for it */
    if (!w->end_ns)
        w->end_ns = now_ns();
    if (tail_n && c.fd >= 0) { /* failed mid-message: a close frame now would land inside it */
        buf_consume(&c.out, c.out.len);
        close(c.fd);
        c.fd = -1;
    }
    /* Closing waits for close-ok, i.e. until the broker has handled every publish. */
    client_close(&c, 10000);
    for (int k = 0; k < nk; k++)
        buf_free(&tmpls[k]);
    free(tmpls);
    free(tlens);
    free(stamps);
    free(cf.sent);
    free(cf.done);
    w->cpu_s = thread_cpu_s();
    atomic_store(&w->done, 1);
    return NULL;
}

/* ---- consumer ---- */

static void put_ack(client *c, uint64_t tag) {
    size_t m = method_begin(&c->out, 1, BASIC_ACK);
    buf_u64(&c->out, tag);
    buf_u8(&c->out, 1); /* multiple */
    frame_end(&c->out, m);
}

void *consumer_main(void *arg) {
    worker *w = arg;
    const bench_cfg *cfg = w->cfg;
    bench_state *st = w->st;
    hist_init(&w->hist);
    client c;
    char name[64];
    snprintf(name, sizeof name, "ferry-bench-consumer-%d", w->index);
    int ready = 0;
    const int no_ack = cfg->ack_every == 0;
    if (client_open(&c, &cfg->uri, name) < 0 ||
        (!no_ack && cfg->prefetch && client_qos(&c, (uint16_t)cfg->prefetch) < 0)) {
        worker_fail(w, "setup", c.err);
        goto out;
    }
    for (int i = 0; i < w->nq; i++)
        for (int k = 0; k < cfg->per_queue; k++) /* --consumers-per-queue */
            if ((cfg->stream ? client_consume_stream(&c, w->qs[i], "first") : client_consume(&c, w->qs[i], no_ack)) <
                0) {
                worker_fail(w, w->qs[i], c.err);
                goto out;
            }
    client_set_nonblocking(&c);
    atomic_fetch_add(&st->ready, 1);
    ready = 1;
    if (wait_go(st) < 0)
        goto out;

    /* Where the frame walk is inside a message: after basic.deliver comes the content
     * header, then body frames until body_size bytes have arrived. */
    enum { WANT_METHOD, WANT_HEADER, WANT_BODY } want = WANT_METHOD;
    uint64_t tag = 0, body_left = 0, last_tag = 0, consumed = 0, unacked = 0;
    uint8_t stamp[STAMP_BYTES];
    size_t stamp_got = 0;
    uint64_t idle_since = 0;
    for (;;) {
        if (atomic_load_explicit(&st->failed, memory_order_relaxed) ||
            atomic_load_explicit(&st->stop, memory_order_relaxed))
            break;
        if (atomic_load_explicit(&st->expected_known, memory_order_acquire) &&
            atomic_load_explicit(&st->consumed_total, memory_order_relaxed) >= atomic_load(&st->expected))
            break;
        long r = client_read_some(&c, READ_ROOM);
        if (r < 0) {
            worker_fail(w, "", c.err);
            goto out;
        }
        if (r == 0) {
            uint64_t now = now_ns();
            if (!idle_since)
                idle_since = now;
            if (unacked && now - idle_since >= IDLE_ACK_MS * 1000000ull) {
                put_ack(&c, last_tag);
                unacked = 0;
            }
            if (c.out.len && client_write_some(&c) < 0) {
                worker_fail(w, "", c.err);
                goto out;
            }
            wait_socket(&c, 0, unacked ? IDLE_ACK_MS * 1000000ull : 50000000ull);
            continue;
        }
        idle_since = 0;
        uint64_t now = now_ns();
        uint64_t got = 0;
        size_t pos = 0;
        frame f;
        int rc;
        while ((rc = client_parse(&c, &pos, &f)) == 1) {
            int complete = 0;
            if (f.type == FRAME_METHOD && f.size >= 4) {
                rd rr = rd_make(f.payload, f.size);
                unsigned mid = rd_u32(&rr);
                if (mid == BASIC_DELIVER) {
                    rd_shortstr(&rr); /* consumer tag */
                    tag = rd_u64(&rr);
                    if (rd_u8(&rr) & 1)
                        w->redelivered++;
                    want = WANT_HEADER;
                } else if (client_control_frame(&c, &f) < 0) {
                    worker_fail(w, "", c.err);
                    goto out;
                }
            } else if (f.type == FRAME_HEADER && want == WANT_HEADER) {
                rd rr = rd_make(f.payload, f.size);
                rd_u16(&rr), rd_u16(&rr);
                body_left = rd_u64(&rr);
                stamp_got = 0;
                want = WANT_BODY;
                complete = body_left == 0;
            } else if (f.type == FRAME_BODY && want == WANT_BODY) {
                if (stamp_got < STAMP_BYTES) {
                    size_t n = MIN((size_t)f.size, STAMP_BYTES - stamp_got);
                    memcpy(stamp + stamp_got, f.payload, n);
                    stamp_got += n;
                }
                body_left = f.size >= body_left ? 0 : body_left - f.size;
                complete = body_left == 0;
            }
            if (!complete)
                continue;
            want = WANT_METHOD;
            got++;
            if (stamp_got == STAMP_BYTES && (get_be64(stamp + 8) >> 56) == STAMP_MAGIC) {
                uint64_t sent = get_be64(stamp);
                hist_record(&w->hist, now > sent ? now - sent : 0);
            }
            last_tag = tag;
            if (!no_ack && ++unacked >= cfg->ack_every) {
                put_ack(&c, last_tag);
                unacked = 0;
            }
        }
        c.skip = pos;
        if (rc < 0) {
            worker_fail(w, "", c.err);
            goto out;
        }
        if (got) {
            consumed += got;
            w->end_ns = now;
            atomic_store_explicit(&w->consumed, consumed, memory_order_relaxed);
            atomic_fetch_add_explicit(&st->consumed_total, got, memory_order_relaxed);
        }
        if (c.out.len && client_write_some(&c) < 0) {
            worker_fail(w, "", c.err);
            goto out;
        }
    }
    if (unacked)
        put_ack(&c, last_tag);
out:
    if (!ready)
        atomic_fetch_add(&st->ready, 1);
    if (!w->end_ns)
        w->end_ns = now_ns();
    client_close(&c, 5000);
    w->cpu_s = thread_cpu_s();
    atomic_store(&w->done, 1);
    return NULL;
}
