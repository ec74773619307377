/* fuzz_conn.c — libFuzzer target for the broker as a whole: whole connections, in process.
 *
 * A broker runs inside the fuzzer (data directory on tmpfs, no listener, a fake clock);
 * each input gets up to three connections, each over a socketpair handed to conn_new().
 * The harness writes a valid handshake itself, then reads the input as a script of
 * operations: most become well-formed AMQP methods whose fields the fuzzer chooses from
 * small dictionaries of names (so queues, exchanges, bindings, consumers and delivery tags
 * meet each other), the rest are raw frames and bytes, loop steps, clock jumps (TTLs,
 * delays, expiry, heartbeats, the alarm tick) and abrupt disconnects. The loop is stepped
 * by the harness (loop_step), never run, and nothing sleeps: an input repeats exactly.
 *
 * Input: one settings byte (memory budget / watermark, frame_max, channel_max, heartbeat,
 * connection.blocked capability, abrupt end), then operations: a byte whose top two bits
 * pick the connection (3: global operations) and whose low six bits pick what to send,
 * followed by that operation's field bytes (zeros once the input runs out). See do_op()
 * and do_global().
 *
 * After every step the cross-module invariants are checked (check_broker). After each
 * input the broker is reset to empty (connections gone, every queue and exchange deleted,
 * every timer fired) and every message byte must have been given back; every 1000 inputs it
 * is restarted; LeakSanitizer checks the rest at exit. A crash found this way replays
 * alone from a fresh broker: `build/fuzz/fuzz_conn crash-…` (FUZZ_CONN_DEBUG=1 prints the
 * broker's answers). Run with `make fuzz`. */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "memacct.h"
#include "store.h"
#include "util.h"

#define NCONN 3
#define STEP_EVERY 24 /* operations between implicit loop steps */

/* A small quarantine: freed memory is reused sooner, so inputs do not fault in fresh pages
 * (use-after-free is still caught for the last 16 MiB freed, far more than one input). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=16"; }

/* ---- the input script ---- */

typedef struct script {
    const uint8_t *p;
    size_t n;
} script;

