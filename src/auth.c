/* auth.c — users, password hashes, permissions, failed-login delays (see auth.h). */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util.h"

#define PBKDF2_SALT 16
#define PBKDF2_DK 32
/* Measured on the 2-core test machine (OpenSSL 3.0): ~25 ms per check. It runs on the
 * helper thread; reconnects with a password that checked out cost one SHA-256. */
#define PBKDF2_ITER_DEFAULT 60000

/* Failed-login delays: 100 ms after the first failure from a peer, doubling, at most 3 s;
 * forgotten after a minute without failures. */
#define FAIL_DELAY_MS 100
#define FAIL_DELAY_MAX_MS 3000
#define FAIL_FORGET_MS 60000

struct login_failures {
    uint32_t count;
    uint64_t last_ms;
};

void access_init(access_db *db) {
    memset(db, 0, sizeof *db);
    map_init(&db->users);
    map_init(&db->perms);
    map_init(&db->tperms);
    map_init(&db->failures);
    db->pbkdf2_iter = PBKDF2_ITER_DEFAULT;
    if (RAND_bytes(db->fast_key, sizeof db->fast_key) != 1)
        for (size_t i = 0; i < sizeof db->fast_key; i++)
            db->fast_key[i] = (uint8_t)(now_us() >> (i % 8) ^ i);
}

int access_start(access_db *db, loop *l) {
    if (db->hp_started)
        return 0;
    int rc = helpers_start(&db->hp, l);
    if (rc == 0)
        db->hp_started = 1;
    return rc;
}

static void user_free(user *u) {
    free(u->name);
    free(u->hash);
    free(u->tags);
    free(u);
}

static void re_free(perm_re *r) {
    if (r->compiled)
        regfree(&r->re);
    free(r->src);
}

static void uperm_free(uperm *p) {
    for (int i = 0; i < 3; i++)
        re_free(&p->p[i]);
    free(p->user);
    free(p->vhost);
    free(p);
}

static void tperm_free(tperm *p) {
    re_free(&p->p[0]);
    re_free(&p->p[1]);
    free(p->user);
    free(p->vhost);
    free(p->exchange);
    free(p);
}

void access_free(access_db *db) {
    if (db->hp_started)
        helpers_stop(&db->hp);
    db->hp_started = 0;
    size_t i = 0;
    map_entry *e;
    while (map_iter(&db->users, &i, &e))
        user_free(e->val);
    i = 0;
    while (map_iter(&db->perms, &i, &e))
        uperm_free(e->val);
    i = 0;
    while (map_iter(&db->tperms, &i, &e))
        tperm_free(e->val);
    i = 0;
    while (map_iter(&db->failures, &i, &e))
        free(e->val);
    map_free(&db->users);
    map_free(&db->perms);
    map_free(&db->tperms);
    map_free(&db->failures);
}

/* ---- users ---- */

user *auth_user(access_db *db, slice name) { return map_get(&db->users, (const char *)name.p, name.n); }

user *auth_put_user(access_db *db, slice name, int alg, const uint8_t *hash, size_t hash_len, const char *tags) {
    user *u = auth_user(db, name);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        u->name = xstrndup((const char *)name.p, name.n);
        u->name_len = name.n;
        u->max_connections = u->max_channels = -1;
        map_put(&db->users, u->name, u->name_len, u);
    }
    free(u->hash);
    u->hash = NULL;
    u->hash_len = 0;
    u->alg = (uint8_t)alg;
    if (hash_len) {
        u->hash = xmalloc(hash_len);
        memcpy(u->hash, hash, hash_len);
        u->hash_len = hash_len;
    }
    u->has_fast = 0;
    free(u->tags);
    u->tags = xstrndup(tags ? tags : "", tags ? strlen(tags) : 0);
    return u;
}

static const struct {
    const char *name;
    int alg;
} algs[] = {
    {"rabbit_password_hashing_sha256", HASH_SHA256},
    {"rabbit_password_hashing_sha512", HASH_SHA512},
    {"rabbit_password_hashing_md5", HASH_MD5},
    {"ferry_password_hashing_pbkdf2_sha256", HASH_PBKDF2},
};

