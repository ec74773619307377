/* client.c — a minimal AMQP 0-9-1 client connection for the load generator (see client.h).
 *
 * Handshake per AMQP 0-9-1 section 2.2.4: protocol header, start/start-ok (PLAIN), tune/
 * tune-ok, open/open-ok, then channel.open on channel 1. Heartbeats are declined (0), as
 * the bench never sits idle long enough to need them. */
#include "client.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "util.h"

#define RPC_TIMEOUT_MS 30000
#define DEFAULT_FRAME_MAX 131072

static int fail(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(client *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- URI ---- */

static int unhex(int ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Copies s[0..n) percent-decoded into out (size cap); -1 if malformed or too long. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = unhex(s[i + 1]), lo = unhex(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = 0;
    return 0;
}

int uri_parse(const char *s, amqp_uri *u, char *err, size_t n) {
    memset(u, 0, sizeof *u);
    strcpy(u->user, "guest");
    strcpy(u->pass, "guest");
    strcpy(u->port, "5672");
    strcpy(u->vhost, "/");
    if (strncmp(s, "amqps://", 8) == 0) {
        u->tls = 1;
        strcpy(u->port, "5671");
    } else if (strncmp(s, "amqp://", 7) != 0) {
        snprintf(err, n, "expected amqp://user:pass@host:port/vhost (or amqps://), got '%s'", s);
        return -1;
    }
    const char *p = s + (u->tls ? 8 : 7);
    const char *end = p + strcspn(p, "/?");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *ue = colon ? colon : at;
        if (pct_decode(p, (size_t)(ue - p), u->user, sizeof u->user) < 0 ||
            (colon && pct_decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof u->pass) < 0)) {
            snprintf(err, n, "bad user or password in '%s'", s);
            return -1;
        }
        p = at + 1;
    }
    const char *hs = p, *he;
    if (*p == '[') { /* [ipv6]:port */
        hs = p + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) {
            snprintf(err, n, "unterminated [ in host of '%s'", s);
            return -1;
        }
        p = he + 1;
    } else {
        he = memchr(p, ':', (size_t)(end - p));
        if (!he)
            he = end;
        p = he;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0)
        strcpy(u->host, "127.0.0.1");
    else if (hl >= sizeof u->host) {
        snprintf(err, n, "host too long in '%s'", s);
        return -1;
    } else
        memcpy(u->host, hs, hl), u->host[hl] = 0;
    if (p < end && *p == ':') {
        size_t pl = (size_t)(end - p - 1);
        if (pl == 0 || pl >= sizeof u->port || strspn(p + 1, "0123456789") < pl) {
            snprintf(err, n, "bad port in '%s'", s);
            return -1;
        }
        memcpy(u->port, p + 1, pl), u->port[pl] = 0;
    }
    /* "amqp://host" and "amqp://host/" both mean the default vhost "/" (as pika and most
     * tools read them); "amqp://host/%2f" is "/" too, "amqp://host/dev" is "dev". */
    if (*end == '/' && end[1] && end[1] != '?') {
        const char *vs = end + 1;
        if (pct_decode(vs, strcspn(vs, "?"), u->vhost, sizeof u->vhost) < 0) {
            snprintf(err, n, "bad vhost in '%s'", s);
            return -1;
        }
    }
    return 0;
}

/* ---- TLS (amqps) ---- */

static const char *tls_cacert;
static SSL_CTX *tls_ctx;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

void client_tls_cacert(const char *cacert) { tls_cacert = cacert; }

/* One context for every connection (SSL_CTX is shared safely between threads). */
static void tls_ctx_init(void) {
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx)
        return;
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (tls_cacert) {
        if (SSL_CTX_load_verify_locations(tls_ctx, tls_cacert, NULL) != 1) {
            SSL_CTX_free(tls_ctx);
            tls_ctx = NULL;
            return;
        }
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    }
}

static int tls_fail(client *c, const char *what) {
    char r[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, r, sizeof r);
    ERR_clear_error();
    return fail(c, "%s%s%s", what, *r ? ": " : "", r);
}

/* The TLS handshake over the connected socket, made non-blocking for good (every wait is a
 * poll with a deadline). */