/* The next byte of the script; 0 once it is used up (so every operation completes). */
static uint8_t get8(script *s) {
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static uint16_t get16(script *s) {
    uint16_t hi = get8(s);
    return (uint16_t)(hi << 8 | get8(s));
}

/* The dictionaries: names that make declares, binds, publishes and consumes meet. */
/* "\1..." entries stand for names the broker made up and told a client (learn_names). */
static const char *const queues[] = {"q0", "q1", "q2", "dlq", "", "amq.rabbitmq.reply-to", "amq.q", "q3", "\1gen"};
static const char *const exchanges[] = {"",   "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "x0",
                                        "x1", "x2",         "x3",         "dlx",       "amq.match",   "nope"};
static const char *const keys[] = {"q0",    "q1",    "q2", "dlq", "a.b", "a.*", "#",
                                   "*.b.#", "a.b.c", "1",  "2",   "10",  "",    "amq.rabbitmq.reply-to",
                                   "q3",    "\1reply"};
static const char *const xtypes[] = {
    "direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message", "x-bogus", "direct"};
static const char *const tags[] = {"", "c0", "c1", "c2", "\1ctag"};

/* The last server-generated names seen in the broker's answers, by prefix: a direct reply-to
 * address (in a delivered request's reply-to), a consumer tag, a queue name. Replies,
 * cancels and declares can then name them as a real client would. */
static struct learned {
    const char *marker, *prefix;
    char name[256];
} learned[] = {{"\1reply", "amq.rabbitmq.reply-to.", ""}, {"\1ctag", "amq.ctag-", ""}, {"\1gen", "amq.gen-", ""}};

/* Picks up server-generated names from answer bytes: each is a short string, so the byte
 * before the prefix is its length. */
static void learn_names(const uint8_t *p, size_t n) {
    for (size_t k = 0; k < ARRAY_LEN(learned); k++) {
        size_t plen = strlen(learned[k].prefix);
        const uint8_t *at = p, *end = p + n;
        while ((at = memmem(at, (size_t)(end - at), learned[k].prefix, plen)) != NULL) {
            if (at > p && at[-1] >= plen && at + at[-1] <= end) {
                memcpy(learned[k].name, at, at[-1]);
                learned[k].name[at[-1]] = 0;
            }
            at += plen;
        }
    }
}

#define PICK(arr, b) (arr[(b) % ARRAY_LEN(arr)])

/* A short string from the dictionary, or now and then one the fuzzer writes itself. */
static void put_name(buf *o, script *s, const char *const *dict, size_t ndict) {
    uint8_t b = get8(s);
    if (b >= 0xf0) {
        uint8_t n = get8(s) & 0x3f;
        char tmp[64];
        for (uint8_t i = 0; i < n; i++)
            tmp[i] = (char)get8(s);
        buf_shortstr(o, tmp, n);
        return;
    }
    const char *name = dict[b % ndict];
    for (size_t k = 0; name[0] == 1 && k < ARRAY_LEN(learned); k++)
        if (!strcmp(name, learned[k].marker))
            name = learned[k].name; /* "" until one is learned */
    buf_shortstr(o, name, strlen(name));
}
#define NAME(o, s, dict) put_name(o, s, dict, ARRAY_LEN(dict))

/* ---- field tables ---- */

/* Table entries: the key, then a typed value. */
static void key(buf *t, const char *k) { buf_shortstr(t, k, strlen(k)); }

/* An integer field in a type the fuzzer picks (RabbitMQ accepts every integer type, and
 * refuses strings where a number belongs: both paths get exercised). */
static void put_int(buf *t, const char *k, uint8_t how, int64_t v) {
    key(t, k);
    switch (how & 7) {
    case 0: buf_u8(t, 'b'), buf_u8(t, (uint8_t)v); break;
    case 1: buf_u8(t, 's'), buf_u16(t, (uint16_t)v); break;
    case 2: buf_u8(t, 'I'), buf_u32(t, (uint32_t)v); break;
    case 3: buf_u8(t, 'l'), buf_u64(t, (uint64_t)v); break;
    case 4: buf_u8(t, 'B'), buf_u8(t, (uint8_t)v); break;
    case 5: buf_u8(t, 'S'), buf_longstr(t, "7", 1); break;
    case 6: buf_u8(t, 'l'), buf_u64(t, (uint64_t)-v); break;
    default: buf_u8(t, 'l'), buf_u64(t, (uint64_t)v); break;
    }
}

static void put_str(buf *t, const char *k, const char *v) {
    key(t, k);
    buf_u8(t, 'S');
    buf_longstr(t, v, strlen(v));
}

static void put_bool(buf *t, const char *k, int v) {
    key(t, k);
    buf_u8(t, 't');
    buf_u8(t, (uint8_t)(v != 0));
}

/* A number spread over useful magnitudes: 0, 1, small, a few seconds, huge. */
static int64_t number(script *s) {
    uint8_t b = get8(s);
    switch (b >> 5) {
    case 0: return b & 1;
    case 1: return b & 31;
    case 2: return (b & 31) * 10;
    case 3: return (b & 31) * 100;
    case 4: return (b & 31) * 1000;
    case 5: return 255 - (b & 3);
    case 6: return 65535 + (b & 3) - 2;
    default: return ((int64_t)1 << (b & 31)) + (b & 1 ? 0 : -1);
    }
}

/* An integer field: its type byte, then its value (in that order: C leaves the order in
 * which arguments are evaluated open, and the script must read the same on every build). */
static void put_num(buf *t, const char *k, script *s) {
    uint8_t how = get8(s);
    put_int(t, k, how, number(s));
}

/* Appends a table (u32 length + contents). */
static void put_table(buf *o, const buf *t) { buf_longstr(o, buf_head(t), t->len); }

/* Raw table contents from the input, for the decoders' sake. */
static void raw_table(buf *t, script *s) {
    uint8_t n = get8(s) & 0x3f;
    for (uint8_t i = 0; i < n; i++)
        buf_u8(t, get8(s));
}

static void queue_args(buf *o, script *s) {
    buf t;
    buf_init(&t);
    uint16_t m = get16(s);
    if (m & 1) {
        /* x-max-priority: every value the fuzzer likes, 255 included (issue 8 item 1). */
        uint8_t how = get8(s);
        put_int(&t, "x-max-priority", how, get8(s));
    }
    if (m & 2)
        put_num(&t, "x-message-ttl", s);
    if (m & 4)
        put_num(&t, "x-max-length", s);
    if (m & 8)
        put_num(&t, "x-max-length-bytes", s);
    if (m & 16) {
        static const char *const ov[] = {"drop-head", "reject-publish", "reject-publish-dlx", "bogus"};
        put_str(&t, "x-overflow", PICK(ov, get8(s)));
    }
    if (m & 32)
        put_str(&t, "x-dead-letter-exchange", PICK(exchanges, get8(s)));
    if (m & 64)
        put_str(&t, "x-dead-letter-routing-key", PICK(keys, get8(s)));
    if (m & 128)
        put_num(&t, "x-expires", s);
    if (m & 256) {
        static const char *const qt[] = {"classic", "quorum", "stream", "bogus"};
        put_str(&t, "x-queue-type", PICK(qt, get8(s)));
    }
    if (m & 512)
        put_bool(&t, "x-single-active-consumer", get8(s) & 1);
    if (m & 1024)
        put_num(&t, "x-delivery-limit", s);
    if (m & 2048) {
        key(&t, "x-retry-delays");
        buf_u8(&t, 'A');
        buf a;
        buf_init(&a);
        uint8_t n = get8(s) & 3;
        for (uint8_t i = 0; i < n; i++) {
            int64_t v = number(s);
            buf_u8(&a, 'l');
            buf_u64(&a, (uint64_t)v);
        }
        buf_longstr(&t, buf_head(&a), a.len);
        buf_free(&a);
    }
    if (m & 4096)
        put_num(&t, "x-deduplication-window", s);
    if (m & 8192) {
        static const char *const qm[] = {"lazy", "default", "x"};
        put_str(&t, "x-queue-mode", PICK(qm, get8(s)));
    }
    if (m & 16384)
        put_num(&t, "x-max-in-memory-length", s);
    if (m & 32768)
        raw_table(&t, s);
    put_table(o, &t);
    buf_free(&t);
}

static void exchange_args(buf *o, script *s) {
    buf t;
    buf_init(&t);
    uint8_t m = get8(s);
    if (m & 1)
        put_str(&t, "alternate-exchange", PICK(exchanges, get8(s)));
    if (m & 2)
        put_str(&t, "x-delayed-type", PICK(xtypes, get8(s)));
    if (m & 4)
        put_str(&t, "hash-header", "h");
    if (m & 8) {
        static const char *const hp[] = {"message_id", "correlation_id", "timestamp", "bogus"};
        put_str(&t, "hash-property", PICK(hp, get8(s)));
    }
    if (m & 16)
        raw_table(&t, s);
    put_table(o, &t);
    buf_free(&t);
}

static void binding_args(buf *o, script *s) {
    buf t;
    buf_init(&t);
    uint8_t m = get8(s);
    if (m & 1) {
        static const char *const xm[] = {"all", "any", "all-with-x", "any-with-x", "bogus"};
        put_str(&t, "x-match", PICK(xm, get8(s)));
    }
    if (m & 2)
        put_str(&t, "h", PICK(keys, get8(s)));
    if (m & 4)
        put_num(&t, "n", s);
    if (m & 8)
        put_str(&t, "x-extra", "1");
    if (m & 16)
        raw_table(&t, s);
    put_table(o, &t);
    buf_free(&t);
}

/* Basic properties: the fuzzer picks which, and their values. */
static void put_props(buf *o, script *s) {
    uint16_t m = get16(s);
    uint16_t flags = 0;
    buf p;
    buf_init(&p);
    if (m & 1) {
        flags |= PROP_CONTENT_TYPE;
        buf_shortstr(&p, "text/plain", 10);
    }
    if (m & 2) {
        flags |= PROP_HEADERS;
        buf t;
        buf_init(&t);
        uint8_t hm = get8(s);
        if (hm & 1)
            put_num(&t, "x-delay", s);
        if (hm & 2)
            put_str(&t, "h", PICK(keys, get8(s)));
        if (hm & 4)
            put_num(&t, "n", s);
        if (hm & 8) { /* sender-selected distribution */
            key(&t, get8(s) & 1 ? "CC" : "BCC");
            buf_u8(&t, 'A');
            buf a;
            buf_init(&a);
            buf_u8(&a, 'S');
            const char *k = PICK(keys, get8(s));
            buf_longstr(&a, k, strlen(k));
            buf_longstr(&t, buf_head(&a), a.len);
            buf_free(&a);
        }
        if (hm & 16)
            put_num(&t, "x-retry-count", s);
        if (hm & 32) { /* a forged x-death */
            key(&t, "x-death");
            buf_u8(&t, 'A');
            buf a, d;
            buf_init(&a);
            buf_init(&d);
            put_str(&d, "queue", PICK(queues, get8(s)));
            put_str(&d, "reason", "rejected");
            put_num(&d, "count", s);
            buf_u8(&a, 'F');
            put_table(&a, &d);
            buf_longstr(&t, buf_head(&a), a.len);
            buf_free(&a);
            buf_free(&d);
        }
        if (hm & 64)
            raw_table(&t, s);
        if (hm & 128) { /* broker-held cron (cron.c): schedules, bad expressions and zones */
            static const char *const crons[] = {"* * * * * *", "*/2 * * * * *", "0 0 1 1 *", "", "61 * * * * *",
                                                "0 0 30 2 *", "@hourly", "x"};
            static const char *const zones[] = {"", "Europe/Berlin", "Mars/Base", "../etc"};
            put_str(&t, "x-ferry-cron", PICK(crons, get8(s)));
            if (get8(s) & 1)
                put_str(&t, "x-ferry-timezone", PICK(zones, get8(s)));
        }
        put_table(&p, &t);
        buf_free(&t);
    }
    if (m & 4) {
        flags |= PROP_DELIVERY_MODE;
        buf_u8(&p, (uint8_t)(1 + (get8(s) & 1)));
    }
    if (m & 8) {
        flags |= PROP_PRIORITY;
        buf_u8(&p, get8(s));
    }
    if (m & 16) {
        flags |= PROP_CORRELATION_ID;
        buf_shortstr(&p, "cid", 3);
    }
    if (m & 32) {
        flags |= PROP_REPLY_TO;
        NAME(&p, s, keys);
    }
    if (m & 64) {
        flags |= PROP_EXPIRATION;
        static const char *const ex[] = {"0", "1", "50", "1000", "60000", "-1", "x", ""};
        const char *e = PICK(ex, get8(s));
        buf_shortstr(&p, e, strlen(e));
    }
    if (m & 128) {
        flags |= PROP_MESSAGE_ID;
        char id[8];
        int n = snprintf(id, sizeof id, "m%u", get8(s) & 7);
        buf_shortstr(&p, id, (size_t)n);
    }
    if (m & 256) {
        flags |= PROP_TIMESTAMP;
        buf_u64(&p, (uint64_t)number(s));
    }
    if (m & 512) {
        flags |= PROP_USER_ID;
        if (get8(s) & 1)
            buf_shortstr(&p, "guest", 5);
        else
            buf_shortstr(&p, "other", 5);
    }
    buf_u16(o, flags);
    buf_put(o, buf_head(&p), p.len);
    buf_free(&p);
}

/* ---- connections ---- */

typedef struct client {
    int fd;  /* our end of the socketpair; -1 when closed */
    buf out; /* bytes written by the operations, sent at the next step */
    uint32_t frame_max;
} client;

static broker B;
static client clients[NCONN];
static uint8_t settings;
static char data_dir[64];

/* Queues a client's whole handshake at once (the broker handles it frame by frame): header,
 * start-ok (PLAIN guest/guest with the usual capabilities), tune-ok, open of "/". */
static void handshake(client *cl) {
    buf *o = &cl->out;
    buf_put(o, "AMQP\0\0\x09\x01", 8);
    size_t m = method_begin(o, 0, CONNECTION_START_OK);
    buf caps, props;
    buf_init(&caps);
    buf_init(&props);
    table_put_bool(&caps, "consumer_cancel_notify", 1);
    table_put_bool(&caps, "connection.blocked", !(settings & 0x40));
    table_put_bool(&caps, "authentication_failure_close", 1);
    table_put_table(&props, "capabilities", buf_head(&caps), caps.len);
    put_table(o, &props);
    buf_free(&caps);
    buf_free(&props);
    buf_shortstr(o, "PLAIN", 5);
    buf_longstr(o, "\0guest\0guest", 12);
    buf_shortstr(o, "en_US", 5);
    frame_end(o, m);
    m = method_begin(o, 0, CONNECTION_TUNE_OK);
    buf_u16(o, (settings & 0x10) ? 3 : 0);
    buf_u32(o, cl->frame_max);
    buf_u16(o, (settings & 0x20) ? 1 : 0); /* heartbeat 1 s: clock jumps time connections out */
    frame_end(o, m);
    m = method_begin(o, 0, CONNECTION_OPEN);
    buf_shortstr(o, "/", 1);
    buf_shortstr(o, "", 0);
    buf_u8(o, 0);
    frame_end(o, m);
}

/* A new connection in this slot: a socketpair, the broker's end to conn_new(). */
static void client_open(client *cl) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (!conn_new(&B, sv[0], 1, "fuzz")) {
        close(sv[1]);
        cl->fd = -1;
        return;
    }
    cl->fd = sv[1];
    cl->frame_max = (settings & 0x08) ? 4096 : 131072;
    handshake(cl);
}