int auth_alg_parse(const char *name) {
    for (size_t i = 0; i < ARRAY_LEN(algs); i++)
        if (strcmp(name, algs[i].name) == 0)
            return algs[i].alg;
    return -1;
}

const char *auth_alg_name(int alg) {
    for (size_t i = 0; i < ARRAY_LEN(algs); i++)
        if (algs[i].alg == alg)
            return algs[i].name;
    return "rabbit_password_hashing_sha256";
}

static const EVP_MD *alg_md(int alg) {
    switch (alg) {
    case HASH_SHA256:
        return EVP_sha256();
    case HASH_SHA512:
        return EVP_sha512();
    case HASH_MD5:
        return EVP_md5();
    }
    return NULL;
}

void auth_encode_b64(const uint8_t *p, size_t n, buf *out) {
    size_t need = 4 * ((n + 2) / 3) + 1;
    buf_reserve(out, need);
    int len = EVP_EncodeBlock((unsigned char *)buf_tail(out), p, (int)n);
    out->len += (size_t)len;
}

int auth_decode_hash(int alg, const char *b64, buf *out) {
    size_t n = strlen(b64);
    if (n == 0)
        return 0; /* no password */
    if (n % 4 != 0 || n > 4096)
        return -1;
    size_t pad = (b64[n - 1] == '=') + (n > 1 && b64[n - 2] == '=');
    buf_reserve(out, n);
    int len = EVP_DecodeBlock((unsigned char *)buf_tail(out), (const unsigned char *)b64, (int)n);
    if (len < 0)
        return -1;
    out->len += (size_t)len - pad;
    size_t got = (size_t)len - pad;
    const EVP_MD *md = alg_md(alg);
    if (md)
        return got == 4 + (size_t)EVP_MD_get_size(md) ? 0 : -1;
    if (alg == HASH_PBKDF2)
        return got == 4 + PBKDF2_SALT + PBKDF2_DK ? 0 : -1;
    return -1;
}

void auth_hash_password(access_db *db, slice password, int *alg, buf *out) {
    if (db->rabbit_hashes) { /* RabbitMQ's: 4-byte salt, sha256(salt ‖ password) */
        uint8_t h[4 + 32];
        RAND_bytes(h, 4);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned int len = 0;
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        EVP_DigestUpdate(ctx, h, 4);
        EVP_DigestUpdate(ctx, password.p, password.n);
        EVP_DigestFinal_ex(ctx, h + 4, &len);
        EVP_MD_CTX_free(ctx);
        buf_put(out, h, sizeof h);
        *alg = HASH_SHA256;
        return;
    }
    uint8_t h[4 + PBKDF2_SALT + PBKDF2_DK];
    uint32_t it = db->pbkdf2_iter;
    h[0] = (uint8_t)(it >> 24), h[1] = (uint8_t)(it >> 16), h[2] = (uint8_t)(it >> 8), h[3] = (uint8_t)it;
    RAND_bytes(h + 4, PBKDF2_SALT);
    PKCS5_PBKDF2_HMAC((const char *)password.p, (int)password.n, h + 4, PBKDF2_SALT, (int)it, EVP_sha256(),
                      PBKDF2_DK, h + 4 + PBKDF2_SALT);
    buf_put(out, h, sizeof h);
    *alg = HASH_PBKDF2;
}

