/* conn.c — one client connection: the socket, the handshake, frames in, bytes out.
 *
 * Input is read in large chunks; one connection's frames are handled up to a budget per
 * loop turn (INPUT_BUDGET_*), the rest stay buffered and get the next turn (the backlog
 * list, driven by a timer due at once), so one client's pipeline never stalls the others. Output is appended to one buffer per connection and written once per loop
 * batch (broker_after_batch → conn_flush), so a burst of deliveries or confirms costs one
 * write(). Bodies of ZC_MIN_BODY bytes and more are not copied into that buffer: their body
 * frames' payloads stay in the shared message and go out with the framing around them in one
 * writev() (conn_put_content). Protocol errors end here as connection.close with the spec's reply code
 * (conn_close_error); soft errors are the channel's business (channel.c). */
#include "broker.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "memacct.h"
#include "auth.h"
#include "tls.h"
#include "util.h"

#ifndef READ_CHUNK /* the fuzz target reads in smaller pieces (no 256 KiB mmap per connection) */
#define READ_CHUNK (256 * 1024)
#endif
/* Consumers on a connection whose output buffer holds more than this wait (TCP push-back);
 * input is not read while it holds more than OUT_PAUSE_READ (a client that does not read
 * its confirms cannot make the broker buffer without bound). */
#define OUT_HIGH_WATER (4u << 20)
#define OUT_PAUSE_READ (16u << 20)
/* Bodies (and body frames) this large are written from the message itself, not copied into
 * the output buffer: below it a memcpy costs less than an iovec entry and a reference. */
#define ZC_MIN_BODY (16u * 1024)
#define FLUSH_IOV 64 /* iovec entries per writev() */

/* A body frame's payload waiting in the output: a slice of a referenced message. */
struct outref {
    uint64_t at; /* it follows this many bytes of the output buffer's stream */
    message *m;
    const uint8_t *p;
    uint32_t n;
};
/* How long a closing connection may take to answer close-ok or to read what we still have
 * to write; and how long we keep reading after our last byte (close-ok) before closing. */
#define CLOSE_OK_TIMEOUT_MS 3000
#define LINGER_MS 3000
/* The work one connection gets per loop turn: this many frames, bytes or microseconds,
 * whichever runs out first (time covers frames that are costly to handle: a durable declare,
 * a publish routed to many queues). */
#define INPUT_BUDGET_FRAMES 256
#define INPUT_BUDGET_BYTES (256u * 1024)
#define INPUT_BUDGET_US 2000

static const uint8_t amqp_header[8] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};

static void conn_io(io_handler *h, uint32_t events);
static void tls_io(conn *c, uint32_t events);
static void handle_input(conn *c);
static void backlog_remove(conn *c);

static int is_loopback(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
            return a->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t n) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", host, port);
    }
}

/* Takes a connected, non-blocking socket: a new connection waiting for the protocol
 * header. The listener calls it; so does the in-process fuzz target (fuzz/fuzz_conn.c)
 * with one end of a socketpair. NULL (fd closed) if the loop cannot watch it. */
conn *conn_new(broker *b, int fd, int loopback, const char *peer) {
    assert(b && b->loop && fd >= 0 && peer);
    conn *c = xcalloc(1, sizeof *c);
    b->cnt.conn_created++;
    c->io.fn = conn_io;
    c->fd = fd;
    c->b = b;
    c->id = ++b->next_conn_id;
    c->state = CONN_HEADER;
    c->frame_max = b->cfg.frame_max;
    c->created_ms = c->last_recv_ms = c->last_send_ms = loop_now_ms(b->loop);
    c->loopback = (uint8_t)(loopback != 0);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    buf_init(&c->in);
    buf_init(&c->out);
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->nconns++;
    if (loop_add(b->loop, fd, EPOLLIN, &c->io) < 0) {
        log_warn("epoll add: %s", strerror(errno));
        conn_destroy(c);
        return NULL;
    }
    return c;
}

/* ---- listening ---- */

typedef struct listener {
    io_handler io;
    broker *b;
    int fd;
    int tls; /* connections start with a TLS handshake */
    loop_timer retry; /* re-enables accepting after running out of file descriptors */
    uint64_t warned_ms;
} listener;

#define ACCEPT_RETRY_MS 200

static void accept_resume(loop_timer *t) {
    listener *l = (listener *)((char *)t - offsetof(listener, retry));
    loop_mod(l->b->loop, l->fd, EPOLLIN, &l->io);
}

/* Out of file descriptors (EMFILE, ENFILE) or kernel memory: the pending connection stays
 * in the listen backlog, and the level-triggered listener would report it again at once,
 * forever. Stop listening for ACCEPT_RETRY_MS instead; the connections wait in the backlog
 * and are served once descriptors are free again. */
static void accept_pause(listener *l, int err) {
    uint64_t now = loop_now_ms(l->b->loop);
    if (now - l->warned_ms >= 10000 || !l->warned_ms) {
        log_warn("accept: %s (%zu connections): not accepting for %d ms", strerror(err), l->b->nconns,
                 ACCEPT_RETRY_MS);
        l->warned_ms = now;
    }
    loop_mod(l->b->loop, l->fd, 0, &l->io);
    loop_timer_arm(l->b->loop, &l->retry, now + ACCEPT_RETRY_MS);
}

static void accept_ready(io_handler *h, uint32_t events) {
    (void)events;
    listener *l = (listener *)h;
    broker *b = l->b;
    int lfd = l->fd;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                accept_pause(l, e);
            else if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED)
                log_warn("accept: %s", strerror(e));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char peer[64];
        format_peer(&ss, peer, sizeof peer);
        conn *c = conn_new(b, fd, is_loopback(&ss), peer);
        if (c && l->tls && !(c->tls = tls_conn_new(b->tls, fd))) {
            log_warn("connection %llu (%s): cannot start TLS", (unsigned long long)c->id, c->peer);
            conn_destroy(c);
            continue;
        }
        if (c)
            log_debug("accepted %sconnection %llu from %s", l->tls ? "TLS " : "", (unsigned long long)c->id, c->peer);
    }
}

int listener_open(broker *b, const char *addr, int port, int tls) {
    if (b->nlisten >= (int)ARRAY_LEN(b->listen_fds))
        return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    int family;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1) {
            errno = EINVAL;
            return -1;
        }
        family = AF_INET6;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, addr, &a->sin_addr) != 1) {
            errno = EINVAL;
            return -1;
        }
        family = AF_INET;
        sl = sizeof *a;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    listener *l = xcalloc(1, sizeof *l);
    l->io.fn = accept_ready;
    l->b = b;
    l->fd = fd;
    l->tls = tls;
    l->retry.fn = accept_resume;
    b->listen_fds[b->nlisten] = fd;
    b->listen_io[b->nlisten] = &l->io;
    b->nlisten++;
    loop_add(b->loop, fd, EPOLLIN, &l->io);
    return 0;
}