/* Our end goes away (the broker sees EOF, or its writes fail). */
static void client_close(client *cl) {
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    buf_consume(&cl->out, cl->out.len);
}

/* FUZZ_CONN_DEBUG=1: print the methods the broker answers (to write and check seeds). */
static int debug;

static void debug_print(client *cl, const uint8_t *p, size_t n) {
    while (n >= 7) {
        frame f;
        const char *why;
        long used = wire_parse_frame(p, n, 1 << 20, &f, &why);
        if (used <= 0)
            break;
        if (f.type == FRAME_METHOD && f.size >= 4) {
            unsigned mid = (unsigned)f.payload[0] << 24 | (unsigned)f.payload[1] << 16 |
                           (unsigned)f.payload[2] << 8 | f.payload[3];
            fprintf(stderr, "  conn %d ch %u <- %s", (int)(cl - clients), f.channel, method_name(mid));
            if ((mid == CHANNEL_CLOSE || mid == CONNECTION_CLOSE) && f.size > 7)
                fprintf(stderr, " %u %.*s", (unsigned)f.payload[4] << 8 | f.payload[5], f.payload[6],
                        (const char *)f.payload + 7);
            fprintf(stderr, "\n");
        }
        p += used;
        n -= (size_t)used;
    }
}

/* Reads and drops whatever the broker wrote to us (one read: what does not fit waits in
 * the socket, and then in the broker's output buffer, as with a slow client). */