int auth_password_matches(int alg, const uint8_t *hash, size_t hash_len, slice password) {
    uint8_t got[64];
    const EVP_MD *md = alg_md(alg);
    if (md) {
        size_t hl = (size_t)EVP_MD_get_size(md);
        if (hash_len != 4 + hl)
            return 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned int len = 0;
        int ok = ctx && EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, hash, 4) &&
                 EVP_DigestUpdate(ctx, password.p, password.n) && EVP_DigestFinal_ex(ctx, got, &len);
        EVP_MD_CTX_free(ctx);
        return ok && len == hl && CRYPTO_memcmp(got, hash + 4, hl) == 0;
    }
    if (alg == HASH_PBKDF2 && hash_len == 4 + PBKDF2_SALT + PBKDF2_DK) {
        uint32_t it = (uint32_t)hash[0] << 24 | (uint32_t)hash[1] << 16 | (uint32_t)hash[2] << 8 | hash[3];
        if (it == 0 || it > 10000000)
            return 0;
        if (!PKCS5_PBKDF2_HMAC((const char *)password.p, (int)password.n, hash + 4, PBKDF2_SALT, (int)it,
                               EVP_sha256(), PBKDF2_DK, got))
            return 0;
        return CRYPTO_memcmp(got, hash + 4 + PBKDF2_SALT, PBKDF2_DK) == 0;
    }
    return 0;
}

static void fast_digest(access_db *db, const user *u, slice password, uint8_t out[32]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, db->fast_key, sizeof db->fast_key);
    EVP_DigestUpdate(ctx, u->name, u->name_len + 1);
    EVP_DigestUpdate(ctx, password.p, password.n);
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}

int auth_fast_matches(access_db *db, const user *u, slice password) {
    if (!u->has_fast)
        return 0;
    uint8_t d[32];
    fast_digest(db, u, password, d);
    return CRYPTO_memcmp(d, u->fast, 32) == 0;
}

void auth_remember(access_db *db, user *u, slice password) {
    fast_digest(db, u, password, u->fast);
    u->has_fast = 1;
}

/* ---- password checks on the helper thread ---- */

static void check_run(job *j) {
    auth_check *a = (auth_check *)j;
    a->ok = a->alg != HASH_NONE &&
            auth_password_matches(a->alg, a->hash, a->hash_len, (slice){a->pw, a->pw_len});
}

static void check_run_dummy(job *j) { /* the same work, and a refusal whatever it says */
    check_run(j);
    ((auth_check *)j)->ok = 0;
}

static void check_done(job *j) {
    auth_check *a = (auth_check *)j;
    a->done(a);
}

void auth_check_start(access_db *db, auth_check *a, const user *u, slice password) {
    static uint8_t dummy[4 + PBKDF2_SALT + PBKDF2_DK];
    if (u && u->alg != HASH_NONE) {
        a->alg = u->alg;
        a->hash_len = u->hash_len;
        a->hash = xmalloc(u->hash_len ? u->hash_len : 1);
        memcpy(a->hash, u->hash, u->hash_len);
    } else { /* an unknown user (or one without a password) costs what a known one does */
        uint32_t it = db->pbkdf2_iter;
        dummy[0] = (uint8_t)(it >> 24), dummy[1] = (uint8_t)(it >> 16), dummy[2] = (uint8_t)(it >> 8),
        dummy[3] = (uint8_t)it;
        a->alg = HASH_PBKDF2;
        a->hash_len = sizeof dummy;
        a->hash = xmalloc(sizeof dummy);
        memcpy(a->hash, dummy, sizeof dummy);
    }
    int known = u && u->alg != HASH_NONE;
    a->pw = xmalloc(password.n ? password.n : 1);
    memcpy(a->pw, password.p, password.n);
    a->pw_len = password.n;
    a->ok = 0;
    a->j.run = known ? check_run : check_run_dummy;
    a->j.done = check_done;
    a->j.next = NULL;
    int cheap = known ? a->alg != HASH_PBKDF2 : db->rabbit_hashes;
    if (!known && cheap) { /* a dummy of the kind new hashes are: RabbitMQ's sha256 */
        a->alg = HASH_SHA256;
        a->hash_len = 4 + 32;
    }
    if (db->hp_started && !cheap) { /* PBKDF2: tens of ms, on the helper thread */
        helpers_submit(&db->hp, &a->j);
    } else { /* a single SHA-2/MD5 (microseconds), or no helper thread: check here */
        a->j.run(&a->j);
        check_done(&a->j);
    }
}