/* ---- output ---- */

/* Reports what this connection's buffers hold to the memory accounting: the unread input
 * and the output buffer's storage (written bytes touch it; it shrinks once drained). */
static void conn_account(conn *c) {
    /* (the slices' bytes are the messages', counted in MEM_MESSAGES while referenced) */
    uint64_t held = c->in.len + c->out.cap + (uint64_t)c->caporef * sizeof(struct outref);
    if (held >= c->acct)
        memacct_add(MEM_CONN_BUFFERS, held - c->acct);
    else
        memacct_sub(MEM_CONN_BUFFERS, c->acct - held);
    c->acct = held;
    if (c->tls) /* OpenSSL's heap, counted by tls.c: recounted whenever a TLS connection moves */
        memacct_set(MEM_TLS, tls_heap_in_use());
}

void conn_want_flush(conn *c) {
    if (c->in_flush || c->state == CONN_DEAD)
        return;
    c->in_flush = 1;
    c->next_flush = c->b->flush;
    c->b->flush = c;
}

uint64_t conn_out_pending(const conn *c) { return c->out.len + c->oref_bytes; }

int conn_can_deliver(const conn *c) { return c->state == CONN_OPENED && conn_out_pending(c) < OUT_HIGH_WATER; }

/* Queues a slice of m's body after the bytes appended to `out` so far. */
static void put_slice(conn *c, message *m, const uint8_t *p, size_t n) {
    if (c->oref_head + c->noref == c->caporef) {
        if (c->oref_head) { /* slide the live entries to the front before growing */
            memmove(c->orefs, c->orefs + c->oref_head, c->noref * sizeof *c->orefs);
            c->oref_head = 0;
        }
        if (c->noref == c->caporef) {
            c->caporef = c->caporef ? c->caporef * 2 : 16;
            c->orefs = xrealloc(c->orefs, c->caporef * sizeof *c->orefs);
        }
    }
    c->orefs[c->oref_head + c->noref++] = (struct outref){c->out_base + c->out.len, message_ref(m), p, (uint32_t)n};
    c->oref_bytes += n;
}

void conn_put_content(conn *c, uint16_t channel, slice props, message *m) {
    conn_want_flush(c);
    size_t chunk = c->frame_max > FRAME_OVERHEAD ? c->frame_max - FRAME_OVERHEAD : 131072 - FRAME_OVERHEAD;
    /* TLS encrypts from one buffer (tls_write), so its bodies are copied as before. */
    if (c->tls || m->body_len < ZC_MIN_BODY || chunk < ZC_MIN_BODY) {
        wire_content(&c->out, channel, props.p, props.n, msg_body(m), m->body_len, c->frame_max);
        return;
    }
    wire_content_header(&c->out, channel, props.p, props.n, m->body_len);
    const uint8_t *body = msg_body(m);
    uint64_t left = m->body_len;
    while (left > 0) {
        size_t n = left < chunk ? (size_t)left : chunk;
        uint8_t *h = buf_reserve(&c->out, 7);
        h[0] = FRAME_BODY;
        h[1] = (uint8_t)(channel >> 8), h[2] = (uint8_t)channel;
        h[3] = (uint8_t)(n >> 24), h[4] = (uint8_t)(n >> 16), h[5] = (uint8_t)(n >> 8), h[6] = (uint8_t)n;
        buf_commit(&c->out, 7);
        put_slice(c, m, body, n);
        buf_u8(&c->out, FRAME_END);
        body += n;
        left -= n;
    }
}

/* Drops the first n bytes of the output stream (written): buffer bytes and whole or partial
 * slices, in stream order; a slice written whole gives its message reference back. */
static void out_consume(conn *c, size_t n) {
    while (n) {
        struct outref *r = c->noref ? &c->orefs[c->oref_head] : NULL;
        if (!r || r->at > c->out_base) { /* buffer bytes come first */
            size_t k = r ? (size_t)(r->at - c->out_base) : c->out.len;
            if (k > n)
                k = n;
            assert(k > 0 && k <= c->out.len);
            buf_consume(&c->out, k);
            c->out_base += k;
            n -= k;
            continue;
        }
        size_t k = r->n - c->oref_skip;
        if (k > n) {
            c->oref_skip += (uint32_t)n;
            c->oref_bytes -= n;
            return;
        }
        n -= k;
        c->oref_bytes -= k;
        c->oref_skip = 0;
        message_unref(r->m);
        c->oref_head++;
        if (--c->noref == 0)
            c->oref_head = 0;
    }
}

/* Gives back every slice's message (the connection is going away). */
static void out_drop_slices(conn *c) {
    for (uint32_t i = 0; i < c->noref; i++)
        message_unref(c->orefs[c->oref_head + i].m);
    free(c->orefs);
    c->orefs = NULL;
    c->noref = c->oref_head = c->caporef = c->oref_skip = 0;
    c->oref_bytes = 0;
}

/* The next pieces of the output stream as iovecs (buffer runs and slices in order). */
static int out_iov(const conn *c, struct iovec *iov, int max) {
    int k = 0;
    uint64_t pos = c->out_base;
    const uint8_t *head = buf_head(&c->out);
    for (uint32_t i = 0; i < c->noref && k < max; i++) {
        const struct outref *r = &c->orefs[c->oref_head + i];
        if (r->at > pos) {
            iov[k++] = (struct iovec){(void *)(uintptr_t)(head + (pos - c->out_base)), (size_t)(r->at - pos)};
            pos = r->at;
            if (k == max)
                break;
        }
        size_t skip = i == 0 ? c->oref_skip : 0;
        iov[k++] = (struct iovec){(void *)(uintptr_t)(r->p + skip), r->n - skip};
    }
    uint64_t end = c->out_base + c->out.len;
    if (k < max && pos < end)
        iov[k++] = (struct iovec){(void *)(uintptr_t)(head + (pos - c->out_base)), (size_t)(end - pos)};
    return k;
}

/* Input is read unless the output backs up, a resource alarm blocks this publisher, or a
 * tx.commit waits for the store. */
static int input_allowed(const conn *c) {
    return !c->read_paused && !(c->blocked && c->has_published) && !c->store_wait && !c->auth;
}

static void update_events(conn *c) {
    uint32_t ev = 0;
    if (c->lingering)
        return; /* reads to the end, nothing else (start_linger) */
    if (c->tls && !tls_established(c->tls))
        return; /* the handshake asks for what it needs (tls_io) */
    if (input_allowed(c) && !c->in_backlog) /* a backlog is handled before reading more */
        ev |= EPOLLIN;
    if (c->epollout || c->tls_read_wants_write)
        ev |= EPOLLOUT;
    if (c->tls_flush_wants_read)
        ev |= EPOLLIN;
    loop_mod(c->b->loop, c->fd, ev, &c->io);
}