static void drain(client *cl) {
    static uint8_t tmp[1 << 18];
    if (cl->fd < 0)
        return;
    ssize_t n = read(cl->fd, tmp, sizeof tmp);
    if (n == 0)
        client_close(cl); /* the broker closed the connection */
    if (n > 0)
        learn_names(tmp, (size_t)n);
    if (debug && n > 0)
        debug_print(cl, tmp, (size_t)n);
}

static void check_broker(void);

/* Sends what the operations wrote (as much as the socket takes; the rest waits) and turns
 * the loop until the broker has handled it and answered, draining the answers. */
static void step(void) {
    for (int round = 0; round < 64; round++) {
        int pending = 0;
        for (int i = 0; i < NCONN; i++) {
            client *cl = &clients[i];
            if (cl->fd < 0) {
                buf_consume(&cl->out, cl->out.len);
                continue;
            }
            while (cl->out.len) {
                ssize_t n = write(cl->fd, buf_head(&cl->out), cl->out.len);
                if (n <= 0)
                    break;
                buf_consume(&cl->out, (size_t)n);
            }
            pending |= cl->out.len != 0;
        }
        loop_step(B.loop, 0);
        /* Confirms and tx.commit-ok wait for the store's writer thread: give it a moment,
         * so that what the fuzzer sees next does not depend on the scheduler. */
        int w = 0;
        for (; w < 20 && B.store_waiters; w++)
            loop_step(B.loop, 5);
        /* A channel waiting for a generation while the store writes nothing and has nothing
         * to write waits forever: a confirm or an -ok that never comes. */
        for (channel *ch = B.store_waiters; w == 20 && ch; ch = ch->next_waiter)
            if (store_idle(B.store) && (ch->ncwait || ch->tx_wait_gen || (ch->wait.kind && ch->wait.kind != CW_GET))) {
                fprintf(stderr, "channel %u waits for store generation %llu that will never be written\n", ch->id,
                        (unsigned long long)(ch->ncwait ? ch->cwait[0].gen : ch->tx_wait_gen ? ch->tx_wait_gen
                                                                                              : ch->wait.gen));
                abort();
            }
        if (debug && w == 20)
            for (channel *ch = B.store_waiters; ch; ch = ch->next_waiter)
                fprintf(stderr, "  store waiter still waiting after 100 ms: ch %u confirms %u (first gen %llu) tx gen %llu "
                        "wait kind %u gen %llu; store gen %llu\n", ch->id, ch->ncwait,
                        ch->ncwait ? (unsigned long long)ch->cwait[0].gen : 0ull, (unsigned long long)ch->tx_wait_gen,
                        ch->wait.kind, (unsigned long long)ch->wait.gen, (unsigned long long)store_gen(B.store));
        for (int i = 0; i < NCONN; i++)
            drain(&clients[i]);
        check_broker();
        /* backlog: input left over after a connection's budget; dl_head: dead letters over
         * the per-turn budget */
        if (!pending && !B.backlog && !B.dl_head)
            break;
    }
}

