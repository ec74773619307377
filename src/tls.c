/* tls.c — TLS with OpenSSL: the server context (and its reload), per-connection state, the
 * non-blocking handshake, read and write wrappers, and the client certificate's user name
 * for the EXTERNAL mechanism (see tls.h).
 *
 * Settings that keep a hostile client from costing anything: renegotiation is refused, there
 * is no server-side session cache and no session tickets (nothing kept per client after it
 * goes), SSL_MODE_RELEASE_BUFFERS drops an idle connection's record buffers, and OpenSSL
 * reads no further ahead than the record it decrypts (so no plaintext hides from epoll once a
 * read has drained what was decrypted). Every OpenSSL allocation is counted (tls_heap_in_use)
 * for the memory accounting. */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "util.h"

struct tls_server {
    SSL_CTX *ctx;
    char *cert, *key, *ca;
    int verify;
};

struct tls_conn {
    SSL *ssl;
    unsigned established : 1;
    unsigned want_write : 1; /* the last call needs the socket writable */
    unsigned failed : 1;     /* a fatal error: no close_notify */
    unsigned eof : 1;        /* close_notify received after some data: EOF at the next read */
};

/* ---- memory: every OpenSSL allocation, counted ---- */

static atomic_size_t heap_now;
static size_t heap_base;
static int heap_counted;

static void *heap_malloc(size_t n, const char *file, int line) {
    (void)file, (void)line;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add_explicit(&heap_now, malloc_usable_size(p), memory_order_relaxed);
    return p;
}

static void heap_free(void *p, const char *file, int line) {
    (void)file, (void)line;
    if (!p)
        return;
    atomic_fetch_sub_explicit(&heap_now, malloc_usable_size(p), memory_order_relaxed);
    free(p);
}

static void *heap_realloc(void *p, size_t n, const char *file, int line) {
    if (!p)
        return heap_malloc(n, file, line);
    if (n == 0) {
        heap_free(p, file, line);
        return NULL;
    }
    size_t old = malloc_usable_size(p);
    void *q = realloc(p, n);
    if (q) {
        atomic_fetch_sub_explicit(&heap_now, old, memory_order_relaxed);
        atomic_fetch_add_explicit(&heap_now, malloc_usable_size(q), memory_order_relaxed);
    }
    return q;
}

void tls_count_heap(void) {
    if (!heap_counted)
        heap_counted = CRYPTO_set_mem_functions(heap_malloc, heap_realloc, heap_free) == 1;
}

size_t tls_heap_in_use(void) {
    size_t now = atomic_load_explicit(&heap_now, memory_order_relaxed);
    return heap_counted && now > heap_base ? now - heap_base : 0;
}

/* ---- errors ---- */

/* OpenSSL's queued errors, most recent reason last, into err (and the queue emptied). */
static void ssl_errors(char *err, size_t n, const char *what) {
    size_t o = (size_t)snprintf(err, n, "%s", what);
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (o + 2 >= n)
            continue;
        char r[200];
        ERR_error_string_n(e, r, sizeof r);
        const char *reason = ERR_reason_error_string(e);
        o += (size_t)snprintf(err + o, n - o, ": %s", reason ? reason : r);
        if (o >= n)
            o = n - 1;
    }
}

/* ---- the server context ---- */