/* The connection is done once its output is written (a close-ok, a protocol header, a
 * close before the handshake): nothing more is handled, and a peer that does not read it
 * is given up on after CLOSE_OK_TIMEOUT_MS. */
static void close_after_flush(conn *c) {
    if (c->state != CONN_CLOSING || !c->close_when_flushed)
        c->closing_since_ms = loop_now_ms(c->b->loop);
    c->state = CONN_CLOSING;
    c->close_when_flushed = 1;
    conn_want_flush(c);
}

/* Our last byte is written: send FIN, then read and discard until the peer closes (or
 * LINGER_MS passes). Closing at once with unread input in the socket would make the kernel
 * answer with RST, and a client whose publishes were still in flight would lose the
 * close-ok it has not read yet (RabbitMQ's clients then never see their close complete). */
static void uncount_open(conn *c) {
    if (c->counted_open) {
        assert(c->b->nopened > 0);
        c->b->nopened--;
        c->counted_open = 0;
    }
}

static void start_linger(conn *c) {
    uncount_open(c); /* its place under --max-connections is free already */
    c->lingering = 1;
    c->linger_since_ms = loop_now_ms(c->b->loop);
    buf_consume(&c->in, c->in.len);
    backlog_remove(c);
    if (c->tls)
        tls_close_notify(c->tls); /* then the raw socket is read to its end (linger_read) */
    shutdown(c->fd, SHUT_WR);
    loop_mod(c->b->loop, c->fd, EPOLLIN, &c->io);
}

/* Reads and drops what a lingering connection's peer still sends; its EOF ends it. */
static void linger_read(conn *c) {
    uint8_t sink[16384];
    for (int i = 0; i < 16; i++) { /* bounded work per event, like any input */
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_destroy(c); /* EOF or error: the peer is gone */
        return;
    }
}

/* ---- input backlog: frames left over after a connection's budget ---- */

/* Takes a connection (being destroyed) off the backlog. If it is not on b->backlog it is on
 * the list conn_backlog_run is walking: its link is left alone so that the walk goes on past
 * it (it is skipped there as dead, and freed only after the batch). */
static void backlog_remove(conn *c) {
    if (!c->in_backlog)
        return;
    for (conn **pp = &c->b->backlog; *pp; pp = &(*pp)->next_backlog) {
        if (*pp == c) {
            *pp = c->next_backlog;
            c->next_backlog = NULL;
            break;
        }
    }
    c->in_backlog = 0;
}

/* Each connection on the backlog gets one more budget of its buffered frames; those that
 * still have frames left put themselves back (handle_input) for the next batch. */
int conn_backlog_run(broker *b) {
    conn *list = b->backlog;
    b->backlog = NULL;
    while (list) {
        conn *c = list;
        list = c->next_backlog;
        c->next_backlog = NULL;
        c->in_backlog = 0;
        if (c->state == CONN_DEAD)
            continue;
        handle_input(c);
        if (c->state != CONN_DEAD && !c->in_backlog)
            update_events(c); /* done with the backlog: read the socket again */
    }
    return b->backlog != NULL;
}

/* The budget ran out with frames left: they get the next loop batch (conn_backlog_run, from
 * the after-batch hook, which keeps the loop from waiting), not the next socket event; the
 * socket is not read meanwhile, so the buffer does not grow. */
static void backlog_add(conn *c) {
    assert(c->state != CONN_DEAD);
    if (c->in_backlog)
        return;
    int was_reading = input_allowed(c);
    c->in_backlog = 1;
    c->next_backlog = c->b->backlog;
    c->b->backlog = c;
    if (was_reading)
        update_events(c);
}

/* Consumers that waited for this connection's buffer to drain get another turn. */
static void wake_consumers(conn *c) {
    for (uint32_t i = 0; i < c->nchans; i++) {
        channel *ch = c->chans[i];
        if (!ch)
            continue;
        size_t it = 0;
        map_entry *e;
        while (map_iter(&ch->consumers, &it, &e)) {
            consumer *cs = e->val;
            if (cs->q)
                queue_mark_dirty(cs->q);
        }
    }
}