/* ---- invariants ----
 *
 * What the modules promise each other, checked after every step (cheap: a handful of
 * queues and channels). A violation is a bug even when nothing crashes yet. */

static unacked *unacked_at(const uring *r, size_t i) { return &r->a[(r->head + i) & (r->cap - 1)]; }

static void check_channel(const conn *c, const channel *ch, uint32_t id) {
    assert(ch->c == c && ch->id == id);
    size_t live = 0;
    for (size_t i = 0; i < ch->unacked.len; i++) {
        const unacked *u = unacked_at(&ch->unacked, i);
        assert(i == 0 || unacked_at(&ch->unacked, i - 1)->tag < u->tag); /* tag order */
        if (!u->done) {
            live++;
            assert(u->q && u->q->refs > 0 && u->q->unacked > 0);
        }
    }
    assert(live == ch->nunacked);
    size_t it = 0;
    map_entry *e;
    while (map_iter((map *)&ch->consumers, &it, &e)) {
        consumer *cs = e->val;
        assert(cs->ch == ch);
        if (cs->q) { /* on its queue's list */
            size_t k = 0;
            while (k < cs->q->nconsumers && cs->q->consumers[k] != cs)
                k++;
            assert(k < cs->q->nconsumers);
        }
    }
}

static void check_broker(void) {
    size_t nconns = 0;
    for (conn *c = B.conns; c; c = c->next) {
        nconns++;
        assert(c->b == &B && c->state != CONN_DEAD);
        assert(!c->next || c->next->prev == c);
        uint32_t open = 0;
        for (uint32_t k = 0; k < c->nchans; k++)
            if (c->chans[k]) {
                open++;
                check_channel(c, c->chans[k], k);
            }
        assert(open == c->open_channels);
    }
    assert(nconns == B.nconns);
    size_t it = 0;
    map_entry *e;
    while (map_iter(&B.vh_default->queues, &it, &e)) {
        queue *q = e->val;
        assert(!q->deleted && q->refs >= 1 + q->unacked);
        assert(q->nlevels >= 1);
        size_t n = 0;
        for (int l = 0; l < q->nlevels; l++)
            n += q->levels[l].ready.len + q->levels[l].requeued.len;
        assert(n == q->nready);
        for (size_t k = 0; k < q->nconsumers; k++)
            assert(q->consumers[k]->q == q && q->consumers[k]->ch->c->state != CONN_DEAD);
        assert(!q->sac_active || q->sac);
    }
    it = 0;
    while (map_iter(&B.vh_default->exchanges, &it, &e)) {
        exchange *x = e->val;
        for (size_t k = 0; k < x->nbindings; k++)
            assert(x->bindings[k]->src == x && (x->bindings[k]->q != NULL) != (x->bindings[k]->dstx != NULL));
    }
}

/* ---- operations ---- */

static void method_end(client *cl, size_t m) { frame_end(&cl->out, m); }

/* basic.publish, a content header with fuzzer-chosen properties and the body in frames of
 * at most frame_max. */