static int tls_start(client *c, const amqp_uri *u) {
    pthread_once(&tls_once, tls_ctx_init);
    if (!tls_ctx)
        return fail(c, "cannot set up TLS%s%s", tls_cacert ? " with CA file " : "", tls_cacert ? tls_cacert : "");
    client_set_nonblocking(c);
    ERR_clear_error();
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return tls_fail(c, "cannot create a TLS connection");
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, u->host, ip) == 1 || inet_pton(AF_INET6, u->host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(c->ssl, u->host);
    if (tls_cacert) { /* the certificate must name the host we asked for */
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), u->host);
        else
            SSL_set1_host(c->ssl, u->host);
    }
    uint64_t deadline = now_ms() + RPC_TIMEOUT_MS;
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long v = SSL_get_verify_result(c->ssl);
            if (v != X509_V_OK)
                return fail(c, "TLS handshake with %s:%s failed: certificate not verified: %s", u->host, u->port,
                            X509_verify_cert_error_string(v));
            return tls_fail(c, "TLS handshake failed (not a TLS port?)");
        }
        uint64_t now = now_ms();
        if (now >= deadline)
            return fail(c, "timed out in the TLS handshake with %s:%s", u->host, u->port);
        struct pollfd pfd = {c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
        poll(&pfd, 1, (int)(deadline - now));
    }
}

int client_pending(const client *c) { return c->ssl && SSL_pending(c->ssl) > 0; }

const char *client_tls_version(const client *c) { return c->ssl ? SSL_get_version(c->ssl) : NULL; }

/* ---- socket I/O ---- */

void client_set_nonblocking(client *c) {
    int fl = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
}

static int tls_write_some(client *c) {
    while (c->out.len > 0) {
        ERR_clear_error();
        int w = SSL_write(c->ssl, buf_head(&c->out), (int)MIN(c->out.len, (size_t)1 << 30));
        if (w > 0) {
            buf_consume(&c->out, (size_t)w);
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            return 0; /* retried later with the same bytes at the front */
        return tls_fail(c, "write to broker failed (TLS)");
    }
    return 0;
}

static long tls_read_some(client *c, uint8_t *p, size_t room) {
    size_t got = 0;
    while (got < room) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, p + got, (int)MIN(room - got, (size_t)1 << 30));
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (got)
            break; /* the error again at the next read */
        ERR_clear_error();
        return fail(c, "broker closed the connection%s", e == SSL_ERROR_ZERO_RETURN ? "" : " (TLS error)");
    }
    buf_commit(&c->in, got);
    return (long)got;
}