/* Writes as much of the output buffer as the socket takes. */
void conn_flush(conn *c) {
    c->in_flush = 0;
    if (c->state == CONN_DEAD)
        return;
    int was_blocked = conn_out_pending(c) >= OUT_HIGH_WATER;
    int was_waiting_read = c->tls_flush_wants_read;
    while (conn_out_pending(c)) {
        if (c->tls) {
            assert(c->noref == 0); /* TLS output is never sliced (conn_put_content) */ /* the same bytes stay at the buffer's front until OpenSSL has taken them */
            long t = tls_write(c->tls, buf_head(&c->out), c->out.len);
            c->tls_flush_wants_read = t == 0 && !tls_wants_write(c->tls);
            if (t > 0) {
                buf_consume(&c->out, (size_t)t);
                c->last_send_ms = loop_now_ms(c->b->loop);
                continue;
            }
            if (t == 0)
                break;
            log_debug("connection %llu: TLS write failed", (unsigned long long)c->id);
            conn_destroy(c);
            return;
        }
        ssize_t n;
        if (c->noref) {
            struct iovec iov[FLUSH_IOV];
            n = writev(c->fd, iov, out_iov(c, iov, FLUSH_IOV));
        } else {
            n = write(c->fd, buf_head(&c->out), c->out.len);
        }
        if (n > 0) {
            out_consume(c, (size_t)n);
            c->last_send_ms = loop_now_ms(c->b->loop);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        log_debug("connection %llu: write failed: %s", (unsigned long long)c->id, strerror(errno));
        conn_destroy(c);
        return;
    }
    if (!conn_out_pending(c))
        c->tls_flush_wants_read = 0;
    int want_out = conn_out_pending(c) > 0 && !c->tls_flush_wants_read;
    int pause = conn_out_pending(c) > OUT_PAUSE_READ;
    if (want_out != c->epollout || pause != c->read_paused || c->resume ||
        was_waiting_read != c->tls_flush_wants_read) {
        c->epollout = (uint8_t)want_out;
        c->read_paused = (uint8_t)pause;
        c->resume = 0;
        update_events(c);
        if (input_allowed(c) && c->in.len)
            handle_input(c); /* frames that arrived while reading was paused */
        if (c->state == CONN_DEAD)
            return;
    }
    if (conn_out_pending(c) == 0) {
        buf_shrink_if_idle(&c->out, 64 * 1024);
        if (c->caporef > 64) { /* an idle connection keeps a small slice array */
            free(c->orefs);
            c->orefs = NULL;
            c->caporef = c->oref_head = 0;
        }
        if (c->state == CONN_CLOSING && c->close_when_flushed && !c->lingering) {
            start_linger(c); /* close-ok sent: we are done once the peer is */
            return;
        }
    }
    if (was_blocked && conn_out_pending(c) < OUT_HIGH_WATER)
        wake_consumers(c);
    conn_account(c);
}

void conn_update_input(conn *c) {
    if (c->state == CONN_DEAD)
        return;
    c->resume = 1; /* conn_flush, at the end of the batch, re-reads the state */
    conn_want_flush(c);
}

void conn_set_blocked(conn *c, int on) {
    if (c->state != CONN_OPENED || c->blocked == on)
        return;
    c->blocked = (uint8_t)on;
    if (c->cap_blocked && on != c->told_blocked) {
        size_t m = method_begin(&c->out, 0, on ? CONNECTION_BLOCKED : CONNECTION_UNBLOCKED);
        if (on)
            buf_shortstr(&c->out, "low on resources", 16);
        frame_end(&c->out, m);
        c->told_blocked = (uint8_t)on;
    }
    conn_update_input(c);
}

/* ---- teardown ---- */

static void release_channels(conn *c) {
    for (uint32_t i = 0; i < c->nchans; i++) {
        if (c->chans[i]) {
            channel_free(c->chans[i]);
            c->chans[i] = NULL;
            if (c->u)
                c->u->nchannels--;
        }
    }
    c->open_channels = 0;
}

/* Exclusive queues belong to their connection and go with it. */
static void delete_exclusive_queues(conn *c) {
    if (!c->vh)
        return;
    size_t i = 0;
    map_entry *e;
    while (map_iter(&c->vh->queues, &i, &e)) {
        queue *q = e->val;
        if (q->exclusive && q->owner == c)
            queue_delete(q);
    }
}

static void auth_abandon(conn *c);

void conn_destroy(conn *c) {
    if (c->state == CONN_DEAD)
        return;
    c->state = CONN_DEAD;
    uncount_open(c);
    backlog_remove(c);
    release_channels(c);
    delete_exclusive_queues(c);
    auth_abandon(c);
    if (c->vh) {
        c->vh->nconns--;
        if (c->u)
            c->u->nconns--;
    }
    loop_del(c->b->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    if (c->tls) {
        tls_conn_free(c->tls);
        c->tls = NULL;
        memacct_set(MEM_TLS, tls_heap_in_use());
    }
    broker *b = c->b;
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->nconns--;
    c->next_dead = b->dead;
    b->dead = c;
}

void conn_free(conn *c) {
    c->b->cnt.conn_closed++;
    buf_free(&c->in);
    buf_free(&c->out);
    out_drop_slices(c);
    conn_account(c);
    free(c->chans);
    free(c->user);
    free(c->client_props);
    free(c);
}

/* ---- sending methods ---- */

static void send_close(conn *c, int code, const char *text, unsigned mid) {
    size_t m = method_begin(&c->out, 0, CONNECTION_CLOSE);
    buf_u16(&c->out, (uint16_t)code);
    buf_shortstr(&c->out, text, strlen(text));
    buf_u16(&c->out, (uint16_t)(mid >> 16));
    buf_u16(&c->out, (uint16_t)(mid & 0xffff));
    frame_end(&c->out, m);
    conn_want_flush(c);
}

/* Ends a connection without a word: what RabbitMQ does with errors before the client has
 * finished tune-ok (it may not even speak AMQP). */
static void conn_drop(conn *c, const char *why) {
    log_warn("dropping connection %llu (%s) during the handshake: %s", (unsigned long long)c->id, c->peer, why);
    close_after_flush(c);
}

static void close_with(conn *c, int code, unsigned class_method, const char *fmt, va_list ap) {
    char text[256];
    int n = snprintf(text, sizeof text, "%s - ", reply_code_name(code));
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    if (c->state < CONN_OPEN) {
        conn_drop(c, text);
        return;
    }
    log_warn("closing connection %llu (%s): %s", (unsigned long long)c->id, c->peer, text);
    send_close(c, code, text, class_method);
    /* Channels are released by handle_frame once the current handler has returned. */
    c->state = CONN_CLOSING;
    c->closing_since_ms = loop_now_ms(c->b->loop);
}

void conn_close_error(conn *c, int code, unsigned class_method, const char *fmt, ...) {
    if (c->state == CONN_CLOSING || c->state == CONN_DEAD)
        return;
    va_list ap;
    va_start(ap, fmt);
    close_with(c, code, class_method, fmt, ap);
    va_end(ap);
}

/* The one error RabbitMQ reports during the handshake: a refused login, to clients that
 * announced authentication_failure_close. */
static void close_in_handshake(conn *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    c->state = CONN_OPEN; /* so that close_with sends the close frame */
    close_with(c, code, 0, fmt, ap);
    va_end(ap);
}

static void send_start(conn *c) {
    buf *o = &c->out;
    size_t m = method_begin(o, 0, CONNECTION_START);
    buf_u8(o, 0);
    buf_u8(o, 9);
    size_t tpos = o->len;
    buf_u32(o, 0);
    buf cap;
    buf_init(&cap);
    static const char *caps[] = {"publisher_confirms",     "exchange_exchange_bindings",
                                 "basic.nack",             "consumer_cancel_notify",
                                 "connection.blocked",     "authentication_failure_close",
                                 "per_consumer_qos",       "direct_reply_to",
                                 "consumer_priorities",
                                 /* Ferry's own (RabbitMQ ignores what it does not know): queues
                                  * take x-retry-delays; `ferry worker` looks for it */
                                 "x-retry-delays"};
    for (size_t i = 0; i < ARRAY_LEN(caps); i++)
        table_put_bool(&cap, caps[i], 1);
    table_put_table(o, "capabilities", buf_head(&cap), cap.len);
    buf_free(&cap);
    table_put_longstr(o, "product", "Ferry", 5);
    table_put_longstr(o, "version", FERRY_VERSION, strlen(FERRY_VERSION));
    table_put_longstr(o, "platform", "C", 1);
    table_put_longstr(o, "cluster_name", "ferry", 5);
    table_put_longstr(o, "copyright", "Ferry contributors", 18);
    table_put_longstr(o, "information", "AMQP 0-9-1 broker; see README.md", 32);
    buf_patch_u32(o, tpos, (uint32_t)(o->len - tpos - 4));
    /* EXTERNAL (RabbitMQ's rabbitmq_auth_mechanism_ssl) when the client showed a verified
     * certificate. */
    if (c->tls && tls_has_peer_cert(c->tls))
        buf_longstr(o, "PLAIN AMQPLAIN EXTERNAL", 23);
    else
        buf_longstr(o, "PLAIN AMQPLAIN", 14);
    buf_longstr(o, "en_US", 5);
    frame_end(o, m);
    conn_want_flush(c);
}

static void send_tune(conn *c) {
    size_t m = method_begin(&c->out, 0, CONNECTION_TUNE);
    buf_u16(&c->out, c->b->cfg.channel_max);
    buf_u32(&c->out, c->b->cfg.frame_max);
    buf_u16(&c->out, (uint16_t)c->b->cfg.heartbeat);
    frame_end(&c->out, m);
    conn_want_flush(c);
}

static void send_empty_method(conn *c, uint16_t ch, unsigned mid) {
    size_t m = method_begin(&c->out, ch, mid);
    frame_end(&c->out, m);
    conn_want_flush(c);
}

/* ---- handshake ---- */

/* RabbitMQ's loopback_users: these users may connect only from a loopback address. */
int loopback_only(const config *cfg, slice user) {
    const char *p = cfg->loopback_users;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && p[0] == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n == user.n && n && memcmp(p, user.p, n) == 0)
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

static void read_client_capabilities(conn *c, slice props) {
    fval v, f;
    if (!table_get(props, "capabilities", &v) || v.type != 'F')
        return;
    if (table_get(v.s, "consumer_cancel_notify", &f) && f.type == 't')
        c->cap_cancel_notify = (uint8_t)f.i;
    if (table_get(v.s, "authentication_failure_close", &f) && f.type == 't')
        c->cap_auth_failure_close = (uint8_t)f.i;
    if (table_get(v.s, "connection.blocked", &f) && f.type == 't')
        c->cap_blocked = (uint8_t)f.i;
}

/* A refused login, once its delay has passed: the same answer whatever was wrong. */
static void auth_failed(conn *c, const char *mech) {
    if (c->cap_auth_failure_close)
        close_in_handshake(c, ACCESS_REFUSED,
                           "Login was refused using authentication mechanism %s. For details see the broker logfile.",
                           mech);
    else /* clients without authentication_failure_close expect the socket to close (spec) */
        conn_drop(c, "login refused");
}

/* ---- login: the password check (on the helper thread unless the password checked out
 * before), then tune; or, for any failure, a growing delay per peer and one answer ---- */

struct authwait {
    auth_check ac;     /* first member: the helper job hands this back */
    conn *c;           /* NULL once the connection is gone (the check then frees itself) */
    loop_timer delay;  /* a refusal waiting out its delay */
    char mech[12];
    char *user;
    size_t user_len;
    uint8_t refused_loopback;
};

/* The peer's address without its port: failures are counted per address. */
static void peer_addr(const conn *c, char *out, size_t n) {
    snprintf(out, n, "%s", c->peer);
    char *colon = strrchr(out, ':');
    if (colon && (out[0] != '[' || colon[-1] == ']'))
        *colon = 0;
}

static void authwait_free(struct authwait *aw) {
    auth_check_clear(&aw->ac);
    free(aw->user);
    free(aw);
}

static void login_ok(conn *c, user *u) {
    c->user = xstrndup(u->name, u->name_len);
    c->u = u;
    send_tune(c);
    c->state = CONN_TUNE_OK;
}

/* A login went through: the peer's failure count is forgotten, and tune follows. */
static void login_accepted(conn *c, user *u) {
    char addr[64];
    peer_addr(c, addr, sizeof addr);
    access_login_ok(c->b->access, addr);
    login_ok(c, u);
}

static void refusal_due(loop_timer *t) {
    struct authwait *aw = (struct authwait *)((char *)t - offsetof(struct authwait, delay));
    conn *c = aw->c;
    c->auth = NULL;
    char mech[12];
    memcpy(mech, aw->mech, sizeof mech);
    authwait_free(aw);
    auth_failed(c, mech);
    conn_update_input(c);
    conn_want_flush(c);
}

/* Refuses the login after this peer's delay: logged with the peer, never saying which part
 * of the credentials was wrong. */
static void refuse(conn *c, struct authwait *aw) {
    char addr[64];
    peer_addr(c, addr, sizeof addr);
    uint64_t now = loop_now_ms(c->b->loop);
    uint64_t delay = access_login_failed(c->b->access, addr, now);
    log_warn("connection %llu (%s): login refused for user '%.*s': %s (answered in %llu ms)",
             (unsigned long long)c->id, c->peer, (int)aw->user_len, aw->user ? aw->user : "",
             aw->refused_loopback ? "this user may connect only from loopback" : "invalid credentials",
             (unsigned long long)delay);
    c->auth = aw;
    aw->delay.fn = refusal_due;
    loop_timer_arm(c->b->loop, &aw->delay, now + delay);
}

static void check_done(auth_check *ac) {
    struct authwait *aw = (struct authwait *)ac;
    conn *c = aw->c;
    if (!c) { /* the connection went while its password was checked */
        authwait_free(aw);
        return;
    }
    user *u = auth_user(c->b->access, (slice){(const uint8_t *)aw->user, aw->user_len});
    if (ac->ok && u) {
        auth_remember(c->b->access, u, (slice){ac->pw, ac->pw_len});
        if (loopback_only(&c->b->cfg, (slice){(const uint8_t *)u->name, u->name_len}) && !c->loopback) {
            aw->refused_loopback = 1;
            refuse(c, aw);
            return;
        }
        c->auth = NULL;
        authwait_free(aw);
        login_accepted(c, u);
        conn_update_input(c);
        return;
    }
    refuse(c, aw);
}

static void login(conn *c, const char *mech, slice name, slice pass) {
    access_db *db = c->b->access;
    user *u = name.n ? auth_user(db, name) : NULL;
    struct authwait *aw = xcalloc(1, sizeof *aw);
    aw->c = c;
    snprintf(aw->mech, sizeof aw->mech, "%s", mech);
    aw->user = xstrndup(name.p ? (const char *)name.p : "", name.n);
    aw->user_len = name.n;
    if (u && auth_fast_matches(db, u, pass)) { /* checked out before: one SHA-256 */
        if (loopback_only(&c->b->cfg, name) && !c->loopback) {
            aw->refused_loopback = 1;
            refuse(c, aw);
            return;
        }
        authwait_free(aw);
        login_accepted(c, u);
        return;
    }
    c->auth = aw;
    aw->ac.done = check_done;
    auth_check_start(db, &aw->ac, u, pass); /* done may run now (no helper thread) */
}

/* EXTERNAL (RabbitMQ's rabbitmq_auth_mechanism_ssl): the verified client certificate names
 * the user — its subject's distinguished name, or its CN with ssl-cert-login-from =
 * common_name — and no password is checked. The user must exist; loopback-only users stay
 * loopback-only; a refusal waits out the peer's delay like any other. */
static void login_external(conn *c) {
    access_db *db = c->b->access;
    char name[1024] = "";
    user *u = NULL;
    if (tls_peer_user(c->tls, c->b->cfg.cert_login_from_cn, name, sizeof name) == 0)
        u = auth_user(db, (slice){(const uint8_t *)name, strlen(name)});
    struct authwait *aw = xcalloc(1, sizeof *aw);
    aw->c = c;
    snprintf(aw->mech, sizeof aw->mech, "EXTERNAL");
    aw->user = xstrndup(name, strlen(name));
    aw->user_len = strlen(name);
    if (!u || (loopback_only(&c->b->cfg, (slice){(const uint8_t *)name, strlen(name)}) && !c->loopback)) {
        aw->refused_loopback = u != NULL;
        refuse(c, aw);
        return;
    }
    authwait_free(aw);
    login_accepted(c, u);
}

/* The connection goes: a check in flight frees itself when it is done; a refusal waiting
 * out its delay is dropped. */
static void auth_abandon(conn *c) {
    struct authwait *aw = c->auth;
    if (!aw)
        return;
    c->auth = NULL;
    if (aw->delay.fn) {
        loop_timer_cancel(c->b->loop, &aw->delay);
        authwait_free(aw);
    } else {
        aw->c = NULL;
    }
}

static void on_start_ok(conn *c, rd *r) {
    slice props = rd_longstr(r);
    slice mech = rd_shortstr(r);
    slice resp = rd_longstr(r);
    rd_shortstr(r); /* locale */
    if (r->err || table_validate(props) < 0) {
        conn_drop(c, "malformed connection.start-ok");
        return;
    }
    read_client_capabilities(c, props);
    if (!c->client_props && props.n) { /* shown by the management API */
        c->client_props = xmalloc(props.n);
        memcpy(c->client_props, props.p, props.n);
        c->client_props_len = props.n;
    }
    snprintf(c->mech, sizeof c->mech, "%.*s", (int)MIN(mech.n, sizeof c->mech - 1), (const char *)mech.p);
    slice user = {0}, pass = {0};
    if (slice_eqs(mech, "EXTERNAL") && c->tls && tls_has_peer_cert(c->tls)) {
        login_external(c);
        return;
    }
    if (slice_eqs(mech, "PLAIN")) {
        /* authzid NUL authcid NUL password */
        const uint8_t *p = resp.p, *end = resp.p + resp.n;
        const uint8_t *z1 = memchr(p, 0, resp.n);
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(end - z1 - 1)) : NULL;
        if (!z1 || !z2) {
            conn_drop(c, "malformed PLAIN response");
            return;
        }
        user = (slice){z1 + 1, (size_t)(z2 - z1 - 1)};
        pass = (slice){z2 + 1, (size_t)(end - z2 - 1)};
    } else if (slice_eqs(mech, "AMQPLAIN")) {
        /* A field table without its length prefix: LOGIN and PASSWORD. */
        fval v;
        if (table_validate(resp) < 0) {
            login(c, "AMQPLAIN", (slice){0}, (slice){0}); /* refused, after the same delay */
            return;
        }
        if (table_get(resp, "LOGIN", &v) && fval_is_str(&v))
            user = v.s;
        if (table_get(resp, "PASSWORD", &v) && fval_is_str(&v))
            pass = v.s;
    } else {
        conn_drop(c, "unsupported authentication mechanism");
        return;
    }
    login(c, slice_eqs(mech, "PLAIN") ? "PLAIN" : "AMQPLAIN", user, pass);
}

static void on_tune_ok(conn *c, rd *r) {
    uint16_t chmax = rd_u16(r);
    uint32_t fmax = rd_u32(r);
    uint16_t hb = rd_u16(r);
    const config *cfg = &c->b->cfg;
    if (r->err) {
        conn_close_error(c, SYNTAX_ERROR, CONNECTION_TUNE_OK, "malformed connection.tune-ok");
        return;
    }
    if (fmax != 0 && fmax < FRAME_MIN_SIZE) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_TUNE_OK, "frame_max=%u < %u min size", fmax, FRAME_MIN_SIZE);
        return;
    }
    if (fmax > cfg->frame_max || (fmax == 0 && cfg->frame_max != 0)) {
        if (fmax != 0) {
            conn_close_error(c, NOT_ALLOWED, CONNECTION_TUNE_OK, "frame_max=%u > %u max size", fmax, cfg->frame_max);
            return;
        }
        fmax = cfg->frame_max;
    }
    if (chmax > cfg->channel_max) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_TUNE_OK, "channel_max=%u > %u max size", chmax, cfg->channel_max);
        return;
    }
    c->channel_max = chmax ? chmax : cfg->channel_max;
    c->frame_max = fmax;
    c->heartbeat = hb;
    c->state = CONN_OPEN;
}

