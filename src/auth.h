/* auth.h — the access database: users and their password hashes, permissions per user and
 * vhost (configure / write / read regular expressions) and topic permissions, and the
 * failed-login delays per peer.
 *
 * RabbitMQ's internal backend is the model (rabbit_auth_backend_internal): a permission is
 * an unanchored regular expression searched in the resource name ("" means "^$"); a user
 * with no permission record for a vhost may not open it; a user with no topic permission
 * for an exchange may use every routing key. Regexes are POSIX extended ones (<regex.h>),
 * the common subset of RabbitMQ's PCRE ones.
 *
 * Passwords are never kept in clear. Hashes RabbitMQ writes are accepted as they come
 * (rabbit_password_hashing_sha256 / _sha512 / _md5: base64 of a 4-byte salt and
 * H(salt ‖ password)); Ferry's own new hashes are PBKDF2-HMAC-SHA256 (OpenSSL), or
 * RabbitMQ's sha256 with the password-hashing setting. Checking a PBKDF2 hash costs tens of
 * milliseconds, so it runs on a helper thread (auth_check_start); a password that checked
 * out once is remembered as a keyed SHA-256 digest, so a client reconnecting with it costs
 * one hash.
 *
 * This file knows nothing of the broker: conn.c logs users in, perm.c checks methods,
 * access_store.c stores the database in meta.log, definitions.c fills it from a file.
 * A later SASL mechanism (EXTERNAL, with TLS client certificates) only needs auth_user
 * to find the user; the password parts are PLAIN's and AMQPLAIN's. */
#ifndef FERRY_AUTH_H
#define FERRY_AUTH_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "loop.h"
#include "map.h"
#include "writer.h"

enum { HASH_NONE, HASH_SHA256, HASH_SHA512, HASH_MD5, HASH_PBKDF2 };
enum { PERM_CONFIGURE, PERM_WRITE, PERM_READ };

typedef struct user {
    char *name;
    size_t name_len;
    uint8_t alg;     /* HASH_*: HASH_NONE = no password (cannot log in with one) */
    uint8_t *hash;   /* the decoded password_hash */
    size_t hash_len;
    char *tags;      /* comma-separated, as RabbitMQ lists them */
    int64_t max_connections, max_channels; /* users[].limits; -1 = none */
    uint32_t nconns, nchannels;
    uint8_t has_fast; /* fast: keyed SHA-256 of the password that last checked out */
    uint8_t fast[32];
} user;

typedef struct perm_re {
    char *src;
    regex_t re;
    uint8_t compiled; /* 0: src has {username}/{vhost} variables, compiled per check */
} perm_re;

typedef struct uperm { /* a user's permissions on one vhost */
    char *user, *vhost;
    perm_re p[3]; /* PERM_CONFIGURE, PERM_WRITE, PERM_READ */
} uperm;

typedef struct tperm { /* a user's topic permissions on one exchange of one vhost */
    char *user, *vhost, *exchange;
    perm_re p[2]; /* write, read */
} tperm;

typedef struct access_db {
    map users;   /* name -> user */
    map perms;   /* user \0 vhost -> uperm */
    map tperms;  /* user \0 vhost \0 exchange -> tperm */
    map failures; /* peer address -> struct login_failures */
    int rabbit_hashes;    /* new passwords get RabbitMQ's sha256 hashes (password-hashing setting) */
    uint32_t pbkdf2_iter; /* iterations of new PBKDF2 hashes */
    helpers hp;           /* the thread PBKDF2 checks run on */
    int hp_started;
    uint8_t fast_key[32]; /* random per process: keys the remembered digests */
    uint64_t gen;         /* bumped by every change of permissions: caches of checks compare it */
} access_db;

void access_init(access_db *db);
/* Starts the helper thread password checks run on (l: the loop that hears the results). */
int access_start(access_db *db, loop *l);
void access_free(access_db *db);

user *auth_user(access_db *db, slice name);
/* Adds or replaces a user with a decoded hash (alg HASH_*). */
user *auth_put_user(access_db *db, slice name, int alg, const uint8_t *hash, size_t hash_len, const char *tags);
/* Hashes a clear password the way new passwords are hashed (PBKDF2, or RabbitMQ's sha256). */
void auth_hash_password(access_db *db, slice password, int *alg, buf *out);
/* RabbitMQ's hashing_algorithm names (and Ferry's): HASH_*, or -1 if unknown. */
int auth_alg_parse(const char *name);
const char *auth_alg_name(int alg);
/* Decodes a base64 password_hash of this algorithm: 0, or -1 (bad base64 or length). */
int auth_decode_hash(int alg, const char *b64, buf *out);
void auth_encode_b64(const uint8_t *p, size_t n, buf *out);
/* Checks a password against a hash (any thread: no shared state). 1 = it matches. */
int auth_password_matches(int alg, const uint8_t *hash, size_t hash_len, slice password);
/* The remembered digest of a password that checked out for u (loop thread). */
int auth_fast_matches(access_db *db, const user *u, slice password);
void auth_remember(access_db *db, user *u, slice password);

/* A password check on the helper thread. done runs on the loop thread with ok set. */
typedef struct auth_check {
    job j;
    int alg;
    uint8_t *hash;
    size_t hash_len;
    uint8_t *pw;
    size_t pw_len;
    int ok;
    void (*done)(struct auth_check *a);
} auth_check;
/* Copies u's hash (a dummy one if u is NULL, so that an unknown user costs the same) and
 * the password, and starts the check. */
void auth_check_start(access_db *db, auth_check *a, const user *u, slice password);
void auth_check_clear(auth_check *a);

/* Permissions. Each returns 0, or -1 with a message in err (a regex that does not compile). */
int access_set_perm(access_db *db, slice user, slice vhost, const char *conf, const char *write, const char *read,
                    char *err, size_t errlen);
int access_set_topic_perm(access_db *db, slice user, slice vhost, slice exchange, const char *write,
                          const char *read, char *err, size_t errlen);
const uperm *access_perm(access_db *db, slice user, slice vhost);
/* May this user do `which` (PERM_*) on the resource `name` in vhost? (No record: no.) */
int access_allows(access_db *db, slice user, slice vhost, int which, slice name);
/* May this user publish (which PERM_WRITE) or bind (PERM_READ) with routing key rkey on
 * topic exchange `exchange`? (No topic permission for it: yes.) */
int access_topic_allows(access_db *db, slice user, slice vhost, slice exchange, int which, slice rkey);

/* Failed logins per peer address: the delay (ms) before this failure is answered. */
uint64_t access_login_failed(access_db *db, const char *peer_addr, uint64_t now);
void access_login_ok(access_db *db, const char *peer_addr);

#endif