static void publish(client *cl, uint16_t ch, script *s) {
    buf *o = &cl->out;
    size_t m = method_begin(o, ch, BASIC_PUBLISH);
    buf_u16(o, 0);
    NAME(o, s, exchanges);
    NAME(o, s, keys);
    buf_u8(o, get8(s) & 3); /* mandatory, immediate */
    frame_end(o, m);
    uint8_t sz = get8(s);
    /* 0..199 bytes, then kilobytes, then bodies up to 240 KB: past the broker's first
     * allocation (128 KiB) and several frames long. */
    uint64_t body_len = sz < 200   ? sz
                        : sz < 250 ? (uint64_t)(sz - 199) * 1000
                                   : (uint64_t)(sz - 249) * 40000;
    m = frame_begin(o, FRAME_HEADER, ch);
    buf_u16(o, CLASS_BASIC);
    buf_u16(o, 0);
    buf_u64(o, body_len);
    put_props(o, s);
    frame_end(o, m);
    uint64_t chunk = cl->frame_max - FRAME_OVERHEAD;
    for (uint64_t off = 0; off < body_len; off += chunk) {
        uint64_t n = MIN(chunk, body_len - off);
        m = frame_begin(o, FRAME_BODY, ch);
        memset(buf_reserve(o, n), 'b', n);
        buf_commit(o, n);
        frame_end(o, m);
    }
}

/* One operation on one connection: the low six bits of op say which. */
static void do_op(client *cl, uint8_t op, script *s) {
    buf *o = &cl->out;
    uint8_t cb = get8(s);
    uint16_t ch = (uint16_t)(1 + (cb & 3));
    if (cb == 0xff)
        ch = 0;
    size_t m;
    uint8_t f;
    switch (op) {
    case 0:
    case 1:
        m = method_begin(o, ch, CHANNEL_OPEN);
        buf_shortstr(o, "", 0);
        return method_end(cl, m);
    case 2:
        m = method_begin(o, ch, CHANNEL_CLOSE);
        buf_u16(o, 200);
        buf_shortstr(o, "bye", 3);
        buf_u32(o, 0);
        return method_end(cl, m);
    case 3: /* the answer to a close the broker sent (or one it did not) */
        return method_end(cl, method_begin(o, ch, CHANNEL_CLOSE_OK));
    case 4:
        m = method_begin(o, ch, CHANNEL_FLOW);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 5:
    case 6:
    case 7:
        m = method_begin(o, ch, EXCHANGE_DECLARE);
        buf_u16(o, 0);
        NAME(o, s, exchanges);
        NAME(o, s, xtypes);
        buf_u8(o, get8(s) & 31); /* passive durable auto-delete internal nowait */
        exchange_args(o, s);
        return method_end(cl, m);
    case 8:
        m = method_begin(o, ch, EXCHANGE_DELETE);
        buf_u16(o, 0);
        NAME(o, s, exchanges);
        buf_u8(o, get8(s) & 3);
        return method_end(cl, m);
    case 9:
    case 10:
        m = method_begin(o, ch, op == 9 ? EXCHANGE_BIND : EXCHANGE_UNBIND);
        buf_u16(o, 0);
        NAME(o, s, exchanges);
        NAME(o, s, exchanges);
        NAME(o, s, keys);
        buf_u8(o, get8(s) & 1);
        binding_args(o, s);
        return method_end(cl, m);
    case 11:
    case 12:
    case 13:
    case 14:
        m = method_begin(o, ch, QUEUE_DECLARE);
        buf_u16(o, 0);
        NAME(o, s, queues);
        buf_u8(o, get8(s) & 31); /* passive durable exclusive auto-delete nowait */
        queue_args(o, s);
        return method_end(cl, m);
    case 15:
    case 16:
    case 17:
        m = method_begin(o, ch, op == 17 ? QUEUE_UNBIND : QUEUE_BIND);
        buf_u16(o, 0);
        NAME(o, s, queues);
        NAME(o, s, exchanges);
        NAME(o, s, keys);
        if (op != 17)
            buf_u8(o, get8(s) & 1);
        binding_args(o, s);
        return method_end(cl, m);
    case 18:
        m = method_begin(o, ch, QUEUE_PURGE);
        buf_u16(o, 0);
        NAME(o, s, queues);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 19:
        m = method_begin(o, ch, QUEUE_DELETE);
        buf_u16(o, 0);
        NAME(o, s, queues);
        buf_u8(o, get8(s) & 7); /* if-unused if-empty nowait */
        return method_end(cl, m);
    case 20:
        m = method_begin(o, ch, BASIC_QOS);
        f = get8(s);
        buf_u32(o, f & 0x80 ? (uint32_t)number(s) : 0);
        buf_u16(o, (uint16_t)number(s));
        buf_u8(o, f & 1);
        return method_end(cl, m);
    case 21:
    case 22:
    case 23: {
        m = method_begin(o, ch, BASIC_CONSUME);
        buf_u16(o, 0);
        NAME(o, s, queues);
        NAME(o, s, tags);
        f = get8(s);
        buf_u8(o, f & 15); /* no-local no-ack exclusive nowait */
        buf t;
        buf_init(&t);
        if (f & 16)
            put_num(&t, "x-priority", s);
        if (f & 32)
            raw_table(&t, s);
        put_table(o, &t);
        buf_free(&t);
        return method_end(cl, m);
    }
    case 24:
        m = method_begin(o, ch, BASIC_CANCEL);
        NAME(o, s, tags);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 25:
    case 26:
    case 27:
    case 28:
    case 29:
    case 30: return publish(cl, ch, s);
    case 31:
    case 32:
        m = method_begin(o, ch, BASIC_GET);
        buf_u16(o, 0);
        NAME(o, s, queues);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 33:
    case 34:
    case 35:
    case 36: {
        static const unsigned settle[] = {BASIC_ACK, BASIC_ACK, BASIC_NACK, BASIC_REJECT};
        unsigned mid = settle[op - 33];
        m = method_begin(o, ch, mid);
        f = get8(s);
        buf_u64(o, f & 0x80 ? (uint64_t)number(s) : (uint64_t)(f & 15));
        buf_u8(o, (f >> 4) & (mid == BASIC_NACK ? 3 : 1)); /* multiple (requeue) / requeue */
        return method_end(cl, m);
    }
    case 37:
        m = method_begin(o, ch, get8(s) & 1 ? BASIC_RECOVER : BASIC_RECOVER_ASYNC);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 38:
        m = method_begin(o, ch, CONFIRM_SELECT);
        buf_u8(o, get8(s) & 1);
        return method_end(cl, m);
    case 39: return method_end(cl, method_begin(o, ch, TX_SELECT));
    case 40:
    case 41: return method_end(cl, method_begin(o, ch, TX_COMMIT));
    case 42: return method_end(cl, method_begin(o, ch, TX_ROLLBACK));
    case 43: /* a raw frame: any type, any channel, any payload */
        m = frame_begin(o, get8(s) % 9, ch);
        f = get8(s) & 0x7f;
        for (uint8_t i = 0; i < f; i++)
            buf_u8(o, get8(s));
        return method_end(cl, m);
    case 44: /* a raw method with fuzzer-chosen arguments */
        f = get8(s);
        m = method_begin(o, ch, MID(10 * (1 + f % 9), get8(s)));
        f = get8(s) & 0x7f;
        for (uint8_t i = 0; i < f; i++)
            buf_u8(o, get8(s));
        return method_end(cl, m);
    case 45: /* raw bytes, framing be damned */
        f = get8(s) & 0x3f;
        for (uint8_t i = 0; i < f; i++)
            buf_u8(o, get8(s));
        return;
    case 46: /* a content header or body with no publish before it (or a short body) */
        m = frame_begin(o, get8(s) & 1 ? FRAME_HEADER : FRAME_BODY, ch);
        buf_u16(o, CLASS_BASIC);
        buf_u16(o, 0);
        buf_u64(o, (uint64_t)number(s));
        buf_u16(o, 0);
        return method_end(cl, m);
    case 47: wire_heartbeat(o); return;
    case 48:
        m = method_begin(o, 0, CONNECTION_CLOSE);
        buf_u16(o, 200);
        buf_shortstr(o, "", 0);
        buf_u32(o, 0);
        return method_end(cl, m);
    case 49: return method_end(cl, method_begin(o, 0, CONNECTION_CLOSE_OK));
    default: /* 50..63: the common ones again, weighted */
        if (op < 56)
            return publish(cl, ch, s);
        m = method_begin(o, ch, op < 60 ? BASIC_ACK : BASIC_NACK);
        buf_u64(o, (uint64_t)(get8(s) & 15));
        buf_u8(o, get8(s) & 3);
        return method_end(cl, m);
    }
}