static void on_open(conn *c, rd *r) {
    slice vname = rd_shortstr(r);
    rd_shortstr(r);
    rd_u8(r);
    if (r->err) {
        conn_close_error(c, SYNTAX_ERROR, CONNECTION_OPEN, "malformed connection.open");
        return;
    }
    /* RabbitMQ's order (rabbit_reader): the vhost's connection limit (or that it does not
     * exist), the user's connection limit, then the user's access to the vhost. */
    vhost *vh = vhost_find(c->b, vname);
    user *u = c->u;
    if (!vh) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_OPEN, "vhost %.*s not found", (int)vname.n,
                         (const char *)vname.p);
        return;
    }
    if (vh->max_connections >= 0 && vh->nconns >= (uint64_t)vh->max_connections) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_OPEN,
                         "access to vhost '%s' refused for user '%s': connection limit (%lld) is reached", vh->name,
                         c->user, (long long)vh->max_connections);
        return;
    }
    if (u->max_connections >= 0 && u->nconns >= (uint64_t)u->max_connections) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_OPEN,
                         "connection refused for user '%s': user connection limit (%lld) is reached", c->user,
                         (long long)u->max_connections);
        return;
    }
    if (!access_perm(c->b->access, (slice){(const uint8_t *)u->name, u->name_len}, vname)) {
        conn_close_error(c, NOT_ALLOWED, CONNECTION_OPEN, "access to vhost '%s' refused for user '%s'", vh->name,
                         c->user);
        return;
    }
    uint32_t max = c->b->cfg.max_connections;
    if (max && c->b->nopened >= max) { /* RabbitMQ's connection_max, checked at the same step */
        conn_close_error(c, NOT_ALLOWED, CONNECTION_OPEN, "connection refused: node connection limit (%u) is reached",
                         max);
        return;
    }
    c->counted_open = 1;
    c->b->nopened++;
    c->vh = vh;
    vh->nconns++;
    u->nconns++;
    size_t m = method_begin(&c->out, 0, CONNECTION_OPEN_OK);
    buf_shortstr(&c->out, "", 0);
    frame_end(&c->out, m);
    conn_want_flush(c);
    c->state = CONN_OPENED;
    log_debug("connection %llu (%s) opened by user '%s'", (unsigned long long)c->id, c->peer, c->user);
}

