/* tls.h — TLS (amqps) for ferryd, with OpenSSL: the server context and its reload, and the
 * per-connection state conn.c drives from the event loop without ever blocking.
 *
 * A tls_server holds the SSL_CTX built from the certificate, key and CA files named in the
 * settings; tls_server_reload builds a new one from the same files (SIGHUP) and swaps it in:
 * connections made since get the new certificate, older ones keep their own reference to the
 * context they were made with. A tls_conn is one connection's SSL object over its socket. Its
 * calls return at once: when OpenSSL needs the socket to be readable or writable first they
 * say "again", and tls_wants_write tells the caller which readiness to wait for. */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stddef.h>

#include "buf.h"

enum tls_verify {
    TLS_VERIFY_NONE,    /* no client certificate asked for */
    TLS_VERIFY_PEER,    /* asked for and verified against the CA if given; none is fine */
    TLS_VERIFY_REQUIRE, /* a verified client certificate is required (fail_if_no_peer_cert) */
};

typedef struct tls_server tls_server;
typedef struct tls_conn tls_conn;

/* Builds the server context from PEM files (ca may be NULL or "" with TLS_VERIFY_NONE).
 * NULL with a message naming the file and OpenSSL's reason in err. */
tls_server *tls_server_new(const char *cert, const char *key, const char *ca, int verify, char *err, size_t n);
/* Reads the files again and swaps the context in; on failure the old one stays, -1 + err. */
int tls_server_reload(tls_server *s, char *err, size_t n);
void tls_server_free(tls_server *s);
/* Routes OpenSSL's allocations through counting wrappers. Only possible before OpenSSL's
 * first allocation (password hashing uses it too): main calls it first thing. */
void tls_count_heap(void);
/* Bytes of OpenSSL heap held beyond what the contexts took when the server started: the
 * per-connection state (SSL objects, their buffers) that clients make ferryd hold. */
size_t tls_heap_in_use(void);

/* A TLS connection over a connected non-blocking socket (server side). NULL if OpenSSL
 * cannot make one. */
tls_conn *tls_conn_new(tls_server *s, int fd);
void tls_conn_free(tls_conn *t);

/* Drives the handshake: 1 done, 0 again later (wait for tls_wants_write ? writable :
 * readable), -1 failed (err names OpenSSL's reason). */
int tls_handshake(tls_conn *t, char *err, size_t n);
int tls_established(const tls_conn *t);
/* Reads decrypted bytes into in: at least `want` bytes of room, and everything OpenSSL has
 * already buffered, so that no plaintext is left where epoll cannot see it. Returns the
 * bytes added (> 0), 0 if none are available now, -1 on EOF or error. */
long tls_read(tls_conn *t, buf *in, size_t want);
/* Writes from p: bytes written (> 0), 0 if the socket takes none now (retry later with the
 * same bytes at the front, possibly more after them), -1 on error. */
long tls_write(tls_conn *t, const void *p, size_t len);
/* The last call stopped because OpenSSL needs the socket writable (otherwise: readable). */
int tls_wants_write(const tls_conn *t);
/* Sends close_notify if the session is up and healthy; never waits. */
void tls_close_notify(tls_conn *t);

/* The verified client certificate's user name, as RabbitMQ's rabbit_auth_mechanism_ssl
 * makes it: the subject's distinguished name in RFC 4514 form ("CN=client,O=Test"), or
 * with from_cn its first common name. -1 if no verified client certificate. */
int tls_peer_user(tls_conn *t, int from_cn, char *out, size_t n);
/* Is there a verified client certificate (EXTERNAL can be offered)? */
int tls_has_peer_cert(tls_conn *t);

#endif