int client_write_some(client *c) {
    if (c->ssl)
        return tls_write_some(c);
    while (c->out.len > 0) {
        ssize_t w = send(c->fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf_consume(&c->out, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return fail(c, "write to broker failed: %s", w < 0 ? strerror(errno) : "connection closed");
    }
    return 0;
}

int client_write_extra(client *c, size_t *before, const uint8_t **p, size_t *n) {
    assert(!c->ssl && *before <= c->out.len);
    while (*n > 0) {
        struct iovec iov[2] = {{buf_head(&c->out), *before}, {(void *)*p, *n}};
        struct msghdr mh = {.msg_iov = *before ? iov : iov + 1, .msg_iovlen = *before ? 2 : 1};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            size_t k = MIN((size_t)w, *before);
            buf_consume(&c->out, k);
            *before -= k;
            *p += (size_t)w - k;
            *n -= (size_t)w - k;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return fail(c, "write to broker failed: %s", w < 0 ? strerror(errno) : "connection closed");
    }
    return client_write_some(c);
}

long client_read_some(client *c, size_t room) {
    if (c->skip) {
        buf_consume(&c->in, c->skip);
        c->skip = 0;
    }
    buf_compact(&c->in);
    uint8_t *p = buf_reserve(&c->in, room);
    if (c->ssl)
        return tls_read_some(c, p, room);
    for (;;) {
        ssize_t r = recv(c->fd, p, room, MSG_DONTWAIT);
        if (r > 0) {
            buf_commit(&c->in, (size_t)r);
            return r;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return fail(c, "broker closed the connection%s%s", r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
    }
}

int client_parse(client *c, size_t *pos, frame *f) {
    const char *why = NULL;
    long n = wire_parse_frame(buf_head(&c->in) + *pos, c->in.len - *pos, c->frame_max, f, &why);
    if (n < 0)
        return fail(c, "framing error from broker: %s", why);
    if (n == 0)
        return 0;
    *pos += (size_t)n;
    return 1;
}

/* Blocks until all of `out` is written or the timeout passes. */
static int flush_blocking(client *c, int timeout_ms) {
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (c->out.len > 0) {
        if (client_write_some(c) < 0)
            return -1;
        if (c->out.len == 0)
            break;
        uint64_t now = now_ms();
        if (now >= deadline)
            return fail(c, "timed out writing to broker");
        struct pollfd pfd = {c->fd, POLLOUT, 0};
        poll(&pfd, 1, (int)(deadline - now));
    }
    return 0;
}

/* Blocks until a whole frame is available and hands it out; it stays valid until the next
 * read. 1, or -1 on error/timeout. */
static int next_frame_blocking(client *c, frame *f, int timeout_ms) {
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (c->skip) {
            buf_consume(&c->in, c->skip);
            c->skip = 0;
        }
        size_t pos = 0;
        int rc = client_parse(c, &pos, f);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            c->skip = pos;
            return 1;
        }
        long r = client_read_some(c, 65536);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        uint64_t now = now_ms();
        if (now >= deadline)
            return fail(c, "timed out waiting for the broker");
        struct pollfd pfd = {c->fd, POLLIN, 0};
        poll(&pfd, 1, (int)(deadline - now));
    }
}

/* ---- methods ---- */

static void put_close_ok(client *c, uint16_t ch, unsigned mid) {
    size_t m = method_begin(&c->out, ch, mid);
    frame_end(&c->out, m);
}

/* Reads reply-code and reply-text of a connection.close / channel.close payload (after the
 * method id) into c->err, prefixed by what. */
static void close_reason(client *c, rd *r, const char *what) {
    uint16_t code = rd_u16(r);
    slice text = rd_shortstr(r);
    uint16_t cls = rd_u16(r), meth = rd_u16(r);
    const char *m = (cls || meth) ? method_name(MID(cls, meth)) : NULL;
    snprintf(c->err, sizeof c->err, "%s%s%s by broker: %u %.*s", m ? m : "", m ? ": " : "", what, code,
             (int)text.n, text.p ? (const char *)text.p : "");
}

static int channel_open(client *c) {
    size_t m = method_begin(&c->out, 1, CHANNEL_OPEN);
    buf_shortstr(&c->out, "", 0);
    frame_end(&c->out, m);
    frame f;
    if (flush_blocking(c, RPC_TIMEOUT_MS) < 0)
        return -1;
    for (;;) {
        if (next_frame_blocking(c, &f, RPC_TIMEOUT_MS) < 0)
            return -1;
        if (f.type != FRAME_METHOD || f.size < 4)
            continue;
        rd r = rd_make(f.payload, f.size);
        unsigned mid = rd_u32(&r);
        if (mid == CHANNEL_OPEN_OK)
            return 0;
        if (client_control_frame(c, &f) < 0)
            return -1;
    }
}

int client_control_frame(client *c, const frame *f) {
    if (f->type != FRAME_METHOD || f->size < 4)
        return 0;
    rd r = rd_make(f->payload, f->size);
    unsigned mid = rd_u32(&r);
    switch (mid) {
    case CONNECTION_CLOSE:
        close_reason(c, &r, "connection closed");
        put_close_ok(c, 0, CONNECTION_CLOSE_OK);
        flush_blocking(c, 1000);
        return -1;
    case CHANNEL_CLOSE:
        close_reason(c, &r, "channel closed");
        put_close_ok(c, f->channel, CHANNEL_CLOSE_OK);
        c->channel_closed = 1;
        return -1;
    case CONNECTION_BLOCKED: c->blocked = 1; return 0;
    case CONNECTION_UNBLOCKED: c->blocked = 0; return 0;
    case BASIC_CANCEL: return fail(c, "the broker cancelled the consumer (queue deleted?)");
    }
    return 0;
}

/* Flushes out and waits for the method `want` on channel 1; the reply's arguments are
 * returned in *args (valid until the next read). */
static int rpc(client *c, unsigned want, rd *args) {
    if (flush_blocking(c, RPC_TIMEOUT_MS) < 0)
        return -1;
    frame f;
    for (;;) {
        if (next_frame_blocking(c, &f, RPC_TIMEOUT_MS) < 0)
            return -1;
        if (f.type != FRAME_METHOD || f.size < 4)
            continue;
        rd r = rd_make(f.payload, f.size);
        unsigned mid = rd_u32(&r);
        if (mid == want) {
            if (args)
                *args = r;
            return 0;
        }
        if (client_control_frame(c, &f) < 0) {
            /* Reopen the channel so a control connection can carry on after e.g. a 406 on
             * a declare; the error text is kept for the caller. */
            if (c->channel_closed) {
                char saved[sizeof c->err];
                memcpy(saved, c->err, sizeof saved);
                c->channel_closed = 0;
                channel_open(c);
                memcpy(c->err, saved, sizeof saved);
            }
            return -1;
        }
    }
}

static void client_properties(buf *b, const char *name) {
    buf caps;
    buf_init(&caps);
    table_put_bool(&caps, "publisher_confirms", 1);
    table_put_bool(&caps, "basic.nack", 1);
    table_put_bool(&caps, "consumer_cancel_notify", 1);
    table_put_bool(&caps, "connection.blocked", 1);
    buf t;
    buf_init(&t);
    table_put_longstr(&t, "product", "ferry bench", 11);
    table_put_longstr(&t, "connection_name", name, strlen(name));
    table_put_table(&t, "capabilities", buf_head(&caps), caps.len);
    buf_longstr(b, buf_head(&t), t.len);
    buf_free(&t);
    buf_free(&caps);
}

static int tcp_connect(client *c, const amqp_uri *u) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0)
        return fail(c, "cannot resolve %s: %s", u->host, gai_strerror(rc));
    int saved = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->fd = fd;
            freeaddrinfo(res);
            return 0;
        }
        saved = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return fail(c, "cannot connect to %s:%s: %s", u->host, u->port, strerror(saved));
}