/* A method on channel 0. */
static void connection_method(conn *c, const frame *f) {
    rd r = rd_make(f->payload, f->size);
    unsigned mid = rd_u32(&r);
    if (c->state == CONN_CLOSING) {
        if (mid == CONNECTION_CLOSE_OK) {
            conn_destroy(c);
        } else if (mid == CONNECTION_CLOSE) {
            send_empty_method(c, 0, CONNECTION_CLOSE_OK);
            close_after_flush(c);
        }
        return; /* everything else is discarded while closing (spec 2.2.4) */
    }
    switch (mid) {
    case CONNECTION_START_OK:
        if (c->state == CONN_START_OK)
            return on_start_ok(c, &r);
        break;
    case CONNECTION_SECURE_OK:
        break;
    case CONNECTION_TUNE_OK:
        if (c->state == CONN_TUNE_OK)
            return on_tune_ok(c, &r);
        break;
    case CONNECTION_OPEN:
        if (c->state == CONN_OPEN)
            return on_open(c, &r);
        break;
    case CONNECTION_CLOSE:
        /* The client closes: answer close-ok, then drop the socket once it is written. */
        release_channels(c);
        send_empty_method(c, 0, CONNECTION_CLOSE_OK);
        close_after_flush(c);
        return;
    case CONNECTION_CLOSE_OK:
        break; /* we did not ask for it */
    case CONNECTION_UPDATE_SECRET:
        if (c->state == CONN_OPENED) {
            rd_longstr(&r);
            rd_shortstr(&r);
            if (r.err || rd_left(&r)) {
                conn_close_error(c, FRAME_ERROR, mid, "cannot decode connection.update-secret");
                return;
            }
            send_empty_method(c, 0, CONNECTION_UPDATE_SECRET_OK);
            return;
        }
        break;
    case CONNECTION_BLOCKED:
    case CONNECTION_UNBLOCKED:
        if (c->state == CONN_OPENED)
            return; /* notifications; nothing to do */
        break;
    default:
        if (method_name(mid)[0] == 'u') { /* not a method of the spec */
            conn_close_error(c, NOT_IMPLEMENTED, mid, "unknown method %u.%u", mid >> 16, mid & 0xffff);
            return;
        }
        break;
    }
    /* RabbitMQ's words for a method that does not fit the connection's state. */
    conn_close_error(c, CHANNEL_ERROR, mid, "unexpected method in connection state %s",
                     c->state == CONN_OPENED ? "running" : "opening");
}