static SSL_CTX *build_ctx(const tls_server *s, char *err, size_t n) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_errors(err, n, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Output is retried from a buffer that may have moved and grown (conn.c's output
     * buffer): allowed with these two modes. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    char what[1200];
    if (SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1) {
        snprintf(what, sizeof what, "cannot load tls-cert %s", s->cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof what, "cannot load tls-key %s", s->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof what, "tls-key %s does not match tls-cert %s", s->key, s->cert);
        goto fail;
    }
    if (s->ca && *s->ca) {
        if (SSL_CTX_load_verify_locations(ctx, s->ca, NULL) != 1) {
            snprintf(what, sizeof what, "cannot load tls-ca %s", s->ca);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
    }
    int mode = SSL_VERIFY_NONE;
    if (s->verify == TLS_VERIFY_PEER)
        mode = SSL_VERIFY_PEER;
    else if (s->verify == TLS_VERIFY_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    return ctx;
fail:
    ssl_errors(err, n, what);
    SSL_CTX_free(ctx);
    return NULL;
}

tls_server *tls_server_new(const char *cert, const char *key, const char *ca, int verify, char *err, size_t n) {
    tls_count_heap(); /* in case main did not (it fails harmlessly after OpenSSL's first allocation) */
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    tls_server *s = xcalloc(1, sizeof *s);
    s->cert = xstrndup(cert, strlen(cert));
    s->key = xstrndup(key, strlen(key));
    s->ca = ca && *ca ? xstrndup(ca, strlen(ca)) : NULL;
    s->verify = verify;
    s->ctx = build_ctx(s, err, n);
    if (!s->ctx) {
        tls_server_free(s);
        return NULL;
    }
    heap_base = atomic_load_explicit(&heap_now, memory_order_relaxed);
    return s;
}

int tls_server_reload(tls_server *s, char *err, size_t n) {
    SSL_CTX *ctx = build_ctx(s, err, n);
    if (!ctx)
        return -1;
    SSL_CTX_free(s->ctx); /* connections made with it hold their own reference */
    s->ctx = ctx;
    return 0;
}

void tls_server_free(tls_server *s) {
    if (!s)
        return;
    SSL_CTX_free(s->ctx);
    free(s->cert);
    free(s->key);
    free(s->ca);
    free(s);
}

/* ---- connections ---- */

tls_conn *tls_conn_new(tls_server *s, int fd) {
    ERR_clear_error();
    SSL *ssl = SSL_new(s->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    tls_conn *t = xcalloc(1, sizeof *t);
    t->ssl = ssl;
    return t;
}

void tls_conn_free(tls_conn *t) {
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

int tls_established(const tls_conn *t) { return t->established; }
int tls_wants_write(const tls_conn *t) { return t->want_write; }

/* After a call returned r <= 0: 0 to retry later (want_write says on what), -1 fatal. */
static int again_or_fail(tls_conn *t, int r) {
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    if (e != SSL_ERROR_ZERO_RETURN)
        t->failed = 1;
    return -1;
}

int tls_handshake(tls_conn *t, char *err, size_t n) {
    if (t->established)
        return 1;
    ERR_clear_error();
    int r = SSL_accept(t->ssl);
    if (r == 1) {
        t->established = 1;
        t->want_write = 0;
        return 1;
    }
    int e = errno;
    if (again_or_fail(t, r) == 0)
        return 0;
    t->failed = 1;
    if (ERR_peek_error())
        ssl_errors(err, n, "handshake");
    else
        snprintf(err, n, "handshake: %s", r == 0 || !e ? "connection closed by peer" : strerror(e));
    ERR_clear_error();
    return -1;
}

long tls_read(tls_conn *t, buf *in, size_t want) {
    if (t->eof)
        return -1;
    size_t got = 0;
    t->want_write = 0;
    for (;;) {
        /* Past `want`, only what OpenSSL already holds (at most the rest of one record). */
        if (got >= want && !SSL_has_pending(t->ssl))
            break;
        size_t room = got < want ? want - got : 16384;
        if (room < 16384)
            room = 16384; /* a whole record's plaintext, so a record is never left half-read */
        uint8_t *p = buf_reserve(in, room);
        ERR_clear_error();
        int r = SSL_read(t->ssl, p, (int)MIN(room, (size_t)INT_MAX));
        if (r > 0) {
            buf_commit(in, (size_t)r);
            got += (size_t)r;
            continue;
        }
        if (again_or_fail(t, r) == 0)
            break;
        ERR_clear_error();
        if (got) { /* the data first; EOF at the next call */
            t->eof = 1;
            break;
        }
        return -1;
    }
    return (long)got;
}

long tls_write(tls_conn *t, const void *p, size_t len) {
    t->want_write = 0;
    ERR_clear_error();
    int r = SSL_write(t->ssl, p, (int)MIN(len, (size_t)INT_MAX));
    if (r > 0)
        return r;
    if (again_or_fail(t, r) == 0)
        return 0;
    ERR_clear_error();
    return -1;
}

void tls_close_notify(tls_conn *t) {
    if (!t->established || t->failed)
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* one try: the close_notify goes out if the socket takes it */
    ERR_clear_error();
}

/* ---- the client certificate's user name (rabbit_cert_info's formatting) ---- */

int tls_has_peer_cert(tls_conn *t) {
    return t->established && SSL_get0_peer_certificate(t->ssl) && SSL_get_verify_result(t->ssl) == X509_V_OK;
}

/* RabbitMQ's short names for attribute types; others print as a dotted OID. */
static const struct {
    int nid;
    const char *name;
} attr_names[] = {
    {NID_surname, "SN"},
    {NID_givenName, "GIVENNAME"},
    {NID_initials, "INITIALS"},
    {NID_generationQualifier, "GENERATIONQUALIFIER"},
    {NID_commonName, "CN"},
    {NID_localityName, "L"},
    {NID_stateOrProvinceName, "ST"},
    {NID_organizationName, "O"},
    {NID_organizationalUnitName, "OU"},
    {NID_title, "TITLE"},
    {NID_countryName, "C"},
    {NID_serialNumber, "SERIALNUMBER"},
    {NID_pseudonym, "PSEUDONYM"},
    {NID_domainComponent, "DC"},
    {NID_pkcs9_emailAddress, "EMAILADDRESS"},
    {NID_streetAddress, "STREET"},
    {NID_userId, "UID"},
};

typedef struct out {
    char *p;
    size_t n, len;
    int overflow;
} out;

static void out_put(out *o, const char *s, size_t n) {
    if (o->len + n >= o->n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

/* RFC 4514 escaping as rabbit_cert_info:escape_rdn_value: a leading space or '#' and a
 * trailing space get a backslash, so do " + , ; < > \; bytes below 32 and from 126 up
 * (UTF-8 sequences included) become \XX. */
static void out_escaped(out *o, const unsigned char *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = v[i];
        char tmp[4];
        if (i == 0 && (ch == ' ' || ch == '#')) {
            tmp[0] = '\\', tmp[1] = (char)ch;
            out_put(o, tmp, 2);
        } else if (i == n - 1 && ch == ' ') {
            out_put(o, "\\ ", 2);
        } else if (strchr("\"+,;<>\\", ch) && ch) {
            tmp[0] = '\\', tmp[1] = (char)ch;
            out_put(o, tmp, 2);
        } else if (ch < 32 || ch >= 126) {
            snprintf(tmp, sizeof tmp, "\\%02X", ch);
            out_put(o, tmp, 3);
        } else {
            out_put(o, (const char *)&ch, 1);
        }
    }
}

static void out_attr(out *o, X509_NAME_ENTRY *e) {
    ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
    int nid = OBJ_obj2nid(obj);
    const char *name = NULL;
    for (size_t i = 0; i < ARRAY_LEN(attr_names); i++)
        if (attr_names[i].nid == nid)
            name = attr_names[i].name;
    char oid[128];
    if (!name) {
        OBJ_obj2txt(oid, sizeof oid, obj, 1);
        name = oid;
    }
    out_put(o, name, strlen(name));
    out_put(o, "=", 1);
    unsigned char *v = NULL;
    int vn = ASN1_STRING_to_UTF8(&v, X509_NAME_ENTRY_get_data(e));
    if (vn < 0) {
        o->overflow = 1; /* not a string RabbitMQ would name either */
        return;
    }
    out_escaped(o, v, (size_t)vn);
    OPENSSL_free(v);
}

int tls_peer_user(tls_conn *t, int from_cn, char *buf_out, size_t n) {
    if (!tls_has_peer_cert(t) || n == 0)
        return -1;
    X509_NAME *name = X509_get_subject_name(SSL_get0_peer_certificate(t->ssl));
    int count = name ? X509_NAME_entry_count(name) : 0;
    out o = {buf_out, n, 0, 0};
    buf_out[0] = 0;
    if (from_cn) { /* the first CN, unescaped (rabbit_auth_mechanism_ssl, common_name) */
        int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
        if (i < 0)
            return -1;
        unsigned char *v = NULL;
        int vn = ASN1_STRING_to_UTF8(&v, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
        if (vn < 0)
            return -1;
        int bad = vn == 0 || memchr(v, 0, (size_t)vn) != NULL; /* no NUL inside a user name */
        if (!bad)
            out_put(&o, (const char *)v, (size_t)vn);
        OPENSSL_free(v);
        ERR_clear_error();
        return bad || o.overflow ? -1 : 0;
    }
    /* RDNs last to first, joined by ","; the attributes of one multi-valued RDN in their
     * order, joined by "+". */
    int i = count - 1;
    while (i >= 0) {
        int set = X509_NAME_ENTRY_set(X509_NAME_get_entry(name, i));
        int start = i;
        while (start > 0 && X509_NAME_ENTRY_set(X509_NAME_get_entry(name, start - 1)) == set)
            start--;
        if (o.len)
            out_put(&o, ",", 1);
        for (int k = start; k <= i; k++) {
            if (k > start)
                out_put(&o, "+", 1);
            out_attr(&o, X509_NAME_get_entry(name, k));
        }
        i = start - 1;
    }
    ERR_clear_error();
    return o.overflow || o.len == 0 ? -1 : 0;
}