/* Operations not on one connection: loop steps, time, disconnects and reconnects. */
static void do_global(uint8_t op, script *s) {
    client *cl = &clients[get8(s) % NCONN];
    switch (op & 7) {
    case 0:
    case 1: step(); return;
    case 2:
    case 3: { /* time passes: timers (TTL, expiry, delays) and the 250 ms tick */
        step();
        uint8_t t = get8(s);
        uint64_t ms = (t & 0x80) ? (uint64_t)(t & 0x7f) * 1000 : (uint64_t)t * 5;
        /* The last second in quarters, so the 250 ms tick runs as often as it would (the
         * alarms are re-evaluated on every fourth). */
        uint64_t tail = MIN(ms, 1000);
        fake_clock_ms += ms - tail;
        while (tail) {
            uint64_t d = MIN(tail, 250);
            fake_clock_ms += d;
            tail -= d;
            loop_step(B.loop, 0);
        }
        step();
        return;
    }
    case 4: /* abrupt close: the socket just goes away, maybe mid-frame */
        client_close(cl);
        step();
        return;
    case 5: /* a new connection in a closed slot */
        if (cl->fd < 0)
            client_open(cl);
        return;
    default:
        step();
        step();
        return;
    }
}

/* ---- one input ---- */

/* rm -r path (the data directory between brokers). */
static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    char sub[512];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        rm_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static void broker_stop(void);
static void broker_stop_at_exit(void) {
    if (B.loop)
        broker_stop();
    for (int i = 0; i < NCONN; i++)
        buf_free(&clients[i].out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    log_level = LOG_ERROR + 1; /* quiet: errors are what the fuzzer provokes */
    debug = getenv("FUZZ_CONN_DEBUG") != NULL;
    snprintf(data_dir, sizeof data_dir, "/dev/shm/ferry-fuzz-XXXXXX");
    if (!mkdtemp(data_dir)) {
        snprintf(data_dir, sizeof data_dir, "/tmp/ferry-fuzz-XXXXXX");
        if (!mkdtemp(data_dir))
            abort();
    }
    rmdir(data_dir);
    atexit(broker_stop_at_exit);
    return 0;
}

/* Starts a broker on an empty data directory. */
static void broker_start(void) {
    config cfg;
    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", data_dir);
    cfg.nbind = 0;
    cfg.log_level = log_level;
    cfg.rabbit_password_hashes = 1; /* guest's hash is one SHA-256: logins check inline, no thread */
    rm_tree(data_dir); /* what an earlier (crashed) run left */
    if (mkdir(data_dir, 0700) < 0 && errno != EEXIST)
        abort();
    if (broker_init(&B, &cfg) < 0)
        abort();
}

static void broker_stop(void) {
    broker_shutdown(&B);
    /* Every message body was given back: nothing a client did leaks a reference. */
    assert(message_bytes() == 0);
    rm_tree(data_dir);
}

/* Brings the running broker back to its empty state between inputs (starting one costs a
 * store writer thread, far more than an input): connections gone, every queue and
 * exchange deleted (through the store, as a client would), every timer fired. */
static void broker_reset(void) {
    while (B.conns)
        conn_destroy(B.conns);
    map_entry *e;
    for (;;) {
        size_t i = 0;
        if (!map_iter(&B.vh_default->queues, &i, &e))
            break;
        queue_delete(e->val);
    }
    for (;;) {
        size_t i = 0;
        exchange *x = NULL;
        while (map_iter(&B.vh_default->exchanges, &i, &e))
            if (!((exchange *)e->val)->builtin) {
                x = e->val;
                break;
            }
        if (!x)
            break;
        broker_remove_exchange(x);
    }
    while (B.dl_head) /* dead letters still to route (none of their queues is left) */
        loop_step(B.loop, 0);
    /* Delayed messages and retries (up to 2^31 ms away) fall due and find nothing. */
    fake_clock_ms += (uint64_t)1 << 33;
    loop_step(B.loop, 0);
    loop_step(B.loop, 0);
    broker_set_alarm(&B, ALARM_MEMORY, 0);
    /* Page records in a batch the writer has not finished still hold their messages. */
    for (int w = 0; w < 400 && memacct_total(); w++)
        loop_step(B.loop, 5);
    assert(B.vh_default->queues.count == 0); /* the fuzzer only opens "/" */
    assert(B.conns == NULL && B.nconns == 0);
    assert(message_bytes() == 0);
    /* With no connection, queue or user exchange left, nothing a client caused is held: every
     * kind of accounted memory is back to zero (an imbalance would drift the alarm). */
    for (int k = 0; k < MEM_NKINDS; k++)
        if (memacct_get((enum memkind)k)) {
            fprintf(stderr, "memacct: %s holds %llu bytes after the reset\n", memacct_name((enum memkind)k),
                    (unsigned long long)memacct_get((enum memkind)k));
            abort();
        }
}

#define RESTART_EVERY 1000 /* inputs between fresh brokers (the store's files stay small) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned runs;
    script s = {data, size};
    settings = get8(&s);
    if (runs++ % RESTART_EVERY == 0) {
        if (runs > 1)
            broker_stop();
        if (!fake_clock_ms)
            fake_clock_ms = 1700000000000ull; /* a fixed start: runs repeat exactly */
        broker_start();
    }
    static const uint64_t budgets[] = {(uint64_t)1 << 40, 16384, 0, 1 << 20};
    B.cfg.memory_budget = budgets[settings & 3];
    /* 1 MiB: a few large publishes raise the memory alarm (connection.blocked). */
    B.cfg.memory_high_watermark = (settings & 4) ? 1 << 20 : (uint64_t)1 << 40;
    /* A connection opens (and shakes hands) when the script first uses it: most inputs
     * need one or two, and each costs a socketpair and a handshake. */
    int used[NCONN] = {0};
    for (int i = 0; i < NCONN; i++) {
        buf_consume(&clients[i].out, clients[i].out.len);
        clients[i].fd = -1;
    }
    for (size_t k = 0; k < ARRAY_LEN(learned); k++)
        learned[k].name[0] = 0;
    unsigned ops = 0;
    while (s.n) {
        uint8_t op = get8(&s);
        client *cl = &clients[(op >> 6) % NCONN];
        if ((op >> 6) == 3) {
            do_global(op & 63, &s);
        } else {
            if (!used[op >> 6]) {
                used[op >> 6] = 1;
                if (cl->fd < 0) /* not opened by a reconnect operation already */
                    client_open(cl);
            }
            if (cl->fd >= 0)
                do_op(cl, op & 63, &s);
            else
                get8(&s);
        }
        if (++ops % STEP_EVERY == 0)
            step();
    }
    step();
    /* Some connections leave abruptly, the rest are closed by the broker. */
    if (settings & 0x80)
        for (int i = 0; i < NCONN; i++)
            client_close(&clients[i]);
    step();
    broker_reset();
    for (int i = 0; i < NCONN; i++)
        client_close(&clients[i]); /* the out buffers are kept (and reused) for the next input */
    return 0;
}