static channel *get_channel(conn *c, uint16_t id) { return id < c->nchans ? c->chans[id] : NULL; }

static void open_channel(conn *c, uint16_t id) {
    /* RabbitMQ limits how many channels are open, not the channel numbers. */
    if (c->open_channels >= c->channel_max) {
        conn_close_error(c, NOT_ALLOWED, 0,
                         "number of channels opened (%u) has reached the negotiated channel_max (%u)",
                         c->open_channels, c->channel_max);
        return;
    }
    user *u = c->u;
    if (u && u->max_channels >= 0 && u->nchannels >= (uint64_t)u->max_channels) {
        conn_close_error(c, NOT_ALLOWED, 0,
                         "number of channels opened for user '%s' has reached the maximum allowed user limit of (%lld)",
                         c->user, (long long)u->max_channels);
        return;
    }
    if (u)
        u->nchannels++;
    if (id >= c->nchans) {
        uint32_t n = c->nchans ? c->nchans : 4;
        while (n <= id)
            n *= 2;
        c->chans = xrealloc(c->chans, n * sizeof *c->chans);
        memset(c->chans + c->nchans, 0, (n - c->nchans) * sizeof *c->chans);
        c->nchans = n;
    }
    c->chans[id] = channel_new(c, id);
    c->open_channels++;
    size_t m = method_begin(&c->out, id, CHANNEL_OPEN_OK);
    buf_longstr(&c->out, "", 0);
    frame_end(&c->out, m);
    conn_want_flush(c);
}

void conn_forget_channel(conn *c, uint16_t id) {
    channel *ch = get_channel(c, id);
    if (!ch)
        return;
    c->chans[id] = NULL;
    c->open_channels--;
    if (c->u)
        c->u->nchannels--;
    channel_free(ch);
}

static void frame_error(conn *c, const frame *f, int code, const char *what) {
    char oct[160];
    wire_format_octets(f->payload, f->size, oct, sizeof oct);
    conn_close_error(c, code, 0, "type %u, all octets = %s%s%s", f->type, oct, what ? ": " : "", what ? what : "");
}

static void handle_frame(conn *c, const frame *f) {
    if (f->type == FRAME_HEARTBEAT) {
        if (f->size != 0)
            frame_error(c, f, FRAME_ERROR, "unknown_frame");
        else if (f->channel != 0)
            frame_error(c, f, UNEXPECTED_FRAME, NULL);
        return;
    }
    if ((f->type != FRAME_METHOD && f->type != FRAME_HEADER && f->type != FRAME_BODY) ||
        (f->type == FRAME_METHOD && f->size < 4)) {
        frame_error(c, f, FRAME_ERROR, "unknown_frame");
        return;
    }
    if (c->state < CONN_OPEN && !(f->channel == 0 && f->type == FRAME_METHOD)) {
        conn_drop(c, "frame out of order during the handshake");
        return;
    }
    if (f->channel == 0) {
        if (f->type != FRAME_METHOD) {
            conn_close_error(c, UNEXPECTED_FRAME, 0, "expected method frame, got non method frame instead");
            return;
        }
        connection_method(c, f);
        if (c->state == CONN_CLOSING)
            release_channels(c);
        return;
    }
    if (c->state == CONN_CLOSING)
        return;
    if (c->state != CONN_OPENED) {
        frame_error(c, f, UNEXPECTED_FRAME, NULL);
        return;
    }
    channel *ch = get_channel(c, f->channel);
    if (!ch) {
        unsigned mid = f->size >= 4 && f->type == FRAME_METHOD
                           ? ((unsigned)f->payload[0] << 24 | (unsigned)f->payload[1] << 16 |
                              (unsigned)f->payload[2] << 8 | f->payload[3])
                           : 0;
        if (mid == CHANNEL_OPEN)
            open_channel(c, f->channel);
        else
            conn_close_error(c, CHANNEL_ERROR, mid, "expected 'channel.open'");
        return;
    }
    channel_frame(ch, f);
    if (c->state == CONN_CLOSING)
        release_channels(c); /* a hard error in a channel method */
}

