/* map.c — string-keyed open-addressing hash map (see map.h).
 *
 * Keys are names a client chooses (queue names, consumer tags, message ids, routing keys), so
 * the hash is keyed: SipHash-1-3 with a random per-process key from getrandom. With an
 * unkeyed hash (FNV-1a here before) a client could compute thousands of names that land in
 * one probe run and make every insert and lookup linear in the map's size (hash flooding). */
#include "map.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static char tombstone;
#define TOMBSTONE (&tombstone)

/* ---- SipHash (Aumasson and Bernstein), little-endian, c compression and d final rounds ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                          \
    do {                                                                                                  \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                         \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                            \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                            \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                         \
    } while (0)

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline uint64_t sip(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n, int c, int d) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    const uint8_t *end = p + (n & ~(size_t)7);
    for (; p < end; p += 8) {
        uint64_t m = load64(p);
        v3 ^= m;
        for (int i = 0; i < c; i++)
            SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < (n & 7); i++)
        b |= (uint64_t)p[i] << (8 * i);
    v3 ^= b;
    for (int i = 0; i < c; i++)
        SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int i = 0; i < d; i++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash24(const uint8_t key[16], const void *p, size_t n) {
    return sip(load64(key), load64(key + 8), p, n, 2, 4);
}

static uint64_t hash_key[2];
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

/* The per-process key: 16 random bytes (getrandom blocks only before the kernel's pool is
 * first initialised, at early boot). Should it fail, time and pid are better than nothing. */
static void hash_key_init(void) {
    uint8_t k[16];
    if (getrandom(k, sizeof k, 0) != (ssize_t)sizeof k) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec, pid = (uint64_t)getpid();
        memcpy(k, &t, 8);
        memcpy(k + 8, &pid, 8);
    }
    hash_key[0] = load64(k);
    hash_key[1] = load64(k + 8);
}

/* SipHash-1-3 (the variant Rust's and Python's hash tables use for speed) under the
 * process's random key. */
uint64_t hash_bytes(const void *p, size_t n) {
    pthread_once(&hash_key_once, hash_key_init);
    return sip(hash_key[0], hash_key[1], p, n, 1, 3);
}

static uint64_t map_gens; /* (atomic: maps live on the loop and on the HTTP threads) */
static uint64_t next_gen(void) { return __atomic_add_fetch(&map_gens, 1, __ATOMIC_RELAXED); }

void map_init(map *m) {
    memset(m, 0, sizeof *m);
    m->gen = next_gen();
}

void map_free(map *m) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE)
            free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static map_entry *find(const map *m, const char *key, size_t klen, uint64_t h) {
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        map_entry *e = &m->slots[i];
        if (!e->key)
            return NULL;
        if (e->key != TOMBSTONE && e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
}

void *map_get(const map *m, const char *key, size_t klen) {
    map_entry *e = find(m, key, klen, hash_bytes(key, klen));
    return e ? e->val : NULL;
}

/* Rehashes into a table at most half full: the same size when tombstones filled it (a map
 * whose keys come and go, like a vhost's RPC reply queues, stays the size its live keys need),
 * larger when live keys did. */
static void grow(map *m) {
    size_t ncap = m->cap ? m->cap : 16;
    while (m->count * 2 >= ncap)
        ncap *= 2;
    map_entry *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xcalloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    m->gen = next_gen();
    m->used = m->count;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].key || old[i].key == TOMBSTONE)
            continue;
        size_t j = old[i].hash & (ncap - 1);
        while (m->slots[j].key)
            j = (j + 1) & (ncap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

void *map_put(map *m, const char *key, size_t klen, void *val) {
    uint64_t h = hash_bytes(key, klen);
    map_entry *e = find(m, key, klen, h);
    if (e) {
        void *prev = e->val;
        e->val = val;
        return prev;
    }
    if ((m->used + 1) * 4 >= m->cap * 3)
        grow(m);
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != TOMBSTONE)
        i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key)
        m->used++;
    m->slots[i] = (map_entry){xstrndup(key, klen), klen, h, val};
    m->count++;
    assert(m->count <= m->used && m->used < m->cap); /* an empty slot always ends a probe */
    return NULL;
}

void *map_del(map *m, const char *key, size_t klen) {
    map_entry *e = find(m, key, klen, hash_bytes(key, klen));
    if (!e)
        return NULL;
    void *v = e->val;
    free(e->key);
    e->key = TOMBSTONE;
    e->val = NULL;
    m->count--;
    return v;
}

int map_iter(const map *m, size_t *i, map_entry **e) {
    while (*i < m->cap) {
        map_entry *s = &m->slots[(*i)++];
        if (s->key && s->key != TOMBSTONE) {
            *e = s;
            return 1;
        }
    }
    return 0;
}