void auth_check_clear(auth_check *a) {
    if (a->pw)
        OPENSSL_cleanse(a->pw, a->pw_len);
    free(a->pw);
    free(a->hash);
    a->pw = a->hash = NULL;
}

/* ---- permissions ---- */

static int re_compile(perm_re *r, const char *src, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->src = xstrndup(src, strlen(src));
    if (strstr(src, "{username}") || strstr(src, "{vhost}") || strstr(src, "{client_id}")) {
        r->compiled = 0; /* expanded per check; the template itself must compile */
        regex_t t;
        int rc = regcomp(&t, src[0] ? src : "^$", REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char m[160];
            regerror(rc, &t, m, sizeof m);
            snprintf(err, errlen, "invalid regular expression '%s': %s", src, m);
            return -1;
        }
        regfree(&t);
        return 0;
    }
    int rc = regcomp(&r->re, src[0] ? src : "^$", REG_EXTENDED | REG_NOSUB);
    if (rc) {
        char m[160];
        regerror(rc, &r->re, m, sizeof m);
        snprintf(err, errlen, "invalid regular expression '%s': %s", src, m);
        return -1;
    }
    r->compiled = 1;
    return 0;
}

/* RabbitMQ searches the whole name (re:run, unanchored); names may hold any byte. */
static int perm_search(const regex_t *re, slice s) {
    /* A NUL-terminated copy (regexec implementations and sanitizers read to the NUL), with
     * REG_STARTEND so that a NUL inside a name does not end it early. */
    char tmp[512];
    char *p = s.n < sizeof tmp ? tmp : xmalloc(s.n + 1);
    if (s.n)
        memcpy(p, s.p, s.n);
    p[s.n] = 0;
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)s.n;
    int ok = regexec(re, p, 1, m, REG_STARTEND) == 0;
    if (p != tmp)
        free(p);
    return ok;
}

static void expand(const char *src, slice user, slice vhost, buf *out) {
    for (const char *p = src; *p;) {
        if (strncmp(p, "{username}", 10) == 0) {
            buf_put(out, user.p, user.n);
            p += 10;
        } else if (strncmp(p, "{vhost}", 7) == 0) {
            buf_put(out, vhost.p, vhost.n);
            p += 7;
        } else {
            buf_put(out, p, 1);
            p++;
        }
    }
    buf_put(out, "", 1);
}

static int re_matches(const perm_re *r, slice name, slice user, slice vhost) {
    if (r->compiled)
        return perm_search(&r->re, name);
    buf e;
    buf_init(&e);
    expand(r->src, user, vhost, &e);
    regex_t re;
    int ok = 0;
    if (regcomp(&re, ((const char *)buf_head(&e))[0] ? (const char *)buf_head(&e) : "^$", REG_EXTENDED | REG_NOSUB) ==
        0) {
        ok = perm_search(&re, name);
        regfree(&re);
    }
    buf_free(&e);
    return ok;
}

static void key2(buf *k, slice a, slice b) {
    buf_put(k, a.p, a.n);
    buf_put(k, "", 1);
    buf_put(k, b.p, b.n);
}

int access_set_perm(access_db *db, slice user, slice vhost, const char *conf, const char *write, const char *read,
                    char *err, size_t errlen) {
    db->gen++;
    uperm *p = xcalloc(1, sizeof *p);
    const char *src[3] = {conf, write, read};
    int i = 0;
    for (; i < 3; i++)
        if (re_compile(&p->p[i], src[i], err, errlen) < 0)
            break;
    if (i < 3) {
        free(p->p[i].src);
        for (int k = 0; k < i; k++)
            re_free(&p->p[k]);
        free(p);
        return -1;
    }
    p->user = xstrndup((const char *)user.p, user.n);
    p->vhost = xstrndup((const char *)vhost.p, vhost.n);
    buf k;
    buf_init(&k);
    key2(&k, user, vhost);
    uperm *old = map_put(&db->perms, (const char *)buf_head(&k), k.len, p);
    if (old)
        uperm_free(old);
    buf_free(&k);
    return 0;
}