int client_open(client *c, const amqp_uri *u, const char *name) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    buf_init(&c->in);
    buf_init(&c->out);
    c->frame_max = DEFAULT_FRAME_MAX;
    if (tcp_connect(c, u) < 0 || (u->tls && tls_start(c, u) < 0))
        return -1;
    buf_put(&c->out, "AMQP\0\0\x09\x01", 8);
    rd r;
    if (flush_blocking(c, RPC_TIMEOUT_MS) < 0)
        return -1;
    frame f;
    if (next_frame_blocking(c, &f, RPC_TIMEOUT_MS) < 0) {
        if (strstr(c->err, "closed"))
            return fail(c, "%s:%s closed the connection before connection.start (not an AMQP 0-9-1 broker?)",
                        u->host, u->port);
        return -1;
    }
    r = rd_make(f.payload, f.size);
    if (f.type != FRAME_METHOD || rd_u32(&r) != CONNECTION_START)
        return fail(c, "expected connection.start from %s:%s", u->host, u->port);
    rd_u8(&r), rd_u8(&r);
    rd_longstr(&r); /* server properties */
    slice mechs = rd_longstr(&r);
    if (r.err)
        return fail(c, "malformed connection.start");
    int plain = 0;
    for (size_t i = 0; i + 5 <= mechs.n; i++)
        if (memcmp(mechs.p + i, "PLAIN", 5) == 0 && (i == 0 || mechs.p[i - 1] == ' '))
            plain = 1;
    if (!plain)
        return fail(c, "the broker does not offer PLAIN authentication (offers '%.*s')", (int)mechs.n,
                    (const char *)mechs.p);

    size_t m = method_begin(&c->out, 0, CONNECTION_START_OK);
    client_properties(&c->out, name);
    buf_shortstr(&c->out, "PLAIN", 5);
    size_t ul = strlen(u->user), pl = strlen(u->pass);
    buf_u32(&c->out, (uint32_t)(ul + pl + 2));
    buf_u8(&c->out, 0);
    buf_put(&c->out, u->user, ul);
    buf_u8(&c->out, 0);
    buf_put(&c->out, u->pass, pl);
    buf_shortstr(&c->out, "en_US", 5);
    frame_end(&c->out, m);
    if (flush_blocking(c, RPC_TIMEOUT_MS) < 0)
        return -1;
    for (;;) {
        if (next_frame_blocking(c, &f, RPC_TIMEOUT_MS) < 0) {
            /* RabbitMQ answers bad credentials by closing the socket (after a close frame
             * only if the client advertised authentication_failure_close). */
            if (strstr(c->err, "closed the connection"))
                return fail(c,
                            "the broker closed the connection during login (wrong user/password for '%s'?)",
                            u->user);
            return -1;
        }
        r = rd_make(f.payload, f.size);
        unsigned mid = f.type == FRAME_METHOD ? rd_u32(&r) : 0;
        if (mid == CONNECTION_TUNE)
            break;
        if (mid == CONNECTION_SECURE)
            return fail(c, "the broker asked for a SASL challenge; only PLAIN is supported");
        if (client_control_frame(c, &f) < 0)
            return -1;
    }
    uint16_t channel_max = rd_u16(&r);
    uint32_t frame_max = rd_u32(&r);
    rd_u16(&r); /* heartbeat: declined */
    if (frame_max == 0 || frame_max > 1048576)
        frame_max = frame_max == 0 ? DEFAULT_FRAME_MAX : 1048576;
    if (frame_max < FRAME_MIN_SIZE)
        frame_max = FRAME_MIN_SIZE;
    c->frame_max = frame_max;
    m = method_begin(&c->out, 0, CONNECTION_TUNE_OK);
    buf_u16(&c->out, channel_max);
    buf_u32(&c->out, frame_max);
    buf_u16(&c->out, 0);
    frame_end(&c->out, m);
    m = method_begin(&c->out, 0, CONNECTION_OPEN);
    buf_shortstr(&c->out, u->vhost, strlen(u->vhost));
    buf_shortstr(&c->out, "", 0);
    buf_u8(&c->out, 0);
    frame_end(&c->out, m);
    if (flush_blocking(c, RPC_TIMEOUT_MS) < 0)
        return -1;
    for (;;) {
        if (next_frame_blocking(c, &f, RPC_TIMEOUT_MS) < 0)
            return -1;
        r = rd_make(f.payload, f.size);
        if (f.type == FRAME_METHOD && rd_u32(&r) == CONNECTION_OPEN_OK)
            break;
        if (client_control_frame(c, &f) < 0)
            return -1;
    }
    return channel_open(c);
}