static void handle_input(conn *c) {
    if (c->state == CONN_HEADER) {
        if (c->in.len < 8)
            return;
        if (memcmp(buf_head(&c->in), amqp_header, 8) != 0) {
            /* Spec 4.2.2: answer with the protocol header we support, then close. */
            buf_put(&c->out, amqp_header, 8);
            buf_consume(&c->in, c->in.len);
            close_after_flush(c);
            return;
        }
        buf_consume(&c->in, 8);
        send_start(c);
        c->state = CONN_START_OK;
    }
    uint64_t started = now_us();
    unsigned frames = 0;
    size_t bytes = 0;
    while (c->in.len && c->state != CONN_DEAD && input_allowed(c)) {
        /* The clock is read every 4 frames (a publish is 3): reading it per frame was 10% of
         * the broker's time publishing 16-byte messages. */
        if (frames >= INPUT_BUDGET_FRAMES || bytes >= INPUT_BUDGET_BYTES ||
            (frames && (frames & 3) == 0 && now_us() - started >= INPUT_BUDGET_US)) {
            backlog_add(c);
            break;
        }
        if (c->state == CONN_CLOSING && c->close_when_flushed) {
            buf_consume(&c->in, c->in.len); /* closed for good: ignore the rest */
            break;
        }
        frame f;
        const char *why = NULL;
        /* Before tune-ok, frames may be as large as the broker's own frame_max. */
        long n = wire_parse_frame(buf_head(&c->in), c->in.len, c->frame_max, &f, &why);
        if (n == 0)
            break;
        if (n < 0) {
            if (n == WIRE_TOO_LARGE)
                conn_close_error(c, FRAME_ERROR, 0, "type %u, all octets = <<>>: {frame_too_large,%u,%u}", f.type,
                                 f.size, c->frame_max - FRAME_OVERHEAD);
            else
                frame_error(c, &f, FRAME_ERROR, "{invalid_frame_end_marker}");
            buf_consume(&c->in, c->in.len);
            close_after_flush(c); /* the stream is unusable: close once written */
            break;
        }
        handle_frame(c, &f);
        if (c->state == CONN_DEAD)
            return;
        buf_consume(&c->in, (size_t)n);
        frames++;
        bytes += (size_t)n;
    }
    if (c->in.len == 0)
        buf_shrink_if_idle(&c->in, 2 * READ_CHUNK);
    conn_account(c);
}

static void conn_io(io_handler *h, uint32_t events) {
    conn *c = (conn *)h;
    if (c->state == CONN_DEAD)
        return;
    if (c->tls && !c->lingering) {
        tls_io(c, events);
        return;
    }
    if (events & EPOLLOUT)
        conn_flush(c);
    if (c->state == CONN_DEAD)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->lingering) {
            linger_read(c);
            return;
        }
        if (!input_allowed(c) || c->in_backlog)
            return; /* (an event that was queued before reading stopped) */
        size_t want = READ_CHUNK;
        uint8_t *p = buf_reserve(&c->in, want);
        ssize_t n = read(c->fd, p, want);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            log_debug("connection %llu (%s) closed by peer", (unsigned long long)c->id, c->peer);
            conn_destroy(c);
            return;
        }
        if (n > 0) {
            buf_commit(&c->in, (size_t)n);
            c->last_recv_ms = loop_now_ms(c->b->loop);
            handle_input(c);
        }
    }
}

/* A TLS connection's socket events: the handshake first (driven by readiness: OpenSSL says
 * whether it waits to read or to write), then the same work as conn_io with OpenSSL between
 * the socket and the buffers. tls_read drains what OpenSSL has decrypted, so no plaintext
 * waits where epoll cannot see it; a handshake that never finishes is closed by conn_tick
 * after --handshake-timeout like any other. */
static void tls_io(conn *c, uint32_t events) {
    if (!tls_established(c->tls)) {
        char err[256];
        int r = tls_handshake(c->tls, err, sizeof err);
        if (r < 0) {
            log_warn("connection %llu (%s): TLS %s", (unsigned long long)c->id, c->peer, err);
            conn_destroy(c);
            return;
        }
        conn_account(c);
        if (r == 0) {
            loop_mod(c->b->loop, c->fd, tls_wants_write(c->tls) ? EPOLLOUT : EPOLLIN, &c->io);
            return;
        }
        log_debug("connection %llu (%s): TLS established", (unsigned long long)c->id, c->peer);
        update_events(c);
        events |= EPOLLIN; /* read at once: the protocol header may have come with the handshake */
    }
    if ((events & EPOLLOUT) || (c->tls_flush_wants_read && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))))
        conn_flush(c);
    if (c->state == CONN_DEAD)
        return;
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || (c->tls_read_wants_write && (events & EPOLLOUT))) {
        if (!input_allowed(c) || c->in_backlog)
            return;
        long n = tls_read(c->tls, &c->in, READ_CHUNK);
        if (n < 0) {
            log_debug("connection %llu (%s) closed by peer", (unsigned long long)c->id, c->peer);
            conn_destroy(c);
            return;
        }
        int wants_write = n == 0 && tls_wants_write(c->tls);
        if (wants_write != c->tls_read_wants_write) {
            c->tls_read_wants_write = (uint8_t)wants_write;
            update_events(c);
        }
        if (n > 0) {
            c->last_recv_ms = loop_now_ms(c->b->loop);
            handle_input(c);
        }
    }
}

/* Once a second: heartbeats, silent peers, handshakes and closes that never finish. */
void conn_tick(conn *c, uint64_t now) {
    const config *cfg = &c->b->cfg;
    if (c->state < CONN_OPENED) {
        if (now - c->created_ms > (uint64_t)cfg->handshake_timeout_ms) {
            log_warn("connection %llu (%s): handshake timeout", (unsigned long long)c->id, c->peer);
            conn_destroy(c);
        }
        return;
    }
    if (c->state == CONN_CLOSING) {
        /* No close-ok, or output the peer does not read (issue 8 item 9), or a peer that
         * keeps its side open after our close-ok: given up on after a timeout. */
        if (c->lingering ? now - c->linger_since_ms > LINGER_MS : now - c->closing_since_ms > CLOSE_OK_TIMEOUT_MS)
            conn_destroy(c);
        return;
    }
    /* While ferryd itself does not read the socket (a resource alarm blocks this publisher,
     * its output backs up, a tx.commit waits for the store) the client's heartbeats stay
     * unread: the silence is ours, so the clock restarts. RabbitMQ pauses its heartbeat
     * monitor while a connection is blocked the same way. */
    if (!input_allowed(c))
        c->last_recv_ms = now;
    if (c->heartbeat) {
        uint64_t hb = (uint64_t)c->heartbeat * 1000;
        if (now - c->last_recv_ms > 2 * hb) {
            log_warn("connection %llu (%s): missed heartbeats from client, timeout: %us", (unsigned long long)c->id,
                     c->peer, c->heartbeat);
            conn_destroy(c);
            return;
        }
        if (now - c->last_send_ms >= hb / 2) {
            wire_heartbeat(&c->out);
            conn_want_flush(c);
        }
    }
}