int access_set_topic_perm(access_db *db, slice user, slice vhost, slice exchange, const char *write,
                          const char *read, char *err, size_t errlen) {
    db->gen++;
    tperm *p = xcalloc(1, sizeof *p);
    if (re_compile(&p->p[0], write, err, errlen) < 0) {
        free(p->p[0].src);
        free(p);
        return -1;
    }
    if (re_compile(&p->p[1], read, err, errlen) < 0) {
        free(p->p[1].src);
        re_free(&p->p[0]);
        free(p);
        return -1;
    }
    p->user = xstrndup((const char *)user.p, user.n);
    p->vhost = xstrndup((const char *)vhost.p, vhost.n);
    p->exchange = xstrndup((const char *)exchange.p, exchange.n);
    buf k;
    buf_init(&k);
    key2(&k, user, vhost);
    buf_put(&k, "", 1);
    buf_put(&k, exchange.p, exchange.n);
    tperm *old = map_put(&db->tperms, (const char *)buf_head(&k), k.len, p);
    if (old)
        tperm_free(old);
    buf_free(&k);
    return 0;
}

const uperm *access_perm(access_db *db, slice user, slice vhost) {
    uint8_t kb[512];
    if (user.n + vhost.n + 1 > sizeof kb)
        return NULL; /* names are short strings: 255 bytes each at most */
    memcpy(kb, user.p, user.n);
    kb[user.n] = 0;
    memcpy(kb + user.n + 1, vhost.p, vhost.n);
    return map_get(&db->perms, (const char *)kb, user.n + 1 + vhost.n);
}

int access_allows(access_db *db, slice user, slice vhost, int which, slice name) {
    const uperm *p = access_perm(db, user, vhost);
    return p && re_matches(&p->p[which], name, user, vhost);
}

int access_topic_allows(access_db *db, slice user, slice vhost, slice exchange, int which, slice rkey) {
    uint8_t kb[800];
    if (user.n + vhost.n + exchange.n + 2 > sizeof kb)
        return 0;
    memcpy(kb, user.p, user.n);
    kb[user.n] = 0;
    memcpy(kb + user.n + 1, vhost.p, vhost.n);
    kb[user.n + 1 + vhost.n] = 0;
    memcpy(kb + user.n + 2 + vhost.n, exchange.p, exchange.n);
    const tperm *p = map_get(&db->tperms, (const char *)kb, user.n + 2 + vhost.n + exchange.n);
    if (!p)
        return 1;
    return re_matches(&p->p[which == PERM_WRITE ? 0 : 1], rkey, user, vhost);
}

/* ---- failed logins ---- */

uint64_t access_login_failed(access_db *db, const char *peer, uint64_t now) {
    struct login_failures *f = map_get(&db->failures, peer, strlen(peer));
    if (!f) {
        if (db->failures.count >= 100000) { /* bounded: forget the stale ones */
            size_t i = 0;
            map_entry *e;
            while (map_iter(&db->failures, &i, &e)) {
                struct login_failures *o = e->val;
                if (now - o->last_ms > FAIL_FORGET_MS) {
                    free(o);
                    map_del(&db->failures, e->key, e->klen);
                }
            }
        }
        f = xcalloc(1, sizeof *f);
        map_put(&db->failures, peer, strlen(peer), f);
    } else if (now - f->last_ms > FAIL_FORGET_MS) {
        f->count = 0;
    }
    f->count++;
    f->last_ms = now;
    uint64_t d = FAIL_DELAY_MS;
    for (uint32_t i = 1; i < f->count && d < FAIL_DELAY_MAX_MS; i++)
        d *= 2;
    return MIN(d, FAIL_DELAY_MAX_MS);
}

void access_login_ok(access_db *db, const char *peer) {
    struct login_failures *f = map_del(&db->failures, peer, strlen(peer));
    free(f);
}