void client_close(client *c, int timeout_ms) {
    if (c->fd >= 0) {
        if (!c->ssl) { /* (a TLS socket stays non-blocking: every wait below polls) */
            int fl = fcntl(c->fd, F_GETFL);
            fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
        }
        size_t m = method_begin(&c->out, 0, CONNECTION_CLOSE);
        buf_u16(&c->out, REPLY_SUCCESS);
        buf_shortstr(&c->out, "bye", 3);
        buf_u16(&c->out, 0);
        buf_u16(&c->out, 0);
        frame_end(&c->out, m);
        if (flush_blocking(c, timeout_ms) == 0) {
            frame f;
            uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
            while (now_ms() < deadline && next_frame_blocking(c, &f, (int)(deadline - now_ms()) + 1) == 1) {
                rd r = rd_make(f.payload, f.size);
                if (f.type != FRAME_METHOD || f.channel != 0)
                    continue;
                unsigned mid = rd_u32(&r);
                if (mid == CONNECTION_CLOSE_OK || mid == CONNECTION_CLOSE)
                    break;
            }
        }
        if (c->ssl) {
            SSL_shutdown(c->ssl); /* close_notify, one try */
            ERR_clear_error();
        }
        close(c->fd);
        c->fd = -1;
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    buf_free(&c->in);
    buf_free(&c->out);
}

int client_queue_declare(client *c, const char *name, int durable, int passive, uint32_t *messages) {
    size_t m = method_begin(&c->out, 1, QUEUE_DECLARE);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, name, strlen(name));
    buf_u8(&c->out, (uint8_t)((passive ? 1 : 0) | (durable ? 2 : 0)));
    buf_u32(&c->out, 0); /* empty arguments table */
    frame_end(&c->out, m);
    rd r;
    if (rpc(c, QUEUE_DECLARE_OK, &r) < 0)
        return -1;
    rd_shortstr(&r);
    uint32_t n = rd_u32(&r);
    if (messages)
        *messages = n;
    return 0;
}

int client_queue_delete(client *c, const char *name) {
    size_t m = method_begin(&c->out, 1, QUEUE_DELETE);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, name, strlen(name));
    buf_u8(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, QUEUE_DELETE_OK, NULL);
}

int client_queue_bind(client *c, const char *queue, const char *exchange, const char *key) {
    size_t m = method_begin(&c->out, 1, QUEUE_BIND);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, queue, strlen(queue));
    buf_shortstr(&c->out, exchange, strlen(exchange));
    buf_shortstr(&c->out, key, strlen(key));
    buf_u8(&c->out, 0);
    buf_u32(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, QUEUE_BIND_OK, NULL);
}

int client_queue_bind_batch(client *c, const char *exchange, const char *const *queues, const char *const *keys,
                            size_t n) {
    for (size_t i = 0; i < n; i++) {
        size_t m = method_begin(&c->out, 1, QUEUE_BIND);
        buf_u16(&c->out, 0);
        buf_shortstr(&c->out, queues[i], strlen(queues[i]));
        buf_shortstr(&c->out, exchange, strlen(exchange));
        buf_shortstr(&c->out, keys[i], strlen(keys[i]));
        buf_u8(&c->out, 0);
        buf_u32(&c->out, 0);
        frame_end(&c->out, m);
    }
    for (size_t i = 0; i < n; i++)
        if (rpc(c, QUEUE_BIND_OK, NULL) < 0)
            return -1;
    return 0;
}

int client_exchange_declare(client *c, const char *name, const char *type, int durable) {
    size_t m = method_begin(&c->out, 1, EXCHANGE_DECLARE);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, name, strlen(name));
    buf_shortstr(&c->out, type, strlen(type));
    buf_u8(&c->out, durable ? 2 : 0);
    buf_u32(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, EXCHANGE_DECLARE_OK, NULL);
}

int client_exchange_delete(client *c, const char *name) {
    size_t m = method_begin(&c->out, 1, EXCHANGE_DELETE);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, name, strlen(name));
    buf_u8(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, EXCHANGE_DELETE_OK, NULL);
}

int client_qos(client *c, uint16_t prefetch) {
    size_t m = method_begin(&c->out, 1, BASIC_QOS);
    buf_u32(&c->out, 0);
    buf_u16(&c->out, prefetch);
    buf_u8(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, BASIC_QOS_OK, NULL);
}

/* A field table of one long-string entry. */
static void put_str_table(buf *b, const char *key, const char *val) {
    size_t kl = strlen(key), vl = strlen(val);
    buf_u32(b, (uint32_t)(1 + kl + 1 + 4 + vl));
    buf_shortstr(b, key, kl);
    buf_u8(b, 'S');
    buf_u32(b, (uint32_t)vl);
    buf_put(b, val, vl);
}

int client_stream_declare(client *c, const char *name) {
    size_t m = method_begin(&c->out, 1, QUEUE_DECLARE);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, name, strlen(name));
    buf_u8(&c->out, 2); /* durable */
    put_str_table(&c->out, "x-queue-type", "stream");
    frame_end(&c->out, m);
    return rpc(c, QUEUE_DECLARE_OK, NULL);
}

int client_consume_stream(client *c, const char *queue, const char *offset) {
    size_t m = method_begin(&c->out, 1, BASIC_CONSUME);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, queue, strlen(queue));
    buf_shortstr(&c->out, "", 0);
    buf_u8(&c->out, 0); /* manual acks */
    put_str_table(&c->out, "x-stream-offset", offset);
    frame_end(&c->out, m);
    return rpc(c, BASIC_CONSUME_OK, NULL);
}

int client_consume(client *c, const char *queue, int no_ack) {
    size_t m = method_begin(&c->out, 1, BASIC_CONSUME);
    buf_u16(&c->out, 0);
    buf_shortstr(&c->out, queue, strlen(queue));
    buf_shortstr(&c->out, "", 0);
    buf_u8(&c->out, no_ack ? 2 : 0); /* bits: no-local, no-ack, exclusive, no-wait */
    buf_u32(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, BASIC_CONSUME_OK, NULL);
}

int client_confirm_select(client *c) {
    size_t m = method_begin(&c->out, 1, CONFIRM_SELECT);
    buf_u8(&c->out, 0);
    frame_end(&c->out, m);
    return rpc(c, CONFIRM_SELECT_OK, NULL);
}
